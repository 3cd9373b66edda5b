"""tail end to end through the real ``logfwd`` CLI: kill -9, restart from the DB, graceful stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from tests.backends._proc import free_port
from tests.clikit import metrics, stop, wait_until
from tests.tailkit import LINE_RE, NumberedWriter

LOGFWD = [sys.executable, "-m", "logfwd"]


def config(tmp: Path, port: int, flush: float = 0.2) -> Path:
    conf = tmp / "logfwd.conf"
    conf.write_text(f"""[SERVICE]
    flush        {flush}
    grace        5
    http_server  on
    http_listen  127.0.0.1
    http_port    {port}

[INPUT]
    name         tail
    path         {tmp}/logs/*.log
    db           {tmp}/tail.db
    read_from_head on
    refresh_interval 1
    rotate_wait  1

[OUTPUT]
    name         file
    match        *
    path         {tmp}
    file         out.txt
""")
    return conf


def start(conf: Path, tmp: Path) -> subprocess.Popen[bytes]:
    log = open(tmp / "daemon.log", "ab")
    p = subprocess.Popen([*LOGFWD, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, cwd=Path(__file__).resolve().parent.parent)
    log.close()
    return p


def delivered(tmp: Path) -> Counter[tuple[str, int]]:
    c: Counter[tuple[str, int]] = Counter()
    out = tmp / "out.txt"
    if out.exists():
        for line in out.read_text(errors="replace").splitlines():
            m = LINE_RE.search(line)
            if m:
                c[(m.group(1), int(m.group(2)))] += 1
    return c


def test_kill9_then_restart_loses_nothing(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    w = NumberedWriter(tmp_path / "logs" / "app.log")
    w.write(20_000)
    port = free_port()
    conf = config(tmp_path, port)
    p = start(conf, tmp_path)
    try:
        wait_until(lambda: sum(delivered(tmp_path).values()) >= 5_000, 30, "first deliveries",
                   (p, tmp_path / "daemon.log"))
        w.write(5_000)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        w.write(5_000)  # written while the daemon is down
        os.rename(tmp_path / "logs" / "app.log", tmp_path / "logs" / "app.log.1")  # and rotated away
        w.write(1_000)
        p = start(conf, tmp_path)
        def complete() -> bool:
            got = delivered(tmp_path)
            return all(got[("L", i)] for i in range(w.next))

        wait_until(complete, 30, "every line", (p, tmp_path / "daemon.log"))
    finally:
        stop(p)
    got = delivered(tmp_path)
    missing = [i for i in range(w.next) if not got[("L", i)]]
    assert not missing
    dups = sum(v - 1 for v in got.values())
    assert dups <= 25_000  # at most what was in flight at the kill is read again


def test_graceful_restart_is_exactly_once(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    w = NumberedWriter(tmp_path / "logs" / "app.log")
    w.write(3_000)
    port = free_port()
    conf = config(tmp_path, port)
    p = start(conf, tmp_path)
    try:
        wait_until(lambda: sum(delivered(tmp_path).values()) >= 3_000, 30, "first run", (p, tmp_path / "daemon.log"))
        m = metrics(port)
        assert m["input"]["tail.0"]["files_watched"] == 1
    finally:
        stop(p)
    assert p.returncode == 0
    w.write(2_000)
    port = free_port()
    p = start(config(tmp_path, port), tmp_path)
    try:
        wait_until(lambda: sum(delivered(tmp_path).values()) >= 5_000, 30, "second run", (p, tmp_path / "daemon.log"))
        time.sleep(0.5)
    finally:
        stop(p)
    got = delivered(tmp_path)
    assert sorted(got) == [("L", i) for i in range(5_000)]
    assert set(got.values()) == {1}
