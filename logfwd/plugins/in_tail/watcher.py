"""Change detection for tail: inotify events, and stat polling where inotify cannot see.

inotify (``watch.Inotify``) tells us a file grew, was renamed or deleted, and
that a watched directory gained a file (a rescan). It costs no descriptors per
file. Stat polling covers what it misses: no inotify at all, files beyond
``fs.inotify.max_user_watches``, writers through mmap, network file systems; it
runs every ``STAT_POLL`` seconds for unwatched files, every ``SAFETY_POLL`` else.
"""

from __future__ import annotations

import os
import time

import trio

from . import watch
from .file import TailFile, TailState
from .reader import Descriptors

__all__ = ["Watcher", "STAT_POLL", "SAFETY_POLL"]

STAT_POLL = 0.25  # seconds between stat polls without inotify
SAFETY_POLL = 1.0  # seconds between stat polls with inotify (missed events, mmap writers, NFS)


class Watcher:
    """Marks files ready when they change and checks their identity (rotation, deletion)."""

    def __init__(self, state: TailState, fds: Descriptors) -> None:
        self.s = state
        self.fds = fds
        self.wd_dirs: dict[int, str] = {}
        self.dir_wds: dict[str, int] = {}
        if state.cfg.use_inotify:
            try:
                state.inotify = watch.Inotify()
            except OSError as e:
                state.log.warning("tail: inotify unavailable (%s); polling files with stat", e)

    def close(self) -> None:
        if self.s.inotify is not None:
            self.s.inotify.close()
            self.s.inotify = None

    def watch_file(self, f: TailFile) -> None:
        ino = self.s.inotify
        if ino is not None:
            f.wd = ino.add_watch(f.path, watch.FILE_MASK)
            if f.wd >= 0:
                self.s.wd_files[f.wd] = f

    async def watch_dirs(self) -> None:
        """Watch every directory a Path pattern can match files in (new files trigger a rescan)."""
        ino = self.s.inotify
        if ino is None:
            return
        dirs = await trio.to_thread.run_sync(watch.watch_dirs, self.s.cfg.patterns)
        for d in dirs - set(self.dir_wds):
            wd = ino.add_watch(d, watch.DIR_MASK)
            if wd >= 0:
                self.dir_wds[d] = wd
                self.wd_dirs[wd] = d

    async def inotify_task(self) -> None:
        s = self.s
        ino = s.inotify
        assert ino is not None
        while True:
            events = await ino.read_events()
            for wd, mask, _name in events:
                if mask & watch.IN_Q_OVERFLOW:
                    s.ready.update(s.files.values())
                    s.rescan.set()
                    continue
                f = s.wd_files.get(wd)
                if f is not None:
                    self._file_event(f, wd, mask)
                    continue
                d = self.wd_dirs.get(wd)
                if d is not None:
                    if mask & (watch.IN_IGNORED | watch.IN_DELETE_SELF | watch.IN_MOVE_SELF):
                        self.wd_dirs.pop(wd, None)
                        if self.dir_wds.get(d) == wd:
                            del self.dir_wds[d]
                    s.rescan.set()
            s.wake.set()

    def _file_event(self, f: TailFile, wd: int, mask: int) -> None:
        if mask & watch.IN_IGNORED:
            self.s.wd_files.pop(wd, None)
            f.wd = -1
        if mask & (watch.IN_MOVE_SELF | watch.IN_DELETE_SELF | watch.IN_ATTRIB):
            self.s.check_identity(f, self.fds.reopen)
        if mask & watch.IN_MODIFY:
            self.s.ready.add(f)

    async def poller(self) -> None:
        s = self.s
        while True:
            # files without an inotify watch (no inotify, or fs.inotify.max_user_watches exhausted)
            # are polled as often as in stat mode; watched ones only as a safety net
            unwatched = s.inotify is None or any(f.wd < 0 for f in s.files.values())
            await trio.sleep(STAT_POLL if unwatched else SAFETY_POLL)
            now = time.time()
            for f in list(s.files.values()):
                self._poll_file(f, now)
            s.wake.set()

    def _poll_file(self, f: TailFile, now: float) -> None:
        cfg = self.s.cfg
        if f.fd is not None:
            try:
                st = os.fstat(f.fd)
            except OSError:
                return
            if st.st_size != f.offset:
                self.s.ready.add(f)
            elif (cfg.ignore_active_older and cfg.ignore_older and f.rotated_at is None
                  and st.st_mtime < now - cfg.ignore_older):
                f.rotated_at = time.monotonic() - cfg.rotate_wait  # close it like a drained rotated file
        else:
            try:
                st = os.stat(f.path)
            except OSError:
                st = None
            if st is not None and (st.st_dev, st.st_ino) == f.id and st.st_size != f.offset:
                self.s.ready.add(f)
        self.s.check_identity(f, self.fds.reopen)
