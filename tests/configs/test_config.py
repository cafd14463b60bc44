"""configs: defaults, merging, nested overrides, every validation error, the old key names, and
docs/configuration.md against the schema.

``tests/configs/v2/`` holds what version 2 (before issue 24's sections) wrote: its three config
files, byte for byte, and ``recorded.json``, a config it resolved and recorded (as a shard set's
index.json and a checkpoint hold one): ``configs/vitmatte.yaml`` with
``train.freeze_encoder_bn=true``, ``loss.eps=1e-5``, ``model.output_stride=16`` and
``data.validation_ids=[ab12, cd34]``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
import warnings

import pytest
import yaml

from configs import (
    RENAMED,
    Config,
    ConfigError,
    IndexNetConfig,
    LossConfig,
    ModelConfig,
    RenamedKeyWarning,
    config_from_dict,
    load_config,
)
from configs.schema import DEFAULT_CONFIG, RETIRED, all_keys, flatten, upgrade
from tests.conftest import REPO

V2 = REPO / "tests" / "configs" / "v2"
DOCS = REPO / "docs" / "configuration.md"


def test_defaults_hold_the_reference_recipe():
    cfg = load_config()
    assert (cfg.data.bgs_per_train_fg, cfg.data.bgs_per_val_fg) == (96, 20)
    assert len(cfg.data.validation_ids) == 50 and cfg.data.validation_ids[0] == "247d445d"
    t, o, a = cfg.train, cfg.optim, cfg.augment
    assert (t.batch_size, t.epochs, o.learning_rate, o.backbone_lr_mult) == (16, 30, 0.01, 100.0)
    assert (o.lr_decay, o.milestones, a.input_size) == (0.1, (20, 26), 320)
    assert a.crop_sizes == (320, 480, 640) and a.trimap_radius == (1, 19)
    loss = cfg.model.indexnet.loss
    assert (loss.alpha_weight, loss.comp_weight, loss.eps) == (0.5, 0.5, 1e-6)
    assert cfg.model.indexnet.freeze_encoder_bn and cfg.model.vitmatte.size == "small"


def test_the_dataclass_defaults_are_default_yaml():
    """``Config()`` (what a recorded config's missing keys become) is configs/default.yaml but
    for the validation ids, which default.yaml names in a file."""
    assert dataclasses.replace(load_config(), data=Config().data) == Config()


def test_config_is_frozen():
    cfg = load_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.epochs = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.indexnet.loss.eps = 1.0  # type: ignore[misc]


def test_user_file_merges_over_defaults(yaml_file):
    text = "train:\n  epochs: 5\nmodel:\n  indexnet:\n    loss:\n      eps: 1e-5\n"
    cfg = load_config(yaml_file(text))
    assert cfg.train.epochs == 5
    assert cfg.model.indexnet.loss.eps == 1e-5  # 1e-5 without a dot still a float
    assert cfg.train.batch_size == 16 and cfg.model.indexnet.loss.alpha_weight == 0.5


def test_set_overrides_win_over_file(yaml_file):
    cfg = load_config(
        yaml_file("train:\n  epochs: 5\n"), ["train.epochs=7", "optim.milestones=[2, 4]"]
    )
    assert cfg.train.epochs == 7 and cfg.optim.milestones == (2, 4)


def test_set_takes_nested_keys_and_mappings():
    cfg = load_config(
        overrides=["model.indexnet.output_stride=16", "model.indexnet.loss.alpha_weight=0.3"]
    )
    assert cfg.model.indexnet.output_stride == 16 and cfg.model.indexnet.loss.alpha_weight == 0.3
    assert cfg.model.indexnet.loss.comp_weight == 0.5  # its neighbours keep theirs
    cfg = load_config(overrides=["model.indexnet={aspp: false, loss: {eps: 0.01}}"])
    assert not cfg.model.indexnet.aspp and cfg.model.indexnet.loss.eps == 0.01
    assert cfg.model.indexnet.output_stride == 32


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
    assert cfg.to_dict()["model"]["indexnet"]["loss"] == {
        "alpha_weight": 0.5,
        "comp_weight": 0.5,
        "eps": 1e-6,
    }


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=0", "train.epochs: must be >= 1, got 0"),
        ("train.epochs=abc", "train.epochs: expected an integer"),
        ("train.epochs=2.5", "train.epochs: expected an integer"),
        ("train.batch_size=1", "train.batch_size: must be >= 2, got 1"),
        ("train.foo=1", "--set: train.foo: unknown key; allowed: seed, batch_size, epochs"),
        (
            "model.depth=1",
            "--set: model.depth: unknown key; allowed: family, indexnet, vitmatte",
        ),
        (
            "model.indexnet.depth=1",
            "--set: model.indexnet.depth: unknown key; allowed: index_block, nonlinear, context, "
            "aspp, output_stride, decoder_kernel_size, decoder_conv, freeze_encoder_bn, loss",
        ),
        (
            "model.indexnet.loss.beta=1",
            "model.indexnet.loss.beta: unknown key; allowed: alpha_weight, comp_weight, eps",
        ),
        ("model.vitmatte.size=huge", "model.vitmatte.size: expected one of small, base"),
        ("model.indexnet=3", "--set: model.indexnet: expected a mapping of key: value"),
        ("model.family=vit-matte", "model.family: must be a family name"),
        (
            "nosuch.key=1",
            "nosuch: unknown section; allowed: data, model, train, optim, augment, loader, "
            "runtime, validation",
        ),
        ("data.rounding=floor", "data.rounding: expected one of nearest, truncate"),
        ("optim.milestones=[26, 20]", "optim.milestones: must be increasing"),
        ("optim.learning_rate=0", "optim.learning_rate: must be > 0"),
        ("optim.adam_betas=[0.9]", "optim.adam_betas: must be two values"),
        ("augment.input_size=300", "augment.input_size: must be a multiple of 32"),
        ("augment.trimap_radius=[5, 2]", "augment.trimap_radius: must be [min, max]"),
        ("augment.flip_prob=1.5", "augment.flip_prob: must be in [0, 1]"),
        ("augment.crop_sizes=320", "augment.crop_sizes: expected a list"),
        ("loader.read_backoff_s=-1", "loader.read_backoff_s: must be >= 0"),
        ("loader.corrupt=ignore", "loader.corrupt: expected one of stop, skip"),
        ("runtime.log_every=0", "runtime.log_every: must be >= 1"),
        ("validation.every=0", "validation.every: must be >= 1"),
        ("validation.enabled=maybe", "validation.enabled: expected true or false"),
        (
            "model.indexnet.freeze_encoder_bn=maybe",
            "model.indexnet.freeze_encoder_bn: expected true or false",
        ),
        ("model.indexnet.output_stride=8", "model.indexnet.output_stride: must be 32 or 16"),
        ("data.png_compression=4", "data.png_compression: must be in 0..3"),
        ("data.val_fraction=1.0", "data.val_fraction: must be in (0, 1)"),
        ("data.validation_ids=[12345678]", "quote it in YAML"),
        ("data.validation_ids=[a.b]", "ids are bare names"),
        ("model.indexnet.loss.eps=0", "model.indexnet.loss.eps: must be > 0"),
        (
            "model.indexnet.loss.alpha_weight=-1",
            "model.indexnet.loss: alpha_weight and comp_weight must be >= 0",
        ),
        ("epochs=3", "expected section.key=value"),
        ("train.epochs", "expected section.key=value"),
        ("train..epochs=3", "expected section.key=value"),
        ("train.epochs=[1", "value is not valid YAML"),
    ],
)
def test_bad_values_are_named(override, message):
    with pytest.raises(ConfigError) as info:
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
    with pytest.raises(ConfigError, match="user.yaml: train: expected a mapping"):
        load_config(yaml_file("train: 3\n"))
    with pytest.raises(ConfigError, match="user.yaml: model.vitmatte: expected a mapping"):
        load_config(yaml_file("model:\n  vitmatte: base\n"))
    with pytest.raises(ConfigError, match="validation_ids: file .*absent.txt does not exist"):
        load_config(yaml_file("data:\n  validation_ids: absent.txt\n"))


# -- the old key names ---------------------------------------------------------------------------


def _renamed(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, RenamedKeyWarning)]


def _old_file(name: str, tmp_path):
    """Version 2's configs/<name>.yaml in a folder of its own, with the ids file it names."""
    shutil.copy(REPO / "configs" / "aim500_validation.txt", tmp_path)
    return shutil.copy(V2 / f"{name}.yaml", tmp_path / f"{name}.yaml")


@pytest.mark.parametrize("name", ["default", "demo", "vitmatte"])
def test_version_2_files_load_as_this_versions(name, tmp_path):
    """Each old file gives the config its new counterpart does, with one FutureWarning per old
    key naming the file, the old name and the new one."""
    path = _old_file(name, tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = load_config(path)
    old_keys = [k for k in flatten(yaml.safe_load(path.read_text())) if k in RENAMED]
    assert old_keys and _renamed(caught) == [f"{path}: {k} is now {RENAMED[k]}" for k in old_keys]
    assert all(issubclass(w.category, FutureWarning) for w in caught)
    new = load_config(REPO / "configs" / f"{name}.yaml")
    if name == "vitmatte":  # v2's said train.freeze_encoder_bn: false, "the family ignores it"
        assert not old.model.indexnet.freeze_encoder_bn
        old = dataclasses.replace(old, model=new.model)
    assert old == new


# a valid value other than the default, for each key an old name maps to
CHANGED = {
    "optim.optimizer": "adamw",
    "optim.learning_rate": 0.5,
    "optim.backbone_lr_mult": 10.0,
    "optim.adam_betas": [0.8, 0.9],
    "optim.adam_eps": 0.001,
    "optim.weight_decay": 0.1,
    "optim.lr_decay": 0.5,
    "optim.milestones": [3, 4],
    "optim.lr_factors": [0.1, 0.01],
    "optim.warmup_iters": 7,
    "optim.warmup_factor": 0.5,
    "augment.input_size": 64,
    "augment.crop_sizes": [64],
    "augment.small_image_min_side": 100,
    "augment.trimap_radius": [2, 3],
    "augment.flip_prob": 0.25,
    "loader.shuffle_window": 4,
    "loader.decode_cache_mb": 0,
    "loader.target_step_ms": 20.0,
    "loader.read_retries": 1,
    "loader.read_backoff_s": 0.5,
    "loader.corrupt": "skip",
    "runtime.bf16": True,
    "runtime.channels_last": True,
    "runtime.sync_bn": True,
    "runtime.log_every": 1,
    "runtime.checkpoint_every": 0,
    "runtime.log_batches": True,
    "validation.enabled": False,
    "validation.every": 2,
    "validation.max_samples": 5,
    "model.indexnet.freeze_encoder_bn": False,
    "model.indexnet.loss.alpha_weight": 0.25,
    "model.indexnet.loss.comp_weight": 0.75,
    "model.indexnet.loss.eps": 0.001,
    "model.vitmatte.size": "base",
    "model.indexnet.index_block": "o2o",
    "model.indexnet.nonlinear": False,
    "model.indexnet.context": False,
    "model.indexnet.aspp": False,
    "model.indexnet.output_stride": 16,
    "model.indexnet.decoder_kernel_size": 3,
    "model.indexnet.decoder_conv": "dep_sep_conv",
}


@pytest.mark.parametrize(("old", "new"), list(RENAMED.items()))
def test_every_old_key_is_mapped_with_one_warning(old, new):
    value = CHANGED[new]
    with pytest.warns(RenamedKeyWarning) as caught:
        cfg = load_config(overrides=[f"{old}={json.dumps(value)}"])
    assert [str(w.message) for w in caught] == [f"--set: {old} is now {new}"]
    got = flatten(cfg.to_dict())[new]
    assert got == value and got != flatten(load_config().to_dict())[new]
    assert config_from_dict(upgrade({**cfg.to_dict()})) == cfg


def test_the_table_maps_old_names_onto_every_moved_key_once():
    assert sorted(CHANGED) == sorted(RENAMED.values()) and len(set(RENAMED.values())) == 43
    assert set(RENAMED.values()) <= set(all_keys()) and not set(RENAMED) & set(all_keys())


def test_old_and_new_names_mix_across_sources_and_not_within_one(yaml_file):
    with pytest.warns(RenamedKeyWarning):
        cfg = load_config(
            yaml_file("train:\n  learning_rate: 0.5\nloss:\n  eps: 0.01\n"),
            ["optim.learning_rate=0.25", "model.size=base"],
        )
    assert cfg.optim.learning_rate == 0.25 and cfg.model.indexnet.loss.eps == 0.01
    assert cfg.model.vitmatte.size == "base"
    both = yaml_file("train:\n  learning_rate: 0.5\noptim:\n  learning_rate: 0.2\n")
    with pytest.raises(ConfigError, match=r"user.yaml: optim.learning_rate: sets optim.learning_"
                       r"rate, which train.learning_rate sets too; keep one"):  # fmt: skip
        load_config(both)
    with pytest.raises(ConfigError, match="--set: loss.beta: unknown key; allowed: alpha_weight"):
        load_config(overrides=["loss.beta=1"])


def test_a_retired_key_is_refused_in_a_file_and_dropped_from_a_record(yaml_file):
    message = "train.shuffle_buffer: replaced by loader.shuffle_window"
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=["train.shuffle_buffer=64"])
    with pytest.raises(ConfigError, match=f"user.yaml: {message}"):
        load_config(yaml_file("train:\n  shuffle_buffer: 64\n"))
    recorded = {"train": {"shuffle_buffer": 64, "epochs": 3}}
    assert config_from_dict(recorded).train.epochs == 3
    assert set(RETIRED) == {"train.shuffle_buffer"}


def test_a_version_2_record_loads_silently_as_the_same_config():
    """A shard set's index.json or a checkpoint of version 2 holds the old shape; it maps through
    RENAMED without a warning (its reader cannot edit it)."""
    recorded = json.loads((V2 / "recorded.json").read_text())
    assert {"train", "loss", "model"} <= recorded.keys() and "size" in recorded["model"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = config_from_dict(recorded)
        reshaped = upgrade(recorded)
    same = load_config(
        REPO / "configs" / "vitmatte.yaml",
        ["model.indexnet.loss.eps=1e-5", "model.indexnet.output_stride=16",
         "data.validation_ids=[ab12, cd34]"],
    )  # fmt: skip
    assert cfg == same
    newer = {"storage"}  # sections added since, which an old record lacks (their defaults load)
    now = {k: v for k, v in same.to_dict().items() if k not in newer}
    now["data"] = {k: v for k, v in now["data"].items() if k != "lean_train"}  # a key added since
    assert reshaped == now  # shape alone
    assert upgrade(same.to_dict()) == same.to_dict()
    assert upgrade({"model": {"family": "x", "new_key": 1}}) == {
        "model": {"family": "x", "new_key": 1}
    }


def test_model_variant_is_the_familys_own_section_without_training_keys():
    cfg = ModelConfig(indexnet=IndexNetConfig(index_block="o2o", freeze_encoder_bn=False))
    assert cfg.variant() == {
        "model.family": "indexnet",
        "model.indexnet.index_block": "o2o",
        "model.indexnet.nonlinear": True,
        "model.indexnet.context": True,
        "model.indexnet.aspp": True,
        "model.indexnet.output_stride": 32,
        "model.indexnet.decoder_kernel_size": 5,
        "model.indexnet.decoder_conv": "std_conv",
    }
    trained = dataclasses.replace(
        cfg.indexnet, freeze_encoder_bn=True, loss=LossConfig(alpha_weight=1.0)
    )
    assert dataclasses.replace(cfg, indexnet=trained).variant() == cfg.variant()
    vit = ModelConfig(family="vitmatte")
    assert vit.variant() == {"model.family": "vitmatte", "model.vitmatte.size": "small"}
    assert ModelConfig(family="toy").variant() == {"model.family": "toy"}  # no section of its own


def test_an_old_key_on_the_command_line_is_one_line_on_stderr(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "indexnet_cli", "config", "show",
         "--set", "train.learning_rate=0.5", "--set", "train.epochs=3"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == "warning: --set: train.learning_rate is now optim.learning_rate\n"
    shown = yaml.safe_load(result.stdout)
    assert shown["optim"]["learning_rate"] == 0.5 and shown["train"]["epochs"] == 3


# -- docs/configuration.md and configs/default.yaml ----------------------------------------------


def _doc_tables() -> list[list[list[str]]]:
    """Every Markdown table of docs/configuration.md: its rows (header and rule left out), cells
    stripped of surrounding backquotes."""
    tables, rows = [], []
    for line in DOCS.read_text().splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            rows.append([c[1:-1] if c.startswith("`") and c.endswith("`") else c for c in cells])
        elif rows:
            tables.append(rows[2:])
            rows = []
    return tables


def test_the_docs_list_every_key_with_default_yamls_default():
    tables = _doc_tables()
    documented = [row for rows in tables if len(rows[0]) == 3 for row in rows]
    keys = [key for key, _, _ in documented]
    assert keys == list(all_keys())  # every key, once, in the schema's order
    defaults = flatten(yaml.safe_load(DEFAULT_CONFIG.read_text()))
    for key, default, meaning in documented:
        assert yaml.safe_load(default) == defaults[key], key
        assert meaning, key


def test_the_docs_list_the_old_names_as_the_table_does():
    (renamed,) = [rows for rows in _doc_tables() if len(rows[0]) == 2]
    assert dict(renamed) == RENAMED and len(renamed) == len(RENAMED)


def test_default_yaml_sets_and_comments_every_key():
    text = DEFAULT_CONFIG.read_text()
    assert list(flatten(yaml.safe_load(text))) == list(all_keys())
    for line in text.splitlines():
        if re.match(r"^\s*[a-z_0-9]+:", line):
            assert "#" in line, f"configs/default.yaml: no comment on {line.strip()!r}"


@pytest.mark.parametrize("name", ["demo", "vitmatte"])
def test_the_recipe_files_use_the_new_names(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_config(REPO / "configs" / f"{name}.yaml")
    text = (REPO / "configs" / f"{name}.yaml").read_text()
    assert "ignores" not in text and not set(flatten(yaml.safe_load(text))) & set(RENAMED)


def test_storage_options_are_never_recorded(yaml_file):
    """storage.options may hold credentials: a config carries them, its record holds {}."""
    path = yaml_file("storage:\n  options: {key: AKIA-SECRET, client_kwargs: {region_name: x}}\n")
    cfg = load_config(path, ["storage.cache_dir=/tmp/cache", "storage.cache_limit_gb=0.5"])
    assert cfg.storage.options == {"key": "AKIA-SECRET", "client_kwargs": {"region_name": "x"}}
    recorded = cfg.to_dict()
    assert recorded["storage"] == {"options": {}, "cache_dir": "/tmp/cache", "cache_limit_gb": 0.5}
    assert "AKIA-SECRET" not in yaml.safe_dump(recorded)
    assert config_from_dict(recorded).storage.options == {}
    with pytest.raises(ConfigError, match="storage.cache_limit_gb: must be >= 0"):
        load_config(None, ["storage.cache_limit_gb=-1"])
