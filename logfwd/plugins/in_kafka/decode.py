"""Kafka messages → records: payload decoding, record time, Fluent Bit's envelope.

One job: turn a list of confluent-kafka ``Message`` objects of one partition into the
parallel lists an ``Emitter`` takes. Kept apart from the consumer loop so it can be tested
without a broker and read on one screen.

Record shapes:

- ``Envelope on`` (Fluent Bit's shape): ``{"topic", "partition", "offset", "error", "key",
  "payload"}`` where ``payload`` is the value as a string (``Format none``) or the decoded
  object (``Format json`` / ``msgpack``).
- ``Envelope off`` (an aggregator reading what our ``kafka`` output wrote): the decoded
  object *is* the record; its ``Timestamp_Key`` (``@timestamp`` by default, as the output
  writes it) is removed and becomes the record time. ``Format none`` puts the value under
  ``Raw_Log_Key``.

The record time is, in order: the decoded timestamp key (``Envelope off``), the message's
Kafka timestamp, the time of reading.
"""

from __future__ import annotations

import calendar
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgpack
import orjson

_NS = 1_000_000_000


class DecodeError(ValueError):
    """A payload that is not valid for the configured Format."""


def _decode_none(value: bytes) -> Any:
    return value.decode("utf-8", "replace")


def _decode_json(value: bytes) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as e:
        raise DecodeError(f"invalid JSON: {e}") from None


def _decode_msgpack(value: bytes) -> Any:
    try:
        return msgpack.unpackb(value, raw=False, unicode_errors="replace", strict_map_key=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
        raise DecodeError(f"invalid msgpack: {e}") from None


DECODERS: dict[str, Callable[[bytes], Any]] = {
    "none": _decode_none,
    "json": _decode_json,
    "msgpack": _decode_msgpack,
}

_iso_cache: dict[str, int] = {}


def _iso_seconds(base: str) -> int:
    """Epoch seconds of ``YYYY-MM-DDTHH:MM:SS`` (UTC), cached: records of one second share it."""
    s = _iso_cache.get(base)
    if s is None:
        if len(_iso_cache) > 4096:
            _iso_cache.clear()
        s = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
        _iso_cache[base] = s
    return s


def parse_time(v: Any) -> int | None:
    """Nanoseconds from what the kafka output writes: a double, or ISO 8601 (µs or ns, ``Z``).

    Anything else with a timezone that ``datetime.fromisoformat`` reads is accepted too;
    ``None`` when the value is not a time (the caller falls back to the Kafka timestamp).
    The ``...Z`` form is the common case (one per record) and is parsed first, cheaply.
    """
    if type(v) is str:
        if len(v) >= 20 and v[-1] == "Z" and v[10] == "T":
            base = v[:19]
            sec = _iso_cache.get(base)
            frac = v[20:-1] if v[19] == "." else ""
            if sec is not None and frac.isdigit():
                return sec * _NS + int(frac) * _SCALE[len(frac)] if len(frac) <= 9 else None
        return _parse_time_slow(v)
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v * _NS
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            return None
        whole = math.floor(v)  # v - whole is exact, so the fraction keeps every bit the double has
        return whole * _NS + round((v - whole) * _NS)
    return None


_SCALE = [10 ** (9 - n) for n in range(10)]


def _parse_time_slow(v: str) -> int | None:
    if len(v) >= 20 and v[-1] == "Z" and v[10] == "T":
        try:
            sec = _iso_seconds(v[:19])
            frac = v[20:-1] if v[19] == "." else ""
            if frac and (not frac.isdigit() or len(frac) > 9):
                return None
            return sec * _NS + (int(frac) * _SCALE[len(frac)] if frac else 0)
        except ValueError:
            return None
    try:
        dt = datetime.fromisoformat(v)
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    return int(dt.timestamp()) * _NS + dt.microsecond * 1000


@dataclass(frozen=True, slots=True)
class DecodeSettings:
    format: str  # none, json, msgpack
    envelope: bool
    timestamp_key: str | None
    raw_log_key: str
    metadata_key: str | None


def _text(b: bytes | None) -> str | None:
    return None if b is None else b.decode("utf-8", "replace")


def _metadata(msg: Any, ts_ms: int | None) -> dict[str, Any]:
    headers = msg.headers()
    return {
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
        "key": _text(msg.key()),
        "timestamp": ts_ms,
        "headers": {k: _text(v) for k, v in headers} if headers else {},
    }


def decode_messages(
    msgs: Sequence[Any], s: DecodeSettings, now_ns: int, on_error: Callable[[Any, str], None]
) -> tuple[list[dict[str, Any]], list[int], int]:
    """Records, times and payload bytes of ``msgs`` (one partition, in offset order).

    A payload that does not decode is kept, as text, under ``Raw_Log_Key`` (``payload`` in
    the envelope) with ``on_error(msg, reason)`` called: bad input loses nothing.
    """
    decode = DECODERS[s.format]
    envelope, ts_key, raw_key, meta_key = s.envelope, s.timestamp_key, s.raw_log_key, s.metadata_key
    records: list[dict[str, Any]] = []
    times: list[int] = []
    nbytes = 0
    for msg in msgs:
        value = msg.value()
        ts_type, ts_ms = msg.timestamp()
        t = ts_ms * 1_000_000 if ts_type and ts_ms >= 0 else now_ns
        if value is None:
            payload: Any = None
        else:
            nbytes += len(value)
            try:
                payload = decode(value)
            except DecodeError as e:
                on_error(msg, str(e))
                payload = _decode_none(value)
        if envelope:
            rec: dict[str, Any] = {
                "topic": msg.topic(),
                "partition": msg.partition(),
                "offset": msg.offset(),
                "error": None,
                "key": _text(msg.key()),
                "payload": payload,
            }
        elif isinstance(payload, dict) and s.format != "none":
            rec = payload
            if ts_key is not None and ts_key in rec:
                parsed = parse_time(rec[ts_key])
                if parsed is not None:
                    del rec[ts_key]
                    t = parsed
        else:
            rec = {raw_key: payload}
        if meta_key is not None:
            rec[meta_key] = _metadata(msg, ts_ms if ts_type else None)
        records.append(rec)
        times.append(t)
    return records, times, nbytes
