"""The daemon as supervisors see it: exit status, one-line failures, readiness, health, sd_notify, the unit.

Every test runs the real ``logfwd`` process. Start-up failures must end in status 1
with one line naming the instance and the cause (systemd's ``Restart=on-failure``
and a human both depend on it); runtime failures restart the input and show in
``/api/v1/health``; ``$NOTIFY_SOCKET`` receives READY, WATCHDOG, RELOADING, STOPPING.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.backends._proc import free_port
from tests.clikit import LOGFWD, wait_until

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LOGFWD, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "[error]" in line]


def http_status(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# ------------------------------------------------------------------ start-up failures


def test_taken_http_port_exits_1_with_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = run(["-H", "-P", str(port), "-i", "dummy", "-o", "null", "-m", "*"],
                env={"LOGFWD_TEST": "1"})
    assert p.returncode == 1
    errs = error_lines(p.stderr)
    assert any(f"cannot listen on 0.0.0.0:{port}/tcp: address already in use" in e and "http_port" in e
               for e in errs), p.stderr
    assert "Traceback" not in p.stderr and "ExceptionGroup" not in p.stderr


def test_taken_syslog_port_exits_1_naming_the_instance() -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = run(["-i", "syslog", "-p", "mode=tcp", "-p", "listen=127.0.0.1", "-p", f"port={port}",
                 "-o", "null", "-m", "*"])
    assert p.returncode == 1, p.stderr
    errs = error_lines(p.stderr)
    assert any("[input:syslog:syslog.0]" in e and "address already in use" in e for e in errs), p.stderr
    assert "Traceback" not in p.stderr and "ExceptionGroup" not in p.stderr


def test_missing_tail_db_directory_exits_1(tmp_path: Path) -> None:
    db = tmp_path / "no" / "such" / "dir" / "tail.db"
    p = run(["-i", "tail", "-p", f"path={tmp_path}/*.log", "-p", f"db={db}", "-o", "null", "-m", "*"])
    assert p.returncode == 1, p.stderr
    errs = error_lines(p.stderr)
    assert any("[input:tail:tail.0]" in e and str(db.parent.parent.parent) in e for e in errs) or \
        any("[input:tail:tail.0]" in e and "database" in e for e in errs), p.stderr
    assert "Traceback" not in p.stderr


def test_missing_plugin_library_is_a_config_error(tmp_path: Path) -> None:
    """A plugin whose client library cannot be imported: refused at load, one line with the fix."""
    shadow = tmp_path / "shadow" / "confluent_kafka"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'confluent_kafka'\", "
                                        "name='confluent_kafka')\n")
    env = {"PYTHONPATH": str(tmp_path / "shadow")}
    for args in (["--dry-run"], []):
        p = run([*args, "-i", "dummy", "-o", "kafka", "-m", "*", "-p", "brokers=127.0.0.1:9"], env=env)
        assert p.returncode == 1, p.stderr
        assert "output plugin 'kafka' cannot load" in p.stderr and "confluent_kafka" in p.stderr
        assert "reinstall" in p.stderr and "Traceback" not in p.stderr


def test_out_of_range_values_are_refused_by_dry_run() -> None:
    p = run(["--dry-run", "-i", "syslog", "-p", "mode=tcp", "-p", "port=70000", "-o", "null", "-m", "*"])
    assert p.returncode == 1 and "at most 65535" in p.stderr, p.stderr
    p = run(["--dry-run", "-P", "99999", "-i", "dummy", "-o", "null", "-m", "*"])
    assert p.returncode == 1 and "at most 65535" in p.stderr, p.stderr
    p = run(["--dry-run", "-i", "dummy", "-o", "null", "-m", "*", "-p", "retry_limit=sometimes"])
    assert p.returncode == 1 and "no_limits" in p.stderr, p.stderr


# ------------------------------------------------------------------ running


def test_finished_dummy_keeps_the_daemon_and_its_metrics_up(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([LOGFWD, "-H", "-P", str(port), "-i", "dummy", "-p", "samples=3", "-p", "rate=50",
                             "-o", "null", "-m", "*"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def three_delivered() -> bool:
            status, body = http_status(port, "/api/v1/metrics")
            return status == 200 and json.loads(body)["output"]["null.0"]["proc_records"] == 3

        wait_until(three_delivered, 30, "3 records delivered", proc)
        wait_until(lambda: http_status(port, "/api/v1/health") == (200, b"ok"), 30, "healthy", proc)
        assert proc.poll() is None  # the input finished; the daemon did not
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert "input finished" in err.decode()


def test_stdin_at_eof_stops_the_daemon() -> None:
    p = subprocess.run([LOGFWD, "-i", "stdin", "-o", "stdout", "-m", "*", "-p", "format=json_lines"],
                       input=b"one\ntwo\n", capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr.decode()
    assert [json.loads(x)["log"] for x in p.stdout.splitlines()] == ["one", "two"]


FLAKY = '''
"""A test input: emits a record every 50 ms and raises while a trigger file exists."""

import os

import trio

from logfwd.options import Option
from logfwd.plugin import Input


class FlakyInput(Input):
    name = "flaky"
    description = "fails while its trigger file exists (test plugin)"
    options = (Option("Trigger", "str", None, "file whose presence makes the input fail", required=True),)

    async def run(self, emitter, *, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        while True:
            if os.path.exists(self.config["trigger"]):
                raise OSError(5, "Input/output error", self.config["trigger"])
            await emitter.emit([{"n": 1}])
            await trio.sleep(0.05)
'''


def _flaky_env(tmp_path: Path) -> dict[str, str]:
    """A real distribution on PYTHONPATH whose entry point registers the ``flaky`` input."""
    site = tmp_path / "site"
    dist = site / "logfwd_flaky-1.0.dist-info"
    dist.mkdir(parents=True)
    (site / "logfwd_flaky.py").write_text(FLAKY)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: logfwd-flaky\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[logfwd.plugins]\nflaky = logfwd_flaky:FlakyInput\n")
    return {**os.environ, "PYTHONPATH": str(site)}


def test_runtime_failure_restarts_the_input_and_health_tells(tmp_path: Path) -> None:
    trigger = tmp_path / "fail"
    port = free_port()
    proc = subprocess.Popen([LOGFWD, "-H", "-P", str(port), "-i", "flaky", "-p", f"trigger={trigger}",
                             "-o", "null", "-m", "*"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=_flaky_env(tmp_path))
    try:
        wait_until(lambda: http_status(port, "/api/v1/health") == (200, b"ok"), 30, "healthy at start", proc)
        trigger.write_text("")
        wait_until(lambda: http_status(port, "/api/v1/health") == (500, b"error"), 30, "unhealthy while failing",
                   proc)
        status, body = http_status(port, "/api/v2/health")
        assert status == 500 and "flaky.0" in json.loads(body)["failing"]
        trigger.unlink()
        wait_until(lambda: http_status(port, "/api/v1/health") == (200, b"ok"), 60, "healthy after the restart",
                   proc)
        _, metrics = http_status(port, "/api/v1/metrics")
        assert json.loads(metrics)["input"]["flaky.0"]["restarts"] >= 1
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "input failed (restart 1" in err.decode() and "input running again" in err.decode()


def test_restart_limit_stops_the_daemon_with_status_1(tmp_path: Path) -> None:
    trigger = tmp_path / "fail"
    conf = tmp_path / "logfwd.conf"
    conf.write_text(textwrap.dedent(f"""\
        [SERVICE]
            restart_limit 2
        [INPUT]
            Name    flaky
            Trigger {trigger}
        [OUTPUT]
            Name    null
            Match   *
        """))
    proc = subprocess.Popen([LOGFWD, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=_flaky_env(tmp_path))
    try:
        trigger.write_text("")  # fails at once after start, and again after each restart
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err.decode()
    assert "failed 3 times in a row" in err.decode()


# ------------------------------------------------------------------ systemd


def test_notify_socket_receives_ready_watchdog_reloading_stopping(tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    out = tmp_path / "out.jsonl"
    conf = tmp_path / "logfwd.conf"
    conf.write_text(textwrap.dedent(f"""\
        [SERVICE]
            Flush      0.2
            Hot_Reload On
        [INPUT]
            Name  dummy
            Rate  20
        [OUTPUT]
            Name  file
            Match *
            Path  {tmp_path}
            File  out.jsonl
        """))
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        sock.settimeout(0.05)  # each try of a wait reads what has come, the deadline is wait_until's
        env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"}
        proc = subprocess.Popen([LOGFWD, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env=env)
        got: list[str] = []
        stopped = False

        def until(word: str) -> None:
            """Read notifications up to the first starting with ``word``; fail at once if the daemon exits first."""

            def seen() -> bool:
                while True:
                    try:
                        msg = sock.recv(4096).decode()
                    except TimeoutError:
                        return False
                    got.extend(msg.splitlines())
                    if any(line.startswith(word) for line in msg.splitlines()):
                        return True

            wait_until(seen, 30, f"{word} on the notify socket", proc)

        try:
            until("READY=1")
            until("WATCHDOG=1")
            wait_until(lambda: out.exists() and out.stat().st_size > 0, 30, "records", proc)
            proc.send_signal(signal.SIGHUP)
            until("RELOADING=1")
            until("READY=1")
            proc.send_signal(signal.SIGTERM)
            stopped = True
            until("STOPPING=1")
        finally:
            if proc.poll() is None and not stopped:
                proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    order = [g.split("=")[0] for g in got if g.split("=")[0] in ("READY", "RELOADING", "STOPPING")]
    assert order == ["READY", "RELOADING", "READY", "STOPPING"], got
    assert any(g.startswith("MONOTONIC_USEC=") for g in got)
    assert any(g.startswith("STATUS=") for g in got)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_file_verifies(tmp_path: Path) -> None:
    unit = (ROOT / "conf" / "logfwd.service").read_text()
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "ExecReload=/bin/kill -HUP $MAINPID" in unit
    assert "StateDirectory=logfwd" in unit and "Restart=on-failure" in unit
    # verify checks that ExecStart exists: point it at this install's logfwd
    local = unit.replace("/opt/logfwd/bin/logfwd", str(Path(sys.executable).parent / "logfwd"))
    (tmp_path / "logfwd.service").write_text(local)
    p = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "logfwd.service")], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "logfwd.service" not in p.stderr, p.stderr  # no warning about our unit


def test_state_directory_is_the_default_storage_path(tmp_path: Path) -> None:
    """Under the unit, systemd sets $STATE_DIRECTORY: dead letters and chunks go there by default."""
    p = run(["--dry-run", "-i", "dummy", "-o", "null", "-m", "*"], env={"STATE_DIRECTORY": str(tmp_path)})
    assert p.returncode == 0, p.stderr


@pytest.mark.skipif(shutil.which("setpriv") is None or os.geteuid() != 0, reason="needs root and setpriv")
def test_unreadable_tls_file_exits_1_with_one_line(tmp_path: Path) -> None:
    """A certificate the daemon's user cannot read: refused at load (and by --dry-run), naming key and file."""
    probe = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", LOGFWD, "--version"],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:  # e.g. a checkout under a 0700 directory (mktemp -d)
        pytest.skip(f"user 'nobody' cannot run this install of logfwd: {probe.stderr.strip()[-200:]}")
    shared = Path(tempfile.mkdtemp(prefix="logfwd-tls-"))  # traversable by nobody, unlike pytest's tmp_path
    shared.chmod(0o755)
    cert = shared / "ca.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nnot read anyway\n-----END CERTIFICATE-----\n")
    cert.chmod(0o600)  # root's; the daemon runs as nobody below
    for extra in (["--dry-run"], []):
        p = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", LOGFWD, *extra,
                            "-i", "dummy", "-o", "es", "-m", "*", "-p", "tls=on", "-p", f"tls.ca_file={cert}"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 1, p.stderr
        assert f"key 'tls.ca_file': {cert} is not readable by this user" in p.stderr
        assert "Traceback" not in p.stderr
    shutil.rmtree(shared)
