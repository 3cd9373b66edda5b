"""The daemon's own log, in Fluent Bit's shape, with a rate limit on repeats.

One line per event::

    [2026/11/27 14:50:00] [ info] [input:tail:tail.0] message

so that people and log pipelines reading Fluent Bit's log read ours the same
way. Plugin loggers come from ``plugin_logger(kind, name, instance)``; core
loggers are ``logging.getLogger("logfwd.<component>")`` and print as
``[<component>]`` (``[engine]``, ``[http_server]``).

A broken backend or a stream of bad lines would otherwise write the same error
thousands of times a second: ``RateLimitFilter`` lets one instance of each
(logger, message template) through per interval and reports how many it held
back (``... (repeated 1234 times)``) the next time one passes.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import threading
import time
from collections.abc import Callable

__all__ = [
    "TRACE",
    "setup_logging",
    "plugin_logger",
    "parse_level",
    "RateLimitFilter",
    "FluentBitFormatter",
]

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

_PLUGIN_PREFIX = "logfwd.plugin."
_OFF = logging.CRITICAL + 10

# Fluent Bit's level labels, five characters wide.
_LABELS = ((logging.ERROR, "error"), (logging.WARNING, " warn"), (logging.INFO, " info"), (logging.DEBUG, "debug"))

_LEVELS = {
    "off": _OFF,
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE,
}


def parse_level(level: str | int | None) -> int:
    """A ``logging`` level from Fluent Bit's names (``off``, ``error``, ``warn``, ``info``, ``debug``, ``trace``)."""
    if level is None:
        return logging.INFO
    if isinstance(level, int):
        return level
    try:
        return _LEVELS[str(level).strip().lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; expected one of off, error, warn, info, debug, trace") \
            from None


def plugin_logger(kind: str, name: str, instance: str) -> logging.Logger:
    """The logger of one plugin instance; it prints as ``[input:tail:tail.0]``."""
    return logging.getLogger(f"{_PLUGIN_PREFIX}{kind}:{name}:{instance}")


def _component(logger_name: str) -> str:
    if logger_name.startswith(_PLUGIN_PREFIX):
        return logger_name[len(_PLUGIN_PREFIX) :]
    if logger_name.startswith("logfwd."):
        return logger_name[len("logfwd.") :]
    return logger_name  # "logfwd" itself, or a library's logger ("trio", "httpx")


class FluentBitFormatter(logging.Formatter):
    """``[YYYY/MM/DD HH:MM:SS] [level] [component] message`` on one line.

    Newlines inside a message are escaped so that every event stays one line
    (a multi-line backend error must not look like several events). An
    exception adds its type and message; the traceback only at debug level,
    where it helps, and then indented under the event.
    """

    def __init__(self, tracebacks: bool = False) -> None:
        super().__init__()
        self.tracebacks = tracebacks

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(record.created))

    def format(self, record: logging.LogRecord) -> str:
        level = "trace"
        for threshold, label in _LABELS:
            if record.levelno >= threshold:
                level = label
                break
        try:
            msg = record.getMessage()
        except Exception as e:  # a bad format string must not lose the event
            msg = f"{record.msg!r} (bad log arguments {record.args!r}: {e})"
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            msg = f"{msg}: {type(exc).__name__}: {exc}"
        msg = msg.replace("\r", "\\r").replace("\n", "\\n")
        line = f"[{self.formatTime(record)}] [{level}] [{_component(record.name)}] {msg}"
        if self.tracebacks and record.exc_info:
            tb = self.formatException(record.exc_info)
            line += "\n" + "\n".join("    " + t for t in tb.splitlines())
        return line


class RateLimitFilter(logging.Filter):
    """At most one event per (logger, message template, level) per ``interval`` seconds.

    Keyed by the *template* (``record.msg`` before ``%`` arguments) so that
    "cannot write %s" for one path and another count as the same error, as a
    person reading the log would. Held-back events are counted, and the next
    one let through says ``(repeated N times)``. Only events at ``min_level``
    or above are limited: debug output is asked for and kept whole.
    """

    def __init__(self, interval: float = 10.0, min_level: int = logging.WARNING,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 4096) -> None:
        super().__init__()
        self.interval = interval
        self.min_level = min_level
        self.clock = clock
        self.max_keys = max_keys
        # key -> [time last let through, count held back since]
        self._seen: dict[tuple[str, str, int], list[float]] = {}
        self._lock = threading.Lock()  # worker threads log too

    def filter(self, record: logging.LogRecord) -> bool:
        if self.interval <= 0 or record.levelno < self.min_level:
            return True
        key = (record.name, str(record.msg), record.levelno)
        now = self.clock()
        with self._lock:
            entry = self._seen.get(key)
            if entry is not None and now - entry[0] < self.interval:
                entry[1] += 1
                return False
            held = int(entry[1]) if entry is not None else 0
            if len(self._seen) >= self.max_keys:
                self._prune(now)
            self._seen[key] = [now, 0]
        if held:
            # Append to the template so the arguments still format as intended.
            record.msg = f"{record.msg} (repeated {held} times)"
        return True

    def _prune(self, now: float) -> None:
        stale = [k for k, (t, n) in self._seen.items() if now - t >= self.interval and not n]
        for k in stale:
            del self._seen[k]
        if len(self._seen) >= self.max_keys:  # still full: forget the oldest half
            for k in sorted(self._seen, key=lambda k: self._seen[k][0])[: self.max_keys // 2]:
                del self._seen[k]


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler ``setup_logging`` installed, so a reload replaces it."""

    logfwd_owned = True


class _FileHandler(logging.handlers.WatchedFileHandler):
    logfwd_owned = True


def setup_logging(level: str, log_file: str | None, *, rate_limit: float = 10.0,
                  tracebacks: bool | None = None) -> logging.Handler:
    """Send the daemon's log to stderr, or to ``log_file`` (appended; reopened after logrotate moves it).

    ``level`` is Fluent Bit's ``log_level``. It applies to logfwd's own
    loggers; libraries only get through from ``warn`` up, so ``debug`` shows
    our debug lines, not every HTTP request a client library makes. Calling
    it again (hot reload) replaces the previous handler. Tracebacks are shown
    only at ``trace`` (``-vv``) unless ``tracebacks`` says otherwise: a supervisor's
    log gets one line per failure.
    """
    lvl = parse_level(level)
    handler: logging.Handler
    if log_file:
        handler = _FileHandler(log_file, encoding="utf-8")
    else:
        handler = _Handler(sys.stderr)
    if tracebacks is None:
        tracebacks = lvl < logging.DEBUG
    handler.setFormatter(FluentBitFormatter(tracebacks=tracebacks))
    handler.addFilter(RateLimitFilter(rate_limit))
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "logfwd_owned", False):
            root.removeHandler(h)
            h.close()
    root.addHandler(handler)
    root.setLevel(max(lvl, logging.WARNING))
    logging.getLogger("logfwd").setLevel(lvl)
    logging.captureWarnings(True)
    return handler
