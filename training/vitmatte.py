"""ViTMatte (Yao et al., 2023) as a model family: transformers' network, the official glue.

The network is transformers' ``VitMatteForImageMatting`` (the optional ``vitmatte`` extra),
its config built here, in code, from REFERENCE.md section 5 (nothing is downloaded): a plain
ViT/16 backbone on 4 channels with window attention (14) in blocks 0, 1, 3, 4, 6, 7, 9, 10,
global attention plus a residual conv block in blocks 2, 5, 8, 11, and the detail-capture
decoder. ``model.size`` picks ViTMatte-S (384 wide, 6 heads; 25.8M parameters) or -B (768,
12). What is ours is only what the official code defines around it:

- ``make_input``: RGB normalised with the ImageNet mean and std, and the trimap as 0 / 0.5 / 1
  (< 85, >= 170, else), the official training rule. transformers' ``VitMatteImageProcessor``
  normalises with mean and std 0.5 and divides the trimap by 255 instead; we follow the
  official code, which trained the released weights, at training and inference alike (on our
  exact 0/128/255 trimaps the only difference from its test-time /255 is 0.5 against 0.502);
- ``param_groups``: layer-wise learning-rate decay 0.65: block i at 0.65^(12 - i), the patch
  and position embeddings at 0.65^13, the residual conv blocks (inside the blocks) and the
  decoder at 1;
- inference pads to a multiple of 32 (``pad_multiple``), as the official code does.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from configs import ModelConfig
from training.normalise import IMAGENET_MEAN, IMAGENET_STD

EXTRA_HINT = 'ViTMatte needs transformers: pip install -e ".[vitmatte]"'
SIZES = {  # ViT width and heads; the decoder is the same for both
    "small": {"hidden_size": 384, "num_attention_heads": 6},
    "base": {"hidden_size": 768, "num_attention_heads": 12},
}
DEPTH = 12
WINDOW_BLOCKS = [0, 1, 3, 4, 6, 7, 9, 10]  # lists, not tuples: transformers refuses tuples
GLOBAL_BLOCKS = [2, 5, 8, 11]  # global attention, each followed by a residual conv block
LAYER_DECAY = 0.65
PAD_MULTIPLE = 32
TRIMAP_LOW, TRIMAP_HIGH = 85, 170  # < 85: background (0); >= 170: foreground (1); else 0.5
_MEAN = torch.from_numpy(IMAGENET_MEAN)[:, None, None]
_STD = torch.from_numpy(IMAGENET_STD)[:, None, None]


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ValueError(f"model.family vitmatte: {EXTRA_HINT}") from None
    return transformers


def hf_config(size: str):
    """transformers' ``VitMatteConfig`` of ViTMatte-S (``small``) or -B (``base``)."""
    if size not in SIZES:
        raise ValueError(f"model.size must be one of {', '.join(SIZES)}, got {size!r}")
    t = _transformers()
    backbone = t.VitDetConfig(
        num_channels=4,
        image_size=512,
        pretrain_image_size=224,
        patch_size=16,
        **SIZES[size],
        num_hidden_layers=DEPTH,
        mlp_ratio=4,
        qkv_bias=True,
        layer_norm_eps=1e-6,
        use_absolute_position_embeddings=True,
        use_relative_position_embeddings=True,
        window_size=14,
        window_block_indices=list(WINDOW_BLOCKS),
        residual_block_indices=list(GLOBAL_BLOCKS),
        out_features=["stage12"],
    )
    return t.VitMatteConfig(
        backbone_config=backbone,
        hidden_size=SIZES[size]["hidden_size"],
        convstream_hidden_sizes=[48, 96, 192],
        fusion_hidden_sizes=[256, 128, 64, 32],
    )


class VitMatte(nn.Module):
    """(B, 4, H, W) ``make_input`` planes, H and W multiples of 32 -> (B, 1, H, W) alpha in
    [0, 1] (the network ends in a sigmoid). ``.net`` is transformers' model, ``.cfg`` ours."""

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or ModelConfig(family="vitmatte")
        self.net = _transformers().VitMatteForImageMatting(hf_config(self.cfg.size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values=x).alphas

    def describe(self) -> str:
        """The variant in one line."""
        width = SIZES[self.cfg.size]["hidden_size"]
        return (
            f"ViTMatte-{self.cfg.size[0].upper()}: ViT/16 {width} wide, {DEPTH} blocks, "
            f"windows 14, global blocks {GLOBAL_BLOCKS}"
        )


def make_input(rgb01: torch.Tensor, trimap: torch.Tensor) -> torch.Tensor:
    """(3, H, W) or (B, 3, H, W) RGB in [0, 1] and a 0..255 trimap of the same layout
    ((H, W), (1, H, W) or (B, 1, H, W)) -> 4 planes: ImageNet-normalised RGB, then the trimap
    as 0 / 0.5 / 1, on ``rgb01``'s device."""
    raw = trimap.reshape(*rgb01.shape[:-3], 1, *rgb01.shape[-2:])
    planes = torch.full(raw.shape, 0.5, dtype=torch.float32, device=rgb01.device)
    planes[raw < TRIMAP_LOW] = 0.0
    planes[raw >= TRIMAP_HIGH] = 1.0
    mean, std = _MEAN.to(rgb01.device), _STD.to(rgb01.device)
    return torch.cat([(rgb01 - mean) / std, planes], dim=-3)


_BLOCK = re.compile(r"net\.backbone\.encoder\.layer\.(\d+)\.")


def layer_scale(name: str) -> tuple[str, float]:
    """The parameter group and learning-rate multiplier of a parameter named ``name``."""
    if name.startswith("net.backbone.embeddings."):
        return "embeddings", LAYER_DECAY ** (DEPTH + 1)
    match = _BLOCK.match(name)
    if match and ".residual." not in name:
        block = int(match[1])
        return f"block{block}", LAYER_DECAY ** (DEPTH - block)
    return "decoder", 1.0  # the decoder and the residual conv blocks
