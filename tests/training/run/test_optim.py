"""The learning-rate schedule (``training.run.trainer.lr_factor``), weight decay per parameter
group, and the ViTMatte recipe in ``configs/vitmatte.yaml`` against docs/reference.md section 5."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from configs import ConfigError, load_config
from tests.conftest import REPO
from training.models.build import build_model, parameter_groups
from training.run.optim import NO_DECAY, build_optimizer, learning_rates, lr_factor

VITMATTE_YAML = REPO / "configs" / "vitmatte.yaml"


def test_the_default_schedule_is_the_reference_multistep():
    """default.yaml: x1 before epoch 20, x0.1 from 20, x0.01 from 26; no warmup."""
    t = load_config().optim
    per_epoch = 10
    assert [lr_factor(t, e * per_epoch, per_epoch) for e in (0, 19, 20, 25, 26, 29)] == [
        1.0, 1.0, 0.1, 0.1, 0.1**2, 0.1**2,
    ]  # fmt: skip
    assert lr_factor(t, 20 * per_epoch - 1, per_epoch) == 1.0  # the last step of epoch 19


def test_warmup_and_milestone_factors_are_detectrons():
    """Linear warmup f (1 - a) + a, a = step / warmup_iters, times the milestone's factor."""
    t = load_config(VITMATTE_YAML).optim
    per_epoch = 1000
    assert lr_factor(t, 0, per_epoch) == pytest.approx(0.001)
    assert lr_factor(t, 125, per_epoch) == pytest.approx(0.001 * 0.5 + 0.5)
    assert lr_factor(t, 249, per_epoch) == pytest.approx(0.001 / 250 + 249 / 250)
    assert lr_factor(t, 250, per_epoch) == 1.0
    assert lr_factor(t, 30 * per_epoch - 1, per_epoch) == 1.0
    assert lr_factor(t, 30 * per_epoch, per_epoch) == 0.1
    assert lr_factor(t, 90 * per_epoch, per_epoch) == 0.05
    assert lr_factor(t, 100 * per_epoch - 1, per_epoch) == 0.05
    # warmup that outlasts a milestone multiplies with it
    short = load_config(overrides=["optim.warmup_iters=4", "optim.milestones=[1]"]).optim
    assert lr_factor(short, 2, 2) == pytest.approx(0.1 * (0.001 * 0.5 + 0.5))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr_factors=[0.1]", "optim.lr_factors: needs one factor per milestone"),
        ("optim.lr_factors=[0.1, 0]", "optim.lr_factors: must be > 0"),
        ("optim.warmup_factor=0", r"optim.warmup_factor: must be in \(0, 1\]"),
        ("optim.warmup_iters=-1", "optim.warmup_iters"),
        ("optim.optimizer=sgd", "optim.optimizer"),
    ],
)
def test_bad_schedule_values_are_refused_by_name(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_the_vitmatte_recipe_loads_as_the_official_one():
    cfg = load_config(VITMATTE_YAML)
    o, a = cfg.optim, cfg.augment
    assert (cfg.model.family, cfg.model.vitmatte.size) == ("vitmatte", "small")
    assert (o.optimizer, o.learning_rate, tuple(o.adam_betas), o.weight_decay) == (
        "adamw", 5e-4, (0.9, 0.999), 0.1,
    )  # fmt: skip
    assert (o.warmup_iters, o.warmup_factor) == (250, 0.001)
    assert (cfg.train.epochs, o.milestones, o.lr_factors) == (100, (30, 90), (0.1, 0.05))
    assert (cfg.train.batch_size, a.input_size, a.crop_sizes) == (16, 512, (512,))


def test_vitmatte_optimizer_groups_decay_layers_and_spare_norms():
    """AdamW over 14 layer groups at 5e-4 x 0.65^(13 - layer): the embeddings at 0.65^13, block
    i at 0.65^(12 - i), the decoder at 1; weight decay 0.1 except on nn.LayerNorm, BatchNorm
    and the absolute position embeddings, which are in ``<group>.no_decay`` groups at 0."""
    cfg = load_config(VITMATTE_YAML)
    model = build_model(cfg.model)
    optimizer = build_optimizer(model, cfg.optim)
    assert isinstance(optimizer, torch.optim.AdamW)
    groups = {g["name"]: g for g in optimizer.param_groups}
    expected = {"embeddings": 0.65**13, "decoder": 1.0} | {
        f"block{i}": 0.65 ** (12 - i) for i in range(12)
    }
    for name, scale in expected.items():
        assert groups[name]["lr"] == pytest.approx(5e-4 * scale, rel=1e-12)
        assert groups[name]["weight_decay"] == 0.1
        assert groups[name + NO_DECAY]["lr"] == groups[name]["lr"]
        assert groups[name + NO_DECAY]["weight_decay"] == 0.0
    assert len(groups) == 2 * len(expected)

    spared = {id(p) for name in expected for p in groups[name + NO_DECAY]["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm | nn.BatchNorm2d)]
    assert len(norms) == 2 * 12 + 3 + 4 + 1  # two per ViT block; ConvStream, fusion, head BN
    assert {id(p) for m in norms for p in m.parameters()} | {
        id(model.net.backbone.embeddings.position_embeddings)
    } == spared
    decayed = [names[id(p)] for name in expected for p in groups[name]["params"]]
    assert "net.backbone.embeddings.projection.weight" in decayed
    assert any(".residual.norm1." in n for n in decayed)  # channels-first LN: decayed, as there
    assert any(n.endswith("attention.rel_pos_h") for n in decayed)
    assert learning_rates(optimizer, parameter_groups(model)) == {"lr": groups["decoder"]["lr"]}


def test_adam_applies_weight_decay_to_every_indexnet_parameter():
    """IndexNet marks no parameter as spared: two groups, both at optim.weight_decay."""
    cfg = load_config(overrides=["optim.weight_decay=0.01"])
    optimizer = build_optimizer(build_model(cfg.model), cfg.optim)
    assert type(optimizer) is torch.optim.Adam
    assert [(g["name"], g["weight_decay"]) for g in optimizer.param_groups] == [
        ("encoder", 0.01), ("decoder", 0.01),
    ]  # fmt: skip
