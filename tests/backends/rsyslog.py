"""A real rsyslogd, run as ``nobody``, forwarding everything it receives to a port we choose.

rsyslog accepts on a Unix socket (imuxsock, what ``logger --socket`` writes to),
UDP and TCP, and forwards with ``omfwd`` over TCP using RFC 6587 octet
counting and an RFC 5424 payload (``RSYSLOG_SyslogProtocol23Format``), retrying
forever (``action.resumeRetryCount=-1``) while the receiver is away: exactly
what a syslog input meets in production. The fixture is function-scoped so
each test gets a fresh queue; rsyslogd starts in well under a second.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ._proc import ManagedProcess, free_port, require_tool, wait_for


@dataclass
class Rsyslog:
    fwd_port: int  # where rsyslog forwards to: the system under test listens here
    socket: Path  # imuxsock input
    udp_port: int
    tcp_port: int
    dir: Path
    proc: ManagedProcess

    def log_text(self) -> str:
        p = self.dir / "rsyslogd.log"
        return p.read_text(errors="replace") if p.exists() else ""


def _config(d: Path, fwd_port: int, udp_port: int, tcp_port: int) -> str:
    return f"""
global(workDirectory="{d}/work" maxMessageSize="64k")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{d}/in.sock" CreatePath="on")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{udp_port}")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{tcp_port}")
action(type="omfwd" target="127.0.0.1" port="{fwd_port}" protocol="tcp"
       TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format"
       queue.type="LinkedList" queue.size="10000"
       action.resumeRetryCount="-1" action.resumeInterval="1")
"""


@pytest.fixture
def rsyslog() -> Iterator[Rsyslog]:
    """rsyslogd as nobody; forwards to ``rsyslog.fwd_port`` (nothing listens there yet)."""
    rsyslogd = require_tool("rsyslogd", "apt-get install -y rsyslog")
    require_tool("setpriv", "apt-get install -y util-linux")
    # pytest's tmp_path lives under a 0700 directory that nobody cannot traverse.
    d = Path(tempfile.mkdtemp(prefix="logfwd-rsyslog-"))
    (d / "work").mkdir()
    os.chmod(d, 0o777)
    os.chmod(d / "work", 0o777)
    fwd, udp, tcp = free_port(), free_port(), free_port()
    conf = d / "rsyslog.conf"
    conf.write_text(_config(d, fwd, udp, tcp))
    check = subprocess.run([rsyslogd, "-N1", "-f", str(conf)], capture_output=True, text=True)
    if check.returncode != 0:
        pytest.fail(f"rsyslog config rejected: {check.stderr}")
    proc = ManagedProcess(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         rsyslogd, "-n", "-f", str(conf), "-i", str(d / "rsyslogd.pid")],
        d / "rsyslogd.log",
    ).start()
    r = Rsyslog(fwd, d / "in.sock", udp, tcp, d, proc)
    try:
        wait_for(lambda: r.socket.exists() and proc.alive(), 15, "rsyslogd", d / "rsyslogd.log")
        yield r
    finally:
        proc.stop()
        shutil.rmtree(d, ignore_errors=True)
