"""File discovery: which files ``Path`` names, and where each starts being read.

A scan expands the globs (minus ``Exclude_Path``), skips files older than
``Ignore_Older`` (remembering their size), and adds new files at the offset
their DB row, ``Read_from_Head`` and startup-vs-refresh rules give. At startup
it also drains files a previous run followed that were rotated while we were
stopped; every scan forgets DB rows of files that are gone.
"""

from __future__ import annotations

import os
import stat
import time

import trio

from logfwd._fastparse import LineFramer

from . import watch
from .db import FileRow
from .file import TailFile, TailState
from .fingerprint import head_hash, head_matches, make_key_id, read_head
from .reader import Descriptors, Reader
from .watcher import Watcher

__all__ = ["Scanner"]


class Scanner:
    """Finds files matching Path at start and every Refresh_Interval (or when a directory changes)."""

    def __init__(self, state: TailState, fds: Descriptors, reader: Reader, watcher: Watcher, shared_db: bool) -> None:
        self.s = state
        self.fds = fds
        self.reader = reader
        self.watcher = watcher
        self.shared_db = shared_db  # a DB another input uses too: its rows are not ours to delete
        self.known_names = {row.name for row in state.db.all()}  # paths a previous run followed
        self.ignored_sizes: dict[tuple[int, int], int] = {}

    async def run(self) -> None:
        s = self.s
        while True:
            with trio.move_on_after(s.cfg.refresh):
                await s.rescan.wait()
            s.rescan = trio.Event()
            await trio.sleep(0.02)  # let a burst of directory events coalesce into one scan
            await self.scan(startup=False)

    async def scan(self, startup: bool) -> None:
        s = self.s
        paths = await trio.to_thread.run_sync(watch.expand, s.cfg.patterns, s.cfg.excludes)
        seen: set[tuple[int, int]] = set()
        now = time.time()
        for p in paths:
            fid = self._consider(p, startup, now)
            if fid is not None:
                seen.add(fid)
        for fid in [k for k in self.ignored_sizes if k not in seen]:
            del self.ignored_sizes[fid]
        if startup:
            self._recover_rotated(seen)
        self._gc_rows(seen)
        await self.watcher.watch_dirs()
        for f in list(s.files.values()):
            s.check_identity(f, self.fds.reopen)
        s.update_gauges()

    def _consider(self, p: str, startup: bool, now: float) -> tuple[int, int] | None:
        """Follow the regular file ``p`` if it is new and not too old; its (dev, inode) if it exists."""
        try:
            st = os.stat(p)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        fid = (st.st_dev, st.st_ino)
        f = self.s.files.get(fid)
        if f is not None:
            if f.path != p and f.rotated_at is not None:
                f.path = p  # a rotated file that still matches Path: same inode, same stream
            return fid
        ignore_older = self.s.cfg.ignore_older
        if ignore_older and st.st_mtime < now - ignore_older:
            # if it becomes active later, only what is appended from now on is new
            self.ignored_sizes.setdefault(fid, st.st_size)
            return fid
        self.add_file(p, st, startup)
        return fid

    def _recover_rotated(self, seen: set[tuple[int, int]]) -> None:
        """At start, a DB row whose file was renamed while we were stopped: drain the rest of it."""
        s = self.s
        for row in s.db.all():
            if row.dev is not None and (row.dev, row.inode) in seen:
                continue
            if row.dev is None and any(i == row.inode for _, i in seen):
                continue
            directory = os.path.dirname(row.name)
            dev = row.dev if row.dev is not None else os.stat(directory).st_dev if os.path.isdir(directory) else -1
            path = watch.find_inode(directory, dev, row.inode)
            if path is None:
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue
            if st.st_size <= row.offset or (st.st_dev, st.st_ino) in s.files:
                continue
            f = self.add_file(path, st, startup=True)
            if f is not None and f.row_id == row.id:
                f.rotated_at = time.monotonic()
                s.metrics.inc("rotations")
                s.log.info("tail: %s was rotated to %s while stopped; reading its rest", row.name, path)

    def _gc_rows(self, seen: set[tuple[int, int]]) -> None:
        """Forget DB rows of files that no longer match Path and are not followed.

        Not with a DB shared by two inputs: each would delete the other's rows.
        """
        if self.shared_db:
            return
        s = self.s
        live = seen | set(s.files)
        retired = self.reader.retired
        for fid in [k for k in retired if k not in live]:
            del retired[fid]
        inodes = {i for _, i in live}
        for row in s.db.all():
            if row.dev is not None and (row.dev, row.inode) in live:
                continue
            if row.dev is None and row.inode in inodes:
                continue
            s.db.delete(row.id)

    def _open(self, path: str) -> int | None:
        if not self.fds.room():
            self.s.warn("fds", "tail: %d files open (descriptor budget); %s waits for the next scan",
                        self.s.open_count, path)
            return None
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOATIME", 0))
        except PermissionError:
            try:
                return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                self.s.warn(f"open:{path}", "tail: cannot open %s: %s", path, e)
        except OSError as e:
            self.s.warn(f"open:{path}", "tail: cannot open %s: %s", path, e)
        return None

    def add_file(self, path: str, st: os.stat_result, startup: bool) -> TailFile | None:
        s = self.s
        fd = self._open(path)
        if fd is None:
            return None
        fst = os.fstat(fd)
        dev, ino, size = fst.st_dev, fst.st_ino, fst.st_size
        if (dev, ino) in s.files:  # raced with a rename: already followed
            os.close(fd)
            return None
        self.fds.opened()
        s.metrics.inc("files_opened")
        head = read_head(fd)
        row, reused = self._match_row(fd, dev, ino, path)
        if row is not None:
            offset = self._known_offset(row, dev, ino, head, path, size)
            row_id, head_len, key_id = row.id, max(row.head_len, 0), row.key_id
        else:
            offset = self._new_offset(dev, ino, path, size, startup, reused)
            key_id = make_key_id(dev, ino, head, time.time_ns())
            row_id = s.db.insert(path, offset, dev, ino, len(head), head_hash(head), key_id)
            head_len = len(head)
        f = TailFile(path, dev, ino, fd, offset)
        f.static = startup
        f.row_id = row_id
        f.key_id = key_id
        f.head_len = head_len
        f.tag = s.tag_for(path)
        f.framer = LineFramer(s.cfg.max_line, s.cfg.skip_long, offset)
        f.ml = (s.cfg.ml.stream(start_offset=offset, buffer_limit=s.cfg.ml_buffer_limit)
                if s.cfg.ml is not None else None)
        f.unparsed_seen = 0
        db = s.db
        # With filesystem storage a commit means "written to a chunk": write the offset at once,
        # so a kill re-reads (duplicates) only the batch being written, not a second of input.
        flush_now = s.emitter.durable and bool(s.cfg.db_path)

        def on_commit(pos: int, f: TailFile = f, rid: int = row_id) -> None:
            f.committed = pos
            db.set_offset(rid, pos)
            if flush_now:
                try:
                    db.flush()
                except Exception as e:  # noqa: BLE001 - the periodic flusher retries it
                    s.warn("dbflush", "tail: writing offsets to %s failed: %s", s.cfg.db_path, e)

        f.tracker = s.emitter.tracker(on_commit)
        s.files[f.id] = f
        self.watcher.watch_file(f)
        if size != offset:
            s.mark_ready(f)
        s.update_gauges()
        return f

    def _match_row(self, fd: int, dev: int, ino: int, path: str) -> tuple[FileRow | None, bool]:
        """The DB row of this file (same inode and same first bytes); rows of a reused inode are deleted."""
        s = self.s
        rows = s.db.find(dev, ino, path if s.cfg.compare_filename else None)
        row = None
        reused = False
        for r in rows:
            if row is None and head_matches(fd, r.head_len, r.head_hash):
                row = r
            else:
                s.db.delete(r.id)  # the inode now belongs to another file
                reused = True
                s.metrics.inc("inode_reuse")
                s.log.info("tail: %s reuses inode %d of %s; reading it from the start", path, ino, r.name)
        return row, reused

    def _known_offset(self, row: FileRow, dev: int, ino: int, head: bytes, path: str, size: int) -> int:
        """Where a file with a DB row resumes; fills in identity columns an older DB lacks."""
        s = self.s
        offset = row.offset
        if offset > size:
            offset = 0
            s.metrics.inc("truncations")
        if row.key_id is None or row.head_hash is None or row.dev is None:
            key_id = row.key_id or make_key_id(dev, ino, head, time.time_ns())
            s.db.update_identity(row.id, dev, len(head), head_hash(head), key_id)
            row.head_len = len(head)
            row.key_id = key_id
        if row.name != path:
            s.db.rename(row.id, path, False)
        retired = self.reader.retired.pop((dev, ino), None)
        if retired is not None and retired[1] == row.id and offset <= retired[0] <= size:
            offset = retired[0]
        return offset

    def _new_offset(self, dev: int, ino: int, path: str, size: int, startup: bool, reused: bool) -> int:
        """Where a file without a DB row starts."""
        known = self.ignored_sizes.pop((dev, ino), None)
        if known is not None and not reused:
            return min(known, size)
        if self.s.cfg.read_from_head or reused:
            return 0
        if startup:
            # a name the DB followed before belongs to a file that replaced it while we were stopped
            return 0 if path in self.known_names else size
        return 0
