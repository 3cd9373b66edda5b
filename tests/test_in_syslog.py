"""The syslog input against real peers: util-linux ``logger``, rsyslog, Python ssl clients.

Each test drives the plugin directly with a real ``Emitter`` whose dispatch
collects the batches (no engine): what arrives there is what the pipeline gets.
"""

from __future__ import annotations

import calendar
import os
import socket
import ssl
import stat
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from logfwd.plugin import ConfigValueError
from logfwd.plugins.in_syslog.plugin import SyslogInput
from tests.backends._proc import free_port
from tests.clikit import wait_until_async
from tests.pluginkit import Collector, make_plugin

# ----------------------------------------------------------------- harness


def make_input(**opts: Any) -> SyslogInput:
    return make_plugin(SyslogInput, **opts)


Body = Callable[[SyslogInput, Collector], Awaitable[None]]


def drive(plugin: SyslogInput, body: Body, collector: Collector | None = None, mem: int = 0) -> Collector:
    col = collector or Collector()

    async def main() -> None:
        emitter = col.emitter(plugin, tag="syslog", budget=mem)
        async with trio.open_nursery() as n:
            await n.start(plugin.run, emitter)
            with trio.fail_after(60):
                await body(plugin, col)
            n.cancel_scope.cancel()

    trio.run(main)
    return col


async def logger(*args: str) -> None:
    await trio.run_process(["logger", *args], capture_stdout=True, capture_stderr=True)


def by_message(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(r.get("message", r.get("log"))).strip(): r for r in records}


HOST = socket.gethostname()

# ------------------------------------------------------------------- tests


def test_logger_udp_rfc5424_and_rfc3164() -> None:
    port = free_port()
    p = make_input(Mode="udp", Listen="127.0.0.1", Port=port, Source_Address_Key="src")

    async def body(p: SyslogInput, col: Collector) -> None:
        before = time.time_ns()
        await logger("-n", "127.0.0.1", "-P", str(port), "-d", "--rfc5424", "-t", "app5424", "--id=4242",
                     "--msgid", "MID7", "--sd-id", "ex@32473", "--sd-param", 'k="v 1"', "-p", "local3.warning",
                     "hello 5424")
        await logger("-n", "127.0.0.1", "-P", str(port), "-d", "--rfc3164", "-t", "app3164", "--id=77", "hello 3164")
        await col.wait(2)
        recs = by_message(col.records)
        r = recs["hello 5424"]
        assert (r["host"], r["ident"], r["pid"], r["msgid"]) == (HOST, "app5424", "4242", "MID7")
        assert r["pri"] == str(19 * 8 + 4)
        assert '[ex@32473 k="v 1"]' in r["extradata"]
        assert r["src"].startswith("udp://127.0.0.1:")
        r3 = recs["hello 3164"]
        assert (r3["host"], r3["ident"], r3["pid"]) == (HOST, "app3164", "77")
        t5424 = col.times[col.records.index(r)]
        assert before - 10**9 <= t5424 <= time.time_ns() and t5424 % 1000 == 0  # microseconds kept
        t3164 = col.times[col.records.index(r3)]
        assert abs(t3164 - before) < 3 * 10**9

    drive(p, body)
    assert p.metrics["records"] == 2 and p.metrics["parse_errors"] == 0


def test_exact_timestamp_and_unparsable_kept_raw() -> None:
    port = free_port()
    p = make_input(Mode="udp", Listen="127.0.0.1", Port=port, Raw_Message_Key="raw")
    msg = b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - 'su root' failed"

    async def body(p: SyslogInput, col: Collector) -> None:
        s = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await s.sendto(msg, ("127.0.0.1", port))
        await s.sendto(b"no priority, not syslog at all", ("127.0.0.1", port))
        s.close()
        await col.wait(2)

    col = drive(p, body)
    i = next(i for i, r in enumerate(col.records) if r.get("host") == "mymachine.example.com")
    assert col.times[i] == calendar.timegm((2003, 10, 11, 22, 14, 15)) * 10**9 + 3 * 10**6
    assert col.records[i]["msgid"] == "ID47" and col.records[i]["raw"] == msg.decode()
    bad = [r for r in col.records if "log" in r]
    assert bad and bad[0]["log"] == "no priority, not syslog at all"
    assert p.metrics["parse_errors"] == 1


@pytest.mark.parametrize("framing", [[], ["--octet-count"]], ids=["newline", "octet"])
def test_logger_tcp(framing: list[str]) -> None:
    port = free_port()
    p = make_input(Mode="tcp", Listen="127.0.0.1", Port=port)

    async def body(p: SyslogInput, col: Collector) -> None:
        base = ["-n", "127.0.0.1", "-P", str(port), "-T", *framing]
        await logger(*base, "--rfc5424", "-t", "tcpapp", "--id=11", "--msgid", "M1", "--sd-id", "meta@1",
                     "--sd-param", 'a="b"', "tcp 5424")
        await logger(*base, "--rfc3164", "-t", "tcpapp", "--id=12", "tcp 3164")
        # One logger connection, several lines from stdin: several messages on one connection.
        await trio.run_process(["logger", *base, "--rfc5424", "-t", "multi"], stdin=b"one\ntwo\nthree\n",
                               capture_stderr=True)
        await col.wait(5)

    col = drive(p, body)
    recs = by_message(col.records)
    assert recs["tcp 5424"]["msgid"] == "M1" and '[meta@1 a="b"]' in recs["tcp 5424"]["extradata"]
    assert recs["tcp 3164"]["pid"] == "12" and recs["tcp 3164"]["host"] == HOST
    assert {"one", "two", "three"} <= set(recs)
    assert p.metrics["records"] == 5 and p.metrics.get("malformed_frames", 0) == 0


def test_logger_unix_dgram_perm_and_stale_socket(tmp_path: Path) -> None:
    path = tmp_path / "in.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(str(path))  # a socket file left behind by a previous run
    stale.close()
    p = make_input(Mode="unix_udp", Path=path, Unix_Perm="0620", Source_Address_Key="src")

    async def body(p: SyslogInput, col: Collector) -> None:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o620
        await logger("--socket", str(path), "-d", "-t", "localapp", "--id=99", "local format")
        await logger("--socket", str(path), "-d", "--rfc5424", "-t", "uapp", "--msgid", "UM", "unix 5424")
        await logger("--socket", str(path), "-d", "--rfc3164", "-t", "uapp", "unix 3164")
        await col.wait(3)

    col = drive(p, body)
    recs = by_message(col.records)
    assert recs["local format"]["ident"] == "localapp" and recs["local format"]["pid"] == "99"
    assert recs["unix 5424"]["msgid"] == "UM"
    assert recs["unix 3164"]["host"] == HOST and recs["unix 3164"]["ident"] == "uapp"
    assert recs["unix 3164"]["src"] == f"unix://{path}"
    assert p.metrics["parse_errors"] == 0
    assert not path.exists()  # removed on shutdown


def test_logger_unix_stream(tmp_path: Path) -> None:
    path = tmp_path / "stream.sock"
    p = make_input(Mode="unix_tcp", Path=path)

    async def body(p: SyslogInput, col: Collector) -> None:
        await logger("--socket", str(path), "-T", "-t", "sapp", "--id=5", "stream local")
        await logger("--socket", str(path), "-T", "--octet-count", "--rfc5424", "-t", "sapp", "stream octet")
        await col.wait(2)

    col = drive(p, body)
    recs = by_message(col.records)
    assert recs["stream local"]["ident"] == "sapp" and recs["stream local"]["pid"] == "5"
    assert recs["stream octet"]["host"] == HOST


def test_rsyslog_forwarding_and_retry_after_restart(rsyslog: Any) -> None:
    """rsyslog (as nobody) forwards imuxsock messages octet-counted; it retries while we are down."""

    def make() -> SyslogInput:
        return make_input(Mode="tcp", Listen="127.0.0.1", Port=rsyslog.fwd_port)

    async def first(p: SyslogInput, col: Collector) -> None:
        await logger("--socket", str(rsyslog.socket), "-t", "rsapp", "--id=321", "via rsyslog 1")
        await logger("--socket", str(rsyslog.socket), "-t", "rsapp", "multi\nline")
        await col.wait(2, timeout=15)

    col1 = drive(make(), first)
    recs = by_message(col1.records)
    r = recs["via rsyslog 1"]
    assert (r["ident"], r["pid"], r["host"]) == ("rsapp", "321", HOST)
    assert col1.records and all("log" not in x for x in col1.records), col1.records

    # Our listener is gone: rsyslog queues and retries every second.
    for i in range(5):
        subprocess.run(["logger", "--socket", str(rsyslog.socket), "-t", "rsapp", f"while down {i}"], check=True)
    time.sleep(1.5)

    async def second(p: SyslogInput, col: Collector) -> None:
        await wait_until_async(lambda: {f"while down {i}" for i in range(5)} <= set(by_message(col.records)), 20,
                               "the messages rsyslog queued while we were down", rsyslog.proc)

    col2 = drive(make(), second)
    got = set(by_message(col2.records))
    assert {f"while down {i}" for i in range(5)} <= got, (got, rsyslog.log_text()[-2000:])


def _make_cert(d: Path) -> tuple[Path, Path]:
    crt, key = d / "server.crt", d / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(crt), "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return crt, key


def test_tls_octet_counted(tmp_path: Path) -> None:
    crt, key = _make_cert(tmp_path)  # generated at test time, never committed
    port = free_port()
    p = make_input(Mode="tcp", Listen="127.0.0.1", Port=port, tls="on", tls__crt_file=crt, tls__key_file=key)
    msgs = [b"<14>1 2024-05-01T10:00:00Z h tlsapp 1 - - secure %d" % i for i in range(3)]

    def client() -> None:
        ctx = ssl.create_default_context(cafile=str(crt))
        with socket.create_connection(("127.0.0.1", port)) as raw, ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            for m in msgs:
                s.sendall(b"%d %s\n" % (len(m) + 1, m))

    def plain_client() -> None:  # not TLS: the handshake fails, only that connection is closed
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"<13>plaintext\n")
            s.settimeout(5)
            try:
                s.recv(100)
            except OSError:
                pass

    async def body(p: SyslogInput, col: Collector) -> None:
        await trio.to_thread.run_sync(plain_client)
        await trio.to_thread.run_sync(client)
        await col.wait(3)

    col = drive(p, body)
    assert sorted(r["message"] for r in col.records) == [f"secure {i}" for i in range(3)]
    assert col.times[0] == calendar.timegm((2024, 5, 1, 10, 0, 0)) * 10**9


def test_300_concurrent_connections() -> None:
    port = free_port()
    p = make_input(Mode="tcp", Listen="127.0.0.1", Port=port)
    n, per = 300, 3

    async def body(p: SyslogInput, col: Collector) -> None:
        streams = []
        for _ in range(n):
            streams.append(await trio.open_tcp_stream("127.0.0.1", port))
        with trio.move_on_after(5):
            while p.connections < n:
                await trio.sleep(0.02)
        assert p.connections == n

        async def talk(i: int, s: trio.SocketStream) -> None:
            octet = i % 2 == 0
            for j in range(per):
                m = b"<13>1 2024-01-01T00:00:00Z h c%d - - - m %d.%d" % (i, i, j)
                await s.send_all(b"%d %s" % (len(m), m) if octet else m + b"\n")
            await s.aclose()

        async with trio.open_nursery() as nn:
            for i, s in enumerate(streams):
                nn.start_soon(talk, i, s)
        await col.wait(n * per, timeout=30)

    col = drive(p, body)
    got = sorted(r["message"] for r in col.records)
    assert got == sorted(f"m {i}.{j}" for i in range(n) for j in range(per))
    assert len(col.batches) < n * per / 5  # gathered into batches, not one per message


@pytest.mark.parametrize("oversize", ["truncate", "drop"])
def test_oversize_and_malformed_only_close_that_connection(oversize: str) -> None:
    port = free_port()
    p = make_input(Mode="tcp", Listen="127.0.0.1", Port=port, Buffer_Max_Size=200, Oversize=oversize)
    big = b"<13>1 2024-01-01T00:00:00Z h big - - - " + b"x" * 500

    async def body(p: SyslogInput, col: Collector) -> None:
        good = await trio.open_tcp_stream("127.0.0.1", port)
        await good.send_all(b"<13>1 2024-01-01T00:00:00Z h good - - - before\n")
        bad = await trio.open_tcp_stream("127.0.0.1", port)
        ok = b"<13>1 2024-01-01T00:00:00Z h bad - - - fine"
        await bad.send_all(b"%d %s" % (len(ok), ok) + b"12x <13>garbage")
        with trio.fail_after(5):
            assert await bad.receive_some(10) == b""  # the server closed this connection
        octet = await trio.open_tcp_stream("127.0.0.1", port)
        after = b"<13>1 2024-01-01T00:00:00Z h octet - - - after big"
        await octet.send_all(b"%d %s%d %s" % (len(big), big, len(after), after))
        await good.send_all(big + b"\n<13>1 2024-01-01T00:00:00Z h good - - - after\n")
        await col.wait(5 if oversize == "truncate" else 4)
        for s in (good, bad, octet):
            await s.aclose()

    col = drive(p, body)
    msgs = [r.get("message", "") for r in col.records]
    assert {"before", "fine", "after", "after big"} <= set(msgs)
    assert p.metrics["malformed_frames"] == 1
    if oversize == "truncate":
        assert p.metrics["truncated_records"] == 2
        cut = [m for m in msgs if m.startswith("xxx")]
        assert len(cut) == 2 and all(len(m) == 200 - len(big) + 500 for m in cut)
    else:
        assert p.metrics["dropped_records"] == 2 and not any(m.startswith("xxx") for m in msgs)


def test_udp_backpressure_counts_kernel_drops() -> None:
    """While the pipeline is blocked the socket is not read: the kernel drops, and we count exactly that."""
    port = free_port()
    p = make_input(Mode="udp", Listen="127.0.0.1", Port=port, Receive_Buffer_Size="16K", Batch_Size=50)
    sent = 3000

    async def body(p: SyslogInput, col: Collector) -> None:
        col.gate = trio.Event()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(sent):
            s.sendto(b"<13>1 2024-01-01T00:00:00Z h u - - - d %d" % i, ("127.0.0.1", port))
            if i % 200 == 0:
                await trio.sleep(0)
        s.close()
        await trio.sleep(0.3)
        held = len(col.records)
        assert held < sent  # the emitter is blocked, nothing more is read
        col.gate.set()
        with trio.move_on_after(10):
            while len(col.records) + p.metrics.get("udp_kernel_drops", 0) < sent:
                await trio.sleep(0.1)  # the reader refreshes the gauge every second

    col = drive(p, body)
    drops = p.metrics.get("udp_kernel_drops", 0)
    assert drops > 0
    assert len(col.records) + drops == sent
    assert p.metrics["dropped_records"] == drops


def test_config_errors() -> None:
    with pytest.raises(ConfigValueError) as e:
        make_input(Mode="unix_udp")
    assert e.value.key == "path"
    with pytest.raises(ConfigValueError) as e:
        make_input(Mode="tcp", tls="on")
    assert e.value.key == "tls.crt_file"
    with pytest.raises(ConfigValueError) as e:
        make_input(Mode="udp", Parser="no-such-parser")
    assert e.value.key == "parser"


def test_tcp_backpressure_stops_reading_then_delivers_everything() -> None:
    """A blocked pipeline stops the reads: the sender is held back by TCP, nothing is lost or buffered unbounded."""
    port = free_port()
    p = make_input(Mode="tcp", Listen="127.0.0.1", Port=port)
    line = b"<13>1 2024-01-01T00:00:00Z h bp - - - " + b"p" * 960 + b"\n"
    chunk = line * 64
    sent = [0]

    def sender() -> None:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.settimeout(1.0)
            try:
                for _ in range(2000):  # up to 128 MB: far more than any buffer on the way
                    s.sendall(chunk)
                    sent[0] += len(chunk)
            except TimeoutError:
                pass  # the receiver stopped reading: backpressure reached the sender
            else:
                raise AssertionError("the input never stopped reading")

    async def body(p: SyslogInput, col: Collector) -> None:
        col.gate = trio.Event()
        async with trio.open_nursery() as n:
            n.start_soon(trio.to_thread.run_sync, sender)
            await trio.sleep(0.5)
        stalled = sent[0]
        assert stalled < 40 * 2**20
        col.gate.set()
        await col.wait(stalled // len(line), timeout=20)

    col = drive(p, body)
    assert len(col.records) * len(line) >= sent[0] - len(chunk)
