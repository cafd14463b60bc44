"""evaluation.export and ``indexnet export``: real ONNX and TorchScript files, run back.

Each test exports a random-weight IndexNet from a checkpoint it writes itself, loads the file
with onnxruntime or torch.jit and compares it with eager PyTorch at sizes other than the one it
was exported at. The ONNX export (~30-60 s on 2 cores) runs once per module, through the CLI.
"""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from configs import IndexNetConfig, ModelConfig
from evaluation import export as export_module
from evaluation.cli import ExportFormat
from evaluation.export import (
    FORMATS,
    ExportCheckError,
    ExportReport,
    export_model,
    verify_export,
)
from indexnet_cli import app
from training import checkpoint as checkpoint_module
from training.checkpoint import load_for_inference, save_checkpoint
from training.models.indexnet.network import IndexNet

TOLERANCE = 1e-4
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.load` is deprecated")
# multiples of 32 other than the export's 64x96, a side of 32 included (batch 1)
SIZES = [(64, 64), (96, 160), (160, 96), (32, 128)]


def _model(seed: int = 0) -> IndexNet:
    """A random IndexNet whose BatchNorm statistics are not the identity."""
    torch.manual_seed(seed)
    model = IndexNet()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if name.endswith("running_mean"):
                value.copy_(torch.randn(value.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                value.copy_(torch.rand(value.shape, generator=g) + 0.5)
    return model


def _input(h: int, w: int, batch: int = 1, seed: int = 7) -> torch.Tensor:
    return torch.randn(batch, 4, h, w, generator=torch.Generator().manual_seed(seed + h + w))


def _eager(model: IndexNet, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def _export(*args: str):
    return CliRunner().invoke(app, ["export", *args])


def _reported_diff(output: str) -> float:
    found = re.search(r"max \|\w+ - eager PyTorch\| = (\S+) at", output)
    assert found, output
    return float(found.group(1))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    return save_checkpoint(path, _model())


@pytest.fixture(scope="module")
def reference(checkpoint) -> IndexNet:
    return load_for_inference(checkpoint)


@pytest.fixture(scope="module")
def onnx_export(checkpoint, tmp_path_factory: pytest.TempPathFactory):
    """``indexnet export --format onnx``, once: (the file, the command's result)."""
    for name in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(name, reason='ONNX tests need pip install "indexnet-matting[onnx]"')
    out = tmp_path_factory.mktemp("onnx") / "indexnet.onnx"
    result = _export("--checkpoint", str(checkpoint), "--format", "onnx", "-o", str(out))
    assert result.exit_code == 0, result.output
    return out, result


# -- ONNX --------------------------------------------------------------------------------------


def test_cli_onnx_export_is_one_checked_file(onnx_export):
    out, result = onnx_export
    assert [p.name for p in out.parent.iterdir()] == ["indexnet.onnx"]  # no .tmp, no .data
    size = out.stat().st_size
    assert 20e6 < size < 30e6  # 5.95 M float32 weights inside the file
    assert f"wrote {out} (onnx, {size:,} bytes)" in result.output
    assert "input (1, 4, 32*h, 32*w) float32 -> alpha (1, 1, 32*h, 32*w)" in result.output
    assert "at 64x96, 96x160, 160x96" in result.output and "onnxruntime 1." in result.output
    assert 0 <= _reported_diff(result.output) < TOLERANCE


def test_onnx_matches_pytorch_at_other_sizes(onnx_export, reference):
    import onnx
    import onnxruntime

    out, _ = onnx_export
    proto = onnx.load(str(out))
    weights = [t for t in proto.graph.initializer if t.data_type != onnx.TensorProto.INT64]
    assert len(weights) > 100 and all(t.data_type == onnx.TensorProto.FLOAT for t in weights)
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 4, "32*h", "32*w"]
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for h, w in SIZES:
        x = _input(h, w)
        (alpha,) = session.run(None, {"input": x.numpy()})
        assert alpha.shape == (1, 1, h, w)
        assert np.abs(alpha - _eager(reference, x).numpy()).max() < TOLERANCE, (h, w)


def test_onnx_without_onnxruntime_is_only_checked(onnx_export, reference, monkeypatch):
    out, _ = onnx_export
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    diff, checked_with, notes = verify_export(out, "onnx", reference, [(64, 96), (96, 160)])
    assert diff is None and checked_with.startswith("onnx.checker") and "only" in checked_with
    assert "onnxruntime is not installed" in notes[0] and "indexnet-matting[onnx]" in notes[0]
    report = ExportReport(
        format="onnx",
        path=out,
        bytes=out.stat().st_size,
        signature="input (1, 4, 32*h, 32*w) float32 -> alpha (1, 1, 32*h, 32*w)",
        example_size=(64, 96),
        checked_sizes=((64, 96), (96, 160)),
        max_abs_diff=diff,
        tolerance=TOLERANCE,
        checked_with=checked_with,
        seconds=0.0,
        notes=notes,
    )
    summary = report.summary()
    assert "parity not run (onnx.checker" in summary and "onnxruntime is not installed" in summary


def test_cli_onnx_without_its_packages_is_exit_2(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    out = tmp_path / "indexnet.onnx"
    result = _export("--checkpoint", str(checkpoint), "--format", "onnx", "-o", str(out))
    assert result.exit_code == 2
    assert "onnxscript" in result.stderr and 'pip install "indexnet-matting[onnx]"' in result.stderr
    assert list(tmp_path.iterdir()) == []


# -- TorchScript -------------------------------------------------------------------------------


def test_torchscript_matches_pytorch_at_any_multiple_of_32(tmp_path):
    model = _model(seed=1).train()  # exported in eval mode, and the caller's model left as is
    report = export_model(model, "torchscript", tmp_path / "indexnet.pt")
    assert model.training
    assert report.format == "torchscript" and report.path == tmp_path / "indexnet.pt"
    assert report.bytes == report.path.stat().st_size and report.bytes > 20e6
    assert report.example_size == (64, 96)
    assert report.checked_sizes == ((64, 96), (96, 160), (160, 96))
    assert report.max_abs_diff is not None and report.max_abs_diff < TOLERANCE
    assert report.checked_with.startswith("torch.jit") and report.notes == ()
    assert [p.name for p in tmp_path.iterdir()] == ["indexnet.pt"]

    scripted = torch.jit.load(str(report.path))
    assert not scripted.training
    for h, w in SIZES:
        x = _input(h, w)
        with torch.no_grad():
            alpha = scripted(x)
        assert alpha.shape == (1, 1, h, w)
        assert (alpha - _eager(model, x)).abs().max() < TOLERANCE, (h, w)
    x = _input(96, 64, batch=2)  # any batch size, too
    with torch.no_grad():
        assert (scripted(x) - _eager(model, x)).abs().max() < TOLERANCE


def test_torchscript_refuses_sizes_that_are_not_multiples_of_32(tmp_path):
    report = export_model(_model(), "torchscript", tmp_path / "indexnet.pt")
    scripted = torch.jit.load(str(report.path))
    with pytest.raises(torch.jit.Error, match="multiples of 32, got 48x64"):
        scripted(_input(48, 64))
    with pytest.raises(torch.jit.Error, match=r"expects \(B, 4, H, W\) input"):
        scripted(torch.zeros(1, 3, 64, 64))


def test_a_variant_exports_at_multiples_of_its_own_stride(tmp_path):
    torch.manual_seed(2)
    cfg = ModelConfig(
        indexnet=IndexNetConfig(
            index_block="holistic", output_stride=16, decoder_conv="dep_sep_conv"
        )
    )
    model = IndexNet(cfg)
    report = export_model(model, "torchscript", tmp_path / "os16.pt", check_sizes=[(48, 80)])
    assert report.checked_sizes == ((64, 96), (48, 80)) and report.max_abs_diff < TOLERANCE
    assert report.signature.startswith("x (B, 4, 16*h, 16*w)")
    scripted = torch.jit.load(str(report.path))
    x = _input(80, 112)  # multiples of 16, not of 32
    with torch.no_grad():
        assert (scripted(x) - _eager(model, x)).abs().max() < TOLERANCE
    with pytest.raises(torch.jit.Error, match="multiples of 16, got 40x80"):
        scripted(_input(40, 80))


def test_cli_torchscript_export(checkpoint, reference, tmp_path):
    out = tmp_path / "indexnet.pt"
    result = _export(
        "--checkpoint", str(checkpoint), "--format", "torchscript", "-o", str(out),
        "--height", "96", "--width", "64",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"wrote {out} (torchscript, {out.stat().st_size:,} bytes)" in result.output
    assert "exported at 96x64" in result.output and "at 96x64, 96x160, 160x96" in result.output
    assert "torch.jit" in result.output and 0 <= _reported_diff(result.output) < TOLERANCE
    x = _input(160, 64)
    with torch.no_grad():
        assert (torch.jit.load(str(out))(x) - _eager(reference, x)).abs().max() < TOLERANCE


# -- checks that fail --------------------------------------------------------------------------


class _Drifting(IndexNet):
    """Traces to the true network, then differs from it in eager mode by 1e-3."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = super().forward(x)
        return alpha if torch.jit.is_tracing() else alpha + 1e-3


class _BakedSize(IndexNet):
    """Casts traced sizes to Python ints: the trace then only works at the example size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = super().forward(x)
        return alpha.reshape(1, 1, int(alpha.shape[2]), int(alpha.shape[3]))


def test_a_mismatch_is_an_error_and_writes_nothing(tmp_path):
    out = tmp_path / "indexnet.pt"
    with pytest.raises(ExportCheckError, match=r"differs from eager PyTorch by up to 0\.001"):
        export_model(_Drifting(), "torchscript", out)
    with pytest.raises(ExportCheckError, match="fails at 96x160") as info:
        export_model(_BakedSize(), "torchscript", out)
    assert str(out) in str(info.value) and "nothing was written" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_cli_mismatch_is_exit_1(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint_module, "load_for_inference", lambda path: _Drifting().eval())
    out = tmp_path / "indexnet.pt"
    result = _export("--checkpoint", str(checkpoint), "--format", "torchscript", "-o", str(out))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "differs from eager PyTorch" in result.stderr
    assert list(tmp_path.iterdir()) == []


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing checkpoint", r"absent\.pt: no such checkpoint file"),
        ("junk checkpoint", r"junk\.pt: not a PyTorch checkpoint file"),
        ("unknown format", r"Invalid value for '--format'.*'tflite' is not one of 'onnx'"),
        ("missing folder", r"no-such-folder: no such folder for the output file indexnet\.pt"),
        ("output is a folder", r"out is a folder; give a file name"),
        ("size not x32", r"multiples of 32 \(the model's output stride\), got 50x96"),
        ("size too small", r"example size 32x96 needs sides of at least 64"),
    ],
)
def test_cli_bad_input_is_exit_2_and_writes_nothing(checkpoint, tmp_path, case, message):
    out = tmp_path / "indexnet.pt"
    args = {"--checkpoint": str(checkpoint), "--format": "torchscript", "-o": str(out)}
    if case == "missing checkpoint":
        args["--checkpoint"] = str(tmp_path / "absent.pt")
    elif case == "junk checkpoint":
        (tmp_path / "junk.pt").write_text("not a checkpoint\n")
        args["--checkpoint"] = str(tmp_path / "junk.pt")
    elif case == "unknown format":
        args["--format"] = "tflite"
    elif case == "missing folder":
        args["-o"] = str(tmp_path / "no-such-folder" / "indexnet.pt")
    elif case == "output is a folder":
        (tmp_path / "out").mkdir()
        args["-o"] = str(tmp_path / "out")
    elif case == "size not x32":
        args["--height"] = "50"
    elif case == "size too small":
        args["--height"] = "32"
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = _export(*[item for pair in args.items() for item in pair])
    assert result.exit_code == 2, result.output
    assert re.search(message, " ".join(result.stderr.split())), result.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_library_refuses_unchecked_sizes_and_other_dtypes(tmp_path):
    model = IndexNet()
    with pytest.raises(ValueError, match="at least one size other than the example 64x96"):
        export_model(model, "torchscript", tmp_path / "m.pt", check_sizes=[(64, 96)])
    with pytest.raises(ValueError, match="needs float32 weights, got torch.float16"):
        export_model(model.half(), "torchscript", tmp_path / "m.pt")
    with pytest.raises(ValueError, match="unknown export format 'tflite'; allowed: onnx"):
        export_model(model, "tflite", tmp_path / "m.pt")
    assert list(tmp_path.iterdir()) == []


def test_cli_formats_are_the_library_formats():
    assert tuple(f.value for f in ExportFormat) == FORMATS == export_module.FORMATS
