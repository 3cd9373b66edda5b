"""``tail``: follow log files the way Fluent Bit's tail input does.

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
- ``Docker_Mode`` is served by the built-in ``docker`` multiline parser (its
  4 s flush timeout; ``Docker_Mode_Flush`` and ``Docker_Mode_Parser`` are accepted
  and not used). ``Parser`` is not applied when ``multiline.parser`` is set
  (Fluent Bit asks not to combine them); the multiline parser's own parser is.
- ``Offset_Key`` with ``multiline.parser`` holds the checkpoint offset reported
  for the record (the end of its last line), not the start of its first line.
"""

from __future__ import annotations

import os
import re
import resource
import stat
import time
from typing import Any

import trio

from logfwd._fastparse import LineFramer
from logfwd.options import Option
from logfwd.plugin import ConfigValueError, Emitter, Input

from . import watch
from .db import JOURNAL_MODES, SYNC_MODES, OffsetDB
from .fingerprint import HEAD_BYTES, head_hash, head_matches, make_key_id, read_head

READ_SIZE = 512 * 1024  # bytes per read call when a file has a backlog
ROUNDS_PER_TURN = 4  # reads of one file before the others get a turn
THREAD_READ_MIN = 64 * 1024  # larger reads go to a worker thread (a cold page cache must not stall the loop)
STAT_POLL = 0.25  # seconds between stat polls without inotify
SAFETY_POLL = 1.0  # seconds between stat polls with inotify (missed events, mmap writers, NFS)
DB_FLUSH_INTERVAL = 1.0
_DBS_IN_USE: set[str] = set()  # DB files opened by tail inputs of this process


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


class TailInput(Input):
    name = "tail"
    replayable = True  # re-read from its checkpoint after a restart
    description = "Follow text files (tail -f) with rotation, offsets DB and parsers"
    options = (
        Option("Path", "csv", None, "comma-separated glob patterns of files to follow ('**' recursive)", required=True),
        Option("Exclude_Path", "csv", None, "comma-separated shell patterns of files to leave out, e.g. *.gz,*.zip"),
        Option("Path_Key", "str", None, "add the file's path to each record under this key"),
        Option("Offset_Key", "str", None, "add each line's byte offset in its file under this key"),
        Option("Key", "str", "log", "key of the line when no parser structures it"),
        Option("Read_from_Head", "bool", "false",
               "files found at startup without a DB offset are read from the start, not the end"),
        Option("Refresh_Interval", "time", "60", "seconds between rescans of Path for new files"),
        Option("Rotate_Wait", "time", "5", "seconds a rotated file is still followed for late writes"),
        Option("Ignore_Older", "time", None, "ignore files not modified for this long (e.g. 1d)"),
        Option("Ignore_Active_Older_Files", "bool", "false",
               "also stop following files already followed once they are older than Ignore_Older"),
        Option("Buffer_Chunk_Size", "size", "32k", "initial read buffer (accepted; reads are larger when behind)"),
        Option("Buffer_Max_Size", "size", "32k", "longest line; longer lines are cut or skipped"),
        Option("Skip_Long_Lines", "bool", "off", "drop lines longer than Buffer_Max_Size instead of cutting them"),
        Option("Skip_Empty_Lines", "bool", "off", "drop empty lines"),
        Option("Parser", "str", None, "parser (from the parsers file) applied to each line"),
        Option("multiline.parser", "csv", None, "multiline parsers, first that recognises a line wins: docker, cri"),
        Option("DB", "str", None, "SQLite file keeping each file's offset across restarts"),
        Option("DB.sync", "str", "normal", "SQLite synchronous mode", choices=SYNC_MODES),
        Option("DB.locking", "bool", "false", "open the DB in exclusive locking mode"),
        Option("DB.journal_mode", "str", "WAL", "SQLite journal mode",
               choices=tuple(m.upper() for m in JOURNAL_MODES)),
        Option("DB.compare_filename", "bool", "false", "match DB rows on inode and file name, not inode alone"),
        Option("Inotify_Watcher", "bool", "true", "use inotify (off: stat polling)"),
        Option("Docker_Mode", "bool", "off", "recombine Docker json-file lines split at 16 KiB"),
        Option("Docker_Mode_Flush", "time", "4",
               "accepted for compatibility; the docker multiline parser's flush timeout (4s) applies"),
        Option("Docker_Mode_Parser", "str", None, "accepted for compatibility; not used"),
        Option("File_Cache_Advise", "bool", "on", "drop already-read file pages from the page cache"),
        Option("Static_Batch_Size", "size", "50M", "accepted for compatibility"),
        Option("Exit_On_Eof", "bool", "false", "stop once every file found at start was read to its end"),
        Option("Tag_Regex", "str", None, "regex with named groups on the file path; Tag uses <name> to refer to them"),
        Option("Multiline", "bool", "off", "old multiline mode: not supported, use multiline.parser"),
        Option("Parser_Firstline", "str", None, "old multiline mode: not supported, use multiline.parser"),
        Option("Multiline_Flush", "time", "4", "old multiline mode: not supported, use multiline.parser"),
    )

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        c = self.config
        self._patterns: list[str] = list(c.get("path") or [])
        if not self._patterns:
            raise ConfigValueError("path", "tail needs Path: one or more file glob patterns")
        self._excludes = [x.strip() for x in (c.get("exclude_path") or [])]
        self._key = c.get("key") or "log"
        self._path_key = c.get("path_key")
        self._offset_key = c.get("offset_key")
        self._read_from_head = bool(c.get("read_from_head"))
        self._refresh = max(0.05, float(c.get("refresh_interval") or 60))
        self._rotate_wait = max(0.0, float(c.get("rotate_wait") if c.get("rotate_wait") is not None else 5))
        self._ignore_older = c.get("ignore_older")
        self._ignore_active_older = bool(c.get("ignore_active_older_files"))
        self._max_line = int(c.get("buffer_max_size") or 32768)
        self._read_size = max(READ_SIZE, int(c.get("buffer_chunk_size") or 0))
        self._skip_long = bool(c.get("skip_long_lines"))
        self._skip_empty = bool(c.get("skip_empty_lines"))
        self._exit_on_eof = bool(c.get("exit_on_eof"))
        self._use_inotify = bool(c.get("inotify_watcher", True))
        self._fadvise = bool(c.get("file_cache_advise")) and hasattr(os, "posix_fadvise")
        if c.get("multiline") or c.get("parser_firstline"):
            raise ConfigValueError(
                "multiline",
                "the old Multiline/Parser_Firstline mode is not supported; use 'multiline.parser' "
                "(built-ins: docker, cri, go, python, java, ruby, or a [MULTILINE_PARSER] section)",
            )
        parsers = self.ctx.parsers
        self._parser: Any = None
        self._ml: Any = None
        self._ml_timeout = 4.0
        ml_names = [n.strip() for n in (c.get("multiline.parser") or []) if n.strip()]
        if c.get("docker_mode") and not ml_names:
            ml_names = ["docker"]
        if ml_names:
            if parsers is None:
                raise ConfigValueError("multiline.parser", "no parser registry available")
            mls = []
            for n in ml_names:
                try:
                    mls.append(parsers.multiline(n))
                except KeyError:
                    known = ", ".join(parsers.multiline_names())
                    raise ConfigValueError("multiline.parser", f"unknown multiline parser {n!r} (known: {known})") \
                        from None
            if len(mls) == 1:
                self._ml = mls[0]
            else:
                from logfwd.multiline import group

                self._ml = group(mls)
            self._ml_timeout = float(getattr(self._ml, "flush_timeout", 4.0) or 4.0)
            if c.get("parser"):
                self.log.warning("tail: Parser is ignored when multiline.parser (or Docker_Mode) is set")
        elif c.get("parser"):
            if parsers is None:
                raise ConfigValueError("parser", "no parser registry available")
            try:
                self._parser = parsers.get(c["parser"])
            except KeyError:
                raise ConfigValueError("parser", f"unknown parser {c['parser']!r} (known: "
                                       f"{', '.join(parsers.names())})") from None
        self._tag_regex: re.Pattern[str] | None = None
        if c.get("tag_regex"):
            from logfwd.regex import compile_onigmo

            try:
                self._tag_regex = compile_onigmo(c["tag_regex"])
            except re.error as e:
                raise ConfigValueError("tag_regex", f"invalid regular expression: {e}") from None
        self._db_path = c.get("db")
        self._db_sync = c.get("db.sync") or "normal"
        self._db_journal = (c.get("db.journal_mode") or "wal").lower()
        self._db_locking = bool(c.get("db.locking"))
        self._compare_filename = bool(c.get("db.compare_filename"))

    # ------------------------------------------------------------------ state

    def _init_runtime(self, emitter: Emitter) -> None:
        self._emitter = emitter
        self.files: dict[tuple[int, int], TailFile] = {}
        self._ready: set[TailFile] = set()
        self._wake = trio.Event()
        self._rescan = trio.Event()
        self._ignored_sizes: dict[tuple[int, int], int] = {}
        self._wd_files: dict[int, TailFile] = {}
        self._wd_dirs: dict[int, str] = {}
        self._dir_wds: dict[str, int] = {}
        self._open_count = 0
        self._warned: dict[str, float] = {}
        # read offsets of retired (rotated, drained) files: if a rotated name still matches Path,
        # the file is found again and must continue where we stopped, not at the last acked offset
        self._retired: dict[tuple[int, int], tuple[int, int]] = {}
        self._shared_db = False
        if self._db_path:
            key = os.path.realpath(self._db_path)
            self._shared_db = key in _DBS_IN_USE
            if self._shared_db:
                self.log.warning("tail: DB %s is used by another tail input; give each input its own DB "
                                 "(rows of files no longer matching Path are kept, not cleaned up)", self._db_path)
            _DBS_IN_USE.add(key)
        self.db = OffsetDB(self._db_path, self._db_sync, self._db_journal, self._db_locking)
        self._known_names = {row.name for row in self.db.all()}  # paths a previous run followed
        self._max_open = self._fd_budget()
        self._inotify: watch.Inotify | None = None
        if self._use_inotify:
            try:
                self._inotify = watch.Inotify()
            except OSError as e:
                self.log.warning("tail: inotify unavailable (%s); polling files with stat", e)
        self.metrics.set("files_watched", 0)
        self.metrics.set("files_open", 0)
        for name in ("files_opened", "files_closed", "rotations", "truncations", "skipped_lines", "truncated_lines",
                     "inode_reuse"):
            self.metrics.setdefault(name, 0)

    def _fd_budget(self) -> int:
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

    def _warn(self, key: str, msg: str, *args: Any) -> None:
        """Log at most once a minute per key (bad files must not flood the log)."""
        now = time.monotonic()
        if now - self._warned.get(key, -1e9) >= 60:
            self._warned[key] = now
            self.log.warning(msg, *args)

    def _tag_for(self, path: str) -> str:
        tag = self._emitter.tag
        if self._tag_regex is not None:
            m = self._tag_regex.search(path)
            if m is not None:
                groups = {k: v for k, v in m.groupdict().items() if v}
                return re.sub(r"<([^<>]+)>", lambda g: groups.get(g.group(1), "_"), tag)
            self._warn(f"tagre:{path}", "tail: Tag_Regex does not match %s; using the plain tag", path)
            tag = re.sub(r"<[^<>]+>", "_", tag)
        return self._emitter.expand_tag(path) if "*" in tag else tag

    def _mark_ready(self, f: TailFile) -> None:
        self._ready.add(f)
        self._wake.set()

    def _update_gauges(self) -> None:
        self.metrics.set("files_watched", len(self.files))
        self.metrics.set("files_open", self._open_count)

    # ------------------------------------------------------------------ run

    async def run(self, emitter: Emitter) -> None:
        self._init_runtime(emitter)
        try:
            async with trio.open_nursery() as nursery:
                await self._scan(startup=True)
                nursery.start_soon(self._scanner)
                nursery.start_soon(self._poller)
                nursery.start_soon(self._db_flusher)
                if self._inotify is not None:
                    nursery.start_soon(self._inotify_task)
                await self._reader()
                nursery.cancel_scope.cancel()
        finally:
            # commit what is already acknowledged even if we are being cancelled
            if self.db.dirty:
                try:
                    self.db.flush()
                except Exception as e:  # noqa: BLE001 - reported, close() retries
                    self.log.error("tail: writing offsets to %s failed: %s", self._db_path, e)

    async def close(self) -> None:
        if getattr(self, "_db_path", None):
            _DBS_IN_USE.discard(os.path.realpath(self._db_path))
        for f in list(getattr(self, "files", {}).values()):
            self._close_fd(f)
        if getattr(self, "_inotify", None) is not None:
            self._inotify.close()  # type: ignore[union-attr]
            self._inotify = None
        db = getattr(self, "db", None)
        if db is not None:
            db.close()

    async def _db_flusher(self) -> None:
        """Write acknowledged offsets at most once per DB_FLUSH_INTERVAL, off the event loop."""
        while True:
            await trio.sleep(DB_FLUSH_INTERVAL)
            if not self.db.dirty:
                continue
            try:
                if self._db_path:
                    await trio.to_thread.run_sync(self.db.flush)
                else:
                    self.db.flush()
            except Exception as e:  # noqa: BLE001 - a full disk must not stop reading; retried next time
                self._warn("dbflush", "tail: writing offsets to %s failed: %s", self._db_path, e)

    # ------------------------------------------------------------------ discovery

    async def _scanner(self) -> None:
        while True:
            with trio.move_on_after(self._refresh):
                await self._rescan.wait()
            self._rescan = trio.Event()
            await trio.sleep(0.02)  # let a burst of directory events coalesce into one scan
            await self._scan(startup=False)

    async def _scan(self, startup: bool) -> None:
        paths = await trio.to_thread.run_sync(watch.expand, self._patterns, self._excludes)
        seen: set[tuple[int, int]] = set()
        now = time.time()
        for p in paths:
            try:
                st = os.stat(p)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            fid = (st.st_dev, st.st_ino)
            seen.add(fid)
            f = self.files.get(fid)
            if f is not None:
                if f.path != p and f.rotated_at is not None:
                    f.path = p  # a rotated file that still matches Path: same inode, same stream
                continue
            if self._ignore_older and st.st_mtime < now - self._ignore_older:
                # if it becomes active later, only what is appended from now on is new
                self._ignored_sizes.setdefault(fid, st.st_size)
                continue
            self._add_file(p, st, startup)
        for fid in [k for k in self._ignored_sizes if k not in seen]:
            del self._ignored_sizes[fid]
        if startup:
            self._recover_rotated(seen)
        self._gc_rows(seen)
        if self._inotify is not None:
            dirs = await trio.to_thread.run_sync(watch.watch_dirs, self._patterns)
            for d in dirs - set(self._dir_wds):
                wd = self._inotify.add_watch(d, watch.DIR_MASK)
                if wd >= 0:
                    self._dir_wds[d] = wd
                    self._wd_dirs[wd] = d
        for f in list(self.files.values()):
            self._check_identity(f)
        self._update_gauges()

    def _recover_rotated(self, seen: set[tuple[int, int]]) -> None:
        """At start, a DB row whose file was renamed while we were stopped: drain the rest of it."""
        for row in self.db.all():
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
            if st.st_size <= row.offset or (st.st_dev, st.st_ino) in self.files:
                continue
            f = self._add_file(path, st, startup=True)
            if f is not None and f.row_id == row.id:
                f.rotated_at = time.monotonic()
                self.metrics.inc("rotations")
                self.log.info("tail: %s was rotated to %s while stopped; reading its rest", row.name, path)

    def _gc_rows(self, seen: set[tuple[int, int]]) -> None:
        """Forget DB rows of files that no longer match Path and are not followed.

        Not with a DB shared by two inputs: each would delete the other's rows.
        """
        if self._shared_db:
            return
        live = seen | set(self.files)
        for fid in [k for k in self._retired if k not in live]:
            del self._retired[fid]
        inodes = {i for _, i in live}
        for row in self.db.all():
            if row.dev is not None and (row.dev, row.inode) in live:
                continue
            if row.dev is None and row.inode in inodes:
                continue
            self.db.delete(row.id)

    def _add_file(self, path: str, st: os.stat_result, startup: bool) -> TailFile | None:
        if self._open_count >= self._max_open and not self._park_one():
            self._warn("fds", "tail: %d files open (descriptor budget); %s waits for the next scan",
                       self._open_count, path)
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOATIME", 0))
        except PermissionError:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                self._warn(f"open:{path}", "tail: cannot open %s: %s", path, e)
                return None
        except OSError as e:
            self._warn(f"open:{path}", "tail: cannot open %s: %s", path, e)
            return None
        fst = os.fstat(fd)
        dev, ino, size = fst.st_dev, fst.st_ino, fst.st_size
        if (dev, ino) in self.files:  # raced with a rename: already followed
            os.close(fd)
            return None
        self._open_count += 1
        self.metrics.inc("files_opened")
        head = read_head(fd)
        rows = self.db.find(dev, ino, path if self._compare_filename else None)
        row = None
        reused = False
        for r in rows:
            if row is None and head_matches(fd, r.head_len, r.head_hash):
                row = r
            else:
                self.db.delete(r.id)  # the inode now belongs to another file
                reused = True
                self.metrics.inc("inode_reuse")
                self.log.info("tail: %s reuses inode %d of %s; reading it from the start", path, ino, r.name)
        if row is not None:
            offset = row.offset
            if offset > size:
                offset = 0
                self.metrics.inc("truncations")
            key_id = row.key_id or make_key_id(dev, ino, head, time.time_ns())
            if row.key_id is None or row.head_hash is None or row.dev is None:
                self.db.update_identity(row.id, dev, len(head), head_hash(head), key_id)
                row.head_len = len(head)
            if row.name != path:
                self.db.rename(row.id, path, False)
            retired = self._retired.pop((dev, ino), None)
            if retired is not None and retired[1] == row.id and offset <= retired[0] <= size:
                offset = retired[0]
            row_id, head_len = row.id, max(row.head_len, 0)
        else:
            known = self._ignored_sizes.pop((dev, ino), None)
            if known is not None and not reused:
                offset = min(known, size)
            elif self._read_from_head or reused:
                offset = 0
            elif startup:
                # a name the DB followed before belongs to a file that replaced it while we were stopped
                offset = 0 if path in self._known_names else size
            else:
                offset = 0
            key_id = make_key_id(dev, ino, head, time.time_ns())
            row_id = self.db.insert(path, offset, dev, ino, len(head), head_hash(head), key_id)
            head_len = len(head)
        f = TailFile(path, dev, ino, fd, offset)
        f.static = startup
        f.row_id = row_id
        f.key_id = key_id
        f.head_len = head_len
        f.tag = self._tag_for(path)
        f.framer = LineFramer(self._max_line, self._skip_long, offset)
        f.ml = self._ml.stream(start_offset=offset) if self._ml is not None else None
        f.unparsed_seen = 0
        db = self.db

        # With filesystem storage a commit means "written to a chunk": write the offset at once,
        # so a kill re-reads (duplicates) only the batch being written, not a second of input.
        flush_now = self._emitter.durable and bool(self._db_path)

        def on_commit(pos: int, f: TailFile = f, rid: int = row_id) -> None:
            f.committed = pos
            db.set_offset(rid, pos)
            if flush_now:
                try:
                    db.flush()
                except Exception as e:  # noqa: BLE001 - the periodic flusher retries it
                    self._warn("dbflush", "tail: writing offsets to %s failed: %s", self._db_path, e)

        f.tracker = self._emitter.tracker(on_commit)
        self.files[f.id] = f
        if self._inotify is not None:
            f.wd = self._inotify.add_watch(path, watch.FILE_MASK)
            if f.wd >= 0:
                self._wd_files[f.wd] = f
        if size != offset:
            self._mark_ready(f)
        self._update_gauges()
        return f

    # ------------------------------------------------------------------ descriptors

    def _close_fd(self, f: TailFile) -> None:
        if f.fd is not None:
            try:
                os.close(f.fd)
            except OSError:
                pass
            f.fd = None
            self._open_count -= 1

    def _park_one(self) -> bool:
        """Close the descriptor of the least recently active idle file to stay within the budget."""
        best: TailFile | None = None
        for f in self.files.values():
            if f.fd is None or f.busy or f.rotated_at is not None or f in self._ready:
                continue
            if best is None or f.last_activity < best.last_activity:
                best = f
        if best is None:
            return False
        self._close_fd(best)
        return True

    def _reopen(self, f: TailFile) -> bool:
        """Open a parked file again, by name, checking it is still the same inode."""
        if self._open_count >= self._max_open and not self._park_one():
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
                self._open_count += 1
                return True
            os.close(fd)
        # gone while parked (deleted, or renamed out of its directory): nothing more to read
        self._warn(f"lost:{f.path}", "tail: %s disappeared while its descriptor was parked", f.path)
        f.deleted = True
        if f.rotated_at is None:
            f.rotated_at = time.monotonic() - self._rotate_wait
        return False

    # ------------------------------------------------------------------ change detection

    async def _inotify_task(self) -> None:
        ino = self._inotify
        assert ino is not None
        while True:
            events = await ino.read_events()
            for wd, mask, _name in events:
                if mask & watch.IN_Q_OVERFLOW:
                    for f in self.files.values():
                        self._ready.add(f)
                    self._rescan.set()
                    continue
                f = self._wd_files.get(wd)
                if f is not None:
                    if mask & watch.IN_IGNORED:
                        self._wd_files.pop(wd, None)
                        f.wd = -1
                    if mask & (watch.IN_MOVE_SELF | watch.IN_DELETE_SELF | watch.IN_ATTRIB):
                        self._check_identity(f)
                    if mask & watch.IN_MODIFY:
                        self._ready.add(f)
                    continue
                d = self._wd_dirs.get(wd)
                if d is not None:
                    if mask & (watch.IN_IGNORED | watch.IN_DELETE_SELF | watch.IN_MOVE_SELF):
                        self._wd_dirs.pop(wd, None)
                        if self._dir_wds.get(d) == wd:
                            del self._dir_wds[d]
                    self._rescan.set()
            self._wake.set()

    async def _poller(self) -> None:
        while True:
            # files without an inotify watch (no inotify, or fs.inotify.max_user_watches exhausted)
            # are polled as often as in stat mode; watched ones only as a safety net
            unwatched = self._inotify is None or any(f.wd < 0 for f in self.files.values())
            await trio.sleep(STAT_POLL if unwatched else SAFETY_POLL)
            now = time.time()
            for f in list(self.files.values()):
                self._poll_file(f, now)
            self._wake.set()

    def _poll_file(self, f: TailFile, now: float) -> None:
        if f.fd is not None:
            try:
                st = os.fstat(f.fd)
            except OSError:
                return
            if st.st_size != f.offset:
                self._ready.add(f)
            elif (self._ignore_active_older and self._ignore_older and f.rotated_at is None
                  and st.st_mtime < now - self._ignore_older):
                f.rotated_at = time.monotonic() - self._rotate_wait  # close it like a drained rotated file
        else:
            try:
                st = os.stat(f.path)
            except OSError:
                st = None
            if st is not None and (st.st_dev, st.st_ino) == f.id and st.st_size != f.offset:
                self._ready.add(f)
        self._check_identity(f)

    def _check_identity(self, f: TailFile) -> None:
        """Is ``f.path`` still this file? If not, it was rotated (renamed) or deleted."""
        if f.rotated_at is not None:
            return
        try:
            st: os.stat_result | None = os.stat(f.path)
        except OSError:
            st = None
        if st is not None and (st.st_dev, st.st_ino) == f.id:
            return
        if f.fd is None:
            if not self._reopen(f):
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
        self._mark_ready(f)
        self._rescan.set()  # the new file at the old name

    # ------------------------------------------------------------------ reading

    async def _reader(self) -> None:
        while True:
            self._wake = trio.Event()
            busy = False
            for f in list(self._ready):
                if f.id in self.files:
                    busy |= await self._read_file(f)
                else:
                    self._ready.discard(f)
            await self._timeouts()
            if self._exit_on_eof and not self._ready and not busy and self._all_drained():
                await self._finish_all()
                return
            if busy or self._ready:
                await trio.lowlevel.checkpoint()
                continue
            with trio.move_on_after(self._next_deadline()):
                await self._wake.wait()

    async def _read_file(self, f: TailFile) -> bool:
        """Read a file's backlog (a few chunks per turn); True if more is waiting."""
        self._ready.discard(f)  # before reading: an event arriving meanwhile re-adds it
        if f.fd is None and not self._reopen(f):
            return False
        f.busy = True
        try:
            for _ in range(ROUNDS_PER_TURN):
                fd = f.fd
                if fd is None:
                    return False
                try:
                    size = os.fstat(fd).st_size
                except OSError:
                    return False
                if size < f.offset:
                    await self._truncated(f)
                if size <= f.offset:
                    return False
                n = min(size - f.offset, self._read_size)
                if n >= THREAD_READ_MIN:
                    data = await trio.to_thread.run_sync(os.pread, fd, n, f.offset)
                else:
                    data = os.pread(fd, n, f.offset)
                if not data:
                    return False
                if f.fd is None:  # parked or closed while we were in the thread
                    return False
                start = f.offset
                f.offset += len(data)
                f.last_activity = time.monotonic()
                if self._fadvise:
                    try:
                        os.posix_fadvise(fd, start, len(data), os.POSIX_FADV_DONTNEED)
                    except OSError:
                        pass
                if f.head_len < HEAD_BYTES and start < HEAD_BYTES:
                    self._grow_head(f)
                lines, ends = f.framer.feed(data)
                if b"\0" in data:
                    lines = [ln.lstrip(b"\0") if ln[:1] == b"\0" else ln for ln in lines]
                self._count_long(f)
                if lines:
                    await self._process(f, lines, ends)
            self._ready.add(f)
            return True
        finally:
            f.busy = False

    def _grow_head(self, f: TailFile) -> None:
        if f.fd is None:
            return
        head = read_head(f.fd)
        if len(head) > f.head_len:
            f.head_len = len(head)
            self.db.set_identity(f.row_id, len(head), head_hash(head))

    def _count_long(self, f: TailFile) -> None:
        n = f.framer.long_lines - f.long_seen
        if n:
            f.long_seen = f.framer.long_lines
            if self._skip_long:
                self.metrics.inc("skipped_lines", n)
            else:
                self.metrics.inc("truncated_lines", n)
            self._warn(f"long:{f.path}", "tail: %s has lines longer than Buffer_Max_Size (%d bytes): %s",
                       f.path, self._max_line, "skipped" if self._skip_long else "cut")

    async def _truncated(self, f: TailFile) -> None:
        """copytruncate: emit what is held, then restart at 0 under a new key id."""
        self.log.info("tail: %s was truncated; reading it from the start", f.path)
        self.metrics.inc("truncations")
        await self._flush_file(f)
        f.framer.reset(0)
        f.offset = 0
        f.line_start = 0
        f.handed = 0
        if self._ml is not None:
            f.ml = self._ml.stream(start_offset=0)
            f.unparsed_seen = 0
        f.long_seen = f.framer.long_lines
        # new content at old offsets must not get the old origin keys (an output would overwrite)
        f.key_id = make_key_id(f.dev, f.ino, b"", time.time_ns())
        f.head_len = 0
        self.db.set_identity(f.row_id, 0, head_hash(b""), f.key_id)

    async def _process(self, f: TailFile, lines: list[bytes], ends: list[int]) -> None:
        """Lines → records → one emitted batch, checkpointed at the last line's end."""
        nbytes = ends[-1] - f.line_start
        starts = ([f.line_start] + ends[:-1]) if self._offset_key else None
        f.line_start = ends[-1]
        commit: int | None = ends[-1]
        if self._skip_empty:
            keep = [i for i, ln in enumerate(lines) if ln]
            if len(keep) != len(lines):
                lines = [lines[i] for i in keep]
                ends = [ends[i] for i in keep]
                if starts is not None:
                    starts = [starts[i] for i in keep]
        now = time.time_ns()
        key = self._key
        if not lines:
            records: list[dict[str, Any]] = []
            times: list[int] = []
            offs: list[int] = []
            if f.ml is not None:
                commit = f.ml.safe_offset
        elif self._ml is not None:
            times, records, offs = f.ml.feed_lines([now] * len(lines), lines, ends)
            starts = None
            # lines held for an incomplete record are not committed: the stream knows up to where
            commit = f.ml.safe_offset
            unparsed = f.ml.unparsed - f.unparsed_seen
            if unparsed:
                f.unparsed_seen = f.ml.unparsed
                self.metrics.inc("parse_errors", unparsed)
        elif self._parser is not None:
            times, records, nfail = self._parser.parse_lines(lines, now)
            offs = ends
            if nfail:
                self.metrics.inc("parse_errors", nfail)
        else:
            records = [{key: ln.decode("utf-8", "replace")} for ln in lines]
            times = [now] * len(records)
            offs = ends
        await self._emit(f, times, records, offs, starts, commit, nbytes)

    async def _emit(
        self,
        f: TailFile,
        times: list[int],
        records: list[dict[str, Any]],
        offs: list[int],
        starts: list[int] | None,
        commit: int | None,
        nbytes: int,
    ) -> None:
        if self._path_key:
            pk, path = self._path_key, f.orig_path
            for r in records:
                r[pk] = path
        if self._offset_key:
            ok = self._offset_key
            for r, o in zip(records, starts if starts is not None else offs, strict=False):
                r[ok] = o
        if commit is None and not records:
            return
        kid = f.key_id
        keys = [f"{kid}:{o}" for o in offs] if records else None
        # records that complete no checkpoint (a multiline record still open) repeat the previous position
        if commit is not None:
            f.handed = commit
        handle = f.tracker.handle(f.handed)
        await self._emitter.emit(records, times, tag=f.tag, handle=handle, nbytes=max(nbytes, 1), keys=keys)

    async def _flush_file(self, f: TailFile) -> None:
        """Emit the held partial line and the held multiline record of a file."""
        lines, ends = f.framer.flush()
        if lines:
            await self._process(f, lines, ends)
        if f.ml is not None and f.ml.pending_since is not None:
            times, records, offs = f.ml.flush()
            await self._emit(f, times, records, offs, None, f.ml.safe_offset, 1)

    # ------------------------------------------------------------------ timers

    def _next_deadline(self) -> float:
        now = time.monotonic()
        t = 5.0
        for f in self.files.values():
            if f.rotated_at is not None:
                t = min(t, max(0.0, f.rotated_at + self._rotate_wait - now) + 0.01)
            if f.ml is not None and f.ml.pending_since is not None:
                t = min(t, max(0.0, f.ml.pending_since + self._ml_timeout - now) + 0.01)
        return t

    async def _timeouts(self) -> None:
        now = time.monotonic()
        for f in list(self.files.values()):
            if f.ml is not None and f.ml.pending_since is not None and now - f.ml.pending_since >= self._ml_timeout:
                times, records, offs = f.ml.flush_expired(now)
                if records:
                    await self._emit(f, times, records, offs, None, f.ml.safe_offset, 1)
            if f.rotated_at is not None and (f.deleted or now - f.rotated_at >= self._rotate_wait):
                if f in self._ready or f.busy:
                    continue
                if f.fd is not None:
                    try:
                        if os.fstat(f.fd).st_size > f.offset:
                            self._mark_ready(f)
                            continue
                    except OSError:
                        pass
                await self._retire(f)

    async def _retire(self, f: TailFile) -> None:
        """Finish a rotated or deleted file: emit what it holds, close it, forget it."""
        await self._flush_file(f)
        self._close_fd(f)
        if f.wd >= 0 and self._inotify is not None:
            self._wd_files.pop(f.wd, None)
            self._inotify.rm_watch(f.wd)
            f.wd = -1
        self.files.pop(f.id, None)
        self._ready.discard(f)
        if f.deleted:
            self.db.delete(f.row_id)
        else:
            self._retired[f.id] = (f.offset, f.row_id)
        self.metrics.inc("files_closed")
        self._update_gauges()

    def _all_drained(self) -> bool:
        for f in self.files.values():
            if f.busy:
                return False
            if f.fd is not None:
                try:
                    if os.fstat(f.fd).st_size != f.offset:
                        return False
                except OSError:
                    continue
        return True

    async def _finish_all(self) -> None:
        """Exit_On_Eof: everything was read once; emit held lines so nothing stays behind."""
        for f in list(self.files.values()):
            await self._flush_file(f)


PLUGIN = TailInput

__all__ = ["TailInput", "TailFile", "PLUGIN"]
