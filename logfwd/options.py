"""Declarative plugin options and their value types.

A plugin declares each option once (name, type, default, help). The same
declaration validates a config section, converts its string values to Python
values, and prints ``logfwd --help-plugin NAME``. Types follow Fluent Bit:
sizes take ``k/K/M/G`` suffixes (``5M``), durations take ``ms/s/m/h/d``
(``5s``), booleans accept ``on/off/true/false/yes/no/1/0``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Option",
    "OptionError",
    "parse_bool",
    "parse_size",
    "parse_duration",
    "closest",
    "TYPES",
]


class OptionError(ValueError):
    """A value that does not fit its option's type; the message says what would."""


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
    try:
        return re.compile(str(value))
    except re.error as e:
        raise OptionError(f"invalid regular expression {value!r}: {e}") from None


def _parse_str(value: Any) -> str:
    return str(value)


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
        if self.minimum is not None and isinstance(value, (int, float)) and value < self.minimum:
            raise OptionError(f"must be at least {self.minimum:g}, got {raw!r}")
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
