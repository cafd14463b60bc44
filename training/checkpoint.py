"""Weights in and out: our checkpoints, the official release's, and ImageNet backbones.

Every file is read with ``torch.load(weights_only=True)``: nothing is unpickled beyond tensors
and plain containers (external files may also hold numpy scalars and arrays, which the official
trainer saved in its loss history). No weights are ever downloaded.

- Our checkpoint: a dict ``{"format": "indexnet-checkpoint", "version": 1, "model": state_dict,
  "model_config": {...}, "config": {...} or None, ...}``; a trainer adds its own entries
  (optimizer, scheduler, epoch, step, rng) beside them. Written atomically (``shards.atomic``).
- The official release (``indexnet_matting.pth.tar``): ``{"state_dict": {"module.<name>": ...}}``,
  checked strictly against our names and shapes (``import_official``).
- ImageNet MobileNetV2 for the encoder (``load_backbone``): torchvision's ``mobilenet_v2`` layout,
  the official release's (the CSAIL/tonylins ``features.N.conv.M`` layout it loads), or our own
  encoder names.
"""

from __future__ import annotations

import dataclasses
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from configs import Config, ConfigError, ModelConfig, config_from_dict
from shards.atomic import atomic_file
from training.mobilenetv2 import ENCODER_LAYERS, ENCODER_STAGES
from training.model import IndexNet

FORMAT = "indexnet-checkpoint"
VERSION = 1
_RESERVED = ("format", "version", "model", "model_config", "config")
_LISTED = 12  # names shown per category in an error before "... and N more"


@dataclass(frozen=True)
class LoadReport:
    """What a weight file put into a model."""

    source: str  # the file
    layout: str  # the layout recognised, e.g. "torchvision mobilenet_v2"
    loaded: int  # tensors copied into the model
    ignored: tuple[str, ...] = ()  # source tensors deliberately left out (e.g. the classifier)
    notes: tuple[str, ...] = ()  # anything adapted (the 4-channel first conv, absent counters)

    def summary(self) -> str:
        """A few human-readable lines."""
        lines = [f"{self.source}: {self.layout}, {self.loaded} tensors loaded"]
        if self.ignored:
            lines.append(f"ignored {len(self.ignored)} unused tensors: {_listing(self.ignored)}")
        lines += self.notes
        return "\n".join(lines)


# -- reading files safely ---------------------------------------------------------------------


def _numpy_globals() -> list[Any]:
    """numpy scalar/array reconstructors, under numpy 2 and numpy 1 names (data, not code)."""
    core = getattr(np, "_core", None) or np.core
    scalar, rebuild = core.multiarray.scalar, core.multiarray._reconstruct
    dtypes = {type(np.dtype(c)) for c in "?bhilqBHILQefdFD"}
    return [
        scalar,
        rebuild,
        (scalar, "numpy.core.multiarray.scalar"),
        (rebuild, "numpy.core.multiarray._reconstruct"),
        np.dtype,
        np.ndarray,
        *dtypes,
    ]


def _read(path: str | Path, what: str, allow_numpy: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; every failure a ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such {what} file")
    try:
        if allow_numpy:
            with torch.serialization.safe_globals(_numpy_globals()):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.findall(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found:
            raise ValueError(
                f"{path}: not a plain {what}: it holds pickled objects ({found[0]}), and we "
                "load only tensors and plain containers (torch.load weights_only=True)"
            ) from None
        reason = re.findall(r"WeightsUnpickler error: \s*(.+)", str(exc))
        raise ValueError(
            f"{path}: not a PyTorch {what} file ({reason[0] if reason else 'cannot unpickle'})"
        ) from None
    except Exception as exc:  # torch.load raises KeyError, EOFError, RuntimeError... on junk
        raise ValueError(
            f"{path}: not a PyTorch {what} file ({type(exc).__name__}: {exc})"
        ) from None


def _listing(names: list[str] | tuple[str, ...]) -> str:
    shown = ", ".join(names[:_LISTED])
    return shown + (f", ... and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def _mismatch(
    source: str,
    missing: list[str],
    unexpected: list[str],
    misshaped: list[str],
    hint: str = "",
) -> ValueError:
    parts = [f"{source}: tensors do not match the model"]
    if missing:
        parts.append(f"missing ({len(missing)}): {_listing(missing)}")
    if unexpected:
        parts.append(f"unexpected ({len(unexpected)}): {_listing(unexpected)}")
    if misshaped:
        parts.append(f"wrong shape ({len(misshaped)}): {_listing(misshaped)}")
    if hint:
        parts.append(hint)
    return ValueError("\n  ".join(parts))


def _state_dict_of(raw: Any, source: str) -> dict[str, torch.Tensor]:
    """The tensor dict inside a loaded file: ``raw["state_dict"]``, ``raw["model"]`` or raw."""
    if isinstance(raw, Mapping):
        if raw.get("format") == FORMAT and isinstance(raw.get("model"), Mapping):
            raw = raw["model"]
        elif isinstance(raw.get("state_dict"), Mapping):
            raw = raw["state_dict"]
    if not isinstance(raw, Mapping) or not raw:
        raise ValueError(f"{source}: no state dict (a mapping of names to tensors) in the file")
    bad = [str(k) for k, v in raw.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise ValueError(f"{source}: entries that are not named tensors: {_listing(bad)}")
    return {k.removeprefix("module."): v for k, v in raw.items()}  # nn.DataParallel's prefix


def _load_strict(model: IndexNet, state: Mapping[str, torch.Tensor], source: str) -> int:
    """Copy ``state`` into ``model``: names and shapes must match exactly; BN counters optional."""
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    misshaped = [
        f"{k} {list(v.shape)} (model: {list(own[k].shape)})"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or misshaped:
        raise _mismatch(source, missing, unexpected, misshaped)
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v)
    return len(state)


# -- our checkpoints --------------------------------------------------------------------------


def save_checkpoint(
    path: str | Path,
    model: IndexNet,
    config: Config | Mapping[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """Write ``model`` (and a trainer's ``extra`` entries) atomically (``shards.atomic``).

    Args:
        path: the checkpoint file to write (its folder must exist).
        model: the network; its weights are saved from the CPU, its variant as ``model_config``.
        config: the full resolved config (a ``Config`` or its ``to_dict()``), recorded as is.
        **extra: more entries (optimizer, scheduler, epoch, step, rng...); each must load with
            ``weights_only=True``: tensors, dicts, lists, tuples, str, int, float, bool, None.

    Returns:
        The path written.

    Raises:
        ValueError: an ``extra`` key shadows one of ours.
    """
    clash = sorted(set(extra) & set(_RESERVED))
    if clash:
        raise ValueError(f"checkpoint entries {clash} are reserved; allowed: other names")
    if isinstance(config, Config):
        config = config.to_dict()
    payload = {
        "format": FORMAT,
        "version": VERSION,
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
        The checkpoint dict: ``model`` (state dict on the CPU), ``model_config``, ``config`` and
        whatever the writer added.

    Raises:
        ValueError: no such file, not a PyTorch file, pickled objects, or not our format or
            version; the message names the file.
    """
    return _checked(_read(path, "checkpoint"), path)


def _checked(ckpt: Any, path: str | Path) -> dict[str, Any]:
    """``ckpt`` if it is one of our checkpoints of a version we read; else a ValueError."""
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
    return ckpt


def model_config_from(values: Mapping[str, Any], source: str = "model_config") -> ModelConfig:
    """Validate a recorded ``model_config`` dict back into a ``ModelConfig``."""
    try:
        return config_from_dict({"model": dict(values)}).model
    except ConfigError as exc:
        raise ValueError(f"{source}: {exc}") from None


def load_model(path: str | Path) -> IndexNet:
    """Rebuild the network recorded in one of our checkpoints, weights loaded strictly.

    Returns:
        The model in training mode (call ``.eval()`` for inference).
    """
    return _model_of(load_checkpoint(path), path)


def _model_of(ckpt: dict[str, Any], path: str | Path) -> IndexNet:
    model = IndexNet(model_config_from(ckpt["model_config"], f"{path}: model_config"))
    _load_strict(model, ckpt["model"], str(path))
    return model


# -- the official release ---------------------------------------------------------------------


def import_official(
    path: str | Path, model_cfg: ModelConfig | None = None
) -> tuple[IndexNet, LoadReport]:
    """Load the official PyTorch checkpoint (``indexnet_matting.pth.tar``) into an ``IndexNet``.

    The file is a dict whose ``state_dict`` has keys prefixed ``module.`` (nn.DataParallel);
    ``num_batches_tracked`` may be present or not. Names and shapes must match exactly.

    Args:
        path: the official file.
        model_cfg: the variant it was trained as (``None``: the released one).

    Returns:
        The model with the weights loaded (in training mode), and what was loaded.

    Raises:
        ValueError: an unreadable file, or tensors missing, unexpected or of the wrong shape
            (all of them listed).
    """
    return _official_model(_read(path, "checkpoint", allow_numpy=True), str(path), model_cfg)


def _official_model(
    raw: Any, source: str, model_cfg: ModelConfig | None
) -> tuple[IndexNet, LoadReport]:
    state = _state_dict_of(raw, source)
    model = IndexNet(model_cfg)
    loaded = _load_strict(model, state, source)
    notes = ()
    if not any(k.endswith("num_batches_tracked") for k in state):
        notes = ("BatchNorm num_batches_tracked absent in the file; left at 0",)
    return model, LoadReport(source, "official IndexNet state_dict", loaded, (), notes)


def load_for_inference(path: str | Path, model_cfg: ModelConfig | None = None) -> IndexNet:
    """A model ready for inference from our checkpoint or the official release's file.

    Our checkpoints name their own variant; the official ``indexnet_matting.pth.tar`` (a dict
    with ``state_dict``, keys prefixed ``module.``) is imported as ``model_cfg`` (``None``: the
    released variant), so a user can score the released model directly.

    Returns:
        The model in eval mode, on the CPU.

    Raises:
        ValueError: the file is neither, or its tensors do not fit (named).
    """
    raw = _read(path, "checkpoint", allow_numpy=True)
    if isinstance(raw, dict) and raw.get("format") == FORMAT:
        return _model_of(_checked(raw, path), path).eval()
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), Mapping):
        return _official_model(raw, str(path), model_cfg)[0].eval()
    raise ValueError(
        f"{path}: neither an IndexNet checkpoint (indexnet train) nor the official release's "
        "indexnet_matting.pth.tar (a dict with a state_dict)"
    )


# -- ImageNet backbones -----------------------------------------------------------------------

_TORCHVISION_NESTED = re.compile(r"^features\.\d+\.conv\.\d+\.\d+\.")
# torchvision's block layout -> the official one: expansion blocks wrap conv+BN in
# Conv2dNormActivation (conv.0.0, conv.0.1, conv.1.0, conv.1.1), then conv.2 / conv.3
_TV_EXPAND = {"0.0": "0", "0.1": "1", "1.0": "3", "1.1": "4", "2": "6", "3": "7"}
_TV_NO_EXPAND = {"0.0": "0", "0.1": "1", "1": "3", "2": "4"}  # t = 1: dw, BN, pw, BN
_BLOCKS = [(s.name, i, s.expand_ratio) for s in ENCODER_STAGES for i in range(s.blocks)]
_UNUSED = re.compile(rf"^(features\.{len(_BLOCKS) + 1}\.|classifier\.)")  # 320->1280, classifier


def _backbone_name(key: str, torchvision: bool) -> str | None:
    """Our encoder name for a MobileNetV2 ``features.*`` key, or None when it has none."""
    m = re.match(r"^features\.(\d+)\.(.+)$", key)
    if not m:
        return None
    index, rest = int(m.group(1)), m.group(2)
    if index == 0:
        return f"layer0.{rest}" if re.match(r"^[01]\.\w+$", rest) else None
    if index > len(_BLOCKS):
        return None
    layer, block, expand = _BLOCKS[index - 1]
    if not torchvision:
        return f"{layer}.{block}.{rest}"
    m = re.match(r"^conv\.(\d+(?:\.\d+)?)\.(\w+)$", rest)
    table = _TV_EXPAND if expand != 1 else _TV_NO_EXPAND
    if not m or m.group(1) not in table:
        return None
    return f"{layer}.{block}.conv.{table[m.group(1)]}.{m.group(2)}"


def load_backbone(model: IndexNet, path: str | Path) -> LoadReport:
    """Initialise the encoder (layer0 .. layer7) from ImageNet MobileNetV2 weights.

    Accepted layouts (a bare state dict, or inside ``state_dict``; ``module.`` prefixes dropped):
    torchvision's ``mobilenet_v2`` (``features.0`` .. ``features.17``, nested
    ``conv.0.0``), the official release's backbone (the CSAIL MobileNetV2 ``features.N.conv.M``
    that its ``CORRESP_NAME`` maps), or our own encoder names (``layer0`` .. ``layer7``). The
    last conv (``features.18``) and the classifier are reported as ignored. A 3-channel first
    conv fills the RGB inputs; the 4th (trimap) input channel starts at zero.

    Args:
        model: the network; only its encoder is written.
        path: the weight file.

    Returns:
        What was loaded, ignored and adapted.

    Raises:
        ValueError: an unreadable file, or a tensor it cannot place, of the wrong shape, or an
            encoder tensor it lacks (all listed); the model is then left unchanged.
    """
    source = str(path)
    state = _state_dict_of(_read(path, "backbone", allow_numpy=True), source)
    own = model.state_dict()
    encoder = {k for k in own if k.split(".", 1)[0] in ENCODER_LAYERS}
    if any(k.split(".", 1)[0] in ENCODER_LAYERS for k in state):
        layout, torchvision = "IndexNet encoder", False
    elif any(_TORCHVISION_NESTED.match(k) for k in state):
        layout, torchvision = "torchvision mobilenet_v2", True
    else:
        layout, torchvision = "official backbone (CSAIL MobileNetV2 features.N.conv.M)", False

    placed: dict[str, torch.Tensor] = {}
    ignored, unplaced, misshaped, notes = [], [], [], []
    for key, tensor in state.items():
        if layout == "IndexNet encoder":
            name = key if key in encoder else None
        elif _UNUSED.match(key):
            ignored.append(key)
            continue
        else:
            name = _backbone_name(key, torchvision)
        if name is None or name not in encoder:
            unplaced.append(key)
            continue
        target = own[name]
        if name == "layer0.0.weight" and tensor.shape == (*target.shape[:1], 3, *target.shape[2:]):
            tensor = torch.cat([tensor, torch.zeros_like(tensor[:, :1])], dim=1)  # + trimap input
            notes.append(f"{name}: RGB weights from {key}; the 4th (trimap) input starts at zero")
        if tensor.shape != target.shape:
            misshaped.append(f"{key} {list(tensor.shape)} (model {name}: {list(target.shape)})")
        placed[name] = tensor
    missing = [k for k in sorted(encoder - placed.keys()) if not k.endswith("num_batches_tracked")]
    if unplaced or misshaped or missing:
        hint = (
            "a backbone file holds only MobileNetV2 weights; import a full IndexNet checkpoint "
            "with `indexnet model import-official` instead"
            if layout == "IndexNet encoder"
            else f"read as the {layout} layout"
        )
        raise _mismatch(source, missing, unplaced, misshaped, hint)
    with torch.no_grad():
        for name, tensor in placed.items():
            own[name].copy_(tensor)
    if not any(k.endswith("num_batches_tracked") for k in placed):
        notes.append("BatchNorm num_batches_tracked absent in the file; left as they were")
    return LoadReport(source, layout, len(placed), tuple(ignored), tuple(notes))
