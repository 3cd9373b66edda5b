"""InfluxDB line protocol serializer: a pure function over a chunk (no I/O).

One record becomes one point::

    measurement[,seq_tag=N][,tag=value...] field=value[,field=value...] timestamp

The rules below were checked against a real InfluxDB 1.6 server (its parser is the one
InfluxDB 2.x still uses):

- measurement: ``,`` and space are backslash-escaped; tag keys, tag values and field keys:
  ``,``, ``=`` and space. A backslash before any other character is kept literally by the
  server, so backslashes are *not* doubled (Fluent Bit doubles them, which stores ``\\\\``).
- A name ending in a backslash cannot be written at all (the server reads the backslash as
  escaping the separator that follows), so such a name gets ``_`` appended. An odd run of
  backslashes right before an escaped character gets one more backslash (the server's line
  scanner would otherwise pair the wrong backslashes); that name reads back with the extra
  backslash. Newlines and
  carriage returns cannot appear in names; they are written as the two characters ``\\n`` /
  ``\\r``. Empty tag values and empty keys are left out (the server refuses them).
- ``time`` is not accepted as a tag or field key (the server refuses the point, or silently
  drops the field); it is written as ``time_``.
- string field values: ``"`` and ``\\`` are escaped, newlines are kept as is.
- integers: ``123i`` with ``add_integer_suffix`` (outside the signed 64-bit range they are
  written without the suffix, as floats); otherwise plain ``123`` which InfluxDB stores as a
  float (Fluent Bit's default). Floats use Python's shortest round-trip repr; NaN and
  infinities are not representable and are left out. Booleans are ``true``/``false``;
  ``None`` is left out (a missing value); bytes are decoded as UTF-8.
- nested maps are flattened with ``.`` (``{"k8s": {"pod": "x"}}`` → ``k8s.pod``), lists and
  other values become JSON strings.
- records left with no field at all are skipped: their indices are reported so the caller
  can count them (``skipped_records``).

The sequence tag follows Fluent Bit's ``Sequence_Tag``, documented as "incremented for the
consecutive simultaneous events": points with the same timestamp get 0, 1, 2... so they
stay distinct series instead of overwriting each other (``_lineproto.Sequencer`` numbers
them). The caller passes the values in (``seqs``) so that a re-sent record keeps its
value and re-sending stays idempotent.

It is the inner loop of the InfluxDB output. A chunk is written in one C pass
(``_lineproto.encode_points``) straight into the request body: flat records of str, int,
float, bool and None values, with the sequence tag, ``Tag_Keys`` and ``Auto_Tags``. What
that pass does not take (nested maps, lists, bytes, non-str keys or tag values, ints beyond
64 bits, lone surrogates, and the per-record ``Measurement_Key``/``Tags_List_Key``) goes
through the Python encoder (``_encode_lines``: Cython escaping, cached keys, exact-type
dispatch), record by record in its place. The original pure-Python functions stay as the
reference (``py_escape_*``, ``LineEncoder.encode_py``): the output must match them byte for
byte (the tests check it with hypothesis; bench/serializers.py measures one against the
other).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from ._lineproto import encode_points as _encode_points
from ._lineproto import influx_escape as _influx_escape
from ._lineproto import influx_string as _influx_string

__all__ = ["LineEncoder", "Encoded", "PRECISIONS", "escape_measurement", "escape_key", "escape_string"]

# Divisor from nanoseconds to each precision; keys are what users write (``ns``, ``us``...).
PRECISIONS: dict[str, int] = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

_MEASUREMENT_TABLE = str.maketrans({",": "\\,", " ": "\\ ", "\n": "\\n", "\r": "\\r"})
_KEY_TABLE = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ ", "\n": "\\n", "\r": "\\r"})
_STRING_TABLE = str.maketrans({"\\": "\\\\", '"': '\\"'})


# Backslash runs right before a character that gets escaped (see _escape_name).
_RUN_BEFORE_KEY_SPECIAL = re.compile(r"(\\+)(?=[ ,=])")
_RUN_BEFORE_MEASUREMENT_SPECIAL = re.compile(r"(\\+)(?=[ ,])")


def _even_run(m: re.Match[str]) -> str:
    run = m.group(1)
    return run + "\\" if len(run) % 2 else run


def _escape_name(name: str, table: dict[int, str], runs: re.Pattern[str]) -> str:
    """Escape a name so that the server's two scanners agree on where it ends.

    The line scanner pairs every backslash with the next character, while the tag and key
    scanners only look at the character before a separator. A literal backslash run right
    before an escaped character must therefore have even length (else the line scanner
    pairs it with the escape's backslash and reads the escaped character as a separator):
    an odd run gets one more backslash, which the server then stores. A name ending in a
    backslash gets ``_`` appended, since the backslash would escape the separator after it.
    """
    if "\\" in name:
        name = runs.sub(_even_run, name)
        out = name.translate(table)
        return out + "_" if out.endswith("\\") else out
    return name.translate(table)


def py_escape_measurement(name: str) -> str:
    """Reference (pure Python) of ``escape_measurement``."""
    return _escape_name(name, _MEASUREMENT_TABLE, _RUN_BEFORE_MEASUREMENT_SPECIAL)


def py_escape_key(name: str) -> str:
    """Reference (pure Python) of ``escape_key``."""
    if name == "time":
        return "time_"
    return _escape_name(name, _KEY_TABLE, _RUN_BEFORE_KEY_SPECIAL)


def py_escape_tag_value(value: str) -> str:
    """Reference (pure Python) of ``escape_tag_value``."""
    return _escape_name(value, _KEY_TABLE, _RUN_BEFORE_KEY_SPECIAL)


def py_escape_string(value: str) -> str:
    """Reference (pure Python) of ``escape_string``."""
    return '"' + value.translate(_STRING_TABLE) + '"'


def escape_measurement(name: str) -> str:
    return _influx_escape(name, True)


def escape_key(name: str) -> str:
    """Escape a tag key or field key (``time`` is not accepted by the server)."""
    if name == "time":
        return "time_"
    return _influx_escape(name)


escape_tag_value = _influx_escape
escape_string = _influx_string


def _json_default(v: Any) -> Any:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).decode("utf-8", "replace")
    return str(v)


def _json_text(v: Any) -> str:
    """A list (or other non-scalar) as compact JSON text, whatever it holds.

    orjson refuses lone surrogates (text decoded with ``surrogateescape``); the
    standard library writes them as ``\\udXXX`` escapes instead, and anything it
    cannot encode either is written with ``str`` rather than failing the chunk.
    """
    try:
        return orjson.dumps(v, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        try:
            return json.dumps(v, default=_json_default, separators=(",", ":"))
        except (TypeError, ValueError):
            return str(v)


def _to_text(v: Any) -> str | None:
    """A value as tag text; None when it has none (tags cannot be empty)."""
    if v is None:
        return None
    if isinstance(v, str):
        return v or None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8", "replace") or None
    return _json_text(v)


def _flatten(record: dict[Any, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in record.items():
        key = k if isinstance(k, str) else (k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k))
        if prefix:
            key = prefix + "." + key
        if isinstance(v, dict):
            if v:
                yield from _flatten(v, key)
            # an empty map has nothing to write
        else:
            yield key, v


@dataclass(slots=True)
class Encoded:
    """What ``LineEncoder.encode`` produced for a chunk.

    ``data`` is every point, joined by newlines, as the request body; ``ends[j]`` is the
    offset just past point j, the point for record ``index[j]`` of the chunk, so a split
    request takes slices instead of re-encoding. ``skipped`` lists the records that had
    no field to write; ``dropped_values`` counts values left out (NaN, infinities) so the
    caller can report them.
    """

    data: bytes = b""
    ends: list[int] = field(default_factory=list)
    index: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    dropped_values: int = 0

    @classmethod
    def from_lines(cls, lines: list[str], index: list[int], skipped: list[int], dropped: int) -> Encoded:
        """The result of the Python encoders, whose points are text lines."""
        raw = [line.encode("utf-8", "surrogatepass") for line in lines]
        ends: list[int] = []
        k = -1
        for r in raw:
            k += len(r) + 1
            ends.append(k)
        return cls(b"\n".join(raw), ends, index, skipped, dropped)

    def __len__(self) -> int:
        return len(self.ends)

    def point(self, j: int) -> bytes:
        """Point j without its newline."""
        return self.data[self.ends[j - 1] + 1 if j else 0 : self.ends[j]]

    @property
    def lines(self) -> list[str]:
        """The points as text (tests and diagnostics)."""
        return [self.point(j).decode("utf-8", "surrogatepass") for j in range(len(self.ends))]

    def body(self, positions: Sequence[int] | None = None) -> bytes:
        """The request body for all points, or only the points at ``positions``
        (a run of consecutive points, as bisection makes, is one slice)."""
        ends = self.ends
        if positions is None:
            return self.data
        if positions and _consecutive(positions):
            first = positions[0]
            return self.data[ends[first - 1] + 1 if first else 0 : ends[positions[-1]]]
        return b"\n".join([self.point(j) for j in positions])


def _consecutive(positions: Sequence[int]) -> bool:
    """``positions`` is first, first + 1, ..., last (compared in C, not point by point)."""
    first, last = positions[0], positions[-1]
    if last - first != len(positions) - 1:
        return False
    return isinstance(positions, range) or list(positions) == list(range(first, last + 1))


class LineEncoder:
    """Turns records into line protocol according to the output's options.

    - ``measurement``: fixed measurement name; ``None`` uses the chunk's tag (Fluent Bit).
    - ``measurement_key``: record key whose (non-empty string) value names the measurement;
      the key itself is not written.
    - ``tag_keys``: record keys (after flattening, e.g. ``kubernetes.pod_name``) written as tags.
    - ``auto_tags``: every string value becomes a tag (Fluent Bit's ``Auto_Tags``).
    - ``tags_list_key``: record key holding a list of key names to tag for that record
      (Fluent Bit's ``Tags_List_Key`` with ``Tags_List_Enabled``); the list is not written.
    - ``add_integer_suffix``: integers as ``123i`` (InfluxDB integers) instead of floats.
    - ``precision``: ``ns``, ``us``, ``ms`` or ``s``: the timestamp unit of the request.
    - ``sequence_tag``: name of the sequence tag, or ``None`` for none.
    """

    def __init__(
        self,
        *,
        measurement: str | None = None,
        measurement_key: str | None = None,
        tag_keys: Iterable[str] = (),
        auto_tags: bool = False,
        tags_list_key: str | None = None,
        add_integer_suffix: bool = False,
        precision: str = "ns",
        sequence_tag: str | None = "_seq",
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.measurement = measurement
        self.measurement_key = measurement_key
        self.tag_keys = frozenset(tag_keys)
        self.auto_tags = auto_tags
        self.tags_list_key = tags_list_key
        self.add_integer_suffix = add_integer_suffix
        self.divisor = PRECISIONS[precision]
        self._sequence_tag_raw = sequence_tag or None
        self.sequence_tag = escape_key(sequence_tag) if sequence_tag else None
        self._escaped_measurements: dict[str, str] = {}
        # raw key -> escaped key + "=": chunks repeat the same few keys (text for the
        # Python encoder, bytes for the C pass).
        self._key_prefixes: dict[str, str] = {}
        self._key_prefix_bytes: dict[str, bytes] = {}

    def _measurement(self, name: str) -> str:
        m = self._escaped_measurements.get(name)
        if m is None:
            m = escape_measurement(name)
            if len(self._escaped_measurements) < 10_000:
                self._escaped_measurements[name] = m
        return m

    def _record_measurement(self, rec: dict[str, Any], default: str) -> str:
        """The escaped measurement named by the record's Measurement_Key value, else ``default``."""
        mv = rec.get(self.measurement_key)  # type: ignore[arg-type]
        if isinstance(mv, bytes):
            mv = mv.decode("utf-8", "replace")
        return self._measurement(mv) if isinstance(mv, str) and mv else default

    def field_value(self, v: Any) -> str | None:
        """One field value in line protocol, or None when it cannot be written."""
        return self._field_value(v, escape_string)

    def _field_value(self, v: Any, escape_string: Any) -> str | None:
        if isinstance(v, str):
            return escape_string(v)
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            if self.add_integer_suffix and _INT64_MIN <= v <= _INT64_MAX:
                return f"{v}i"
            return str(v)
        if isinstance(v, float):
            if math.isnan(v) or math.isinf(v):
                return None
            return repr(v)
        if v is None:
            return None
        if isinstance(v, (bytes, bytearray)):
            return escape_string(bytes(v).decode("utf-8", "replace"))
        return escape_string(_json_text(v))

    def encode(
        self,
        tag: str,
        times: list[int],
        records: list[dict[str, Any]],
        seqs: list[int] | None = None,
    ) -> Encoded:
        """Serialize a chunk. ``seqs[i]`` is record i's sequence-tag value (if enabled).

        Same output as ``encode_py``: the C pass for the chunk, with ``_encode_lines``
        for each record it leaves to Python; with ``Measurement_Key`` or ``Tags_List_Key``
        (a measurement or tag set per record) the Python encoder for the whole chunk.
        """
        if self.measurement_key is not None or self.tags_list_key is not None:
            return Encoded.from_lines(*self._encode_lines(tag, times, records, seqs))
        seq_tag = self.sequence_tag
        with_seq = seq_tag is not None and seqs is not None

        def slow(i: int) -> tuple[bytes | None, int]:
            lines, _, _, lost = self._encode_lines(tag, [times[i]], [records[i]], [seqs[i]] if with_seq else None)  # type: ignore[index]
            return (lines[0].encode("utf-8", "surrogatepass") if lines else None), lost

        head = self._measurement(self.measurement or tag or "logfwd").encode("utf-8", "surrogatepass")
        data, ends, index, skipped, lost = _encode_points(
            head, (seq_tag + "=").encode("utf-8", "surrogatepass") if with_seq else None,  # type: ignore[operator]
            times, records, seqs if with_seq else None, self.divisor, self.add_integer_suffix,
            self.tag_keys, self.auto_tags, self._key_prefix_bytes, self._make_prefix, slow,
        )
        return Encoded(data, ends, index, skipped, lost)

    def _make_prefix(self, key: str) -> bytes:
        """``escaped key=`` as the C pass writes it, cached (a chunk repeats the same few keys)."""
        prefix = (escape_key(key) + "=").encode("utf-8", "surrogatepass")
        if len(self._key_prefix_bytes) < 10_000:
            self._key_prefix_bytes[key] = prefix
        return prefix

    def _encode_lines(
        self,
        tag: str,
        times: list[int],
        records: list[dict[str, Any]],
        seqs: list[int] | None = None,
    ) -> tuple[list[str], list[int], list[int], int]:
        """The Python encoder: ``(lines, index, skipped, values lost)``, as ``encode_py``.

        Restructured for speed: a flat record is walked with ``dict.items()`` instead of a
        generator, escaped keys come from a cache, and the common value types are
        dispatched on their exact type before the general ``field_value``.
        """
        lines: list[str] = []
        index: list[int] = []
        skipped: list[int] = []
        default_measurement = self._measurement(self.measurement or tag or "logfwd")
        mkey = self.measurement_key
        tlkey = self.tags_list_key
        skip_keys = {"", mkey, tlkey}
        tag_keys = self.tag_keys
        auto_tags = self.auto_tags
        seq_tag = self.sequence_tag
        seq_head = seq_tag + "=" if seq_tag is not None and seqs is not None else None
        divisor = self.divisor
        suffix = self.add_integer_suffix
        field_value = self.field_value
        kcache = self._key_prefixes
        esc_tag = _influx_escape
        esc_str = _influx_string
        dropped = 0

        for i, rec in enumerate(records):
            measurement = default_measurement if mkey is None else self._record_measurement(rec, default_measurement)
            record_tags = tag_keys if tlkey is None else _record_tags(rec, tlkey, tag_keys)

            flat = dict not in map(type, rec.values())
            items: Any = rec.items() if flat else _flatten(rec)
            while True:
                tags: list[str] = [f"{seq_head}{seqs[i]}"] if seq_head is not None else []  # type: ignore[index]
                fields: list[str] = []
                lost = 0
                for key, v in items:
                    if type(key) is not str:
                        key = _key_text(key)
                    if key in skip_keys:
                        if flat and isinstance(v, dict):
                            break  # a map subclass: its keys are flattened, then checked
                        continue
                    prefix = kcache.get(key)
                    if prefix is None:
                        prefix = escape_key(key) + "="
                        if len(kcache) < 10_000:
                            kcache[key] = prefix
                    if key in record_tags or (auto_tags and isinstance(v, str)):
                        if flat and isinstance(v, dict):
                            break  # a map subclass: flatten this record after all
                        text = _to_text(v)
                        if text is not None:
                            tags.append(prefix + esc_tag(text))
                        continue
                    t = type(v)
                    if t is str:
                        fields.append(prefix + esc_str(v))
                    elif t is int:
                        if suffix and _INT64_MIN <= v <= _INT64_MAX:
                            fields.append(f"{prefix}{v}i")
                        else:
                            fields.append(prefix + str(v))
                    elif t is float:
                        if v - v == 0.0:  # finite (NaN and infinities give NaN)
                            fields.append(prefix + repr(v))
                        else:
                            lost += 1
                    elif t is bool:
                        fields.append(prefix + ("true" if v else "false"))
                    elif v is None:
                        pass
                    elif flat and isinstance(v, dict):
                        break  # a map subclass: flatten this record after all
                    else:
                        fv = field_value(v)
                        if fv is None:
                            lost += 1
                        else:
                            fields.append(prefix + fv)
                else:
                    break
                flat = False
                items = _flatten(rec)
            dropped += lost

            if not fields:
                skipped.append(i)
                continue
            head = measurement + "," + ",".join(tags) if tags else measurement
            ts = times[i] // divisor if divisor != 1 else times[i]
            lines.append(f"{head} {','.join(fields)} {ts}")
            index.append(i)

        return lines, index, skipped, dropped

    def encode_py(
        self,
        tag: str,
        times: list[int],
        records: list[dict[str, Any]],
        seqs: list[int] | None = None,
    ) -> Encoded:
        """The reference (pure-Python) serializer ``encode`` must match byte for byte."""
        lines: list[str] = []
        index: list[int] = []
        skipped: list[int] = []
        default_measurement = py_escape_measurement(self.measurement or tag or "logfwd")
        mkey = self.measurement_key
        tlkey = self.tags_list_key
        tag_keys = self.tag_keys
        auto_tags = self.auto_tags
        seq_tag = py_escape_key(self._sequence_tag_raw) if self._sequence_tag_raw else None
        divisor = self.divisor

        def field_value(v: Any) -> str | None:
            return self._field_value(v, py_escape_string)

        dropped = 0

        for i, rec in enumerate(records):
            measurement = default_measurement
            if mkey is not None:
                mv = rec.get(mkey)
                if isinstance(mv, bytes):
                    mv = mv.decode("utf-8", "replace")
                if isinstance(mv, str) and mv:
                    measurement = py_escape_measurement(mv)
            record_tags = tag_keys
            if tlkey is not None:
                extra = rec.get(tlkey)
                if isinstance(extra, (list, tuple)) and extra:
                    record_tags = tag_keys | {str(x) for x in extra}

            tags: list[str] = []
            if seq_tag is not None and seqs is not None:
                tags.append(f"{seq_tag}={seqs[i]}")
            fields: list[str] = []
            for key, v in _flatten(rec):
                if key == mkey or key == tlkey or not key:
                    continue
                if key in record_tags or (auto_tags and isinstance(v, str)):
                    text = _to_text(v)
                    if text is not None:
                        tags.append(py_escape_key(key) + "=" + py_escape_tag_value(text))
                    continue
                fv = field_value(v)
                if fv is None:
                    if v is not None:
                        dropped += 1
                    continue
                fields.append(py_escape_key(key) + "=" + fv)

            if not fields:
                skipped.append(i)
                continue
            head = measurement + "," + ",".join(tags) if tags else measurement
            ts = times[i] // divisor if divisor != 1 else times[i]
            lines.append(f"{head} {','.join(fields)} {ts}")
            index.append(i)

        return Encoded.from_lines(lines, index, skipped, dropped)


def _record_tags(rec: dict[str, Any], tlkey: str, tag_keys: frozenset[str]) -> frozenset[str]:
    """Tag_Keys plus the key names listed in the record's Tags_List_Key value."""
    extra = rec.get(tlkey)
    if isinstance(extra, (list, tuple)) and extra:
        return tag_keys | {str(x) for x in extra}
    return tag_keys


def _key_text(key: Any) -> str:
    """A record key as text (a str subclass, bytes, or anything else)."""
    if isinstance(key, str):
        return key
    return key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
