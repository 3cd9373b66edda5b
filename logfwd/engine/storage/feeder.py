"""Hands one stream's sealed chunks to one output, in order, a few at a time.

A feeder per (input stream, output) pair keeps each output's own position: a slow or
broken output holds back only its own queue. Chunks that are down are read back from disk
when the output can take them, within ``storage.backlog.mem_limit``.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Protocol

import trio

from ...batch import AckHandle, Batch, MemBudget
from .format import CorruptChunk
from .recovery import load_chunk

if TYPE_CHECKING:
    from ..outbuf import OutputBuffer
    from .chunk import StoredChunk


class FeederOwner(Protocol):
    """What a feeder needs of the storage manager (a Protocol, so that feeder does not import manager)."""

    backlog_budget: MemBudget
    closed: bool  # after the shutdown drain: nothing more goes to the output buffers
    stopping: bool  # the drain has begun
    flush_on_shutdown: bool  # storage.backlog.flush_on_shutdown

    def unreadable(self, chunk: StoredChunk, reason: str) -> None: ...

    def delivered(self, chunk: StoredChunk, output: str) -> None: ...


__all__ = ["Feeder"]


class Feeder:
    def __init__(self, manager: FeederOwner, buf: OutputBuffer) -> None:
        self.manager = manager
        self.buf = buf
        self.output = buf.instance
        self.queue: deque[StoredChunk] = deque()
        self.inflight = 0
        self.max_inflight = max(2, buf.workers + 1)
        self._wake = trio.Event()

    def push(self, chunk: StoredChunk) -> None:
        self.queue.append(chunk)
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    def _blocked(self) -> bool:
        mgr = self.manager
        if mgr.closed or self.inflight >= self.max_inflight or not self.queue:
            return True
        # At shutdown only chunks already in memory go out, unless the backlog is to be flushed too.
        return mgr.stopping and not mgr.flush_on_shutdown and self.queue[0].cache is None

    @property
    def settled(self) -> bool:
        """Nothing in flight and nothing it may still send (used by the shutdown drain)."""
        return self.inflight == 0 and (not self.queue or self._blocked())

    async def run(self) -> None:
        while True:
            while self._blocked():
                self._wake = trio.Event()
                await self._wake.wait()
            chunk = self.queue.popleft()
            if self.output not in chunk.owed:
                continue  # dropped for this output (storage.total_limit_size)
            await self._send(chunk)

    async def _send(self, chunk: StoredChunk) -> None:
        data = chunk.cache
        cost = 0
        if data is None:
            cost = chunk.size
            # Reading a chunk back counts as in flight, so the shutdown drain waits for it; and
            # if the storage closed meanwhile (grace ran out), the chunk goes back to the queue
            # instead of into an output buffer that is closing (it is sent after the next start).
            self.inflight += 1
            try:
                await self.manager.backlog_budget.acquire(cost)
                try:
                    data = await trio.to_thread.run_sync(load_chunk, chunk.path)
                except (OSError, CorruptChunk, ValueError) as e:
                    self.manager.backlog_budget.release(cost)
                    self.manager.unreadable(chunk, str(e))
                    return
            finally:
                self.inflight -= 1
            if self.manager.closed:
                self.manager.backlog_budget.release(cost)
                self.queue.appendleft(chunk)
                return
        handle = AckHandle(chunk.nbytes)
        self.inflight += 1
        chunk.busy += 1
        handle.on_complete(lambda _h: self._done(chunk, cost))
        tag = chunk.meta.tag
        per_record = (chunk.nbytes or chunk.size) / max(chunk.records, 1)
        for times, records, keys in data:
            self.buf.add(Batch(tag, times, records, handle, int(per_record * len(records)), keys))
        self.buf.seal(tag)
        handle.done()

    def _done(self, chunk: StoredChunk, cost: int) -> None:
        self.inflight -= 1
        chunk.busy -= 1
        if cost:
            self.manager.backlog_budget.release(cost)
        self.manager.delivered(chunk, self.output)
        self.wake()
