"""tail's old multiline mode (``Multiline On``, ``Parser_Firstline``, ``Parser_N``, ``Multiline_Flush``)
and ``Docker_Mode_Flush``: Fluent Bit configs that use them load and join lines as Fluent Bit does.

The stream is tested on its own (first line, Parser_N merge, raw append, the offset it lets
tail commit), then through the tail plugin on real files (flush timeout, restart with a DB
while a record is held), then through the real CLI with a classic Fluent Bit config. When a
``fluent-bit`` binary is on PATH the same file and config go through it too, and the records
must be the same.
"""

from __future__ import annotations

import json
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
from logfwd.plugins.in_tail.multiline_legacy import LegacyMultiline
from tests.tailkit import Collector, Harness, run_tail

from .clikit import LOGFWD

FIRST = r"^(?<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (?<level>[A-Z]+) (?<message>.*)$"
CAUSE = r"^Caused by: (?<cause>.*)$"
LOG = (b"2026-12-05 10:00:00 INFO started\n"
       b"2026-12-05 10:00:01 ERROR request failed\n"
       b"java.lang.IllegalStateException: boom\n"
       b"    at a.b.C.run(C.java:10)\n"
       b"Caused by: java.io.IOException: disk\n"
       b"    at d.e.F.read(F.java:3)\n"
       b"2026-12-05 10:00:02 INFO next\n")


def _registry() -> Any:
    reg = default_parsers()
    reg.add_parser({"name": "first", "format": "regex", "regex": FIRST, "time_key": "time",
                    "time_format": "%Y-%m-%d %H:%M:%S"})
    reg.add_parser({"name": "cause", "format": "regex", "regex": CAUSE})
    return reg


def _lines(data: bytes) -> tuple[list[bytes], list[int]]:
    lines, ends, pos = [], [], 0
    for raw in data.splitlines(keepends=True):
        pos += len(raw)
        lines.append(raw.rstrip(b"\n"))
        ends.append(pos)
    return lines, ends


def test_first_line_starts_a_record_parser_n_merges_and_plain_lines_append() -> None:
    reg = _registry()
    stream = LegacyMultiline(reg.get("first"), [reg.get("cause")], 4, "log").stream()
    lines, ends = _lines(LOG)
    times, recs, offs = stream.feed_lines([1] * len(lines), lines, ends)
    assert [r["message"].split("\n")[0] for r in recs] == ["started", "request failed"]
    second = recs[1]
    # Plain lines join the last text field; Parser_1's fields are added, and the lines after
    # it join its last field, as Fluent Bit's flush does.
    assert second["message"] == "request failed\njava.lang.IllegalStateException: boom\n    at a.b.C.run(C.java:10)"
    assert second["cause"] == "java.io.IOException: disk\n    at d.e.F.read(F.java:3)"
    assert times[1] == 1_796_464_801 * 10**9  # the first line's own time, not the read time
    assert offs == [ends[0], ends[5]]
    # "next" is held: tail may commit only up to where its first line starts.
    assert stream.safe_offset == ends[5] and stream.pending_since is not None
    _, rest, _ = stream.flush()
    assert [r["message"] for r in rest] == ["next"] and stream.safe_offset == ends[6]


def test_lines_before_any_first_line_are_records_of_their_own() -> None:
    reg = _registry()
    stream = LegacyMultiline(reg.get("first"), [reg.get("cause")], 4, "log").stream()
    lines, ends = _lines(b"orphan text\nCaused by: early\n2026-12-05 10:00:00 INFO a\n")
    _, recs, _ = stream.feed_lines([7] * 3, lines, ends)
    # Fluent Bit drops a Parser_N match with no record being built; nothing is dropped here.
    assert recs == [{"log": "orphan text"}, {"cause": "early"}]


def test_a_record_past_the_buffer_limit_is_emitted() -> None:
    reg = _registry()
    stream = LegacyMultiline(reg.get("first"), [], 4, "log").stream(buffer_limit=100)
    data = b"2026-12-05 10:00:00 INFO a\n" + b"x" * 60 + b"\n" + b"y" * 60 + b"\nz\n"
    lines, ends = _lines(data)
    _, recs, _ = stream.feed_lines([1] * len(lines), lines, ends)
    assert len(recs) == 2 and recs[0]["message"].endswith("x" * 60 + "\n" + "y" * 60)
    assert recs[1] == {"log": "z"}  # the next line no longer joins it
    assert stream.flush()[1] == []


def test_config_needs_parser_firstline_and_known_parsers(tmp_path: Path) -> None:
    path = str(tmp_path / "*.log")
    with pytest.raises(ConfigValueError, match="Parser_Firstline"):
        Harness({"Path": path, "Multiline": "on"}, parsers=_registry())
    with pytest.raises(ConfigValueError, match="unknown parser 'nope'"):
        Harness({"Path": path, "Multiline": "on", "Parser_Firstline": "first", "Parser_1": "nope"},
                parsers=_registry())
    h = Harness({"Path": path, "Multiline": "on", "Parser_Firstline": "first", "Parser_2": "cause",
                 "Parser_1": "json", "Multiline_Flush": "7"}, parsers=_registry())
    ml = h.plugin.cfg.ml
    assert isinstance(ml, LegacyMultiline) and ml.flush_timeout == 7.0
    assert [p.name for p in ml.continuations] == ["cause", "json"]  # the order written


def test_multiline_flush_emits_a_held_record_and_the_offset_waits_for_it(tmp_path: Path) -> None:
    log, db = tmp_path / "app.log", tmp_path / "tail.db"
    log.write_bytes(LOG)
    opts = {"Path": str(log), "Read_from_Head": "on", "DB": str(db), "Multiline": "on",
            "Parser_Firstline": "first", "Parser_1": "cause", "Multiline_Flush": "2"}
    held_from = LOG.index(b"2026-12-05 10:00:02")

    async def scenario(h: Harness) -> None:
        await h.wait_count(2)
        await trio.sleep(1.2)  # a DB flush happens while "next" is held
        assert h.collector.count() == 2
        con = sqlite3.connect(db)
        assert con.execute("SELECT offset FROM in_tail_files").fetchone()[0] == held_from
        con.close()
        await h.wait_count(3, timeout=6)  # Multiline_Flush emits it

    h = run_tail(opts, scenario, parsers=_registry(), collector=Collector())
    assert [r["message"].split("\n")[0] for r in h.collector.records] == ["started", "request failed", "next"]


def test_a_record_held_at_shutdown_is_read_again_whole_after_a_restart(tmp_path: Path) -> None:
    """A record held when the daemon stops was never acknowledged: the restart reads it again, whole."""
    log, db = tmp_path / "app.log", tmp_path / "tail.db"
    log.write_bytes(LOG[: LOG.index(b"Caused by")])
    opts = {"Path": str(log), "Read_from_Head": "on", "DB": str(db), "Multiline": "on",
            "Parser_Firstline": "first", "Parser_1": "cause", "Multiline_Flush": "60"}

    async def first(h: Harness) -> None:
        await h.wait_count(1)
        await trio.sleep(0.3)

    h1 = run_tail(opts, first, parsers=_registry(), collector=Collector())
    assert [r["message"] for r in h1.collector.records] == ["started"]  # the ERROR record is still held
    with log.open("ab") as f:
        f.write(LOG[LOG.index(b"Caused by"):])

    async def second(h: Harness) -> None:
        await h.wait_count(1)
        await trio.sleep(0.3)

    h2 = run_tail(opts, second, parsers=_registry(), collector=Collector())
    rec = h2.collector.records[0]
    assert rec["message"].startswith("request failed\njava.lang.IllegalStateException") and "cause" in rec


def test_docker_mode_flush_sets_the_join_timeout(tmp_path: Path) -> None:
    h = Harness({"Path": str(tmp_path / "*.log"), "Docker_Mode": "on", "Docker_Mode_Flush": "9"})
    assert h.plugin.cfg.ml_timeout == 9.0


CLASSIC = """[SERVICE]
    Flush        1
    Grace        1
    Parsers_File {parsers}

[INPUT]
    Name             tail
    Path             {log}
    Read_From_Head   On
    Exit_On_Eof      On
    Multiline        On
    Parser_Firstline first
    Parser_1         cause
    Multiline_Flush  2

[OUTPUT]
    Name   {out}
    Match  *
    {extra}
"""
PARSERS = f"""[PARSER]
    Name        first
    Format      regex
    Regex       {FIRST}
    Time_Key    time
    Time_Format %Y-%m-%d %H:%M:%S

[PARSER]
    Name   cause
    Format regex
    Regex  {CAUSE}
"""


def _fluent_bit_style_run(tmp_path: Path, argv0: list[str], name: str, out: str, extra: str) -> list[dict[str, Any]]:
    d = tmp_path / name
    d.mkdir()
    (d / "parsers.conf").write_text(PARSERS)
    log = d / "app.log"
    log.write_bytes(LOG)
    conf = d / "tail.conf"
    conf.write_text(CLASSIC.format(parsers=d / "parsers.conf", log=log, out=out, extra=extra.format(d=d)))
    proc = subprocess.run([*argv0, "-c", str(conf)], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return [json.loads(line) for line in (d / "out.jsonl").read_text().splitlines() if line.strip()]


def test_a_fluent_bit_config_with_the_old_mode_runs_through_the_cli(tmp_path: Path) -> None:
    recs = _fluent_bit_style_run(tmp_path, [LOGFWD], "logfwd", "file",
                                 "Path {d}\n    File out.jsonl\n    Format plain")
    assert [r["message"].split("\n")[0] for r in recs] == ["started", "request failed", "next"]
    assert recs[1]["cause"].startswith("java.io.IOException: disk\n")


@pytest.mark.skipif(shutil.which("fluent-bit") is None, reason="fluent-bit is not on PATH")
def test_same_records_as_fluent_bit(tmp_path: Path) -> None:
    ours = _fluent_bit_style_run(tmp_path, [LOGFWD], "logfwd", "file",
                                 "Path {d}\n    File out.jsonl\n    Format plain")
    theirs = _fluent_bit_style_run(tmp_path, [str(shutil.which("fluent-bit"))], "fb", "file",
                                   "Path {d}\n    File out.jsonl\n    Format plain")

    def strip(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k not in ("date", "@timestamp")} for r in recs]

    assert strip(ours) == strip(theirs)


def test_the_stream_times_its_records_from_its_first_line() -> None:
    reg = _registry()
    stream = LegacyMultiline(reg.get("first"), [], 1, "log").stream()
    lines, ends = _lines(b"2026-12-05 10:00:00 INFO a\n")
    stream.feed_lines([5], lines, ends)
    assert stream.flush_expired(time.monotonic())[1] == []  # not yet a second old
    assert stream.flush_expired(time.monotonic() + 1.01)[1][0]["message"] == "a"
