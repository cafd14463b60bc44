"""Config dataclasses, their validation, and the YAML/override loader."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

DEFAULT_CONFIG = Path(__file__).with_name("default.yaml")


class ConfigError(ValueError):
    """A config file, key or value that cannot be used; the message says which and why."""


def _fail(where: str, message: str) -> typing.NoReturn:
    raise ConfigError(f"{where}: {message}")


@dataclass(frozen=True)
class DataConfig:
    """Composition of foregrounds over backgrounds (docs/reference.md section 1)."""

    seed: int = 0  # seeds the seeded split, the background pairing and the sample order
    bgs_per_train_fg: int = 96  # unique backgrounds per train foreground
    bgs_per_val_fg: int = 20  # unique backgrounds per validation foreground
    validation_ids: tuple[str, ...] = ()  # reference validation ids (file name or list in YAML)
    val_fraction: float = 0.1  # seeded split share when no listed id is in the data
    samples_per_shard: int = 64  # samples per tar shard
    train_trimap_radius: int = 10  # radius (px) of the default train trimap stored in shards
    png_compression: int = 1  # ISA-L deflate level 0..3 of the PNG members
    rounding: Literal["nearest", "truncate"] = "nearest"  # composite float -> uint8

    def __post_init__(self) -> None:
        _at_least(self, "bgs_per_train_fg", 1)
        _at_least(self, "bgs_per_val_fg", 1)
        _at_least(self, "samples_per_shard", 1)
        _at_least(self, "train_trimap_radius", 1)
        _between(self, "png_compression", 0, 3)
        if not 0.0 < self.val_fraction < 1.0:
            _fail("data.val_fraction", f"must be in (0, 1), got {self.val_fraction}")
        for vid in self.validation_ids:
            if not vid or "/" in vid or "." in vid:
                _fail("data.validation_ids", f"ids are bare names like '247d445d', got {vid!r}")


@dataclass(frozen=True)
class TrainConfig:
    """The reference training recipe (docs/reference.md section 3)."""

    seed: int = 0  # seeds model init, shard shuffle and augmentation
    batch_size: int = 16  # per device
    epochs: int = 30
    learning_rate: float = 0.01  # index blocks, ASPP, decoder and head
    backbone_lr_mult: float = 100.0  # encoder lr = learning_rate / backbone_lr_mult
    lr_decay: float = 0.1  # lr *= lr_decay at each milestone (when lr_factors is empty)
    milestones: tuple[int, ...] = (20, 26)  # epochs at which the learning rate steps down
    lr_factors: tuple[float, ...] = ()  # lr multiplier from each milestone on (empty: lr_decay^k)
    warmup_iters: int = 0  # linear warmup over the first steps (0: none)
    warmup_factor: float = 0.001  # the warmup's starting multiplier
    optimizer: Literal["adam", "adamw"] = "adam"  # Adam (L2 weight decay) | AdamW (decoupled)
    adam_betas: tuple[float, ...] = (0.9, 0.999)
    adam_eps: float = 1e-8
    weight_decay: float = 0.0  # not applied to the parameters a family marks (norms, ...)
    input_size: int = 320  # network input side (multiple of 32)
    crop_sizes: tuple[int, ...] = (320, 480, 640)  # crop sides before resizing to input_size
    small_image_min_side: int = 500  # min side below input_size is first rescaled to this
    trimap_radius: tuple[int, ...] = (1, 19)  # on-the-fly unknown band radius range, inclusive
    flip_prob: float = 0.5  # horizontal flip probability
    freeze_encoder_bn: bool = True  # encoder BatchNorm statistics stay fixed
    # how the trainer runs (not part of the reference recipe)
    shuffle_window: int = 16  # raw samples each canonical stream shuffles within (<= 1: none)
    log_batches: bool = False  # rank 0 appends each global batch's keys, digests to batches.jsonl
    decode_cache_mb: int = 512  # per loader process: decoded fg/alpha kept while needed (0: off)
    target_step_ms: float = 50.0  # the GPU step time --data-only sizes --loader-workers for
    read_retries: int = 4  # tries again after an HTTP shard fails in transit, then stops
    read_backoff_s: float = 1.0  # the first wait before a retry; doubled for each next one
    bf16: bool = False  # bfloat16 autocast for the forward pass (the loss stays float32)
    channels_last: bool = False  # NHWC memory format (faster convolutions on GPUs)
    sync_bn: bool = False  # SyncBatchNorm across ranks (decoder BN; encoder BN stays frozen)
    corrupt: Literal["stop", "skip"] = "stop"  # a corrupt shard or sample: stop, or skip+count
    validate: bool = True  # score the validation split after epochs; keep best.pt by Grad
    validate_every: int = 1  # epochs between validations (the last epoch is always validated)
    val_max_samples: int = 0  # validation samples scored per epoch (0: all)
    log_every: int = 10  # steps between train.jsonl records
    checkpoint_every: int = 500  # steps between checkpoints within an epoch (0: only per epoch)

    def __post_init__(self) -> None:
        _at_least(self, "batch_size", 2)  # BatchNorm after ASPP's global pool needs B >= 2
        _at_least(self, "shuffle_window", 0)
        _at_least(self, "decode_cache_mb", 0)
        _at_least(self, "read_retries", 0)
        if self.read_backoff_s < 0:
            _fail("train.read_backoff_s", f"must be >= 0, got {self.read_backoff_s}")
        if self.target_step_ms <= 0:
            _fail("train.target_step_ms", f"must be > 0, got {self.target_step_ms}")
        _at_least(self, "val_max_samples", 0)
        _at_least(self, "validate_every", 1)
        _at_least(self, "log_every", 1)
        _at_least(self, "checkpoint_every", 0)
        _at_least(self, "epochs", 1)
        _at_least(self, "input_size", 32)
        _at_least(self, "small_image_min_side", 1)
        if self.input_size % 32:
            _fail("train.input_size", f"must be a multiple of 32, got {self.input_size}")
        for name in ("learning_rate", "backbone_lr_mult", "lr_decay", "adam_eps"):
            if getattr(self, name) <= 0:
                _fail(f"train.{name}", f"must be > 0, got {getattr(self, name)}")
        if self.weight_decay < 0:
            _fail("train.weight_decay", f"must be >= 0, got {self.weight_decay}")
        if list(self.milestones) != sorted(set(self.milestones)) or any(
            m < 1 for m in self.milestones
        ):
            _fail(
                "train.milestones", f"must be increasing epochs >= 1, got {list(self.milestones)}"
            )
        if self.lr_factors and len(self.lr_factors) != len(self.milestones):
            _fail(
                "train.lr_factors",
                f"needs one factor per milestone ({len(self.milestones)}), got "
                f"{list(self.lr_factors)}; or [] for lr_decay^k",
            )
        if any(f <= 0 for f in self.lr_factors):
            _fail("train.lr_factors", f"must be > 0, got {list(self.lr_factors)}")
        _at_least(self, "warmup_iters", 0)
        if not 0 < self.warmup_factor <= 1:
            _fail("train.warmup_factor", f"must be in (0, 1], got {self.warmup_factor}")
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            _fail("train.adam_betas", f"must be two values in [0, 1), got {list(self.adam_betas)}")
        if not self.crop_sizes or any(c < 1 for c in self.crop_sizes):
            _fail("train.crop_sizes", f"must be positive sides, got {list(self.crop_sizes)}")
        lo_hi = self.trimap_radius
        if len(lo_hi) != 2 or not 1 <= lo_hi[0] <= lo_hi[1]:
            _fail(
                "train.trimap_radius", f"must be [min, max] with 1 <= min <= max, got {list(lo_hi)}"
            )
        if not 0.0 <= self.flip_prob <= 1.0:
            _fail("train.flip_prob", f"must be in [0, 1], got {self.flip_prob}")


@dataclass(frozen=True)
class LossConfig:
    """Weights of the alpha-prediction and composition losses (docs/reference.md section 3)."""

    alpha_weight: float = 0.5  # weight of L_alpha
    comp_weight: float = 0.5  # weight of L_comp
    eps: float = 1e-6  # Charbonnier epsilon

    def __post_init__(self) -> None:
        if (
            self.alpha_weight < 0
            or self.comp_weight < 0
            or self.alpha_weight + self.comp_weight <= 0
        ):
            _fail("loss", "alpha_weight and comp_weight must be >= 0 and not both 0")
        if self.eps <= 0:
            _fail("loss.eps", f"must be > 0, got {self.eps}")


@dataclass(frozen=True)
class ModelConfig:
    """The IndexNet variant (docs/reference.md section 2); the defaults are the released model.

    The official code's switches map onto these fields: ``indexnet='depthwise'`` with
    ``index_mode='m2o'``/``'o2o'`` is ``index_block: m2o``/``o2o``, ``indexnet='holistic'`` is
    ``index_block: holistic``; ``use_nonlinear``, ``use_context``, ``apply_aspp``,
    ``output_stride``, ``decoder_kernel_size`` and ``conv_operator`` keep their meaning.
    """

    family: str = "indexnet"  # the model family, a key of training.models.registry.FAMILIES
    size: Literal["small", "base"] = "small"  # ViTMatte's: ViTMatte-S or -B (vitmatte family)
    # IndexNet's switches (read by the indexnet family)
    index_block: Literal["m2o", "o2o", "holistic"] = "m2o"  # depthwise M2O | O2O | holistic
    nonlinear: bool = True  # index branch = conv-BN-ReLU6-conv1x1; false: a single linear conv
    context: bool = True  # index convs 4x4 (stride 2, padding 1); false: 2x2 (no overlap)
    aspp: bool = True  # ASPP context module 320 -> 160; false: a 1x1 conv-BN-ReLU6
    output_stride: int = 32  # 32: five index blocks; 16: no index6, layer6/7 dilated by 2
    decoder_kernel_size: int = 5  # kernel of every decoder and head conv (odd)
    decoder_conv: Literal["std_conv", "dep_sep_conv"] = "std_conv"  # k x k conv | dw k x k + 1x1

    def __post_init__(self) -> None:
        if not self.family.isidentifier():
            _fail("model.family", f"must be a family name such as indexnet, got {self.family!r}")
        if self.output_stride not in (16, 32):
            _fail("model.output_stride", f"must be 32 or 16, got {self.output_stride}")
        if self.decoder_kernel_size < 1 or self.decoder_kernel_size % 2 == 0:
            _fail(
                "model.decoder_kernel_size",
                f"must be an odd size >= 1, got {self.decoder_kernel_size}",
            )


@dataclass(frozen=True)
class Config:
    """All stages' settings; ``to_dict()`` is what outputs record as their resolved config."""

    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    model: ModelConfig = field(default_factory=ModelConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain, YAML/JSON-serialisable dict of every resolved value."""

        def plain(value: Any) -> Any:
            return list(value) if isinstance(value, tuple) else value

        return {
            f.name: {k: plain(v) for k, v in dataclasses.asdict(getattr(self, f.name)).items()}
            for f in dataclasses.fields(self)
        }


_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "train": TrainConfig,
    "loss": LossConfig,
    "model": ModelConfig,
}

# Not pydantic (issue 11, item 6): a pydantic 2.14 version (strict frozen pydantic dataclasses,
# Field(ge=...) bounds, after-validators for the rules) passed every test, but was not shorter
# (381 lines vs 359: keeping these messages takes ~50 lines translating its errors) and importing
# it slows every command's start-up: `indexnet --help` +162 ms wall, +131 ms CPU (median of 40
# paired runs on a 2-core VM), `import configs.schema` 18 -> 224 ms; load_config() ~5.6 ms both.


def _at_least(obj: Any, name: str, low: int) -> None:
    section = _section_name(obj)
    if getattr(obj, name) < low:
        _fail(f"{section}.{name}", f"must be >= {low}, got {getattr(obj, name)}")


def _between(obj: Any, name: str, low: int, high: int) -> None:
    value = getattr(obj, name)
    if not low <= value <= high:
        _fail(f"{_section_name(obj)}.{name}", f"must be in {low}..{high}, got {value}")


def _section_name(obj: Any) -> str:
    return next(k for k, v in _SECTIONS.items() if isinstance(obj, v))


def _coerce(where: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a field annotation; return it in the field's type."""
    origin = typing.get_origin(annotation)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        _fail(where, f"expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        _fail(where, f"expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-6 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        _fail(where, f"expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        _fail(where, f"expected a string, got {value!r} (quote it in YAML: '{value}')")
    if origin is Literal:
        allowed = typing.get_args(annotation)
        if value in allowed:
            return value
        _fail(where, f"expected one of {', '.join(map(str, allowed))}; got {value!r}")
    if origin is tuple:
        item_type = typing.get_args(annotation)[0]
        if not isinstance(value, (list, tuple)):
            _fail(where, f"expected a list, got {value!r}")
        return tuple(_coerce(f"{where}[{i}]", v, item_type) for i, v in enumerate(value))
    raise AssertionError(f"unsupported config annotation {annotation!r} at {where}")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from exc
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(loaded).__name__}")
    return loaded


# keys that existed once: a user's file or --set naming one is told what replaced it; a config
# recorded by an older version (in a shard set's index, a checkpoint) loads without them
RETIRED = {
    "train.shuffle_buffer": "replaced by train.shuffle_window, a shuffle window per canonical "
    "stream (README: 'Data order, epochs and resumption')",
}


def _merge(base: dict[str, Any], update: Mapping[str, Any], origin: str) -> None:
    for section, values in update.items():
        if section not in _SECTIONS:
            _fail(f"{origin}: {section}", f"unknown section; allowed: {', '.join(_SECTIONS)}")
        if not isinstance(values, Mapping):
            _fail(f"{origin}: {section}", "expected a mapping of key: value")
        for key in values:
            if f"{section}.{key}" in RETIRED:
                _fail(f"{origin}: {section}.{key}", RETIRED[f"{section}.{key}"])
        base.setdefault(section, {}).update(values)


def _parse_override(text: str) -> tuple[str, str, Any]:
    key, sep, raw = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not section or not name:
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. train.epochs=5")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: value is not valid YAML: {exc}") from exc
    return section, name, value


def _resolve_ids(value: Any, base_dir: Path) -> Any:
    """``data.validation_ids`` may name a file of ids (one per line, # comments)."""
    if not isinstance(value, str):
        return value
    path = Path(value) if Path(value).is_absolute() else base_dir / value
    if not path.is_file():
        raise ConfigError(f"data.validation_ids: file {path} does not exist")
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def _build_section(name: str, values: Mapping[str, Any]) -> Any:
    cls = _SECTIONS[name]
    hints = typing.get_type_hints(cls)
    allowed = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if f"{name}.{key}" in RETIRED:
            continue  # recorded by an older version (a user's own config is refused in _merge)
        if key not in allowed:
            _fail(f"{name}.{key}", f"unknown key; allowed: {', '.join(allowed)}")
        kwargs[key] = _coerce(f"{name}.{key}", value, hints[key])
    return cls(**kwargs)


def config_from_dict(values: Mapping[str, Any]) -> Config:
    """Rebuild a ``Config`` from ``Config.to_dict()`` output (e.g. recorded in an index).

    Raises:
        ConfigError: an unknown section or key, or a bad value, named.
    """
    for section, body in values.items():
        if section not in _SECTIONS:
            _fail(section, f"unknown section; allowed: {', '.join(_SECTIONS)}")
        if not isinstance(body, Mapping):
            _fail(section, "expected a mapping of key: value")
    return Config(**{name: _build_section(name, values.get(name, {})) for name in _SECTIONS})


def load_config(
    path: str | Path | None = None, overrides: Sequence[str] = (), *, base: Path = DEFAULT_CONFIG
) -> Config:
    """Load the defaults, merge ``path`` over them, apply ``section.key=value`` overrides.

    Args:
        path: optional user YAML file with any subset of the sections and keys.
        overrides: strings like ``"train.epochs=5"``; values are parsed as YAML.
        base: the defaults file (the packaged ``configs/default.yaml``).

    Returns:
        The validated, frozen ``Config``.

    Raises:
        ConfigError: an unreadable file, unknown section or key, or a bad value, named.
    """
    merged: dict[str, Any] = {}
    _merge(merged, _read_yaml(base), str(base))
    ids_dir = base.parent
    if path is not None:
        user = Path(path)
        user_values = _read_yaml(user)
        _merge(merged, user_values, str(user))
        if "validation_ids" in user_values.get("data", {}):
            ids_dir = user.parent
    for text in overrides:
        section, name, value = _parse_override(text)
        _merge(merged, {section: {name: value}}, "--set")
        if section == "data" and name == "validation_ids":
            ids_dir = Path.cwd()
    if "validation_ids" in merged.get("data", {}):
        merged["data"]["validation_ids"] = _resolve_ids(merged["data"]["validation_ids"], ids_dir)
    return config_from_dict(merged)
