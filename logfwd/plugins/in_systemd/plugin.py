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

Parts: ``journal`` (libsystemd reader, record conversion), ``cursor`` (the
cursor DB and its writer task); this module wires them.
"""

from __future__ import annotations

from typing import Any

import trio

from logfwd.options import Option
from logfwd.plugin import ConfigValueError, Emitter, Input

from .cursor import SYNC_MODES, CursorDB
from .journal import Journal, JournalSettings

__all__ = ["SystemdInput", "PLUGIN"]


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
               choices=tuple(SYNC_MODES)),
        Option("Max_Entries", "int", "5000", "entries read per round (one batch)", minimum=1),
        Option("Max_Fields", "int", "8000", "fields kept per record", minimum=1),
        Option("Strip_Underscores", "bool", "off", "remove the leading underscore of field names (_PID -> PID)"),
        Option("Lowercase", "bool", "off", "lower-case field names"),
        Option("Binary_Encoding", "str", "base64", "how a value that is not UTF-8 is kept: base64 or latin1",
               choices=("base64", "latin1")),
    )

    def setup(self) -> None:
        s = self.settings
        filters: list[tuple[str, str]] = []
        for f in s.systemd_filter or []:
            field, sep, value = str(f).partition("=")
            if not sep or not field or field != field.upper() or not field.replace("_", "").isalnum():
                raise ConfigValueError("systemd_filter", f"expected FIELD=value (FIELD in upper case), got {f!r}")
            filters.append((field, value))
        self.journal_settings = JournalSettings(
            path=s.path,
            filters=tuple(filters),
            filter_and=(s.systemd_filter_type or "or").lower() == "and",
            read_from_tail=bool(s.read_from_tail),
            max_entries=int(s.max_entries or 5000),
            max_fields=int(s.max_fields or 8000),
            strip=bool(s.strip_underscores),
            lower=bool(s.lowercase),
            latin1=(s.binary_encoding or "base64") == "latin1",
        )
        self.cursors = CursorDB(s.db, s.db_sync or "full")
        self.journal = Journal(self.journal_settings, self.metrics, self.log)

    # ------------------------------------------------------------------ run

    async def run(self, emitter: Emitter, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the journal and the cursor DB (StartError if either fails), report started, then read."""
        journal, cursors = self.journal, self.cursors
        await trio.to_thread.run_sync(journal.open)
        try:
            stored = await trio.to_thread.run_sync(cursors.open)
        except BaseException:
            journal.close()  # close() is not called for an input that never started
            raise
        try:
            await trio.to_thread.run_sync(journal.position, stored)
            fd = journal.fileno()
            tracker = emitter.tracker(cursors.want)
            async with trio.open_nursery() as nursery:
                if cursors.enabled:
                    nursery.start_soon(cursors.writer)
                task_status.started()
                await self._follow(emitter, tracker, fd)
        finally:
            cursors.write_committed()

    async def _follow(self, emitter: Emitter, tracker: Any, fd: int) -> None:
        journal = self.journal
        max_entries = self.journal_settings.max_entries
        while True:
            groups = await trio.to_thread.run_sync(journal.read, emitter.tag)
            for tag, times, records, cursor in groups:
                await emitter.emit(records, times, tag=tag, handle=tracker.handle(cursor))
            if sum(len(g[2]) for g in groups) >= max_entries:
                continue  # more may be waiting: read on without sleeping
            with trio.move_on_after(1.0):
                await trio.lowlevel.wait_readable(fd)
            journal.process()

    async def close(self) -> None:
        """Commit the last acknowledged cursor and release the journal and the DB."""
        await trio.to_thread.run_sync(self.cursors.write_committed)
        self.cursors.close()
        self.journal.close()


PLUGIN = SystemdInput
