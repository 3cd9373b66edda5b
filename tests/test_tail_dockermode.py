"""tail's ``Docker_Mode`` with ``Docker_Mode_Parser``: whole json-file lines joined by a first-line parser.

The stream is tested on its own (joining, pieces inside a joined record, lines before any
first line, a line that is no Docker JSON, the buffer limit, the timeout, the offset it lets
tail commit), then through the tail plugin on a real file with a DB, then through the real
CLI with a classic Fluent Bit config; when a ``fluent-bit`` binary is on PATH the same file
and config go through it too and the records must be the same.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from logfwd.config import default_parsers
from logfwd.plugin import ConfigValueError
from logfwd.plugins.in_tail.dockermode import DockerFirstline
from tests.tailkit import Collector, Harness, run_tail

from .clikit import LOGFWD, wait_until

# Fluent Bit's own documented style: the rule runs on the raw JSON line, '{' unescaped.
FIRSTLINE = r'(?<log>^{"log":"\d{4}-\d{2}-\d{2}.*)'


def _doc(log: str, sec: int, stream: str = "stdout") -> bytes:
    return json.dumps({"log": log, "stream": stream, "time": f"2026-12-06T10:00:{sec:02d}.000000001Z"},
                      separators=(",", ":")).encode() + b"\n"


LOG = b"".join([
    _doc("booting\n", 0),  # no first line seen yet: a record of its own
    _doc("loading config\n", 1),
    _doc("2026-12-06 10:00:02 ERROR request failed\n", 2),
    _doc("java.lang.IllegalStateException: boom\n", 3),
    _doc("    at a.b.C.run(C.java:10)\n", 4, "stderr"),
    _doc("    at a.b.D.", 5),  # a 16 KiB piece: the record stays open whatever follows
    _doc("call(D.java:3)\n", 6),
    _doc("2026-12-06 10:00:07 INFO next\n", 7),
])
JOINED = ("2026-12-06 10:00:02 ERROR request failed\njava.lang.IllegalStateException: boom\n"
          "    at a.b.C.run(C.java:10)\n    at a.b.D.call(D.java:3)\n")


def _registry() -> Any:
    reg = default_parsers()
    reg.add_parser({"name": "dockerfirst", "format": "regex", "regex": FIRSTLINE})
    return reg


def _lines(data: bytes) -> tuple[list[bytes], list[int]]:
    lines, ends, pos = [], [], 0
    for raw in data.splitlines(keepends=True):
        pos += len(raw)
        lines.append(raw.rstrip(b"\n"))
        ends.append(pos)
    return lines, ends


def _mode(parser: str | None = "docker", timeout: float = 4) -> DockerFirstline:
    reg = _registry()
    return DockerFirstline(reg.get("dockerfirst"), reg.get(parser) if parser else None, "log", timeout)


def test_whole_lines_join_until_the_next_first_line_and_take_the_last_lines_fields() -> None:
    stream = _mode().stream()
    lines, ends = _lines(LOG)
    times, recs, offs = stream.feed_lines([1] * len(lines), lines, ends)
    assert [r["log"] for r in recs] == ["booting\n", "loading config\n", JOINED]
    # Fluent Bit's flush keeps the last line's JSON and replaces its log: its stream and time.
    assert recs[2]["stream"] == "stdout" and times[2] == 1_796_551_206 * 10**9 + 1
    assert offs == [ends[0], ends[1], ends[6]]
    # "next" is held: tail may commit only up to where its line starts.
    assert stream.safe_offset == ends[6] and stream.pending_since is not None
    _, rest, offs = stream.flush()
    assert [r["log"] for r in rest] == ["2026-12-06 10:00:07 INFO next\n"] and offs == [ends[7]]
    assert stream.safe_offset == ends[7] and stream.pending_since is None
    assert stream.unparsed == 0


def test_without_parser_the_record_is_the_joined_json_under_key() -> None:
    stream = _mode(parser=None).stream()
    lines, ends = _lines(LOG)
    times, recs, _ = stream.feed_lines([5] * len(lines), lines, ends)
    assert times == [5, 5, 5]  # the read time: nothing parsed one
    assert json.loads(recs[2]["log"]) == {"log": JOINED, "stream": "stdout", "time": "2026-12-06T10:00:06.000000001Z"}


def test_a_line_that_is_no_docker_json_ends_the_record_and_is_read_as_a_line() -> None:
    stream = _mode().stream()
    data = _doc("2026-12-06 10:00:00 ERROR x\n", 0) + _doc("  detail\n", 1) + b"plain text, not json\n"
    lines, ends = _lines(data)
    _, recs, offs = stream.feed_lines([9] * 3, lines, ends)
    assert [r["log"] for r in recs] == ["2026-12-06 10:00:00 ERROR x\n  detail\n", "plain text, not json"]
    assert offs == [ends[1], ends[2]] and stream.unparsed == 1  # the Parser (docker) did not take it


def test_a_record_past_the_buffer_limit_is_emitted() -> None:
    stream = _mode().stream(buffer_limit=300)  # lines of 97 and 130 bytes
    data = _doc("2026-12-06 10:00:00 ERROR x\n", 0) + b"".join(_doc("y" * 60 + "\n", i) for i in range(1, 4))
    lines, ends = _lines(data)
    _, recs, _ = stream.feed_lines([1] * 4, lines, ends)
    assert len(recs) == 1 and recs[0]["log"].count("y" * 60) == 2
    assert stream.flush()[1][0]["log"] == "y" * 60 + "\n"  # the next line started a new one


def test_the_flush_timeout_counts_from_the_last_line() -> None:
    stream = _mode(timeout=1).stream()
    lines, ends = _lines(_doc("2026-12-06 10:00:00 ERROR x\n", 0))
    stream.feed_lines([1], lines, ends)
    assert stream.flush_expired(time.monotonic())[1] == []  # not yet a second since its last line
    assert stream.flush_expired(time.monotonic() + 1.01)[1][0]["log"] == "2026-12-06 10:00:00 ERROR x\n"


def test_config(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = str(tmp_path / "*.log")
    with pytest.raises(ConfigValueError, match="unknown parser 'nope'"):
        Harness({"Path": path, "Docker_Mode": "on", "Docker_Mode_Parser": "nope"}, parsers=_registry())
    h = Harness({"Path": path, "Docker_Mode": "on", "Docker_Mode_Parser": "dockerfirst", "Parser": "docker",
                 "Docker_Mode_Flush": "7"}, parsers=_registry())
    ml = h.plugin.cfg.ml
    assert isinstance(ml, DockerFirstline) and ml.flush_timeout == 7.0 and h.plugin.cfg.ml_timeout == 7.0
    assert ml.parser.name == "docker" and ml.firstline.name == "dockerfirst"
    with caplog.at_level(logging.WARNING):
        h = Harness({"Path": path, "Docker_Mode_Parser": "dockerfirst"}, parsers=_registry())
    assert h.plugin.cfg.ml is None and "Docker_Mode_Parser has no effect without Docker_Mode" in caplog.text


def test_through_tail_a_held_record_is_not_committed_until_emitted(tmp_path: Path) -> None:
    log, db = tmp_path / "app.log", tmp_path / "tail.db"
    log.write_bytes(LOG)
    opts = {"Path": str(log), "Read_from_Head": "on", "DB": str(db), "Docker_Mode": "on",
            "Docker_Mode_Parser": "dockerfirst", "Parser": "docker", "Docker_Mode_Flush": "2"}
    held_from = LOG.index(_doc("2026-12-06 10:00:07 INFO next\n", 7))

    async def scenario(h: Harness) -> None:
        await h.wait_count(3)
        await trio.sleep(1.2)  # a DB flush happens while "next" is held
        assert h.collector.count() == 3
        con = sqlite3.connect(db)
        assert con.execute("SELECT offset FROM in_tail_files").fetchone()[0] == held_from
        con.close()
        await h.wait_count(4, timeout=6)  # Docker_Mode_Flush emits it

    h = run_tail(opts, scenario, parsers=_registry(), collector=Collector())
    assert [r["log"] for r in h.collector.records] == ["booting\n", "loading config\n", JOINED,
                                                       "2026-12-06 10:00:07 INFO next\n"]


CLASSIC = """[SERVICE]
    Flush        1
    Grace        1
    Parsers_File {parsers}

[INPUT]
    Name               tail
    Path               {log}
    Read_From_Head     On
    Parser             docker
    Docker_Mode        On
    Docker_Mode_Parser dockerfirst
    Docker_Mode_Flush  1

[OUTPUT]
    Name   file
    Match  *
    Path   {d}
    File   out.jsonl
    Format plain
"""
# Our own parsers file carries the docker parser Fluent Bit ships, so both read the same one.
PARSERS = f"""[PARSER]
    Name        dockerfirst
    Format      regex
    Regex       {FIRSTLINE}

[PARSER]
    Name        docker
    Format      json
    Time_Key    time
    Time_Format %Y-%m-%dT%H:%M:%S.%L%z
    Time_Keep   On
"""


def _fluent_bit_style_run(tmp_path: Path, argv0: list[str], name: str, expect: int) -> list[dict[str, Any]]:
    """Run a forwarder on the classic config until ``expect`` records are out (it has no EOF exit
    that waits for Docker_Mode_Flush), then stop it with SIGTERM."""
    d = tmp_path / name
    d.mkdir()
    (d / "parsers.conf").write_text(PARSERS)
    log = d / "app.log"
    log.write_bytes(LOG)
    conf = d / "tail.conf"
    conf.write_text(CLASSIC.format(parsers=d / "parsers.conf", log=log, d=d))
    out = d / "out.jsonl"
    proc = subprocess.Popen([*argv0, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: out.exists() and out.read_bytes().count(b"\n") >= expect, 30, f"{expect} records out",
                   proc)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def test_a_fluent_bit_config_with_docker_mode_parser_runs_through_the_cli(tmp_path: Path) -> None:
    recs = _fluent_bit_style_run(tmp_path, [LOGFWD], "logfwd", 4)
    assert [r["log"] for r in recs] == ["booting\n", "loading config\n", JOINED, "2026-12-06 10:00:07 INFO next\n"]
    assert recs[2]["time"] == "2026-12-06T10:00:06.000000001Z"


@pytest.mark.skipif(shutil.which("fluent-bit") is None, reason="fluent-bit is not on PATH")
def test_same_records_as_fluent_bit(tmp_path: Path) -> None:
    ours = _fluent_bit_style_run(tmp_path, [LOGFWD], "logfwd", 4)
    theirs = _fluent_bit_style_run(tmp_path, [str(shutil.which("fluent-bit"))], "fb", 4)
    assert ours == theirs
