"""Shared helpers for backend fixtures: free ports, waiting, owned processes.

Each backend fixture picks a free port at run time, works in a scratch
directory of the test session, starts the real server, waits until it answers,
and stops it by PID at the end (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poll(check: Callable[[], object], timeout: float, gone: Callable[[], BaseException | None],
         expired: Callable[[Exception | None], BaseException], interval: float = 0.1) -> Iterator[float]:
    """The one polling loop behind every wait of the tests: yields the pauses between tries of ``check``.

    A generator, so that blocking waits (``wait_for`` here, ``clikit.wait_until``) and trio
    waits (``clikit.wait_until_async``) share the loop and differ only in how they sleep:
    ``for pause in poll(...): time.sleep(pause)`` or ``await trio.sleep(pause)``.

    It ends when ``check()`` is truthy; an exception from ``check`` means "not yet" (a
    server still starting refuses connections) and is kept for the deadline's message.
    ``gone()`` returns the exception to raise when waiting has become pointless (the
    process under test exited), or None; it is asked *before* each check, so a process
    that made the condition true and then exited still counts as a success, while one
    that exited without it fails at once instead of at a generous deadline. At the
    deadline ``expired(last exception from check, or None)`` is raised.
    """
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        stop = gone()
        try:
            if check():
                return
        except Exception as e:  # noqa: BLE001 - any failure means "not yet"
            last = e
        if stop is not None:
            raise stop
        if time.monotonic() >= deadline:
            raise expired(last)
        yield interval


def wait_for(check: Callable[[], bool], timeout: float, what: str, log: Path | None = None) -> None:
    """Poll ``check`` until true; on timeout fail with the server's log attached.

    For backend fixtures waiting for their own server to answer; a test waiting on the
    ``logfwd`` daemon uses ``clikit.wait_until``, which also fails at once when it exits.
    """

    def expired(last: Exception | None) -> RuntimeError:
        tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
        return RuntimeError(f"{what} did not become ready in {timeout}s (last error: {last})\n{tail}")

    for pause in poll(check, timeout, lambda: None, expired):
        time.sleep(pause)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


class ManagedProcess:
    """A server process we own: started with its output in a log file, stopped by PID."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None):
        self.argv = argv
        self.log = log
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.log, "ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(self.env or {})},
            cwd=self.cwd,
            start_new_session=True,
        )
        fh.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def kill(self) -> None:
        self.stop(sig=signal.SIGKILL)


def require_tool(path: str, install_hint: str) -> str:
    """The path of a tool the test needs; skip-free: a missing tool is a setup error."""
    found = shutil.which(path) or (path if os.path.exists(path) else None)
    if not found:
        pytest.fail(f"{path} is missing; the test command installs it ({install_hint})")
    return found
