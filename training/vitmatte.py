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
- ``layer_scale`` (the family's parameter groups): layer-wise learning-rate decay 0.65:
  block i at 0.65^(12 - i), the patch and position embeddings at 0.65^13, the residual conv
  blocks (inside the blocks) and the decoder at 1; and ``no_weight_decay``, what the
  recipe's weight decay spares;
- inference pads to a multiple of 32 (``pad_multiple``), as the official code does.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from configs import ModelConfig
from training.normalise import IMAGENET_MEAN, IMAGENET_STD
from training.weights import LoadReport, load_strict, mismatch, state_dict_of

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


def no_weight_decay(model: VitMatte) -> list[nn.Parameter]:
    """The parameters the official recipe trains without weight decay: those of
    ``nn.LayerNorm`` and BatchNorm modules (detectron2's norm types: the ViT blocks' norms
    and the decoder's BN) and the absolute position embeddings. The channels-first LayerNorms
    of the residual conv blocks (transformers' ``VitDetLayerNorm``, detectron2's own
    ``LayerNorm`` in the official code) are not of those types and are decayed, as there; so
    are the relative position tables."""
    norms = (nn.LayerNorm, nn.modules.batchnorm._BatchNorm)
    spared = [p for m in model.modules() if isinstance(m, norms) for p in m.parameters(False)]
    return spared + [model.net.backbone.embeddings.position_embeddings]


# A ViT's own names (timm, DINO, detectron2's ViTDet: the official ViTMatte) -> transformers'
_VIT_NAMES = (
    (re.compile(r"patch_embed\.proj\.(weight|bias)$"), r"embeddings.projection.\1"),
    (re.compile(r"pos_embed$"), "embeddings.position_embeddings"),
    (re.compile(r"blocks\.(\d+)\.attn\.(.+)$"), r"encoder.layer.\1.attention.\2"),
    (re.compile(r"blocks\.(\d+)\.(.+)$"), r"encoder.layer.\1.\2"),
)
# what a classification ViT has and ViTMatte does not: the class token, final norm and heads
_VIT_UNUSED = re.compile(r"(cls_token|dist_token|mask_token|(norm|fc_norm|head|head_dist)\..+)$")
_PATCH = "embeddings.projection.weight"
_PREFIXES = ("module.", "backbone.", "encoder.")  # DDP, DINO's wrapper, MAE/iBOT-style wrappers


def _vit_name(key: str) -> str | None:
    for pattern, name in _VIT_NAMES:
        if pattern.match(key):
            return pattern.sub(name, key)
    return None


def load_vit_backbone(model: VitMatte, raw, source: str) -> LoadReport:
    """Initialise ViTMatte's ViT from pretrained ViT weights, as the official recipe does with
    DINO ViT-S/16 (``dino_deitsmall16_pretrain.pth``; ViT-B/16 for ViTMatte-B).

    Accepted: a timm / DINO / detectron2 ViT state dict (``patch_embed.proj``, ``pos_embed``,
    ``blocks.N.attn.qkv`` ...), bare or inside ``state_dict``, ``model`` or a DINO training
    checkpoint's ``teacher``, with ``module.`` / ``backbone.`` prefixes dropped. As the
    official code loads it (non-strictly): a 3-channel patch embedding fills the RGB inputs
    and the 4th (trimap) input starts at zero; the class token, final norm and any head are
    ignored; what a classification ViT lacks (the relative position tables and the residual
    conv blocks) is not in the file: the relative position tables then start at zero (the
    official ViTDet's initialisation; transformers' random one is not zero), the residual
    blocks and the decoder keep their initialisation. Everything else must be there.

    Raises:
        ValueError: no state dict, tensors it cannot place, of the wrong shape (e.g. a ViT-B
            file for ViTMatte-S) or ViT tensors the file lacks (all listed); the model is then
            left unchanged.
    """
    for wrapper in ("teacher", "model"):  # DINO's training checkpoint (the teacher is the one
        if isinstance(raw, dict) and isinstance(raw.get(wrapper), dict):  # evaluated); MAE's
            raw = raw[wrapper]
            break
    state = state_dict_of(raw, source)
    own = model.net.backbone.state_dict()
    placed: dict[str, torch.Tensor] = {}
    ignored, unplaced, misshaped, notes = [], [], [], []
    for key, tensor in state.items():
        bare = key
        while bare.startswith(_PREFIXES):
            bare = bare.split(".", 1)[1]
        if _VIT_UNUSED.match(bare):
            ignored.append(key)
            continue
        name = _vit_name(bare)
        if name is None or name not in own:
            unplaced.append(key)
            continue
        target = own[name]
        if name == _PATCH and tensor.shape == (target.shape[0], 3, *target.shape[2:]):
            tensor = torch.cat([tensor, torch.zeros_like(tensor[:, :1])], dim=1)
            notes.append(f"{name}: RGB weights from {key}; the 4th (trimap) input starts at zero")
        if tensor.shape != target.shape:
            misshaped.append(f"{key} {list(tensor.shape)} (model {name}: {list(target.shape)})")
        placed[name] = tensor
    rel_pos = [k for k in own if k.endswith((".rel_pos_h", ".rel_pos_w"))]
    absent = [k for k in own if k not in placed]
    missing = [
        k for k in absent if not k.endswith((".rel_pos_h", ".rel_pos_w")) and ".residual." not in k
    ]
    if unplaced or misshaped or missing:
        width = SIZES[model.cfg.size]["hidden_size"]
        raise mismatch(
            source, missing, unplaced, misshaped,
            f"ViTMatte-{model.cfg.size[0].upper()} takes a ViT/16 of width {width} "
            "(timm, DINO or detectron2 names)",
        )  # fmt: skip
    with torch.no_grad():
        for name, tensor in placed.items():
            own[name].copy_(tensor)
        for name in rel_pos:
            if name not in placed:
                own[name].zero_()
    zeroed = [k for k in rel_pos if k not in placed]
    if zeroed:
        notes.append(f"{len(zeroed)} relative position tables not in the file: they start at zero")
    kept = [k for k in absent if ".residual." in k]
    if kept:
        notes.append(
            f"{len(kept)} residual conv block tensors not in the file: left as initialised"
        )
    return LoadReport(source, "ViT (timm/DINO names)", len(placed), tuple(ignored), tuple(notes))


def _square_rel_pos(q_size, k_size, rel_pos: torch.Tensor, original):
    """transformers' ``get_rel_pos`` for self-attention (``q_size == k_size``, always so in
    ViTMatte) in integer tensor ops: ``arange(q)[:, None] - arange(k)[None, :] + k - 1``, the
    same indices as its float ``* max(k / q, 1.0)`` form, which torch.onnx cannot convert for
    symbolic sizes (``aten.mul.Scalar`` of a SymFloat)."""
    if q_size != k_size:
        return original(q_size, k_size, rel_pos)
    length = 2 * q_size - 1
    if (
        rel_pos.shape[0] != length
    ):  # the table of 512-pixel pretraining, resized as transformers does
        rel_pos = nn.functional.interpolate(
            rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=length, mode="linear"
        )
        rel_pos = rel_pos.reshape(-1, length).permute(1, 0)
    coords = torch.arange(q_size)[:, None] - torch.arange(k_size)[None, :] + (k_size - 1)
    return rel_pos[coords]


@contextlib.contextmanager
def exportable() -> Iterator[None]:
    """While open, transformers' ViTDet looks up relative positions with ``_square_rel_pos``
    (equal outputs, exportable to ONNX at any multiple of 32); restored on exit."""
    from transformers.models.vitdet import modeling_vitdet

    original = modeling_vitdet.get_rel_pos
    modeling_vitdet.get_rel_pos = lambda q, k, table: _square_rel_pos(q, k, table, original)
    try:
        yield
    finally:
        modeling_vitdet.get_rel_pos = original


# the config entries that make a transformers ViTMatte folder the network of a given size
_BACKBONE_KEYS = (
    "num_channels", "patch_size", "hidden_size", "num_attention_heads", "num_hidden_layers",
    "mlp_ratio", "qkv_bias", "window_size", "window_block_indices", "residual_block_indices",
    "use_absolute_position_embeddings", "use_relative_position_embeddings",
    "pretrain_image_size",
)  # fmt: skip
_DECODER_KEYS = ("hidden_size", "convstream_hidden_sizes", "fusion_hidden_sizes")


def import_hf(folder: str | Path) -> VitMatte:
    """Our ``VitMatte`` with the weights of a transformers-format folder (``config.json`` and
    ``model.safetensors``, as ``save_pretrained`` writes them and the released ViTMatte
    checkpoints are distributed); its size is read from the config, and nothing is downloaded.

    Raises:
        ValueError: no such folder, no or unreadable ``config.json``, a model that is not
            ViTMatte-S or -B as REFERENCE.md defines them (each differing entry named), or
            weights that are missing or do not fit (named).
    """
    folder = Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        raise ValueError(
            f"{folder}: no config.json; a transformers-format ViTMatte folder holds config.json "
            "and model.safetensors (what save_pretrained writes)"
        )
    try:
        found = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON config ({exc})") from None
    if not isinstance(found, dict) or found.get("model_type") != "vitmatte":
        kind = found.get("model_type") if isinstance(found, dict) else None
        raise ValueError(f"{path}: model_type is {kind!r}, not 'vitmatte'")
    backbone = found.get("backbone_config") or {}
    size = next(
        (name for name, s in SIZES.items() if backbone.get("hidden_size") == s["hidden_size"]),
        None,
    )
    if size is None:
        widths = ", ".join(f"{s['hidden_size']} ({name})" for name, s in SIZES.items())
        raise ValueError(
            f"{path}: backbone_config.hidden_size is {backbone.get('hidden_size')!r}; ViTMatte "
            f"is {widths}"
        )
    want = hf_config(size).to_dict()
    differ = [
        f"backbone_config.{key}: {backbone.get(key)!r} (ViTMatte-{size}: "
        f"{want['backbone_config'][key]!r})"
        for key in _BACKBONE_KEYS
        if backbone.get(key) != want["backbone_config"][key]
    ] + [
        f"{key}: {found.get(key)!r} (ViTMatte-{size}: {want[key]!r})"
        for key in _DECODER_KEYS
        if found.get(key) != want[key]
    ]
    if differ:
        raise ValueError(
            f"{path}: not ViTMatte-{size} as REFERENCE.md defines it: " + "; ".join(differ)
        )
    t = _transformers()
    try:
        loaded, info = t.VitMatteForImageMatting.from_pretrained(
            folder, local_files_only=True, output_loading_info=True
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{folder}: cannot load its weights ({exc})") from None
    problems = {k: v for k, v in info.items() if v and k != "error_msgs"} | (
        {"errors": info["error_msgs"]} if info.get("error_msgs") else {}
    )
    if problems:
        listed = "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in problems.items())
        raise ValueError(f"{folder}: the weights do not fit ViTMatte-{size}: {listed}")
    model = VitMatte(ModelConfig(family="vitmatte", size=size))
    load_strict(model.net, loaded.state_dict(), str(folder))
    return model
