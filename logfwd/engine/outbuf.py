"""Per-output buffer: batches become chunks, workers flush them, failures are retried.

Flow for one output::

    add(batch) ──▶ open chunk per tag ──(size or flush tick)──▶ ready queue ──▶ N workers ──▶ output.flush()
                                                                   ▲                            │
                                                                   └── retry after backoff ◀────┘ (Result)

A chunk resolves when every record in it is delivered, refused (dead-lettered), or has
used up its retries (dead-lettered with the reason). Only then are the acknowledgement
handles of its batches released, which is what lets inputs advance their checkpoints.
Memory is bounded upstream: every byte here is counted against some input's
``mem_buf_limit``, so the ready queue itself can be unbounded.
"""

from __future__ import annotations

import logging
import math
import time

import trio

from ..batch import Batch, Chunk, Result
from ..metrics import Counters
from ..plugin import Output
from .deadletter import DeadLetter
from .retry import RetryPolicy

__all__ = ["OutputBuffer"]


class OutputBuffer:
    """Chunks, workers and retries for one output instance."""

    def __init__(
        self,
        output: Output,
        instance: str,
        metrics: Counters,
        retry: RetryPolicy,
        dead_letter: DeadLetter,
        *,
        workers: int = 1,
        chunk_bytes: int = 2 * 1024 * 1024,
        chunk_records: int = 50_000,
        log: logging.Logger | None = None,
    ) -> None:
        self.output = output
        self.instance = instance
        self.metrics = metrics
        self.retry = retry
        self.dead_letter = dead_letter
        self.workers = max(1, workers)
        self.chunk_bytes = chunk_bytes
        self.chunk_records = chunk_records
        self.log = log or logging.getLogger("logfwd.engine")
        self._open: dict[str, Chunk] = {}
        self._send, self._recv = trio.open_memory_channel[Chunk](math.inf)
        self._unresolved = 0  # chunks sealed or retrying but not resolved
        self._idle = trio.Event()
        self._idle.set()
        self._nursery: trio.Nursery | None = None
        self._stopped = trio.Event()  # run() has returned: no flush is in flight, no handle released later
        self.buffered_bytes = 0
        self.buffered_records = 0

    # ------------------------------------------------------------ intake

    def add(self, batch: Batch) -> None:
        """Take a routed batch (synchronous: called from the router)."""
        batch.ack.add()
        chunk = self._open.get(batch.tag)
        if chunk is None:
            chunk = Chunk(batch.tag)
            self._open[batch.tag] = chunk
        chunk.add(batch)
        chunk.handles.append(batch.ack)
        self._account(len(batch.records), batch.nbytes)
        if chunk.nbytes >= self.chunk_bytes or len(chunk.records) >= self.chunk_records:
            self._seal(batch.tag)

    def _account(self, records: int, nbytes: int) -> None:
        self.buffered_records += records
        self.buffered_bytes += nbytes
        self.metrics.set("buffer_bytes", self.buffered_bytes)
        self.metrics.set("buffer_records", self.buffered_records)

    def _seal(self, tag: str) -> None:
        chunk = self._open.pop(tag)
        self._track(1)
        self._send.send_nowait(chunk)

    def seal(self, tag: str) -> None:
        """Make the open chunk of ``tag`` ready now (the storage layer hands over whole chunks)."""
        if tag in self._open:
            self._seal(tag)

    def seal_all(self) -> None:
        """Flush tick (service ``flush``) and shutdown: every open chunk becomes ready."""
        for tag in list(self._open):
            self._seal(tag)

    def _track(self, n: int) -> None:
        self._unresolved += n
        if self._unresolved > 0 and self._idle.is_set():
            self._idle = trio.Event()
        elif self._unresolved == 0:
            self._idle.set()

    @property
    def idle(self) -> bool:
        return self._unresolved == 0 and not self._open

    async def wait_idle(self) -> None:
        """Wait until nothing is open, queued, in flight or waiting to retry."""
        while not self.idle:
            self.seal_all()
            await self._idle.wait()

    # ------------------------------------------------------------ workers

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for _ in range(self.workers):
                    nursery.start_soon(self._worker)
                task_status.started()
        finally:
            self._stopped.set()

    async def _worker(self) -> None:
        async for chunk in self._recv:
            await self._attempt(chunk)

    async def _attempt(self, chunk: Chunk) -> None:
        started = time.monotonic()
        try:
            result = await self.output.flush(chunk)
            if not isinstance(result, Result):
                raise TypeError(f"flush returned {type(result).__name__}, not Result")
        except trio.Cancelled:
            raise
        except Exception as e:  # an output bug must not lose the chunk: retry it like a failure
            self.log.error("flush failed: %s: %s", type(e).__name__, e)
            result = Result.retry_everything(f"{type(e).__name__}: {e}")
        self.metrics.inc("flushes")
        self.metrics.inc("flush_seconds", time.monotonic() - started)
        self._resolve(chunk, result)

    def _resolve(self, chunk: Chunk, result: Result) -> None:
        n = len(chunk.records)
        if result.retry_all:
            retry_idx = list(range(n))
            refused: list[tuple[int, str]] = []
        else:
            retry_idx = sorted(set(result.retry or ()))
            refused = [(i, why) for i, why in result.refused if 0 <= i < n]
            refused_set = {i for i, _ in refused}
            retry_idx = [i for i in retry_idx if 0 <= i < n and i not in refused_set]
        delivered = n - len(retry_idx) - len(refused)
        if delivered:
            self.metrics.inc("proc_records", delivered)
            self.metrics.inc("proc_bytes", chunk.nbytes * delivered // max(n, 1))
        if result.retry_all or retry_idx or refused:
            self.metrics.inc("errors")
        if refused:
            self._dead_letter(chunk, [i for i, _ in refused], [why for _, why in refused])
        retrying = False
        if retry_idx:
            if self.retry.allows(chunk.attempts):
                sub = chunk if len(retry_idx) == n else chunk.subset(retry_idx)
                sub.attempts = chunk.attempts + 1
                delay = self.retry.delay(sub.attempts)
                self.metrics.inc("retries")
                self.metrics.inc("retried_records", len(retry_idx))
                self.log.warning(
                    "chunk %d: %d record(s) will be retried in %.1fs (attempt %d): %s",
                    chunk.id, len(retry_idx), delay, sub.attempts, result.reason or "retry",
                )
                assert self._nursery is not None
                self._nursery.start_soon(self._retry_later, sub, delay)
                retrying = True
            else:
                self.metrics.inc("retries_failed")
                reason = f"retry limit reached after {chunk.attempts} retries: {result.reason or 'retry'}"
                self.log.error("chunk %d: %s; %d record(s) dead-lettered", chunk.id, reason, len(retry_idx))
                self._dead_letter(chunk, retry_idx, [reason] * len(retry_idx))
        # Records leave the buffer's accounting as they resolve; retried ones stay.
        gone = n - (len(retry_idx) if retrying else 0)
        self._account(-gone, -(chunk.nbytes * gone // max(n, 1)))
        if not retrying:
            for h in chunk.handles:
                h.done()
            self._track(-1)

    async def _retry_later(self, chunk: Chunk, delay: float) -> None:
        await trio.sleep(delay)
        try:
            self._send.send_nowait(chunk)
        except trio.ClosedResourceError:
            pass  # stopped meanwhile: left unacknowledged, so its input replays it (or it stays on disk)

    def _dead_letter(self, chunk: Chunk, indices: list[int], reasons: list[str]) -> None:
        try:
            written = self.dead_letter.write(
                self.instance,
                chunk.tag,
                [chunk.times[i] for i in indices],
                [chunk.records[i] for i in indices],
                reasons,
            )
        except OSError as e:
            # The dead-letter file is the last resort; if it fails, say so loudly and count the loss.
            self.log.critical("cannot write dead-letter file: %s; %d record(s) dropped", e, len(indices))
            self.metrics.inc("dropped_records", len(indices))
            return
        self.metrics.inc("dlq_records", written)
        if written < len(indices):  # storage.keep.rejected off: refused records are dropped, counted and said
            self.log.error("%d record(s) refused and dropped (storage.keep.rejected off)", len(indices) - written)
            self.metrics.inc("dropped_records", len(indices) - written)

    def describe(self) -> str:
        """One line of state for the SIGCONT dump."""
        return (f"{len(self._open)} open chunk(s), {self._unresolved} sealed or retrying, "
                f"buffered records={self.buffered_records} bytes={self.buffered_bytes}, workers={self.workers}, "
                f"retries={int(self.metrics.get('retries', 0))}")

    def close(self) -> None:
        self._send.close()

    async def stop_workers(self, timeout: float) -> None:
        """Close the buffer and end its workers, waiting (bounded) until none runs any more.

        After this no handle is released by this buffer: what was not resolved stays
        unacknowledged. A flush blocked in a worker thread cannot be interrupted; past
        ``timeout`` the caller goes on, and it is logged.
        """
        self.close()
        if self._nursery is None:
            return
        self._nursery.cancel_scope.cancel()
        with trio.move_on_after(timeout):
            await self._stopped.wait()
            return
        self.log.warning("output still flushing %.1fs after the stop; not waiting for it", timeout)
