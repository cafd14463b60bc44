"""The registry's front doors: build a network, read foreign weights into one, list its groups.

``build_model`` (optionally with a pretrained backbone), ``import_official`` (a family's
released weights), ``load_backbone`` and ``import_folder`` read files with
``training.models.weights.read_weights`` and hand the contents to the family's importers.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from configs import ModelConfig
from training.models.family import ParamGroup
from training.models.registry import FAMILIES, family_of, get_family
from training.models.weights import LoadReport, read_weights


def describe(model: nn.Module) -> str:
    """The variant of a network in one line, e.g. ``m2o nonlinear context aspp os32 k5 ...``."""
    return family_of(model).describe(model)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (BatchNorm running statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def parameter_groups(model: nn.Module) -> tuple[ParamGroup, ...]:
    """The family's parameter groups of ``model``, checked to hold each parameter once.

    Raises:
        ValueError: a parameter in no group (it would never train) or in two.
    """
    family = family_of(model)
    groups = tuple(family.param_groups(model))
    seen = [id(p) for group in groups for p in group.params]
    every = {id(p) for p in model.parameters()}
    if len(seen) != len(set(seen)) or set(seen) != every:
        raise ValueError(
            f"model family {family.name!r}: its parameter groups "
            f"({', '.join(g.name for g in groups)}) must hold every parameter exactly once; "
            f"they hold {len(seen)} ({len(set(seen))} distinct) of {len(every)}"
        )
    return groups


def build_model(
    model_cfg: ModelConfig | None = None, backbone: str | Path | None = None
) -> nn.Module:
    """A fresh network of ``model_cfg.family``, optionally with a pretrained backbone.

    Args:
        model_cfg: the family and variant (``None``: ``ModelConfig()``, the released IndexNet).
        backbone: a pretrained backbone file for ``load_backbone``; its ``LoadReport`` is kept
            on ``model.backbone_report`` (``None`` without one).

    Returns:
        The model (``nn.Module``), in training mode.

    Raises:
        ValueError: an unknown family, or a backbone file that cannot be read or placed.
    """
    cfg = model_cfg or ModelConfig()
    model = get_family(cfg.family).build(cfg)
    model.backbone_report = None if backbone is None else load_backbone(model, backbone)
    return model


def import_official(
    path: str | Path, model_cfg: ModelConfig | None = None
) -> tuple[nn.Module, LoadReport]:
    """Load a family's released weights (IndexNet's ``indexnet_matting.pth.tar``) into a model.

    Args:
        path: the released file (read with ``weights_only=True``, numpy arrays allowed).
        model_cfg: the family and variant it was trained as (``None``: the released IndexNet).

    Returns:
        The model with the weights loaded (in training mode), and what was loaded.

    Raises:
        ValueError: an unknown family or one without a release, an unreadable file, or tensors
            missing, unexpected or of the wrong shape (all of them listed).
    """
    cfg = model_cfg or ModelConfig()
    family = get_family(cfg.family)
    if family.import_official is None:
        raise ValueError(f"model family {family.name!r} has no official release to import")
    raw = read_weights(path, "checkpoint", allow_numpy=True)
    return family.import_official(raw, str(path), cfg)


def load_backbone(model: nn.Module, path: str | Path) -> LoadReport:
    """Initialise the backbone of ``model`` from pretrained (ImageNet) weights in ``path``.

    For IndexNet: MobileNetV2 in torchvision's, the official release's or our encoder's layout
    (``training.models.indexnet.weights.load_mobilenet_v2``). For ViTMatte: a ViT/16 in timm,
    DINO or detectron2 names, e.g. DINO's ``dino_deitsmall16_pretrain.pth``
    (``training.models.vitmatte.weights.load_vit_backbone``).

    Returns:
        What was loaded, ignored and adapted.

    Raises:
        ValueError: a family without a backbone, an unreadable file, or tensors it cannot place
            (all listed); the model is then left unchanged.
    """
    family = family_of(model)
    if family.load_backbone is None:
        raise ValueError(f"model family {family.name!r} has no pretrained backbone to load")
    raw = read_weights(path, "backbone", allow_numpy=True)
    return family.load_backbone(model, raw, str(path))


def import_folder(path: str | Path) -> nn.Module:
    """A network from a transformers-format folder (``config.json`` + weights), of the family
    its ``model_type`` names (ViTMatte: ``training.models.vitmatte.weights.import_hf``), in
    training mode. Without a readable ``model_type``, the one family that imports folders
    reads it (and says what is wrong with it).

    Raises:
        ValueError: not a folder, or one no family imports, or what its importer refuses.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder (a transformers-format model folder is)")
    try:
        kind = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        kind = None
    readers = [f for f in FAMILIES.values() if f.import_folder is not None]
    family = FAMILIES.get(kind or "") or (readers[0] if len(readers) == 1 else None)
    if family is None:
        known = ", ".join(f.name for f in readers)
        raise ValueError(
            f"{folder}: model_type {kind!r} names no family that imports folders ({known})"
        )
    if family.import_folder is None:
        raise ValueError(f"{folder}: model family {family.name!r} has no folder format to import")
    return family.import_folder(folder)
