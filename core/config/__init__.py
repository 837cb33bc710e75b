"""Loupe's settings: one frozen dataclass tree (:mod:`core.config.tree`), loaded from ``config.yaml`` and
overridden by CLI flags (:mod:`core.config.loading`). Both are importable from here."""

from core.config.loading import (
    config_from_mapping,
    config_to_mapping,
    dump_config,
    load_config,
    read_config_mapping,
    with_overrides,
)
from core.config.tree import (
    DEFAULT_CONFIG_FILE,
    KEEPER_RULE_NAMES,
    RESOLVED_CONFIG_FILE,
    VARIANT_NAMES,
    CalibrationConfig,
    DecodeConfig,
    IndexConfig,
    LoupeConfig,
    ModelConfig,
    PatchConfig,
    RobustConfig,
    RuntimeConfig,
    ScanConfig,
    SearchConfig,
    UIConfig,
)

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "KEEPER_RULE_NAMES",
    "RESOLVED_CONFIG_FILE",
    "VARIANT_NAMES",
    "CalibrationConfig",
    "DecodeConfig",
    "IndexConfig",
    "LoupeConfig",
    "ModelConfig",
    "PatchConfig",
    "RobustConfig",
    "RuntimeConfig",
    "ScanConfig",
    "SearchConfig",
    "UIConfig",
    "config_from_mapping",
    "config_to_mapping",
    "dump_config",
    "load_config",
    "read_config_mapping",
    "with_overrides",
]
