"""Config test helpers: small plugins registered as third-party ones, and file writers.

The ``cfgtest`` plugins exercise option kinds no single built-in plugin has all of
(prefix, repeatable, aliases, required, parser references); ``cfg_plugins``
registers them the way third-party plugins are, through the registry's
entry-point table. Import the fixture into a test module to use it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

import logfwd.plugin as plugin_mod
from logfwd.config import ConfigError, load_config
from logfwd.options import Option
from logfwd.plugin import ConfigValueError, Filter, Input, Output

__all__ = ["CfgIn", "CfgFilter", "CfgOut", "cfg_plugins", "write", "errors_of"]

class CfgIn(Input):
    name = "cfgtest"
    description = "config test input"
    options = (
        Option("Path", "str", None, "a path"),
        Option("Buffer_Size", "size", "32k", "bytes", aliases=("Buf_Size",)),
        Option("Parser", "str", None, "parser name"),
        Option("multiline.parser", "csv", None, "multiline parser names"),
        Option("Refresh_Interval", "time", "60", "seconds"),
        Option("Skip_Long_Lines", "bool", "off", "skip"),
        Option("Exclude_Path", "csv", None, "globs"),
    )

    def setup(self) -> None:
        if self.config["path"] == "/forbidden":
            raise ConfigValueError("path", "this path is forbidden")

    async def run(self, emitter: Any) -> None:  # pragma: no cover - never run by config tests
        return None


class CfgFilter(Filter):
    name = "cfgtest"
    description = "config test filter"
    options = (
        Option("Regex", "str", None, "KEY REGEX", multi=True),
        Option("Exclude", "str", None, "KEY REGEX", multi=True),
        Option("Add", "str", None, "KEY VALUE", multi=True),
        Option("Parser", "str", None, "parser names", multi=True),
    )

    def filter(self, batch: Any) -> Any:  # pragma: no cover
        return batch


class CfgOut(Output):
    name = "cfgtest"
    description = "config test output"
    options = (
        Option("Host", "str", "127.0.0.1", "server"),
        Option("Port", "int", "9200", "port", minimum=1),
        Option("Index", "str", None, "index", required=True),
        Option("rdkafka.", "str", None, "librdkafka properties", prefix=True),
        Option("Brokers", "csv", None, "brokers"),
    )


@pytest.fixture
def cfg_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register the cfgtest plugins as third-party plugins would be."""
    monkeypatch.setattr(
        plugin_mod,
        "_entry_point_cache",
        {("input", "cfgtest"): CfgIn, ("filter", "cfgtest"): CfgFilter, ("output", "cfgtest"): CfgOut},
    )


def write(base: Path, name: str, text: str) -> Path:
    p = base / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(text).lstrip("\n"))
    return p


def errors_of(path: Path | str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as ei:
        load_config(path, env=env or {})
    return ei.value
