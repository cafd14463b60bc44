"""training.models.indexnet.weights through the front doors (``training.models.build``).

Each test writes its own weight files (random values, no downloads) in the format it exercises:
the official release's ``.pth.tar`` dict, torchvision's ``mobilenet_v2`` layout and the
official backbone (CSAIL MobileNetV2) layout; ``indexnet model import-official|summary`` run on
them too.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from configs import IndexNetConfig, ModelConfig
from tests.training.test_checkpoint import _outputs, _randomise, _same_state
from training.checkpoint import load_checkpoint, load_for_inference, load_model
from training.cli import model_app
from training.models.build import build_model, import_official, load_backbone
from training.models.indexnet.network import IndexNet


def _is_encoder(name: str) -> bool:
    return re.match(r"layer[0-7]\.", name) is not None


@pytest.fixture(scope="module")
def trained() -> IndexNet:
    return _randomise(IndexNet())


# -- the official release ----------------------------------------------------------------------


def _official_file(path, model: IndexNet, counters: bool = True, legacy: bool = False) -> None:
    """The official trainer's checkpoint: DataParallel names, optimizer, numpy loss history."""
    state = {
        f"module.{k}": v.clone()
        for k, v in model.state_dict().items()
        if counters or not k.endswith("num_batches_tracked")
    }
    payload = {
        "epoch": 30,
        "state_dict": state,
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
        "train_loss": {"running_loss": [0.5, 0.25], "epoch_loss": [0.4]},
        "val_loss": {"running_loss": [], "epoch_loss": [np.float64(45.8)]},
    }
    torch.save(payload, path, _use_new_zipfile_serialization=not legacy)


@pytest.mark.parametrize(
    ("counters", "legacy"), [(True, False), (False, False), (True, True)], ids=str
)
def test_import_official_round_trip(tmp_path, trained, counters, legacy):
    path = tmp_path / "indexnet_matting.pth.tar"
    _official_file(path, trained, counters, legacy)
    model, report = import_official(path)
    counters_in_model = sum(k.endswith("num_batches_tracked") for k in trained.state_dict())
    assert counters_in_model == 88
    assert (
        report.loaded == (549 if counters else 549 - counters_in_model)
        and report.layout == "official IndexNet state_dict"
    )
    reference = IndexNet()
    reference.load_state_dict(trained.state_dict())
    if not counters:  # absent counters stay at their initial 0
        for name, value in reference.state_dict().items():
            if name.endswith("num_batches_tracked"):
                value.zero_()
        assert "num_batches_tracked absent" in report.summary()
    assert _same_state(model, reference)
    assert torch.equal(_outputs(model), _outputs(trained))


def test_import_official_lists_every_mismatch(tmp_path, trained):
    state = {f"module.{k}": v for k, v in trained.state_dict().items()}
    del state["module.index6.indexnet3.0.weight"]
    state["module.extra.weight"] = torch.zeros(3)
    state["module.pred.1.weight"] = torch.zeros(1, 1, 3, 3)
    path = tmp_path / "bad.pth.tar"
    torch.save({"state_dict": state}, path)
    with pytest.raises(ValueError) as info:
        import_official(path)
    message = str(info.value)
    assert "missing (1): index6.indexnet3.0.weight" in message
    assert "unexpected (1): extra.weight" in message
    assert "wrong shape (1): pred.1.weight [1, 1, 3, 3] (model: [1, 1, 5, 5])" in message


def test_import_official_of_another_variant_needs_its_config(tmp_path):
    o2o = _randomise(IndexNet(ModelConfig(indexnet=IndexNetConfig(index_block="o2o"))))
    path = tmp_path / "o2o.pth.tar"
    _official_file(path, o2o)
    with pytest.raises(ValueError, match="wrong shape"):
        import_official(path)
    model, _ = import_official(path, ModelConfig(indexnet=IndexNetConfig(index_block="o2o")))
    assert _same_state(model, o2o)


def test_load_for_inference_reads_the_official_file(tmp_path, trained):
    path = tmp_path / "indexnet_matting.pth.tar"
    _official_file(path, trained)
    model = load_for_inference(path)
    assert isinstance(model, IndexNet) and not model.training
    assert torch.equal(_outputs(model), _outputs(trained))
    o2o = _randomise(IndexNet(ModelConfig(indexnet=IndexNetConfig(index_block="o2o"))))
    _official_file(path, o2o)
    assert _same_state(
        load_for_inference(path, ModelConfig(indexnet=IndexNetConfig(index_block="o2o"))), o2o
    )
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="nor the official release's indexnet_matting.pth.tar"):
        load_for_inference(path)


def test_cli_import_official(tmp_path, trained):
    source, out = tmp_path / "indexnet_matting.pth.tar", tmp_path / "model.pt"
    _official_file(source, trained)
    result = CliRunner().invoke(model_app, ["import-official", str(source), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "549 tensors loaded" in result.output and "5,953,515 parameters" in result.output
    assert torch.equal(_outputs(load_model(out)), _outputs(trained))
    assert load_checkpoint(out)["source"] == str(source)


def test_cli_import_official_errors(tmp_path):
    bad = tmp_path / "bad.pth.tar"
    torch.save({"state_dict": {"module.layer0.0.weight": torch.zeros(1)}}, bad)
    out = tmp_path / "model.pt"
    result = CliRunner().invoke(model_app, ["import-official", str(bad), "-o", str(out)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "missing (460)" in result.stderr
    assert not out.exists()
    result = CliRunner().invoke(
        model_app, ["import-official", str(bad), "-o", str(out), "--set", "model.indexnet.aspp=2"]
    )
    assert result.exit_code == 2 and "model.indexnet.aspp: expected true or false" in result.stderr


# -- ImageNet backbones ------------------------------------------------------------------------

# MobileNetV2 1.0x (t, c, n); written out here, independently of the encoder's own table
MOBILENET_V2 = [
    (1, 16, 1),
    (6, 24, 2),
    (6, 32, 3),
    (6, 64, 4),
    (6, 96, 3),
    (6, 160, 3),
    (6, 320, 1),
]


def _mobilenet_v2_state(torchvision: bool, counters: bool = True, seed: int = 0) -> dict:
    """ImageNet MobileNetV2 weights in torchvision's layout or the official (CSAIL) one."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def conv(name: str, *shape: int) -> None:
        state[f"{name}.weight"] = torch.randn(shape, generator=g)

    def bn(name: str, c: int) -> None:
        for part in ("weight", "bias", "running_mean"):
            state[f"{name}.{part}"] = torch.randn(c, generator=g)
        state[f"{name}.running_var"] = torch.rand(c, generator=g) + 0.5
        if counters:
            state[f"{name}.num_batches_tracked"] = torch.tensor(100)

    conv("features.0.0", 32, 3, 3, 3)
    bn("features.0.1", 32)
    index, inp = 1, 32
    for t, c, n in MOBILENET_V2:
        for _ in range(n):
            hid, f = inp * t, f"features.{index}.conv"
            if torchvision and t == 1:
                conv(f"{f}.0.0", hid, 1, 3, 3), bn(f"{f}.0.1", hid)
                conv(f"{f}.1", c, hid, 1, 1), bn(f"{f}.2", c)
            elif torchvision:
                conv(f"{f}.0.0", hid, inp, 1, 1), bn(f"{f}.0.1", hid)
                conv(f"{f}.1.0", hid, 1, 3, 3), bn(f"{f}.1.1", hid)
                conv(f"{f}.2", c, hid, 1, 1), bn(f"{f}.3", c)
            elif t == 1:
                conv(f"{f}.0", hid, 1, 3, 3), bn(f"{f}.1", hid)
                conv(f"{f}.3", c, hid, 1, 1), bn(f"{f}.4", c)
            else:
                conv(f"{f}.0", hid, inp, 1, 1), bn(f"{f}.1", hid)
                conv(f"{f}.3", hid, 1, 3, 3), bn(f"{f}.4", hid)
                conv(f"{f}.6", c, hid, 1, 1), bn(f"{f}.7", c)
            index, inp = index + 1, c
    conv("features.18.0", 1280, 320, 1, 1)
    bn("features.18.1", 1280)
    if torchvision:
        state["classifier.1.weight"] = torch.randn(1000, 1280, generator=g)
        state["classifier.1.bias"] = torch.randn(1000, generator=g)
    else:
        state["classifier.weight"] = torch.randn(1000, 1280, generator=g)
    return state


# (source key, our key): torchvision's names, and the official release's CORRESP_NAME entries
TORCHVISION_SAMPLES = [
    ("features.0.1.running_var", "layer0.1.running_var"),
    ("features.1.conv.0.0.weight", "layer1.0.conv.0.weight"),
    ("features.1.conv.1.weight", "layer1.0.conv.3.weight"),
    ("features.1.conv.2.bias", "layer1.0.conv.4.bias"),
    ("features.3.conv.1.0.weight", "layer2.1.conv.3.weight"),
    ("features.3.conv.1.1.running_var", "layer2.1.conv.4.running_var"),
    ("features.14.conv.3.bias", "layer6.0.conv.7.bias"),
    ("features.17.conv.2.weight", "layer7.0.conv.6.weight"),
]
OFFICIAL_SAMPLES = [
    ("features.1.conv.4.running_mean", "layer1.0.conv.4.running_mean"),
    ("features.2.conv.7.running_var", "layer2.0.conv.7.running_var"),
    ("features.6.conv.3.weight", "layer3.2.conv.3.weight"),
    ("features.10.conv.4.bias", "layer4.3.conv.4.bias"),
    ("features.13.conv.0.weight", "layer5.2.conv.0.weight"),
    ("features.16.conv.6.weight", "layer6.2.conv.6.weight"),
    ("features.17.conv.7.weight", "layer7.0.conv.7.weight"),
]


@pytest.mark.parametrize(
    ("torchvision", "wrap", "samples"),
    [(True, False, TORCHVISION_SAMPLES), (False, True, OFFICIAL_SAMPLES)],
    ids=["torchvision", "official"],
)
def test_backbone_layouts_load(tmp_path, torchvision, wrap, samples):
    state = _mobilenet_v2_state(torchvision)
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in state.items()}} if wrap else state, path
    )
    model = IndexNet()
    decoder_before = {k: v.clone() for k, v in model.state_dict().items() if not _is_encoder(k)}
    report = load_backbone(model, path)
    own = model.state_dict()
    assert report.loaded == sum(1 for k in own if _is_encoder(k))
    assert ("torchvision" in report.layout) == torchvision
    for source, ours in samples:
        assert torch.equal(own[ours], state[source]), (source, ours)
    first = own["layer0.0.weight"]
    assert torch.equal(first[:, :3], state["features.0.0.weight"])
    assert torch.all(first[:, 3] == 0)
    assert "4th (trimap) input starts at zero" in report.summary()
    assert all(k.startswith(("features.18.", "classifier.")) for k in report.ignored)
    assert len(report.ignored) == (8 if torchvision else 7)
    assert all(torch.equal(own[k], v) for k, v in decoder_before.items())  # encoder only


def test_backbone_in_our_encoder_layout_and_without_counters(tmp_path, trained):
    encoder = {
        k: v
        for k, v in trained.state_dict().items()
        if _is_encoder(k) and not k.endswith("num_batches_tracked")
    }
    path = tmp_path / "encoder.pt"
    torch.save(encoder, path)
    model = IndexNet()
    report = load_backbone(model, path)
    assert report.layout == "IndexNet encoder" and report.loaded == len(encoder)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in encoder.items())
    assert "num_batches_tracked absent" in report.summary()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.update({"features.19.conv.0.weight": torch.zeros(1)}), "unexpected"),
        (lambda s: s.update({"features.5.conv.9.weight": torch.zeros(1)}), "features.5.conv.9"),
        (lambda s: s.pop("features.7.conv.1.0.weight"), "missing .*layer4.0.conv.3.weight"),
        (
            lambda s: s.update({"features.2.conv.2.weight": torch.zeros(24, 95, 1, 1)}),
            r"wrong shape .*features.2.conv.2.weight \[24, 95, 1, 1\]",
        ),
        (
            lambda s: s.update({"features.0.0.weight": torch.zeros(32, 1, 3, 3)}),
            "wrong shape .*layer0.0.weight",
        ),
    ],
)
def test_backbone_errs_on_what_it_cannot_place(tmp_path, edit, message):
    state = _mobilenet_v2_state(torchvision=True)
    edit(state)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    model = IndexNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        load_backbone(model, path)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())  # untouched


def test_a_full_checkpoint_is_not_a_backbone(tmp_path, trained):
    path = tmp_path / "full.pt"
    torch.save(trained.state_dict(), path)
    with pytest.raises(ValueError, match="use .*import-official|import-official"):
        load_backbone(IndexNet(), path)


def test_build_model_and_cli_summary_with_backbone(tmp_path):
    path = tmp_path / "mobilenet_v2.pth"
    state = _mobilenet_v2_state(torchvision=True)
    torch.save(state, path)
    model = build_model(ModelConfig(), backbone=str(path))
    encoder = [k for k in model.state_dict() if _is_encoder(k)]
    assert model.backbone_report is not None and model.backbone_report.loaded == len(encoder)
    assert torch.equal(
        model.state_dict()["layer7.0.conv.6.weight"], state["features.17.conv.2.weight"]
    )
    result = CliRunner().invoke(model_app, ["summary", "--backbone", str(path)])
    assert result.exit_code == 0, result.output
    assert "parameters:  5,953,515" in result.output and "torchvision mobilenet_v2" in result.output
    junk = tmp_path / "junk.pth"
    junk.write_text("hello")
    result = CliRunner().invoke(model_app, ["summary", "--backbone", str(junk)])
    assert result.exit_code == 2 and "not a PyTorch backbone file" in result.stderr
