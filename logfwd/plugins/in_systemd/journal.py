"""Reading the journal through libsystemd (``systemd.journal.Reader``) and turning entries into records.

Journal files are never parsed by hand: rotation, vacuuming, compression and
file formats are libsystemd's business. Every call here may block (memory-mapped
files on a slow disk) and runs in a worker thread.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from typing import Any

from logfwd.plugin import StartError

__all__ = ["JournalSettings", "Journal", "text"]


@dataclass(frozen=True)
class JournalSettings:
    path: str | None
    filters: tuple[tuple[str, str], ...]
    filter_and: bool
    read_from_tail: bool
    max_entries: int
    max_fields: int
    strip: bool
    lower: bool
    latin1: bool


def _journal_module() -> Any:
    try:
        from systemd import journal  # noqa: PLC0415 - optional dependency (logfwd[systemd]), only for this input
    except ImportError as e:
        raise StartError(f"cannot read the journal: systemd-python is not installed ({e})") from None
    return journal


class Journal:
    """One libsystemd reader with the input's matches, and the record conversion."""

    def __init__(self, cfg: JournalSettings, metrics: Any, log: Any) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.log = log
        self.reader: Any = None
        self._key_cache: dict[str, str] = {}

    def open(self) -> None:
        """Open the journal (StartError when it cannot be) and apply Systemd_Filter."""
        journal = _journal_module()
        path = self.cfg.path
        try:
            if path and os.path.isfile(path):
                reader = journal.Reader(files=[path])
            elif path:
                reader = journal.Reader(path=path)
            else:
                reader = journal.Reader()
        except OSError as e:
            raise StartError(f"cannot open the journal {path or '(system)'}: {(e.strerror or str(e)).lower()}") \
                from None
        reader.data_threshold = 0  # whole values, not libsystemd's 64 KiB default cut
        for i, (field, value) in enumerate(self.cfg.filters):
            if i:
                (reader.add_conjunction if self.cfg.filter_and else reader.add_disjunction)()
            reader.add_match(f"{field}={value}")
        self.reader = reader

    def fileno(self) -> int:
        """The journal's inotify descriptor: readable when it changes."""
        return int(self.reader.fileno())

    def process(self) -> None:
        """Consume the inotify events (and pick up new journal files)."""
        self.reader.process()

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None

    def position(self, cursor: str | None) -> None:
        """Place the reader so that the next entry read is the first one not yet delivered."""
        reader = self.reader
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
        if self.cfg.read_from_tail:
            reader.seek_tail()
            reader._previous()  # now at the last entry: the next read is the first new one
        else:
            reader.seek_head()

    def read(self, tag_template: str) -> list[tuple[str, list[int], list[dict[str, Any]], str]]:
        """Up to Max_Entries entries, as (tag, times, records, cursor of the last) groups."""
        reader = self.reader
        groups: list[tuple[str, list[int], list[dict[str, Any]], str]] = []
        expand = "*" in tag_template
        tag = tag_template
        times: list[int] = []
        records: list[dict[str, Any]] = []
        cursor = ""
        cut = 0
        for _ in range(self.cfg.max_entries):
            if not reader._next():
                break
            fields = reader._get_all()
            rec, dropped = self.record(fields)
            cut += dropped
            if expand:
                etag = _unit_tag(tag_template, fields)
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

    def record(self, fields: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """The record of an entry's fields, and how many fields Max_Fields cut."""
        cfg = self.cfg
        rec: dict[str, Any] = {}
        latin1 = cfg.latin1
        cache = self._key_cache
        n = 0
        for k, v in fields.items():
            if n >= cfg.max_fields:
                return rec, len(fields) - n
            key = cache.get(k)
            if key is None:
                key = k[1:] if cfg.strip and k.startswith("_") else k
                if cfg.lower:
                    key = key.lower()
                cache[k] = key
            rec[key] = [text(x, latin1) for x in v] if isinstance(v, list) else text(v, latin1)
            n += 1
        return rec, 0


def _unit_tag(template: str, fields: dict[str, Any]) -> str:
    unit = fields.get("_SYSTEMD_UNIT", b"unknown")
    if isinstance(unit, list):
        unit = unit[0]
    return template.replace("*", text(unit, False).replace("/", ".").strip("."))


def text(v: bytes, latin1: bool) -> str:
    """A value as text: UTF-8, else latin-1 (one char per byte) or base64 (lossless either way)."""
    try:
        return v.decode("utf-8")
    except UnicodeDecodeError:
        return v.decode("latin-1") if latin1 else base64.b64encode(v).decode("ascii")
