"""Delivery reports: which of a flush's messages librdkafka could not deliver, and when all are settled.

librdkafka reports every message once: delivered, or failed with an error. Handing each
success to Python (a ``Message`` object, an argument tuple and a call per message, in the
poller thread) cost about a quarter of a CPU second per million messages, so the producer
runs with ``delivery.report.only.error``: confluent-kafka calls back only for failures,
and a flush knows its messages are settled when the producer's queue is empty
(``len(producer)`` counts messages not yet delivered or failed and reports not yet
served). A flush whose messages are all queued is *closed*; the poller thread, after each
``poll``, wakes every closed flush once the queue is empty. It reads which flushes are
closed *before* it reads the queue length, and a flush closes only after its last
``produce_batch`` returned, so an empty queue seen afterwards includes every one of their
messages. Concurrent flushes (``Workers``) settle together when the queue drains, which it
does because no flush queues more once it is waiting.

A failure names the topic, key and value of the message; ``FlushReports.match`` maps it
back to one queued record with exactly that message (records whose messages are equal
are interchangeable: re-sending either sends the same message).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import trio
from confluent_kafka import KafkaError

from ._kafka import kafka_messages as _native_kafka_messages

__all__ = ["FlushReports", "Waiting", "py_kafka_messages", "kafka_messages"]


class FlushReports:
    """One flush's failed deliveries (filled in by the poller thread) and its settled event.

    The instance is the delivery callback given to ``produce_batch``; with
    ``delivery.report.only.error`` it is called for failed messages only, and a success
    reported anyway (the option turned off by the user) is ignored.
    """

    __slots__ = ("failures", "closed", "done", "token", "sent")

    def __init__(self, token: trio.lowlevel.TrioToken) -> None:
        self.failures: list[tuple[KafkaError, str, bytes | None, bytes | None]] = []
        self.closed = False
        self.done = trio.Event()
        self.token = token
        self.sent: list[tuple[str, list[dict[str, Any]]]] = []  # (topic, queued message dicts)

    def __call__(self, err: KafkaError | None, msg: Any) -> None:
        # Runs in the poller thread.
        if err is not None:
            self.failures.append((err, msg.topic(), msg.key(), msg.value()))

    def settle(self) -> None:
        """Wake the flush (from the poller thread)."""
        try:
            self.token.run_sync_soon(self.done.set)
        except trio.RunFinishedError:  # nobody is waiting any more
            pass

    def match(self) -> tuple[dict[int, KafkaError], int]:
        """The record index of each failure, and how many failures matched no queued message."""
        by_message: dict[tuple[str, bytes | None, bytes | None], list[int]] = {}
        for topic, msgs in self.sent:
            for m in msgs:
                by_message.setdefault((topic, m.get("key"), m["value"]), []).append(m["i"])
        found: dict[int, KafkaError] = {}
        unmatched = 0
        for err, topic, key, value in self.failures:
            candidates = by_message.get((topic, key, value))
            if candidates:
                found[candidates.pop()] = err
            else:
                unmatched += 1
        return found, unmatched


class Waiting:
    """The closed-or-queuing flushes of one producer, settled by the poller when its queue is empty."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flushes: list[FlushReports] = []

    def add(self, r: FlushReports) -> None:
        with self._lock:
            self._flushes.append(r)

    def remove(self, r: FlushReports) -> None:
        with self._lock:
            if r in self._flushes:
                self._flushes.remove(r)

    def check(self, queue_length: Callable[[], int]) -> None:
        """After each poll (poller thread) and as a flush closes: settle the closed flushes if nothing is outstanding."""
        with self._lock:
            closed = [r for r in self._flushes if r.closed]  # read before the queue length (see above)
        if closed and queue_length() == 0:
            with self._lock:
                for r in closed:
                    if r in self._flushes:
                        self._flushes.remove(r)
            for r in closed:
                r.settle()


def py_kafka_messages(values: Iterable[bytes | None], keys: list[bytes | None] | None,
                      base: int = 0) -> list[dict[str, Any]]:
    """``produce_batch`` message dicts for the values that are not None (the native kernel's reference)."""
    out = []
    for i, v in enumerate(values):
        if v is None:
            continue
        m: dict[str, Any] = {"value": v, "i": base + i}
        if keys is not None and keys[i] is not None:
            m["key"] = keys[i]
        out.append(m)
    return out


# What the output calls; the tests swap in the pure-Python version.
kafka_messages = _native_kafka_messages
