"""fabricd's configuration: one YAML file, validated in full before anything is applied."""

from pathlib import Path

from fabricd.config.errors import ConfigError, ConfigProblem
from fabricd.config.loader import load_config, load_config_text
from fabricd.config.model import FabricConfig

DEFAULT_CONFIG_PATH = Path("/etc/fabricd/fabricd.yaml")

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ConfigError",
    "ConfigProblem",
    "FabricConfig",
    "load_config",
    "load_config_text",
]
