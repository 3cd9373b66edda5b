"""The storage layer: filesystem buffering for inputs with ``storage.type filesystem``.

Owns ``storage.path``: one directory per input instance (a stream), the chunks written and
still owed, one feeder per (stream, output), the ``storage.total_limit_size`` accounting
per output and the numbers behind ``/api/v1/storage``. The pipeline calls ``store`` for a
filtered batch of a filesystem input instead of handing it to the output buffers; see
``docs/storage.md`` for the file format and the acknowledgement model.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ...batch import Batch, MemBudget
from .chunk import StoredChunk
from .feeder import Feeder
from .recovery import Scan, move_corrupt, scan_stream
from .stream import InputStream

if TYPE_CHECKING:
    from ...metrics import Counters
    from ..outbuf import OutputBuffer

__all__ = ["StorageManager", "StorageSettings", "StorageError", "RESERVED_DIRS"]

log = logging.getLogger("logfwd.storage")

# Directories under storage.path that are not input streams.
RESERVED_DIRS = frozenset({"corrupt", "rejected", "dead-letter"})
_LOG_EVERY = 10.0  # seconds between two log lines about the same storage problem


class StorageError(RuntimeError):
    """storage.path cannot be used at start: the daemon stops with this one line."""


@dataclass(frozen=True, slots=True)
class StorageSettings:
    path: Path
    full_sync: bool = False
    max_chunks_up: int = 128
    backlog_mem_limit: int = 5 * 1024 * 1024
    flush_on_shutdown: bool = False
    delete_irrecoverable: bool = False

    @classmethod
    def from_service(cls, service: dict[str, Any]) -> StorageSettings:
        if not service.get("storage.path"):
            raise StorageError("storage.type filesystem needs storage.path in the service section")
        return cls(
            path=Path(str(service["storage.path"])),
            full_sync=(service.get("storage.sync") or "normal") == "full",
            max_chunks_up=int(service.get("storage.max_chunks_up") or 128),
            backlog_mem_limit=int(service.get("storage.backlog.mem_limit") or 5 * 1024 * 1024),
            flush_on_shutdown=bool(service.get("storage.backlog.flush_on_shutdown")),
            delete_irrecoverable=bool(service.get("storage.delete_irrecoverable_chunks")),
        )


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "_"


class StorageManager:
    def __init__(self, settings: StorageSettings) -> None:
        self.settings = settings
        self.root = settings.path
        self.full_sync = settings.full_sync
        self.flush_on_shutdown = settings.flush_on_shutdown
        self.streams: dict[str, InputStream] = {}
        self.input_metrics: dict[str, Counters] = {}
        self.pause_overlimit: set[str] = set()
        self.outputs: dict[str, OutputBuffer] = {}
        self.limits: dict[str, int] = {}
        self.owed_bytes: dict[str, int] = {}
        self.feeders: dict[tuple[str, str], Feeder] = {}
        self.backlog_budget = MemBudget(settings.backlog_mem_limit)
        self.up_count = 0
        self.stopping = False
        self.closed = False
        self.stats = {"corrupt_chunks": 0, "torn_chunks": 0, "write_errors": 0, "dropped_chunks": 0,
                      "dropped_records": 0}
        self._changed = trio.Event()  # owed bytes went down or chunks went down: paused inputs look again
        self._nursery: trio.Nursery | None = None
        self._last_log: dict[str, float] = {}

    # ------------------------------------------------------------ setup

    def open(self) -> None:
        """Create ``storage.path`` (raises StorageError with one line if it cannot be used)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(f"storage.path {self.root}: cannot create it: {e.strerror}") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageError(f"storage.path {self.root}: not writable")

    def add_input(self, instance: str, *, replayable: bool, metrics: Counters, pause_overlimit: bool) -> InputStream:
        stream = self._stream(_safe(instance), replayable=replayable)
        self.input_metrics[stream.name] = metrics
        if pause_overlimit:
            self.pause_overlimit.add(stream.name)
        return stream

    def _stream(self, name: str, *, replayable: bool = False) -> InputStream:
        stream = self.streams.get(name)
        if stream is None:
            stream = InputStream(self, name, self.root / name, replayable=replayable)
            self.streams[name] = stream
        else:
            stream.replayable = stream.replayable or replayable
        return stream

    def add_output(self, buf: OutputBuffer, total_limit: int | None) -> None:
        self.outputs[buf.instance] = buf
        self.owed_bytes.setdefault(buf.instance, 0)
        if total_limit:
            self.limits[buf.instance] = total_limit

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read the backlog (queued before any new record), then feed outputs until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._recover()
            task_status.started()
            await trio.sleep_forever()

    # ------------------------------------------------------------ recovery

    async def _recover(self) -> None:
        try:
            names = sorted(p.name for p in self.root.iterdir() if p.is_dir() and p.name not in RESERVED_DIRS)
        except OSError as e:
            log.error("storage: cannot list %s: %s", self.root, e.strerror)
            return
        total = records = 0
        for name in names:
            stream = self._stream(name)
            scan = await trio.to_thread.run_sync(scan_stream, stream.directory)
            n, r = self._adopt(stream, scan)
            total += n
            records += r
        if total:
            log.info("storage: backlog of %d chunk(s), %d record(s) under %s: delivered before new records",
                     total, records, self.root)

    def _adopt(self, stream: InputStream, scan: Scan) -> tuple[int, int]:
        stream.next_seq = max(stream.next_seq, scan.max_seq + 1)
        for path, cut in scan.torn:
            self.stats["torn_chunks"] += 1
            log.warning("storage: %s: torn tail of %d byte(s) cut at the last whole frame (a write was "
                        "interrupted)", path, cut)
        for path, why in scan.corrupt:
            self._set_aside(stream.name, path, why)
        n = r = 0
        for found in scan.chunks:
            chunk = StoredChunk(stream, found.seq, found.path, found.meta)
            chunk.size, chunk.frames, chunk.records, chunk.sealed = found.size, found.frames, found.records, True
            chunk.has_ack = bool(found.delivered)
            unknown = sorted(o for o in chunk.owed - found.delivered if o not in self.outputs)
            if unknown:
                log.warning("storage: %s: output(s) %s are no longer configured; their copy is dropped",
                            found.path, ", ".join(unknown))
            chunk.owed = {o for o in chunk.owed if o in self.outputs and o not in found.delivered}
            if not chunk.owed:
                chunk.remove()
                continue
            stream.chunks[chunk.seq] = chunk
            for o in chunk.owed:
                self.owed_bytes[o] += chunk.size
            self._queue(chunk)
            n += 1
            r += chunk.records
        return n, r

    def _set_aside(self, stream: str, path: Path, why: str) -> None:
        self.stats["corrupt_chunks"] += 1
        try:
            dest = move_corrupt(self.root, stream, path, self.settings.delete_irrecoverable)
        except OSError as e:
            log.error("storage: %s is unreadable (%s) and cannot be moved aside: %s", path, why, e.strerror)
            return
        if dest is None:
            log.error("storage: %s is unreadable (%s): deleted (storage.delete_irrecoverable_chunks on)", path, why)
        else:
            log.error("storage: %s is unreadable (%s): moved to %s", path, why, dest)

    def unreadable(self, chunk: StoredChunk, why: str) -> None:
        """A down chunk could not be read back at run time."""
        self._forget(chunk)
        self._set_aside(chunk.stream.name, chunk.path, why)

    # ------------------------------------------------------------ write path

    async def store(self, stream: InputStream, batch: Batch, bufs: Sequence[OutputBuffer], *,
                    wait: bool = True) -> bool:
        """Write ``batch`` to its stream; False when it could not be and should stay in memory.

        The batch's handle completes once the write is durable, not on delivery. A replayable
        input whose write fails waits here (paused, nothing acknowledged) until the disk
        takes writes again; a push input gets False, and the caller keeps its records in memory.
        ``wait=False`` (records a filter held and releases from the engine's ticker, which
        must not block): no admission wait, one attempt, False on a write error.
        """
        outputs = tuple(b.instance for b in bufs)
        if not outputs:
            return True
        batch.ack.add()
        try:
            if wait:
                await self._admit(stream, outputs)
            delay = 0.2
            while True:
                try:
                    await stream.write(batch, outputs)
                    return True
                except OSError as e:
                    self._write_failed(stream, e)
                    if not stream.replayable or not wait:
                        return False
                await trio.sleep(delay)
                delay = min(delay * 2, 5.0)
        finally:
            batch.ack.done()

    def _write_failed(self, stream: InputStream, e: OSError) -> None:
        self.stats["write_errors"] += 1
        stream.errors += 1
        metrics = self.input_metrics.get(stream.name)
        if metrics is not None:
            metrics.inc("storage_errors")
        what = {errno.ENOSPC: "disk full", errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                errno.EDQUOT: "disk quota exceeded"}.get(e.errno or 0, e.strerror or str(e))
        action = ("input paused until chunks can be written again" if stream.replayable else
                  "records kept in memory within Mem_Buf_Limit; the input pauses beyond it")
        self._log_limited(f"write:{stream.name}", logging.ERROR,
                          "storage: cannot write chunks in %s: %s; %s (%d error(s) so far)",
                          stream.directory, what, action, stream.errors)

    async def _admit(self, stream: InputStream, outputs: tuple[str, ...]) -> None:
        """storage.total_limit_size per output, and storage.pause_on_chunks_overlimit."""
        while stream.name in self.pause_overlimit and self.up_count >= self.settings.max_chunks_up:
            await self._wait_changed()
        for out in outputs:
            limit = self.limits.get(out)
            while limit and self.owed_bytes.get(out, 0) >= limit:
                if stream.replayable:
                    self._log_limited(f"limit:{stream.name}:{out}", logging.WARNING,
                                      "storage: output %s holds %d byte(s) of chunks (storage.total_limit_size "
                                      "%d): input %s paused", out, self.owed_bytes[out], limit, stream.name)
                    await self._wait_changed()
                elif not self._drop_oldest(out):
                    break

    async def _wait_changed(self) -> None:
        self._changed = trio.Event() if self._changed.is_set() else self._changed
        await self._changed.wait()

    def _drop_oldest(self, output: str) -> bool:
        """Push inputs at an output's limit: the oldest queued chunk of a push input is dropped for that output only."""
        oldest: tuple[Feeder, StoredChunk] | None = None
        for (name, out), feeder in self.feeders.items():
            if out != output or self.streams[name].replayable:
                continue  # a replayable input's chunks are never dropped: it paused instead
            for chunk in feeder.queue:
                if output in chunk.owed:
                    if oldest is None or chunk.meta.created_ns < oldest[1].meta.created_ns:
                        oldest = (feeder, chunk)
                    break
        if oldest is None:
            return False
        feeder, chunk = oldest
        feeder.queue.remove(chunk)
        self.stats["dropped_chunks"] += 1
        self.stats["dropped_records"] += chunk.records
        buf = self.outputs[output]
        buf.metrics.inc("dropped_records", chunk.records)
        buf.metrics.inc("storage_dropped_chunks")
        log.warning("storage: output %s reached storage.total_limit_size (%d bytes): oldest chunk %s "
                    "(%d record(s)) dropped for this output", output, self.limits[output], chunk.path, chunk.records)
        self.delivered(chunk, output)
        return True

    # ------------------------------------------------------------ callbacks from streams and feeders

    def may_go_up(self) -> bool:
        return self.up_count < self.settings.max_chunks_up

    def chunk_added(self, chunk: StoredChunk) -> None:
        if chunk.cache is not None:
            self.up_count += 1

    def account_write(self, chunk: StoredChunk, nbytes: int) -> None:
        for out in chunk.owed:
            self.owed_bytes[out] = self.owed_bytes.get(out, 0) + nbytes

    def chunk_sealed(self, chunk: StoredChunk) -> None:
        self._queue(chunk)

    def _queue(self, chunk: StoredChunk) -> None:
        for out in sorted(chunk.owed):
            key = (chunk.stream.name, out)
            feeder = self.feeders.get(key)
            if feeder is None:
                feeder = Feeder(self, self.outputs[out])
                self.feeders[key] = feeder
                assert self._nursery is not None
                self._nursery.start_soon(feeder.run)
            feeder.push(chunk)

    def delivered(self, chunk: StoredChunk, output: str) -> None:
        """``output`` has resolved every record of ``chunk`` (delivered, dead-lettered or dropped)."""
        if output not in chunk.owed:
            return
        chunk.owed.discard(output)
        self.owed_bytes[output] -= chunk.size
        self._changed.set()
        if not chunk.owed:
            self._forget(chunk)
            try:
                chunk.remove()
            except OSError as e:
                self._log_limited("remove", logging.ERROR, "storage: cannot delete delivered chunk %s: %s "
                                  "(it will be delivered again after a restart)", chunk.path, e.strerror)
            return
        try:
            chunk.record_delivered(output, self.full_sync)
        except OSError as e:
            self._log_limited("ack", logging.ERROR, "storage: cannot record delivery of %s to %s: %s (it "
                              "will be delivered to it again after a restart)", chunk.path, output, e.strerror)

    def _forget(self, chunk: StoredChunk) -> None:
        chunk.stream.chunks.pop(chunk.seq, None)
        if chunk.cache is not None:
            chunk.cache = None
            self.up_count -= 1
            self._changed.set()

    # ------------------------------------------------------------ lifecycle

    async def tick(self) -> None:
        """Flush tick: open chunks are sealed and handed to their outputs."""
        for stream in list(self.streams.values()):
            await stream.seal_all()

    async def drain(self) -> None:
        """Shutdown: seal everything, then wait until feeders have sent what they may (caller bounds it)."""
        self.stopping = True
        await self.tick()
        for feeder in self.feeders.values():
            feeder.wake()
        while not all(f.settled for f in self.feeders.values()):
            await trio.sleep(0.05)

    def close(self) -> None:
        """After the drain: feeders hand nothing more to output buffers that are about to close."""
        self.stopping = True
        self.closed = True
        for feeder in self.feeders.values():
            feeder.wake()

    def undelivered(self) -> tuple[int, int]:
        """(chunks, records) still owed by some output: what stays on disk for the next start."""
        chunks = [c for s in self.streams.values() for c in s.chunks.values()]
        return len(chunks), sum(c.records for c in chunks)

    def _log_limited(self, key: str, level: int, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last_log.get(key, -1e9) >= _LOG_EVERY:
            self._last_log[key] = now
            log.log(level, msg, *args)
