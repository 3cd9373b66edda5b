"""``tail``: follow log files the way Fluent Bit's tail input does.

This module wires the parts, split by concern as Fluent Bit's ``in_tail`` is:
``config`` (options, validated settings), ``db`` (offsets), ``scan`` (discovery),
``watcher`` (inotify, stat polling), ``file`` (a followed file, identity checks),
``reader`` (reading, framing, the descriptor budget), ``multiline`` (held records'
timeouts), ``multiline_legacy`` and ``dockermode`` (Fluent Bit's older ways of joining
lines), ``fingerprint`` (first-bytes identity) and ``watch`` (the inotify binding).

Options, values and defaults are Fluent Bit's. What this implementation
guarantees beyond reading lines:

- **At-least-once.** A file's offset in the DB advances only when every output
  has acknowledged the records up to it (an ``AckTracker`` per file). A crash
  replays from the last acknowledged line and never skips one.
- **Rotation.** rename-and-create: the old file is read through its open
  descriptor to its end, for at least ``Rotate_Wait``, then closed; the new
  file at the path is read from 0. copytruncate: a file shorter than our offset
  restarts at 0. Deletion: the file is read to its end, then closed. A file
  whose name changes but still matches ``Path`` is recognised by its inode and
  not read twice.
- **Identity.** Inode numbers are reused; the DB stores a hash of each file's
  first bytes and a new file with an old inode starts at 0.
- **Partial lines.** A last line without ``\\n`` is held until it is completed
  (or the file is rotated away and drained, or ``Exit_On_Eof`` ends the read).
- **Many files.** inotify watches cost no descriptors; descriptors are opened
  for tracked files up to a budget derived from ``RLIMIT_NOFILE`` (raised to
  its hard limit at start), beyond which idle files are parked (closed, tracked
  by inode and offset) and reopened when they grow.

Differences from Fluent Bit, on purpose:

- ``Skip_Long_Lines off``: Fluent Bit stops following a file with a line
  longer than ``Buffer_Max_Size``. We keep the file and emit that line cut to
  ``Buffer_Max_Size`` bytes (counted in ``truncated_lines``); with
  ``Skip_Long_Lines on`` the line is dropped (counted in ``skipped_lines``).
- ``Tag_Regex`` that does not match a file name: Fluent Bit ignores the file; we
  read it under the plain ``Tag`` expansion and log an error.
- ``File_Cache_Advise on`` drops from the page cache only the ranges already
  read, so a file is never read twice from disk.
- A file skipped by ``Ignore_Older`` that is written to again is read from the
  size it had when it was skipped (only the new lines), whatever ``Read_from_Head``.
- With ``DB`` and ``Read_from_Head off``, a file found at start under a name the DB
  followed before (it replaced a rotated file while we were stopped) is read from
  its start; a file reusing a known inode with different first bytes too.
- ``Docker_Mode`` is served by the built-in ``docker`` multiline parser, with
  ``Docker_Mode_Flush`` as its flush timeout; with ``Docker_Mode_Parser`` whole Docker
  lines are joined by a first-line parser, as Fluent Bit does (``dockermode``). ``Parser`` is
  not applied when ``multiline.parser`` or ``Multiline On`` is set (Fluent Bit asks not
  to combine them); the multiline parser's own parser is.
- The old multiline mode (``Multiline On``, ``Parser_Firstline``, ``Parser_N``,
  ``Multiline_Flush``) works as Fluent Bit's (``multiline_legacy``), with the two
  differences its docstring gives.
- ``Offset_Key`` with ``multiline.parser`` holds the checkpoint offset reported
  for the record (the end of its last line), not the start of its first line.
"""

from __future__ import annotations

import os
import sqlite3

import trio

from logfwd.plugin import Emitter, Input, StartError

from .config import OPTIONS, TailConfig, load_config
from .db import OffsetDB
from .file import TailFile, TailState
from .reader import Descriptors, Reader
from .scan import Scanner
from .watcher import Watcher

__all__ = ["TailInput", "TailFile", "PLUGIN"]

DB_FLUSH_INTERVAL = 1.0
_DBS_IN_USE: set[str] = set()  # DB files opened by tail inputs of this process


class TailInput(Input):
    name = "tail"
    replayable = True  # re-read from its checkpoint after a restart
    description = "Follow text files (tail -f) with rotation, offsets DB and parsers"
    options = OPTIONS

    def setup(self) -> None:
        self.cfg: TailConfig = load_config(self.settings, self.ctx.parsers, self.log, self.ctx.service)
        self.db: OffsetDB | None = None
        self._watcher: Watcher | None = None
        self._state: TailState | None = None
        self._db_key: str | None = None
        self._shared_db = False

    # ------------------------------------------------------------------ run

    def _open_db(self) -> tuple[OffsetDB, bool]:
        """The offsets DB (in memory without ``DB``); StartError with one line if it cannot be opened."""
        path = self.cfg.db_path
        shared = False
        if path:
            directory = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(directory):
                raise StartError(f"cannot open DB {path}: directory {directory} does not exist")
            key = os.path.realpath(path)
            shared = key in _DBS_IN_USE
            if shared:
                self.log.warning("tail: DB %s is used by another tail input; give each input its own DB "
                                 "(rows of files no longer matching Path are kept, not cleaned up)", path)
        try:
            db = OffsetDB(path, self.cfg.db_sync, self.cfg.db_journal, self.cfg.db_locking)
        except (sqlite3.Error, OSError) as e:
            raise StartError(f"cannot open DB {path}: {e}") from None
        if path:
            self._db_key = os.path.realpath(path)
            _DBS_IN_USE.add(self._db_key)
        return db, shared

    def exit_when_done(self) -> bool:
        return self.cfg.exit_on_eof  # Fluent Bit's Exit_On_Eof ends the daemon, not just the input

    def save_checkpoint(self) -> None:
        """Write the acknowledged offsets now (a second SIGTERM exits without draining)."""
        db = getattr(self, "db", None)
        if db is not None and db.dirty:
            db.flush()

    async def run(self, emitter: Emitter, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the DB and scan Path (then ``started``), then follow files until cancelled or Exit_On_Eof."""
        # The DB lives as long as the plugin, not one run(): after a runtime failure the restarted
        # run() keeps it (acknowledgements of the failed run's batches still land in it), and only
        # close() closes it, once the engine has stopped every source of acknowledgements.
        if self.db is None:
            self.db, self._shared_db = self._open_db()
        shared = self._shared_db
        state = self._state = TailState(self.cfg, emitter, self.db, self.metrics, self.log)
        fds = Descriptors(state)
        reader = Reader(state, fds)
        watcher = self._watcher = Watcher(state, fds)
        scanner = Scanner(state, fds, reader, watcher, shared)
        self.metrics.set("files_watched", 0)
        self.metrics.set("files_open", 0)
        for name in ("files_opened", "files_closed", "rotations", "truncations", "skipped_lines", "truncated_lines",
                     "inode_reuse"):
            self.metrics.setdefault(name, 0)
        try:
            async with trio.open_nursery() as nursery:
                await scanner.scan(startup=True)
                task_status.started()
                nursery.start_soon(scanner.run)
                nursery.start_soon(watcher.poller)
                nursery.start_soon(self._db_flusher)
                if state.inotify is not None:
                    nursery.start_soon(watcher.inotify_task)
                await reader.run()
                nursery.cancel_scope.cancel()
        finally:
            # commit what is already acknowledged even if we are being cancelled
            if self.db.dirty:
                try:
                    self.db.flush()
                except Exception as e:  # noqa: BLE001 - reported, close() retries
                    self.log.error("tail: writing offsets to %s failed: %s", self.cfg.db_path, e)

    async def close(self) -> None:
        if self._db_key is not None:
            _DBS_IN_USE.discard(self._db_key)
            self._db_key = None
        state = self._state
        if state is not None:
            for f in list(state.files.values()):
                if f.fd is not None:
                    try:
                        os.close(f.fd)
                    except OSError:
                        pass
                    f.fd = None
                    state.open_count -= 1
        if self._watcher is not None:
            self._watcher.close()
        if self.db is not None:
            self.db.close()

    async def _db_flusher(self) -> None:
        """Write acknowledged offsets at most once per DB_FLUSH_INTERVAL, off the event loop."""
        db = self.db
        assert db is not None
        while True:
            await trio.sleep(DB_FLUSH_INTERVAL)
            if not db.dirty:
                continue
            try:
                if self.cfg.db_path:
                    await trio.to_thread.run_sync(db.flush)
                else:
                    db.flush()
            except Exception as e:  # noqa: BLE001 - a full disk must not stop reading; retried next time
                assert self._state is not None
                self._state.warn("dbflush", "tail: writing offsets to %s failed: %s", self.cfg.db_path, e)


PLUGIN = TailInput
