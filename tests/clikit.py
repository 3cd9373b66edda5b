"""Running the real ``logfwd`` command in tests.

The daemon runs until it is told to stop (as Fluent Bit does: an input that finishes,
such as ``dummy`` with ``Samples``, leaves the rest running), so a test starts it, waits
for the condition it is about with a deadline, then stops it with SIGTERM and reads what
it printed.

Every such wait goes through ``wait_until`` (or ``wait_until_async`` in trio tests): it
also watches the daemon, so a daemon that crashed, found its port taken or refused its
config fails the test at once with its exit code and last error lines, instead of the
test sitting out its deadline and reporting a bare "timed out".
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Union

import trio

from .backends._proc import poll

LOGFWD = str(Path(sys.executable).parent / "logfwd")
POLL_INTERVAL = 0.05
STDERR_LINES = 30

# What ``wait_until`` watches: a ``Popen``; or ``(Popen, where its stderr went)`` when the
# test gave Popen a file (a path or the file object: Popen keeps no trace of it); or an
# object with ``proc`` and ``log`` attributes (``backends._proc.ManagedProcess``,
# ``e2ekit.Logfwd``, ``storagekit.Daemon``).
Watched = Union["subprocess.Popen[Any]", "tuple[subprocess.Popen[Any], Path | IO[Any] | None]", Any]


class DaemonExited(AssertionError):
    """A process a wait watched exited before the condition held: the condition can no longer come true."""


def _read_pipe(pipe: IO[Any]) -> bytes:
    """What a PIPE holds, without blocking for good: a grandchild may still hold its write end open."""
    fd = pipe.fileno()
    data = b""
    end = time.monotonic() + 2
    while time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            break
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        data += chunk
    return data


def _read_file(f: Path | IO[Any]) -> bytes:
    """All of a log file, from its start whatever the file object's position (a path, or a file object).

    ``os.pread`` leaves the offset alone (the child shares it); a closed or write-only
    file object is read again by its name.
    """
    if isinstance(f, (str, os.PathLike)):
        return Path(f).read_bytes()
    try:
        fd = f.fileno()
        chunks, off = [], 0
        while chunk := os.pread(fd, 1 << 20, off):
            chunks.append(chunk)
            off += len(chunk)
        return b"".join(chunks)
    except (OSError, ValueError):
        name = getattr(f, "name", None)
        if isinstance(name, (str, bytes)):
            return Path(os.fsdecode(name)).read_bytes()
        raise


def _unpack(w: Watched) -> tuple[subprocess.Popen[Any] | None, Path | IO[Any] | None]:
    if isinstance(w, subprocess.Popen):
        return w, None
    if isinstance(w, tuple):
        return w[0], w[1]
    return w.proc, w.log


def stderr_tail(proc: subprocess.Popen[Any], source: Path | IO[Any] | None = None) -> str:
    """The last lines of what an exited process wrote to stderr, or why they cannot be shown."""
    try:
        if source is not None:
            data = _read_file(source)
        elif proc.stderr is not None:
            data = _read_pipe(proc.stderr)
        else:
            return "(its stderr is not captured: pass (proc, log file) to see it)"
    except (OSError, ValueError) as e:
        return f"(its stderr could not be read: {e!r})"
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    lines = text.splitlines()[-STDERR_LINES:]
    return "\n".join(lines)[-4000:] if lines else "(it wrote nothing to stderr)"


def _argv(proc: subprocess.Popen[Any]) -> str:
    return proc.args if isinstance(proc.args, str) else " ".join(map(str, proc.args))


def exited(what: str, watched: tuple[Watched, ...]) -> DaemonExited | None:
    """``DaemonExited`` for the first watched process that has exited, or None while all run."""
    for w in watched:
        proc, source = _unpack(w)
        if proc is None or proc.poll() is None:
            continue
        return DaemonExited(f"gave up waiting for {what}: {_argv(proc)[:300]} exited with code {proc.returncode}; "
                            f"the last lines of its stderr:\n{stderr_tail(proc, source)}")
    return None


def _timed_out(what: str, timeout: float, watched: tuple[Watched, ...]) -> Callable[[Exception | None], AssertionError]:
    def expired(last: Exception | None) -> AssertionError:
        msg = f"timed out after {timeout}s waiting for {what}"
        if last is not None:
            msg += f" (last error from the check: {last!r})"
        for w in watched:  # the logs of the (live) processes, when they are in files: a PIPE is left to the test
            proc, source = _unpack(w)
            if proc is not None and source is not None:
                msg += f"\nthe last lines of {_argv(proc)[:200]}:\n{stderr_tail(proc, source)}"
        return AssertionError(msg)

    return expired


def wait_until(check: Callable[[], object], timeout: float, what: str, *watched: Watched) -> None:
    """Poll ``check()`` until it holds; fail at once if a ``watched`` process exits first.

    An exception from ``check`` counts as "not yet" (the daemon's port is not open yet);
    the last one is shown at the deadline. A watched process (the daemon under test, a
    Fluent Bit peer...) that exits before the condition holds raises ``DaemonExited``
    with its argv, exit code and the last lines of its stderr: the test fails in a
    moment with the daemon's own error rather than after its timeout with none. At the
    deadline a plain ``AssertionError`` names ``what`` and ``timeout`` (with the last
    lines of the watched processes' logs that are files).
    """
    for pause in poll(check, timeout, lambda: exited(what, watched), _timed_out(what, timeout, watched), POLL_INTERVAL):
        time.sleep(pause)


async def wait_until_async(check: Callable[[], object], timeout: float, what: str, *watched: Watched) -> None:
    """``wait_until`` for trio tests: the same loop, sleeping with ``trio.sleep`` so other tasks run."""
    for pause in poll(check, timeout, lambda: exited(what, watched), _timed_out(what, timeout, watched), POLL_INTERVAL):
        await trio.sleep(pause)


def run_until(args: list[str], done: Callable[[bytes], bool], *, env: dict[str, str] | None = None,
              timeout: float = 60, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``logfwd ARGS`` until ``done(stdout so far)`` holds (or it exits), then SIGTERM it.

    Fails the test when the condition is not met: ``DaemonExited`` (with the exit code)
    as soon as the daemon exits without it, else an AssertionError at ``timeout``; both
    carry the daemon's log. The same poller as ``wait_until``; a daemon that exits having
    met the condition (its stdout says so) is a success.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([LOGFWD, *args], stdout=out, stderr=err, env={**os.environ, **(env or {})},
                                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL)
        if input is not None:
            assert proc.stdin is not None
            proc.stdin.write(input)
            proc.stdin.close()

        def met() -> bool:
            return done(_read_file(out))

        failure: AssertionError | None = None
        try:
            wait_until(met, timeout, "the condition on its stdout", (proc, err))
        except AssertionError as e:
            failure = e
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stdout, stderr = _read_file(out), _read_file(err)
    if failure is not None and not done(stdout):
        if isinstance(failure, DaemonExited):
            raise failure
        raise AssertionError(f"{failure}; logfwd said:\n{stderr.decode(errors='replace')}")
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
