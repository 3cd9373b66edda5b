"""The ``systemd`` input (alias ``journald``): journal entries through libsystemd.

Options, values and defaults follow Fluent Bit's ``in_systemd``. The journal is
read with libsystemd through ``systemd-python`` (``systemd.journal.Reader``);
journal files are never parsed by hand, so rotation, vacuuming, compression and
file formats are libsystemd's business.

Records: every data field of an entry (trusted ``_FIELDS`` included; the
``__CURSOR``/``__*_TIMESTAMP`` addresses are not fields), keys optionally
without their leading underscore (``Strip_Underscores``) and lower-cased
(``Lowercase``); the record's time is the entry's ``__REALTIME_TIMESTAMP``
(microseconds, as nanoseconds). Values are text. A value that is not valid
UTF-8 (journald stores binary data as-is) is kept losslessly, by default as
base64 text (``Binary_Encoding base64``; ``latin1`` maps each byte to one
character instead). Multi-line values stay whole. A field that appears several
times in one entry becomes a list. ``Max_Fields`` caps the fields of a record
(the rest are cut and counted in ``truncated_fields``).

Delivery: entries are read ``Max_Entries`` at a time in a worker thread (the
reads touch memory-mapped files and can block on disk), grouped by tag (``*``
in ``Tag`` is the entry's ``_SYSTEMD_UNIT``, or ``unknown``) and emitted with
acknowledgement handles from an ``AckTracker`` whose positions are journal
cursors. The cursor in ``DB`` (SQLite) advances only when every batch up to it
has been acknowledged, so a restart resumes right after the last delivered
entry: no gap, and no repeat beyond what was in flight. New entries are awaited
on the journal's inotify descriptor from the event loop (with a one-second poll
as a safety net), never by blocking it.
"""

from __future__ import annotations

import base64
import os
import sqlite3
import time
from typing import Any

import trio

from logfwd.options import Option
from logfwd.plugin import ConfigValueError, Emitter, Input

__all__ = ["SystemdInput", "PLUGIN"]

_SYNC = {"extra": "EXTRA", "full": "FULL", "normal": "NORMAL", "off": "OFF"}


class SystemdInput(Input):
    name = "systemd"
    replayable = True  # re-read from its checkpoint after a restart
    description = "Journal entries (systemd-journald) through libsystemd"
    options = (
        Option("Path", "str", None, "journal directory or file; unset reads the local system journal"),
        Option("Systemd_Filter", "str", None, "FIELD=value match; repeat for several", multi=True),
        Option("Systemd_Filter_Type", "str", "Or", "how several Systemd_Filter combine: And or Or",
               choices=("And", "Or")),
        Option("Read_From_Tail", "bool", "off", "start at the end of the journal when no cursor is stored"),
        Option("DB", "str", None, "SQLite file keeping the journal cursor across restarts"),
        Option("DB.Sync", "str", "full", "SQLite synchronous mode: extra, full, normal or off",
               choices=("extra", "full", "normal", "off")),
        Option("Max_Entries", "int", "5000", "entries read per round (one batch)", minimum=1),
        Option("Max_Fields", "int", "8000", "fields kept per record", minimum=1),
        Option("Strip_Underscores", "bool", "off", "remove the leading underscore of field names (_PID -> PID)"),
        Option("Lowercase", "bool", "off", "lower-case field names"),
        Option("Binary_Encoding", "str", "base64", "how a value that is not UTF-8 is kept: base64 or latin1",
               choices=("base64", "latin1")),
    )

    def setup(self) -> None:
        c = self.config
        self.filters: list[tuple[str, str]] = []
        for f in c.get("systemd_filter") or []:
            field, sep, value = str(f).partition("=")
            if not sep or not field or field != field.upper() or not field.replace("_", "").isalnum():
                raise ConfigValueError("systemd_filter", f"expected FIELD=value (FIELD in upper case), got {f!r}")
            self.filters.append((field, value))
        self.filter_and = (c.get("systemd_filter_type") or "or").lower() == "and"
        self.max_entries = int(c.get("max_entries") or 5000)
        self.max_fields = int(c.get("max_fields") or 8000)
        self.strip = bool(c.get("strip_underscores"))
        self.lower = bool(c.get("lowercase"))
        self.latin1 = (c.get("binary_encoding") or "base64") == "latin1"
        self.db_path: str | None = c.get("db")
        self.db_sync = _SYNC[(c.get("db.sync") or "full").lower()]
        self._db: sqlite3.Connection | None = None
        self._committed: str | None = None  # newest acknowledged cursor
        self._written: str | None = None  # newest cursor in the DB
        self._commit_wanted = trio.Event()
        self._key_cache: dict[str, str] = {}

    # -------------------------------------------------------------- journal

    def _open(self) -> Any:
        from systemd import journal

        path = self.config.get("path")
        if path and os.path.isfile(path):
            reader = journal.Reader(files=[path])
        elif path:
            reader = journal.Reader(path=path)
        else:
            reader = journal.Reader()
        reader.data_threshold = 0  # whole values, not libsystemd's 64 KiB default cut
        for i, (field, value) in enumerate(self.filters):
            if i:
                (reader.add_conjunction if self.filter_and else reader.add_disjunction)()
            reader.add_match(f"{field}={value}")
        return reader

    def _position(self, reader: Any, cursor: str | None) -> None:
        """Place the reader so that the next entry read is the first one not yet delivered."""
        if cursor:
            try:
                reader.seek_cursor(cursor)
                if reader._next() and reader.test_cursor(cursor):
                    self.log.info("systemd: resuming after cursor %s", cursor)
                    return
            except (OSError, ValueError):  # ValueError: not even a cursor
                pass
            self.log.warning("systemd: stored cursor is no longer in the journal (vacuumed or rotated away); "
                             "reading from the oldest entry")
            self.metrics.inc("invalid_cursor")
            reader.seek_head()
            return
        if self.config.get("read_from_tail"):
            reader.seek_tail()
            reader._previous()  # now at the last entry: the next read is the first new one
        else:
            reader.seek_head()

    def _read(self, reader: Any, tag_template: str) -> list[tuple[str, list[int], list[dict[str, Any]], str]]:
        """Up to Max_Entries entries, as (tag, times, records, cursor of the last) groups. Runs in a thread."""
        groups: list[tuple[str, list[int], list[dict[str, Any]], str]] = []
        expand = "*" in tag_template
        tag = tag_template
        times: list[int] = []
        records: list[dict[str, Any]] = []
        cursor = ""
        cut = 0
        for _ in range(self.max_entries):
            if not reader._next():
                break
            fields = reader._get_all()
            rec, dropped = self._record(fields)
            cut += dropped
            if expand:
                unit = fields.get("_SYSTEMD_UNIT", b"unknown")
                if isinstance(unit, list):
                    unit = unit[0]
                etag = tag_template.replace("*", _text(unit, False).replace("/", ".").strip("."))
                if etag != tag and records:
                    groups.append((tag, times, records, cursor))
                    times, records = [], []
                tag = etag
            times.append(reader._get_realtime() * 1000)
            records.append(rec)
            cursor = reader._get_cursor()
        if records:
            groups.append((tag, times, records, cursor))
        if cut:
            self.metrics.inc("truncated_fields", cut)
        return groups

    def _record(self, fields: dict[str, Any]) -> tuple[dict[str, Any], int]:
        rec: dict[str, Any] = {}
        latin1 = self.latin1
        cache = self._key_cache
        n = 0
        for k, v in fields.items():
            if n >= self.max_fields:
                return rec, len(fields) - n
            key = cache.get(k)
            if key is None:
                key = k[1:] if self.strip and k.startswith("_") else k
                if self.lower:
                    key = key.lower()
                cache[k] = key
            rec[key] = [_text(x, latin1) for x in v] if isinstance(v, list) else _text(v, latin1)
            n += 1
        return rec, 0

    # ------------------------------------------------------------ cursor DB

    def _db_open(self) -> str | None:
        if not self.db_path:
            return None
        db = sqlite3.connect(self.db_path, check_same_thread=False)
        db.execute(f"PRAGMA synchronous={self.db_sync}")
        db.execute("CREATE TABLE IF NOT EXISTS in_systemd_cursor (cursor TEXT NOT NULL, updated INTEGER)")
        db.commit()
        self._db = db
        row = db.execute("SELECT cursor FROM in_systemd_cursor LIMIT 1").fetchone()
        self._written = row[0] if row else None
        return self._written

    def _db_write(self, cursor: str) -> None:
        db = self._db
        if db is None or cursor == self._written:
            return
        with db:
            db.execute("DELETE FROM in_systemd_cursor")
            db.execute("INSERT INTO in_systemd_cursor (cursor, updated) VALUES (?, ?)", (cursor, int(time.time())))
        self._written = cursor

    def _on_commit(self, cursor: Any) -> None:
        """AckTracker callback (synchronous, on the event loop): hand the write to the writer task."""
        self._committed = cursor
        self._commit_wanted.set()

    async def _db_writer(self) -> None:
        while True:
            await self._commit_wanted.wait()
            self._commit_wanted = trio.Event()
            cursor = self._committed
            if cursor is not None:
                await trio.to_thread.run_sync(self._db_write, cursor)

    # ------------------------------------------------------------------ run

    async def run(self, emitter: Emitter, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        reader = await trio.to_thread.run_sync(self._open)
        self._reader = reader
        try:
            stored = await trio.to_thread.run_sync(self._db_open)
            await trio.to_thread.run_sync(self._position, reader, stored)
            fd = reader.fileno()  # inotify: readable when the journal changes
            tracker = emitter.tracker(self._on_commit)
            self._tracker = tracker
            async with trio.open_nursery() as nursery:
                if self._db is not None:
                    nursery.start_soon(self._db_writer)
                task_status.started()
                while True:
                    groups = await trio.to_thread.run_sync(self._read, reader, emitter.tag)
                    for tag, times, records, cursor in groups:
                        handle = tracker.handle(cursor)
                        await emitter.emit(records, times, tag=tag, handle=handle)
                    if sum(len(g[2]) for g in groups) >= self.max_entries:
                        continue  # more may be waiting: read on without sleeping
                    with trio.move_on_after(1.0):
                        await trio.lowlevel.wait_readable(fd)
                    reader.process()  # consume the inotify events, pick up new files
        finally:
            if self._committed is not None and self._db is not None:
                self._db_write(self._committed)

    async def close(self) -> None:
        """Commit the last acknowledged cursor and release the journal and the DB."""
        if self._committed is not None and self._db is not None:
            await trio.to_thread.run_sync(self._db_write, self._committed)
        if self._db is not None:
            self._db.close()
            self._db = None
        reader = getattr(self, "_reader", None)
        if reader is not None:
            reader.close()
            self._reader = None


def _text(v: bytes, latin1: bool) -> str:
    try:
        return v.decode("utf-8")
    except UnicodeDecodeError:
        return v.decode("latin-1") if latin1 else base64.b64encode(v).decode("ascii")


PLUGIN = SystemdInput
