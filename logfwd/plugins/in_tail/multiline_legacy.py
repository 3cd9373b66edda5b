"""Tail's old multiline mode: ``Multiline On`` with ``Parser_Firstline`` and ``Parser_1..N``.

Fluent Bit kept this mode (before ``multiline.parser`` existed) and many configs still use
it, so it loads and works here too, with Fluent Bit's rules:

- every line is first tried with ``Parser_Firstline``; a match ends the record being
  built (it is emitted) and starts a new one: the parsed fields, and the parser's time
  (or the read time when it has none);
- a line that is no first line is tried with ``Parser_1``, ``Parser_2``... in the order
  written; the first that matches adds its fields to the record being built;
- a line no parser matches is appended, after a newline, to the last field of the record
  being built when that field is text (and the first line's last field was text);
  otherwise it becomes a record of its own, ``{Key: line}``;
- the record being built is emitted when the next first line arrives, when
  ``Multiline_Flush`` seconds passed since its first line, or when the file ends.

It plugs into the reader exactly as a ``multiline.parser`` does (``stream()`` gives the
per-file object with ``feed_lines``/``flush``/``flush_expired``/``safe_offset``), so the
offset of a file is never committed past the first line of a record still being built: a
restart reads that record again whole.

Differences from Fluent Bit, on purpose: a line that ``Parser_N`` matches while no record
is being built is emitted as its own record (Fluent Bit drops it); a record that grows past
the service's ``multiline_buffer_limit`` is emitted at that size and the next line starts a
new one (Fluent Bit grows without bound here).
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["LegacyMultiline", "LegacyStream"]

Out = tuple[list[int], list[dict[str, Any]], list[int]]


class LegacyMultiline:
    """The configured old mode; ``flush_timeout`` is what tail's reader times records with."""

    def __init__(self, firstline: Any, continuations: list[Any], flush_timeout: float, key: str) -> None:
        self.firstline = firstline
        self.continuations = continuations
        # Fluent Bit raises a Multiline_Flush below one second to one.
        self.flush_timeout = max(float(flush_timeout), 1.0)
        self.key = key

    def stream(self, start_offset: int = 0, buffer_limit: int = 2 * 1024 * 1024) -> LegacyStream:
        return LegacyStream(self, start_offset, buffer_limit)


class _Record:
    """The record being built, and what the append rule needs to know about it."""

    __slots__ = ("rec", "time", "floor", "end", "since", "appendable", "last_key", "size")

    def __init__(self, rec: dict[str, Any], t: int, floor: int, end: int, line_len: int) -> None:
        self.rec = rec
        self.time = t
        self.floor = floor  # offset where its first line starts: the file is committed up to here
        self.end = end  # offset after its last line
        self.since = time.monotonic()
        last = next(reversed(rec), None)
        self.last_key = last
        # Fluent Bit decides once, on the first line: continuation text is appended only if
        # the first line's last field is text.
        self.appendable = last is not None and isinstance(rec[last], str)
        self.size = line_len

    def merge(self, fields: dict[str, Any], end: int, line_len: int) -> None:
        self.rec.update(fields)
        if fields:
            self.last_key = next(reversed(fields))
        self.end = end
        self.size += line_len

    def append(self, text: str, end: int) -> bool:
        key = self.last_key
        if not self.appendable or key is None or not isinstance(self.rec.get(key), str):
            return False
        self.rec[key] = self.rec[key] + "\n" + text
        self.end = end
        self.size += len(text) + 1
        return True


class LegacyStream:
    """Old-mode state of one file."""

    def __init__(self, mode: LegacyMultiline, start_offset: int, buffer_limit: int) -> None:
        self._mode = mode
        self._cur: _Record | None = None
        self._prev_end = start_offset
        self._limit = buffer_limit
        self.unparsed = 0  # kept for the reader's contract: old mode has no parse error of its own

    @property
    def pending_since(self) -> float | None:
        return self._cur.since if self._cur is not None else None

    @property
    def safe_offset(self) -> int:
        return self._cur.floor if self._cur is not None else self._prev_end

    def feed_lines(self, times: list[int], lines: list[bytes], offsets: list[int]) -> Out:
        """Process lines (ending at ``offsets``) in order; return the records completed."""
        mode = self._mode
        first_t, first_r = mode.firstline.parse_values(lines, None, None)
        cont = self._continuations(lines, first_r)
        out: Out = ([], [], [])
        for i, line in enumerate(lines):
            start, end = self._prev_end, offsets[i]
            self._prev_end = end
            rec = first_r[i]
            if rec is not None:
                self._emit_current(out)
                t = first_t[i] if first_t[i] is not None else times[i]
                self._cur = _Record(rec, t, start, end, len(line))
            else:
                self._continue(out, line, cont.get(i), times[i], end)
            if self._cur is not None and self._cur.size > self._limit:
                self._emit_current(out)
        return out

    def _continuations(self, lines: list[bytes], first_r: list[Any]) -> dict[int, dict[str, Any]]:
        """For the lines that are no first line: the fields of the first ``Parser_N`` that matches."""
        found: dict[int, dict[str, Any]] = {}
        todo = [i for i, r in enumerate(first_r) if r is None]
        for parser in self._mode.continuations:
            if not todo:
                break
            _, recs = parser.parse_values([lines[i] for i in todo], None, None)
            rest = []
            for i, r in zip(todo, recs, strict=True):
                if r is None:
                    rest.append(i)
                else:
                    found[i] = r
            todo = rest
        return found

    def _continue(self, out: Out, line: bytes, fields: dict[str, Any] | None, t: int, end: int) -> None:
        cur = self._cur
        if fields is not None:
            if cur is not None:
                cur.merge(fields, end, len(line))
            else:
                self._put(out, t, fields, end)
            return
        text = line.decode("utf-8", "replace")
        if cur is None or not cur.append(text, end):
            self._put(out, t, {self._mode.key: text}, end)

    def _emit_current(self, out: Out) -> None:
        cur = self._cur
        if cur is not None:
            self._cur = None
            self._put(out, cur.time, cur.rec, cur.end)

    @staticmethod
    def _put(out: Out, t: int, rec: dict[str, Any], end: int) -> None:
        out[0].append(t)
        out[1].append(rec)
        out[2].append(end)

    def flush(self) -> Out:
        """Emit the record being built (the file ended, or shutdown)."""
        out: Out = ([], [], [])
        self._emit_current(out)
        return out

    def flush_expired(self, now: float | None = None) -> Out:
        """Emit the record being built once ``Multiline_Flush`` passed since its first line."""
        now = time.monotonic() if now is None else now
        cur = self._cur
        if cur is None or now - cur.since < self._mode.flush_timeout:
            return [], [], []
        return self.flush()
