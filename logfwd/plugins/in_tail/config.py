"""The tail input's options and the settings ``setup`` validates and derives from them.

Everything here is computed once, before any file is opened: parsers resolved,
``Tag_Regex`` compiled, numbers clamped. The rest of the plugin reads the frozen
``TailConfig`` and never the raw option values.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from logfwd.multiline import group
from logfwd.options import Option
from logfwd.plugin import ConfigValueError
from logfwd.regex import compile_onigmo

from .db import JOURNAL_MODES, SYNC_MODES
from .dockermode import DockerFirstline
from .multiline_legacy import LegacyMultiline

__all__ = ["OPTIONS", "READ_SIZE", "TailConfig", "load_config"]

READ_SIZE = 512 * 1024  # bytes per read call when a file has a backlog

OPTIONS = (
    Option("Path", "csv", None, "comma-separated glob patterns of files to follow ('**' recursive)", required=True),
    Option("Exclude_Path", "csv", None, "comma-separated shell patterns of files to leave out, e.g. *.gz,*.zip"),
    Option("Path_Key", "str", None, "add the file's path to each record under this key"),
    Option("Offset_Key", "str", None, "add each line's byte offset in its file under this key"),
    Option("Key", "str", "log", "key of the line when no parser structures it"),
    Option("Read_from_Head", "bool", "false",
           "files found at startup without a DB offset are read from the start, not the end"),
    Option("Refresh_Interval", "time", "60", "seconds between rescans of Path for new files"),
    Option("Rotate_Wait", "time", "5", "seconds a rotated file is still followed for late writes"),
    Option("Ignore_Older", "time", None, "ignore files not modified for this long (e.g. 1d)"),
    Option("Ignore_Active_Older_Files", "bool", "false",
           "also stop following files already followed once they are older than Ignore_Older"),
    Option("Buffer_Chunk_Size", "size", "32k",
           "bytes read from a file at a time when it is behind (at least 512k: small reads cost CPU)"),
    Option("Buffer_Max_Size", "size", "32k", "longest line; longer lines are cut or skipped"),
    Option("Skip_Long_Lines", "bool", "off", "drop lines longer than Buffer_Max_Size instead of cutting them"),
    Option("Skip_Empty_Lines", "bool", "off", "drop empty lines"),
    Option("Parser", "str", None, "parser (from the parsers file) applied to each line"),
    Option("multiline.parser", "csv", None, "multiline parsers, first that recognises a line wins: docker, cri"),
    Option("DB", "str", None, "SQLite file keeping each file's offset across restarts"),
    Option("DB.sync", "str", "normal", "SQLite synchronous mode", choices=SYNC_MODES),
    Option("DB.locking", "bool", "false", "open the DB in exclusive locking mode"),
    Option("DB.journal_mode", "str", "WAL", "SQLite journal mode",
           choices=tuple(m.upper() for m in JOURNAL_MODES)),
    Option("DB.compare_filename", "bool", "false", "match DB rows on inode and file name, not inode alone"),
    Option("Inotify_Watcher", "bool", "true", "use inotify (off: stat polling)"),
    Option("Docker_Mode", "bool", "off", "recombine Docker json-file lines split at 16 KiB"),
    Option("Docker_Mode_Flush", "time", "4", "seconds before a partial Docker line is flushed", minimum=0.001),
    Option("Docker_Mode_Parser", "str", None,
           "parser matching the raw json-file line that starts a record: whole Docker lines are joined until the next"),
    Option("File_Cache_Advise", "bool", "on", "drop already-read file pages from the page cache"),
    Option("Static_Batch_Size", "size", "50M", "Fluent Bit's read budget for files found at start",
           unsupported="every file is read in Buffer_Chunk_Size steps, backlog or not"),
    Option("Exit_On_Eof", "bool", "false", "stop once every file found at start was read to its end"),
    Option("Tag_Regex", "str", None, "regex with named groups on the file path; Tag uses <name> to refer to them"),
    Option("Multiline", "bool", "off",
           "old multiline mode: Parser_Firstline starts a record, Parser_N and plain lines continue it "
           "(multiline.parser is the newer way and wins when both are set)"),
    Option("Parser_Firstline", "str", None, "old multiline mode: parser that recognises (and parses) a record's "
           "first line"),
    Option("Parser_", "str", None, "old multiline mode: Parser_1, Parser_2 ...: parsers tried in order on "
           "lines that are no first line; the first that matches adds its fields", prefix=True, attr="parser_n"),
    Option("Multiline_Flush", "time", "4", "old multiline mode: seconds a record waits for more lines",
           minimum=0.001),
)


@dataclass(frozen=True)
class TailConfig:
    """What the tail input runs with, validated."""

    patterns: list[str]
    excludes: list[str]
    key: str
    path_key: str | None
    offset_key: str | None
    read_from_head: bool
    refresh: float
    rotate_wait: float
    ignore_older: float | None
    ignore_active_older: bool
    max_line: int
    read_size: int
    skip_long: bool
    skip_empty: bool
    exit_on_eof: bool
    use_inotify: bool
    fadvise: bool
    parser: Any  # a logfwd.parsers parser, or None
    ml: Any  # a multiline parser (or group), or None
    ml_timeout: float
    ml_buffer_limit: int  # the service's multiline_buffer_limit: the largest record a multiline parser builds
    tag_regex: re.Pattern[str] | None
    db_path: str | None
    db_sync: str
    db_journal: str
    db_locking: bool
    compare_filename: bool


def load_config(s: Any, parsers: Any, log: Any, service: dict[str, Any] | None = None) -> TailConfig:
    """Validate the plugin's typed settings ``s``; ``ConfigValueError`` names the key at fault."""
    patterns = list(s.path or [])
    if not patterns:
        raise ConfigValueError("path", "tail needs Path: one or more file glob patterns")
    ml = _multiline(s, parsers, log)
    if ml is not None and s.parser and not isinstance(ml, DockerFirstline):
        log.warning("tail: Parser is ignored when multiline.parser (or Docker_Mode) is set")
    return TailConfig(
        patterns=patterns,
        excludes=[x.strip() for x in (s.exclude_path or [])],
        key=s.key or "log",
        path_key=s.path_key,
        offset_key=s.offset_key,
        read_from_head=bool(s.read_from_head),
        refresh=max(0.05, float(s.refresh_interval or 60)),
        rotate_wait=max(0.0, float(s.rotate_wait if s.rotate_wait is not None else 5)),
        ignore_older=s.ignore_older,
        ignore_active_older=bool(s.ignore_active_older_files),
        max_line=int(s.buffer_max_size or 32768),
        read_size=max(READ_SIZE, int(s.buffer_chunk_size or 0)),
        skip_long=bool(s.skip_long_lines),
        skip_empty=bool(s.skip_empty_lines),
        exit_on_eof=bool(s.exit_on_eof),
        use_inotify=bool(s.inotify_watcher if s.inotify_watcher is not None else True),
        fadvise=bool(s.file_cache_advise) and hasattr(os, "posix_fadvise"),
        parser=_parser(s, parsers) if ml is None else None,
        ml=ml,
        ml_timeout=float(getattr(ml, "flush_timeout", 4.0) or 4.0) if ml is not None else 4.0,
        ml_buffer_limit=int((service or {}).get("multiline_buffer_limit") or 2 * 1024 * 1024),
        tag_regex=_tag_regex(s.tag_regex),
        db_path=s.db,
        db_sync=s.db_sync or "normal",
        db_journal=(s.db_journal_mode or "wal").lower(),
        db_locking=bool(s.db_locking),
        compare_filename=bool(s.db_compare_filename),
    )


def _multiline(s: Any, parsers: Any, log: Any) -> Any:
    """What joins lines into records: ``multiline.parser``, else the old mode, else ``Docker_Mode``."""
    names = [n.strip() for n in (s.multiline_parser or []) if n.strip()]
    if s.multiline and names:
        log.warning("tail: multiline.parser is set: the old Multiline/Parser_Firstline mode is not used")
    elif s.multiline:
        return _legacy(s, parsers)
    docker = s.docker_mode and not names
    if s.docker_mode_parser and not docker:
        log.warning("tail: Docker_Mode_Parser has no effect without Docker_Mode On (or with multiline.parser)")
    if docker and s.docker_mode_parser:
        return DockerFirstline(_named_parser(parsers, s.docker_mode_parser, "docker_mode_parser"), _parser(s, parsers),
                               s.key or "log", float(s.docker_mode_flush or 4))
    if docker:
        names = ["docker"]
    if not names:
        return None
    if parsers is None:
        raise ConfigValueError("multiline.parser", "no parser registry available")
    mls = []
    for n in names:
        try:
            mls.append(parsers.multiline(n))
        except KeyError:
            known = ", ".join(parsers.multiline_names())
            raise ConfigValueError("multiline.parser", f"unknown multiline parser {n!r} (known: {known})") from None
    ml = mls[0] if len(mls) == 1 else group(mls)
    return ml.with_flush_timeout(float(s.docker_mode_flush)) if docker and s.docker_mode_flush else ml


def _legacy(s: Any, parsers: Any) -> LegacyMultiline:
    """``Multiline On``: Parser_Firstline is required (Fluent Bit refuses to start without it too)."""
    if not s.parser_firstline:
        raise ConfigValueError("parser_firstline", "Multiline On needs Parser_Firstline: the parser that "
                               "recognises a record's first line")
    firstline = _named_parser(parsers, s.parser_firstline, "parser_firstline")
    continuations = [_named_parser(parsers, name, f"parser_{suffix}") for suffix, name in (s.parser_n or {}).items()]
    return LegacyMultiline(firstline, continuations, float(s.multiline_flush or 4), s.key or "log")


def _named_parser(parsers: Any, name: str, key: str) -> Any:
    if parsers is None:
        raise ConfigValueError(key, "no parser registry available")
    try:
        return parsers.get(str(name).strip())
    except KeyError:
        raise ConfigValueError(key, f"unknown parser {name!r} (known: {', '.join(parsers.names())})") from None


def _parser(s: Any, parsers: Any) -> Any:
    if not s.parser:
        return None
    if parsers is None:
        raise ConfigValueError("parser", "no parser registry available")
    try:
        return parsers.get(s.parser)
    except KeyError:
        raise ConfigValueError("parser", f"unknown parser {s.parser!r} (known: {', '.join(parsers.names())})") from None


def _tag_regex(pattern: str | None) -> re.Pattern[str] | None:
    if not pattern:
        return None
    try:
        return compile_onigmo(pattern)
    except re.error as e:
        raise ConfigValueError("tag_regex", f"invalid regular expression: {e}") from None
