"""The journal cursor DB (SQLite): where the next run resumes.

One row holds the newest cursor every output has acknowledged. Acknowledgements
arrive on the event loop (``want``); a writer task stores the newest one off the
loop, so a slow disk never stalls reading.
"""

from __future__ import annotations

import os
import sqlite3
import time

import trio

from logfwd.plugin import StartError

__all__ = ["CursorDB", "SYNC_MODES"]

SYNC_MODES = {"extra": "EXTRA", "full": "FULL", "normal": "NORMAL", "off": "OFF"}


class CursorDB:
    """The stored cursor of one systemd input (or nothing at all without ``DB``)."""

    def __init__(self, path: str | None, sync: str) -> None:
        self.path = path
        self.sync = SYNC_MODES[sync.lower()]
        self._db: sqlite3.Connection | None = None
        self.committed: str | None = None  # newest acknowledged cursor
        self.written: str | None = None  # newest cursor in the DB
        self._wanted = trio.Event()

    @property
    def enabled(self) -> bool:
        return self._db is not None

    def open(self) -> str | None:
        """Open (create) the DB; the stored cursor, or None. StartError when it cannot be opened."""
        if not self.path:
            return None
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise StartError(f"cannot open DB {self.path}: directory {directory} does not exist")
        try:
            db = sqlite3.connect(self.path, check_same_thread=False)
            db.execute(f"PRAGMA synchronous={self.sync}")
            db.execute("CREATE TABLE IF NOT EXISTS in_systemd_cursor (cursor TEXT NOT NULL, updated INTEGER)")
            db.commit()
            row = db.execute("SELECT cursor FROM in_systemd_cursor LIMIT 1").fetchone()
        except sqlite3.Error as e:
            raise StartError(f"cannot open DB {self.path}: {e}") from None
        self._db = db
        self.written = row[0] if row else None
        return self.written

    def write(self, cursor: str) -> None:
        db = self._db
        if db is None or cursor == self.written:
            return
        with db:
            db.execute("DELETE FROM in_systemd_cursor")
            db.execute("INSERT INTO in_systemd_cursor (cursor, updated) VALUES (?, ?)", (cursor, int(time.time())))
        self.written = cursor

    def want(self, cursor: str) -> None:
        """AckTracker callback (synchronous, on the event loop): hand the write to the writer task."""
        self.committed = cursor
        self._wanted.set()

    async def writer(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted = trio.Event()
            cursor = self.committed
            if cursor is not None:
                await trio.to_thread.run_sync(self.write, cursor)

    def write_committed(self) -> None:
        """Store the newest acknowledged cursor now (shutdown)."""
        if self.committed is not None and self._db is not None:
            self.write(self.committed)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
