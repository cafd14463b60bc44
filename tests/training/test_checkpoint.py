"""training.checkpoint (and training.models.weights' safe reading): our format round-trips
through files.

Each test writes its own checkpoint (random values, no downloads): the current version, a
version-2 file (configs before issue 24's sections), a version-1 file (from before model
families), and files that are not ours. The foreign formats (the official release, ImageNet
backbones) are tested in test_indexnet_weights.py.
"""

from __future__ import annotations

import dataclasses
import json
import pickle

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from configs import IndexNetConfig, ModelConfig, load_config
from configs.schema import upgrade
from tests.conftest import REPO, version_2_config
from training import checkpoint as ckpt_module
from training.checkpoint import (
    FORMAT,
    VERSION,
    load_checkpoint,
    load_for_inference,
    load_model,
    save_checkpoint,
)
from training.cli import model_app
from training.inference import predict_alpha
from training.models.indexnet.network import IndexNet


def as_version_2(ckpt: dict) -> dict:
    """A checkpoint dict as version 2 wrote the same one: its ``config`` with the sections data,
    train, loss and model (flat), its ``model_config`` flat (``{"family": ..., "size": ...,
    "index_block": ..., ...}``: version 2 had no model.indexnet.freeze_encoder_bn or loss)."""
    v2 = {
        **ckpt,
        "version": 2,
        "model_config": version_2_config({"model": ckpt["model_config"]})["model"],
    }
    if ckpt.get("config") is not None:
        v2["config"] = version_2_config(ckpt["config"])
    return v2


def test_as_version_2_writes_what_version_2_recorded():
    recorded = json.loads((REPO / "tests" / "configs" / "v2" / "recorded.json").read_text())
    v2 = as_version_2({"model_config": {"family": "vitmatte"}, "config": upgrade(recorded)})
    assert v2["config"] == recorded


def _randomise(model: IndexNet, seed: int = 0) -> IndexNet:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if name.endswith("running_var"):
                value.copy_(torch.rand(value.shape, generator=g) + 0.5)
            elif value.is_floating_point():
                value.copy_(torch.randn(value.shape, generator=g) * 0.1)
            else:
                value.fill_(7)  # num_batches_tracked
    return model


def _same_state(a: IndexNet, b: IndexNet) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _outputs(model: IndexNet) -> torch.Tensor:
    x = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return model.eval()(x)


@pytest.fixture(scope="module")
def trained() -> IndexNet:
    return _randomise(IndexNet())


# -- our checkpoints ---------------------------------------------------------------------------


def test_our_checkpoint_round_trips(tmp_path, trained):
    model = IndexNet()
    model.load_state_dict(trained.state_dict())
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 4, 32, 32)).mean().backward()
    optimizer.step()
    path = save_checkpoint(
        tmp_path / "last.pt",
        model,
        load_config(),
        optimizer=optimizer.state_dict(),
        epoch=3,
        step=120,
        rng={"torch": torch.get_rng_state()},
    )
    assert sorted(tmp_path.iterdir()) == [path]  # no temporary file left beside it
    raw = torch.load(path, weights_only=True)  # loadable without unpickling anything
    assert raw["format"] == FORMAT and raw["version"] == VERSION == 3 and raw["epoch"] == 3
    assert raw["family"] == "indexnet"
    ckpt = load_checkpoint(path)
    assert (
        ckpt["model_config"]
        == raw["model_config"]
        == {
            "family": "indexnet",
            "indexnet": {
                "index_block": "m2o",
                "nonlinear": True,
                "context": True,
                "aspp": True,
                "output_stride": 32,
                "decoder_kernel_size": 5,
                "decoder_conv": "std_conv",
                "freeze_encoder_bn": True,
                "loss": {"alpha_weight": 0.5, "comp_weight": 0.5, "eps": 1e-6},
            },
            "vitmatte": {"size": "small"},  # one section per family; IndexNet reads its own
        }
    )
    assert ckpt["config"] == raw["config"] == load_config().to_dict()
    assert ckpt["config"]["train"]["batch_size"] == 16
    restored = load_model(path)
    assert _same_state(restored, model)
    assert torch.equal(_outputs(restored), _outputs(model))
    fresh = torch.optim.Adam(restored.parameters())
    fresh.load_state_dict(ckpt["optimizer"])  # the trainer's entries come back too


def test_a_variant_comes_back_as_that_variant(tmp_path):
    cfg = ModelConfig(
        indexnet=IndexNetConfig(index_block="holistic", nonlinear=False, output_stride=16)
    )
    model = _randomise(IndexNet(cfg))
    restored = load_model(save_checkpoint(tmp_path / "v.pt", model))
    assert restored.cfg == cfg and _same_state(restored, model)


def test_save_is_atomic(tmp_path, trained, monkeypatch):
    path = save_checkpoint(tmp_path / "c.pt", trained)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_module.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, IndexNet())
    assert _same_state(load_model(path), trained)  # the previous checkpoint is intact


def test_reserved_entries_are_refused(tmp_path, trained):
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "c.pt", trained, model_config={})
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "c.pt", trained, family="other")


class _Payload:
    """Stands in for any pickled object a malicious or foreign file could hold."""


@pytest.mark.parametrize(
    ("writer", "message"),
    [
        (lambda p: p.write_text("not a checkpoint\n"), "not a PyTorch checkpoint file"),
        (lambda p: p.write_bytes(b""), "not a PyTorch checkpoint file"),
        (lambda p: p.write_bytes(pickle.dumps({"x": 1})), "not a PyTorch checkpoint file"),
        (lambda p: torch.save({"x": _Payload()}, p), r"holds pickled objects \(.*_Payload\)"),
        (lambda p: torch.save({"w": torch.zeros(2)}, p), "not an IndexNet checkpoint"),
        (lambda p: torch.save([1, 2], p), "not an IndexNet checkpoint"),
        (
            lambda p: torch.save({"state_dict": {"module.w": torch.zeros(1)}}, p),
            "import-official",
        ),
        (
            lambda p: torch.save({"format": FORMAT, "version": 99, "model": {}}, p),
            "version 99 is not supported",
        ),
        (
            lambda p: torch.save({"format": FORMAT, "version": 1}, p),
            "lacks its 'model' or 'model_config'",
        ),
    ],
)
def test_a_file_that_is_not_our_checkpoint_is_a_clear_error(tmp_path, writer, message):
    path = tmp_path / "bad.pt"
    writer(path)
    with pytest.raises(ValueError, match=message) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_missing_file_and_bad_model_config(tmp_path, trained):
    with pytest.raises(ValueError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "absent.pt")
    path = save_checkpoint(tmp_path / "c.pt", trained)
    raw = torch.load(path, weights_only=True)
    raw["model_config"]["indexnet"]["output_stride"] = 8
    torch.save(raw, path)
    with pytest.raises(ValueError, match="model.indexnet.output_stride: must be 32 or 16"):
        load_model(path)


# -- model families ----------------------------------------------------------------------------


def test_a_checkpoint_records_its_family(tmp_path, trained):
    path = save_checkpoint(tmp_path / "c.pt", trained)
    raw = torch.load(path, weights_only=True)
    assert raw["family"] == raw["model_config"]["family"] == "indexnet"
    assert load_checkpoint(path)["family"] == "indexnet"


@pytest.mark.parametrize("with_field", [True, False], ids=["model_config.family", "no family"])
def test_a_version_1_checkpoint_loads_as_indexnet(tmp_path, with_field):
    """Version 1 had no "family" entry; its model_config had the field only in late versions."""
    cfg = ModelConfig(indexnet=IndexNetConfig(index_block="o2o"))
    model = _randomise(IndexNet(cfg))
    model_config = {  # version 1's flat model_config: IndexNet's switches only
        **({"family": "indexnet"} if with_field else {}),
        "index_block": "o2o",
        "nonlinear": True,
        "context": True,
        "aspp": True,
        "output_stride": 32,
        "decoder_kernel_size": 5,
        "decoder_conv": "std_conv",
    }
    path = tmp_path / "v1.pt"
    v1 = {"format": FORMAT, "version": 1, "model": model.state_dict()}
    torch.save({**v1, "model_config": model_config, "config": None, "step": 7}, path)
    ckpt = load_checkpoint(path)
    assert ckpt["family"] == ckpt["model_config"]["family"] == "indexnet" and ckpt["step"] == 7
    assert ckpt["model_config"] == {  # in the current shape
        "family": "indexnet",
        "indexnet": {k: v for k, v in model_config.items() if k != "family"},
    }
    restored = load_model(path)
    assert isinstance(restored, IndexNet) and restored.cfg == cfg
    assert _same_state(restored, model)
    assert torch.equal(_outputs(load_for_inference(path)), _outputs(model))
    _predicts_as(path, save_checkpoint(tmp_path / "v3.pt", model))


def _predicts_as(path, current) -> None:
    """``path`` loads for inference as ``current`` (a version-3 checkpoint of the same weights)
    does: the same variant, and predict_alpha's very bytes."""
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)
    trimap = np.full((45, 70), 128, np.uint8)
    trimap[:, :10], trimap[:, -10:] = 0, 255
    old, new = load_for_inference(path), load_for_inference(current)
    assert old.cfg == new.cfg and _same_state(old, new)
    got, want = predict_alpha(old, rgb, trimap), predict_alpha(new, rgb, trimap)
    assert got.dtype == want.dtype == np.uint8 and got.tobytes() == want.tobytes()
    assert torch.equal(_outputs(old), _outputs(new))  # and the raw outputs, unclipped


def test_a_version_2_checkpoint_loads_and_predicts_as_version_3(tmp_path):
    """Version 2 recorded flat configs: model_config {"family", "size", "index_block", ...} and a
    config with train, loss and model sections. It loads as the same variant, its configs come
    in the current shape, and it predicts the same bytes as a version-3 file of its weights."""
    cfg = ModelConfig(indexnet=IndexNetConfig(index_block="o2o", output_stride=16))
    model = _randomise(IndexNet(cfg), seed=2)
    run = load_config(overrides=["model.indexnet.index_block=o2o", "optim.learning_rate=0.5"])
    current = save_checkpoint(tmp_path / "v3.pt", model, run, step=4)
    v2 = as_version_2(torch.load(current, weights_only=True))
    assert v2["model_config"] == {
        "family": "indexnet",
        "size": "small",
        "index_block": "o2o",
        "nonlinear": True,
        "context": True,
        "aspp": True,
        "output_stride": 16,
        "decoder_kernel_size": 5,
        "decoder_conv": "std_conv",
    }
    assert set(v2["config"]) == {"data", "train", "loss", "model"}
    assert v2["config"]["train"]["learning_rate"] == 0.5 and "size" in v2["config"]["model"]
    path = tmp_path / "v2.pt"
    torch.save(v2, path)
    ckpt = load_checkpoint(path)
    assert ckpt["version"] == 2 and ckpt["family"] == "indexnet" and ckpt["step"] == 4
    # mapped: optim.learning_rate, model.indexnet, ... (storage came after version 2)
    assert ckpt["config"] == {k: v for k, v in run.to_dict().items() if k != "storage"}
    assert ckpt["model_config"] == {
        "family": "indexnet",
        "indexnet": {
            k: v
            for k, v in dataclasses.asdict(cfg.indexnet).items()
            if k not in ("freeze_encoder_bn", "loss")
        },  # fmt: skip
        "vitmatte": {"size": "small"},
    }
    assert load_model(path).cfg == cfg
    _predicts_as(path, current)


def test_a_checkpoint_of_an_unknown_family_is_refused(tmp_path, trained):
    path = save_checkpoint(tmp_path / "c.pt", trained)
    raw = torch.load(path, weights_only=True)
    raw["family"] = raw["model_config"]["family"] = "segformer"
    torch.save(raw, path)
    message = f"{path}: model.family 'segformer' is not a model family; known: indexnet, vitmatte"
    for load in (load_checkpoint, load_model, load_for_inference):
        with pytest.raises(ValueError) as info:
            load(path)
        assert str(info.value) == message
    result = CliRunner().invoke(model_app, ["summary", "--checkpoint", str(path)])
    assert result.exit_code == 2 and "'segformer' is not a model family" in result.stderr
    raw["model_config"]["family"] = "indexnet"
    torch.save(raw, path)
    with pytest.raises(ValueError, match="family 'segformer' differs from its model_config"):
        load_checkpoint(path)


def test_cli_summary_of_a_variant_and_a_checkpoint(tmp_path):
    result = CliRunner().invoke(model_app, ["summary", "--set", "model.indexnet.index_block=o2o"])
    assert result.exit_code == 0 and "o2o nonlinear" in result.output
    assert "3,776,971" in result.output
    path = save_checkpoint(
        tmp_path / "h.pt", IndexNet(ModelConfig(indexnet=IndexNetConfig(index_block="holistic")))
    )
    result = CliRunner().invoke(model_app, ["summary", "--checkpoint", str(path)])
    assert result.exit_code == 0 and "holistic" in result.output
