"""Reading followed files: the descriptor budget, the read loop, framing and emitting.

``Descriptors`` holds at most a budget of open files derived from
``RLIMIT_NOFILE``; beyond it the least recently active idle file is parked
(closed, still tracked by inode and offset) and reopened by name when it grows.
``Reader`` reads ready files a few chunks per turn, frames lines, applies the
parser or multiline stream, emits one batch per read with an acknowledgement
handle at the last complete line, and finishes rotated files after Rotate_Wait.
"""

from __future__ import annotations

import os
import resource
import time
from typing import Any

import trio

from logfwd.plugin import OriginKeys

from . import multiline, watch
from .file import TailFile, TailState, new_identity_after_truncation
from .fingerprint import HEAD_BYTES, head_hash, read_head

__all__ = ["Descriptors", "Reader"]

ROUNDS_PER_TURN = 4  # reads of one file before the others get a turn
THREAD_READ_MIN = 64 * 1024  # larger reads go to a worker thread (a cold page cache must not stall the loop)


def fd_budget() -> int:
    """Descriptors we may hold for files: raise the soft RLIMIT_NOFILE to the hard one, keep a reserve.

    Sockets, the DB, the inotify instance and other plugins need descriptors too,
    so a quarter of the limit (at most 256) stays free.
    """
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = 1 << 20
        if soft == resource.RLIM_INFINITY:
            soft = 1 << 20
        if soft < hard:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
                soft = hard
            except (ValueError, OSError):
                pass
    except (ValueError, OSError):
        soft = 1024
    reserve = min(256, soft // 4)
    return max(8, soft - reserve)


class Descriptors:
    """Open descriptors of followed files, within a budget; idle files are parked beyond it."""

    def __init__(self, state: TailState) -> None:
        self.s = state
        self.max_open = fd_budget()

    def room(self) -> bool:
        """True if one more file may be opened (parking an idle one if needed)."""
        return self.s.open_count < self.max_open or self.park_one()

    def opened(self) -> None:
        self.s.open_count += 1

    def close(self, f: TailFile) -> None:
        if f.fd is not None:
            try:
                os.close(f.fd)
            except OSError:
                pass
            f.fd = None
            self.s.open_count -= 1

    def park_one(self) -> bool:
        """Close the descriptor of the least recently active idle file to stay within the budget."""
        best: TailFile | None = None
        ready = self.s.ready
        for f in self.s.files.values():
            if f.fd is None or f.busy or f.rotated_at is not None or f in ready:
                continue
            if best is None or f.last_activity < best.last_activity:
                best = f
        if best is None:
            return False
        self.close(best)
        return True

    def reopen(self, f: TailFile) -> bool:
        """Open a parked file again, by name, checking it is still the same inode."""
        if not self.room():
            return False
        candidates = [f.path]
        found = watch.find_inode(os.path.dirname(f.path), f.dev, f.ino)
        if found and found != f.path:
            candidates.append(found)
        for p in candidates:
            try:
                fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) == f.id:
                f.fd = fd
                f.path = p
                self.opened()
                return True
            os.close(fd)
        # gone while parked (deleted, or renamed out of its directory): nothing more to read
        self.s.warn(f"lost:{f.path}", "tail: %s disappeared while its descriptor was parked", f.path)
        f.deleted = True
        if f.rotated_at is None:
            f.rotated_at = time.monotonic() - self.s.cfg.rotate_wait
        return False


class Reader:
    """The read loop: ready files → lines → records → emitted batches; rotated files retired."""

    def __init__(self, state: TailState, fds: Descriptors) -> None:
        self.s = state
        self.fds = fds
        # read offsets of retired (rotated, drained) files: if a rotated name still matches Path,
        # the file is found again and must continue where we stopped, not at the last acked offset
        self.retired: dict[tuple[int, int], tuple[int, int]] = {}

    async def run(self) -> None:
        s = self.s
        while True:
            s.wake = trio.Event()
            busy = False
            for f in list(s.ready):
                if f.id in s.files:
                    busy |= await self.read_file(f)
                else:
                    s.ready.discard(f)
            await self.timeouts()
            if s.cfg.exit_on_eof and not s.ready and not busy and self.all_drained():
                await self.finish_all()
                return
            if busy or s.ready:
                await trio.lowlevel.checkpoint()
                continue
            with trio.move_on_after(self.next_deadline()):
                await s.wake.wait()

    async def read_file(self, f: TailFile) -> bool:
        """Read a file's backlog (a few chunks per turn); True if more is waiting."""
        self.s.ready.discard(f)  # before reading: an event arriving meanwhile re-adds it
        if f.fd is None and not self.fds.reopen(f):
            return False
        f.busy = True
        try:
            for _ in range(ROUNDS_PER_TURN):
                data = await self._read_chunk(f)
                if not data:
                    return False
                lines, ends = f.framer.feed(data)
                if b"\0" in data:
                    lines = [ln.lstrip(b"\0") if ln[:1] == b"\0" else ln for ln in lines]
                self._count_long(f)
                if lines:
                    await self.process(f, lines, ends)
            self.s.ready.add(f)
            return True
        finally:
            f.busy = False

    async def _read_chunk(self, f: TailFile) -> bytes:
        """The next chunk of ``f`` (b"" when nothing is waiting); handles truncation and fadvise."""
        fd = f.fd
        if fd is None:
            return b""
        try:
            size = os.fstat(fd).st_size
        except OSError:
            return b""
        if size < f.offset:
            await self.flush_file(f)
            new_identity_after_truncation(self.s, f)
        if size <= f.offset:
            return b""
        n = min(size - f.offset, self.s.cfg.read_size)
        if n >= THREAD_READ_MIN:
            data = await trio.to_thread.run_sync(os.pread, fd, n, f.offset)
        else:
            data = os.pread(fd, n, f.offset)
        if not data or f.fd is None:  # f.fd None: parked or closed while we were in the thread
            return b""
        start = f.offset
        f.offset += len(data)
        f.last_activity = time.monotonic()
        if self.s.cfg.fadvise:
            try:
                os.posix_fadvise(fd, start, len(data), os.POSIX_FADV_DONTNEED)
            except OSError:
                pass
        if f.head_len < HEAD_BYTES and start < HEAD_BYTES:
            self._grow_head(f)
        return data

    def _grow_head(self, f: TailFile) -> None:
        if f.fd is None:
            return
        head = read_head(f.fd)
        if len(head) > f.head_len:
            f.head_len = len(head)
            self.s.db.set_identity(f.row_id, len(head), head_hash(head))

    def _count_long(self, f: TailFile) -> None:
        n = f.framer.long_lines - f.long_seen
        if n:
            f.long_seen = f.framer.long_lines
            skip = self.s.cfg.skip_long
            self.s.metrics.inc("skipped_lines" if skip else "truncated_lines", n)
            self.s.warn(f"long:{f.path}", "tail: %s has lines longer than Buffer_Max_Size (%d bytes): %s",
                        f.path, self.s.cfg.max_line, "skipped" if skip else "cut")

    async def process(self, f: TailFile, lines: list[bytes], ends: list[int]) -> None:
        """Lines → records → one emitted batch, checkpointed at the last line's end."""
        cfg = self.s.cfg
        nbytes = ends[-1] - f.line_start
        starts = ([f.line_start] + ends[:-1]) if cfg.offset_key else None
        f.line_start = ends[-1]
        commit: int | None = ends[-1]
        if cfg.skip_empty:
            keep = [i for i, ln in enumerate(lines) if ln]
            if len(keep) != len(lines):
                lines = [lines[i] for i in keep]
                ends = [ends[i] for i in keep]
                if starts is not None:
                    starts = [starts[i] for i in keep]
        now = time.time_ns()
        if not lines:
            records: list[dict[str, Any]] = []
            times: list[int] = []
            offs: list[int] = []
            if f.ml is not None:
                commit = f.ml.safe_offset
        elif cfg.ml is not None:
            times, records, offs = f.ml.feed_lines([now] * len(lines), lines, ends)
            starts = None
            # lines held for an incomplete record are not committed: the stream knows up to where
            commit = f.ml.safe_offset
            unparsed = f.ml.unparsed - f.unparsed_seen
            if unparsed:
                f.unparsed_seen = f.ml.unparsed
                self.s.metrics.inc("parse_errors", unparsed)
        elif cfg.parser is not None:
            times, records, nfail = cfg.parser.parse_lines(lines, now)
            offs = ends
            if nfail:
                self.s.metrics.inc("parse_errors", nfail)
        else:
            key = cfg.key
            records = [{key: ln.decode("utf-8", "replace")} for ln in lines]
            times = [now] * len(records)
            offs = ends
        await self.emit(f, times, records, offs, starts, commit, nbytes)

    async def emit(
        self,
        f: TailFile,
        times: list[int],
        records: list[dict[str, Any]],
        offs: list[int],
        starts: list[int] | None,
        commit: int | None,
        nbytes: int,
    ) -> None:
        cfg = self.s.cfg
        if cfg.path_key:
            pk, path = cfg.path_key, f.orig_path
            for r in records:
                r[pk] = path
        if cfg.offset_key:
            ok = cfg.offset_key
            for r, o in zip(records, starts if starts is not None else offs, strict=False):
                r[ok] = o
        if commit is None and not records:
            return
        keys = OriginKeys(f.key_id, offs) if records else None
        # records that complete no checkpoint (a multiline record still open) repeat the previous position
        if commit is not None:
            f.handed = commit
        handle = f.tracker.handle(f.handed)
        await self.s.emitter.emit(records, times, tag=f.tag, handle=handle, nbytes=max(nbytes, 1), keys=keys)

    async def flush_file(self, f: TailFile) -> None:
        """Emit the held partial line and the held multiline record of a file."""
        lines, ends = f.framer.flush()
        if lines:
            await self.process(f, lines, ends)
        held = multiline.held(f)
        if held is not None:
            times, records, offs = held
            await self.emit(f, times, records, offs, None, f.ml.safe_offset, 1)

    # ------------------------------------------------------------------ timers

    def next_deadline(self) -> float:
        now = time.monotonic()
        t = 5.0
        cfg = self.s.cfg
        for f in self.s.files.values():
            if f.rotated_at is not None:
                t = min(t, max(0.0, f.rotated_at + cfg.rotate_wait - now) + 0.01)
            d = multiline.deadline(f, now, cfg.ml_timeout)
            if d is not None:
                t = min(t, d)
        return t

    async def timeouts(self) -> None:
        now = time.monotonic()
        cfg = self.s.cfg
        for f in list(self.s.files.values()):
            due = multiline.expired(f, now, cfg.ml_timeout)
            if due is not None:
                times, records, offs = due
                await self.emit(f, times, records, offs, None, f.ml.safe_offset, 1)
            if f.rotated_at is not None and (f.deleted or now - f.rotated_at >= cfg.rotate_wait):
                if f in self.s.ready or f.busy:
                    continue
                if f.fd is not None:
                    try:
                        if os.fstat(f.fd).st_size > f.offset:
                            self.s.mark_ready(f)
                            continue
                    except OSError:
                        pass
                await self.retire(f)

    async def retire(self, f: TailFile) -> None:
        """Finish a rotated or deleted file: emit what it holds, close it, forget it."""
        s = self.s
        await self.flush_file(f)
        self.fds.close(f)
        if f.wd >= 0 and s.inotify is not None:
            s.wd_files.pop(f.wd, None)
            s.inotify.rm_watch(f.wd)
            f.wd = -1
        s.files.pop(f.id, None)
        s.ready.discard(f)
        if f.deleted:
            s.db.delete(f.row_id)
        else:
            self.retired[f.id] = (f.offset, f.row_id)
        s.metrics.inc("files_closed")
        s.update_gauges()

    def all_drained(self) -> bool:
        for f in self.s.files.values():
            if f.busy:
                return False
            if f.fd is not None:
                try:
                    if os.fstat(f.fd).st_size != f.offset:
                        return False
                except OSError:
                    continue
        return True

    async def finish_all(self) -> None:
        """Exit_On_Eof: everything was read once; emit held lines so nothing stays behind."""
        for f in list(self.s.files.values()):
            await self.flush_file(f)
