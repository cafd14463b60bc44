"""Reading weight files safely and copying tensors into a model, for every model family.

Every file is read with ``torch.load(weights_only=True)``: nothing is unpickled beyond tensors
and plain containers (external files may also hold numpy scalars and arrays, which trainers such
as the official IndexNet one saved in their loss history). No weights are ever downloaded. A
family's importers (e.g. ``training.models.indexnet.weights``) only interpret what is read
here, so one reader guards every file.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

# The format tag of our checkpoints (written by ``training.checkpoint``); known here so that a
# reader looking for tensors finds them inside one of ours too.
FORMAT = "indexnet-checkpoint"
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
            lines.append(f"ignored {len(self.ignored)} unused tensors: {listing(self.ignored)}")
        lines += self.notes
        return "\n".join(lines)


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


def read_weights(path: str | Path, what: str, allow_numpy: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU.

    Args:
        path: the file.
        what: what the file should be, for messages ("checkpoint", "backbone").
        allow_numpy: also accept numpy scalars and arrays (foreign trainers' loss histories).

    Returns:
        The loaded object: tensors in plain containers.

    Raises:
        ValueError: no such file, not a PyTorch file, or pickled objects; the message names
            the file.
    """
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


def listing(names: list[str] | tuple[str, ...]) -> str:
    """The first names of a list, then how many more: one line of an error message."""
    shown = ", ".join(names[:_LISTED])
    return shown + (f", ... and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def mismatch(
    source: str,
    missing: list[str],
    unexpected: list[str],
    misshaped: list[str],
    hint: str = "",
) -> ValueError:
    """One ValueError listing every tensor that does not fit, by category."""
    parts = [f"{source}: tensors do not match the model"]
    if missing:
        parts.append(f"missing ({len(missing)}): {listing(missing)}")
    if unexpected:
        parts.append(f"unexpected ({len(unexpected)}): {listing(unexpected)}")
    if misshaped:
        parts.append(f"wrong shape ({len(misshaped)}): {listing(misshaped)}")
    if hint:
        parts.append(hint)
    return ValueError("\n  ".join(parts))


def state_dict_of(raw: Any, source: str) -> dict[str, torch.Tensor]:
    """The tensor dict inside a loaded file: ``raw["state_dict"]``, ``raw["model"]`` or raw.

    Raises:
        ValueError: no mapping of names to tensors, or entries that are not named tensors.
    """
    if isinstance(raw, Mapping):
        if raw.get("format") == FORMAT and isinstance(raw.get("model"), Mapping):
            raw = raw["model"]
        elif isinstance(raw.get("state_dict"), Mapping):
            raw = raw["state_dict"]
    if not isinstance(raw, Mapping) or not raw:
        raise ValueError(f"{source}: no state dict (a mapping of names to tensors) in the file")
    bad = [str(k) for k, v in raw.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise ValueError(f"{source}: entries that are not named tensors: {listing(bad)}")
    return {k.removeprefix("module."): v for k, v in raw.items()}  # nn.DataParallel's prefix


def load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> int:
    """Copy ``state`` into ``model``: names and shapes must match exactly; BN counters optional.

    Returns:
        The number of tensors copied.

    Raises:
        ValueError: tensors missing, unexpected or of the wrong shape (all listed); the model
            is then left unchanged.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    misshaped = [
        f"{k} {list(v.shape)} (model: {list(own[k].shape)})"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or misshaped:
        raise mismatch(source, missing, unexpected, misshaped)
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v)
    return len(state)
