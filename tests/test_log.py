"""The daemon log: Fluent Bit's line format, levels, a log file, and the repeat limiter."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from logfwd.log import RateLimitFilter, parse_level, plugin_logger, setup_logging

LINE = re.compile(r"^\[(\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2})\] \[(error| warn| info|debug|trace)\] \[([^\]]+)\] (.*)$")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("logfwd").level)
    yield
    for h in list(root.handlers):
        if getattr(h, "logfwd_owned", False):
            root.removeHandler(h)
            h.close()
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    logging.getLogger("logfwd").setLevel(saved[2])


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_fluent_bit_line_format_to_a_file(tmp_path: Path) -> None:
    log_file = tmp_path / "logfwd.log"
    setup_logging("info", str(log_file))
    plugin_logger("input", "tail", "tail.0").info("inotify_fs_add(): inode=%d name=%s", 42, "/var/log/a.log")
    plugin_logger("output", "es", "es_main").warning("HTTP status=%d", 429)
    logging.getLogger("logfwd.engine").error("cannot flush chunk")
    logging.getLogger("logfwd.engine").debug("not shown at info")
    got = lines(log_file)
    assert len(got) == 3
    parsed = [LINE.match(x) for x in got]
    assert all(parsed), got
    assert [(m.group(2), m.group(3), m.group(4)) for m in parsed if m] == [
        (" info", "input:tail:tail.0", "inotify_fs_add(): inode=42 name=/var/log/a.log"),
        (" warn", "output:es:es_main", "HTTP status=429"),
        ("error", "engine", "cannot flush chunk"),
    ]


def test_one_line_per_event_even_with_newlines_and_exceptions(tmp_path: Path) -> None:
    log_file = tmp_path / "l.log"
    setup_logging("info", str(log_file))
    log = plugin_logger("output", "kafka", "kafka.0")
    log.error("broker said:\n%s", "line1\nline2")
    try:
        raise ConnectionError("refused")
    except ConnectionError:
        log.exception("cannot connect")
    got = lines(log_file)
    assert len(got) == 2
    assert got[0].endswith("broker said:\\nline1\\nline2")
    assert got[1].endswith("[output:kafka:kafka.0] cannot connect: ConnectionError: refused")


def test_levels_and_trace(tmp_path: Path) -> None:
    log_file = tmp_path / "l.log"
    setup_logging("trace", str(log_file))
    log = logging.getLogger("logfwd.engine")
    log.log(5, "trace line")
    log.debug("debug line")
    logging.getLogger("some.library").info("library chatter is not shown")
    logging.getLogger("some.library").warning("library warning is shown")
    assert [LINE.match(x).group(2) for x in lines(log_file)] == ["trace", "debug", " warn"]  # type: ignore[union-attr]

    off = tmp_path / "off.log"
    setup_logging("off", str(off))
    log.error("silenced")
    assert off.read_text() == ""
    # The earlier handler was replaced, not kept alongside.
    assert len(lines(log_file)) == 3
    with pytest.raises(ValueError, match="expected one of"):
        parse_level("verbose")


def test_stderr_by_default() -> None:
    code = (
        "from logfwd.log import setup_logging, plugin_logger\n"
        "setup_logging('warn', None)\n"
        "plugin_logger('filter', 'grep', 'grep.0').info('hidden')\n"
        "plugin_logger('filter', 'grep', 'grep.0').warning('visible %s', 1)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout == ""
    err = proc.stderr.splitlines()
    assert len(err) == 1 and err[0].endswith("[ warn] [filter:grep:grep.0] visible 1")


def test_rate_limiter_counts_repeats(tmp_path: Path) -> None:
    now = [0.0]
    log_file = tmp_path / "l.log"
    handler = setup_logging("info", str(log_file))
    for f in list(handler.filters):
        handler.removeFilter(f)
    handler.addFilter(RateLimitFilter(interval=5.0, clock=lambda: now[0]))
    log = plugin_logger("output", "es", "es.0")
    for i in range(100):
        log.error("bulk request failed: %s", f"status {500 + i % 3}")
        log.info("info is not limited %d", i % 2)
    log.error("a different error")
    now[0] = 4.9
    log.error("bulk request failed: %s", "status 503")
    now[0] = 5.0
    log.error("bulk request failed: %s", "status 504")
    log.error("bulk request failed: %s", "status 505")
    now[0] = 11.0
    log.error("bulk request failed: %s", "status 506")
    errors = [x for x in lines(log_file) if "[error]" in x]
    assert [e.split("] ", 3)[3] for e in errors] == [
        "bulk request failed: status 500",
        "a different error",
        "bulk request failed: status 504 (repeated 100 times)",
        "bulk request failed: status 506 (repeated 1 times)",
    ]
    assert sum("[ info]" in x for x in lines(log_file)) == 100


def test_rate_limiter_is_installed_by_default(tmp_path: Path) -> None:
    log_file = tmp_path / "l.log"
    setup_logging("info", str(log_file))
    log = plugin_logger("input", "tail", "tail.0")
    for _ in range(1000):
        log.warning("cannot read %s", "/var/log/x")
    assert len(lines(log_file)) == 1


def test_rate_limiter_bounded_memory() -> None:
    f = RateLimitFilter(interval=1.0, max_keys=100, clock=lambda: 0.0)
    for i in range(1000):
        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, f"unique message {i}", None, None)
        assert f.filter(rec)
    assert len(f._seen) <= 100
