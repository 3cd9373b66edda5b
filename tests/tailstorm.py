"""A rotation storm against the real ``logfwd`` daemon: writers, a rotator, a sink that can stall.

Pieces, and why they look the way they do:

- ``LiveFile``: one application log. The writer thread appends numbered lines
  (``tests.tailkit.NumberedWriter`` numbering, ``<name>-<00000042>``)
  through a handle it keeps open, like a real application; after a
  rename-and-create rotation it keeps writing to the renamed file for a few more
  batches before it reopens (the window between logrotate's ``mv`` and the
  application's reopen on SIGHUP), so late lines land in the rotated file.
- ``Sink``: the daemon's ``file`` output writes to a named pipe read by a thread
  of the test. Each line is counted as it arrives, so the test knows at any
  moment which numbers were delivered (needed to coordinate deletions and
  copytruncate without unavoidable loss), and stalling the reader is a real
  slow output: the pipe fills, the output's write blocks, unacknowledged bytes
  reach ``Mem_Buf_Limit`` and the tail input pauses.
- ``Storm``: the rotator, driven by a seeded ``random.Random`` so a failing
  sequence can be replayed; every operation is appended to ``Storm.log``.
"""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.backends._proc import free_port
from tests.clikit import DaemonExited, metrics, stop, wait_until
from tests.tailkit import LINE_RE, NumberedWriter

ROOT = Path(__file__).resolve().parent.parent
_SCRIPT = Path(sys.executable).with_name("logfwd")
LOGFWD = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "logfwd"]


def storm_config(tmp: Path, port: int, sink: Path, inotify: bool, rotate_wait: float = 2.0) -> Path:
    """Live names only (``*.log``): rotated generations ``*.log.N`` are followed by descriptor, not by name."""
    conf = tmp / "logfwd.conf"
    conf.write_text(f"""[SERVICE]
    flush        0.2
    grace        5
    http_server  on
    http_listen  127.0.0.1
    http_port    {port}

[INPUT]
    name             tail
    path             {tmp}/logs/*.log
    db               {tmp}/tail.db
    read_from_head   on
    refresh_interval 0.5
    rotate_wait      {rotate_wait}
    inotify_watcher  {"on" if inotify else "off"}
    mem_buf_limit    64k

[OUTPUT]
    name         file
    match        *
    path         {sink.parent}
    file         {sink.name}
    format       plain
    workers      1
""")
    return conf


def start_daemon(conf: Path, tmp: Path) -> subprocess.Popen[bytes]:
    with open(tmp / "daemon.log", "ab") as log:
        return subprocess.Popen([*LOGFWD, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=ROOT)


class Sink:
    """Reads the named pipe the daemon's file output writes to and counts every number."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path)
        # read and write ends in one descriptor: the reader never sees EOF between the
        # output's per-chunk opens, nor while the daemon is down
        self.fd = os.open(path, os.O_RDWR)
        self.counts: Counter[tuple[str, int]] = Counter()
        self.bad: list[str] = []
        self.lines = 0
        self._partial = b""
        self._lock = threading.Lock()
        self._go = threading.Event()
        self._go.set()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="sink", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            self._go.wait()
            try:
                data = os.read(self.fd, 1 << 16)
            except OSError:
                return
            with self._lock:
                buf = self._partial + data
                *complete, self._partial = buf.split(b"\n")
                for raw in complete:
                    self._count(raw)

    def _count(self, raw: bytes) -> None:
        if not raw:
            return
        self.lines += 1
        try:
            m = LINE_RE.search(json.loads(raw)["log"])
        except (ValueError, KeyError, TypeError):
            m = None
        if m is None:
            self.bad.append(raw[:200].decode(errors="replace"))
        else:
            self.counts[(m.group(1), int(m.group(2)))] += 1

    def pending(self) -> int:
        buf = fcntl.ioctl(self.fd, termios.FIONREAD, struct.pack("i", 0))
        return int(struct.unpack("i", buf)[0])

    def cut(self) -> None:
        """After a kill -9: drain the pipe, then drop the dead daemon's half-written last line."""
        deadline = time.monotonic() + 10
        while self.pending() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.05)
        with self._lock:
            self._partial = b""

    def stall(self, on: bool) -> None:
        if on:
            self._go.clear()
        else:
            self._go.set()

    def got(self, name: str, n: int) -> int:
        with self._lock:
            return self.counts[(name, n)]

    def delivered_upto(self, name: str, n: int) -> bool:
        """Were lines ``0..n-1`` of writer ``name`` all delivered?"""
        with self._lock:
            return all(self.counts[(name, i)] for i in range(n))

    def close(self) -> None:
        self._stop = True
        self._go.set()
        os.write(self.fd, b"\n")  # wake the reader
        self._thread.join(5)
        os.close(self.fd)


class LiveFile:
    """One application log: its name, numbering, open handle and rotation bookkeeping."""

    def __init__(self, path: Path, name: str) -> None:
        self.path = path
        self.w = NumberedWriter(path, name=name, payload=20)
        self.lock = threading.Lock()  # writer vs rotator: a rotation step never interleaves with a write
        self.fh = open(path, "ab")
        self.reopen_in = -1  # batches still written to the renamed file before the writer reopens
        self.gen_first = 0  # number of the first line of the file now at ``path``
        self.generations = 0  # path.1 .. path.N exist
        self.archives = 0

    def reopen(self) -> None:
        self.fh.close()
        self.fh = open(self.path, "ab")
        self.reopen_in = -1
        self.gen_first = self.w.next

    def gen(self, k: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{k}")

    def shift(self) -> None:
        """logrotate's numbering: path.N → path.N+1 … path.1 → path.2 (renames of older generations)."""
        for k in range(self.generations, 0, -1):
            os.rename(self.gen(k), self.gen(k + 1))


class Storm:
    """Writer thread + seeded rotator against a running daemon."""

    OPS = ("rename", "rename", "rename", "copytruncate", "copytruncate", "delete", "delete", "compress", "stall")
    MAX_STALLS = 2  # each lasts Rotate_Wait + ~1 s

    def __init__(self, tmp: Path, seed: int, nfiles: int = 3, kills: int = 0, inotify: bool = True,
                 rotate_wait: float = 2.0) -> None:
        self.tmp = tmp
        self.rng = random.Random(seed)
        self.wrng = random.Random(seed + 1)
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.files = [LiveFile(self.logs / f"app{i}.log", f"F{i}") for i in range(nfiles)]
        self.sink = Sink(tmp / "sink.fifo")
        self.port = 0
        self.rotate_wait = rotate_wait
        self.inotify = inotify
        self.kills_wanted = kills
        self.kills = 0
        self.stalls = 0
        self.stalls_paused = 0
        self.log: list[str] = []
        self.daemon: subprocess.Popen[bytes] | None = None
        self._writing = True
        self._writer = threading.Thread(target=self._write_loop, name="writer", daemon=True)
        self.error: BaseException | None = None

    # ------------------------------------------------------------ daemon

    def start(self) -> None:

        self.port = free_port()
        conf = storm_config(self.tmp, self.port, self.sink.path, self.inotify, self.rotate_wait)
        self.daemon = start_daemon(conf, self.tmp)
        self.wait(lambda: self._metrics() is not None, 20, "the daemon's HTTP server")

    def _metrics(self) -> dict[str, Any] | None:
        try:
            return metrics(self.port)["input"]["tail.0"]  # type: ignore[no-any-return]
        except OSError:
            return None

    def metric(self, name: str) -> int:
        m = self._metrics()
        return int(m.get(name, 0)) if m else -1

    def kill(self) -> None:
        assert self.daemon is not None
        os.kill(self.daemon.pid, signal.SIGKILL)
        self.daemon.wait()
        self.kills += 1
        self.sink.cut()

    def stop(self) -> int | None:
        if self.daemon is not None:
            stop(self.daemon)
            return self.daemon.returncode
        return None

    def wait(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        """``wait_until`` on the daemon (a dead one fails the wait at once); the failure carries the ops so far."""
        assert self.daemon is not None
        try:
            wait_until(pred, timeout, what, (self.daemon, self.tmp / "daemon.log"))
        except AssertionError as e:
            raise type(e)(f"{e}\nops so far: {self.log}") from None

    # ------------------------------------------------------------ writer

    def _write_loop(self) -> None:
        try:
            while self._writing:
                for lf in self.files:
                    if not lf.lock.acquire(blocking=False):
                        continue  # that file is being rotated; the others keep growing
                    try:
                        lf.fh.write(lf.w.lines(self.wrng.randint(1, 6)))
                        lf.fh.flush()
                        if lf.reopen_in > 0:
                            lf.reopen_in -= 1
                        elif lf.reopen_in == 0:
                            lf.reopen()
                    finally:
                        lf.lock.release()
                time.sleep(0.02)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e

    def start_writer(self) -> None:
        self._writer.start()

    def stop_writer(self) -> None:
        if not self._writing:
            return
        self._writing = False
        self._writer.join(5)
        for lf in self.files:
            if lf.reopen_in >= 0:
                lf.reopen()
            lf.fh.close()

    # ------------------------------------------------------------ rotator

    def _discovered(self, lf: LiveFile) -> None:
        """The daemon has delivered a line of the file now at the live name: it follows that file.

        A file renamed away before the daemon ever saw it under a matching name cannot
        be followed by anyone (Fluent Bit neither); real rotations are minutes apart.
        """
        self.wait(lambda: lf.reopen_in < 0 and lf.w.next > lf.gen_first and self.sink.got(lf.w.name, lf.gen_first),
                  20, f"{lf.path.name} line {lf.gen_first} (current generation) delivered")

    def _all_delivered(self, lf: LiveFile) -> None:
        n = lf.w.next
        self.wait(lambda: self.sink.delivered_upto(lf.w.name, n), 20, f"{lf.path.name} lines 0..{n - 1} delivered")

    def rename(self, lf: LiveFile) -> None:
        """logrotate ``create``: mv f f.1 (older ones shifted first); create f; the app reopens a bit later."""
        with lf.lock:
            lf.shift()
            os.rename(lf.path, lf.gen(1))
            lf.generations += 1
            lf.path.touch()
            lf.reopen_in = self.rng.randint(0, 4)

    def copytruncate(self, lf: LiveFile) -> None:
        """logrotate ``copytruncate``, made atomic with respect to the writer and the reader.

        Real logrotate loses the lines written between its copy and its truncate, and a
        reader loses whatever it had not read before the truncate (the copy is not
        matched by Path); that is the method's design, not ours to test. Here the writer
        is held (the file's lock) from "everything delivered" until the daemon has seen
        the truncation, so any loss is the daemon's.
        """
        with lf.lock:
            self._all_delivered(lf)
            before = self.metric("truncations")
            lf.shift()
            shutil.copyfile(lf.path, lf.gen(1))
            lf.generations += 1
            with open(lf.path, "r+b") as fh:
                fh.truncate(0)
            self.wait(lambda: self.metric("truncations") > before, 10, f"the truncation of {lf.path.name} seen")
            lf.gen_first = lf.w.next

    def delete(self, lf: LiveFile) -> None:
        """rm f; create f (the app reopens at once). Only once the daemon delivered all of f:
        a file deleted before it was read is gone for every reader."""
        with lf.lock:
            self._all_delivered(lf)
            os.unlink(lf.path)
            lf.path.touch()
            lf.reopen()

    def compress(self, lf: LiveFile) -> None:
        """delaycompress: the oldest generation becomes f.N.gz (new inode, not matched) and is removed,
        once delivered (a compressed-away file is gone for the reader)."""
        if lf.generations < 2:
            return
        with lf.lock:
            self._all_delivered(lf)
            src = lf.gen(lf.generations)
            lf.archives += 1
            with open(src, "rb") as i, gzip.open(lf.path.with_name(f"{lf.path.name}.z{lf.archives}.gz"), "wb") as o:
                shutil.copyfileobj(i, o)
            os.unlink(src)
            lf.generations -= 1

    def stall(self) -> None:
        """The output stops draining: the tail input pauses on Mem_Buf_Limit; files are rotated meanwhile and
        Rotate_Wait passes while the rotated files are not drained; then the output resumes."""
        self.sink.stall(True)
        try:
            last, since = self.metric("records"), time.monotonic()

            def paused() -> bool:
                """The writers go on, the input reads nothing for 0.6 s: paused."""
                nonlocal last, since
                now = self.metric("records")
                if now != last:
                    last, since = now, time.monotonic()
                    return False
                return time.monotonic() - since > 0.6

            try:
                self.wait(paused, 6, "the input to pause")
                self.stalls_paused += 1
            except DaemonExited:
                raise  # a dead daemon reads nothing either: that is no pause
            except AssertionError:
                pass  # not paused within 6 s: an observation, counted by stalls_paused (test_storm_exactly_once)
            for lf in self.rng.sample(self.files, 2):
                self.rename(lf)
                self.log.append(f"  stalled-rename {lf.path.name}")
            time.sleep(self.rotate_wait + 0.5)
        finally:
            self.sink.stall(False)

    def run(self, ops: int) -> None:
        """``ops`` seeded operations; with ``kills``, SIGKILL + restart at seeded points in between."""
        kill_at = set(self.rng.sample(range(2, ops - 1), self.kills_wanted)) if self.kills_wanted else set()
        for i in range(ops):
            if self.error:
                raise self.error
            if i in kill_at:
                lf = self.rng.choice(self.files)
                down_rename = self.rng.random() < 0.5
                if down_rename:
                    self._discovered(lf)
                time.sleep(self.rng.uniform(0, 0.3))
                self.log.append(f"{i}: kill -9")
                self.kill()
                time.sleep(self.rng.uniform(0.1, 0.8))  # written (and maybe rotated) while down
                if down_rename:
                    self.rename(lf)
                    self.log.append(f"{i}: rename {lf.path.name} while down")
                self.start()
                continue
            op = self.rng.choice(self.OPS)
            lf = self.rng.choice(self.files)
            if op == "stall" and self.stalls >= self.MAX_STALLS:
                op = "rename"
            if op == "stall":
                self.stalls += 1
                for f in self.files:
                    self._discovered(f)
                self.log.append(f"{i}: stall")
                self.stall()
                continue
            self._discovered(lf)
            self.log.append(f"{i}: {op} {lf.path.name}")
            getattr(self, op)(lf)
            time.sleep(self.rng.uniform(0.0, 0.2))

    # ------------------------------------------------------------ verdict

    def expected(self) -> dict[str, int]:
        return {lf.w.name: lf.w.next for lf in self.files}

    def missing(self) -> dict[str, list[int]]:
        out = {}
        for name, n in self.expected().items():
            gone = [i for i in range(n) if not self.sink.got(name, i)]
            if gone:
                out[name] = gone
        return out

    def duplicates(self) -> int:
        return sum(v - 1 for v in self.sink.counts.values() if v > 1)
