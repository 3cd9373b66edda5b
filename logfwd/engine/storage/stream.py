"""One input's stream: its directory of chunk files, the chunks being written, the live ones.

Every batch an input emits (after filters) is appended as one frame to the open chunk of
its (tag, outputs) pair. A chunk is sealed at about 2 MB or at the flush tick, and only
then handed to the outputs, as Fluent Bit hands over chunks. Writing is the durable step:
the batch's acknowledgement completes once the frame is written (and fsynced with
``storage.sync full``), which is what lets tail and journal advance their checkpoints.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import trio

from ...originkeys import as_list
from .chunk import StoredChunk, chunk_name
from .format import ChunkMeta, frame_head, pack_batch

if TYPE_CHECKING:
    from ...batch import Batch


class StreamOwner(Protocol):
    """What a stream tells the storage manager (a Protocol, so that stream does not import manager)."""

    def chunk_sealed(self, chunk: StoredChunk) -> None: ...


__all__ = ["InputStream", "CHUNK_BYTES"]

CHUNK_BYTES = 2 * 1024 * 1024  # Fluent Bit's chunks are "around 2 MB"


class InputStream:
    """Chunk files of one input instance under ``<storage.path>/<instance>/``."""

    def __init__(self, manager: StreamOwner, name: str, directory: Path, *, replayable: bool,
                 memory: bool = False) -> None:
        self.manager = manager
        self.name = name
        self.directory = directory
        self.replayable = replayable
        self.memory = memory  # a memory-mode input (counted in metrics, never written)
        self.next_seq = 1
        self.open: dict[tuple[str, tuple[str, ...]], StoredChunk] = {}
        self.chunks: dict[int, StoredChunk] = {}  # every chunk not yet fully delivered
        self.lock = trio.Lock()
        self.errors = 0

    def ensure_dir(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    async def write(self, batch: Batch, outputs: tuple[str, ...]) -> StoredChunk:
        """Append ``batch`` durably; raises OSError (disk full, read-only, permissions)."""
        mgr = self.manager
        payload = pack_batch(batch.times, batch.records, as_list(batch.keys))
        head = frame_head(payload, len(batch.records))
        async with self.lock:
            key = (batch.tag, outputs)
            chunk = self.open.get(key)
            if chunk is None:
                chunk = self._new_chunk(batch.tag, outputs)
            try:
                chunk.append(head, payload, batch.times, batch.records, batch.keys, batch.nbytes)
            except OSError:
                self._seal(chunk)  # what it holds so far stays; the next write opens a new file
                raise
            mgr.account_write(chunk, len(head) + len(payload))
            if mgr.full_sync:
                fd = chunk.fd
                assert fd is not None
                try:
                    await trio.to_thread.run_sync(os.fsync, fd)
                except OSError:
                    self._seal(chunk)
                    raise
            if chunk.size >= CHUNK_BYTES:
                self._seal(chunk)
        return chunk

    def _new_chunk(self, tag: str, outputs: tuple[str, ...]) -> StoredChunk:
        mgr = self.manager
        self.ensure_dir()
        seq = self.next_seq
        path = self.directory / chunk_name(seq)
        meta = ChunkMeta(tag, self.name, list(outputs), time.time_ns())
        chunk = StoredChunk.create(self, seq, path, meta, up=mgr.may_go_up())
        self.next_seq += 1
        if mgr.full_sync:
            _fsync_dir(self.directory)  # the new name survives a power cut, not only a kill
        self.open[(tag, outputs)] = chunk
        self.chunks[seq] = chunk
        mgr.chunk_added(chunk)
        return chunk

    def _seal(self, chunk: StoredChunk) -> None:
        self.open.pop((chunk.meta.tag, tuple(chunk.meta.outputs)), None)
        chunk.seal()
        self.manager.chunk_sealed(chunk)

    async def seal_all(self) -> None:
        """Flush tick and shutdown: every open chunk is sealed and handed to its outputs."""
        if not self.open:
            return
        async with self.lock:
            for chunk in list(self.open.values()):
                self._seal(chunk)

    def counts(self) -> dict[str, Any]:
        up = sum(1 for c in self.chunks.values() if c.cache is not None)
        busy = [c for c in self.chunks.values() if c.busy]
        return {
            "total": len(self.chunks),
            "up": up,
            "down": len(self.chunks) - up,
            "busy": len(busy),
            "busy_size": sum(c.size for c in busy),
            "size": sum(c.size for c in self.chunks.values()),
            "records": sum(c.records for c in self.chunks.values()),
        }


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
