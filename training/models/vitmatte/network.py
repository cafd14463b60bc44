"""ViTMatte (Yao et al., 2023): transformers' network, its config built in code.

The network is transformers' ``VitMatteForImageMatting`` (the optional ``vitmatte`` extra),
its config built here from docs/reference.md section 5 (nothing is downloaded): a plain
ViT/16 backbone on 4 channels with window attention (14) in blocks 0, 1, 3, 4, 6, 7, 9, 10,
global attention plus a residual conv block in blocks 2, 5, 8, 11, and the detail-capture
decoder. ``model.vitmatte.size`` picks ViTMatte-S (384 wide, 6 heads; 25.8M parameters) or -B
(768, 12). What is ours is only what the official code defines around it, one module each:
``input`` (the network input), ``loss``, ``optim`` (layer-wise decay, no-decay parameters),
``weights`` (DINO/timm ViT backbones, transformers folders) and ``export`` (a traceable
relative-position lookup); ``family`` registers it all.
"""

from __future__ import annotations

import torch
from torch import nn

from configs import ModelConfig

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


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ValueError(f"model.family vitmatte: {EXTRA_HINT}") from None
    return transformers


def hf_config(size: str):
    """transformers' ``VitMatteConfig`` of ViTMatte-S (``small``) or -B (``base``)."""
    if size not in SIZES:
        raise ValueError(f"model.vitmatte.size must be one of {', '.join(SIZES)}, got {size!r}")
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
        self.net = _transformers().VitMatteForImageMatting(hf_config(self.cfg.vitmatte.size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values=x).alphas

    def describe(self) -> str:
        """The variant in one line."""
        size = self.cfg.vitmatte.size
        width = SIZES[size]["hidden_size"]
        return (
            f"ViTMatte-{size[0].upper()}: ViT/16 {width} wide, {DEPTH} blocks, "
            f"windows 14, global blocks {GLOBAL_BLOCKS}"
        )
