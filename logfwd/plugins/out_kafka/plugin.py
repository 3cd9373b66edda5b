"""The ``kafka`` output: one Kafka message per record, through librdkafka (confluent-kafka).

Options are Fluent Bit's: ``Brokers``, ``Topics`` (the first is the default), ``Topic_Key``
and ``Dynamic_Topic``, ``Message_Key`` / ``Message_Key_Field``, ``Timestamp_Key`` and
``Timestamp_Format`` (``double``, ``iso8601`` with microseconds, ``iso8601_ns``),
``Format`` (``json``, ``msgpack``, ``gelf``, ``raw`` with ``Raw_Log_Key``),
``queue_full_retries`` and any ``rdkafka.<property>``, passed to librdkafka unchanged.

Unlike Fluent Bit, which reports a chunk delivered once librdkafka has *queued* it, a
chunk here is resolved only when librdkafka has settled every one of its messages
(at-least-once end to end; ``_rdkafka.pyx`` counts the reports):

- delivered reports: delivered;
- errors that retrying cannot fix (message too large, invalid topic, unknown topic with
  auto-creation off, invalid record): refused with librdkafka's error text, so the engine
  dead-letters exactly those records;
- everything else (``message.timeout.ms`` elapsed while the broker was down, transport
  errors, authorization errors an operator can fix): retried by the engine.

Messages go to librdkafka with ``rd_kafka_produce_batch``, one call per topic per slice of
the chunk, through the output's own small binding (``_rdkafka.pyx``: confluent-kafka's
``Producer`` cost more CPU than everything else in a tail → kafka pipeline, see there).
Delivery reports are counted in C per flush; a flush is settled when every one of its
messages is reported, and each failure names its record. Values, keys and topics are
``messages.py``. Headers are not used. ``rdkafka.delivery.report.only.error`` has no effect
(every report is needed to know a flush is settled, and costs nothing in Python).

A full local queue (``_QUEUE_FULL``, or ``BufferError``) stops the flush from queuing
more: the records not yet queued are handed back to the engine, which retries them with
backoff and ``Retry_Limit`` (outputs never loop on retries), while the queued ones are
still awaited. ``queue_full_retries`` is accepted and has no effect.

The ``tls.*`` options map onto librdkafka's: ``security.protocol=SSL``,
``ssl.ca.location``, ``ssl.certificate.location``, ``ssl.key.location``,
``ssl.key.password``, ``enable.ssl.certificate.verification``,
``ssl.endpoint.identification.algorithm`` and ``ssl.cipher.suites``; an ``rdkafka.*``
property of the same name wins (Fluent Bit's kafka output takes only ``rdkafka.*``).
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import Any

import trio
from confluent_kafka import KafkaError

from logfwd.engine.results import Outcomes
from logfwd.net.tls import TLS_OPTIONS, tls_context
from logfwd.options import Option, OptionError, parse_bool
from logfwd.plugin import Chunk, ConfigValueError, Output, Result

from . import _rdkafka as rdk
from .messages import MessageEncoder

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
_SLICE = 4096  # records serialized and handed to librdkafka per call, between event-loop checkpoints

_NO_SNI = "librdkafka sends each broker's own host name in SNI"
_NO_VERSIONS = "librdkafka has no TLS version bounds; use rdkafka.ssl.* properties"
_UNSUPPORTED_TLS = {"tls.vhost": _NO_SNI, "tls.min_version": _NO_VERSIONS, "tls.max_version": _NO_VERSIONS}


def _kafka_tls_options() -> tuple[Option, ...]:
    """The core tls.* group, with what librdkafka cannot do marked as such."""
    return tuple(dataclasses.replace(o, unsupported=_UNSUPPORTED_TLS[o.key]) if o.key in _UNSUPPORTED_TLS else o
                 for o in TLS_OPTIONS)


def tls_properties(config: dict[str, Any]) -> dict[str, str]:
    """librdkafka properties for the ``tls.*`` options (empty with tls off)."""
    if not config.get("tls"):
        return {}
    props = {"security.protocol": "SSL"}
    ca = config.get("tls.ca_file") or config.get("tls.ca_path")
    for key, value in (("ssl.ca.location", ca), ("ssl.certificate.location", config.get("tls.crt_file")),
                       ("ssl.key.location", config.get("tls.key_file")),
                       ("ssl.key.password", config.get("tls.key_passwd")),
                       ("ssl.cipher.suites", config.get("tls.ciphers"))):
        if value:
            props[key] = str(value)
    verify = bool(config.get("tls.verify"))
    props["enable.ssl.certificate.verification"] = "true" if verify else "false"
    props["ssl.endpoint.identification.algorithm"] = "https" if verify and config.get("tls.verify_hostname") else "none"
    return props


@dataclass(slots=True)
class _Queueing:
    """What one flush learned while queuing: verdicts so far, and whether the queue filled up."""

    outcomes: Outcomes
    reports: rdk.Flush
    full: bool = False


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
        Option("queue_full_retries", "int", "10", "Fluent Bit's retries on a full librdkafka queue", minimum=0,
               unsupported="a full queue hands the records not yet queued back to the engine, which retries "
                           "them with backoff and Retry_Limit"),
        Option("client_id", "str", None, "Kafka client.id (default logfwd)"),
        Option("Gelf_Short_Message_Key", "str", None, "with Format gelf: key of the short message "
               "(default short_message)"),
        Option("Gelf_Full_Message_Key", "str", None, "with Format gelf: key of the full message"),
        Option("Gelf_Host_Key", "str", None, "with Format gelf: key of the host (default: this machine's name)"),
        Option("Gelf_Level_Key", "str", None, "with Format gelf: key of the level"),
        Option("Gelf_Timestamp_Key", "str", None, "with Format gelf: key of the timestamp (default: record time)"),
        Option("rdkafka.", "str", None, "any librdkafka property, e.g. rdkafka.compression.codec snappy",
               prefix=True),
        *_kafka_tls_options(),
    )

    # ------------------------------------------------------------ setup

    def setup(self) -> None:
        s = self.settings
        self.rdkafka: dict[str, str] = {str(k): str(v) for k, v in (s.rdkafka or {}).items()}
        brokers = s.brokers or []
        if not brokers and not ({"bootstrap.servers", "metadata.broker.list"} & set(self.rdkafka)):
            raise ConfigValueError("brokers", "no brokers: set Brokers, e.g. Brokers 127.0.0.1:9092")
        self.brokers: list[str] = brokers
        if s.format == "raw" and not s.raw_log_key:
            raise ConfigValueError("raw_log_key", "Format raw needs Raw_Log_Key (the key whose value is sent)")
        self.encoder = MessageEncoder(s, self.log)
        tls_context(self.config)  # the certificate files must be readable: a config error now, not at connect
        self.tls = tls_properties(self.config)
        timeout_ms = self.rdkafka.get("message.timeout.ms") or self.rdkafka.get("delivery.timeout.ms") or "300000"
        try:
            self._report_deadline = float(timeout_ms) / 1000.0 + 60.0
        except ValueError:
            raise ConfigValueError("rdkafka.message.timeout.ms", f"expected milliseconds, got {timeout_ms!r}") from None
        only_error = self.rdkafka.pop("delivery.report.only.error", None)
        if only_error is not None:
            try:
                parse_bool(only_error)
            except OptionError:
                raise ConfigValueError("rdkafka.delivery.report.only.error",
                                       f"expected true or false, got {only_error!r}") from None
            self.log.warning("rdkafka.delivery.report.only.error %s has no effect: the output counts every "
                             "delivery report itself, in C, to know when a flush is settled", only_error)
        self.producer: rdk.Producer | None = None
        self._poller: threading.Thread | None = None
        self._stop_polling = threading.Event()

    # ------------------------------------------------------------ lifecycle

    def _producer_conf(self) -> dict[str, str]:
        conf: dict[str, str] = {"client.id": self.settings.client_id or "logfwd"}
        if self.brokers:
            conf["bootstrap.servers"] = ",".join(self.brokers)
        conf.update(self.tls)
        conf.update(self.rdkafka)  # rdkafka.* wins over what the tls.* options say
        conf["delivery.report.only.error"] = "false"  # every report settles its flush (see the module)
        return conf

    async def start(self) -> None:
        try:
            self.producer = rdk.Producer(self._producer_conf(), self.log)
        except rdk.ConfigError as e:
            key = f"rdkafka.{e.key}" if e.key else "rdkafka."
            raise ConfigValueError(key, f"librdkafka refused the configuration: {e}") from None
        except ImportError as e:
            raise ConfigValueError("brokers", f"the kafka output needs librdkafka: {e}") from None
        self._stop_polling.clear()
        self._poller = threading.Thread(target=self._poll_loop, name=f"kafka-poll-{self.ctx.instance}", daemon=True)
        self._poller.start()
        self.log.info("producing to %s (default topic %s)", ",".join(self.brokers) or "(rdkafka.*)",
                      self.encoder.topics[0])

    def _poll_loop(self) -> None:
        """The one thread that serves librdkafka's reports, errors and logs, and wakes settled flushes."""
        producer = self.producer
        assert producer is not None
        while not self._stop_polling.is_set():
            try:
                producer.poll(100)
                for flush in producer.settled():
                    flush.settle()
            except Exception as e:  # a bug here must not stop delivery reports
                self.log.error("delivery report handling failed: %s", e)

    async def stop(self) -> None:
        producer = self.producer
        if producer is None:
            return
        grace = float(self.ctx.service.get("grace") or 5)
        with trio.move_on_after(grace):
            while producer.awaiting:  # every report in (len() would also count error/log events)
                await trio.sleep(0.05)
        self._stop_polling.set()
        if self._poller is not None:
            await trio.to_thread.run_sync(self._poller.join, 5.0)
        self.producer = None  # nothing may produce into a producer being destroyed
        left = await trio.to_thread.run_sync(producer.close)
        if left:
            self.log.warning("%d message(s) still undelivered at shutdown; their chunks will be replayed", left)
        for flush in producer.settled():  # purged messages were reported failed: their flushes retry
            flush.settle()

    # ------------------------------------------------------------ flush

    async def flush(self, chunk: Chunk) -> Result:
        assert self.producer is not None, "flush before start"
        reports = rdk.Flush(trio.Event(), trio.lowlevel.current_trio_token())
        state = _Queueing(Outcomes(), reports)
        n = len(chunk.records)
        for base in range(0, n, _SLICE):
            if state.full:
                state.outcomes.add_retry(range(base, min(base + _SLICE, n)))
                continue
            self._queue_slice(chunk, base, state)
            await trio.lowlevel.checkpoint()  # a big chunk must not hog the loop
        if state.full:
            self.metrics.inc("queue_full")
            self.log.warning("librdkafka queue is full: %d record(s) handed back for a later retry",
                             len(state.outcomes.retry))
        # Closed only now that every produce call returned: the poller settles it from here on.
        reports.closed = True
        if not self.producer.forget(reports):
            # librdkafka settles every queued message within message.timeout.ms; the
            # deadline is a safety net against a report that never comes.
            with trio.move_on_after(self._report_deadline) as scope:
                await reports.done.wait()
            if scope.cancelled_caught:
                # Not settled past the deadline: retry the records (may duplicate, never lose).
                self.log.error("%d message(s) still unsettled after %.0fs; retrying the chunk",
                               reports.pending, self._report_deadline)
                return Result.retry_everything("delivery reports missing")
        return self._result(state.outcomes, reports, n)

    def _queue_slice(self, chunk: Chunk, base: int, state: _Queueing) -> None:
        """Serialize the records of one slice and hand them to librdkafka, topic by topic."""
        records = chunk.records[base:base + _SLICE]
        refused: list[tuple[int, str]] = []
        values = self.encoder.values(chunk.times[base:base + _SLICE], records, base, refused)
        state.outcomes.refused.extend(refused)
        for topic, vals, keys, indices in self.encoder.groups(values, records, base):
            if state.full:
                state.outcomes.add_retry(_indices(vals, base, indices))
            else:
                self._produce(topic, vals, keys, base, indices, state)

    def _produce(self, topic: str, values: list[bytes | None], keys: list[bytes | None] | None, base: int,
                 indices: list[int] | None, state: _Queueing) -> None:
        """One ``rd_kafka_produce_batch`` call; what librdkafka did not take is refused or retried."""
        assert self.producer is not None
        out = state.outcomes
        try:
            not_taken = self.producer.produce(state.reports, topic, values, keys, base, indices)
        except rdk.ConfigError as e:  # the whole batch: a topic name librdkafka rejects outright
            out.add_refused(_indices(values, base, indices), str(e))
            return
        for index, code in not_taken:
            if code == _QUEUE_FULL:
                state.full = True
                out.add_retry((index,), "librdkafka queue is full")
            elif code in _REFUSE_CODES:
                out.add_refused((index,), _error_text(code))
            else:
                out.add_retry((index,), _error_text(code))

    def _result(self, out: Outcomes, reports: rdk.Flush, n: int) -> Result:
        """Queuing verdicts plus delivery reports, as the chunk's Result."""
        for index, code in reports.failures():
            if code in _REFUSE_CODES:
                out.add_refused((index,), _error_text(code))
            else:
                out.add_retry((index,), _error_text(code))
        if out.retry:
            self.log.warning("%d message(s) not delivered (%s); will retry", len(out.retry), out.reason)
        if out.refused:
            self.log.error("%d record(s) refused by Kafka, e.g. %s", len(out.refused), sorted(out.refused)[0][1])
        return out.result(n)


def _indices(values: list[bytes | None], base: int, indices: list[int] | None) -> list[int]:
    """The record indices of a group's messages (as ``Producer.produce`` numbers them)."""
    if indices is not None:
        return indices
    return [base + i for i, v in enumerate(values) if v is not None]


def _error_text(code: int) -> str:
    return f"{rdk.err_name(code)}: {rdk.err_text(code)}"


PLUGIN = KafkaOutput
