"""A followed file and the state every part of the tail input shares.

``TailFile`` is one inode being read: its descriptor (or none while parked), its
read, framed, handed-out and acknowledged offsets, its DB row and identity (key
id, head length). ``TailState`` is the set of followed files and what the
scanner, watcher and reader tell each other (ready files, wake-ups, rescans).
The identity checks live here too: is the name still this inode (rotation,
deletion) and a truncated file's restart under a new identity.
"""

from __future__ import annotations

import os
import re
import time
from typing import TYPE_CHECKING, Any

import trio

from . import watch
from .db import OffsetDB
from .fingerprint import head_hash, make_key_id

if TYPE_CHECKING:
    from logfwd.plugin import Emitter

    from .config import TailConfig

__all__ = ["TailFile", "TailState", "new_identity_after_truncation"]


class TailFile:
    """One followed file (one inode)."""

    def __init__(self, path: str, dev: int, ino: int, fd: int | None, offset: int) -> None:
        self.path = path
        self.orig_path = path  # Path_Key keeps the name the file was found under, as Fluent Bit does
        self.dev = dev
        self.ino = ino
        self.fd = fd
        self.offset = offset  # next byte to read
        self.line_start = offset  # start of the first line not yet framed
        self.committed = offset  # last acknowledged offset
        self.handed = offset  # position of the newest ack handle handed out
        self.row_id = 0
        self.key_id = ""
        self.head_len = 0
        self.tag = ""
        self.framer: Any = None
        self.ml: Any = None
        self.tracker: Any = None
        self.wd = -1
        self.rotated_at: float | None = None
        self.deleted = False
        self.busy = False
        self.last_activity = time.monotonic()
        self.long_seen = 0
        self.unparsed_seen = 0
        self.static = False

    @property
    def id(self) -> tuple[int, int]:
        return (self.dev, self.ino)

    def __repr__(self) -> str:
        return f"<TailFile {self.path} ino={self.ino} off={self.offset} fd={self.fd}>"


class TailState:
    """The followed files and the signals between scanner, watcher and reader (one per run)."""

    def __init__(self, cfg: TailConfig, emitter: Emitter, db: OffsetDB, metrics: Any, log: Any) -> None:
        self.cfg = cfg
        self.emitter = emitter
        self.db = db
        self.metrics = metrics
        self.log = log
        self.files: dict[tuple[int, int], TailFile] = {}
        self.ready: set[TailFile] = set()
        self.wake = trio.Event()
        self.rescan = trio.Event()
        self.open_count = 0
        self.inotify: watch.Inotify | None = None
        self.wd_files: dict[int, TailFile] = {}
        self._warned: dict[str, float] = {}

    def warn(self, key: str, msg: str, *args: Any) -> None:
        """Log at most once a minute per key (bad files must not flood the log)."""
        now = time.monotonic()
        if now - self._warned.get(key, -1e9) >= 60:
            self._warned[key] = now
            self.log.warning(msg, *args)

    def mark_ready(self, f: TailFile) -> None:
        self.ready.add(f)
        self.wake.set()

    def update_gauges(self) -> None:
        self.metrics.set("files_watched", len(self.files))
        self.metrics.set("files_open", self.open_count)

    def tag_for(self, path: str) -> str:
        """The file's tag: ``Tag_Regex`` groups into ``<name>``, then ``*`` expanded with the path."""
        tag = self.emitter.tag
        tag_regex = self.cfg.tag_regex
        if tag_regex is not None:
            m = tag_regex.search(path)
            if m is not None:
                groups = {k: v for k, v in m.groupdict().items() if v}
                return re.sub(r"<([^<>]+)>", lambda g: groups.get(g.group(1), "_"), tag)
            self.warn(f"tagre:{path}", "tail: Tag_Regex does not match %s; using the plain tag", path)
            tag = re.sub(r"<[^<>]+>", "_", tag)
        return self.emitter.expand_tag(path) if "*" in tag else tag

    def check_identity(self, f: TailFile, reopen: Any) -> None:
        """Is ``f.path`` still this file? If not, it was rotated (renamed) or deleted.

        ``reopen(f)`` opens a parked file again (the descriptor budget's business).
        """
        if f.rotated_at is not None:
            return
        try:
            st: os.stat_result | None = os.stat(f.path)
        except OSError:
            st = None
        if st is not None and (st.st_dev, st.st_ino) == f.id:
            return
        if f.fd is None and not reopen(f):
            return
        try:
            nlink = os.fstat(f.fd).st_nlink  # type: ignore[arg-type]
        except OSError:
            nlink = 0
        f.rotated_at = time.monotonic()
        if nlink == 0:
            f.deleted = True
            self.log.info("tail: %s was deleted; reading what is left", f.path)
        else:
            self.metrics.inc("rotations")
            new = watch.find_inode(os.path.dirname(f.path), f.dev, f.ino)
            self.log.info("tail: %s was rotated%s", f.path, f" to {new}" if new else "")
            if new:
                f.path = new
                self.db.rename(f.row_id, new, True)
        self.mark_ready(f)
        self.rescan.set()  # the new file at the old name


def new_identity_after_truncation(state: TailState, f: TailFile) -> None:
    """copytruncate: restart ``f`` at 0 under a new key id (held lines were emitted by the caller)."""
    state.log.info("tail: %s was truncated; reading it from the start", f.path)
    state.metrics.inc("truncations")
    f.framer.reset(0)
    f.offset = 0
    f.line_start = 0
    f.handed = 0
    if state.cfg.ml is not None:
        f.ml = state.cfg.ml.stream(start_offset=0, buffer_limit=state.cfg.ml_buffer_limit)
        f.unparsed_seen = 0
    f.long_seen = f.framer.long_lines
    # new content at old offsets must not get the old origin keys (an output would overwrite)
    f.key_id = make_key_id(f.dev, f.ino, b"", time.time_ns())
    f.head_len = 0
    state.db.set_identity(f.row_id, 0, head_hash(b""), f.key_id)
