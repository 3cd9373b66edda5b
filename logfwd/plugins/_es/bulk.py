"""Elasticsearch ``_bulk`` bodies: a pure function from records to NDJSON bytes.

The ``es`` output builds one body per chunk and sends it as one request; this
module does the building, with no I/O, so every rule (index names by date, time
key, tag key, dots, ids, write operations) is tested without a server, and the
output only maps the per-item answers back to chunk indices (``positions``).

The document shape follows Fluent Bit's ``es`` output so that dashboards and
index templates keep working: the time key first (``@timestamp``,
``%Y-%m-%dT%H:%M:%S`` plus ``.mmmZ``, or ``.nnnnnnnnnZ`` with nanoseconds), then
the tag key when asked, then the record. Two deliberate differences:

- a record that already has the time key keeps its own value (Fluent Bit writes
  the key twice, and Elasticsearch rejects the document for a duplicate field);
- a strftime pattern in ``Index`` is expanded with the record's time (UTC), like
  ``Logstash_Format`` index names, so a replayed record lands in its own day.

Ids: ``Generate_ID`` hashes the serialized document (so it includes the time);
``Id_Key`` takes a field; ``derived`` hashes the record's origin key (tail's
``<file fingerprint>:<offset>``) with the tag, so a replay after a crash gets the
same ``_id`` and Elasticsearch answers 409 instead of storing a duplicate, while
two identical lines at different offsets stay two documents.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any

import orjson

from logfwd.recordpath import MISSING, RecordPath, compile_path

from ._bulk import ndjson_bulk as _ndjson_bulk

__all__ = ["BulkSettings", "BulkRequest", "build_bulk", "build_bulk_py", "replace_dots", "format_uuid"]

WRITE_OPERATIONS = ("create", "index", "update", "upsert")
ID_MODES = ("none", "generate", "key", "derived")

_NL = b"\n"


@dataclass(frozen=True)
class BulkSettings:
    """How records become bulk actions: the ``es`` output's options, converted."""

    index: str = "fluent-bit"
    type: str = "_doc"
    suppress_type_name: bool = True
    logstash_format: bool = False
    logstash_prefix: str = "logstash"
    logstash_prefix_key: str | None = None
    logstash_prefix_separator: str = "-"
    logstash_dateformat: str = "%Y.%m.%d"
    time_key: str = "@timestamp"
    time_key_format: str = "%Y-%m-%dT%H:%M:%S"
    time_key_nanos: bool = False
    include_tag_key: bool = False
    tag_key: str = "flb-key"
    generate_id: bool = False
    id_key: str | None = None
    id_mode: str = "none"  # none | derived ("generate"/"key" follow Generate_ID / Id_Key)
    write_operation: str = "create"
    replace_dots: bool = False
    current_time_index: bool = False

    @property
    def action(self) -> str:
        """The bulk action name: ``upsert`` is an ``update`` with ``doc_as_upsert``."""
        return "update" if self.write_operation in ("update", "upsert") else self.write_operation

    @property
    def has_ids(self) -> bool:
        return bool(self.generate_id or self.id_key or self.id_mode == "derived")


@dataclass(slots=True)
class BulkRequest:
    """One ``_bulk`` body and how its actions map back to the chunk.

    ``positions[j]`` is the chunk index of the j-th action (the j-th response
    item). ``failed`` are records that could not be encoded at all, with why:
    the output refuses them (dead letter) instead of failing the whole chunk.
    """

    body: bytes
    positions: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.positions)


def replace_dots(value: Any) -> Any:
    """A copy of ``value`` with '.' in every map key (at any depth) replaced by '_'.

    Elasticsearch 2.x refused dotted field names, and newer versions turn them
    into object paths (``a.b`` conflicts with an ``a`` that is a string).
    """
    if isinstance(value, dict):
        return {
            (k.replace(".", "_") if isinstance(k, str) else k): replace_dots(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [replace_dots(v) for v in value]
    return value


def format_uuid(digest: bytes) -> str:
    """16 bytes as a UUID-shaped string, the shape of Fluent Bit's generated ids."""
    h = digest.hex()
    return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def derived_id(tag: str, key: str) -> str:
    """The ``_id`` of a record with an origin key: stable across replays and restarts."""
    return blake2b(f"{tag}\x00{key}".encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _default(obj: Any) -> Any:
    """orjson fallback: inputs keep bytes until needed; anything else as text."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).decode("utf-8", "replace")
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


_DUMPS_OPTS = orjson.OPT_NON_STR_KEYS


class _Builder:
    """Per-call state: caches of formatted seconds and action lines (records share seconds)."""

    def __init__(self, s: BulkSettings, tag: str, now_ns: int | None) -> None:
        self.s = s
        self.tag = tag
        self.now_sec = (now_ns if now_ns is not None else time.time_ns()) // 1_000_000_000
        self.prefix_path: RecordPath | None = compile_path(s.logstash_prefix_key) if s.logstash_prefix_key else None
        self.id_path: RecordPath | None = compile_path(s.id_key) if s.id_key else None
        self.time_cache: dict[int, bytes] = {}
        self.date_cache: dict[tuple[str, int], str] = {}
        self.index_cache: dict[int, str] = {}
        self.action_cache: dict[str, bytes] = {}  # index -> action line without its closing braces
        self.index_has_pattern = "%" in s.index
        self.action = s.action

    def time_json(self, ns: int) -> bytes:
        """The time key's value as a JSON string (quotes included)."""
        sec, frac = divmod(ns, 1_000_000_000)
        base = self.time_cache.get(sec)
        if base is None:
            text = time.strftime(self.s.time_key_format, time.gmtime(sec))
            base = orjson.dumps(text)[:-1]  # '"2024-03-09T23:59:58' (JSON-escaped, open quote)
            self.time_cache[sec] = base
        if self.s.time_key_nanos:
            return b'%s.%09dZ"' % (base, frac)
        return b'%s.%03dZ"' % (base, frac // 1_000_000)

    def index_for(self, ns: int, record: dict[str, Any]) -> str:
        s = self.s
        sec = self.now_sec if s.current_time_index else ns // 1_000_000_000
        if s.logstash_format:
            prefix = s.logstash_prefix
            if self.prefix_path is not None:
                v = self.prefix_path.get(record)
                if v is not MISSING and v is not None and not isinstance(v, (dict, list)):
                    prefix = (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v))[:128]
            key = (prefix, sec)
            name = self.date_cache.get(key)
            if name is None:
                name = prefix + s.logstash_prefix_separator + time.strftime(s.logstash_dateformat, time.gmtime(sec))
                self.date_cache[key] = name
            return name
        if not self.index_has_pattern:
            return s.index
        name = self.index_cache.get(sec)
        if name is None:
            name = time.strftime(s.index, time.gmtime(sec))
            self.index_cache[sec] = name
        return name

    def action_line(self, index: str, doc_id: str | None) -> bytes:
        head = self.action_cache.get(index)
        if head is None:
            meta: dict[str, str] = {"_index": index}
            if not self.s.suppress_type_name:
                meta["_type"] = self.s.type
            head = orjson.dumps({self.action: meta})[:-2]  # '{"create":{"_index":"x"'
            self.action_cache[index] = head
        if doc_id is None:
            return head + b"}}"
        return head + b',"_id":' + orjson.dumps(doc_id) + b"}}"


def build_bulk_py(
    settings: BulkSettings,
    tag: str,
    times: list[int],
    records: list[dict[str, Any]],
    keys: list[str | None] | None = None,
    now_ns: int | None = None,
) -> BulkRequest:
    """The pure-Python builder: the reference ``build_bulk`` must match byte for byte.

    It covers every option; ``build_bulk`` uses it for what the Cython kernel cannot
    do (a ``Time_Key_Format`` other than ISO 8601, times beyond 64 bits).
    """
    s = settings
    b = _Builder(s, tag, now_ns)
    out: list[bytes] = []
    positions: list[int] = []
    failed: list[tuple[int, str]] = []
    time_key = s.time_key
    tag_key = s.tag_key if s.include_tag_key else None
    # The time key (and tag) are spliced in front of the encoded record: one encode per
    # record and no dict copy. Byte-identical to encoding {time, tag, **record}.
    time_head = b"{" + orjson.dumps(time_key) + b":"
    tag_part = b"," + orjson.dumps(tag_key) + b":" + orjson.dumps(tag) if tag_key is not None else b""
    derived = s.id_mode == "derived"
    op = s.write_operation
    dumps = orjson.dumps

    for i, record in enumerate(records):
        ns = times[i]
        if not isinstance(record, dict):
            failed.append((i, f"record is a {type(record).__name__}, not a map"))
            continue
        body = replace_dots(record) if s.replace_dots else record
        try:
            if time_key in body or (tag_key is not None and tag_key in body):
                # The record's own value wins (one key, never a duplicate field).
                doc: dict[Any, Any] = {time_key: None}
                if tag_key is not None:
                    doc[tag_key] = tag
                doc.update(body)
                if doc[time_key] is None and time_key not in body:
                    doc[time_key] = orjson.loads(b.time_json(ns))
                doc_bytes = dumps(doc, default=_default, option=_DUMPS_OPTS)
            else:
                rec_bytes = dumps(body, default=_default, option=_DUMPS_OPTS)
                head = time_head + b.time_json(ns) + tag_part
                doc_bytes = head + b"}" if len(rec_bytes) == 2 else head + b"," + rec_bytes[1:]
        except (orjson.JSONEncodeError, TypeError) as e:
            failed.append((i, f"cannot encode record as JSON: {e}"))
            continue

        doc_id: str | None = None
        if b.id_path is not None:
            v = b.id_path.get(record)
            if isinstance(v, str) and v:
                doc_id = v
            elif isinstance(v, (int, bytes)) and not isinstance(v, bool):
                doc_id = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
        if doc_id is None:
            if derived:
                key = keys[i] if keys is not None and i < len(keys) else None
                if key is not None:
                    doc_id = derived_id(tag, key)
                else:
                    # No origin key: content plus the exact time, so a replay of the
                    # same record matches and two lines in the same ms rarely collide.
                    doc_id = format_uuid(blake2b(doc_bytes + ns.to_bytes(16, "big", signed=True),
                                                 digest_size=16).digest())
            elif s.generate_id:
                doc_id = format_uuid(blake2b(doc_bytes, digest_size=16).digest())

        out.append(b.action_line(b.index_for(ns, record), doc_id))
        if op == "update":
            out.append(b'{"doc":' + doc_bytes + b"}")
        elif op == "upsert":
            out.append(b'{"doc":' + doc_bytes + b',"doc_as_upsert":true}')
        else:
            out.append(doc_bytes)
        positions.append(i)

    body_bytes = _NL.join(out) + _NL if out else b""
    return BulkRequest(body_bytes, positions, failed)


# --------------------------------------------------------------------------- kernel path

_ISO_FORMAT = "%Y-%m-%dT%H:%M:%S"
# The kernel takes signed 64-bit nanoseconds (years 1677-2262, always four year digits,
# as strftime writes them); anything else goes to the Python builder.
_KERNEL_MIN_NS = -(2**63)
_KERNEL_MAX_NS = 2**63 - 1
_NS = 1_000_000_000


class _Fallback(Exception):
    """The kernel path met a case only the Python builder handles exactly."""


def _kernel_covers(s: BulkSettings, times: list[int]) -> bool:
    if s.time_key_format != _ISO_FORMAT:
        return False
    if s.include_tag_key and s.tag_key == s.time_key:
        return False
    try:
        return not times or (min(times) >= _KERNEL_MIN_NS and max(times) <= _KERNEL_MAX_NS)
    except TypeError:  # not numbers: the reference builder reports it as it always did
        return False


def build_bulk(
    settings: BulkSettings,
    tag: str,
    times: list[int],
    records: list[dict[str, Any]],
    keys: list[str | None] | None = None,
    now_ns: int | None = None,
) -> BulkRequest:
    """The NDJSON ``_bulk`` body for one chunk (parallel ``times``/``records``/``keys``).

    ``now_ns`` is the time ``Current_Time_Index`` uses (default: now). Records are
    not modified. A record that cannot be encoded is listed in ``failed`` and left
    out of the body; everything else is in it, in order.

    The documents are encoded by the Cython kernel (``_bulk.ndjson_bulk``; the
    whole build is 2-3x faster, bench/serializers.py); action lines, ids and ``update``/``upsert`` wrapping are added here
    around its output. The result is byte-identical to ``build_bulk_py``, which is
    used whenever the kernel cannot produce the exact same bytes.
    """
    if _kernel_covers(settings, times):
        try:
            return _build_bulk_kernel(settings, tag, times, records, keys, now_ns)
        except _Fallback:
            pass
    return build_bulk_py(settings, tag, times, records, keys, now_ns)


def _prepared(s: BulkSettings, tag: str, records: list[Any]) -> list[Any]:
    """Records as the kernel should encode them: dots replaced, tag key in front.

    ``{tag_key: tag, **record}`` gives the Python builder's key order in every case:
    the kernel puts the time key first, then the tag key keeps its slot, with the
    record's own value when it has one.
    """
    dots = s.replace_dots
    if not s.include_tag_key:
        return [replace_dots(r) if type(r) is dict else r for r in records] if dots else records
    tk = s.tag_key
    out: list[Any] = []
    append = out.append
    for r in records:
        if isinstance(r, dict):
            append({tk: tag, **(replace_dots(r) if dots else r)})
        else:
            append(r)
    return out


def _build_bulk_kernel(
    s: BulkSettings,
    tag: str,
    times: list[int],
    records: list[Any],
    keys: list[str | None] | None,
    now_ns: int | None,
) -> BulkRequest:
    b = _Builder(s, tag, now_ns)
    enc = _prepared(s, tag, records)
    op = s.write_operation
    ids = s.has_ids
    # One action line for the whole chunk when nothing in it depends on the record.
    index_const = (not s.logstash_format and not b.index_has_pattern) or (
        s.current_time_index and (not s.logstash_format or b.prefix_path is None))
    constant = b.action_line(b.index_for(0, {}), None) if index_const and not ids else None
    try:
        body, positions, failed = _ndjson_bulk(
            times if type(times) is list else list(times),
            enc if type(enc) is list else list(enc),
            constant if constant is not None else b"",
            s.time_key, s.time_key_nanos, _default, _DUMPS_OPTS,
        )
    except (TypeError, ValueError, OverflowError) as e:  # odd times or lengths: let the reference decide
        raise _Fallback from e
    for i, _ in failed:
        # The kernel takes exact dicts only; a dict subclass is a map to the Python builder.
        if type(records[i]) is not dict and isinstance(records[i], dict):
            raise _Fallback
    if not positions or (constant is not None and op not in ("update", "upsert")):
        return BulkRequest(body, positions, failed)

    # Every line is one JSON value (orjson never writes a raw newline), so splitting
    # on b"\n" gives [action, doc, action, doc, ..., b""].
    lines = body.split(_NL)
    if constant is None:
        docs = lines[1::2]
        if index_const and b.id_path is None:
            lines[0:-1:2] = _hashed_id_actions(s, b, tag, times, keys, positions, docs)
        else:
            lines[0:-1:2] = _actions(s, b, tag, times, records, keys, positions, docs)
    if op == "update":
        lines[1::2] = [b'{"doc":' + d + b"}" for d in lines[1::2]]
    elif op == "upsert":
        lines[1::2] = [b'{"doc":' + d + b',"doc_as_upsert":true}' for d in lines[1::2]]
    return BulkRequest(_NL.join(lines), positions, failed)


def _actions(
    s: BulkSettings,
    b: _Builder,
    tag: str,
    times: list[int],
    records: list[Any],
    keys: list[str | None] | None,
    positions: list[int],
    docs: list[bytes],
) -> list[bytes]:
    """The action line of each encoded record (``docs[j]`` is record ``positions[j]``)."""
    out: list[bytes] = []
    append = out.append
    if not s.has_ids and b.prefix_path is None:
        # The index depends on the second only: one lookup per record.
        by_sec: dict[int, bytes] = {}
        for i in positions:
            ns = times[i]
            sec = ns // _NS
            line = by_sec.get(sec)
            if line is None:
                line = by_sec[sec] = b.action_line(b.index_for(ns, records[i]), None)
            append(line)
        return out

    id_path = b.id_path
    derived = s.id_mode == "derived"
    generate = s.generate_id
    nkeys = len(keys) if keys is not None else 0
    for j, i in enumerate(positions):
        ns = times[i]
        record = records[i]
        doc_id: str | None = None
        if id_path is not None:
            v = id_path.get(record)
            if isinstance(v, str) and v:
                doc_id = v
            elif isinstance(v, (int, bytes)) and not isinstance(v, bool):
                doc_id = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
        if doc_id is None:
            if derived:
                key = keys[i] if keys is not None and i < nkeys else None
                if key is not None:
                    doc_id = derived_id(tag, key)
                else:
                    doc_id = format_uuid(blake2b(docs[j] + ns.to_bytes(16, "big", signed=True),
                                                 digest_size=16).digest())
            elif generate:
                doc_id = format_uuid(blake2b(docs[j], digest_size=16).digest())
        append(b.action_line(b.index_for(ns, record), doc_id))
    return out


def _hashed_id_actions(
    s: BulkSettings,
    b: _Builder,
    tag: str,
    times: list[int],
    keys: list[str | None] | None,
    positions: list[int],
    docs: list[bytes],
) -> list[bytes]:
    """``_actions`` for one index and ids from hashes only (Generate_ID, derived): no
    per-record calls besides the hash. Ids are hex, so they need no JSON escaping."""
    head = b.action_line(b.index_for(0, {}), None)[:-2].decode() + ',"_id":"'
    derived = s.id_mode == "derived"
    nkeys = len(keys) if keys is not None else 0
    tag0 = tag + "\x00"
    out: list[bytes] = []
    append = out.append
    for j, i in enumerate(positions):
        if derived:
            key = keys[i] if keys is not None and i < nkeys else None
            if key is not None:
                h = blake2b((tag0 + key).encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
                append((head + h + '"}}').encode())
                continue
            h = blake2b(docs[j] + times[i].to_bytes(16, "big", signed=True), digest_size=16).hexdigest()
        else:
            h = blake2b(docs[j], digest_size=16).hexdigest()
        append(f'{head}{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"}}}}'.encode())
    return out
