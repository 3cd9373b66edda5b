"""End to end: the real ``logfwd`` process, its config files, signals and HTTP endpoints."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from .backends._proc import free_port
from .clikit import DaemonExited, file_lines, json_lines, run_until, stop, wait_until, wait_until_async
from .e2ekit import Logfwd

LOGFWD = str(Path(sys.executable).parent / "logfwd")
DATA = Path(__file__).parent / "data" / "e2e"


def run_logfwd(*args: str, env: dict[str, str] | None = None, timeout: float = 60,
               input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([LOGFWD, *args], capture_output=True, timeout=timeout, env={**os.environ, **(env or {})},
                          input=input)


def http_get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.mark.parametrize("cfg", ["pipeline.conf", "pipeline.yaml"])
def test_config_pipeline_yields_expected_records(cfg: str, tmp_path: Path) -> None:
    env = {"OUT_DIR": str(tmp_path), "LOGFWD_TEST_ENV": "staging"}
    # 5 to the file and 5 to stdout (grep drops the other input): then SIGTERM, as a user stops the daemon
    p = run_until(["-c", str(DATA / cfg)], lambda out: file_lines(tmp_path / "out.jsonl", 5)(out)
                  and json_lines(5)(out), env=env)
    assert p.returncode == 0, p.stderr.decode()
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert lines == [{"level": "info", "env": "staging", "msg": "hello world"}] * 5
    # stdout (json_lines) sees the same five records, with a date key
    out = [json.loads(x) for x in p.stdout.decode().splitlines() if x.startswith("{")]
    assert len(out) == 5 and all(o["msg"] == "hello world" and "date" in o for o in out)


def test_classic_and_yaml_agree(tmp_path: Path) -> None:
    outs = []
    for cfg in ("pipeline.conf", "pipeline.yaml"):
        d = tmp_path / cfg
        d.mkdir()
        p = run_until(["-c", str(DATA / cfg)], file_lines(d / "out.jsonl", 5),
                      env={"OUT_DIR": str(d), "LOGFWD_TEST_ENV": "x"})
        assert p.returncode == 0, p.stderr.decode()
        outs.append((d / "out.jsonl").read_text())
    assert outs[0] == outs[1] and outs[0]


def test_misspelled_key_is_reported_with_file_line_and_suggestion() -> None:
    p = run_logfwd("--dry-run", "-c", str(DATA / "typo.conf"))
    assert p.returncode == 1
    err = p.stderr.decode()
    assert "typo.conf:11" in err and "Fromat" in err and "did you mean 'Format'" in err


def test_dry_run_ok() -> None:
    p = run_logfwd("--dry-run", "-c", str(DATA / "pipeline.conf"), env={"OUT_DIR": "/tmp", "LOGFWD_TEST_ENV": "x"})
    assert p.returncode == 0, p.stderr.decode()


def test_one_liner() -> None:
    p = run_until(["-i", "dummy", "-p", "samples=3", "-p", 'dummy={"a":1}', "-t", "t1",
                   "-o", "stdout", "-m", "*", "-p", "format=json_lines", "-f", "0.1"], json_lines(3))
    assert p.returncode == 0, p.stderr.decode()
    recs = [json.loads(x) for x in p.stdout.decode().splitlines() if x.startswith("{")]
    assert [r["a"] for r in recs] == [1, 1, 1]


def test_version_help_and_list() -> None:
    assert run_logfwd("--version").stdout.decode().startswith("logfwd ")
    listing = run_logfwd("--list-plugins").stdout.decode()
    for name in ("dummy", "stdin", "grep", "modify", "record_modifier", "stdout", "file", "null"):
        assert name in listing
    h = run_logfwd("--help-plugin", "dummy").stdout.decode()
    assert "Rate" in h and "Samples" in h and "default" in h
    # python -m logfwd is the same command
    m = subprocess.run([sys.executable, "-m", "logfwd", "--version"], capture_output=True)
    assert m.stdout.decode().startswith("logfwd ")


def test_prometheus_counts_match_delivered(tmp_path: Path) -> None:
    port = free_port()
    conf = tmp_path / "m.conf"
    conf.write_text(f"""
[SERVICE]
    Flush        0.1
    HTTP_Server  On
    HTTP_Listen  127.0.0.1
    HTTP_Port    {port}

[INPUT]
    Name     stdin
    Tag      in

[OUTPUT]
    Name     file
    Match    *
    Path     {tmp_path}
    File     out.txt
    Format   plain
""")
    proc = subprocess.Popen([LOGFWD, "-c", str(conf)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"".join(b'{"n": %d}\n' % i for i in range(1234)))
        proc.stdin.flush()
        out = tmp_path / "out.txt"
        wait_until(lambda: out.exists() and len(out.read_text().splitlines()) == 1234, 30, "records in the file", proc)

        def prom() -> dict[str, float]:
            _, body = http_get(port, "/api/v1/metrics/prometheus")
            vals = {}
            for fam in text_string_to_metric_families(body.decode()):
                for s in fam.samples:
                    vals[f"{s.name}{{{s.labels.get('name', '')}}}"] = s.value
            return vals

        wait_until(lambda: prom().get("logfwd_output_proc_records_total{file.0}") == 1234, 10, "metrics", proc)
        vals = prom()
        assert vals["logfwd_input_records_total{stdin.0}"] == 1234
        status, body = http_get(port, "/api/v1/metrics")
        assert status == 200 and json.loads(body)["output"]["file.0"]["proc_records"] == 1234
        assert http_get(port, "/api/v1/health")[0] == 200
        assert json.loads(http_get(port, "/api/v1/uptime")[1])["uptime_sec"] >= 0
        assert json.loads(http_get(port, "/")[1])["logfwd"]["edition"] == "Community"  # Fluent Bit's spelling
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert proc.returncode == 0


def test_sigterm_delivers_everything_buffered(tmp_path: Path) -> None:
    """A long flush interval keeps records buffered; SIGTERM must still deliver them all."""
    port = free_port()
    conf = tmp_path / "s.yaml"
    conf.write_text(f"""
service:
  flush: 60
  grace: 10
  http_server: on
  http_listen: 127.0.0.1
  http_port: {port}
pipeline:
  inputs:
    - name: stdin
  outputs:
    - name: file
      match: '*'
      path: {tmp_path}
      file: out.txt
      format: plain
""")
    proc = subprocess.Popen([LOGFWD, "-c", str(conf)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    n = 5000
    assert proc.stdin is not None
    proc.stdin.write(b"".join(b'{"n": %d}\n' % i for i in range(n)))
    proc.stdin.flush()

    def read_in() -> float:
        return json.loads(http_get(port, "/api/v1/metrics")[1])["input"]["stdin.0"]["records"]

    wait_until(lambda: read_in() == n, 30, "input to read everything", proc)
    assert not (tmp_path / "out.txt").exists()  # still buffered: flush is 60 s away
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    got = [json.loads(x)["n"] for x in (tmp_path / "out.txt").read_text().splitlines()]
    assert got == list(range(n))


def test_second_signal_exits_at_once(tmp_path: Path) -> None:
    conf = tmp_path / "s.conf"
    # An output that can never deliver keeps the first SIGTERM's drain waiting for the whole grace period.
    conf.write_text(f"""
[SERVICE]
    Flush   0.1
    Grace   60
    storage.path {tmp_path}

[INPUT]
    Name dummy
    Rate 50

[OUTPUT]
    Name  file
    Match *
    Path  {tmp_path}/no/such/dir/and/mkdir/off
    Mkdir off
    Retry_Limit no_limits
""")
    log = tmp_path / "daemon.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([LOGFWD, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_until(lambda: "will be retried" in log.read_text(), 30, "a failed flush", (proc, log))
            proc.send_signal(signal.SIGTERM)
            wait_until(lambda: "flushing within 60.0s" in log.read_text(), 30, "the drain", (proc, log))
            assert proc.poll() is None  # still draining: the grace period is a minute
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)  # long before the grace period would end
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 1
    assert "second SIGTERM: writing checkpoints and exiting now" in log.read_text()


@pytest.mark.slow
def test_slow_output_keeps_rss_bounded_while_1gb_flows(tmp_path: Path) -> None:
    """1 GB through stdin → stdout into a slowly read pipe with mem_buf_limit 1M: RSS stays bounded."""
    line = b'{"pad": "' + b"x" * 4080 + b'"}\n'
    total = 1 << 30
    n = total // len(line)
    proc = subprocess.Popen(
        [LOGFWD, "-i", "stdin", "-p", "mem_buf_limit=1M", "-o", "stdout", "-m", "*", "-p", "format=json_lines",
         "-p", "json_date_key=false", "-f", "0.2"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    ps = psutil.Process(proc.pid)
    peak = 0
    stop = threading.Event()

    def feed() -> None:
        assert proc.stdin is not None
        chunk = line * 256
        sent = 0
        while sent < n:
            proc.stdin.write(chunk[: min(256, n - sent) * len(line)])
            sent += min(256, n - sent)
        proc.stdin.close()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            try:
                peak = max(peak, ps.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.05)

    threads = [threading.Thread(target=feed, daemon=True), threading.Thread(target=sample, daemon=True)]
    for t in threads:
        t.start()
    assert proc.stdout is not None
    got = 0
    while True:
        buf = proc.stdout.read(1 << 20)  # a slow reader: 1 MiB at a time, then a pause (~200 MiB/s at most)
        if not buf:
            break
        got += buf.count(b"\n")
        time.sleep(0.005)
    proc.wait(timeout=60)
    stop.set()
    assert got == n
    assert proc.returncode == 0
    print(f"1 GiB through a slow reader: peak RSS {peak / 2**20:.0f} MiB")
    assert peak < 150 * 1024 * 1024, f"peak RSS {peak / 2**20:.0f} MiB"


def test_multiline_buffer_limit_bounds_a_multiline_record(tmp_path: Path) -> None:
    """The service's multiline_buffer_limit (Fluent Bit's key) caps a record built by a multiline parser:
    a 200-line stack trace with a 2k limit comes out as several records, none far past the limit, none lost."""
    log = tmp_path / "app.log"
    frames = "".join(f'  File "/srv/app/mod{i}.py", line {i}, in handler_{i}\n' for i in range(200))
    log.write_text("Traceback (most recent call last):\n" + frames + "ValueError: boom\nnext line\n")
    conf = tmp_path / "ml.conf"
    conf.write_text(f"""
[SERVICE]
    Flush                  0.2
    multiline_buffer_limit 2k
[INPUT]
    Name              tail
    Path              {log}
    Read_from_Head    On
    multiline.parser  python
[OUTPUT]
    Name   stdout
    Match  *
    Format json_lines
""")
    p = run_until(["-c", str(conf)], lambda out: b"next line" in out)
    records = [json.loads(x)["log"] for x in p.stdout.decode().splitlines() if x.startswith("{")]
    text = "".join(records)
    assert len(records) > 3 and max(len(r) for r in records) < 2048 + 200
    assert text.count("File \"/srv/app/mod") == 200 and "ValueError: boom" in text


@pytest.mark.timeout(120)
def test_a_wait_on_an_exited_daemon_fails_at_once_with_its_output(tmp_path: Path) -> None:
    """A daemon that died makes ``wait_counter`` fail at once, not after its (generous) deadline.

    The deadline here is an hour and the test's own timeout two minutes: a wait that ignored
    the exit would be killed by the timeout instead of raising with the daemon's output.
    """
    lf = Logfwd(tmp_path, "[INPUT]\n    Name dummy\n    Tag t\n\n[OUTPUT]\n    Name null\n    Match *\n").start()
    try:
        assert lf.signal(signal.SIGKILL) == -signal.SIGKILL
        with pytest.raises(DaemonExited, match="exited with code -9"):
            lf.wait_counter("output", "null.0", "proc_records", 10**9, timeout=3600)
    finally:
        lf.stop()


def _port_taken_conf(tmp_path: Path, port: int) -> Path:
    conf = tmp_path / "taken.conf"
    conf.write_text(f"""[SERVICE]
    Flush        0.2
    HTTP_Server  On
    HTTP_Listen  127.0.0.1
    HTTP_Port    {port}

[INPUT]
    Name  dummy

[OUTPUT]
    Name  null
    Match *
""")
    return conf


def _never() -> bool:
    """The condition of the exit tests (not the metrics API: the taken port accepts TCP and then never answers)."""
    return False


@pytest.mark.timeout(120)
@pytest.mark.parametrize("stderr", ["pipe", "file object", "path", "closed file object", "not captured"])
def test_wait_until_fails_at_once_when_the_daemon_cannot_start(tmp_path: Path, stderr: str) -> None:
    """A daemon whose HTTP port is taken exits at start-up: ``wait_until`` raises ``DaemonExited``
    with its exit code and its one-line error (read from a PIPE, a file object or a log path),
    not a bare time-out an hour later (the test's own timeout would fire first)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = [LOGFWD, "-c", str(_port_taken_conf(tmp_path, port))]
        log = tmp_path / "daemon.log"
        fh = None
        if stderr == "pipe":
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            watched: Any = proc
        elif stderr == "not captured":
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            watched = proc
        elif stderr == "closed file object":
            with open(log, "wb") as fh:
                proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=fh)
            watched = (proc, fh)
        else:
            fh = tempfile.TemporaryFile() if stderr == "file object" else open(log, "wb")
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=fh)
            watched = (proc, fh if stderr == "file object" else log)
        try:
            with pytest.raises(DaemonExited) as exc:
                wait_until(_never, 3600, "records delivered", watched)
        finally:
            stop(proc)
            if fh is not None:
                fh.close()
    msg = str(exc.value)
    assert "records delivered" in msg and LOGFWD in msg and "exited with code 1" in msg, msg
    if stderr == "not captured":
        assert "not captured" in msg, msg
    else:
        assert f"cannot listen on 127.0.0.1:{port}/tcp: address already in use" in msg, msg


@pytest.mark.timeout(120)
def test_wait_until_async_fails_at_once_when_the_daemon_cannot_start(tmp_path: Path) -> None:
    """The trio flavour has the same contract: ``DaemonExited`` with the exit code and the error line."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.Popen([LOGFWD, "-c", str(_port_taken_conf(tmp_path, port))], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            with pytest.raises(DaemonExited, match="exited with code 1") as exc:
                trio.run(wait_until_async, _never, 3600, "records delivered", proc)
        finally:
            stop(proc)
    assert "address already in use" in str(exc.value)


def test_wait_until_on_a_live_daemon_fails_at_its_deadline(tmp_path: Path) -> None:
    """A running daemon whose condition never holds: a plain AssertionError at the deadline
    (not ``DaemonExited``) naming what was awaited, the timeout and the check's last error."""
    lf = Logfwd(tmp_path, "[INPUT]\n    Name dummy\n    Tag t\n\n[OUTPUT]\n    Name null\n    Match *\n").start()
    try:
        with pytest.raises(AssertionError) as exc:
            wait_until(lambda: False, 1.5, "a condition that never holds", lf.proc)
        assert not isinstance(exc.value, DaemonExited)
        assert "a condition that never holds" in str(exc.value) and "1.5s" in str(exc.value)

        def broken() -> bool:
            raise ValueError("no such counter yet")

        with pytest.raises(AssertionError, match="no such counter yet") as exc:
            trio.run(wait_until_async, broken, 1, "a broken check", lf.proc)
        assert not isinstance(exc.value, DaemonExited)
        assert lf.proc is not None and lf.proc.poll() is None  # it ran all along
    finally:
        lf.stop()
