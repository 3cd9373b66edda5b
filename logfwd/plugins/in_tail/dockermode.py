"""Tail's ``Docker_Mode`` with ``Docker_Mode_Parser``: whole Docker lines joined by a first-line rule.

Plain ``Docker_Mode`` only recombines the 16 KiB pieces Docker's json-file driver splits a
long line into; the built-in ``docker`` multiline parser does that (see ``config.py``). With
``Docker_Mode_Parser`` Fluent Bit goes further and joins *whole* lines, a stack trace
printed line by line, until a line matches the named parser. Configs written for it still
exist, so it works here with Fluent Bit's rules:

- the first-line parser runs on the raw file line, the json-file JSON itself (Fluent Bit's
  own example is ``^{"log":"\\d{4}-\\d{2}-\\d{2}.*``), not on the ``log`` value;
- every valid Docker line (a JSON object with a text ``log``) appends its ``log`` to the
  record being built; a line whose ``log`` does not end with a newline is a piece and the
  record stays open whatever comes next;
- once the record's last line is complete, the next line ends it (it is emitted) when that
  line matches the first-line parser, or when no line of this file has matched it yet (so a
  container that never prints a first line gets one record per line, not one record
  forever);
- the emitted record is the *last* line's JSON with ``log`` replaced by the joined text,
  parsed with the tail's ``Parser`` when one is set (``{Key: json}`` otherwise), as Fluent
  Bit's flush does; a line that is no Docker JSON ends the record being built and is read
  as any line is (``Parser``, else ``{Key: line}``);
- the record being built is also emitted ``Docker_Mode_Flush`` seconds after its last line
  arrived, when the file ends, and when it grows past the service's
  ``multiline_buffer_limit`` (Fluent Bit grows without bound there).

It plugs into the reader as every multiline mode does (``stream()`` gives the per-file object
with ``feed_lines``/``flush``/``flush_expired``/``safe_offset``/``pending_since``), so the
offset of a file is never committed past the first line of a record still being built.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

__all__ = ["DockerFirstline", "DockerFirstlineStream"]

Out = tuple[list[int], list[dict[str, Any]], list[int]]


class DockerFirstline:
    """The configured mode; ``flush_timeout`` is what tail's reader times held records with."""

    def __init__(self, firstline: Any, parser: Any, key: str, flush_timeout: float) -> None:
        self.firstline = firstline
        self.parser = parser  # the tail's Parser, applied to each emitted line (None: {key: text})
        self.key = key
        self.flush_timeout = float(flush_timeout)

    def stream(self, start_offset: int = 0, buffer_limit: int = 2 * 1024 * 1024) -> DockerFirstlineStream:
        return DockerFirstlineStream(self, start_offset, buffer_limit)


class _Held:
    """The record being built: its ``log`` pieces and the JSON of its last line."""

    __slots__ = ("pieces", "last", "floor", "end", "since", "complete", "size", "read_time")

    def __init__(self, floor: int) -> None:
        self.pieces: list[str] = []
        self.last: dict[str, Any] = {}
        self.floor = floor  # offset where its first line starts: the file is committed up to here
        self.end = floor
        self.since = 0.0
        self.complete = False
        self.size = 0
        self.read_time = 0

    def add(self, obj: dict[str, Any], end: int, size: int, read_time: int) -> None:
        log: str = obj["log"]
        self.pieces.append(log)
        self.last = obj
        self.end = end
        self.since = time.monotonic()
        self.complete = log.endswith("\n")
        self.size += size
        self.read_time = read_time

    def text(self) -> bytes:
        """The last line's JSON with ``log`` replaced by the joined pieces (key order kept)."""
        self.last["log"] = "".join(self.pieces)
        return orjson.dumps(self.last)


class DockerFirstlineStream:
    """Docker first-line state of one file."""

    def __init__(self, mode: DockerFirstline, start_offset: int, buffer_limit: int) -> None:
        self._mode = mode
        self._held: _Held | None = None
        self._prev_end = start_offset
        self._limit = buffer_limit
        self._seen_first = False  # Fluent Bit's dmode_firstline: sticky once any line matched
        self.unparsed = 0  # lines the tail's Parser could not parse (kept as {Key: text})
        # What was completed but not yet parsed: (line, read time, offset after it).
        self._ready: list[tuple[bytes, int, int]] = []

    @property
    def pending_since(self) -> float | None:
        return self._held.since if self._held is not None else None

    @property
    def safe_offset(self) -> int:
        return self._held.floor if self._held is not None else self._prev_end

    def feed_lines(self, times: list[int], lines: list[bytes], offsets: list[int]) -> Out:
        """Process lines (ending at ``offsets``) in order; return the records completed."""
        _, first = self._mode.firstline.parse_values(lines, None, None)
        for i, line in enumerate(lines):
            start, end = self._prev_end, offsets[i]
            self._prev_end = end
            matched = first[i] is not None
            self._seen_first = self._seen_first or matched
            held = self._held
            if held is not None and held.complete and (matched or not self._seen_first):
                self._emit_held()
            obj = _docker_json(line)
            if obj is None:
                self._emit_held()
                self._ready.append((line, times[i], end))
                continue
            if self._held is None:
                self._held = _Held(start)
            self._held.add(obj, end, len(line), times[i])
            if self._held.size > self._limit:
                self._emit_held()
        return self._parse_ready()

    def _emit_held(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._ready.append((held.text(), held.read_time, held.end))

    def _parse_ready(self) -> Out:
        """The completed lines as records: the tail's Parser in one batch, else ``{Key: text}``."""
        ready, self._ready = self._ready, []
        if not ready:
            return [], [], []
        lines = [r[0] for r in ready]
        read_times = [r[1] for r in ready]
        offs = [r[2] for r in ready]
        parser, key = self._mode.parser, self._mode.key
        if parser is None:
            return read_times, [{key: ln.decode("utf-8", "replace")} for ln in lines], offs
        times, recs = parser.parse_values(lines, None, None)
        out: list[dict[str, Any]] = []
        for i, r in enumerate(recs):
            if r is None:
                self.unparsed += 1
                r = {key: lines[i].decode("utf-8", "replace")}
            out.append(r)
            if times[i] is None:
                times[i] = read_times[i]
        return times, out, offs

    def flush(self) -> Out:
        """Emit the record being built (the file ended, or shutdown)."""
        self._emit_held()
        return self._parse_ready()

    def flush_expired(self, now: float | None = None) -> Out:
        """Emit the record being built once ``Docker_Mode_Flush`` passed since its last line."""
        now = time.monotonic() if now is None else now
        held = self._held
        if held is None or now - held.since < self._mode.flush_timeout:
            return [], [], []
        return self.flush()


def _docker_json(line: bytes) -> dict[str, Any] | None:
    """A json-file line as its object, or None when it is not one (no JSON object, no text ``log``)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict or type(obj.get("log")) is not str:
        return None
    return obj
