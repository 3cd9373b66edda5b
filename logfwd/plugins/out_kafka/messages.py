"""Records → Kafka messages: values in each ``Format``, keys, topics.

``Format``: ``json`` (the time key first, then the record, as Fluent Bit writes it; built
by a native kernel), ``msgpack``, ``gelf`` (1.1) or ``raw`` (one key's value). A record
that cannot become a message (no ``Raw_Log_Key``, no GELF short message) is refused with
the reason rather than sent empty.
"""

from __future__ import annotations

import logging
import math
import socket
import time
from dataclasses import dataclass
from typing import Any

import msgpack

from logfwd import formats

from ._kafka import kafka_json_values

_TS_FORMATS = {"double": 0, "iso8601": 1, "iso8601_ns": 2}
_MAX_TOPIC_LEN = 249
_NS = 1_000_000_000

# The native JSON values kernel; the tests set it to None to run the per-record code.
_json_values: Any = kafka_json_values


class Refused(Exception):
    """A record that cannot become a message (no Raw_Log_Key, no GELF short message)."""


@dataclass(slots=True)
class GelfKeys:
    short: str
    full: str | None
    host: str | None
    level: str | None
    timestamp: str | None


class MessageEncoder:
    """Values, keys and topics for the records of a chunk, per the output's settings."""

    def __init__(self, settings: Any, log: logging.Logger) -> None:
        s = settings
        self.log = log
        self.topics: list[str] = s.topics or ["fluent-bit"]
        self.known_topics: set[str] = set(self.topics)
        self.topic_key: str | None = s.topic_key or None
        self.dynamic_topic: bool = bool(s.dynamic_topic)
        self.message_key: bytes | None = s.message_key.encode() if s.message_key else None
        self.message_key_field: str | None = s.message_key_field or None
        self.timestamp_key: str = s.timestamp_key or "@timestamp"
        self.timestamp_format: str = s.timestamp_format
        self.format: str = s.format
        self.raw_log_key: str | None = s.raw_log_key or None
        self.gelf = GelfKeys(s.gelf_short_message_key or "short_message", s.gelf_full_message_key,
                             s.gelf_host_key, s.gelf_level_key, s.gelf_timestamp_key)
        self._hostname = socket.gethostname()
        self._ts_key_json = formats.json_dumps(self.timestamp_key)

    # ------------------------------------------------------------ values

    def values(self, times: list[int], records: list[dict[str, Any]], base: int,
               refused: list[tuple[int, str]]) -> list[bytes | None]:
        """Message values of a slice of the chunk (None where the record is refused)."""
        if self.format == "json" and _json_values is not None:
            return _json_values(times, records, self._ts_key_json, _TS_FORMATS[self.timestamp_format],
                                formats._default, formats._OPTS, formats.json_dumps, self._ts_json)
        out: list[bytes | None] = []
        for i, rec in enumerate(records):
            try:
                out.append(self.value(times[i], rec))
            except Refused as e:
                refused.append((base + i, str(e)))
                out.append(None)
        return out

    def value(self, ns: int, rec: dict[str, Any]) -> bytes:
        """The message value of one record (the reference for the native JSON kernel)."""
        fmt = self.format
        if fmt == "json":
            # The time key first, then the record, as Fluent Bit writes it.
            body = formats.json_dumps(rec)
            ts = formats.json_dumps(self._timestamp(ns))
            sep = b"," if len(body) > 2 else b""
            return b"{" + self._ts_key_json + b":" + ts + sep + body[1:]
        if fmt == "raw":
            return self._raw(rec)
        if fmt == "msgpack":
            doc = {self.timestamp_key: self._timestamp(ns)}
            doc.update(rec)
            return bytes(msgpack.packb(doc, default=_msgpack_default, unicode_errors="surrogatepass"))
        return self._gelf(ns, rec)

    def _raw(self, rec: dict[str, Any]) -> bytes:
        assert self.raw_log_key is not None
        v = rec.get(self.raw_log_key)
        if v is None:
            raise Refused(f"raw_log_key {self.raw_log_key!r} not found in the record")
        if isinstance(v, str):
            return v.encode("utf-8", "surrogatepass")
        if isinstance(v, (bytes, bytearray)):
            return bytes(v)
        return formats.json_dumps(v)

    def _timestamp(self, ns: int) -> Any:
        if self.timestamp_format == "double":
            return ns / _NS
        sec, frac = divmod(ns, _NS)
        base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        if self.timestamp_format == "iso8601":
            return f"{base}.{frac // 1000:06d}Z"
        return f"{base}.{frac:09d}Z"

    def _ts_json(self, t: Any) -> bytes:
        """The JSON of a record time the native kernel does not format itself."""
        return formats.json_dumps(self._timestamp(t))

    def _gelf(self, ns: int, rec: dict[str, Any]) -> bytes:
        """GELF 1.1: version, host, short_message, timestamp, level, ``_``-prefixed extras."""
        keys = self.gelf
        short = rec.get(keys.short)
        if short is None or short == "":
            raise Refused(f"GELF needs a short message: key {keys.short!r} not found in the record")
        doc: dict[str, Any] = {"version": "1.1", "short_message": _text(short)}
        host = rec.get(keys.host) if keys.host else None
        doc["host"] = _text(host) if host not in (None, "") else self._hostname
        if keys.full and rec.get(keys.full) is not None:
            doc["full_message"] = _text(rec[keys.full])
        ts = rec.get(keys.timestamp) if keys.timestamp else None
        doc["timestamp"] = ts if isinstance(ts, (int, float)) and not isinstance(ts, bool) else ns / _NS
        if keys.level and rec.get(keys.level) is not None:
            lv = rec[keys.level]
            try:
                doc["level"] = int(lv)
            except (TypeError, ValueError):
                doc["_level"] = _text(lv)
        used = {k for k in (keys.short, keys.full, keys.host, keys.level, keys.timestamp) if k}
        for k, v in _flatten_underscore(rec):
            if k in used or v is None:
                continue
            name = "_" + k
            if name == "_id":
                name = "__id"  # "_id" is reserved by the GELF spec
            if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
                continue
            doc[name] = v if isinstance(v, (int, float, str)) and not isinstance(v, bool) else _text(v)
        return formats.json_dumps(doc)

    # ------------------------------------------------------------ keys and topics

    def key(self, rec: dict[str, Any]) -> bytes | None:
        if self.message_key_field is not None:
            v = rec.get(self.message_key_field)
            if isinstance(v, str):
                return v.encode("utf-8", "surrogatepass")
            if isinstance(v, bytes):
                return v
        return self.message_key

    def topic(self, rec: dict[str, Any]) -> str:
        default = self.topics[0]
        if self.topic_key is None:
            return default
        v = rec.get(self.topic_key)
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        if not isinstance(v, str) or not v:
            return default
        if v in self.known_topics:
            return v
        if self.dynamic_topic:
            if "," in v or len(v) > _MAX_TOPIC_LEN:
                self.log.warning("topic %r from %s is not a valid topic name; using %s", v, self.topic_key, default)
                return default
            self.known_topics.add(v)
            self.log.info("new topic added: %s", v)
            return v
        return default

    def groups(self, values: list[bytes | None], records: list[dict[str, Any]],
               base: int) -> list[tuple[str, list[bytes | None], list[bytes | None] | None, list[int] | None]]:
        """The slice's messages by topic: ``(topic, values, keys, record indices)``, in record order.

        With one topic the lists are the slice's own (None values are skipped by the producer,
        indices are ``base + i``); with ``Topic_Key`` each topic gets its records' values, keys
        and indices.
        """
        keys: list[bytes | None] | None = None
        if self.message_key_field is not None:
            keys = [self.key(rec) for rec in records]
        elif self.message_key is not None:
            keys = [self.message_key] * len(values)
        if self.topic_key is None:
            return [(self.topics[0], values, keys, None)]
        by_topic: dict[str, tuple[list[bytes | None], list[bytes | None] | None, list[int]]] = {}
        for i, v in enumerate(values):
            if v is None:
                continue
            topic = self.topic(records[i])
            group = by_topic.get(topic)
            if group is None:
                group = by_topic[topic] = ([], None if keys is None else [], [])
            group[0].append(v)
            if keys is not None:
                group[1].append(keys[i])  # type: ignore[union-attr]
            group[2].append(base + i)
        return [(topic, vs, ks, ix) for topic, (vs, ks, ix) in by_topic.items()]


def _text(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8", "replace")
    return formats.json_dumps(v).decode()


def _flatten_underscore(rec: dict[Any, Any], prefix: str = "") -> Any:
    for k, v in rec.items():
        key = f"{prefix}_{k}" if prefix else str(k)
        if isinstance(v, dict):
            yield from _flatten_underscore(v, key)
        else:
            yield key, v


def _msgpack_default(v: Any) -> Any:
    if isinstance(v, (set, frozenset, tuple)):
        return list(v)
    return str(v)
