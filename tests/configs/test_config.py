"""configs: defaults, merging, overrides and every validation error."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from configs import ConfigError, config_from_dict, load_config


def test_defaults_hold_the_reference_recipe():
    cfg = load_config()
    assert (cfg.data.bgs_per_train_fg, cfg.data.bgs_per_val_fg) == (96, 20)
    assert len(cfg.data.validation_ids) == 50 and cfg.data.validation_ids[0] == "247d445d"
    t = cfg.train
    assert (t.batch_size, t.epochs, t.learning_rate, t.backbone_lr_mult) == (16, 30, 0.01, 100.0)
    assert (t.lr_decay, t.milestones, t.input_size) == (0.1, (20, 26), 320)
    assert t.crop_sizes == (320, 480, 640) and t.trimap_radius == (1, 19)
    assert (cfg.loss.alpha_weight, cfg.loss.comp_weight, cfg.loss.eps) == (0.5, 0.5, 1e-6)


def test_config_is_frozen():
    cfg = load_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.epochs = 3  # type: ignore[misc]


def test_user_file_merges_over_defaults(yaml_file):
    cfg = load_config(yaml_file("train:\n  epochs: 5\nloss:\n  eps: 1e-5\n"))
    assert cfg.train.epochs == 5 and cfg.loss.eps == 1e-5  # 1e-5 without a dot still a float
    assert cfg.train.batch_size == 16  # untouched keys keep their defaults


def test_set_overrides_win_over_file(yaml_file):
    cfg = load_config(
        yaml_file("train:\n  epochs: 5\n"), ["train.epochs=7", "train.milestones=[2, 4]"]
    )
    assert cfg.train.epochs == 7 and cfg.train.milestones == (2, 4)


def test_validation_ids_from_list_or_file(yaml_file, tmp_path):
    cfg = load_config(overrides=["data.validation_ids=[aa, bb]"])
    assert cfg.data.validation_ids == ("aa", "bb")
    (tmp_path / "ids.txt").write_text("# comment\nx1\n\nx2  # trailing\n")
    cfg = load_config(yaml_file("data:\n  validation_ids: ids.txt\n"))
    assert cfg.data.validation_ids == ("x1", "x2")


def test_resolved_config_reloads_to_the_same_config(yaml_file):
    cfg = load_config(overrides=["train.epochs=2", "data.validation_ids=[a1, b2]"])
    assert load_config(yaml_file(yaml.safe_dump(cfg.to_dict()))) == cfg
    assert config_from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match="train.nope: unknown key"):
        config_from_dict({"train": {"nope": 1}})


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=0", "train.epochs: must be >= 1, got 0"),
        ("train.epochs=abc", "train.epochs: expected an integer"),
        ("train.epochs=2.5", "train.epochs: expected an integer"),
        ("train.foo=1", "train.foo: unknown key; allowed: seed, batch_size"),
        (
            "model.depth=1",
            "model.depth: unknown key; allowed: family, size, index_block, nonlinear",
        ),
        ("nosuch.key=1", "nosuch: unknown section; allowed: data, train, loss, model"),
        ("data.rounding=floor", "data.rounding: expected one of nearest, truncate"),
        ("train.milestones=[26, 20]", "train.milestones: must be increasing"),
        ("train.input_size=300", "train.input_size: must be a multiple of 32"),
        ("train.trimap_radius=[5, 2]", "train.trimap_radius: must be [min, max]"),
        ("train.flip_prob=1.5", "train.flip_prob: must be in [0, 1]"),
        ("train.freeze_encoder_bn=maybe", "train.freeze_encoder_bn: expected true or false"),
        ("train.adam_betas=[0.9]", "train.adam_betas: must be two values"),
        ("train.crop_sizes=320", "train.crop_sizes: expected a list"),
        ("data.png_compression=4", "data.png_compression: must be in 0..3"),
        ("data.val_fraction=1.0", "data.val_fraction: must be in (0, 1)"),
        ("data.validation_ids=[12345678]", "quote it in YAML"),
        ("data.validation_ids=[a.b]", "ids are bare names"),
        ("loss.eps=0", "loss.eps: must be > 0"),
        ("loss.alpha_weight=-1", "loss: alpha_weight and comp_weight must be >= 0"),
        ("epochs=3", "expected section.key=value"),
        ("train.epochs", "expected section.key=value"),
        ("train.epochs=[1", "value is not valid YAML"),
    ],
)
def test_bad_values_are_named(override, message):
    with pytest.raises(ConfigError, match=None) as info:
        load_config(overrides=[override])
    assert message in str(info.value)


def test_bad_files_are_named(yaml_file, tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml: cannot read config file"):
        load_config(missing)
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(yaml_file("train: [1, 2\n"))
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        load_config(yaml_file("- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="train: expected a mapping"):
        load_config(yaml_file("train: 3\n"))
    with pytest.raises(ConfigError, match="validation_ids: file .*absent.txt does not exist"):
        load_config(yaml_file("data:\n  validation_ids: absent.txt\n"))
