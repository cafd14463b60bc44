"""Config dataclasses, their validation, and the YAML/override loader.

Sections by concern: ``data`` (the shard build), ``model`` (the family, and one section per family
with everything that is that family's own), ``train`` (the run's shape), ``optim`` (the optimiser
and its schedule), ``augment``, ``loader``, ``runtime``, ``validation`` and ``storage``. Keys
nest: a key is named by its dotted path, e.g. ``model.indexnet.loss.alpha_weight``. Names of
older versions (``RENAMED``) still load, mapped to their new place.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import yaml

DEFAULT_CONFIG = Path(__file__).with_name("default.yaml")


class ConfigError(ValueError):
    """A config file, key or value that cannot be used; the message says which and why."""


class RenamedKeyWarning(FutureWarning):
    """A config file or ``--set`` used an old key name; the message names the new one."""


def _fail(where: str, message: str) -> typing.NoReturn:
    raise ConfigError(f"{where}: {message}")


# metadata of a model field that sets how a network trains, not which network it is (the layout
# of its weights): ``ModelConfig.variant()`` leaves it out, so a fine-tune (--init) may change it
TRAINING_ONLY = MappingProxyType({"training_only": True})


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
    rounding: Literal["nearest", "truncate", "adobe"] = "nearest"  # composite float -> uint8
    lean_train: bool = False  # train samples hold only what training reads (fg, bg, alpha, json)

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
class LossConfig:
    """IndexNet's loss: weights of the alpha-prediction and composition terms (docs/reference.md
    section 3), over the unknown region."""

    alpha_weight: float = 0.5  # weight of L_alpha
    comp_weight: float = 0.5  # weight of L_comp
    eps: float = 1e-6  # Charbonnier epsilon

    def __post_init__(self) -> None:
        if (
            self.alpha_weight < 0
            or self.comp_weight < 0
            or self.alpha_weight + self.comp_weight <= 0
        ):
            _fail(_path(self), "alpha_weight and comp_weight must be >= 0 and not both 0")
        if self.eps <= 0:
            _fail(f"{_path(self)}.eps", f"must be > 0, got {self.eps}")


@dataclass(frozen=True)
class IndexNetConfig:
    """The IndexNet variant (docs/reference.md section 2; the defaults are the released model), and
    how it trains.

    The official code's switches map onto these fields: ``indexnet='depthwise'`` with
    ``index_mode='m2o'``/``'o2o'`` is ``index_block: m2o``/``o2o``, ``indexnet='holistic'`` is
    ``index_block: holistic``; ``use_nonlinear``, ``use_context``, ``apply_aspp``,
    ``output_stride``, ``decoder_kernel_size`` and ``conv_operator`` keep their meaning.
    """

    index_block: Literal["m2o", "o2o", "holistic"] = "m2o"  # depthwise M2O | O2O | holistic
    nonlinear: bool = True  # index branch = conv-BN-ReLU6-conv1x1; false: a single linear conv
    context: bool = True  # index convs 4x4 (stride 2, padding 1); false: 2x2 (no overlap)
    aspp: bool = True  # ASPP context module 320 -> 160; false: a 1x1 conv-BN-ReLU6
    output_stride: int = 32  # 32: five index blocks; 16: no index6, layer6/7 dilated by 2
    decoder_kernel_size: int = 5  # kernel of every decoder and head conv (odd)
    decoder_conv: Literal["std_conv", "dep_sep_conv"] = "std_conv"  # k x k conv | dw k x k + 1x1
    # encoder BatchNorm statistics stay fixed in training (the MindSpore port)
    freeze_encoder_bn: bool = field(default=True, metadata=TRAINING_ONLY)
    # the loss's weights (0.5 L_alpha + 0.5 L_comp)
    loss: LossConfig = field(default_factory=LossConfig, metadata=TRAINING_ONLY)

    def __post_init__(self) -> None:
        if self.output_stride not in (16, 32):
            _fail(f"{_path(self)}.output_stride", f"must be 32 or 16, got {self.output_stride}")
        if self.decoder_kernel_size < 1 or self.decoder_kernel_size % 2 == 0:
            _fail(
                f"{_path(self)}.decoder_kernel_size",
                f"must be an odd size >= 1, got {self.decoder_kernel_size}",
            )


@dataclass(frozen=True)
class VitMatteConfig:
    """The ViTMatte variant (docs/reference.md section 5)."""

    size: Literal["small", "base"] = "small"  # ViTMatte-S (ViT-S/16) | ViTMatte-B (ViT-B/16)


@dataclass(frozen=True)
class ModelConfig:
    """The model family, and one section per family that only that family reads.

    A network keeps its ``ModelConfig`` as ``.cfg`` and reads its own section
    (``cfg.indexnet``, ``cfg.vitmatte``); a family's section is named as the family.
    """

    family: str = "indexnet"  # the model family, a key of training.models.registry.FAMILIES
    indexnet: IndexNetConfig = field(default_factory=IndexNetConfig)  # the indexnet family's
    vitmatte: VitMatteConfig = field(default_factory=VitMatteConfig)  # the vitmatte family's

    def __post_init__(self) -> None:
        if not self.family.isidentifier():
            _fail("model.family", f"must be a family name such as indexnet, got {self.family!r}")

    def variant(self) -> dict[str, Any]:
        """Which network this is: ``model.family`` and each key of the family's own section
        (dotted) but those that only set how it trains (``TRAINING_ONLY``)."""
        own = getattr(self, self.family, None)
        keys = {"model.family": self.family}
        if dataclasses.is_dataclass(own):
            for f in dataclasses.fields(own):
                if not f.metadata.get("training_only"):
                    keys[f"model.{self.family}.{f.name}"] = getattr(own, f.name)
        return keys


@dataclass(frozen=True)
class TrainConfig:
    """The run's shape: seed, batch and length (docs/reference.md section 3)."""

    seed: int = 0  # seeds model init, shard shuffle and augmentation
    batch_size: int = 16  # per device
    epochs: int = 30  # passes over the train split

    def __post_init__(self) -> None:
        _at_least(self, "batch_size", 2)  # BatchNorm after ASPP's global pool needs B >= 2
        _at_least(self, "epochs", 1)


@dataclass(frozen=True)
class OptimConfig:
    """The optimiser and its learning-rate schedule (docs/reference.md section 3), built by
    ``training.run.optim``."""

    optimizer: Literal["adam", "adamw"] = "adam"  # Adam (L2 weight decay) | AdamW (decoupled)
    learning_rate: float = 0.01  # the full rate (IndexNet: index blocks, ASPP, decoder and head)
    backbone_lr_mult: float = 100.0  # a pretrained backbone's lr = learning_rate / this
    adam_betas: tuple[float, ...] = (0.9, 0.999)  # Adam's (beta1, beta2)
    adam_eps: float = 1e-8  # Adam's epsilon
    weight_decay: float = 0.0  # not applied to the parameters a family marks (norms, ...)
    lr_decay: float = 0.1  # lr *= lr_decay at each milestone (when lr_factors is empty)
    milestones: tuple[int, ...] = (20, 26)  # epochs at which the learning rate steps down
    lr_factors: tuple[float, ...] = ()  # lr multiplier from each milestone on (empty: lr_decay^k)
    warmup_iters: int = 0  # linear warmup over the first steps (0: none)
    warmup_factor: float = 0.001  # the warmup's starting multiplier

    def __post_init__(self) -> None:
        for name in ("learning_rate", "backbone_lr_mult", "lr_decay", "adam_eps"):
            if getattr(self, name) <= 0:
                _fail(f"optim.{name}", f"must be > 0, got {getattr(self, name)}")
        if self.weight_decay < 0:
            _fail("optim.weight_decay", f"must be >= 0, got {self.weight_decay}")
        if list(self.milestones) != sorted(set(self.milestones)) or any(
            m < 1 for m in self.milestones
        ):
            _fail(
                "optim.milestones", f"must be increasing epochs >= 1, got {list(self.milestones)}"
            )
        if self.lr_factors and len(self.lr_factors) != len(self.milestones):
            _fail(
                "optim.lr_factors",
                f"needs one factor per milestone ({len(self.milestones)}), got "
                f"{list(self.lr_factors)}; or [] for lr_decay^k",
            )
        if any(f <= 0 for f in self.lr_factors):
            _fail("optim.lr_factors", f"must be > 0, got {list(self.lr_factors)}")
        _at_least(self, "warmup_iters", 0)
        if not 0 < self.warmup_factor <= 1:
            _fail("optim.warmup_factor", f"must be in (0, 1], got {self.warmup_factor}")
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            _fail("optim.adam_betas", f"must be two values in [0, 1), got {list(self.adam_betas)}")


@dataclass(frozen=True)
class AugmentConfig:
    """How a training sample becomes a network input (docs/reference.md section 3), in
    ``training.data``."""

    input_size: int = 320  # network input side (multiple of 32)
    crop_sizes: tuple[int, ...] = (320, 480, 640)  # crop sides before resizing to input_size
    small_image_min_side: int = 500  # min side below input_size is first rescaled to this
    trimap_radius: tuple[int, ...] = (1, 19)  # on-the-fly unknown band radius range, inclusive
    flip_prob: float = 0.5  # horizontal flip probability

    def __post_init__(self) -> None:
        _at_least(self, "input_size", 32)
        _at_least(self, "small_image_min_side", 1)
        if self.input_size % 32:
            _fail("augment.input_size", f"must be a multiple of 32, got {self.input_size}")
        if not self.crop_sizes or any(c < 1 for c in self.crop_sizes):
            _fail("augment.crop_sizes", f"must be positive sides, got {list(self.crop_sizes)}")
        lo_hi = self.trimap_radius
        if len(lo_hi) != 2 or not 1 <= lo_hi[0] <= lo_hi[1]:
            _fail(
                "augment.trimap_radius",
                f"must be [min, max] with 1 <= min <= max, got {list(lo_hi)}",
            )
        if not 0.0 <= self.flip_prob <= 1.0:
            _fail("augment.flip_prob", f"must be in [0, 1], got {self.flip_prob}")


@dataclass(frozen=True)
class LoaderConfig:
    """How the training data is read (training.data): order, cache, retries, corrupt data."""

    shuffle_window: int = 16  # raw samples each canonical stream shuffles within (<= 1: none)
    decode_cache_mb: int = 512  # per loader process: decoded fg/alpha kept while needed (0: off)
    target_step_ms: float = 50.0  # the GPU step time --data-only sizes --loader-workers for
    read_retries: int = 4  # tries again after a remote shard fails in transit, then stops
    read_backoff_s: float = 1.0  # the first wait before a retry; doubled for each next one
    corrupt: Literal["stop", "skip"] = "stop"  # a corrupt shard or sample: stop, or skip+count

    def __post_init__(self) -> None:
        _at_least(self, "shuffle_window", 0)
        _at_least(self, "decode_cache_mb", 0)
        _at_least(self, "read_retries", 0)
        if self.read_backoff_s < 0:
            _fail("loader.read_backoff_s", f"must be >= 0, got {self.read_backoff_s}")
        if self.target_step_ms <= 0:
            _fail("loader.target_step_ms", f"must be > 0, got {self.target_step_ms}")


@dataclass(frozen=True)
class RuntimeConfig:
    """How the trainer runs and what it writes (not part of any recipe)."""

    bf16: bool = False  # bfloat16 autocast for the forward pass (the loss stays float32)
    channels_last: bool = False  # NHWC memory format (faster convolutions on GPUs)
    sync_bn: bool = False  # SyncBatchNorm across ranks (norms a family keeps frozen stay so)
    log_every: int = 10  # steps between train.jsonl records
    checkpoint_every: int = 500  # steps between checkpoints within an epoch (0: only per epoch)
    log_batches: bool = False  # rank 0 appends each global batch's keys, digests to batches.jsonl

    def __post_init__(self) -> None:
        _at_least(self, "log_every", 1)
        _at_least(self, "checkpoint_every", 0)


@dataclass(frozen=True)
class ValidationConfig:
    """Scoring the validation split during training (training.run.validate)."""

    enabled: bool = True  # score the validation split after epochs; keep best.pt by Grad
    every: int = 1  # epochs between validations (the last epoch is always validated)
    max_samples: int = 0  # validation samples scored per validation (0: all)

    def __post_init__(self) -> None:
        _at_least(self, "every", 1)
        _at_least(self, "max_samples", 0)


@dataclass(frozen=True)
class StorageConfig:
    """Reading shards from object storage (shards.store, shards.cache); never recorded whole."""

    options: dict[str, Any] = field(default_factory=dict, repr=False)  # the client's; unrecorded
    cache_dir: str | None = None  # local shard cache folder (null: no cache)
    cache_limit_gb: float = 0.0  # shards kept in the cache at most, GB (0: no limit)

    def __post_init__(self) -> None:
        if self.cache_limit_gb < 0:
            _fail(
                "storage.cache_limit_gb",
                f"must be >= 0 (0: no limit), got {self.cache_limit_gb}",
            )

    def override(
        self,
        options: Mapping[str, Any] | None = None,
        cache_dir: str | Path | None = None,
        cache_limit_gb: float | None = None,
    ) -> StorageConfig:
        """These settings under the command line's (``--storage-option``, parsed, over the
        configured options key by key; ``--cache-dir``; ``--cache-limit-gb``)."""
        return dataclasses.replace(
            self,
            options={**self.options, **(options or {})},
            cache_dir=str(cache_dir) if cache_dir is not None else self.cache_dir,
            cache_limit_gb=self.cache_limit_gb if cache_limit_gb is None else cache_limit_gb,
        )


@dataclass(frozen=True)
class Config:
    """All stages' settings; ``to_dict()`` is what outputs record as their resolved config."""

    data: DataConfig = field(default_factory=DataConfig)  # the shard build (pipeline build)
    model: ModelConfig = field(default_factory=ModelConfig)  # the network, per family
    train: TrainConfig = field(default_factory=TrainConfig)  # seed, batch, epochs
    optim: OptimConfig = field(default_factory=OptimConfig)  # optimiser and schedule
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # crops, trimaps, flips
    loader: LoaderConfig = field(default_factory=LoaderConfig)  # reading the training data
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)  # precision, logs, checkpoints
    validation: ValidationConfig = field(default_factory=ValidationConfig)  # scoring in training
    storage: StorageConfig = field(default_factory=StorageConfig)  # object storage, shard cache

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain, YAML/JSON-serialisable, nested dict of every resolved value, as outputs record
        it: ``storage.options`` (which may hold credentials) is recorded as ``{}``."""

        def plain(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return list(value) if isinstance(value, tuple) else value

        values = plain(dataclasses.asdict(self))
        values["storage"]["options"] = {}
        return values


# Not pydantic (issue 11, item 6): a pydantic 2.14 version (strict frozen pydantic dataclasses,
# Field(ge=...) bounds, after-validators for the rules) passed every test, but was not shorter
# (381 lines vs 359: keeping these messages takes ~50 lines translating its errors) and importing
# it slows every command's start-up: `indexnet --help` +162 ms wall, +131 ms CPU (median of 40
# paired runs on a 2-core VM), `import configs.schema` 18 -> 224 ms; load_config() ~5.6 ms both.


@functools.cache
def _subsections(cls: type) -> dict[str, type]:
    """The fields of ``cls`` that are sections (dataclasses) themselves."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(cls)
        if isinstance(hints[f.name], type) and dataclasses.is_dataclass(hints[f.name])
    }


def _section_paths(cls: type, prefix: str = "") -> Iterator[tuple[type, str]]:
    for name, sub in _subsections(cls).items():
        yield sub, prefix + name
        yield from _section_paths(sub, f"{prefix}{name}.")


_PATHS: dict[type, str] = {}  # each section's class -> its dotted path, e.g. "model.indexnet"


def _path(obj: Any) -> str:
    if not _PATHS:  # filled on first use: the classes are all defined by then
        _PATHS.update(_section_paths(Config))
    return _PATHS[type(obj)]


def _at_least(obj: Any, name: str, low: int) -> None:
    if getattr(obj, name) < low:
        _fail(f"{_path(obj)}.{name}", f"must be >= {low}, got {getattr(obj, name)}")


def _between(obj: Any, name: str, low: int, high: int) -> None:
    value = getattr(obj, name)
    if not low <= value <= high:
        _fail(f"{_path(obj)}.{name}", f"must be in {low}..{high}, got {value}")


def all_keys(cls: type | None = None, prefix: str = "") -> dict[str, dataclasses.Field]:
    """Every key of the schema (of ``cls``, default ``Config``), dotted, in order: its field."""
    cls = cls or Config
    found: dict[str, dataclasses.Field] = {}
    subsections = _subsections(cls)
    for f in dataclasses.fields(cls):
        if f.name in subsections:
            found.update(all_keys(subsections[f.name], f"{prefix}{f.name}."))
        else:
            found[prefix + f.name] = f
    return found


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
    if origin is dict or annotation is dict:
        if isinstance(value, Mapping):
            return dict(value)
        _fail(where, f"expected a mapping of key: value, got {value!r}")
    if origin is typing.Union or origin is types.UnionType:  # X | None
        if value is None:
            return None
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _coerce(where, value, inner[0])
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


# Keys of older versions, OLD -> NEW (issue 24: sections by concern and per model family). A
# user's file or --set naming an old key loads, mapped, with one RenamedKeyWarning (a
# FutureWarning) per key naming the new one. A config recorded by an older version (a shard
# set's index.json, a version-1/2 checkpoint) is mapped silently: its reader cannot edit it, and
# a warning at every load of a checkpoint or shard set would say nothing they can act on.
RENAMED = {
    "train.optimizer": "optim.optimizer",
    "train.learning_rate": "optim.learning_rate",
    "train.backbone_lr_mult": "optim.backbone_lr_mult",
    "train.adam_betas": "optim.adam_betas",
    "train.adam_eps": "optim.adam_eps",
    "train.weight_decay": "optim.weight_decay",
    "train.lr_decay": "optim.lr_decay",
    "train.milestones": "optim.milestones",
    "train.lr_factors": "optim.lr_factors",
    "train.warmup_iters": "optim.warmup_iters",
    "train.warmup_factor": "optim.warmup_factor",
    "train.input_size": "augment.input_size",
    "train.crop_sizes": "augment.crop_sizes",
    "train.small_image_min_side": "augment.small_image_min_side",
    "train.trimap_radius": "augment.trimap_radius",
    "train.flip_prob": "augment.flip_prob",
    "train.shuffle_window": "loader.shuffle_window",
    "train.decode_cache_mb": "loader.decode_cache_mb",
    "train.target_step_ms": "loader.target_step_ms",
    "train.read_retries": "loader.read_retries",
    "train.read_backoff_s": "loader.read_backoff_s",
    "train.corrupt": "loader.corrupt",
    "train.bf16": "runtime.bf16",
    "train.channels_last": "runtime.channels_last",
    "train.sync_bn": "runtime.sync_bn",
    "train.log_every": "runtime.log_every",
    "train.checkpoint_every": "runtime.checkpoint_every",
    "train.log_batches": "runtime.log_batches",
    "train.validate": "validation.enabled",
    "train.validate_every": "validation.every",
    "train.val_max_samples": "validation.max_samples",
    "train.freeze_encoder_bn": "model.indexnet.freeze_encoder_bn",
    "loss.alpha_weight": "model.indexnet.loss.alpha_weight",
    "loss.comp_weight": "model.indexnet.loss.comp_weight",
    "loss.eps": "model.indexnet.loss.eps",
    "model.size": "model.vitmatte.size",
    "model.index_block": "model.indexnet.index_block",
    "model.nonlinear": "model.indexnet.nonlinear",
    "model.context": "model.indexnet.context",
    "model.aspp": "model.indexnet.aspp",
    "model.output_stride": "model.indexnet.output_stride",
    "model.decoder_kernel_size": "model.indexnet.decoder_kernel_size",
    "model.decoder_conv": "model.indexnet.decoder_conv",
}

# keys that existed once and have no new place: a user's file or --set naming one is told what
# replaced it; a config recorded by an older version (in a shard set's index, a checkpoint)
# loads without them
RETIRED = {
    "train.shuffle_buffer": "replaced by loader.shuffle_window, a shuffle window per canonical "
    "stream (docs/data-order.md)",
}


def _flatten(values: Any, origin: str | None, renamed: list[str] | None) -> dict[str, Any]:
    """One source's nested values as ``{dotted new key: value}``, checked against the schema.

    Old names (``RENAMED``) are mapped, each noted in ``renamed`` as ``<origin>: <old> is now
    <new>``; a ``RETIRED`` key is refused. ``renamed=None`` reads a recorded config: old names
    mapped silently, retired ones dropped.

    Raises:
        ConfigError: an unknown section or key (with the keys allowed at its level), a section
            that is not a mapping, or a key given twice (by its old and its new name).
    """
    where = "" if origin is None else f"{origin}: "
    flat: dict[str, Any] = {}
    given: dict[str, str] = {}  # new key -> the name this source gave it as

    def put(key: str, value: Any, name: str) -> None:
        if key in given:
            _fail(f"{where}{name}", f"sets {key}, which {given[key]} sets too; keep one")
        flat[key], given[key] = value, name

    def visit(cls: type | None, prefix: str, body: Any) -> None:
        if not isinstance(body, Mapping):
            _fail(f"{where}{prefix[:-1]}", "expected a mapping of key: value")
        subsections = _subsections(cls) if cls is not None else {}
        allowed = [f.name for f in dataclasses.fields(cls)] if cls is not None else []
        for key, value in body.items():
            name = f"{prefix}{key}"
            if name in RETIRED:
                if renamed is not None:
                    _fail(f"{where}{name}", RETIRED[name])
            elif name in RENAMED:
                if renamed is not None:
                    renamed.append(f"{where}{name} is now {RENAMED[name]}")
                put(RENAMED[name], value, name)
            elif key in subsections:
                visit(subsections[key], f"{name}.", value)
            elif key in allowed:
                put(name, value, name)
            elif cls is not None and any(old.startswith(f"{name}.") for old in RENAMED):
                visit(None, f"{name}.", value)  # a section of old names only (loss)
            elif not prefix:
                _fail(f"{where}{name}", f"unknown section; allowed: {', '.join(allowed)}")
            else:
                if cls is None:  # in a section of old names only: list those
                    allowed = [old[len(prefix) :] for old in RENAMED if old.startswith(prefix)]
                _fail(f"{where}{name}", f"unknown key; allowed: {', '.join(allowed)}")

    visit(Config, "", values)
    return flat


def _build(cls: type, prefix: str, flat: Mapping[str, Any]) -> Any:
    """``cls`` from the dotted keys under ``prefix`` in ``flat`` (the others: defaults)."""
    hints = typing.get_type_hints(cls)
    subsections = _subsections(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        if f.name in subsections:
            kwargs[f.name] = _build(subsections[f.name], f"{key}.", flat)
        elif key in flat:
            kwargs[f.name] = _coerce(key, flat[key], hints[f.name])
    return cls(**kwargs)


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested dict's leaves by dotted key, e.g. ``{"model.indexnet.aspp": True, ...}``; an
    empty mapping is a leaf (``storage.options: {}``)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def upgrade(values: Mapping[str, Any]) -> dict[str, Any]:
    """A recorded config dict (any version's ``to_dict()``) in the current shape: old names moved
    to their new place (``RENAMED``), retired ones dropped, silently; nothing else checked (an
    unknown key stays where it is). For reading what a checkpoint recorded."""
    nested: dict[str, Any] = {}
    for key, value in flatten(values).items():
        if key in RETIRED:
            continue
        *sections, name = RENAMED.get(key, key).split(".")
        body = nested
        for section in sections:
            body = body.setdefault(section, {})
        body[name] = value
    return nested


def _parse_override(text: str) -> dict[str, Any]:
    """``a.b.c=value`` as ``{"a": {"b": {"c": value}}}``, the value parsed as YAML."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) < 2 or not all(parts):
        raise ConfigError(
            f"--set {text!r}: expected section.key=value, e.g. train.epochs=5 or "
            "model.indexnet.output_stride=16"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: value is not valid YAML: {exc}") from exc
    for part in reversed(parts):
        value = {part: value}
    return value


def _resolve_ids(value: Any, base_dir: Path) -> Any:
    """``data.validation_ids`` may name a file of ids (one per line, # comments)."""
    if not isinstance(value, str):
        return value
    path = Path(value) if Path(value).is_absolute() else base_dir / value
    if not path.is_file():
        raise ConfigError(f"data.validation_ids: file {path} does not exist")
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def config_from_dict(values: Mapping[str, Any]) -> Config:
    """Rebuild a ``Config`` from ``Config.to_dict()`` output (e.g. recorded in an index), of this
    version or an older one: old names are mapped silently (``RENAMED``), retired ones dropped.

    Raises:
        ConfigError: an unknown section or key, or a bad value, named.
    """
    return _build(Config, "", _flatten(values, None, None))


def load_config(
    path: str | Path | None = None, overrides: Sequence[str] = (), *, base: Path = DEFAULT_CONFIG
) -> Config:
    """Load the defaults, merge ``path`` over them, apply ``section.key=value`` overrides.

    Args:
        path: optional user YAML file with any subset of the sections and keys.
        overrides: strings like ``"train.epochs=5"`` or ``"model.indexnet.loss.eps=1e-5"``;
            values are parsed as YAML.
        base: the defaults file (the packaged ``configs/default.yaml``).

    Returns:
        The validated, frozen ``Config``.

    Raises:
        ConfigError: an unreadable file, unknown section or key, or a bad value, named.

    Warns:
        RenamedKeyWarning: (a ``FutureWarning``) once per old key name in the file or an
            override, naming where it was and its new name.
    """
    renamed: list[str] = []
    merged = _flatten(_read_yaml(base), str(base), renamed)
    ids_dir = base.parent
    if path is not None:
        user = _flatten(_read_yaml(Path(path)), str(path), renamed)
        merged.update(user)
        if "data.validation_ids" in user:
            ids_dir = Path(path).parent
    for text in overrides:
        override = _flatten(_parse_override(text), "--set", renamed)
        merged.update(override)
        if "data.validation_ids" in override:
            ids_dir = Path.cwd()
    for message in renamed:  # after every source has been read: none of them was refused
        warnings.warn(message, RenamedKeyWarning, stacklevel=2)
    if "data.validation_ids" in merged:
        merged["data.validation_ids"] = _resolve_ids(merged["data.validation_ids"], ids_dir)
    return _build(Config, "", merged)
