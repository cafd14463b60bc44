"""Export a trained network to ONNX or TorchScript, checked against eager PyTorch.

The model's family (``training.models.registry``) says its input channels and stride. Both
formats take any input whose sides are multiples of that stride (the output stride, 32, for
the released IndexNet): the graph is exported once at an example size, then the written
file is loaded back and compared with the eager model on seeded random inputs at that size
and at sizes other than it. The file appears only when every check passes (``shards.atomic``).

- TorchScript: ``torch.jit.trace`` (``torch.jit.script`` cannot compile the model: it picks
  submodules at run time, by name and from a tuple). The trace records sizes as ``aten::size``
  ops, so H and W stay dynamic; the shape check that tracing drops is put back by a scripted
  wrapper (``_SizeCheck``), so a bad size raises ``ValueError`` inside TorchScript rather than a
  broadcast error deep in the graph. Any batch size works. torch 2.13 marks torch.jit as
  deprecated; the file still loads with ``torch.jit.load`` (and LibTorch's ``torch::jit::load``).
- ONNX: the ``torch.export``-based exporter (``torch.onnx.export(dynamo=True)``, the default)
  with ``H = stride * h`` and ``W = stride * w`` as symbolic dimensions (``32*h``, ``32*w`` in
  the file); batch 1. Weights are stored inside the one file (no ``.data`` sidecar). Checked
  with ``onnx.checker``, and run with onnxruntime when it is installed.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from shards.atomic import atomic_file
from training.models.family import ModelFamily
from training.models.registry import family_of

FORMATS = ("onnx", "torchscript")
TOLERANCE = 1e-4  # largest |exported - eager| accepted, on raw alpha
EXAMPLE_SIZE = (64, 96)  # (H, W) the graph is exported at; non-square so H and W stay apart
CHECK_SIZES = ((96, 160), (160, 96))  # (H, W) checked besides the example: new H and new W
INPUT_NAME, OUTPUT_NAME = "input", "alpha"  # the ONNX graph's names
ONNX_EXTRA = 'pip install "indexnet-matting[onnx]"'


class ExportCheckError(RuntimeError):
    """The exported file did not pass its check (parity with eager PyTorch, or onnx.checker)."""


@dataclass(frozen=True)
class ExportReport:
    """What ``export_model`` wrote and how it was checked."""

    format: str  # "onnx" or "torchscript"
    path: Path  # the file written
    bytes: int  # its size
    signature: str  # input -> output names and shapes, e.g. "input (1, 4, 32*h, 32*w) -> ..."
    example_size: tuple[int, int]  # (H, W) the graph was exported at
    checked_sizes: tuple[tuple[int, int], ...]  # (H, W) run against eager PyTorch
    max_abs_diff: float | None  # largest |exported - eager| over them; None: not run
    tolerance: float  # the largest accepted
    checked_with: str  # e.g. "onnxruntime 1.32.0", "torch.jit (torch 2.13.0)"
    seconds: float  # export and check, wall clock
    notes: tuple[str, ...] = ()  # e.g. onnxruntime absent

    def summary(self) -> str:
        """A few human-readable lines."""
        sizes = ", ".join(f"{h}x{w}" for h, w in self.checked_sizes)
        if self.max_abs_diff is None:
            parity = f"parity not run ({self.checked_with}); sizes {sizes}"
        else:
            parity = (
                f"max |{self.format} - eager PyTorch| = {self.max_abs_diff:.3g} at {sizes} "
                f"(tolerance {self.tolerance:g}), run with {self.checked_with}"
            )
        lines = [
            f"wrote {self.path} ({self.format}, {self.bytes:,} bytes) in {self.seconds:.1f} s",
            f"{self.signature}; exported at {self.example_size[0]}x{self.example_size[1]}",
            parity,
        ]
        return "\n".join(lines + list(self.notes))


def check_target(fmt: str, path: str | Path) -> Path:
    """Refuse an export that cannot succeed, before any slow work.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: an unknown format, a missing output folder, or ``path`` is a folder.
        ImportError: ONNX asked for and the ``onnx`` or ``onnxscript`` package is missing.
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; allowed: {', '.join(FORMATS)}")
    if path.is_dir():
        example = path / ("indexnet.onnx" if fmt == "onnx" else "indexnet.pt")
        raise ValueError(f"{path} is a folder; give a file name, e.g. {example}")
    if not path.parent.is_dir():
        raise ValueError(f"{path.parent}: no such folder for the output file {path.name}")
    if fmt == "onnx":
        _require_onnx()
    return path


def export_model(
    model: nn.Module,
    fmt: str,
    path: str | Path,
    example_size: tuple[int, int] = EXAMPLE_SIZE,
    check_sizes: Sequence[tuple[int, int]] = CHECK_SIZES,
    tolerance: float = TOLERANCE,
    seed: int = 0,
) -> ExportReport:
    """Export ``model`` to one file accepting any H, W that are multiples of its output stride.

    The model is copied to the CPU in eval mode (BatchNorm running statistics, no dropout); the
    caller's model is left as it was. The written file is loaded back and run at
    ``example_size`` and every ``check_sizes`` entry on seeded random (1, C, H, W) inputs.

    Args:
        model: a network of a model family (its ``.cfg`` names it), float32 weights
            (``training.checkpoint.load_for_inference``).
        fmt: ``onnx`` or ``torchscript``.
        path: the file to write (its folder must exist; an existing file is replaced).
        example_size: (H, W) the graph is exported at; sides at least 2 x the output stride.
        check_sizes: (H, W) checked besides the example; at least one must differ from it.
        tolerance: the largest accepted absolute difference from eager PyTorch.
        seed: of the random check inputs.

    Returns:
        What was written and how closely it matches eager PyTorch.

    Raises:
        ValueError: a bad format, output path, size or weight dtype.
        ImportError: ONNX without the ``onnx``/``onnxscript`` packages.
        ExportCheckError: the file differs from eager PyTorch by more than ``tolerance``, or
            onnx.checker rejects it; nothing is left at ``path`` (nor a temporary file).
    """
    start = time.perf_counter()
    path = check_target(fmt, path)
    family = family_of(model)
    stride = family.stride(model.cfg)
    sizes = _check_sizes(example_size, check_sizes, stride)
    dtypes = {t.dtype for t in model.state_dict().values() if t.is_floating_point()}
    if dtypes != {torch.float32}:
        found = ", ".join(sorted(str(d) for d in dtypes))
        raise ValueError(f"export needs float32 weights, got {found}; call model.float() first")
    model = copy.deepcopy(model).cpu().eval()
    example = _random_input(family.in_channels, example_size, seed)
    with atomic_file(path, as_path=True) as tmp:  # renamed to path only if every check passes
        with _quiet_exporters(), family.exportable():
            if fmt == "torchscript":
                signature = _write_torchscript(model, example, family, stride, tmp)
            else:
                signature = _write_onnx(model, example, stride, tmp)
        try:
            diff, checked_with, notes = verify_export(tmp, fmt, model, sizes, seed)
        except ExportCheckError as exc:
            raise ExportCheckError(f"{path}: {exc}; nothing was written") from exc.__cause__
        if diff is not None and not diff <= tolerance:  # NaN fails too
            shown = ", ".join(f"{h}x{w}" for h, w in sizes)
            raise ExportCheckError(
                f"{path}: the {fmt} export differs from eager PyTorch by up to {diff:.3g} at "
                f"{shown} (tolerance {tolerance:g}); nothing was written"
            )
    return ExportReport(
        format=fmt,
        path=path,
        bytes=path.stat().st_size,
        signature=signature,
        example_size=(int(example_size[0]), int(example_size[1])),
        checked_sizes=sizes,
        max_abs_diff=diff,
        tolerance=tolerance,
        checked_with=checked_with,
        seconds=time.perf_counter() - start,
        notes=notes,
    )


def verify_export(
    path: str | Path,
    fmt: str,
    model: nn.Module,
    sizes: Sequence[tuple[int, int]],
    seed: int = 0,
) -> tuple[float | None, str, tuple[str, ...]]:
    """Run an exported file and ``model`` on the same seeded inputs and compare.

    Args:
        path: a file written by ``export_model`` (or its temporary file before the rename).
        fmt: ``onnx`` or ``torchscript``.
        model: the eager reference, in eval mode.
        sizes: (H, W) to check; each gets its own (1, C, H, W) input (C: the family's).
        seed: of the inputs.

    Returns:
        The largest absolute difference (``None`` for ONNX without onnxruntime, when only
        onnx.checker ran), what ran the file, and notes.

    Raises:
        ExportCheckError: onnx.checker rejects an ONNX file.
    """
    if fmt == "torchscript":
        with _quiet_exporters():
            exported = torch.jit.load(str(path), map_location="cpu")
        run = exported.forward
        checked_with, notes = f"torch.jit (torch {torch.__version__})", ()
    else:
        import onnx

        try:
            onnx.checker.check_model(str(path), full_check=True)
        except onnx.checker.ValidationError as exc:
            raise ExportCheckError(f"onnx.checker rejects the export: {exc}") from None
        try:
            import onnxruntime
        except ImportError:
            checked = f"onnx.checker {onnx.__version__} only"
            note = f"onnxruntime is not installed, so the ONNX file was not run; {ONNX_EXTRA}"
            return None, checked, (note,)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def run(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(session.run(None, {INPUT_NAME: x.numpy()})[0])

        checked_with = f"onnxruntime {onnxruntime.__version__} (after onnx.checker)"
        notes = ()
    diff = 0.0
    channels = family_of(model).in_channels
    for i, (h, w) in enumerate(sizes):
        x = _random_input(channels, (h, w), seed + 1 + i)
        with torch.no_grad():
            expected = model(x)
            try:
                got = run(x)
            except Exception as exc:  # a size baked into the graph fails here, in any way
                reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
                raise ExportCheckError(
                    f"the {fmt} export fails at {h}x{w} ({type(exc).__name__}: {reason})"
                ) from exc
        if got.shape != expected.shape:
            raise ExportCheckError(
                f"the {fmt} export gives shape {tuple(got.shape)} at {h}x{w}, eager PyTorch "
                f"{tuple(expected.shape)}"
            )
        diff = max(diff, float((got - expected).abs().max()))
    return diff, checked_with, notes


# -- the two writers ----------------------------------------------------------------------------


class _SizeCheck(nn.Module):
    """The input check of the network's forward, which tracing drops, in front of the trace."""

    def __init__(
        self, traced: torch.jit.ScriptModule, title: str, channels: int, multiple: int
    ) -> None:
        super().__init__()
        self.model = traced
        self.title = title
        self.channels = channels
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.size(1) != self.channels:
            raise ValueError(
                f"{self.title} expects (B, {self.channels}, H, W) input, got {x.shape}"
            )
        h, w = x.size(2), x.size(3)
        if h % self.multiple != 0 or w % self.multiple != 0:
            raise ValueError(
                f"{self.title} input sides must be multiples of {self.multiple}, got {h}x{w}; "
                "pad (e.g. reflect) and crop back"
            )
        return self.model(x)


def _write_torchscript(
    model: nn.Module, example: torch.Tensor, family: ModelFamily, stride: int, tmp: Path
) -> str:
    # check_trace=False: it would only rerun the example size; verify_export checks other sizes
    with torch.no_grad():
        traced = torch.jit.trace(model, example, check_trace=False)
    checked = _SizeCheck(traced, family.title, family.in_channels, stride)
    torch.jit.save(torch.jit.script(checked.eval()), str(tmp))
    channels = family.in_channels
    return f"x (B, {channels}, {stride}*h, {stride}*w) float32 -> (B, 1, {stride}*h, {stride}*w)"


def _write_onnx(model: nn.Module, example: torch.Tensor, stride: int, tmp: Path) -> str:
    # ReLU6(inplace=True) makes torch.export functionalise 71 in-place hardtanh_ calls, each
    # re-derived through symbolic shapes: out of place, the same function exports ~2x faster.
    for module in model.modules():
        if isinstance(module, nn.Hardtanh):
            module.inplace = False
    h, w = torch.export.Dim("h", min=1), torch.export.Dim("w", min=1)
    torch.onnx.export(
        model,
        (example,),
        str(tmp),
        dynamo=True,
        external_data=False,  # one file: the weights (~24 MB) inside the protobuf
        verbose=False,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({2: stride * h, 3: stride * w},),
    )
    import onnx

    graph = onnx.load(str(tmp), load_external_data=False).graph
    return f"{_onnx_value(graph.input[0])} float32 -> {_onnx_value(graph.output[0])}"


def _onnx_value(value) -> str:
    """``name (1, 4, 32*h, 32*w)`` from an ONNX ValueInfoProto."""
    dims = [d.dim_param or str(d.dim_value) for d in value.type.tensor_type.shape.dim]
    return f"{value.name} ({', '.join(dims)})"


# -- helpers ------------------------------------------------------------------------------------


def _require_onnx() -> None:
    missing = []
    for name in ("onnx", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ImportError(
            f"ONNX export needs the package(s) {', '.join(missing)}; {ONNX_EXTRA} "
            "(onnx, onnxscript, and onnxruntime to check the export)"
        )


def _check_sizes(
    example: tuple[int, int], others: Sequence[tuple[int, int]], stride: int
) -> tuple[tuple[int, int], ...]:
    """The example, then ``others`` without repeats; all multiples of ``stride``."""
    sizes = tuple(dict.fromkeys((tuple(example), *(tuple(s) for s in others))))
    bad = [f"{h}x{w}" for h, w in sizes if h <= 0 or w <= 0 or h % stride or w % stride]
    if bad:
        raise ValueError(
            f"export sizes must be positive multiples of {stride} (the model's output stride), "
            f"got {', '.join(bad)}"
        )
    if min(example) < 2 * stride:
        raise ValueError(
            f"the example size {example[0]}x{example[1]} needs sides of at least {2 * stride}: "
            f"torch.export fixes a side of 1 x {stride} as a constant"
        )
    if len(sizes) < 2:
        raise ValueError(
            f"check at least one size other than the example {example[0]}x{example[1]}: "
            "otherwise dynamic height and width go unchecked"
        )
    return tuple((int(h), int(w)) for h, w in sizes)


def _random_input(channels: int, size: tuple[int, int], seed: int) -> torch.Tensor:
    """(1, C, H, W) float32 ~ N(0, 1), reproducible from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, channels, *size, generator=g)


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """Silence the exporters' chatter that does not concern this model.

    TracerWarnings: the trace of a network's input check (``IndexNet._check_input``) is a
    constant, which is expected
    (``_SizeCheck`` restores the check, ``verify_export`` proves the sizes dynamic);
    torch.jit's deprecation notices; the ONNX registry's "torchvision is not installed".
    """
    registry = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry.level
    registry.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated")
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")
            yield
    finally:
        registry.setLevel(level)
