"""Reading a stream directory back at start: torn tails cut, damaged chunks moved aside.

Runs in a worker thread before any input starts, so the backlog is known (and queued
first) before new records arrive.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .chunk import Part, read_acks
from .format import ChunkMeta, CorruptChunk, encode_seal, parse_chunk, unpack_batch

__all__ = ["Found", "Scan", "scan_stream", "load_chunk", "move_corrupt"]


@dataclass(slots=True)
class Found:
    seq: int
    path: Path
    meta: ChunkMeta
    size: int
    frames: int
    records: int
    delivered: set[str]


@dataclass(slots=True)
class Scan:
    chunks: list[Found] = field(default_factory=list)
    corrupt: list[tuple[Path, str]] = field(default_factory=list)
    torn: list[tuple[Path, int]] = field(default_factory=list)  # (chunk, bytes cut)
    max_seq: int = 0


def _seq_of(path: Path) -> int | None:
    try:
        return int(path.stem)
    except ValueError:
        return None


def scan_stream(directory: Path) -> Scan:
    """Every chunk of a stream directory, oldest first."""
    scan = Scan()
    paths = sorted((p for p in directory.glob("*.chunk") if _seq_of(p) is not None), key=lambda p: _seq_of(p) or 0)
    for path in paths:
        seq = _seq_of(path) or 0
        scan.max_seq = max(scan.max_seq, seq)
        try:
            data = path.read_bytes()
            rec = parse_chunk(data)
        except CorruptChunk as e:
            scan.corrupt.append((path, str(e)))
            continue
        except OSError as e:
            scan.corrupt.append((path, f"unreadable: {e.strerror}"))
            continue
        if not rec.sealed:
            if rec.torn_bytes:
                scan.torn.append((path, rec.torn_bytes))
            _finish(path, rec.good_size, len(rec.payloads), rec.records)
        scan.chunks.append(Found(seq, path, rec.meta, rec.good_size, len(rec.payloads), rec.records,
                                 read_acks(path.with_suffix(".ack"))))
    # sidecars whose chunk is gone (deleted between the two unlinks) are leftovers
    for ack in directory.glob("*.ack"):
        if not ack.with_suffix(".chunk").exists():
            ack.unlink(missing_ok=True)
    return scan


def _finish(path: Path, good_size: int, frames: int, records: int) -> None:
    """Cut a torn tail and seal the chunk, so that later damage to it is recognised as such."""
    try:
        with open(path, "r+b") as fh:
            fh.truncate(good_size)
            fh.seek(good_size)
            fh.write(encode_seal(frames, records))
    except OSError:
        pass  # read-only: it is read as it is, and cut again next time


def load_chunk(path: Path) -> list[Part]:
    """The batches of a (sealed) chunk file, for a chunk that is down."""
    return [unpack_batch(payload) for payload in parse_chunk(path.read_bytes()).payloads]


def move_corrupt(root: Path, stream: str, path: Path, delete: bool) -> Path | None:
    """Move a damaged chunk (and its sidecar) to ``<root>/corrupt/``, or delete it when asked to."""
    ack = path.with_suffix(".ack")
    if delete:
        path.unlink(missing_ok=True)
        ack.unlink(missing_ok=True)
        return None
    dest_dir = root / "corrupt"
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / f"{stream}-{path.name}"
    shutil.move(os.fspath(path), os.fspath(dest))
    if ack.exists():
        shutil.move(os.fspath(ack), os.fspath(dest.with_suffix(".ack")))
    return dest
