"""Typed, frozen, validated configuration loaded from ``configs/default.yaml``.

Public API: ``Config``, ``DataConfig``, ``TrainConfig``, ``LossConfig``, ``ModelConfig``,
``ConfigError``, ``load_config``, ``config_from_dict``, ``DEFAULT_CONFIG``.

One frozen dataclass per stage. ``load_config`` starts from the packaged defaults, merges a user
YAML file over them, applies ``section.key=value`` overrides, and validates once: an unknown key
or a bad value raises ``ConfigError`` (a ``ValueError``) naming it and what is allowed.
"""

from __future__ import annotations

from configs.schema import (
    DEFAULT_CONFIG,
    Config,
    ConfigError,
    DataConfig,
    LossConfig,
    ModelConfig,
    TrainConfig,
    config_from_dict,
    load_config,
)

__all__ = [
    "DEFAULT_CONFIG",
    "Config",
    "ConfigError",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "TrainConfig",
    "config_from_dict",
    "load_config",
]
