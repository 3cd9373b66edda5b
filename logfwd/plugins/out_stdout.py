"""The ``stdout`` output: print records to standard output, as Fluent Bit does.

The default ``msgpack`` format is Fluent Bit's human-readable print
(``[0] tag: [[ts, {}], {"k"=>"v"}]``); ``json_lines``, ``json_stream`` and
``json`` print JSON with a date key. A chunk is formatted into one buffer and
written with one call, in a worker thread: a slow reader on the other end of a
pipe must stall this output, never the event loop (and with it every input).
"""

from __future__ import annotations

import io
import sys
from typing import Any

import trio

from logfwd import formats
from logfwd.options import Option
from logfwd.plugin import Chunk, Output, Result


class StdoutOutput(Output):
    name = "stdout"
    description = "Print records to standard output"
    options = (
        Option("Format", "str", "msgpack", "msgpack (human-readable print), json, json_lines or json_stream",
               choices=("msgpack", "json", "json_lines", "json_stream")),
        Option("json_date_key", "str", "date", "name of the time key in JSON formats; false disables it"),
        Option("json_date_format", "str", "double", "time in the date key",
               choices=formats.DATE_FORMATS),
    )

    def setup(self) -> None:
        self.format: str = self.config["format"]
        self.date_key = formats.parse_date_key(self.config["json_date_key"])
        self.date_format: str = self.config["json_date_format"]
        self._lock = trio.Lock()  # several workers: whole chunks, never interleaved
        self.stream: Any = None  # tests and embedders may redirect; None means sys.stdout at write time

    def render(self, chunk: Chunk) -> bytes:
        """The bytes one chunk prints as."""
        if self.format == "msgpack":
            return formats.format_msgpack_print(chunk.tag, chunk.times, chunk.records)
        if self.format == "json_lines":
            return formats.format_json_lines(chunk.times, chunk.records, self.date_key, self.date_format)
        if self.format == "json_stream":
            return formats.format_json_stream(chunk.times, chunk.records, self.date_key, self.date_format)
        # "json": one array per chunk, on its own line.
        return formats.format_json_array(chunk.times, chunk.records, self.date_key, self.date_format) + b"\n"

    def _write(self, data: bytes) -> None:
        stream = self.stream if self.stream is not None else sys.stdout
        raw = getattr(stream, "buffer", None)
        if raw is not None:
            stream.flush()  # text written before must come first
            raw.write(data)
            raw.flush()
        elif isinstance(stream, io.TextIOBase):
            stream.write(data.decode("utf-8", "replace"))
            stream.flush()
        else:
            stream.write(data)
            stream.flush()

    async def flush(self, chunk: Chunk) -> Result:
        if not chunk.records:
            return Result.ok()
        data = self.render(chunk)
        async with self._lock:
            try:
                await trio.to_thread.run_sync(self._write, data)
            except (OSError, ValueError) as e:  # ValueError: write to a closed file
                self.log.error("cannot write to standard output: %s", e)
                return Result.retry_everything(f"stdout: {e}")
        return Result.ok()


PLUGIN = StdoutOutput
