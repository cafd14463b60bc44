"""training.models: the registry, and proof that a new family is a subpackage and one line.

The toy family (``tests/training/models/toy/``, laid out as a family's subpackage of
``training.models`` is) is a 2-conv network taking a 2-channel input (grey + trimap) at even
sides. Registered by one line (here through monkeypatch), it is built, checkpointed, loaded,
trained, run by the inference protocol, summarised and exported by code that never names it.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from typer.testing import CliRunner

import training
from configs import IndexNetConfig, LossConfig, ModelConfig, load_config
from indexnet_cli import app
from shards.mattes import to_uint8
from tests.conftest import REPO
from tests.training.models.toy.family import FAMILY as TOY
from tests.training.models.toy.network import ToyNet, make_input
from training.checkpoint import load_for_inference, save_checkpoint
from training.inference import predict_alpha
from training.models import build as families
from training.models.build import build_model, parameter_groups
from training.models.family import DEFAULT_FAMILY, ModelFamily, ParamGroup
from training.models.indexnet.network import IndexNet
from training.models.registry import FAMILIES, INDEXNET, family_of, get_family
from training.run.optim import build_optimizer, learning_rates

ROOT = REPO


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> ModelFamily:
    """The toy family registered as a third family is: its subpackage (``tests/training/models/
    toy``) and one line in ``FAMILIES``."""
    monkeypatch.setitem(FAMILIES, TOY.name, TOY)
    return TOY


def _image(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    trimap = np.zeros((h, w), np.uint8)
    trimap[:, w // 2 :] = 255
    trimap[:, w // 3 : 2 * w // 3] = 128
    return rgb, trimap


# -- the registry ------------------------------------------------------------------------------


def test_an_unknown_family_is_refused_by_name():
    message = "model.family 'foo' is not a model family; known: indexnet, vitmatte"
    with pytest.raises(ValueError) as info:
        get_family("foo")
    assert str(info.value) == message
    with pytest.raises(ValueError, match=message):
        build_model(ModelConfig(family="foo"))
    result = CliRunner().invoke(app, ["model", "summary", "--set", "model.family=foo"])
    assert result.exit_code == 2 and message in result.stderr


def test_the_known_families_are_listed(toy):
    with pytest.raises(ValueError, match="not a model family; known: indexnet, toy, vitmatte$"):
        get_family("foo")


def test_indexnet_is_the_default_family():
    assert get_family("indexnet") is INDEXNET and list(FAMILIES) == ["indexnet", "vitmatte"]
    assert DEFAULT_FAMILY == ModelConfig().family == load_config().model.family == "indexnet"
    assert family_of(IndexNet()) is INDEXNET
    assert family_of(nn.Conv2d(4, 1, 1)) is INDEXNET  # no .cfg: a wrapper, a TorchScript file
    model = build_model()
    assert isinstance(model, IndexNet) and model.cfg == ModelConfig()


def test_indexnet_entry():
    model = IndexNet(ModelConfig(indexnet=IndexNetConfig(output_stride=16)))
    encoder, decoder = parameter_groups(model)
    assert (encoder.name, encoder.backbone) == ("encoder", True)
    assert (decoder.name, decoder.backbone) == ("decoder", False)
    assert [id(p) for p in encoder.params] == [id(p) for p in model.encoder_parameters()]
    assert [id(p) for p in decoder.params] == [id(p) for p in model.decoder_parameters()]
    assert INDEXNET.stride(model.cfg) == 16 and INDEXNET.pad_multiple == 32
    assert INDEXNET.describe(model) == model.describe() and INDEXNET.in_channels == 4
    INDEXNET.freeze_norm(model).train()  # model.indexnet.freeze_encoder_bn: true, the default
    assert not model.layer3[0].conv[1].training and model.decoder_layer3.dconv[1].training
    adapting = IndexNet(ModelConfig(indexnet=IndexNetConfig(freeze_encoder_bn=False)))
    INDEXNET.freeze_norm(adapting).train()
    assert adapting.layer3[0].conv[1].training


def test_the_indexnet_loss_reads_its_own_section():
    """The trainer hands a family the run's ModelConfig; IndexNet's loss weighs its terms by
    model.indexnet.loss."""
    g = torch.Generator().manual_seed(0)
    batch = {k: torch.rand(2, c, 32, 32, generator=g) for k, c in
             (("alpha", 1), ("fg", 3), ("bg", 3), ("merged", 3))}  # fmt: skip
    batch["unknown"] = torch.ones(2, 1, 32, 32, dtype=torch.bool)
    pred = torch.rand(2, 1, 32, 32, generator=g)
    even = INDEXNET.loss(pred, batch, ModelConfig())
    assert float(even["loss"]) == pytest.approx(
        0.5 * float(even["loss_alpha"]) + 0.5 * float(even["loss_comp"])
    )
    alpha_only = ModelConfig(
        indexnet=IndexNetConfig(loss=LossConfig(comp_weight=0.0, alpha_weight=1))
    )
    terms = INDEXNET.loss(pred, batch, alpha_only)
    assert float(terms["loss"]) == pytest.approx(float(terms["loss_alpha"]))


def test_public_names_point_at_the_registry():
    assert training.build_model is families.build_model
    assert training.import_official is families.import_official
    assert training.load_backbone is families.load_backbone
    assert training.get_family is get_family and training.FAMILIES is FAMILIES
    for name in training.__all__:
        assert getattr(training, name) is not None


def test_parameter_groups_must_hold_every_parameter_once(monkeypatch):
    def first_only(model):
        return (ParamGroup("down", tuple(model.down.parameters())),)

    monkeypatch.setitem(FAMILIES, "toy", dataclasses.replace(TOY, param_groups=first_only))
    with pytest.raises(ValueError, match="'toy': its parameter groups \\(down\\) must hold every"):
        parameter_groups(build_model(ModelConfig(family="toy")))


def test_groups_carry_learning_rate_multipliers(monkeypatch):
    """A backbone group trains at lr / backbone_lr_mult, and each group may scale its lr further
    (layer-wise decay is a scale per group)."""

    def decayed(model):
        return (
            ParamGroup("down", tuple(model.down.parameters()), backbone=True, lr_scale=0.5),
            ParamGroup("up", tuple(model.up.parameters())),
        )

    monkeypatch.setitem(FAMILIES, "toy", dataclasses.replace(TOY, param_groups=decayed))
    cfg = load_config(overrides=["optim.learning_rate=0.01", "optim.backbone_lr_mult=10"])
    optimizer = build_optimizer(build_model(ModelConfig(family="toy")), cfg.optim)
    assert [(g["name"], g["lr"]) for g in optimizer.param_groups] == [
        ("down", 0.01 / 10 * 0.5),
        ("up", 0.01),
    ]


def test_a_family_without_foreign_weights_says_so(toy, tmp_path):
    model = build_model(ModelConfig(family="toy"))
    with pytest.raises(ValueError, match="family 'toy' has no pretrained backbone to load"):
        families.load_backbone(model, tmp_path / "any.pth")
    with pytest.raises(ValueError, match="family 'toy' has no official release to import"):
        families.import_official(tmp_path / "any.pth", ModelConfig(family="toy"))


# -- a new family, through code that never names it --------------------------------------------


def test_a_new_family_is_built_checkpointed_loaded_and_predicted(toy, tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(family="toy"))
    assert isinstance(model, ToyNet) and model.backbone_report is None
    cfg = load_config(overrides=["model.family=toy"])
    path = save_checkpoint(tmp_path / "toy.pt", model, cfg)
    raw = torch.load(path, weights_only=True)
    assert raw["family"] == raw["model_config"]["family"] == raw["config"]["model"]["family"]
    loaded = load_for_inference(path)
    assert isinstance(loaded, ToyNet) and not loaded.training and loaded.cfg.family == "toy"
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())

    seen = []
    loaded.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape)))
    rgb, trimap = _image(30, 42)
    alpha = predict_alpha(loaded, rgb, trimap)
    assert seen == [(1, 2, 32, 44)]  # the toy's 2 channels, padded to its multiple of 4
    rgb01 = torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1) / 255
    planes = make_input(rgb01, torch.from_numpy(trimap))[None]
    with torch.no_grad():
        raw_alpha = loaded(F.pad(planes, (0, 2, 0, 2), mode="reflect"))[0, 0, :30, :42]
    expected = np.clip(raw_alpha.numpy(), 0, 1)
    expected[trimap == 0], expected[trimap == 255] = 0, 1
    np.testing.assert_array_equal(alpha, to_uint8(expected))

    image, marks, out = tmp_path / "photo.png", tmp_path / "trimap.png", tmp_path / "alpha.png"
    Image.fromarray(rgb).save(image)
    Image.fromarray(trimap).save(marks)
    result = CliRunner().invoke(
        app, ["predict", "--checkpoint", str(path), str(image), str(marks), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.asarray(Image.open(out)), alpha)


@pytest.mark.filterwarnings(r"ignore:`torch\.jit\.load` is deprecated")
def test_a_new_family_is_summarised_trained_and_exported(toy, tmp_path):
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "toy.pt", build_model(ModelConfig(family="toy")))
    result = CliRunner().invoke(app, ["model", "summary", "--checkpoint", str(path)])
    assert result.exit_code == 0, result.output
    assert (
        "variant:     toy 2-conv" in result.output
        and "  all:         185 (2 convs)" in result.output
    )
    assert "input:       (B, 2, H, W), H and W multiples of 2" in result.output

    model = load_for_inference(path)
    optimizer = build_optimizer(model, load_config(overrides=["optim.learning_rate=0.003"]).optim)
    assert [(g["name"], g["lr"]) for g in optimizer.param_groups] == [("all", 0.003)]
    assert learning_rates(optimizer, parameter_groups(model)) == {"lr": 0.003}

    out = tmp_path / "toy.ts"
    args = ["export", "--checkpoint", str(path), "--format", "torchscript", "-o", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "x (B, 2, 2*h, 2*w) float32 -> (B, 1, 2*h, 2*w)" in result.output
    scripted = torch.jit.load(str(out))
    x = torch.randn(1, 2, 34, 46)
    with torch.no_grad():
        assert (scripted(x) - model(x)).abs().max() < 1e-5
    with pytest.raises(torch.jit.Error, match="Toy input sides must be multiples of 2, got 33x46"):
        scripted(torch.zeros(1, 2, 33, 46))
    with pytest.raises(torch.jit.Error, match=r"Toy expects \(B, 2, H, W\) input"):
        scripted(torch.zeros(1, 4, 32, 46))


# -- nothing outside a family's subpackage and the registry names the family ------------------

# each family's subpackage of training.models (the folders holding a ``family.py``)
FAMILY_PACKAGES = {
    f"training.models.{p.parent.name}": p.parent
    for p in sorted((ROOT / "training" / "models").glob("*/family.py"))
}
# the class names of each family's networks, which only its own subpackage may use
NETWORK_NAMES = {
    "training.models.indexnet": {"IndexNet", "INDEXNET"},
    "training.models.vitmatte": {"VitMatte", "VITMATTE"},
}


def _code_names(path: Path) -> tuple[set[str], set[str]]:
    """(modules imported, identifiers used) by a source file; strings and docstrings aside."""
    tree = ast.parse(path.read_text())
    imported, names = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
    return imported, names


def test_every_family_is_a_subpackage_listed_in_the_registry():
    assert set(FAMILY_PACKAGES) == set(NETWORK_NAMES) == {f"training.models.{n}" for n in FAMILIES}


@pytest.mark.parametrize("package", ["training", "evaluation", "configs", "indexnet_cli.py"])
def test_only_a_family_and_the_registry_name_it(package):
    base = ROOT / package
    paths = [base] if base.is_file() else sorted(base.rglob("*.py"))
    for path in paths:
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if module == "training.models.registry":
            continue
        imported, names = _code_names(path)
        for family in FAMILY_PACKAGES:
            if module == family or module.startswith(family + "."):
                continue
            inside = {m for m in imported if m == family or m.startswith(family + ".")}
            assert not inside, f"{module} imports {inside}"
            assert not names & NETWORK_NAMES[family], (
                f"{module} names {names & NETWORK_NAMES[family]}"
            )
