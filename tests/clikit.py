"""Running the real ``logfwd`` command in tests.

The daemon runs until it is told to stop (as Fluent Bit does: an input that finishes,
such as ``dummy`` with ``Samples``, leaves the rest running), so a test starts it, waits
for the condition it is about with a deadline, then stops it with SIGTERM and reads what
it printed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

LOGFWD = str(Path(sys.executable).parent / "logfwd")


def run_until(args: list[str], done: Callable[[bytes], bool], *, env: dict[str, str] | None = None,
              timeout: float = 60, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``logfwd ARGS`` until ``done(stdout so far)`` holds (or it exits), then SIGTERM it.

    Fails the test (AssertionError with the daemon's log) when the condition is not met
    within ``timeout`` seconds.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([LOGFWD, *args], stdout=out, stderr=err, env={**os.environ, **(env or {})},
                                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL)
        if input is not None:
            assert proc.stdin is not None
            proc.stdin.write(input)
            proc.stdin.close()
        deadline = time.monotonic() + timeout
        met = False
        while time.monotonic() < deadline and proc.poll() is None:
            out.seek(0)
            if done(out.read()):
                met = True
                break
            time.sleep(0.05)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if not met and not done(stdout):
        raise AssertionError(f"condition not met within {timeout}s; logfwd said:\n{stderr.decode(errors='replace')}")
    return subprocess.CompletedProcess([LOGFWD, *args], proc.returncode, stdout, stderr)


def json_lines(n: int) -> Callable[[bytes], bool]:
    """``done`` for ``run_until``: at least ``n`` JSON lines on stdout."""
    return lambda out: sum(1 for line in out.splitlines() if line.startswith(b"{")) >= n


def file_lines(path: Path, n: int) -> Callable[[bytes], bool]:
    """``done`` for ``run_until``: the file has at least ``n`` lines."""
    return lambda _out: path.exists() and path.read_bytes().count(b"\n") >= n


def delivered(port: int, n: int) -> Callable[[bytes], bool]:
    """``done`` for ``run_until``: the daemon's outputs (``HTTP_Server on`` at ``port``) delivered ``n`` records."""

    def check(_out: bytes) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/metrics", timeout=5) as r:
                metrics = json.loads(r.read())
        except OSError:
            return False
        return sum(v.get("proc_records", 0) for v in metrics.get("output", {}).values()) >= n

    return check


def metrics(port: int) -> dict:
    """The daemon's /api/v1/metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/metrics", timeout=2) as r:
        return json.loads(r.read())


def stop(p: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it does not end within 15 s."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
