"""The ``kafka`` output: one Kafka message per record, through librdkafka (confluent-kafka).

Options are Fluent Bit's: ``Brokers``, ``Topics`` (the first is the default), ``Topic_Key``
and ``Dynamic_Topic``, ``Message_Key`` / ``Message_Key_Field``, ``Timestamp_Key`` and
``Timestamp_Format`` (``double``, ``iso8601`` with microseconds, ``iso8601_ns``),
``Format`` (``json``, ``msgpack``, ``gelf``, ``raw`` with ``Raw_Log_Key``),
``queue_full_retries`` and any ``rdkafka.<property>``, passed to librdkafka unchanged.

Unlike Fluent Bit, which reports a chunk delivered once librdkafka has *queued* it, a
chunk here is resolved only when librdkafka has a delivery report for every one of its
messages (at-least-once end to end):

- delivered reports: delivered;
- errors that retrying cannot fix (message too large, invalid topic, unknown topic with
  auto-creation off, invalid record): refused with librdkafka's error text, so the engine
  dead-letters exactly those records;
- everything else (``message.timeout.ms`` elapsed while the broker was down, transport
  errors, authorization errors an operator can fix): retried by the engine.

Messages go to librdkafka with ``Producer.produce_batch``, one call per topic per slice of
the chunk (per-record ``produce`` calls and a ``functools.partial`` callback per message
cost more CPU than everything else in a tail → kafka pipeline). JSON values are built by a
native kernel; the per-message delivery callback is a small native object that the cyclic
GC does not track and that carries the record's index, so each report maps back to exactly
its record (values may repeat; keys belong to the user). Headers are not used.

A full local queue (``_QUEUE_FULL`` on messages of a batch) is retried, one second apart,
up to ``queue_full_retries`` times in a row without progress (0: no limit), as Fluent Bit
retries a message; then the records not yet queued are handed back for a later retry while
the queued ones are still awaited.

librdkafka runs its own threads. A poller thread of ours calls ``producer.poll`` and runs
the delivery callbacks; each flush counts its own reports and is woken through the trio
token when the last one arrives, so concurrent flushes (``Workers``) never wait for each
other and the event loop never blocks.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from typing import Any

import trio
from confluent_kafka import KafkaError, KafkaException, Producer

from logfwd import formats
from logfwd.options import Option
from logfwd.plugin import Chunk, ConfigValueError, Output, Result

# Errors no retry can fix: the record goes to the dead-letter queue with the reason.
_REFUSE_CODES = frozenset(
    getattr(KafkaError, name)
    for name in (
        "MSG_SIZE_TOO_LARGE",
        "INVALID_MSG",
        "INVALID_MSG_SIZE",
        "TOPIC_EXCEPTION",
        "RECORD_LIST_TOO_LARGE",
        "INVALID_RECORD",
        "INVALID_TIMESTAMP",
        "UNKNOWN_TOPIC_OR_PART",
        "_UNKNOWN_TOPIC",
        "_BAD_MSG",
        "_INVALID_ARG",
    )
    if hasattr(KafkaError, name)
)
_QUEUE_FULL = KafkaError._QUEUE_FULL
_QUEUE_FULL_WAIT = 1.0  # seconds between local queue-full retries (Fluent Bit's value)
_SLICE = 4096  # records serialized and handed to librdkafka per call, between event-loop checkpoints
_TS_FORMATS = {"double": 0, "iso8601": 1, "iso8601_ns": 2}
_MAX_TOPIC_LEN = 249
_NS = 1_000_000_000


class _Refused(Exception):
    """A record that cannot become a message (no Raw_Log_Key, no GELF short message)."""


class _Reports:
    """Delivery reports of one flush, filled in by the poller thread.

    ``expected`` grows as messages are queued; once the flush has queued everything it
    calls ``close()``. The flush is woken when the reports of every queued message are in.
    """

    __slots__ = ("errors", "expected", "reported", "closed", "done", "lock", "token")

    def __init__(self, token: trio.lowlevel.TrioToken) -> None:
        self.errors: dict[int, KafkaError] = {}
        self.expected = 0
        self.reported = 0
        self.closed = False
        self.done = trio.Event()
        self.lock = threading.Lock()
        self.token = token

    def queued(self, n: int = 1) -> None:
        with self.lock:
            self.expected += n

    def report(self, index: int, err: KafkaError | None, _msg: Any = None) -> None:
        # Runs in the poller thread.
        if err is not None:
            self.errors[index] = err
        with self.lock:
            self.reported += 1
            finished = self.closed and self.reported == self.expected
        if finished:
            try:
                self.token.run_sync_soon(self.done.set)
            except trio.RunFinishedError:
                pass

    def close(self) -> None:
        # Runs in the trio thread.
        with self.lock:
            self.closed = True
            finished = self.reported == self.expected
        if finished:
            self.done.set()


class _Report:
    """Pure-Python delivery callback of one message (the native ``KafkaReport`` is used when built)."""

    __slots__ = ("reports", "index")

    def __init__(self, reports: _Reports, index: int) -> None:
        self.reports = reports
        self.index = index

    def __call__(self, err: KafkaError | None, msg: Any) -> None:
        self.reports.report(self.index, err, msg)


def _py_kafka_messages(values: list[bytes | None], keys: list[bytes | None] | None, reports: Any,
                       base: int = 0) -> list[dict[str, Any]]:
    out = []
    for i, v in enumerate(values):
        if v is None:
            continue
        m: dict[str, Any] = {"value": v, "callback": _Report(reports, base + i)}
        if keys is not None and keys[i] is not None:
            m["key"] = keys[i]
        out.append(m)
    return out


try:  # the Cython hot path: JSON values, per-message callbacks the GC does not track
    from logfwd._fastparse import KafkaReports as _KafkaReports
    from logfwd._fastparse import kafka_json_values as _json_values
    from logfwd._fastparse import kafka_messages as _kafka_messages

    def _new_reports(token: trio.lowlevel.TrioToken) -> Any:
        return _KafkaReports(token, trio.Event())
except ImportError:  # pragma: no cover - extension not built (or built before these kernels)
    _json_values = None
    _kafka_messages = _py_kafka_messages
    _new_reports = _Reports


class KafkaOutput(Output):
    name = "kafka"
    description = "Apache Kafka producer (librdkafka)"
    options = (
        Option("Brokers", "csv", None, "bootstrap brokers, e.g. 192.168.1.3:9092,192.168.1.4:9092"),
        Option("Topics", "csv", "fluent-bit", "topics, comma separated; the first is the default"),
        Option("Topic_Key", "str", None, "record key whose value picks the topic (if it is one of Topics)"),
        Option("Dynamic_Topic", "bool", "off", "use a Topic_Key value even when it is not in Topics"),
        Option("Message_Key", "str", None, "fixed message key"),
        Option("Message_Key_Field", "str", None, "record key whose string value is the message key"),
        Option("Timestamp_Key", "str", "@timestamp", "key added to the message with the record time"),
        Option("Timestamp_Format", "str", "double", "double, iso8601 (microseconds) or iso8601_ns",
               choices=("double", "iso8601", "iso8601_ns")),
        Option("Format", "str", "json", "message format", choices=("json", "msgpack", "gelf", "raw")),
        Option("Raw_Log_Key", "str", None, "with Format raw: the record key whose value is the message"),
        Option("queue_full_retries", "int", "10",
               "times to retry (1 s apart) when librdkafka's local queue is full; 0 = no limit", minimum=0),
        Option("client_id", "str", None, "Kafka client.id (default logfwd)"),
        Option("Gelf_Short_Message_Key", "str", None, "with Format gelf: key of the short message "
               "(default short_message)"),
        Option("Gelf_Full_Message_Key", "str", None, "with Format gelf: key of the full message"),
        Option("Gelf_Host_Key", "str", None, "with Format gelf: key of the host (default: this machine's name)"),
        Option("Gelf_Level_Key", "str", None, "with Format gelf: key of the level"),
        Option("Gelf_Timestamp_Key", "str", None, "with Format gelf: key of the timestamp (default: record time)"),
        Option("rdkafka.", "str", None, "any librdkafka property, e.g. rdkafka.compression.codec snappy",
               prefix=True),
    )

    # ------------------------------------------------------------ setup

    def setup(self) -> None:
        c = self.config
        self.rdkafka: dict[str, str] = {str(k): str(v) for k, v in (c["rdkafka."] or {}).items()}
        brokers = c["brokers"] or []
        if not brokers and not ({"bootstrap.servers", "metadata.broker.list"} & set(self.rdkafka)):
            raise ConfigValueError("brokers", "no brokers: set Brokers, e.g. Brokers 127.0.0.1:9092")
        self.brokers: list[str] = brokers
        self.topics: list[str] = c["topics"] or ["fluent-bit"]
        self.known_topics: set[str] = set(self.topics)
        self.topic_key: str | None = c["topic_key"] or None
        self.dynamic_topic: bool = c["dynamic_topic"]
        self.message_key: bytes | None = c["message_key"].encode() if c["message_key"] else None
        self.message_key_field: str | None = c["message_key_field"] or None
        self.timestamp_key: str = c["timestamp_key"] or "@timestamp"
        self.timestamp_format: str = c["timestamp_format"]
        self.format: str = c["format"]
        self.raw_log_key: str | None = c["raw_log_key"] or None
        if self.format == "raw" and not self.raw_log_key:
            raise ConfigValueError("raw_log_key", "Format raw needs Raw_Log_Key (the key whose value is sent)")
        if self.format == "msgpack":
            try:
                import msgpack  # noqa: F401
            except ImportError:
                raise ConfigValueError("format", "Format msgpack needs the 'msgpack' package (pip install msgpack)") from None
        self.queue_full_retries: int = c["queue_full_retries"]
        self.gelf_keys = {
            "short": c["gelf_short_message_key"] or "short_message",
            "full": c["gelf_full_message_key"],
            "host": c["gelf_host_key"],
            "level": c["gelf_level_key"],
            "timestamp": c["gelf_timestamp_key"],
        }
        self._hostname = socket.gethostname()
        self._ts_key_json = formats.json_dumps(self.timestamp_key)
        timeout_ms = self.rdkafka.get("message.timeout.ms") or self.rdkafka.get("delivery.timeout.ms") or "300000"
        try:
            self._report_deadline = float(timeout_ms) / 1000.0 + 60.0
        except ValueError:
            raise ConfigValueError("rdkafka.message.timeout.ms", f"expected milliseconds, got {timeout_ms!r}") from None
        self.producer: Producer | None = None
        self._poller: threading.Thread | None = None
        self._stop_polling = threading.Event()

    # ------------------------------------------------------------ lifecycle

    def _producer_conf(self) -> dict[str, Any]:
        conf: dict[str, Any] = {"client.id": self.config["client_id"] or "logfwd"}
        if self.brokers:
            conf["bootstrap.servers"] = ",".join(self.brokers)
        conf.update(self.rdkafka)
        conf["logger"] = self.log
        conf["error_cb"] = self._on_error
        return conf

    async def start(self) -> None:
        try:
            self.producer = Producer(self._producer_conf())
        except KafkaException as e:
            err = e.args[0]
            text = err.str() if isinstance(err, KafkaError) else str(e)
            raise ConfigValueError("rdkafka.", f"librdkafka refused the configuration: {text}") from None
        except (TypeError, ValueError) as e:
            raise ConfigValueError("rdkafka.", f"librdkafka refused the configuration: {e}") from None
        self._stop_polling.clear()
        self._poller = threading.Thread(target=self._poll_loop, name=f"kafka-poll-{self.ctx.instance}", daemon=True)
        self._poller.start()
        self.log.info("producing to %s (default topic %s)", ",".join(self.brokers) or "(rdkafka.*)", self.topics[0])

    def _poll_loop(self) -> None:
        producer = self.producer
        assert producer is not None
        while not self._stop_polling.is_set():
            try:
                producer.poll(0.1)
            except Exception as e:  # a callback bug must not kill delivery reports
                self.log.error("delivery report handling failed: %s", e)

    def _on_error(self, err: KafkaError) -> None:
        # Global client errors (all brokers down, auth): librdkafka keeps retrying by itself.
        self.log.warning("kafka: %s", err.str())

    async def stop(self) -> None:
        producer = self.producer
        if producer is None:
            return
        grace = float(self.ctx.service.get("grace") or 5)
        left = await trio.to_thread.run_sync(producer.flush, grace)
        if left:
            self.log.warning("%d message(s) still undelivered at shutdown; their chunks will be replayed", left)
        self._stop_polling.set()
        if self._poller is not None:
            await trio.to_thread.run_sync(self._poller.join, 5.0)
        self.producer = None

    # ------------------------------------------------------------ messages

    def _timestamp(self, ns: int) -> Any:
        if self.timestamp_format == "double":
            return ns / _NS
        sec, frac = divmod(ns, _NS)
        base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        if self.timestamp_format == "iso8601":
            return f"{base}.{frac // 1000:06d}Z"
        return f"{base}.{frac:09d}Z"

    def _topic(self, rec: dict[str, Any]) -> str:
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

    def _key(self, rec: dict[str, Any]) -> bytes | None:
        if self.message_key_field is not None:
            v = rec.get(self.message_key_field)
            if isinstance(v, str):
                return v.encode("utf-8", "surrogatepass")
            if isinstance(v, bytes):
                return v
        return self.message_key

    def _value(self, ns: int, rec: dict[str, Any]) -> bytes:
        fmt = self.format
        if fmt == "json":
            # The time key first, then the record, as Fluent Bit writes it.
            body = formats.json_dumps(rec)
            ts = formats.json_dumps(self._timestamp(ns))
            sep = b"," if len(body) > 2 else b""
            return b"{" + self._ts_key_json + b":" + ts + sep + body[1:]
        if fmt == "raw":
            assert self.raw_log_key is not None
            v = rec.get(self.raw_log_key)
            if v is None:
                raise _Refused(f"raw_log_key {self.raw_log_key!r} not found in the record")
            if isinstance(v, str):
                return v.encode("utf-8", "surrogatepass")
            if isinstance(v, (bytes, bytearray)):
                return bytes(v)
            return formats.json_dumps(v)
        if fmt == "msgpack":
            import msgpack

            doc = {self.timestamp_key: self._timestamp(ns)}
            doc.update(rec)
            return bytes(msgpack.packb(doc, default=_msgpack_default, unicode_errors="surrogatepass"))
        return self._gelf(ns, rec)

    def _gelf(self, ns: int, rec: dict[str, Any]) -> bytes:
        """GELF 1.1: version, host, short_message, timestamp, level, ``_``-prefixed extras."""
        keys = self.gelf_keys
        short = rec.get(keys["short"])
        if short is None or short == "":
            raise _Refused(f"GELF needs a short message: key {keys['short']!r} not found in the record")
        doc: dict[str, Any] = {"version": "1.1", "short_message": _text(short)}
        host = rec.get(keys["host"]) if keys["host"] else None
        doc["host"] = _text(host) if host not in (None, "") else self._hostname
        if keys["full"] and rec.get(keys["full"]) is not None:
            doc["full_message"] = _text(rec[keys["full"]])
        ts = rec.get(keys["timestamp"]) if keys["timestamp"] else None
        doc["timestamp"] = ts if isinstance(ts, (int, float)) and not isinstance(ts, bool) else ns / _NS
        if keys["level"] and rec.get(keys["level"]) is not None:
            lv = rec[keys["level"]]
            try:
                doc["level"] = int(lv)
            except (TypeError, ValueError):
                doc["_level"] = _text(lv)
        used = {k for k in keys.values() if k}
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

    # ------------------------------------------------------------ flush

    def _values(self, times: list[int], records: list[dict[str, Any]], base: int,
                refused: list[tuple[int, str]]) -> list[bytes | None]:
        """Message values of a slice of the chunk (None where the record is refused)."""
        if self.format == "json" and _json_values is not None:
            return _json_values(times, records, self._ts_key_json, _TS_FORMATS[self.timestamp_format],
                                formats._default, formats._OPTS, formats.json_dumps, self._ts_json)
        out: list[bytes | None] = []
        for i, rec in enumerate(records):
            try:
                out.append(self._value(times[i], rec))
            except _Refused as e:
                refused.append((base + i, str(e)))
                out.append(None)
        return out

    def _ts_json(self, t: Any) -> bytes:
        """The JSON of a record time the native kernel does not format itself."""
        return formats.json_dumps(self._timestamp(t))

    def _messages(self, values: list[bytes | None], records: list[dict[str, Any]], reports: Any,
                  base: int) -> list[tuple[str, list[dict[str, Any]]]]:
        """``produce_batch`` message dicts, grouped by topic, in record order within each topic."""
        keys: list[bytes | None] | None = None
        if self.message_key_field is not None:
            keys = [self._key(rec) for rec in records]
        elif self.message_key is not None:
            keys = [self.message_key] * len(values)
        msgs = _kafka_messages(values, keys, reports, base)
        if self.topic_key is None:
            return [(self.topics[0], msgs)]
        by_topic: dict[str, list[dict[str, Any]]] = {}
        for m in msgs:
            by_topic.setdefault(self._topic(records[m["callback"].index - base]), []).append(m)
        return list(by_topic.items())

    async def flush(self, chunk: Chunk) -> Result:
        producer = self.producer
        assert producer is not None, "flush before start"
        reports = _new_reports(trio.lowlevel.current_trio_token())
        refused: list[tuple[int, str]] = []
        not_queued: list[int] = []
        retry_reason = ""
        n = len(chunk.records)
        times = chunk.times
        records = chunk.records
        attempts = 0  # queue-full retries since the last progress (Fluent Bit retries per message)
        gave_up = False
        for base in range(0, n, _SLICE):
            if gave_up:
                not_queued.extend(range(base, min(base + _SLICE, n)))
                continue
            recs = records[base:base + _SLICE]
            values = self._values(times[base:base + _SLICE], recs, base, refused)
            groups = self._messages(values, recs, reports, base)
            del values
            for topic, pending in groups:
                if gave_up:
                    not_queued.extend(m["callback"].index for m in pending)
                    continue
                while True:
                    try:
                        good = producer.produce_batch(topic, pending)
                    except KafkaException as e:  # the whole batch: e.g. a topic librdkafka rejects outright
                        err = e.args[0]
                        if isinstance(err, KafkaError) and err.code() in _REFUSE_CODES:
                            refused.extend((m["callback"].index, f"{err.name()}: {err.str()}") for m in pending)
                        else:
                            not_queued.extend(m["callback"].index for m in pending)
                            retry_reason = str(err.str() if isinstance(err, KafkaError) else e)
                        break
                    except BufferError:  # documented, though 2.16 flags each message instead: nothing queued
                        good = 0
                        for m in pending:
                            m["_error"] = KafkaError(_QUEUE_FULL)
                    reports.queued(good)
                    if good == len(pending):
                        break
                    # Messages librdkafka did not take carry an "_error"; the others are queued.
                    full: list[dict[str, Any]] = []
                    for m in pending:
                        err = m.pop("_error", None)
                        if err is None:
                            continue
                        code = err.code()
                        if code == _QUEUE_FULL:
                            full.append(m)
                        elif code in _REFUSE_CODES:
                            refused.append((m["callback"].index, f"{err.name()}: {err.str()}"))
                        else:
                            not_queued.append(m["callback"].index)
                            retry_reason = err.str()
                    if not full:
                        break
                    attempts = 0 if good else attempts + 1
                    self.metrics.inc("queue_full")
                    if self.queue_full_retries and attempts > self.queue_full_retries:
                        gave_up = True
                        not_queued.extend(m["callback"].index for m in full)
                        break
                    self.log.warning("librdkafka queue is full, retrying in %gs", _QUEUE_FULL_WAIT)
                    await trio.sleep(_QUEUE_FULL_WAIT)
                    pending = full
            del groups
            await trio.lowlevel.checkpoint()  # a big chunk must not hog the loop
        if gave_up:
            retry_reason = f"librdkafka queue still full after {self.queue_full_retries} retries"
            self.log.warning("%s: %d record(s) will be retried later", retry_reason, len(not_queued))
        reports.close()
        # Wait for our own reports only. librdkafka reports every queued message within
        # message.timeout.ms; the deadline is a safety net against a lost callback.
        with trio.move_on_after(self._report_deadline) as scope:
            await reports.done.wait()

        retry = list(not_queued)
        for i, err in reports.errors.items():
            if err.code() in _REFUSE_CODES:
                refused.append((i, f"{err.name()}: {err.str()}"))
            else:
                retry.append(i)
                retry_reason = retry_reason or f"{err.name()}: {err.str()}"
        if scope.cancelled_caught:
            # Reports missing past the deadline: retry those records (may duplicate, never lose).
            with reports.lock:
                missing = reports.expected - reports.reported
            self.log.error("%d delivery report(s) missing after %.0fs; retrying their records",
                           missing, self._report_deadline)
            return Result.retry_everything("delivery reports missing")
        if retry:
            self.log.warning("%d message(s) not delivered (%s); will retry", len(retry), retry_reason)
        if refused:
            self.log.error("%d record(s) refused by Kafka, e.g. %s", len(refused), refused[0][1])
        if retry and not refused and len(retry) == n:
            return Result.retry_everything(retry_reason)
        if retry or refused:
            refused.sort()
            return Result(retry=sorted(retry) or None, refused=refused, reason=retry_reason or refused[0][1])
        return Result.ok()


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


PLUGIN = KafkaOutput
