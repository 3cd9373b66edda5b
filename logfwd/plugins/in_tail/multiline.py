"""Multiline glue for tail: when a file's held multiline record is due, and flushing it.

A multiline parser stream (``f.ml``) holds the lines of a record that may still
grow. It is emitted when the next record starts, when the file ends (rotation
drained, ``Exit_On_Eof``) or when it has waited ``flush_timeout`` seconds; the
reader's timer asks here how long it may sleep and what has expired.
"""

from __future__ import annotations

from typing import Any

from .file import TailFile

__all__ = ["deadline", "expired", "held"]


def deadline(f: TailFile, now: float, timeout: float) -> float | None:
    """Seconds until ``f``'s held record must be flushed, or None when nothing is held."""
    if f.ml is None or f.ml.pending_since is None:
        return None
    return max(0.0, f.ml.pending_since + timeout - now) + 0.01


def expired(f: TailFile, now: float, timeout: float) -> tuple[list[int], list[dict[str, Any]], list[int]] | None:
    """The records held longer than ``timeout`` (times, records, offsets), or None."""
    if f.ml is None or f.ml.pending_since is None or now - f.ml.pending_since < timeout:
        return None
    times, records, offs = f.ml.flush_expired(now)
    return (times, records, offs) if records else None


def held(f: TailFile) -> tuple[list[int], list[dict[str, Any]], list[int]] | None:
    """Everything ``f``'s stream holds, flushed now (end of the file), or None."""
    if f.ml is None or f.ml.pending_since is None:
        return None
    return f.ml.flush()
