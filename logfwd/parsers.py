"""Parsers: Fluent Bit's [PARSER] definitions, applied a batch of lines at a time.

A ``Parser`` turns lines (bytes from the tail input) or field values (str, for
the ``parser`` filter) into records and timestamps with Fluent Bit's semantics:
formats ``json``, ``regex`` (Onigmo named groups, ``search`` semantics, ``^``/``$``
as line anchors like Ruby), ``logfmt``, ``ltsv``/``tskv``; options ``Time_Key``,
``Time_Format`` (strptime with ``%L`` fractions and ``%z``), ``Time_Keep``,
``Time_Offset``, ``Time_System_Timezone``, ``Time_Zone``, ``Time_Strict``, ``Types``,
``Decode_Field``/``Decode_Field_As`` and ``Skip_Empty_Values``.

Speed: the work per batch is a few calls into ``_fastparse`` (one ``finditer``
over the joined lines for a regex, one C loop for time parsing). A ``regex``
parser whose expression is exactly Fluent Bit's shipped ``syslog-rfc3164``,
``syslog-rfc3164-local``, ``syslog-rfc5424`` or ``cri`` one runs a native kernel
that yields the same fields (tests check it against the expression); any other
expression, even under one of those names, runs as written. The formats
``syslog-rfc3164``, ``syslog-rfc3164-local``, ``syslog-rfc5424``, ``cri`` and
``docker`` (= ``json``) name those kernels directly.

Where we differ from Fluent Bit, on purpose, so that no data is lost:

- a line that does not parse is kept as ``{"log": text}`` and counted;
- a time value that does not fit ``Time_Format`` leaves the record's time at
  "now" and the field in the record (Fluent Bit drops the field, or the whole
  logfmt/ltsv record);
- invalid UTF-8 becomes U+FFFD (``errors="replace"``): every record stays
  serializable as JSON by every output;
- the ``escaped``/``escaped_utf8`` decoders on a ``json`` parser do nothing,
  because the JSON decoder has already decoded the escapes (Fluent Bit's
  shipped docker parser lists them for old versions that did not).
"""

from __future__ import annotations

import logging
import re
import time
import zoneinfo
from collections.abc import Callable
from datetime import datetime, timedelta
from re import _constants as _sre_constants  # type: ignore[attr-defined]
from re import _parser as _sre_parse  # type: ignore[attr-defined]
from typing import Any

import orjson

from . import _fastparse as fp
from ._pcre import Pcre2Error, Pcre2Parser
from .multiline import MultilineParser, builtin_multiline
from .onigmo import to_pcre2
from .options import ConfigValueError, Option, OptionError, parse_bool
from .regex import compile_onigmo, split_flags

__all__ = [
    "PARSER_OPTIONS",
    "FORMATS",
    "Parser",
    "ParserRegistry",
]


FORMATS = ("json", "regex", "logfmt", "ltsv", "tskv", "syslog-rfc3164", "syslog-rfc3164-local",
           "syslog-rfc5424", "cri", "docker")

PARSER_OPTIONS: tuple[Option, ...] = (
    Option("Name", "str", None, "name the inputs and the parser filter refer to", required=True),
    Option("Format", "str", None, "json, regex, logfmt, ltsv, tskv, or a native kernel: syslog-rfc3164, "
           "syslog-rfc3164-local, syslog-rfc5424, cri, docker", choices=FORMATS, required=True),
    Option("Regex", "str", None, "Ruby/Onigmo regular expression with named groups (Format regex)"),
    Option("Time_Key", "str", "time", "field holding the record's time"),
    Option("Time_Format", "str", None, "strptime format of the time field; %L reads fractional seconds"),
    Option("Time_Keep", "bool", "off", "keep the time field in the record after parsing it"),
    Option("Time_Offset", "str", None, "fixed UTC offset (+0200, -0600) of times without a zone"),
    Option("Time_System_Timezone", "bool", "off", "times without a zone are in the system zone (TZ)"),
    Option("Time_Zone", "str", None, "IANA zone (America/New_York) of times whose format has no %z; "
           "daylight saving aware; not with Time_Offset or Time_System_Timezone"),
    Option("Time_Strict", "bool", "on", "off: accept a time that ends before its format does"),
    Option("Types", "str", None, "field types: 'key:integer key:float key:bool key:hex key:string'"),
    Option("Decode_Field", "str", None, "decoder field [try_next|do_next]: decode and add the keys",
           multi=True),
    Option("Decode_Field_As", "str", None, "decoder field [try_next|do_next]: decode in place", multi=True),
    Option("Skip_Empty_Values", "bool", "on", "leave out fields whose captured value is empty"),
    Option("Logfmt_No_Bare_Keys", "bool", "off", "logfmt: a key without a value fails the line"),
)

_TYPES = ("string", "integer", "float", "bool", "hex")
_DECODERS = ("json", "escaped", "escaped_utf8", "mysql_quoted")
_ACTIONS = ("try_next", "do_next")

# Fluent Bit's shipped expressions that have a native kernel (compared after
# stripping Ruby's /.../ delimiters and surrounding blanks).
_RFC3164 = (r"^\<(?<pri>[0-9]+)\>(?<time>[^ ]* {1,2}[^ ]* [^ ]*) (?<host>[^ ]*) (?<ident>[a-zA-Z0-9_\/\.\-]*)"
            r"(?:\[(?<pid>[0-9]+)\])?(?:[^\:]*\:)? *(?<message>.*)$")
_RFC3164_LOCAL = (r"^\<(?<pri>[0-9]+)\>(?<time>[^ ]* {1,2}[^ ]* [^ ]*) (?<ident>[a-zA-Z0-9_\/\.\-]*)"
                  r"(?:\[(?<pid>[0-9]+)\])?(?:[^\:]*\:)? *(?<message>.*)$")
_RFC5424 = (r"^\<(?<pri>[0-9]{1,5})\>1 (?<time>[^ ]+) (?<host>[^ ]+) (?<ident>[^ ]+) (?<pid>[-0-9]+) "
            r"(?<msgid>[^ ]+) (?<extradata>(\[(.*)\]|-)) (?<message>.+)$")
_CRI = r"^(?<time>[^ ]+) (?<stream>stdout|stderr) (?<logtag>[^ ]*) (?<message>.*)$"

NATIVE_REGEXES: dict[str, str] = {
    "syslog-rfc3164": _RFC3164,
    "syslog-rfc3164-local": _RFC3164_LOCAL,
    "syslog-rfc5424": _RFC5424,
    "cri": _CRI,
}

# Constructs whose result depends on text outside the line: such expressions are
# matched line by line instead of by one scan over the joined batch.
_CONTEXT_SENSITIVE = re.compile(r"\(\?<?[=!]|\\[AZzG]")


def _anchored(pattern: re.Pattern[str]) -> bool:
    """True for ``^…$`` at top level (no top-level alternation): one match is one whole line."""
    c = _sre_constants
    try:
        data = _sre_parse.parse(pattern.pattern, pattern.flags).data
        return bool(data) and data[0] == (c.AT, c.AT_BEGINNING) and data[-1] == (c.AT, c.AT_END)
    except Exception:  # a private module changed: just take the general scan
        return False


def _parse_offset(value: str) -> int:
    m = re.fullmatch(r"\s*([+-])(\d{2}):?(\d{2})\s*", value)
    if not m:
        raise ConfigValueError("time_offset", f"expected an offset such as +0200 or -06:00, got {value!r}")
    secs = int(m.group(2)) * 3600 + int(m.group(3)) * 60
    return -secs if m.group(1) == "-" else secs


# Fluent Bit treats a format as carrying its own zone when it contains one of
# these (flb_parser.c: %z, %Z, %SZ, %S.%LZ); Time_Zone then does not apply.
_FORMAT_ZONE_MARKERS = ("%z", "%Z", "%SZ", "%S.%LZ")
_NO_TIME = object()  # apply_time's "no time" marker when Time_Zone post-processes the times
_EPOCH = datetime(1970, 1, 1)


class _ZoneShift:
    """Reads the wall-clock times parsed as if UTC as times in an IANA zone.

    The C time parser has no zone database, so a Time_Zone parser parses its
    times as UTC and this shifts each by the zone's offset at that wall-clock
    time. A wall-clock time that occurs twice (the hour after clocks go back)
    takes the earlier (summer) offset; one that never occurs (the skipped
    hour) takes the offset in force before the change, so 02:30 on a spring
    forward day in New York reads as 03:30 EDT -- the choices Fluent Bit's
    TZif lookup makes for such zones. Offsets are cached per wall-clock hour
    when they are the same at both ends of the hour.
    """

    def __init__(self, zone: zoneinfo.ZoneInfo, applies: bool) -> None:
        self.zone = zone
        self.applies = applies
        self._cache: dict[int, int] = {}

    def _offset(self, wall_s: int) -> int:
        dt = (_EPOCH + timedelta(seconds=wall_s)).replace(tzinfo=self.zone, fold=0)
        off = dt.utcoffset()
        return int(off.total_seconds()) if off is not None else 0

    def offset_at(self, wall_s: int) -> int:
        """UTC offset (seconds) of the zone at the wall-clock time ``wall_s`` (seconds, as if UTC)."""
        hour = wall_s // 3600
        off = self._cache.get(hour)
        if off is not None:
            return off
        try:
            start = self._offset(hour * 3600)
            end = self._offset(hour * 3600 + 3599)
            if start == end:
                if len(self._cache) > 4096:
                    self._cache.clear()
                self._cache[hour] = start
                return start
            return self._offset(wall_s)
        except (OverflowError, ValueError):  # outside datetime's years 1..9999: keep UTC
            return 0

    def shift(self, times: list[Any], default: Any) -> list[Any]:
        """``times`` from apply_time (``_NO_TIME`` where none) → UTC nanoseconds, ``default`` where none."""
        for i, t in enumerate(times):
            if t is _NO_TIME:
                times[i] = default
            elif self.applies:
                times[i] = t - self.offset_at(t // 1_000_000_000) * 1_000_000_000
        return times


def _zone_from_config(name: str, opts: dict[str, Any], tfmt: str) -> _ZoneShift:
    """Time_Zone's checks as Fluent Bit makes them (flb_parser.c), as ConfigValueErrors naming the key."""
    if not tfmt:
        raise ConfigValueError("time_zone", "Time_Zone needs a Time_Format")
    if _bool(opts.get("time_system_timezone"), False):
        raise ConfigValueError("time_zone", "Time_Zone cannot be combined with Time_System_Timezone")
    if str(opts.get("time_offset") or "").strip():
        raise ConfigValueError("time_zone", "Time_Zone cannot be combined with Time_Offset")
    try:
        zone = zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigValueError("time_zone", f"unknown or unavailable IANA time zone {name!r} "
                                            "(expected a name such as America/New_York)") from None
    # An epoch (%s) is absolute already: the zone does not apply to it either.
    return _ZoneShift(zone, not any(m in tfmt for m in _FORMAT_ZONE_MARKERS) and "%s" not in tfmt)


def _cast(value: Any, kind: str) -> Any:
    """Fluent Bit's Types: a value that does not convert stays as it was."""
    if not isinstance(value, str):
        return value
    try:
        if kind == "integer":
            return int(value.strip())
        if kind == "float":
            return float(value)
        if kind == "hex":
            return int(value.strip(), 16)
        if kind == "bool":
            v = value.strip().lower()
            if v in ("true", "on", "yes", "1"):
                return True
            if v in ("false", "off", "no", "0"):
                return False
    except ValueError:
        return value
    return value


class Parser:
    """One [PARSER] definition; see the module docstring for its semantics."""

    def __init__(self, options: dict[str, Any]) -> None:
        opts = {k.lower(): v for k, v in options.items()}
        self.name: str = str(opts.get("name") or "").strip()
        if not self.name:
            raise ConfigValueError("name", "a parser needs a Name")
        fmt = str(opts.get("format") or "").strip().lower()
        if fmt not in FORMATS:
            raise ConfigValueError("format", f"unknown parser format {fmt!r}; expected one of {', '.join(FORMATS)}")
        self.options = opts
        self.skip_empty: bool = _bool(opts.get("skip_empty_values"), True)
        self.no_bare_keys: bool = _bool(opts.get("logfmt_no_bare_keys"), False)
        self._kernel: Callable[[list[Any]], list[Any]] | None = None
        self._regex: re.Pattern[str] | None = None
        self._whole_buffer = True
        self._anchored = False
        regex = opts.get("regex")
        if fmt == "docker":
            fmt = "json"
        if fmt in NATIVE_REGEXES:
            regex = regex or NATIVE_REGEXES[fmt]
            fmt = "regex"
        self.format = fmt
        if fmt == "regex":
            self._compile_regex(regex)
        self._setup_time(opts)
        # Types: Fluent Bit applies them to regex, logfmt and ltsv records, not json.
        self._types: dict[str, str] = _types(opts.get("types")) if fmt != "json" else {}
        # Decoders: field -> [(decoder, action, in_place)].
        self._decoders = _decoders(opts, fmt)
        # PCRE2 (see _pcre2_for): a regex parser without a native kernel matches in C, Types included.
        self._pcre = (_pcre2_for(self, self._expr, self._flags)
                      if fmt == "regex" and self._kernel is None else None)
        self._post_types = self._types if self._pcre is None else {}

    def _compile_regex(self, regex: Any) -> None:
        """The ``Regex`` (``/expr/flags`` accepted), how batches are scanned, and a native kernel if one fits."""
        if not regex:
            raise ConfigValueError("regex", "Format regex needs a Regex")
        expr, flags = split_flags(str(regex).strip())
        self._expr, self._flags = expr, flags
        try:
            self._regex = compile_onigmo(expr, re.M | flags)
        except re.error as e:
            raise ConfigValueError("regex", f"invalid regular expression: {e}") from None
        if not self._regex.groupindex:
            raise ConfigValueError("regex", "the regular expression has no named group (?<name>...)")
        if flags & re.S or _CONTEXT_SENSITIVE.search(expr):
            self._whole_buffer = False
        self._anchored = _anchored(self._regex)
        self._kernel = self._native_kernel(expr.strip(), flags)

    def _setup_time(self, opts: dict[str, Any]) -> None:
        """``Time_Key``, ``Time_Keep``, ``Time_Format`` (with offset, system zone, strictness), ``Time_Zone``."""
        self.time_key: str = str(opts.get("time_key") or "time")
        self.time_keep: bool = _bool(opts.get("time_keep"), False)
        self._time: fp.TimeParser | None = None
        self._zone: _ZoneShift | None = None
        tfmt = opts.get("time_format")
        zone_name = str(opts.get("time_zone") or "").strip()
        if zone_name:
            self._zone = _zone_from_config(zone_name, opts, str(tfmt or ""))
        if tfmt:
            offset = _parse_offset(str(opts["time_offset"])) if opts.get("time_offset") else 0
            self._time = fp.TimeParser(str(tfmt), offset, _bool(opts.get("time_system_timezone"), False),
                                       _bool(opts.get("time_strict"), True))

    def __repr__(self) -> str:
        return f"<Parser {self.name} format={self.format}{' native' if self._kernel else ''}>"

    @property
    def native(self) -> bool:
        """True when a native kernel, not the regular expression, parses the lines."""
        return self._kernel is not None

    def _native_kernel(self, expr: str, flags: int) -> Callable[[list[Any]], list[Any]] | None:
        if flags:
            return None
        skip = self.skip_empty
        if expr == _RFC3164:
            return lambda v: fp.syslog_batch(v, True, skip)
        if expr == _RFC3164_LOCAL:
            return lambda v: fp.syslog_batch(v, False, skip)
        if expr == _RFC5424:
            return lambda v: fp.syslog5424_batch(v, skip)
        if expr == _CRI:
            return lambda v: fp.cri_batch(v, skip)
        return None

    # ------------------------------------------------------------------ core

    def _records(self, values: list[Any]) -> list[dict[str, Any] | None]:
        """A dict per value, or None where it does not parse (no time handling yet)."""
        fmt = self.format
        if fmt == "json":
            return fp.json_batch(values)  # type: ignore[no-any-return]
        if fmt == "regex":
            assert self._regex is not None
            if self._kernel is not None:
                recs = self._kernel(values)
                need = fp.NEED_REGEX
                for i, r in enumerate(recs):
                    if r is need:
                        recs[i] = fp.regex_batch(self._regex, fp.decode_lines([values[i]]), self.skip_empty, False)[0]
                return recs
            if self._pcre is not None:
                return self._pcre.batch(values, self.skip_empty)  # type: ignore[no-any-return]
            return fp.regex_batch(self._regex, fp.decode_lines(values), self.skip_empty,  # type: ignore[no-any-return]
                                  self._whole_buffer, self._anchored)
        if fmt == "logfmt":
            return fp.logfmt_batch(values, self.no_bare_keys)  # type: ignore[no-any-return]
        if fmt == "ltsv":
            return fp.ltsv_batch(values, ":")  # type: ignore[no-any-return]
        return fp.ltsv_batch(values, "=")  # type: ignore[no-any-return]

    def parse_values(self, values: list[Any], now_ns: int | None = None, default: Any = None
                     ) -> tuple[list[Any], list[dict[str, Any] | None]]:
        """Times (``default`` where none was found) and records (None where a value did not parse)."""
        if now_ns is None:
            now_ns = time.time_ns()
        try:
            recs = self._records(values)
        except Exception:  # never let one bad batch take the input down: fall back to one by one
            recs = [self._records_one(v) for v in values]
        if self._time is not None and self._zone is not None:
            times = self._zone.shift(
                fp.apply_time(recs, self.time_key, self._time, self.time_keep, now_ns, _NO_TIME), default)
        elif self._time is not None:
            times = fp.apply_time(recs, self.time_key, self._time, self.time_keep, now_ns, default)
        else:
            times = [default] * len(recs)
        if self._post_types or self._decoders:
            for r in recs:
                if r is not None:
                    self._post(r)
        return times, recs

    def _records_one(self, value: Any) -> dict[str, Any] | None:
        try:
            return self._records([value])[0]
        except Exception:
            return None

    def _post(self, rec: dict[str, Any]) -> None:
        for key, kind in self._post_types.items():
            if key in rec:
                rec[key] = _cast(rec[key], kind)
        for field, chain in self._decoders.items():
            for dec, action, in_place in chain:
                ok = _decode(rec, field, dec, in_place)
                if action == "do_next" or (action == "try_next" and not ok):
                    continue
                break

    def parse_lines(self, lines: list[bytes], now_ns: int | None = None) -> tuple[list[int], list[dict], int]:
        """One record per line: times (now where the line has none), records, number of failed lines.

        A failed line is kept as ``{"log": text}``.
        """
        if now_ns is None:
            now_ns = time.time_ns()
        times, recs = self.parse_values(lines, now_ns, now_ns)
        failed = 0
        for i, r in enumerate(recs):
            if r is None:
                failed += 1
                recs[i] = {"log": fp.decode_lines([lines[i]])[0]}
        return times, recs, failed  # type: ignore[return-value]

    def parse_record_field(self, value: str | bytes) -> tuple[int | None, dict] | None:
        """(time or None, record) for one field value, or None when it does not parse."""
        times, recs = self.parse_values([value], None, None)
        r = recs[0]
        if r is None:
            return None
        return times[0], r


def _types(value: Any) -> dict[str, str]:
    """``Types key:type ...`` → {key: type}."""
    out: dict[str, str] = {}
    for item in str(value or "").split():
        key, sep, kind = item.rpartition(":")
        if not sep or not key or kind.lower() not in _TYPES:
            raise ConfigValueError("types", f"expected key:type with type one of {', '.join(_TYPES)}, got {item!r}")
        out[key] = kind.lower()
    return out


def _decoders(opts: dict[str, Any], fmt: str) -> dict[str, list[tuple[str, str | None, bool]]]:
    """``Decode_Field`` / ``Decode_Field_As`` lines → field: [(decoder, action, in place)], in order."""
    out: dict[str, list[tuple[str, str | None, bool]]] = {}
    for opt, in_place in (("decode_field", False), ("decode_field_as", True)):
        vals = opts.get(opt) or []
        if isinstance(vals, str):
            vals = [vals]
        for v in vals:
            parts = str(v).split()
            if len(parts) not in (2, 3) or parts[0].lower() not in _DECODERS or (
                    len(parts) == 3 and parts[2].lower() not in _ACTIONS):
                raise ConfigValueError(opt, f"expected '<{'|'.join(_DECODERS)}> <field> "
                                            f"[{'|'.join(_ACTIONS)}]', got {v!r}")
            dec = parts[0].lower()
            if fmt == "json" and dec in ("escaped", "escaped_utf8"):
                continue  # the JSON decoder already decoded the escapes
            out.setdefault(parts[1], []).append((dec, parts[2].lower() if len(parts) == 3 else None, in_place))
    return out


# ---------------------------------------------------------------------- PCRE2 hook

_log = logging.getLogger("logfwd.parsers")
_PCRE2_WARNED: set[str] = set()


def _pcre2_for(parser: Parser, expr: str, flags: int) -> Pcre2Parser | None:
    """The PCRE2 matcher of a regex parser, or None (the ``re`` path) when PCRE2 cannot take
    its expression (one warning per expression). Lines PCRE2 cannot finish (match or JIT
    stack limit) go to ``re`` one at a time."""
    regex, skip = parser._regex, parser.skip_empty
    assert regex is not None

    def fallback(value: Any) -> dict[str, Any] | None:
        return fp.regex_batch(regex, fp.decode_lines([value]), skip, False)[0]  # type: ignore[no-any-return]

    try:
        matcher = Pcre2Parser(to_pcre2(expr), flags, parser._types, fallback, _cast)
    except Pcre2Error as e:
        if expr not in _PCRE2_WARNED:
            _PCRE2_WARNED.add(expr)
            _log.warning("parser %s: PCRE2 cannot compile its regex (%s); using Python's re (slower)",
                         parser.name, e)
        return None
    if matcher.names != list(regex.groupindex):  # a construct the two read differently: trust re
        return None
    return matcher


def _bool(v: Any, default: bool) -> bool:
    if v is None:
        return default
    if isinstance(v, bool):
        return v
    try:
        return parse_bool(v)
    except OptionError:
        return default


def _decode(rec: dict[str, Any], field: str, dec: str, in_place: bool) -> bool:
    """Apply one Fluent Bit decoder to ``rec[field]``; True when it decoded something."""
    v = rec.get(field)
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if not isinstance(v, str):
        return False
    if dec == "json":
        s = v.strip()
        if not s.startswith("{"):
            return False
        try:
            obj = orjson.loads(s)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(obj, dict):
            return False
        if in_place:
            rec[field] = obj
        else:
            for k, val in obj.items():
                if k != field:
                    rec[k] = val
        return True
    if dec in ("escaped", "escaped_utf8"):
        new = fp.unescape(v)
        rec[field] = new
        return True
    if dec == "mysql_quoted":
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
            rec[field] = fp.unescape(v[1:-1])
            return True
        return False
    return False


class ParserRegistry:
    """The parsers and multiline parsers a configuration can refer to by name."""

    def __init__(self) -> None:
        self._parsers: dict[str, Parser] = {}
        self._multiline: dict[str, MultilineParser] = {}
        self._builtin_ml: dict[str, MultilineParser] | None = None

    def add_parser(self, options: dict[str, Any]) -> None:
        """Add (or replace, as a later file does in Fluent Bit) a parser; ConfigValueError if invalid."""
        p = Parser(options)
        self._parsers[p.name] = p

    def add_multiline(self, options: dict[str, Any]) -> None:
        ml = MultilineParser.from_config(options, self)
        self._multiline[ml.name] = ml

    def get(self, name: str) -> Parser:
        return self._parsers[name]

    def names(self) -> list[str]:
        return sorted(self._parsers)

    def _builtins(self) -> dict[str, MultilineParser]:
        if self._builtin_ml is None:
            self._builtin_ml = builtin_multiline()
        return self._builtin_ml

    def multiline(self, name: str) -> MultilineParser:
        if name in self._multiline:
            return self._multiline[name]
        return self._builtins()[name]

    def multiline_names(self) -> list[str]:
        return sorted(set(self._multiline) | set(self._builtins()))
