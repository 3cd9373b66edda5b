"""Delivery reports: which of a flush's messages librdkafka delivered, and which it could not.

librdkafka runs its own threads. The output's poller thread calls ``producer.poll`` and runs
the delivery callbacks; each flush counts its own reports and is woken through the trio
token when the last one arrives, so concurrent flushes (``Workers``) never wait for each
other and the event loop never blocks.

The per-message callback is a small native object (``KafkaReport``) that the cyclic GC does
not track and that carries the record's index, so each report maps back to exactly its
record (values may repeat; keys belong to the user). The pure-Python classes below do the
same, slower; the tests run both.
"""

from __future__ import annotations

import threading
from typing import Any

import trio
from confluent_kafka import KafkaError

from ._kafka import KafkaReports as _KafkaReports
from ._kafka import kafka_messages as _native_kafka_messages

__all__ = ["Reports", "Report", "py_kafka_messages", "kafka_messages", "new_reports"]


class Reports:
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


class Report:
    """Pure-Python delivery callback of one message (the native ``KafkaReport`` is what runs)."""

    __slots__ = ("reports", "index")

    def __init__(self, reports: Reports, index: int) -> None:
        self.reports = reports
        self.index = index

    def __call__(self, err: KafkaError | None, msg: Any) -> None:
        self.reports.report(self.index, err, msg)


def py_kafka_messages(values: list[bytes | None], keys: list[bytes | None] | None, reports: Any,
                      base: int = 0) -> list[dict[str, Any]]:
    """``produce_batch`` message dicts for the values that are not None (the native kernel's reference)."""
    out = []
    for i, v in enumerate(values):
        if v is None:
            continue
        m: dict[str, Any] = {"value": v, "callback": Report(reports, base + i)}
        if keys is not None and keys[i] is not None:
            m["key"] = keys[i]
        out.append(m)
    return out


def _native_reports(token: trio.lowlevel.TrioToken) -> Any:
    return _KafkaReports(token, trio.Event())


# What the output calls; the tests swap in the pure-Python versions.
kafka_messages = _native_kafka_messages
new_reports = _native_reports
