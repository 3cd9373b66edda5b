"""The tail offsets database (SQLite), compatible with Fluent Bit's ``DB`` file.

Fluent Bit keeps one row per file in ``in_tail_files(id, name, offset, inode,
created, rotated)``. We use the same table, so a Fluent Bit DB moves over with
its offsets, and add columns of our own (``dev``, ``head_len``, ``head_hash``,
``key_id``) with ``ALTER TABLE``; Fluent Bit reads its columns by position and
ignores ours.

Offsets are written only from acknowledgement callbacks (they describe data
that every output has delivered), and are batched: ``set_offset`` marks a row
dirty in memory and ``flush`` writes every dirty row in one transaction, at
most about once a second and at shutdown. A crash therefore replays at most
about a second of delivered data and never skips undelivered data.

Without ``DB`` the same code runs on an in-memory SQLite database: it still
remembers files within the process lifetime (so a rotated file whose new name
matches ``Path`` is not read twice).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass

SYNC_MODES = ("extra", "full", "normal", "off")
JOURNAL_MODES = ("delete", "truncate", "persist", "memory", "wal", "off")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS in_tail_files (
    id      INTEGER PRIMARY KEY,
    name    TEXT NOT NULL,
    offset  INTEGER,
    inode   INTEGER,
    created INTEGER,
    rotated INTEGER DEFAULT 0
);
"""
_EXTRA_COLUMNS = (("dev", "INTEGER"), ("head_len", "INTEGER"), ("head_hash", "TEXT"), ("key_id", "TEXT"))


@dataclass
class FileRow:
    id: int
    name: str
    offset: int
    inode: int
    dev: int | None
    head_len: int
    head_hash: str | None
    key_id: str | None
    rotated: int


class OffsetDB:
    """One connection, used from the event loop for lookups and from a worker thread for flushes.

    A lock serialises access (sqlite3 connections are not safe for concurrent use).
    """

    def __init__(
        self,
        path: str | None,
        sync: str = "normal",
        journal_mode: str = "wal",
        locking: bool = False,
    ) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._dirty: dict[int, int] = {}
        self._heads: dict[int, tuple[int, str, str | None]] = {}
        self._dlock = threading.Lock()  # guards _dirty against a flush running in a worker thread
        self.writes = 0
        self.closed = False
        self._conn = sqlite3.connect(path or ":memory:", check_same_thread=False, isolation_level=None)
        c = self._conn
        if path:
            c.execute("PRAGMA busy_timeout=5000")
            c.execute(f"PRAGMA journal_mode={journal_mode.upper()}")
            c.execute(f"PRAGMA synchronous={sync.upper()}")
            if locking:
                c.execute("PRAGMA locking_mode=EXCLUSIVE")
        c.execute(_SCHEMA)
        have = {row[1] for row in c.execute("PRAGMA table_info(in_tail_files)")}
        for name, typ in _EXTRA_COLUMNS:
            if name not in have:
                c.execute(f"ALTER TABLE in_tail_files ADD COLUMN {name} {typ}")
        c.execute("CREATE INDEX IF NOT EXISTS in_tail_files_inode ON in_tail_files(inode)")

    # ------------------------------------------------------------ lookups
    def _rows(self, sql: str, args: tuple[object, ...]) -> list[FileRow]:
        with self._lock:
            cur = self._conn.execute(sql, args)
            out = []
            for r in cur.fetchall():
                out.append(
                    FileRow(
                        id=r[0], name=r[1], offset=int(r[2] or 0), inode=int(r[3] or 0), rotated=int(r[4] or 0),
                        dev=r[5], head_len=int(r[6] or 0), head_hash=r[7], key_id=r[8],
                    )
                )
        with self._dlock:
            for row in out:  # pending (unflushed) values are the newer ones
                if row.id in self._dirty:
                    row.offset = self._dirty[row.id]
                if row.id in self._heads:
                    row.head_len, row.head_hash, k = self._heads[row.id]
                    row.key_id = k or row.key_id
        return out

    _COLS = "id, name, offset, inode, rotated, dev, head_len, head_hash, key_id"

    def find(self, dev: int, ino: int, name: str | None = None) -> list[FileRow]:
        """Rows for an inode (same device, or unknown device: a Fluent Bit row), newest first."""
        sql = f"SELECT {self._COLS} FROM in_tail_files WHERE inode=? AND (dev IS NULL OR dev=?)"
        args: tuple[object, ...] = (ino, dev)
        if name is not None:
            sql += " AND name=?"
            args = (ino, dev, name)
        return self._rows(sql + " ORDER BY id DESC", args)

    def all(self) -> list[FileRow]:
        return self._rows(f"SELECT {self._COLS} FROM in_tail_files ORDER BY id", ())

    # ------------------------------------------------------------ writes
    def insert(self, name: str, offset: int, dev: int, ino: int, head_len: int, head_hash: str, key_id: str) -> int:
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO in_tail_files (name, offset, inode, created, rotated, dev, head_len, head_hash, key_id)"
                " VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?)",
                (name, offset, ino, int(time.time()), dev, head_len, head_hash, key_id),
            )
            self.writes += 1
            return int(cur.lastrowid or 0)

    def update_identity(self, row_id: int, dev: int, head_len: int, head_hash: str, key_id: str) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE in_tail_files SET dev=?, head_len=?, head_hash=?, key_id=? WHERE id=?",
                (dev, head_len, head_hash, key_id, row_id),
            )

    def rename(self, row_id: int, name: str, rotated: bool) -> None:
        with self._lock:
            self._conn.execute("UPDATE in_tail_files SET name=?, rotated=? WHERE id=?", (name, int(rotated), row_id))

    def delete(self, row_id: int) -> None:
        with self._dlock:
            self._dirty.pop(row_id, None)
            self._heads.pop(row_id, None)
        with self._lock:
            self._conn.execute("DELETE FROM in_tail_files WHERE id=?", (row_id,))

    def set_offset(self, row_id: int, offset: int) -> None:
        """Record a committed offset; written by the next ``flush``."""
        with self._dlock:
            self._dirty[row_id] = offset

    def set_identity(self, row_id: int, head_len: int, head_hash: str, key_id: str | None = None) -> None:
        """Record a file's grown head (or, after truncation, its new key id); written by ``flush``."""
        with self._dlock:
            self._heads[row_id] = (head_len, head_hash, key_id)

    @property
    def dirty(self) -> bool:
        return bool(self._dirty or self._heads)

    def flush(self) -> int:
        """Write every dirty offset in one transaction (safe to call from a worker thread).

        After ``close`` it writes nothing (the pending offsets stay pending, never a call on a
        closed connection): the engine closes inputs only once no acknowledgement can arrive,
        so this is a late straggler whose lines are read again after a restart.
        """
        if (not self._dirty and not self._heads) or self.closed:
            return 0
        with self._dlock:
            items, self._dirty = self._dirty, {}
            heads, self._heads = self._heads, {}
        with self._lock:
            if self.closed:  # closed while this flush waited for the lock
                self._restore(items, heads)
                return 0
            c = self._conn
            c.execute("BEGIN")
            try:
                c.executemany("UPDATE in_tail_files SET offset=? WHERE id=?", [(o, i) for i, o in items.items()])
                c.executemany(
                    "UPDATE in_tail_files SET head_len=?, head_hash=?, key_id=COALESCE(?, key_id) WHERE id=?",
                    [(n, h, k, i) for i, (n, h, k) in heads.items()],
                )
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                self._restore(items, heads)  # kept for the next attempt
                raise
            self.writes += 1
        return len(items)

    def _restore(self, items: dict[int, int], heads: dict[int, tuple[int, str, str | None]]) -> None:
        with self._dlock:
            for k, v in items.items():
                self._dirty.setdefault(k, v)
            for k, hv in heads.items():
                self._heads.setdefault(k, hv)

    def close(self) -> None:
        """Write what is pending and close (idempotent; later writes are kept in memory only)."""
        if self.closed:
            return
        try:
            self.flush()
        finally:
            with self._lock:
                self.closed = True
                self._conn.close()
