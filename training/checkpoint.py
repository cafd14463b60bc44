"""Our checkpoints: write a model (and a trainer's state) atomically, read it back safely.

A checkpoint is a dict ``{"format": "indexnet-checkpoint", "version": 3, "family": name,
"model": state_dict, "model_config": {...}, "config": {...} or None, ...}``; a trainer adds its
own entries (optimizer, scheduler, epoch, step, rng) beside them. Written atomically
(``shards.atomic``), read with ``torch.load(weights_only=True)`` (``training.models.weights``).
``model_config`` is the network's ``ModelConfig`` (``family`` and one section per family:
``{"family": "indexnet", "indexnet": {...}, "vitmatte": {"size": ...}}``), ``config`` the run's
whole resolved config (``Config.to_dict()``), both nested as configs/default.yaml is.

Versions: 3, configs in sections by concern and per family (issue 24); 2 (before), the same
entries with the older, flatter configs (``model_config`` like ``{"family": "indexnet", "size":
"small", "index_block": "m2o", ...}``, ``config`` with ``train``, ``loss`` and ``model``
sections); 1, no ``family`` entry (IndexNet only). ``load_checkpoint`` gives every version's
configs in the current shape, old names mapped through ``configs.schema.RENAMED``, silently.

The network is rebuilt by its family's registry entry (``training.models.registry``): versions
2 and 3 record the family at the top level (and in ``model_config``); a version-1 file names
none and is the default family's (IndexNet). A family this code does not know is refused by name.
``load_for_inference`` also takes a family's released weights (IndexNet's
``indexnet_matting.pth.tar``), so that a user can score the released model directly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from configs import Config, ConfigError, ModelConfig, config_from_dict
from configs.schema import upgrade
from shards.atomic import atomic_file
from training.models.build import import_folder
from training.models.family import DEFAULT_FAMILY
from training.models.registry import family_of, get_family
from training.models.weights import FORMAT, load_strict, read_weights

VERSION = 3  # 3: configs by concern and per family; 2: the "family" entry; 1: IndexNet only
_RESERVED = ("format", "version", "family", "model", "model_config", "config")


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    config: Config | Mapping[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """Write ``model`` (and a trainer's ``extra`` entries) atomically (``shards.atomic``).

    Args:
        path: the checkpoint file to write (its folder must exist).
        model: a network built by a model family; its weights are saved from the CPU, its
            family and variant (``model.cfg``) as ``family`` and ``model_config``.
        config: the full resolved config (a ``Config`` or its ``to_dict()``), recorded as is.
        **extra: more entries (optimizer, scheduler, epoch, step, rng...); each must load with
            ``weights_only=True``: tensors, dicts, lists, tuples, str, int, float, bool, None.

    Returns:
        The path written.

    Raises:
        ValueError: an ``extra`` key shadows one of ours, or the model's family is unknown.
    """
    clash = sorted(set(extra) & set(_RESERVED))
    if clash:
        raise ValueError(f"checkpoint entries {clash} are reserved; allowed: other names")
    if isinstance(config, Config):
        config = config.to_dict()
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "family": family_of(model).name,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model_config": dataclasses.asdict(model.cfg),
        "config": None if config is None else dict(config),
        **extra,
    }
    path = Path(path)
    with atomic_file(path) as f:
        torch.save(payload, f)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read one of our checkpoints (``weights_only=True``) and check its header.

    Returns:
        The checkpoint dict: ``family``, ``model`` (state dict on the CPU), ``model_config``
        (with its ``family``), ``config`` and whatever the writer added. A version-1 file gets
        the family it was written as, ``DEFAULT_FAMILY``; an older version's ``model_config``
        and ``config`` come in the current shape (``configs.schema.upgrade``).

    Raises:
        ValueError: no such file, not a PyTorch file, pickled objects, not our format or
            version, or a model family this code does not know; the message names the file.
    """
    return _checked(read_weights(path, "checkpoint"), path)


def _checked(ckpt: Any, path: str | Path) -> dict[str, Any]:
    """``ckpt`` if it is ours, of a version and family we read; a version-1 file's family filled
    in, an older version's configs in the current shape (silently: a reader cannot edit them).

    Raises:
        ValueError: not our format, a newer version, no model, or an unknown family (named).
    """
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        hint = (
            "; the official release's file is imported with `indexnet model import-official`"
            if isinstance(ckpt, dict) and "state_dict" in ckpt
            else ""
        )
        raise ValueError(
            f"{path}: not an IndexNet checkpoint (format {found!r}, expected {FORMAT!r}){hint}"
        )
    if not isinstance(ckpt.get("version"), int) or ckpt["version"] > VERSION:
        raise ValueError(
            f"{path}: checkpoint version {ckpt.get('version')!r} is not supported "
            f"(this code reads up to {VERSION})"
        )
    if not isinstance(ckpt.get("model"), dict) or not isinstance(ckpt.get("model_config"), dict):
        raise ValueError(f"{path}: checkpoint lacks its 'model' or 'model_config' entry")
    recorded = ckpt["model_config"].get("family", DEFAULT_FAMILY)
    family = ckpt.setdefault("family", recorded)  # version 1: no top-level entry
    if family != recorded:
        raise ValueError(
            f"{path}: the checkpoint's family {family!r} differs from its "
            f"model_config.family {recorded!r}"
        )
    try:
        get_family(family)
    except ValueError as exc:  # e.g. written by a newer version with more families
        raise ValueError(f"{path}: {exc}") from None
    ckpt["model_config"] = upgrade({"model": {**ckpt["model_config"], "family": family}})["model"]
    if isinstance(ckpt.get("config"), dict):
        ckpt["config"] = upgrade(ckpt["config"])
    return ckpt


def model_config_from(values: Mapping[str, Any], source: str = "model_config") -> ModelConfig:
    """Validate a recorded ``model_config`` dict (of any checkpoint version) back into a
    ``ModelConfig``."""
    try:
        return config_from_dict({"model": dict(values)}).model
    except ConfigError as exc:
        raise ValueError(f"{source}: {exc}") from None


def load_model(path: str | Path) -> nn.Module:
    """Rebuild the network recorded in one of our checkpoints, weights loaded strictly.

    Returns:
        The model (of the checkpoint's family) in training mode; call ``.eval()`` for inference.
    """
    return _model_of(load_checkpoint(path), path)


def _model_of(ckpt: dict[str, Any], path: str | Path) -> nn.Module:
    cfg = model_config_from(ckpt["model_config"], f"{path}: model_config")
    model = get_family(cfg.family).build(cfg)
    load_strict(model, ckpt["model"], str(path))
    return model


def load_for_inference(path: str | Path, model_cfg: ModelConfig | None = None) -> nn.Module:
    """A model ready for inference from our checkpoint, a family's released weights, or a
    transformers-format folder (``training.models.registry.import_folder``: ViTMatte).

    Our checkpoints name their own family and variant; any other file is read as the official
    release of ``model_cfg``'s family (``None``: the released IndexNet; a dict with a
    ``state_dict``, keys prefixed ``module.``, as ``indexnet_matting.pth.tar`` is).

    Returns:
        The model in eval mode, on the CPU.

    Raises:
        ValueError: the file is neither, or its tensors do not fit (named).
    """
    if Path(path).is_dir():  # a transformers-format folder (ViTMatte's released checkpoints)
        return import_folder(path).eval()
    raw = read_weights(path, "checkpoint", allow_numpy=True)
    if isinstance(raw, dict) and raw.get("format") == FORMAT:
        return _model_of(_checked(raw, path), path).eval()
    cfg = model_cfg or ModelConfig()
    family = get_family(cfg.family)
    if (
        family.import_official is not None
        and isinstance(raw, dict)
        and isinstance(raw.get("state_dict"), Mapping)
    ):
        return family.import_official(raw, str(path), cfg)[0].eval()
    release = family.official_file or f"weights of model family {family.name!r}"
    raise ValueError(
        f"{path}: neither an IndexNet checkpoint (indexnet train) nor the official release's "
        f"{release} (a dict with a state_dict)"
    )
