"""The ``file`` output: append records to a file, in Fluent Bit's formats.

Options, values and defaults are Fluent Bit's: ``Path`` (directory), ``File``
(name; default the tag), ``Mkdir``, ``Format`` (``out_file`` default,
``plain``, ``csv``, ``ltsv``, ``template``), ``Delimiter``,
``Label_Delimiter``, ``Template`` and ``csv_column_names``.

Formatting and the write run in a worker thread so the event loop never waits
on a disk. The file is opened per chunk in append mode, which keeps working
when logrotate moves it away. A failed write is undone (the file is truncated
back to where the chunk started) and the chunk retried, so a full disk leaves
no half-written line behind and no record is lost.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

import trio

from logfwd import formats
from logfwd.options import Option
from logfwd.plugin import Chunk, ConfigValueError, Output, Result

# Fluent Bit's names for delimiters; any other single character is taken literally.
_DELIMITER_NAMES = {"\\t": "\t", "tab": "\t", "space": " ", "comma": ","}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _delimiter(key: str, value: str | None, default: str) -> str:
    if value is None or value == "":
        return default
    named = _DELIMITER_NAMES.get(value.strip().lower())
    if named is not None:
        return named
    if len(value) == 1:
        return value
    raise ConfigValueError(key, f"expected tab, space, comma (or one character), got {value!r}")


def file_name_for_tag(tag: str) -> str:
    """A file name from a tag: characters other than letters, digits, ``.``, ``_``, ``-`` become ``_``.

    A tag comes from data (tail expands ``*`` with the path), so it must not
    be able to name a file outside ``Path``: ``/`` and ``..`` cannot survive.
    """
    name = _UNSAFE.sub("_", tag)
    if name in ("", ".", ".."):
        name = "_" * max(1, len(name))
    return name


class FileOutput(Output):
    name = "file"
    description = "Append records to a file"
    options = (
        Option("Path", "str", None, "directory of the file; default the working directory"),
        Option("File", "str", None, "file name; default the record's tag"),
        Option("Format", "str", "out_file", "out_file (tag: [time, json]), plain (json), csv, ltsv or template",
               choices=("out_file", "plain", "csv", "ltsv", "template")),
        Option("Mkdir", "bool", "off", "create the directory (and parents, mode 0755) if missing"),
        Option("Delimiter", "str", None, "csv: field separator (default comma); ltsv: pair separator (default tab);"
               " tab, space, comma or one character"),
        Option("Label_Delimiter", "str", None, "ltsv: separator of label and value (default ':')"),
        Option("Template", "str", "{time} {message}", "template format: {key} placeholders, {time} the event time"),
        Option("csv_column_names", "bool", "off", "csv: write the column names first when the file is empty"),
    )

    def setup(self) -> None:
        c = self.config
        self.format: str = c["format"]
        self.path: str | None = c["path"]
        self.file: str | None = c["file"]
        self.mkdir: bool = c["mkdir"]
        if self.format == "csv":
            self.delimiter = _delimiter("delimiter", c["delimiter"], ",")
        else:
            self.delimiter = _delimiter("delimiter", c["delimiter"], "\t")
        self.label_delimiter = _delimiter("label_delimiter", c["label_delimiter"], ":")
        self.template = formats.compile_template(c["template"])
        self.csv_header: bool = c["csv_column_names"]
        if self.file is not None and not self.file.strip():
            raise ConfigValueError("file", "must not be empty")
        self._lock = threading.Lock()  # workers > 1: one chunk at a time per file

    def target(self, tag: str) -> str:
        """The file a chunk of ``tag`` goes to."""
        name = self.file if self.file else file_name_for_tag(tag)
        return os.path.join(self.path, name) if self.path else name

    def render(self, tag: str, times: list[int], records: list[dict[str, Any]], empty_file: bool) -> bytes:
        f = self.format
        if f == "out_file":
            return formats.format_out_file(tag, times, records)
        if f == "plain":
            return formats.format_plain(times, records)
        if f == "csv":
            return formats.format_csv(times, records, self.delimiter, header=self.csv_header and empty_file)
        if f == "ltsv":
            return formats.format_ltsv(times, records, self.delimiter, self.label_delimiter)
        return formats.format_template(self.template, times, records)

    def _append(self, path: str, tag: str, times: list[int], records: list[dict[str, Any]]) -> int:
        """Format and append one chunk; undo a partial write. Runs in a worker thread."""
        with self._lock:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:
                if not self.mkdir:
                    raise
                os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                start = os.fstat(fd).st_size
                data = self.render(tag, times, records, empty_file=start == 0)
                view = memoryview(data)
                try:
                    while view:
                        n = os.write(fd, view)
                        view = view[n:]
                except OSError:
                    try:
                        os.ftruncate(fd, start)
                    except OSError:
                        pass
                    raise
                return len(data)
            finally:
                os.close(fd)

    async def flush(self, chunk: Chunk) -> Result:
        if not chunk.records:
            return Result.ok()
        path = self.target(chunk.tag)
        try:
            await trio.to_thread.run_sync(self._append, path, chunk.tag, chunk.times, chunk.records)
        except OSError as e:
            self.log.error("cannot write %s: %s", path, e.strerror or e)
            return Result.retry_everything(f"{path}: {e.strerror or e}")
        return Result.ok()


PLUGIN = FileOutput
