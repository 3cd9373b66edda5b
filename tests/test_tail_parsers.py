"""tail with parsers and multiline parsers (the shipped parsers file, the built-in multiline ones)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from logfwd.config import default_parsers
from tests.tailkit import Collector, Harness, run_tail

GEN = Path(__file__).resolve().parents[1] / "bench" / "gen.py"


def gen(kind: str, n: int, path: Path) -> None:
    subprocess.run([sys.executable, str(GEN), kind, str(n), str(path)], check=True)


@pytest.mark.parametrize(("kind", "parser", "field"), [
    ("docker", "docker", "stream"),
    ("apache", "apache2", "code"),
    ("syslog", "syslog-rfc3164", "ident"),
])
def test_parser(tmp_path: Path, kind: str, parser: str, field: str) -> None:
    log = tmp_path / f"{kind}.log"
    gen(kind, 3000, log)

    async def scenario(h: Harness) -> None:
        await h.wait_for(lambda: h.finished, 20, "Exit_On_Eof")

    h = run_tail({"Path": str(log), "Read_from_Head": "on", "Exit_On_Eof": "on", "Parser": parser}, scenario)
    recs = h.collector.records
    assert len(recs) == 3000
    assert sum(1 for r in recs if field in r) == 3000, recs[:2]
    assert h.metrics.get("parse_errors", 0) == 0
    times = [t for b in h.collector.batches for t in b.times]
    assert max(times) < time.time_ns() - 86400 * 10**9  # times come from the lines (March 2026), not "now"


def _docker(log: str, stream: str = "stdout", t: str = "2026-03-14T09:26:53.123456789Z") -> bytes:
    return json.dumps({"log": log, "stream": stream, "time": t}).encode() + b"\n"


def test_multiline_docker_cri_joins_split_lines(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    log.write_bytes(
        _docker("first part, ") + _docker("second part\n")
        + _docker("whole line\n", "stderr")
        + b"2026-03-14T09:26:53.1Z stdout P cri one, \n2026-03-14T09:26:53.2Z stdout F cri two\n"
    )

    async def scenario(h: Harness) -> None:
        await h.wait_count(3)
        await trio.sleep(0.3)

    h = run_tail({"Path": str(log), "Read_from_Head": "on", "multiline.parser": "docker, cri"}, scenario)
    logs = [r["log"] for r in h.collector.records]
    assert logs == ["first part, second part\n", "whole line\n", "cri one, cri two"]


def test_multiline_held_record_is_not_checkpointed_then_flushed_on_timeout(tmp_path: Path) -> None:
    log, db = tmp_path / "j.log", tmp_path / "tail.db"
    reg = default_parsers()
    reg.add_multiline({"name": "stack", "type": "regex", "flush_timeout": 2500,
                       "rule": [("start_state", "/^ERROR/", "cont"), ("cont", "/^\\s+at /", "cont")]})
    log.write_bytes(b"INFO a\nERROR boom\n  at x.y(Z.java:1)\n  at x.z(Z.java:2)\n")
    held_from = len(b"INFO a\n")
    opts = {"Path": str(log), "Read_from_Head": "on", "multiline.parser": "stack", "DB": str(db)}

    async def scenario(h: Harness) -> None:
        await h.wait_count(1)
        await trio.sleep(0.2)
        assert h.collector.count() == 1  # the stack trace may continue: held
        await trio.sleep(1.2)  # DB flush while the record is held
        con = sqlite3.connect(db)
        assert con.execute("SELECT offset FROM in_tail_files").fetchone()[0] == held_from
        con.close()
        await h.wait_count(2, timeout=5)  # flush_timeout emits it

    h = run_tail(opts, scenario, parsers=reg, collector=Collector())
    recs = h.collector.records
    # Raw text lines through a multiline parser without key_content come out of Fluent
    # Bit ending with "\n" (flb_ml.c breakline_prepare; fluent-bit issues #8914, #9660).
    assert recs[0]["log"] == "INFO a\n"
    assert recs[1]["log"] == "ERROR boom\n  at x.y(Z.java:1)\n  at x.z(Z.java:2)\n"
