"""ViTMatte's foreign weights: a pretrained ViT/16 backbone and transformers-format folders.

``load_vit_backbone`` maps a timm / DINO / detectron2 ViT's names onto transformers' (as the
official recipe starts ViTMatte-S from DINO's ViT-S/16); ``import_hf`` loads a folder that
``save_pretrained`` wrote, as the released ViTMatte checkpoints are distributed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from configs import ModelConfig, VitMatteConfig
from training.models.vitmatte.network import SIZES, VitMatte, _transformers, hf_config
from training.models.weights import LoadReport, load_strict, mismatch, state_dict_of

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
        size = model.cfg.vitmatte.size
        width = SIZES[size]["hidden_size"]
        raise mismatch(
            source, missing, unplaced, misshaped,
            f"ViTMatte-{size[0].upper()} takes a ViT/16 of width {width} "
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
            ViTMatte-S or -B as docs/reference.md section 5 defines them (each differing entry
            named), or weights that are missing or do not fit (named).
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
            f"{path}: not ViTMatte-{size} as docs/reference.md section 5 defines it: "
            + "; ".join(differ)
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
    model = VitMatte(ModelConfig(family="vitmatte", vitmatte=VitMatteConfig(size=size)))
    load_strict(model.net, loaded.state_dict(), str(folder))
    return model
