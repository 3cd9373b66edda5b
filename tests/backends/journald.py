"""Real journal files for the systemd input: systemd-journald and systemd-journal-remote.

- ``journald``: a real ``systemd-journald`` started by hand in a private mount
  namespace (``unshare -m``) where scratch directories are bind-mounted over
  ``/run/systemd``, ``/run/log`` and ``/var/log/journal``, so it never touches
  the host's journal. Its sockets appear under ``runsd/journal/`` (``dev-log``
  for syslog, ``socket`` for the native protocol, ``stdout`` for stream
  clients such as ``systemd-cat``, which we run inside the same namespace with
  ``nsenter``). Its files are under ``runlog/journal/<machine-id>/``.
- ``journal_remote_dir``: a factory that writes real journal files with
  ``systemd-journal-remote --output=FILE -`` from journal export format, where
  the test decides every field (trusted ``_SYSTEMD_UNIT`` included) and the
  timestamps.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from ._proc import ManagedProcess, require_tool, wait_for

JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
JOURNALD = "/lib/systemd/systemd-journald"
BOOT_ID = "0123456789abcdef0123456789abcdef"

_CONF = """[Journal]
Storage=volatile
ReadKMsg=no
ForwardToSyslog=no
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
Audit=no
RateLimitIntervalSec=0
"""


def export_entry(fields: Mapping[str, str | bytes], realtime_us: int, monotonic_us: int = 1) -> bytes:
    """One entry in journal export format; binary or multi-line values use the length-prefixed form."""
    out = bytearray()
    head = {"__REALTIME_TIMESTAMP": str(realtime_us), "__MONOTONIC_TIMESTAMP": str(monotonic_us),
            "_BOOT_ID": BOOT_ID}
    for k, v in {**head, **fields}.items():
        b = v.encode() if isinstance(v, str) else v
        if b"\n" in b or not _is_text(b):
            out += k.encode() + b"\n" + struct.pack("<Q", len(b)) + b + b"\n"
        else:
            out += k.encode() + b"=" + b + b"\n"
    return bytes(out) + b"\n"


def _is_text(b: bytes) -> bool:
    try:
        b.decode()
    except UnicodeDecodeError:
        return False
    return all(c >= 0x20 or c == 0x09 for c in b)


@pytest.fixture
def journal_remote_dir(tmp_path: Path) -> Callable[..., Path]:
    """``write(entries, name="x.journal")``: real journal file(s) in a fresh directory.

    ``entries`` is a list of ``(fields, realtime_us)``; several calls append to the
    same file (journal-remote opens it and adds entries). Returns the directory.
    """
    require_tool(JOURNAL_REMOTE, "apt-get install -y systemd-journal-remote")
    d = tmp_path / "journal"
    d.mkdir()
    mono = [0]

    def write(entries: list[tuple[Mapping[str, str | bytes], int]], name: str = "x.journal") -> Path:
        data = bytearray()
        for fields, rt in entries:
            mono[0] += 1000
            data += export_entry(fields, rt, mono[0])
        proc = subprocess.run([JOURNAL_REMOTE, f"--output={d / name}", "-"], input=bytes(data),
                              capture_output=True, timeout=30)
        if proc.returncode != 0:
            raise RuntimeError(f"systemd-journal-remote failed: {proc.stderr.decode(errors='replace')}")
        return d

    return write  # type: ignore[return-value]


@dataclass
class Journald:
    dir: Path
    proc: ManagedProcess

    @property
    def journal_dir(self) -> Path:
        """What the systemd input's Path points at (holds the <machine-id>/ directory)."""
        return self.dir / "runlog" / "journal"

    @property
    def dev_log(self) -> Path:
        return self.dir / "runsd" / "journal" / "dev-log"

    @property
    def native_socket(self) -> Path:
        return self.dir / "runsd" / "journal" / "socket"

    def send_native(self, fields: Mapping[str, str | bytes]) -> None:
        """One entry over journald's native protocol (what sd_journal_send does)."""
        payload = bytearray()
        for k, v in fields.items():
            b = v.encode() if isinstance(v, str) else v
            if b"\n" in b or not _is_text(b):
                payload += k.encode() + b"\n" + struct.pack("<Q", len(b)) + b + b"\n"
            else:
                payload += k.encode() + b"=" + b + b"\n"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(bytes(payload), str(self.native_socket))

    def logger(self, *args: str) -> None:
        subprocess.run(["logger", "--socket", str(self.dev_log), *args], check=True, timeout=10)

    def systemd_cat(self, identifier: str, text: str, priority: str = "info") -> None:
        """systemd-cat connects to /run/systemd/journal/stdout: run it inside journald's namespace."""
        subprocess.run(["nsenter", "-t", str(self.proc.pid), "-m", "systemd-cat", "-t", identifier,
                        "-p", priority], input=text.encode(), check=True, timeout=10)

    def journalctl(self, *args: str) -> str:
        return subprocess.run(["journalctl", "-D", str(self.journal_dir), "--no-pager", "-q", *args],
                              capture_output=True, text=True, timeout=10).stdout

    def wait_entries(self, match: str, n: int, timeout: float = 10) -> None:
        """Until journalctl sees ``n`` entries matching FIELD=value (journald writes asynchronously)."""
        wait_for(lambda: len(self.journalctl(match, "-o", "cat").splitlines()) >= n, timeout,
                 f"{n} journal entries {match}", self.dir / "journald.log")


@pytest.fixture
def journald() -> Iterator[Journald]:
    """A private, real systemd-journald (root and unshare needed; the test machines have both)."""
    require_tool(JOURNALD, "apt-get install -y systemd")
    require_tool("unshare", "apt-get install -y util-linux")
    if os.geteuid() != 0:
        pytest.fail("the journald fixture needs root (mount namespaces, bind mounts)")
    d = Path(tempfile.mkdtemp(prefix="logfwd-journald-"))
    for sub in ("runsd", "runlog", "varlog"):
        (d / sub).mkdir()
    (d / "journald.conf").write_text(_CONF)
    run = d / "run.sh"
    run.write_text(
        "#!/bin/sh\nset -e\n"
        f"mount --bind {d}/runsd /run/systemd\n"
        f"mount --bind {d}/runlog /run/log\n"
        f"mount --bind {d}/varlog /var/log/journal\n"
        f"mount --bind {d}/journald.conf /etc/systemd/journald.conf\n"
        "export SYSTEMD_LOG_TARGET=console\n"
        f"exec {JOURNALD}\n"
    )
    run.chmod(0o755)
    for p in ("/run/systemd", "/run/log", "/var/log/journal"):
        os.makedirs(p, exist_ok=True)
    proc = ManagedProcess(["unshare", "-m", "--propagation", "private", str(run)], d / "journald.log").start()
    j = Journald(d, proc)
    try:
        wait_for(lambda: j.native_socket.exists() and j.dev_log.exists(), 15, "systemd-journald",
                 d / "journald.log")
        # The first entries journald writes are its own; wait until the file is there.
        wait_for(lambda: any(j.journal_dir.glob("*/system.journal")), 10, "journal file", d / "journald.log")
        time.sleep(0.1)
        yield j
    finally:
        proc.stop()
        shutil.rmtree(d, ignore_errors=True)
