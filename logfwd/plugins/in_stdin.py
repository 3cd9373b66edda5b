"""The ``stdin`` input: read records from the daemon's standard input until EOF.

Fluent Bit's options: ``Parser`` (a named parser for every line) and
``Buffer_Size`` (read size, default 16k). Without a parser each line is
taken as Fluent Bit's stdin takes it, a JSON object, or an event array
``[time, {record}]`` / ``[[time, {metadata}], {record}]``; unlike Fluent Bit,
a line that is not one of those is kept, as ``{"log": line}``, instead of
being dropped, so ``some-program | logfwd -i stdin -o ...`` just works.

Reading never blocks the event loop: a pipe, terminal or socket is read
through a non-blocking ``trio.lowlevel.FdStream`` on a duplicate of the
descriptor; a regular file (``logfwd < file``), which cannot be polled, and a
terminal, which shares its file description with stdout, are read in a worker
thread. ``run()`` returns at EOF after emitting the last,
unterminated line.
"""

from __future__ import annotations

import os
import stat
import time
from typing import Any

import orjson
import trio

from logfwd._fastparse import LineFramer
from logfwd.options import Option
from logfwd.plugin import ConfigValueError, Emitter, Input, StartError

_NS = 1_000_000_000
_READ_MIN = 256 * 1024  # read this much at a time at least: fewer, larger batches
_MAX_LINE_MIN = 1024 * 1024


def _event_time(value: Any) -> int | None:
    """Nanoseconds from an event array's time (seconds, integer or float)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value * _NS
    if isinstance(value, float):
        # Split first: 1700000000.25 * 1e9 in one float loses the last digits.
        sec = int(value)
        return sec * _NS + round((value - sec) * _NS)
    return None


class StdinInput(Input):
    name = "stdin"
    description = "Read records from standard input"
    options = (
        Option("Parser", "str", None, "parser for each line; default: JSON object per line, else {\"log\": line}"),
        Option("Buffer_Size", "size", "16k", "read size; lines up to 1M or this size, if larger, are kept whole",
               minimum=1),
    )

    fd: int = 0  # the descriptor to read; an attribute so an embedding program can point it elsewhere

    def setup(self) -> None:
        self.parser: Any = None
        name = self.config["parser"]
        if name:
            if self.ctx.parsers is None:
                raise ConfigValueError("parser", f"parser {name!r} is not defined (no parsers loaded)")
            try:
                self.parser = self.ctx.parsers.get(name)
            except KeyError:
                known = ", ".join(sorted(self.ctx.parsers.names())) if hasattr(self.ctx.parsers, "names") else ""
                raise ConfigValueError("parser", f"parser {name!r} is not defined"
                                                 + (f"; known parsers: {known}" if known else "")) from None
        self.buffer_size: int = self.config["buffer_size"]
        self.max_line = max(self.buffer_size, _MAX_LINE_MIN)
        self.framer = LineFramer(self.max_line, False, 0)
        self._truncated_seen = 0

    # ------------------------------------------------------------ decoding

    def decode(self, lines: list[bytes]) -> tuple[list[int], list[dict[str, Any]]]:
        """Records and times for a batch of lines (the parser's, or JSON-or-raw)."""
        now = time.time_ns()
        if self.parser is not None:
            times, records, failed = self.parser.parse_lines(lines, now)
            if failed:
                self.metrics.inc("parse_errors", failed)
            return times, records
        times: list[int] = []
        records: list[dict[str, Any]] = []
        failed = 0
        loads = orjson.loads
        for line in lines:
            if not line.strip():
                continue
            first = line.lstrip()[:1]
            if first == b"{" or first == b"[":
                try:
                    value = loads(line)
                except orjson.JSONDecodeError:
                    value = None
                if isinstance(value, dict):
                    times.append(now)
                    records.append(value)
                    continue
                if isinstance(value, list) and len(value) == 2 and isinstance(value[1], dict):
                    head = value[0]
                    if isinstance(head, list) and head:  # [[time, metadata], record]
                        head = head[0]
                    t = _event_time(head)
                    if t is not None:
                        times.append(t)
                        records.append(value[1])
                        continue
                failed += 1  # looked like JSON, was not a record: keep it raw
            times.append(now)
            records.append({"log": line.decode("utf-8", "replace")})
        if failed:
            self.metrics.inc("parse_errors", failed)
        return times, records

    async def _emit_lines(self, emitter: Emitter, lines: list[bytes], nbytes: int) -> None:
        if self.framer.long_lines > self._truncated_seen:
            n = self.framer.long_lines - self._truncated_seen
            self._truncated_seen = self.framer.long_lines
            self.metrics.inc("truncated_lines", n)
            self.log.warning("%d line(s) longer than %d bytes truncated", n, self.max_line)
        if not lines:
            return
        times, records = self.decode(lines)
        if records:
            await emitter.emit(records, times, nbytes=nbytes)

    def exit_when_done(self) -> bool:
        return True  # Fluent Bit exits at the end of standard input

    # ------------------------------------------------------------ reading

    async def run(self, emitter: Emitter, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            fd = os.dup(self.fd)
        except OSError as e:
            raise StartError(f"cannot read standard input: {(e.strerror or str(e)).lower()}") from None
        read_size = max(self.buffer_size, _READ_MIN)
        try:
            mode = os.fstat(fd).st_mode
        except OSError as e:
            os.close(fd)
            raise StartError(f"cannot read standard input: {(e.strerror or str(e)).lower()}") from None
        task_status.started()
        # A regular file cannot be polled; a terminal usually shares its open file
        # description with stdout and stderr, which non-blocking mode would break.
        if stat.S_ISREG(mode) or stat.S_ISBLK(mode) or os.isatty(fd):
            await self._run_file(emitter, fd, read_size, abandon=os.isatty(fd))
        else:
            await self._run_stream(emitter, fd, read_size)

    async def _run_stream(self, emitter: Emitter, fd: int, read_size: int) -> None:
        stream = trio.lowlevel.FdStream(fd)  # owns fd now; sets it non-blocking
        try:
            while True:
                data = await stream.receive_some(read_size)
                if not data:
                    break
                lines, _ = self.framer.feed(data)
                await self._emit_lines(emitter, lines, len(data))
        finally:
            await stream.aclose()
        lines, _ = self.framer.flush()
        await self._emit_lines(emitter, lines, sum(len(x) for x in lines))

    async def _run_file(self, emitter: Emitter, fd: int, read_size: int, abandon: bool) -> None:
        # A terminal read can wait forever, so shutdown abandons it (the thread
        # holds its own reference to the file); a disk read always returns soon.
        try:
            while True:
                data = await trio.to_thread.run_sync(os.read, fd, read_size, abandon_on_cancel=abandon)
                if not data:
                    break
                lines, _ = self.framer.feed(data)
                await self._emit_lines(emitter, lines, len(data))
        finally:
            os.close(fd)
        lines, _ = self.framer.flush()
        await self._emit_lines(emitter, lines, sum(len(x) for x in lines))


PLUGIN = StdinInput
