"""Typed, frozen, validated configuration loaded from ``configs/default.yaml``.

Public API: ``Config`` and its sections (``DataConfig``, ``ModelConfig`` with ``IndexNetConfig``,
its ``LossConfig``, and ``VitMatteConfig``; ``TrainConfig``, ``OptimConfig``, ``AugmentConfig``,
``LoaderConfig``, ``RuntimeConfig``, ``ValidationConfig``), ``ConfigError``,
``RenamedKeyWarning``, ``load_config``, ``config_from_dict``, ``DEFAULT_CONFIG``, and
``RENAMED`` (old key -> new key).

One frozen dataclass per section, nested where a section has sections (``model.indexnet``).
``load_config`` starts from the packaged defaults, merges a user YAML file over them, applies
``section.key=value`` overrides (dotted to any depth), and validates once: an unknown key or a
bad value raises ``ConfigError`` (a ``ValueError``) naming it and what is allowed. docs/
configuration.md lists every key.
"""

from __future__ import annotations

from configs.schema import (
    DEFAULT_CONFIG,
    RENAMED,
    AugmentConfig,
    Config,
    ConfigError,
    DataConfig,
    IndexNetConfig,
    LoaderConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RenamedKeyWarning,
    RuntimeConfig,
    TrainConfig,
    ValidationConfig,
    VitMatteConfig,
    config_from_dict,
    load_config,
)

__all__ = [
    "DEFAULT_CONFIG",
    "RENAMED",
    "AugmentConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "IndexNetConfig",
    "LoaderConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RenamedKeyWarning",
    "RuntimeConfig",
    "TrainConfig",
    "ValidationConfig",
    "VitMatteConfig",
    "config_from_dict",
    "load_config",
]
