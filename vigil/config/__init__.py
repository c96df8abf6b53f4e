"""Vigil's configuration: one frozen, typed tree loaded from YAML, validated with FILE:LINE errors.

model (the dataclasses, allowed values, ConfigError) <- load (the embedded default or a user's
file, every check, ``vigil config check``). Errors read "FILE:LINE: what is wrong".
"""

from vigil.config.load import check_config_main, load_config
from vigil.config.model import (
    CHECKS,
    EMBEDDED_NAME,
    HASHES,
    LEVELS,
    MOUNTS,
    OUTPUTS,
    Config,
    ConfigError,
    DiffConfig,
    DirectoryConfig,
    Pattern,
    RulesConfig,
    ScanConfig,
)

__all__ = ["CHECKS", "EMBEDDED_NAME", "HASHES", "LEVELS", "MOUNTS", "OUTPUTS", "Config",
           "ConfigError", "DiffConfig", "DirectoryConfig", "Pattern", "RulesConfig",
           "ScanConfig", "check_config_main", "load_config"]
