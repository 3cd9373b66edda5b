"""Hot reload through the real process: SIGHUP or ``POST /api/v2/reload`` with ``hot_reload on``.

What a systemd ``ExecReload=kill -HUP $MAINPID`` or an operator's ``curl -X POST`` relies
on: a valid new config takes over without a new process and without losing what the old
pipeline held; an invalid one is refused and the running pipeline carries on; without
``hot_reload`` the signal is ignored rather than killing the daemon (SIGHUP's default
action). Every wait is for a condition (records counted by the daemon's own metrics, a
line in its log), never for a fixed time.
"""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.backends._proc import free_port
from tests.clikit import LOGFWD, wait_until


def _conf(out: Path, tag: str, port: int, hot_reload: str = "on", flush: str = "0.2") -> str:
    return f"""
[SERVICE]
    Flush       {flush}
    Grace       5
    Hot_Reload  {hot_reload}
    HTTP_Server On
    HTTP_Listen 127.0.0.1
    HTTP_Port   {port}

[INPUT]
    Name   dummy
    Tag    {tag}
    Rate   20
    Dummy  {{"tag": "{tag}"}}

[OUTPUT]
    Name   file
    Match  *
    Path   {out.parent}
    File   {out.name}
    Format plain
"""


def _lines(path: Path) -> list[dict[str, str]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


class Daemon:
    """The real daemon, its stderr collected in a file we can read while it runs."""

    def __init__(self, conf: Path, port: int) -> None:
        self.port = port
        self.log_path = conf.with_suffix(".log")
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([LOGFWD, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=self._log)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, check: Callable[[], object], timeout: float, what: str) -> None:
        """``wait_until`` on this daemon: a daemon that exits (a reload that killed it) fails the wait at once."""
        wait_until(check, timeout, what, (self.proc, self.log_path))

    def http(self, path: str, method: str = "GET") -> tuple[int, dict[str, object]]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method, data=b"" if
                                     method != "GET" else None)
        try:
            with urllib.request.urlopen(req, timeout=20) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def records_in(self) -> int:
        try:
            _, m = self.http("/api/v1/metrics")
        except OSError:
            return 0
        return int(sum(v.get("records", 0) for v in m.get("input", {}).values()))  # type: ignore[union-attr]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        self._log.close()
        return self.proc.returncode


def test_sighup_reloads_a_valid_config_and_refuses_an_invalid_one(tmp_path: Path) -> None:
    out_a, out_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    conf = tmp_path / "logfwd.conf"
    port = free_port()
    conf.write_text(_conf(out_a, "first", port, flush="30"))
    d = Daemon(conf, port)
    try:
        # Flush 30 keeps records buffered: the reload must flush them, not drop them.
        d.wait(lambda: d.records_in() >= 20, 30, "20 records read by the first pipeline")
        assert not out_a.exists()
        conf.write_text(_conf(out_b, "second", port))
        d.proc.send_signal(signal.SIGHUP)
        d.wait(lambda: len(_lines(out_b)) >= 5, 30, "records from the reloaded pipeline")
        assert d.proc.poll() is None
        first = _lines(out_a)
        assert len(first) >= 20 and all(r["tag"] == "first" for r in first)  # flushed at the reload
        assert all(r["tag"] == "second" for r in _lines(out_b))
        assert d.http("/api/v2/reload") == (200, {"hot_reload_count": 1})

        conf.write_text(_conf(out_a, "third", port).replace("Name   file", "Name   fiel"))
        d.proc.send_signal(signal.SIGHUP)
        d.wait(lambda: "reload (SIGHUP) refused" in d.log(), 30, "the refusal in the log")
        n_b = len(_lines(out_b))
        d.wait(lambda: len(_lines(out_b)) > n_b + 3, 30, "the running pipeline carrying on")
        assert d.proc.poll() is None
    finally:
        rc = d.stop()
    log = d.log()
    assert rc == 0, log
    assert "reload (SIGHUP): configuration valid" in log and "fiel" in log


def test_post_reload_adds_an_output_without_loss(tmp_path: Path) -> None:
    """``POST /api/v2/reload``: a valid config with a second output takes over; a broken one answers 400."""
    out_a, out_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    conf = tmp_path / "logfwd.conf"
    port = free_port()
    body = _conf(out_a, "x", port)
    conf.write_text(body)
    d = Daemon(conf, port)
    try:
        d.wait(lambda: len(_lines(out_a)) >= 5, 30, "records before the reload")
        second = f"\n[OUTPUT]\n    Name   file\n    Match  *\n    Path   {out_b.parent}\n    File   {out_b.name}\n" \
                 "    Format plain\n"
        conf.write_text(body + second)
        assert d.http("/api/v2/reload", "POST") == (200, {"reload": "done", "status": 0})
        d.wait(lambda: len(_lines(out_b)) >= 5, 30, "records in the added output")
        conf.write_text(body.replace("Rate   20", "Rate   twenty"))
        status, answer = d.http("/api/v2/reload", "POST")
        assert status == 400 and answer["reload"] == "failed" and "twenty" in str(answer["error"])
        assert d.http("/api/v2/reload") == (200, {"hot_reload_count": 1})
    finally:
        rc = d.stop()
    assert rc == 0, d.log()
    # the first output kept receiving across the reload, and the second got only the new pipeline's
    a, b = _lines(out_a), _lines(out_b)
    assert len(a) > len(b) >= 5


def test_post_reload_without_hot_reload_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "a.jsonl"
    conf = tmp_path / "logfwd.conf"
    port = free_port()
    conf.write_text(_conf(out, "only", port, hot_reload="off"))
    d = Daemon(conf, port)
    try:
        d.wait(lambda: len(_lines(out)) >= 3, 30, "records")
        assert d.http("/api/v2/reload", "POST") == (400, {"reload": "not enabled", "status": -1})
    finally:
        assert d.stop() == 0


def test_sighup_without_hot_reload_is_ignored(tmp_path: Path) -> None:
    out = tmp_path / "a.jsonl"
    conf = tmp_path / "logfwd.conf"
    port = free_port()
    conf.write_text(_conf(out, "only", port, hot_reload="off"))
    d = Daemon(conf, port)
    try:
        d.wait(lambda: len(_lines(out)) >= 3, 30, "records")
        d.proc.send_signal(signal.SIGHUP)
        d.wait(lambda: "SIGHUP: ignored" in d.log(), 30, "the log line")
        n = len(_lines(out))
        d.wait(lambda: len(_lines(out)) > n, 30, "records after the SIGHUP")
        assert d.proc.poll() is None
    finally:
        assert d.stop() == 0
