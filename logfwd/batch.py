"""Batches, output chunks, delivery results and acknowledgements.

Everything moves in batches: per-record Python overhead is the main cost in this
language, so a batch is parallel lists (timestamps, record dicts, optional
origin keys) under one tag and one acknowledgement handle.

Acknowledgement model (at-least-once): each batch carries an ``AckHandle``. The
router adds one pending reference per output the batch is routed to; an output
buffer releases its reference when the chunk holding the batch is delivered or
dead-lettered. When the count reaches zero the handle completes. Inputs that
checkpoint (tail offsets, journal cursors) create handles through an
``AckTracker``, which turns out-of-order completions into an ordered watermark:
the highest position below which everything is acknowledged.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from .originkeys import KeyColumn, take

__all__ = ["Batch", "Chunk", "Result", "AckHandle", "AckTracker", "MemBudget"]


class AckHandle:
    """Completes once every output a batch was routed to has resolved it.

    ``pending`` starts at 1 (the emitter's own reference) so that a handle cannot
    complete while it is still being routed; the emitter calls ``done()`` once
    routing is finished.
    """

    __slots__ = ("pending", "completed", "_callbacks", "nbytes")

    def __init__(self, nbytes: int = 0) -> None:
        self.pending = 1
        self.completed = False
        self.nbytes = nbytes
        self._callbacks: list[Callable[[AckHandle], None]] = []

    def on_complete(self, cb: Callable[[AckHandle], None]) -> None:
        """Run ``cb(handle)`` on completion (at once if already complete)."""
        if self.completed:
            cb(self)
        else:
            self._callbacks.append(cb)

    def add(self, n: int = 1) -> None:
        if self.completed:
            raise RuntimeError("AckHandle.add after completion")
        self.pending += n

    def done(self) -> None:
        """Release one reference; the last one completes the handle."""
        if self.completed:
            raise RuntimeError("AckHandle.done called more often than add")
        self.pending -= 1
        if self.pending == 0:
            self.completed = True
            cbs, self._callbacks = self._callbacks, []
            for cb in cbs:
                cb(self)


class AckTracker:
    """Ordered watermark over the handles of one stream (one file, one journal).

    Positions must be handed out in increasing order. ``watermark`` is the
    position of the newest handle such that it and every older handle have
    completed; ``on_commit(position)`` is called each time it advances. A crash
    therefore replays from the watermark and never skips an unacknowledged record.
    """

    def __init__(self, on_commit: Callable[[Any], None] | None = None) -> None:
        self._on_commit = on_commit
        self._seq = itertools.count()
        self._next_to_commit = 0
        self._done: dict[int, Any] = {}
        self._outstanding = 0
        self.watermark: Any = None
        self._idle = trio.Event()
        self._idle.set()

    @property
    def outstanding(self) -> int:
        """Handles created but not yet completed."""
        return self._outstanding

    def handle(self, position: Any, nbytes: int = 0) -> AckHandle:
        seq = next(self._seq)
        h = AckHandle(nbytes)
        self._outstanding += 1
        if self._idle.is_set():
            self._idle = trio.Event()
        h.on_complete(lambda _h: self._complete(seq, position))
        return h

    def _complete(self, seq: int, position: Any) -> None:
        self._done[seq] = position
        self._outstanding -= 1
        advanced = False
        while self._next_to_commit in self._done:
            self.watermark = self._done.pop(self._next_to_commit)
            self._next_to_commit += 1
            advanced = True
        if advanced and self._on_commit is not None:
            self._on_commit(self.watermark)
        if self._outstanding == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Wait until every handle handed out so far has completed."""
        await self._idle.wait()


class MemBudget:
    """An input's ``mem_buf_limit``: bytes emitted but not yet acknowledged.

    ``acquire`` blocks the input (backpressure) while the budget is full. A single
    batch larger than the whole limit is admitted when nothing else is
    outstanding, so an oversized batch slows the input down but never deadlocks it.
    A limit of 0 means unlimited. ``release`` is synchronous so that it can run
    from ack callbacks.
    """

    def __init__(self, limit: int, on_pause: Callable[[], None] | None = None) -> None:
        self.limit = limit
        self.used = 0
        self.paused = False
        self.pauses = 0
        self.on_pause = on_pause
        self._freed = trio.Event()

    async def acquire(self, n: int) -> None:
        while self.limit > 0 and self.used > 0 and self.used + n > self.limit:
            if not self.paused:
                self.pauses += 1
                # Whatever holds our bytes may be waiting for a flush tick to fill a chunk;
                # a paused input will not fill it, so ask for it to be flushed now.
                if self.on_pause is not None:
                    self.on_pause()
            self.paused = True
            await self._freed.wait()
        self.paused = False
        self.used += n

    def release(self, n: int) -> None:
        self.used -= n
        self._freed.set()
        self._freed = trio.Event()


@dataclass(slots=True)
class Batch:
    """What inputs emit and filters transform: one tag, parallel lists.

    ``keys`` are optional stable origin keys, one per record (e.g. tail's
    ``<file fingerprint>:<offset>``); outputs may derive idempotent ids from them
    (Elasticsearch ``_id``), so a replay after a crash is deduplicated without
    collapsing two identical lines. Filters that drop records must use
    ``select`` so the lists stay aligned.
    """

    tag: str
    times: list[int]
    records: list[dict[str, Any]]
    ack: AckHandle = field(default_factory=AckHandle)
    nbytes: int = 0
    keys: Sequence[str | None] | None = None  # a list, or tail's lazy OriginKeys

    def __len__(self) -> int:
        return len(self.records)

    def select(self, indices: Iterable[int]) -> None:
        """Keep only the records at ``indices`` (in order), in place."""
        idx = list(indices)
        self.times = [self.times[i] for i in idx]
        self.records = [self.records[i] for i in idx]
        if self.keys is not None:
            self.keys = take(self.keys, idx)


_chunk_ids = itertools.count(1)


@dataclass(slots=True)
class Chunk:
    """What an output flushes: records of one tag from one or more batches.

    ``handles`` are the acknowledgement handles of the batches in the chunk; the
    engine releases them once the whole chunk is resolved (delivered, or
    dead-lettered), including any retried subsets. ``attempts`` counts flush
    attempts so far (0 on the first).
    """

    tag: str
    times: list[int] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    keys: Sequence[str | None] = field(default_factory=KeyColumn)
    handles: list[AckHandle] = field(default_factory=list)
    nbytes: int = 0
    attempts: int = 0
    id: int = field(default_factory=lambda: next(_chunk_ids))

    def __len__(self) -> int:
        return len(self.records)

    def add(self, batch: Batch) -> None:
        self.times.extend(batch.times)
        self.records.extend(batch.records)
        keys = self.keys
        if not isinstance(keys, KeyColumn):  # given as a list (tests, subset): keep adding to a column
            keys = self.keys = KeyColumn(keys)
        keys.add(batch.keys, len(batch.records))
        self.nbytes += batch.nbytes

    def subset(self, indices: Sequence[int]) -> Chunk:
        """A chunk of only ``indices`` (for per-record retries); handles move with it."""
        n = len(self.records) or 1
        return Chunk(
            tag=self.tag,
            times=[self.times[i] for i in indices],
            records=[self.records[i] for i in indices],
            keys=take(self.keys, indices),
            handles=self.handles,
            nbytes=self.nbytes * len(indices) // n,
            attempts=self.attempts,
        )


@dataclass(slots=True)
class Result:
    """An output's answer for one chunk.

    - nothing set: every record delivered;
    - ``retry``: indices (into the chunk) to try again later, or ``None`` for none;
      ``retry_all`` for a whole-request failure (connection refused, 5xx);
    - ``refused``: ``(index, reason)`` pairs the backend rejected for good
      (mapping conflicts, 400 bad line): the engine dead-letters exactly those.

    Outputs never loop on retries themselves; the engine schedules them with
    backoff and ``Retry_Limit``.
    """

    retry: list[int] | None = None
    refused: list[tuple[int, str]] = field(default_factory=list)
    reason: str = ""
    retry_all: bool = False

    @classmethod
    def ok(cls) -> Result:
        return cls()

    @classmethod
    def retry_everything(cls, reason: str) -> Result:
        return cls(retry_all=True, reason=reason)

    @property
    def delivered_all(self) -> bool:
        return not self.retry_all and not self.retry and not self.refused
