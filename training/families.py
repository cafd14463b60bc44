"""The model-family registry: everything the rest of the code needs to know about a network.

A family is one ``ModelFamily`` entry in ``FAMILIES``, keyed by ``model.family`` (a
``ModelConfig`` field, recorded in every checkpoint). The trainer, checkpoints, inference,
export and the CLI ask the registry, never a network class: adding a family is adding an entry.

The networks a family builds keep their ``ModelConfig`` as ``.cfg`` (as transformers' models
keep ``.config``): checkpoints record it, and ``family_of(model)`` reads the family from it.

The front doors here read files with ``training.weights.read_weights`` and pass the contents
to the family's importers: ``build_model`` (optionally with an ImageNet backbone),
``import_official`` (a family's released weights) and ``load_backbone``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from configs import ModelConfig
from training.indexnet_weights import load_mobilenet_v2, official_model
from training.loss import matting_loss
from training.model import IN_CHANNELS, IndexNet
from training.normalise import make_input
from training.vitmatte import DEPTH as VIT_DEPTH
from training.vitmatte import (
    PAD_MULTIPLE,
    VitMatte,
    exportable,
    import_hf,
    layer_scale,
    load_vit_backbone,
    no_weight_decay,
)
from training.vitmatte import make_input as vitmatte_input
from training.vitmatte_loss import vitmatte_loss
from training.weights import LoadReport, read_weights

# The family of what names none: version-1 checkpoints (written before families existed, all
# of them IndexNet) and modules without a ``.cfg`` (wrappers, TorchScript files); also
# ``ModelConfig``'s default.
DEFAULT_FAMILY = "indexnet"


@dataclass(frozen=True)
class ParamGroup:
    """One optimizer parameter group of a network."""

    name: str  # the group's name in the optimizer (and in ``train.jsonl`` as ``lr_<name>``)
    params: tuple[nn.Parameter, ...]
    backbone: bool = False  # pretrained: trained at learning_rate / train.backbone_lr_mult
    what: str = ""  # the modules it holds, for `indexnet model summary`
    lr_scale: float = 1.0  # a further multiplier of the group's lr (e.g. layer-wise decay)
    no_decay: tuple[nn.Parameter, ...] = ()  # those of ``params`` trained without weight decay


@dataclass(frozen=True)
class ModelFamily:
    """How to build, train, feed, export and import the weights of one kind of network."""

    name: str  # the key in FAMILIES, the value of model.family
    title: str  # how messages name the network, e.g. "IndexNet"
    build: Callable[[ModelConfig], nn.Module]  # a fresh network in training mode, cfg kept as .cfg
    param_groups: Callable[[nn.Module], Sequence[ParamGroup]]  # every parameter exactly once
    freeze_norm: Callable[[nn.Module, bool], nn.Module]  # keep (or stop keeping) norms in eval
    stride: Callable[[ModelConfig], int]  # input sides must be multiples of this
    pad_multiple: int  # inference pads to it: a multiple of every stride, so one tile size fits
    in_channels: int  # of the input make_input makes
    make_input: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (3,H,W) RGB01, trimap
    describe: Callable[[nn.Module], str]  # the variant in one line
    # (prediction, the step's tensors (training.augment.compose_batch), the loss config) ->
    # "loss" (the total, which is minimised) and each term as "loss_<term>", for train.jsonl
    loss: Callable[[torch.Tensor, dict[str, torch.Tensor], Any], dict[str, torch.Tensor]]
    official_file: str = ""  # the family's released weight file, for messages
    # (contents of the official file, source, cfg) -> (model, report); None: no release
    import_official: Callable[[Any, str, ModelConfig], tuple[nn.Module, LoadReport]] | None = None
    # (model, contents of a backbone file, source) -> report; None: no pretrained backbone
    load_backbone: Callable[[nn.Module, Any, str], LoadReport] | None = None
    # a transformers-format folder (config.json + safetensors) -> the model; None: no such format
    import_folder: Callable[[Path], nn.Module] | None = None
    # a context in which the family's networks export (e.g. a library function made traceable)
    exportable: Callable[[], AbstractContextManager] = nullcontext
    # how inference pads the input planes bottom/right: "reflect" or "zeros" (after make_input)
    pad_mode: str = "reflect"


def _indexnet_loss(pred: torch.Tensor, batch: dict[str, torch.Tensor], cfg) -> dict:
    loss = matting_loss(
        pred, batch["alpha"], batch["fg"], batch["bg"], batch["merged"], batch["unknown"], cfg
    )
    return {"loss": loss.total, "loss_alpha": loss.alpha, "loss_comp": loss.comp}


def _vitmatte_loss(pred: torch.Tensor, batch: dict[str, torch.Tensor], cfg) -> dict:
    loss = vitmatte_loss(pred, batch["alpha"], batch["unknown"])
    return {"loss": loss.total} | {
        f"loss_{k}": v for k, v in loss._asdict().items() if k != "total"
    }


def _vitmatte_groups(model: VitMatte) -> tuple[ParamGroup, ...]:
    """Layer-wise decay: the embeddings, ViT blocks 0 .. 11, then the decoder with the residual
    conv blocks (``training.vitmatte.layer_scale``); all trained from learning_rate. Weight
    decay spares ``training.vitmatte.no_weight_decay``'s parameters (norms, position table)."""
    groups: dict[str, list[nn.Parameter]] = {}
    scales: dict[str, float] = {}
    for name, param in model.named_parameters():
        group, scale = layer_scale(name)
        groups.setdefault(group, []).append(param)
        scales[group] = scale
    spared = {id(p) for p in no_weight_decay(model)}
    order = ["embeddings", *(f"block{i}" for i in range(VIT_DEPTH)), "decoder"]
    what = {"embeddings": "patch and position embeddings", "decoder": "decoder, residual blocks"}
    return tuple(
        ParamGroup(
            name,
            tuple(groups[name]),
            what=what.get(name, f"ViT {name}"),
            lr_scale=scales[name],
            no_decay=tuple(p for p in groups[name] if id(p) in spared),
        )
        for name in order
        if name in groups
    )


def _indexnet_groups(model: IndexNet) -> tuple[ParamGroup, ...]:
    return (
        ParamGroup("encoder", tuple(model.encoder_parameters()), True, "layer0 .. layer7"),
        ParamGroup(
            "decoder", tuple(model.decoder_parameters()), False, "index blocks, ASPP, decoder, head"
        ),
    )


INDEXNET = ModelFamily(
    name="indexnet",
    title="IndexNet",
    build=IndexNet,
    param_groups=_indexnet_groups,
    freeze_norm=IndexNet.freeze_encoder_bn,  # the encoder's BatchNorm statistics
    stride=lambda cfg: cfg.output_stride,
    pad_multiple=32,  # output stride 32 or 16
    in_channels=IN_CHANNELS,
    make_input=make_input,
    describe=IndexNet.describe,
    official_file="indexnet_matting.pth.tar",
    import_official=official_model,
    load_backbone=load_mobilenet_v2,
    loss=_indexnet_loss,
)

VITMATTE = ModelFamily(
    name="vitmatte",
    title="ViTMatte",
    build=VitMatte,
    param_groups=_vitmatte_groups,
    freeze_norm=lambda model, freeze: model,  # LayerNorms and decoder BN: the recipe freezes none
    stride=lambda cfg: PAD_MULTIPLE,
    pad_multiple=PAD_MULTIPLE,
    in_channels=4,
    make_input=vitmatte_input,
    describe=VitMatte.describe,
    loss=_vitmatte_loss,
    import_folder=import_hf,
    load_backbone=load_vit_backbone,
    exportable=exportable,
    pad_mode="zeros",  # the official code zero-pads the normalised input, then crops back
)

FAMILIES: dict[str, ModelFamily] = {INDEXNET.name: INDEXNET, VITMATTE.name: VITMATTE}


def get_family(name: str) -> ModelFamily:
    """The registry entry of ``name``.

    Raises:
        ValueError: not a known family; the message names it and the known ones.
    """
    family = FAMILIES.get(name)
    if family is None:
        raise ValueError(
            f"model.family {name!r} is not a model family; known: {', '.join(sorted(FAMILIES))}"
        )
    return family


def family_of(model: nn.Module) -> ModelFamily:
    """The family of a network built by one (from its ``.cfg``); else ``DEFAULT_FAMILY``'s."""
    cfg = getattr(model, "cfg", None)
    return get_family(cfg.family if isinstance(cfg, ModelConfig) else DEFAULT_FAMILY)


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
    (``training.indexnet_weights.load_mobilenet_v2``). For ViTMatte: a ViT/16 in timm, DINO or
    detectron2 names, e.g. DINO's ``dino_deitsmall16_pretrain.pth``
    (``training.vitmatte.load_vit_backbone``).

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
    its ``model_type`` names (ViTMatte: ``training.vitmatte.import_hf``), in training mode.

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
    family = FAMILIES.get(kind or "", VITMATTE)  # model_type names the family (vitmatte)
    if family.import_folder is None:
        raise ValueError(f"{folder}: model family {family.name!r} has no folder format to import")
    return family.import_folder(folder)
