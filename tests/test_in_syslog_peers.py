"""The syslog input against hostile or broken peers, with real sockets (issue #11).

Idle connections by the thousand, connections that never finish a frame, a
process out of descriptors, bytes that are not UTF-8: the cap, the idle timeout
and the buffer bound hold, the events are counted, and a good sender is served.
"""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import trio

from logfwd.plugin import StartError
from logfwd.plugins.in_syslog.plugin import SyslogInput
from tests.backends._proc import ManagedProcess, free_port
from tests.clikit import wait_until
from tests.pluginkit import Collector, make_plugin

LOGFWD = str(Path(sys.executable).parent / "logfwd")
GOOD = b"<13>1 2024-01-01T00:00:00Z h good - - - good %d\n"

Body = Callable[[SyslogInput, Collector], Awaitable[None]]


def drive(plugin: SyslogInput, body: Body) -> Collector:
    col = Collector()

    async def main() -> None:
        emitter = col.emitter(plugin, tag="syslog")
        async with trio.open_nursery() as n:
            await n.start(plugin.run, emitter)
            with trio.fail_after(90):
                await body(plugin, col)
            n.cancel_scope.cancel()

    trio.run(main)
    return col


async def until(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    with trio.move_on_after(timeout):
        while not check():
            await trio.sleep(0.05)
        return
    raise AssertionError(f"{what}: not within {timeout}s")


async def send_good(port: int, n: int) -> None:
    s = await trio.open_tcp_stream("127.0.0.1", port)
    await s.send_all(b"".join(GOOD % i for i in range(n)))
    await s.aclose()


def _raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"needs {need} descriptors, RLIMIT_NOFILE hard limit is {hard}")
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need if hard == resource.RLIM_INFINITY else hard, hard))


def test_1000_idle_connections_cap_holds_and_a_good_sender_delivers() -> None:
    _raise_nofile(2500)
    cap = 100
    p = make_plugin(SyslogInput, Mode="tcp", Listen="127.0.0.1", Port=free_port(), Max_Connections=cap)
    most = 0

    async def body(p: SyslogInput, col: Collector) -> None:
        nonlocal most
        idle = []
        for _ in range(1000):
            idle.append(await trio.open_tcp_stream("127.0.0.1", p.port))
            most = max(most, p.connections)
        await until(lambda: p.metrics["connections_evicted"] >= 1000 - cap, "idle connections evicted")
        most = max(most, p.connections)
        await send_good(p.port, 50)  # type: ignore[arg-type]
        await col.wait(50)
        most = max(most, p.connections)
        for s in idle:
            await s.aclose()

    col = drive(p, body)
    assert sorted(r["message"] for r in col.records) == sorted(f"good {i}" for i in range(50))
    assert most <= cap + 1  # the newcomer is admitted as the idlest one is being closed
    assert p.metrics["connections_evicted"] >= 1000 - cap


def test_idle_connections_are_closed_after_the_timeout_and_their_partial_line_is_kept() -> None:
    p = make_plugin(SyslogInput, Mode="tcp", Listen="127.0.0.1", Port=free_port(), **{"net.io_timeout": "0.5"})

    async def body(p: SyslogInput, col: Collector) -> None:
        quiet = [await trio.open_tcp_stream("127.0.0.1", p.port) for _ in range(5)]
        await quiet[0].send_all(b"<13>1 2024-01-01T00:00:00Z h idle - - - no newline yet")
        await until(lambda: p.connections == 5, "connections accepted")
        await until(lambda: p.connections == 0, "idle connections closed", timeout=15)
        for s in quiet:
            with trio.fail_after(5):
                assert await s.receive_some(10) == b""  # closed by the server
            await s.aclose()
        await col.wait(1)
        await send_good(p.port, 3)  # type: ignore[arg-type]
        await col.wait(4)

    col = drive(p, body)
    assert p.metrics["idle_closed"] == 5
    assert {"no newline yet", "good 0", "good 2"} <= {r["message"] for r in col.records}


def test_half_sent_frames_are_bounded_and_counted() -> None:
    """500 connections each holding 30 KB of an unfinished frame: held once, not copied, gauge exact."""
    _raise_nofile(1500)
    p = make_plugin(SyslogInput, Mode="tcp", Listen="127.0.0.1", Port=free_port(), Buffer_Max_Size="32000")
    n, size = 500, 30_000
    proc = psutil.Process()

    async def body(p: SyslogInput, col: Collector) -> None:
        conns = [await trio.open_tcp_stream("127.0.0.1", p.port) for _ in range(n)]
        await until(lambda: p.connections == n, "connections accepted")
        rss0 = proc.memory_info().rss
        half = b"<13>1 2024-01-01T00:00:00Z h half - - - " + b"x" * (size - 40)
        for s in conns:
            await s.send_all(half)
        await until(lambda: p.metrics["partial_bytes"] == n * len(half), "partial frames held")
        grown = proc.memory_info().rss - rss0
        assert grown < 3 * n * len(half), grown  # the bytes held plus their framing, no copies piling up
        # a frame over Buffer_Max_Size is cut there and counted, never held whole
        await conns[0].send_all(b"y" * 10_000)
        await until(lambda: p.metrics.get("truncated_records", 0) == 1, "oversize frame cut")
        for s in conns:
            await s.aclose()
        await until(lambda: p.metrics["partial_bytes"] == 0, "buffers released")

    drive(p, body)


def test_non_utf8_bytes_are_replaced_and_counted() -> None:
    p = make_plugin(SyslogInput, Mode="tcp", Listen="127.0.0.1", Port=free_port(), Raw_Message_Key="raw")

    async def body(p: SyslogInput, col: Collector) -> None:
        s = await trio.open_tcp_stream("127.0.0.1", p.port)
        await s.send_all(b"<13>1 2024-01-01T00:00:00Z h enc - - - caf\xe9 latin1\n"
                         b"<13>1 2024-01-01T00:00:00Z h enc - - - caf\xc3\xa9 utf8\n"
                         b"<13>1 2024-01-01T00:00:00Z h enc - - - \xff\xfe\n")
        await s.aclose()
        await col.wait(3)

    col = drive(p, body)
    msgs = sorted(r["message"] for r in col.records)
    assert msgs == sorted(["caf\ufffd latin1", "café utf8", "\ufffd\ufffd"])
    assert p.metrics["invalid_utf8"] == 2


def test_port_in_use_is_a_one_line_start_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for mode in ("tcp", "udp"):
            if mode == "udp":
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                u.bind(("127.0.0.1", port))
            p = make_plugin(SyslogInput, Mode=mode, Listen="127.0.0.1", Port=port)

            async def main(p: SyslogInput = p) -> None:
                await p.run(Collector().emitter(p, tag="syslog"))  # raises before it would report started

            with pytest.raises(StartError) as e:
                trio.run(main)
            assert str(e.value) == f"cannot listen on 127.0.0.1:{port}/{mode}: address already in use"
        u.close()


def _metrics(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/metrics", timeout=2) as r:
        return json.loads(r.read())["input"]["syslog.0"]  # type: ignore[no-any-return]


def test_daemon_out_of_descriptors_logs_counts_and_serves_a_good_sender(tmp_path: Path) -> None:
    """A daemon with RLIMIT_NOFILE 64 flooded with idle connections: EMFILE is logged once and counted,
    the idlest connections make room, and once the idle ones time out everything is served again."""
    port, http = free_port(), free_port()
    conf = tmp_path / "logfwd.conf"
    conf.write_text(f"""
[SERVICE]
    Flush 0.2
    HTTP_Server on
    HTTP_Listen 127.0.0.1
    HTTP_Port {http}
[INPUT]
    Name syslog
    Mode tcp
    Listen 127.0.0.1
    Port {port}
    net.io_timeout 3
[OUTPUT]
    Name file
    Match *
    Path {tmp_path}
    File out.jsonl
    Format plain
""")
    limit = "import resource, os, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)); os.execv(sys.argv[1], sys.argv[1:])"
    log = tmp_path / "daemon.log"
    d = ManagedProcess([sys.executable, "-c", limit, LOGFWD, "-c", str(conf)], log).start()
    idle: list[socket.socket] = []
    try:
        # The monitoring server starts before the inputs (a taken HTTP port fails first), so its
        # answer does not mean the syslog port listens yet: wait for the daemon's "started" line.
        wait_until(lambda: b"] started: " in log.read_bytes(), 30, "daemon started", d)
        for _ in range(150):  # well beyond what 64 descriptors hold
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        wait_until(lambda: b"cannot accept a connection" in log.read_bytes(), 20, "EMFILE log line", d)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as good:
            good.sendall(b"".join(GOOD % i for i in range(5)))
        out = tmp_path / "out.jsonl"

        def delivered(n: int) -> bool:
            return out.exists() and len(out.read_text().splitlines()) >= n

        wait_until(lambda: delivered(5), 30, "good sender's records while at the limit", d)
        # the idle connections time out; then metrics (HTTP) and new senders are served as usual
        wait_until(lambda: _metrics(http)["connections"] == 0, 30, "idle connections closed", d)
        m = _metrics(http)
        assert m["accept_errors"] >= 1 and m["idle_closed"] >= 1
        with socket.create_connection(("127.0.0.1", port), timeout=5) as good:
            good.sendall(b"<13>1 2024-01-01T00:00:00Z h good - - - after\n")
        wait_until(lambda: delivered(6), 30, "records after the idle connections closed", d)
        text = log.read_text()
        assert text.count("cannot accept a connection") == 1, text[-3000:]  # rate-limited
    finally:
        for s in idle:
            s.close()
        d.stop()
    assert d.proc is not None and d.proc.returncode == 0, log.read_text()[-3000:]


def test_daemon_with_port_in_use_exits_with_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        p = subprocess.run([LOGFWD, "-i", "syslog", "-p", "mode=tcp", "-p", "listen=127.0.0.1", "-p", f"port={port}",
                            "-o", "null", "-m", "*"], capture_output=True, timeout=60)
    err = p.stderr.decode()
    assert p.returncode == 1, err
    assert f"[input:syslog:syslog.0] cannot listen on 127.0.0.1:{port}/tcp: address already in use" in err
    assert "Traceback" not in err and "ExceptionGroup" not in err
