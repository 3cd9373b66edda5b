"""Helpers for the storage tests: a daemon that can be SIGKILLed, numbered writers, an output reader.

Every record carries ``n=<8 digits>;`` so that a line the daemon's file output left half
written at a kill never counts as a different number.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import psutil

from logfwd.engine.storage.format import CorruptChunk, parse_chunk
from tests.clikit import wait_until

ROOT = Path(__file__).resolve().parent.parent
_SCRIPT = Path(sys.executable).with_name("logfwd")
LOGFWD = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "logfwd"]
NUM_RE = re.compile(rb"n=(\d{8});")


def scale(default: int) -> int:
    """``LOGFWD_E2E_N`` sets the record count of the torture runs (the CI default is smaller)."""
    return int(os.environ.get("LOGFWD_E2E_N") or default)


class Daemon:
    """The real ``logfwd`` CLI on a config file; output appended to ``log``."""

    def __init__(self, conf: Path, log: Path) -> None:
        self.conf = conf
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self._mark = 0
        self.peak_rss = 0

    def start(self) -> Daemon:
        self._mark = self.log.stat().st_size if self.log.exists() else 0  # this start's lines come after it
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen([*LOGFWD, "-c", str(self.conf)], stdout=fh, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=ROOT)
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 30) -> int:
        assert self.proc is not None
        # Signal handlers are installed before the pipeline reports "started:". Wait for that line of
        # *this* start: a stop right after a restart found the previous start's line and sent SIGTERM to
        # a process still importing (exit -15, no drain).
        proc = self.proc
        wait_until(lambda: b"] started: " in self.log.read_bytes()[self._mark:] or proc.poll() is not None, 30,
                   "the daemon's started line (or its exit) before SIGTERM")
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def wait(self, check: Callable[[], object], timeout: float, what: str) -> None:
        """``clikit.wait_until`` on this daemon: it fails at once, with the log's tail, if the daemon exits."""
        wait_until(check, timeout, what, self)

    def rss(self) -> int:
        assert self.proc is not None
        try:
            rss = psutil.Process(self.proc.pid).memory_info().rss
        except psutil.NoSuchProcess:
            return 0
        self.peak_rss = max(self.peak_rss, rss)
        return int(rss)

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def count_numbers(path: Path) -> Counter[int]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Counter()
    return Counter(int(m) for m in NUM_RE.findall(data))


def numbers_arrived(path: Path, n: int) -> Callable[[], bool]:
    """A ``wait`` check: the numbers 0..n-1 are all in ``path``.

    While they are not, it raises with how many are missing and the first of them, which
    the wait shows at its deadline.
    """

    def check() -> bool:
        got = count_numbers(path)
        missing = sorted(set(range(n)) - set(got))
        if not missing:
            return True
        raise AssertionError(f"{len(missing)} of {n} numbers missing, first {missing[:10]}")

    return check


def durable_numbers(out: Path, storage: Path) -> set[int]:
    """Numbers a dead daemon had made durable: delivered to ``out`` or in a whole frame of a chunk.

    Read between a SIGKILL and the restart, this is what the next daemon must not lose. A torn
    last frame (the write the kill interrupted) is not durable and is left out, as recovery cuts it.
    """
    found = set(count_numbers(out))
    for path in storage.rglob("*.chunk"):
        try:
            payloads = parse_chunk(path.read_bytes()).payloads
        except (CorruptChunk, OSError):
            continue  # its numbers count as lost if they never arrive: a durable chunk must stay readable
        for payload in payloads:
            found.update(int(m) for m in NUM_RE.findall(payload))
    return found


def lost_runs(missing: list[int]) -> list[tuple[int, int]]:
    """``missing`` as maximal runs ``[first, end)`` of consecutive numbers."""
    runs: list[tuple[int, int]] = []
    for m in missing:
        if runs and runs[-1][1] == m:
            runs[-1] = (runs[-1][0], m + 1)
        else:
            runs.append((m, m + 1))
    return runs


class FileWriter(threading.Thread):
    """Appends ``n`` numbered lines to a file at about ``rate`` lines a second."""

    def __init__(self, path: Path, n: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.path, self.n, self.rate = path, n, rate
        self.written = 0

    def run(self) -> None:
        step = max(1, int(self.rate / 50))
        start = time.monotonic()
        with open(self.path, "ab", buffering=0) as fh:
            while self.written < self.n:
                k = min(step, self.n - self.written)
                fh.write(b"".join(b"record n=%08d; payload\n" % (self.written + i) for i in range(k)))
                self.written += k
                ahead = self.written / self.rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)


class SyslogSender(threading.Thread):
    """Sends numbered RFC 5424 messages over TCP; a number counts as sent once ``sendall`` returned.

    When the daemon is killed the connection breaks; the sender reconnects and continues with
    the next unsent number. ``sent_at`` records how many were sent when each kill happened.
    """

    def __init__(self, port: int, n: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.port, self.n, self.rate = port, n, rate
        self.sent = 0
        self.reconnects = 0
        self.failed_at: list[int] = []  # numbers sent when a send first failed after each kill

    def _connect(self) -> socket.socket:
        while True:
            try:
                return socket.create_connection(("127.0.0.1", self.port), timeout=5)
            except OSError:
                time.sleep(0.05)

    def run(self) -> None:
        step = max(1, int(self.rate / 50))
        start = time.monotonic()
        sock = self._connect()
        while self.sent < self.n:
            k = min(step, self.n - self.sent)
            data = b"".join(b"<13>1 2024-01-01T00:00:00Z host app - - - n=%08d;\n" % (self.sent + i) for i in range(k))
            try:
                sock.sendall(data)
            except OSError:
                sock.close()
                self.failed_at.append(self.sent)
                self.reconnects += 1
                sock = self._connect()
                continue
            self.sent += k
            ahead = self.sent / self.rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
        sock.close()


def wait_stable(path: Path, d: Daemon, quiet: float = 2.0, timeout: float = 60) -> None:
    """Wait until ``path`` has stopped growing for ``quiet`` seconds (the daemon ``d`` writing it must not exit)."""
    last, since = -1, time.monotonic()

    def stable() -> bool:
        nonlocal last, since
        size = path.stat().st_size if path.exists() else 0
        if size != last:
            last, since = size, time.monotonic()
            return False
        return time.monotonic() - since >= quiet

    d.wait(stable, timeout, f"{path.name} to stop growing for {quiet}s")
