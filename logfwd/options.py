"""Declarative plugin options and their value types.

A plugin declares each option once (name, type, default, help). The same
declaration validates a config section, converts its string values to Python
values, and prints ``logfwd --help-plugin NAME``. Types follow Fluent Bit:
sizes take ``k/K/M/G`` suffixes (``5M``), durations take ``ms/s/m/h/d``
(``5s``), booleans accept ``on/off/true/false/yes/no/1/0``.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .regex import compile_fluent_regex

__all__ = [
    "Option",
    "OptionError",
    "ConfigValueError",
    "parse_bool",
    "parse_size",
    "parse_duration",
    "parse_retry_limit",
    "closest",
    "TYPES",
    "PORT",
    "field_name",
    "settings_class",
    "make_settings",
]


class OptionError(ValueError):
    """A value that does not fit its option's type; the message says what would."""


class ConfigValueError(Exception):
    """A plugin (or a parser definition) rejects a configured value in ``setup()``.

    The config layer turns it into an error naming file, line, section and key.
    It lives here, beside the option types, because everything that reads options
    raises it (plugins, parsers, multiline parsers) and none of them may depend on
    the others for it.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


_TRUE = {"on", "true", "yes", "1"}
_FALSE = {"off", "false", "no", "0"}


def parse_bool(value: str | bool) -> bool:
    """Fluent Bit's boolean: on/off, true/false, yes/no, 1/0 (any case)."""
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise OptionError(f"expected on/off (or true/false), got {value!r}")


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:[bB]|i[bB])?\s*$")
_SIZE_MULT = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(value: str | int) -> int:
    """Bytes from Fluent Bit size notation: ``512``, ``32k``, ``5M``, ``1G`` (binary units)."""
    if isinstance(value, int):
        return value
    m = _SIZE_RE.match(str(value))
    if not m:
        raise OptionError(f"expected a size such as 512, 32K, 5M or 1G, got {value!r}")
    return int(float(m.group(1)) * _SIZE_MULT[m.group(2).lower()])


_DUR_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_DUR_MULT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: str | float | int) -> float:
    """Seconds from Fluent Bit time notation: ``5``, ``5s``, ``500ms``, ``1m``, ``2h``, ``1d``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    m = _DUR_RE.match(str(value))
    if not m:
        raise OptionError(f"expected a duration such as 5, 5s, 500ms, 1m or 1h, got {value!r}")
    unit = m.group(2).lower() if m.group(2) else None
    return float(m.group(1)) * _DUR_MULT[unit]


def _parse_int(value: str | int) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(str(value).strip(), 0)
    except ValueError:
        raise OptionError(f"expected an integer, got {value!r}") from None


def _parse_float(value: str | float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise OptionError(f"expected a number, got {value!r}") from None


def _parse_list(value: str | list[str]) -> list[str]:
    """Comma- or space-separated list (Fluent Bit accepts both for most list keys)."""
    if isinstance(value, list):
        return [str(v) for v in value]
    return [p for p in re.split(r"[,\s]+", str(value).strip()) if p]


def _parse_csv(value: str | list[str]) -> list[str]:
    """Comma-separated list whose items may contain spaces (paths, brokers)."""
    if isinstance(value, list):
        return [str(v) for v in value]
    return [p.strip() for p in str(value).split(",") if p.strip()]


def _parse_regex(value: str) -> re.Pattern[str]:
    """Fluent Bit's regex (Onigmo syntax, ``/pattern/flags`` accepted), as every config regex is."""
    try:
        return compile_fluent_regex(str(value))
    except re.error as e:
        raise OptionError(f"invalid regular expression {value!r}: {e}") from None


def _parse_str(value: Any) -> str:
    return str(value)


def parse_retry_limit(value: str | int | None) -> int | None:
    """Fluent Bit's ``Retry_Limit``: a number, ``no_limits``/``false`` (None = unlimited), ``no_retries`` (0)."""
    if value is None:
        return 1
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise OptionError(f"must not be negative, got {value!r}")
        return value
    v = str(value).strip().lower()
    if v in ("no_limits", "false", "off", "unlimited"):
        return None
    if v == "no_retries":
        return 0
    try:
        n = int(v)
    except ValueError:
        raise OptionError(f"expected a number, no_limits or no_retries, got {value!r}") from None
    if n < 0:
        raise OptionError(f"must not be negative, got {value!r}")
    return n


TYPES: dict[str, Callable[[Any], Any]] = {
    "str": _parse_str,
    "int": _parse_int,
    "float": _parse_float,
    "bool": parse_bool,
    "size": parse_size,
    "time": parse_duration,
    "list": _parse_list,
    "csv": _parse_csv,
    "regex": _parse_regex,
    "retry_limit": parse_retry_limit,
}


@dataclass(frozen=True)
class Option:
    """One configuration key of a plugin.

    ``multi`` keys may repeat (``Regex``, ``Systemd_Filter``, ``Record``): their
    value is the list of every occurrence in order. ``prefix`` keys match any key
    that starts with the name (``rdkafka.`` passes librdkafka properties through);
    their value is a dict of suffix to string. ``choices`` restricts the value
    (compared case-insensitively, returned lower-cased).
    """

    name: str
    type: str = "str"
    default: Any = None
    help: str = ""
    multi: bool = False
    prefix: bool = False
    choices: tuple[str, ...] | None = None
    required: bool = False
    aliases: tuple[str, ...] = field(default=())
    minimum: float | None = None
    maximum: float | None = None
    # Set for a Fluent Bit option that loads (so a Fluent Bit config moves over unchanged) but
    # has no effect here: the reason, shown in --help-plugin and in a warning when it is used.
    unsupported: str | None = None
    # The settings attribute, where the one derived from the name would collide with another
    # option's (tail's ``Parser_`` prefix, for ``Parser_1``..``Parser_N``, beside ``Parser``).
    attr: str | None = None

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"option {self.name}: unknown type {self.type!r}")

    @property
    def key(self) -> str:
        """Normalised (lower-case) key used in parsed option dicts."""
        return self.name.lower()

    def convert(self, raw: Any) -> Any:
        """Convert one raw (string) value; raises OptionError with a helpful message."""
        if self.choices is not None:
            v = str(raw).strip().lower()
            allowed = [c.lower() for c in self.choices]
            if v not in allowed:
                hint = closest(v, allowed)
                extra = f" (did you mean {hint!r}?)" if hint else ""
                raise OptionError(f"expected one of {', '.join(self.choices)}, got {raw!r}{extra}")
            return v
        value = TYPES[self.type](raw)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if self.minimum is not None and value < self.minimum:
                raise OptionError(f"must be at least {self.minimum:g}, got {raw!r}")
            if self.maximum is not None and value > self.maximum:
                raise OptionError(f"must be at most {self.maximum:g}, got {raw!r}")
        return value

    def default_value(self) -> Any:
        """The default, converted like a configured value (so ``"5M"`` becomes bytes)."""
        if self.multi:
            if self.default is None:
                return []
            return [self.convert(v) for v in self.default]
        if self.prefix:
            return {}
        if self.default is None:
            return None
        return self.convert(self.default)

    def type_label(self) -> str:
        if self.choices:
            return "|".join(self.choices)
        return self.type + (" (repeatable)" if self.multi else "") + (" (prefix)" if self.prefix else "")


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The closest valid name, for 'did you mean' suggestions in config errors."""
    cands = list(candidates)
    lowered = {c.lower(): c for c in cands}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[hits[0]] if hits else None


# The range every port option takes (Fluent Bit silently wraps 70000 to 4464; we refuse it).
PORT = {"minimum": 0, "maximum": 65535}


def field_name(key: str) -> str:
    """The settings attribute of an option key: ``DB.sync`` → ``db_sync``, ``K8S-Logging.Parser`` → ``k8s_logging_parser``."""
    name = re.sub(r"[^a-z0-9_]", "_", key.lower()).strip("_")
    return name if name and not name[0].isdigit() else "_" + name


_settings_cache: dict[tuple[Option, ...], type] = {}


def settings_class(options: tuple[Option, ...], name: str = "Settings") -> type:
    """A frozen dataclass with one typed field per option, generated from the declarations.

    A plugin's ``setup`` reads ``self.settings.buffer_max_size`` (an int, already converted
    and range-checked) instead of ``self.config["buffer_max_size"]``: a typo is an
    AttributeError at the first test, not a silent ``None``.
    """
    cls = _settings_cache.get(options)
    if cls is None:
        fields = []
        seen: dict[str, str] = {}
        for o in options:
            f = o.attr or field_name(o.key)
            if f in seen:
                raise ValueError(f"options {seen[f]!r} and {o.name!r} map to the same settings field {f!r}")
            seen[f] = o.name
            fields.append((f, _PY_TYPES.get("multi" if o.multi else "prefix" if o.prefix else o.type, Any),
                           field(default=None)))
        cls = dataclasses.make_dataclass(name, fields, frozen=True, slots=True)
        cls.keys = dict(seen)  # type: ignore[attr-defined]  # field -> option name, for messages
        _settings_cache[options] = cls
    return cls


def make_settings(options: tuple[Option, ...], values: dict[str, Any], name: str = "Settings") -> Any:
    """An instance of ``settings_class(options)`` filled from converted ``values`` (keys lower-case)."""
    cls = settings_class(options, name)
    return cls(**{o.attr or field_name(o.key): values.get(o.key) for o in options})


_PY_TYPES: dict[str, Any] = {
    "str": "str | None",
    "int": "int | None",
    "float": "float | None",
    "bool": "bool | None",
    "size": "int | None",
    "time": "float | None",
    "list": "list[str] | None",
    "csv": "list[str] | None",
    "regex": "re.Pattern[str] | None",
    "retry_limit": "int | None",
    "multi": "list[Any]",
    "prefix": "dict[str, str]",
}
