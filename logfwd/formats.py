"""Record formatting shared by the ``stdout`` and ``file`` outputs.

Both outputs print the same shapes Fluent Bit prints, so that scripts and
people reading its output keep working after a move:

- ``json_lines`` / ``json_stream`` / ``json`` with a date key
  (``json_date_key``, ``json_date_format``) as Fluent Bit's stdout and http
  outputs do;
- the human-readable ``msgpack`` print of ``stdout`` (its default), i.e.
  ``[0] tag: [[1686451466.659962491, {}], {"message"=>"dummy"}]``;
- the ``file`` output's ``out_file``, ``plain``, ``csv``, ``ltsv`` and
  ``template`` formats.

Every formatter takes a whole chunk (parallel ``times``/``records`` lists) and
returns one ``bytes`` buffer, so an output performs one write per chunk.
Timestamps are int nanoseconds since the epoch. Values that are not JSON types
(``bytes`` from a parser, ``datetime``...) are written as text rather than
failing the chunk: a record that cannot be printed must not block the others.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from ._fastparse import json_lines as _json_lines
from ._fastparse import out_file_lines as _out_file_lines

__all__ = [
    "DATE_FORMATS",
    "date_formatter",
    "parse_date_key",
    "json_dumps",
    "format_json_lines",
    "format_json_stream",
    "format_json_array",
    "format_msgpack_print",
    "format_out_file",
    "format_plain",
    "format_csv",
    "format_ltsv",
    "format_template",
    "print_value",
    "ns_to_fixed",
    "ns_to_double_str",
]

DATE_FORMATS = ("double", "epoch", "epoch_ms", "iso8601", "java_sql_timestamp")

_NS = 1_000_000_000


def _default(value: Any) -> Any:
    """orjson fallback: bytes become text, anything else its ``str()``."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


_OPTS = orjson.OPT_NON_STR_KEYS


def json_dumps(value: Any) -> bytes:
    """Compact JSON of one value; never raises on odd value types."""
    try:
        return orjson.dumps(value, default=_default, option=_OPTS)
    except TypeError:
        # Integers beyond 64 bits, or nesting deeper than orjson allows.
        return json.dumps(value, default=_default, ensure_ascii=False, separators=(",", ":")).encode()


# ------------------------------------------------------------------ dates


def parse_date_key(value: str | None) -> str | None:
    """``json_date_key`` as Fluent Bit reads it: ``false``/``off`` (or empty) disables the key."""
    if value is None:
        return None
    v = str(value).strip()
    if not v or v.lower() in ("false", "off", "no"):
        return None
    return v


class _SecondCache:
    """Caches the formatted calendar part of the last second seen.

    Records of one chunk mostly share a few seconds, and ``time.strftime`` is
    the expensive part of an ISO 8601 date, so it runs once per second, not per record.
    """

    __slots__ = ("fmt", "sec", "text")

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.sec = -(2**63)
        self.text = ""

    def __call__(self, sec: int) -> str:
        if sec != self.sec:
            self.sec = sec
            self.text = time.strftime(self.fmt, time.gmtime(sec))
        return self.text


def date_formatter(fmt: str) -> Callable[[int], Any]:
    """A function from int nanoseconds to the value of the date key in ``fmt``.

    ``double`` gives seconds as a float, ``epoch`` whole seconds, ``epoch_ms``
    milliseconds, ``iso8601`` ``2018-05-30T09:39:52.000681Z`` and
    ``java_sql_timestamp`` ``2018-05-30 09:39:52.000681`` (both UTC, microseconds).
    """
    fmt = fmt.lower()
    if fmt == "double":
        return lambda ns: ns / _NS
    if fmt == "epoch":
        return lambda ns: ns // _NS
    if fmt == "epoch_ms":
        return lambda ns: ns // 1_000_000
    if fmt in ("iso8601", "java_sql_timestamp"):
        cache = _SecondCache("%Y-%m-%dT%H:%M:%S" if fmt == "iso8601" else "%Y-%m-%d %H:%M:%S")
        suffix = "Z" if fmt == "iso8601" else ""

        def iso(ns: int) -> str:
            sec, rem = divmod(ns, _NS)
            return f"{cache(sec)}.{rem // 1000:06d}{suffix}"

        return iso
    raise ValueError(f"unknown date format {fmt!r}; expected one of {', '.join(DATE_FORMATS)}")


def ns_to_fixed(ns: int) -> str:
    """``sec.nanoseconds`` with nine digits, as Fluent Bit prints event times."""
    sec, rem = divmod(ns, _NS)
    return f"{sec}.{rem:09d}"


def ns_to_double_str(ns: int) -> str:
    """C's ``%f`` of the time as a double: six decimals (``1564462620.000254``)."""
    return f"{ns / _NS:f}"


# ------------------------------------------------------------------ JSON family


def _with_date(times: Sequence[int], records: Sequence[dict[str, Any]], date_key: str | None,
               date_format: str) -> list[bytes]:
    if date_key is None:
        return [json_dumps(r) for r in records]
    conv = date_formatter(date_format)
    # The date comes first, as Fluent Bit writes it; a record's own key of the
    # same name wins (it would come last in Fluent Bit's output, so a JSON reader
    # keeps the record's value there as well).
    return [json_dumps({date_key: conv(t), **r}) for t, r in zip(times, records, strict=True)]


def format_json_lines(times: Sequence[int], records: Sequence[dict[str, Any]], date_key: str | None = "date",
                      date_format: str = "double") -> bytes:
    """Newline-delimited JSON, one record per line, each line terminated."""
    if date_key is None and type(records) is list:
        return _json_lines(records, _default, _OPTS, json_dumps)  # file Format plain: one Cython call
    parts = _with_date(times, records, date_key, date_format)
    if not parts:
        return b""
    return b"\n".join(parts) + b"\n"


def format_json_stream(times: Sequence[int], records: Sequence[dict[str, Any]], date_key: str | None = "date",
                       date_format: str = "double") -> bytes:
    """Concatenated JSON objects with no separator (Fluent Bit's ``json_stream``)."""
    return b"".join(_with_date(times, records, date_key, date_format))


def format_json_array(times: Sequence[int], records: Sequence[dict[str, Any]], date_key: str | None = "date",
                      date_format: str = "double") -> bytes:
    """One JSON array holding the chunk's records (Fluent Bit's ``json``)."""
    return b"[" + b",".join(_with_date(times, records, date_key, date_format)) + b"]"


# ------------------------------------------------------------------ msgpack print

# msgpack-c's object printer escapes quotes, backslashes and control characters
# so that a record always prints on one line.
_ESCAPES = {i: f"\\x{i:02x}" for i in range(0x20)}
_ESCAPES.update({ord('"'): '\\"', ord("\\"): "\\\\", 0x08: "\\b", 0x0C: "\\f", 0x0A: "\\n", 0x0D: "\\r",
                 0x09: "\\t", 0x7F: "\\x7f"})


def _quote(s: str) -> str:
    return '"' + s.translate(_ESCAPES) + '"'


def print_value(v: Any) -> str:
    """One value the way msgpack-c's ``msgpack_object_print`` shows it.

    Strings quoted, maps as ``{"k"=>v}``, arrays as ``[a, b]``, floats with
    six decimals, ``nil``/``true``/``false``.
    """
    if isinstance(v, str):
        return _quote(v)
    if v is None:
        return "nil"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:f}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{print_value(k)}=>{print_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(print_value(x) for x in v) + "]"
    if isinstance(v, (bytes, bytearray, memoryview)):
        return _quote(bytes(v).decode("utf-8", "replace"))
    return _quote(str(v))


def format_msgpack_print(tag: str, times: Sequence[int], records: Sequence[dict[str, Any]]) -> bytes:
    """Fluent Bit stdout's default print: ``[N] tag: [[sec.nsec, {}], {"k"=>"v"}]``.

    ``N`` counts records from 0 within the chunk, as Fluent Bit counts them per
    flush. The ``{}`` is the (empty) event metadata.
    """
    out = [
        f"[{i}] {tag}: [[{ns_to_fixed(t)}, {{}}], {print_value(r)}]\n"
        for i, (t, r) in enumerate(zip(times, records, strict=True))
    ]
    return "".join(out).encode("utf-8", "replace")


# ------------------------------------------------------------------ file output formats


def format_out_file(tag: str, times: Sequence[int], records: Sequence[dict[str, Any]]) -> bytes:
    """The file output's default: ``tag: [sec.nsec, {json}]`` per line.

    The chunk is built by one Cython call (one orjson call per record, one output
    buffer) when the extension is there: this is the file output's hot path.
    """
    head = tag.encode("utf-8", "replace") + b": ["
    if type(times) is list and type(records) is list:
        return _out_file_lines(head, times, records, _default, _OPTS, json_dumps, ns_to_fixed)
    return b"".join(head + ns_to_fixed(t).encode() + b", " + json_dumps(r) + b"]\n" for t, r in zip(times, records, strict=True))


def format_plain(times: Sequence[int], records: Sequence[dict[str, Any]]) -> bytes:
    """The record alone as JSON, one per line (no tag, no time)."""
    return format_json_lines(times, records, None)


def format_csv(times: Sequence[int], records: Sequence[dict[str, Any]], delimiter: str = ",",
               header: bool = False) -> bytes:
    """``sec.nsec<d>"value1"<d>value2`` per record; with ``header``, a first line of column names.

    The header (``timestamp`` then the first record's keys) is what Fluent Bit
    writes when ``csv_column_names`` is on and the file is empty. Records with
    no keys produce no line, as in Fluent Bit.
    """
    lines: list[str] = []
    for t, r in zip(times, records, strict=True):
        if not r:
            continue
        if header:
            lines.append(delimiter.join(["timestamp", *(print_value(k) for k in r)]))
            header = False
        lines.append(delimiter.join([ns_to_fixed(t), *(print_value(v) for v in r.values())]))
    if not lines:
        return b""
    return ("\n".join(lines) + "\n").encode("utf-8", "replace")


def format_ltsv(times: Sequence[int], records: Sequence[dict[str, Any]], delimiter: str = "\t",
                label_delimiter: str = ":") -> bytes:
    """``"time":sec.usec<TAB>"key":"value"`` per record, labels and values printed as Fluent Bit prints them."""
    lines: list[str] = []
    for t, r in zip(times, records, strict=True):
        if not r:
            continue
        fields = [f'"time"{label_delimiter}{ns_to_double_str(t)}']
        fields.extend(f"{print_value(k)}{label_delimiter}{print_value(v)}" for k, v in r.items())
        lines.append(delimiter.join(fields))
    if not lines:
        return b""
    return ("\n".join(lines) + "\n").encode("utf-8", "replace")


def _template_parts(template: str) -> list[tuple[bool, str]]:
    """Split a template into (is_placeholder, text) parts.

    The rules are Fluent Bit's: ``{name}`` is a placeholder; a second ``{``
    before the ``}`` makes the earlier one literal text; an unclosed ``{``
    is literal.
    """
    parts: list[tuple[bool, str]] = []
    buf: list[str] = []
    brace: int | None = None  # index in template of the open brace
    for i, ch in enumerate(template):
        if ch == "{":
            if brace is not None:
                buf.append(template[brace:i])
            if buf:
                parts.append((False, "".join(buf)))
                buf = []
            brace = i
        elif ch == "}" and brace is not None:
            if buf:
                parts.append((False, "".join(buf)))
                buf = []
            parts.append((True, template[brace + 1 : i]))
            brace = None
        elif brace is None:
            buf.append(ch)
    if brace is not None:
        buf.append(template[brace:])
    if buf:
        parts.append((False, "".join(buf)))
    return parts


def format_template(template: str | list[tuple[bool, str]], times: Sequence[int],
                    records: Sequence[dict[str, Any]]) -> bytes:
    """Fill ``{key}`` placeholders per record, one line each.

    ``{time}`` is the event time as ``sec.usec``; a string value is written
    as is, other values as msgpack prints them; a key the record lacks leaves
    the placeholder text in place (so a typo is visible in the output).
    """
    parts = _template_parts(template) if isinstance(template, str) else template
    lines: list[str] = []
    for t, r in zip(times, records, strict=True):
        out: list[str] = []
        for is_key, text in parts:
            if not is_key:
                out.append(text)
            elif text == "time":
                out.append(ns_to_double_str(t))
            elif text in r:
                v = r[text]
                if isinstance(v, str):
                    out.append(v)
                elif isinstance(v, (bytes, bytearray)):
                    out.append(bytes(v).decode("utf-8", "replace"))
                else:
                    out.append(print_value(v))
            else:
                out.append("{" + text + "}")
        lines.append("".join(out))
    if not lines:
        return b""
    return ("\n".join(lines) + "\n").encode("utf-8", "replace")


def compile_template(template: str) -> list[tuple[bool, str]]:
    """Parse a template once (outputs keep the parts and pass them per chunk)."""
    return _template_parts(template)
