"""Configuration: Fluent Bit classic and YAML formats, one model, validation.

``load_config(path)`` reads a ``.conf`` (classic) or ``.yaml`` file with its
includes and parsers files; ``config_from_cli(...)`` builds the same thing from
``-i/-F/-o`` one-liners. Both return a ``Config`` or raise ``ConfigError``
listing every issue with its file, line, section and key.
"""

from .loader import SHIPPED_PARSERS, apply_service_overrides, config_from_cli, default_parsers, load_config
from .model import CLI_FILE, Config, ConfigError, ConfigIssue, PluginSection
from .service import SERVICE_OPTIONS

__all__ = [
    "load_config",
    "config_from_cli",
    "default_parsers",
    "apply_service_overrides",
    "Config",
    "PluginSection",
    "ConfigError",
    "ConfigIssue",
    "SERVICE_OPTIONS",
    "SHIPPED_PARSERS",
    "CLI_FILE",
]
