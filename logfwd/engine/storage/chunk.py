"""One chunk file on disk and, while it is "up", its records in memory.

Delivery is recorded per output in a sidecar ``<chunk>.ack``: one output instance name
per line, appended (and fsynced with ``storage.sync full``) when that output has resolved
every record of the chunk. When the last owing output resolves it, the chunk and its
sidecar are deleted instead, so a single-output pipeline never writes a sidecar. After a
restart, an output replays only the chunks whose header names it and whose sidecar does
not: a fast output never re-receives what it already delivered because a slow one had not.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .format import ChunkMeta, encode_header, encode_seal

__all__ = ["StoredChunk", "Part", "write_all", "writev_all", "read_acks", "chunk_name"]

Part = tuple[list[int], list[dict[str, Any]], list[Any] | None]  # one written batch


def chunk_name(seq: int) -> str:
    return f"{seq:016d}.chunk"


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def writev_all(fd: int, head: bytes, payload: bytes) -> None:
    """``head`` then ``payload`` in one system call (no 2 MB concatenation), finishing short writes."""
    n = os.writev(fd, (head, payload))
    if n < len(head):
        write_all(fd, head[n:])
        n = len(head)
    if n - len(head) < len(payload):
        write_all(fd, memoryview(payload)[n - len(head):])  # type: ignore[arg-type]


def read_acks(path: Path) -> set[str]:
    """Outputs recorded as done in a sidecar; a torn last line (no newline) does not count."""
    try:
        text = path.read_bytes().decode("utf-8", "replace")
    except FileNotFoundError:
        return set()
    lines = text.split("\n")
    return {ln for ln in lines[:-1] if ln}


class StoredChunk:
    """A chunk: its file, the outputs that still owe delivery, and (when up) its records."""

    __slots__ = ("seq", "path", "meta", "owed", "fd", "size", "frames", "records", "nbytes",
                 "cache", "sealed", "busy", "stream", "has_ack")

    def __init__(self, stream: Any, seq: int, path: Path, meta: ChunkMeta) -> None:
        self.stream = stream
        self.seq = seq
        self.path = path
        self.meta = meta
        self.owed: set[str] = set(meta.outputs)
        self.fd: int | None = None
        self.size = 0
        self.frames = 0
        self.records = 0
        self.nbytes = 0
        # the batches (times, records, keys) while up; None while down (only on disk)
        self.cache: list[Part] | None = None
        self.sealed = False
        self.busy = 0  # deliveries in flight
        self.has_ack = False  # a sidecar may exist (written, or found at start)

    @property
    def ack_path(self) -> Path:
        return self.path.with_suffix(".ack")

    @classmethod
    def create(cls, stream: Any, seq: int, path: Path, meta: ChunkMeta, up: bool) -> StoredChunk:
        """Open a new chunk file and write its header (raises OSError)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o640)
        chunk = cls(stream, seq, path, meta)
        chunk.fd = fd
        try:
            header = encode_header(meta)
            write_all(fd, header)
        except OSError:
            os.close(fd)
            _unlink(path)
            raise
        chunk.size = len(header)
        if up:
            chunk.cache = []
        return chunk

    def append(self, head: bytes, payload: bytes, times: list[int], records: list[dict[str, Any]],
               keys: list[Any] | None, nbytes: int) -> None:
        """Append one frame; on failure the file is cut back to its last whole frame and re-raised."""
        assert self.fd is not None
        try:
            writev_all(self.fd, head, payload)
        except OSError:
            try:
                os.ftruncate(self.fd, self.size)
            except OSError:
                pass  # a read-only file system: the torn tail is cut at the next start instead
            raise
        self.size += len(head) + len(payload)
        self.frames += 1
        self.records += len(records)
        self.nbytes += nbytes
        if self.cache is not None:
            self.cache.append((times, records, keys))

    def seal(self) -> None:
        """Write the seal and close the file; errors leave an unsealed chunk, cut at the next start."""
        if self.sealed:
            return
        self.sealed = True
        if self.fd is None:
            return
        try:
            write_all(self.fd, encode_seal(self.frames, self.records))
        except OSError:
            pass
        finally:
            os.close(self.fd)
            self.fd = None

    def record_delivered(self, output: str, full_sync: bool) -> None:
        """Append ``output`` to the sidecar (raises OSError)."""
        self.has_ack = True
        fd = os.open(self.ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        try:
            write_all(fd, output.encode() + b"\n")
            if full_sync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def remove(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.cache = None
        _unlink(self.path)
        if self.has_ack:
            _unlink(self.ack_path)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
