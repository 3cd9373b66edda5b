"""The forward input and output over real sockets: acks after delivery, handshake, bad input, failover.

Each side is tested against the other and against raw clients speaking the wire protocol.
The interop tests against the real Fluent Bit binary are in test_forward_fluentbit.py.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio

from logfwd.plugin import ConfigValueError
from logfwd.plugins._forward.protocol import ClientProtocol, encode_message
from logfwd.plugins.in_forward import PLUGIN as ForwardInput
from logfwd.plugins.in_forward.plugin import ListenError
from logfwd.plugins.out_forward import PLUGIN as ForwardOutput
from logfwd.plugins.out_forward.upstream import UpstreamError, parse_upstream
from tests.backends._proc import free_port
from tests.pluginkit import Collector, make_chunk, make_plugin

NS = 1_000_000_000
T0 = 1_700_000_000 * NS + 123_456_789


def records(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"n": i, "msg": f"line {i}", "nested": {"a": [i, "x"]}} for i in range(start, start + n)]


async def serve(nursery: trio.Nursery, collector: Collector, **opts: Any) -> Any:
    p = make_plugin(ForwardInput, listen="127.0.0.1", port=0, **opts)
    await nursery.start(lambda task_status: p.run(collector.emitter(p), task_status=task_status))
    return p


async def connect(port: int) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port)


async def read_acks(stream: trio.SocketStream, n: int) -> list[str]:
    proto = ClientProtocol()
    acks: list[str] = []
    while len(acks) < n:
        data = await stream.receive_some(65536)
        assert data, "the server closed the connection"
        acks += [e.chunk for e in proto.receive_data(data)]
    return acks


async def eof(stream: trio.SocketStream) -> bool:
    """True once the server has closed the connection (read until EOF or reset)."""
    try:
        while await stream.receive_some(65536):
            pass
    except trio.BrokenResourceError:
        pass
    return True


# ------------------------------------------------------------------ input


def test_ack_is_sent_only_once_the_records_are_delivered() -> None:
    async def main() -> None:
        c = Collector(hold=True)
        async with trio.open_nursery() as n:
            p = await serve(n, c)
            s = await connect(p.port)
            await s.send_all(encode_message("app", [T0, T0 + 1], records(2), chunk="c-1"))
            await c.wait(2)
            with trio.move_on_after(0.3):
                got = await s.receive_some(100)
                pytest.fail(f"acked before delivery: {got!r}")
            c.ack_all()
            with trio.fail_after(5):
                assert await read_acks(s, 1) == ["c-1"]
            assert c.batches[0].tag == "app" and c.times == [T0, T0 + 1] and c.records == records(2)
            n.cancel_scope.cancel()

    trio.run(main)


def test_tag_and_tag_prefix() -> None:
    async def main() -> None:
        for opts, want in (({"tag_prefix": "agg."}, "agg.app"), ({"tag": "fixed"}, "fixed")):
            c = Collector()
            async with trio.open_nursery() as n:
                p = await serve(n, c, **opts)
                s = await connect(p.port)
                await s.send_all(encode_message("app", [T0], records(1)))
                await c.wait(1)
                assert c.batches[0].tag == want
                n.cancel_scope.cancel()

    trio.run(main)


def test_bad_streams_close_only_their_connection(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    max_size = 64 * 1024

    async def main() -> Any:
        c = Collector()
        async with trio.open_nursery() as n:
            p = await serve(n, c, buffer_max_size=max_size, buffer_chunk_size=16384)
            good = await connect(p.port)
            await good.send_all(encode_message("good", [T0], records(1)))
            await c.wait(1)
            garbage = await connect(p.port)
            await garbage.send_all(b"\xc1\xc1 this is not msgpack")
            trunc = await connect(p.port)
            whole = encode_message("t", [T0] * 3, records(3))
            await trunc.send_all(whole[:-5])
            await trunc.send_eof()
            # A message announcing 100 MB of payload: refused once Buffer_Max_Size is reached,
            # long before the sender has written it all.
            big = await connect(p.port)
            header = b"\x92" + msgpack.packb("t") + b"\xc6" + (100 << 20).to_bytes(4, "big")
            sent = 0
            with trio.fail_after(10):
                try:
                    await big.send_all(header)
                    while sent < 100 << 20:
                        await big.send_all(b"\0" * 65536)
                        sent += 65536
                except trio.BrokenResourceError:
                    pass
            for s in (garbage, trunc):
                with trio.fail_after(5):
                    assert await eof(s)
            await good.send_all(encode_message("good", [T0 + 1], records(1, 1)))
            await c.wait(2)
            n.cancel_scope.cancel()
        return p, c, sent

    p, c, sent = trio.run(main)
    assert sent < 100 << 20
    assert [r["n"] for r in c.records] == [0, 1]
    assert p.metrics["protocol_errors"] == 3
    msgs = [r.getMessage() for r in caplog.records]
    assert any("invalid msgpack" in m for m in msgs), msgs
    assert any("cut off" in m for m in msgs), msgs
    assert any(f"Buffer_Max_Size ({max_size} bytes)" in m for m in msgs), msgs


def test_shared_key_handshake_refuses_a_wrong_key() -> None:
    async def main() -> None:
        c = Collector()
        async with trio.open_nursery() as n:
            p = await serve(n, c, shared_key="k1", self_hostname="agg")
            s = await connect(p.port)
            proto = ClientProtocol(shared_key="wrong")
            events = proto.receive_data(await s.receive_some(4096))
            await s.send_all(events[0].data)
            with trio.fail_after(5):
                reply = []
                while not reply:
                    reply = proto.receive_data(await s.receive_some(4096))
            assert "shared key mismatch" in reply[0].reason
            assert await eof(s)
            assert p.metrics["auth_failures"] == 1
            n.cancel_scope.cancel()

    trio.run(main)


def test_bind_failure_is_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        p = make_plugin(ForwardInput, listen="127.0.0.1", port=port)
        with pytest.raises(ListenError) as e:
            trio.run(p.run, Collector().emitter(p))
    assert str(e.value) == f"cannot listen on 127.0.0.1:{port}/tcp: address already in use"


def test_unix_socket_listener(tmp_path: Path) -> None:
    path = str(tmp_path / "fwd.sock")

    async def main() -> None:
        c = Collector()
        p = make_plugin(ForwardInput, unix_path=path, unix_perm="0600")
        async with trio.open_nursery() as n:
            await n.start(lambda task_status: p.run(c.emitter(p), task_status=task_status))
            assert oct(os.stat(path).st_mode & 0o777) == "0o600"
            s = await trio.open_unix_socket(path)
            await s.send_all(encode_message("u", [T0], records(1)))
            await c.wait(1)
            n.cancel_scope.cancel()

    trio.run(main)
    assert not os.path.exists(path)


def test_config_errors() -> None:
    with pytest.raises(ConfigValueError, match="Shared_Key"):
        make_plugin(ForwardInput, **{"security.users": "u p"})
    with pytest.raises(ConfigValueError, match="username password"):
        make_plugin(ForwardInput, shared_key="k", **{"security.users": "justone"})


# ------------------------------------------------------------------ output → input


@pytest.mark.parametrize("out_opts,in_opts", [
    ({}, {}),
    ({"require_ack_response": "on"}, {}),
    ({"require_ack_response": "on", "compress": "gzip"}, {}),
    ({"require_ack_response": "on", "shared_key": "s", "self_hostname": "node", "username": "u", "password": "p"},
     {"shared_key": "s", "self_hostname": "agg", "security.users": "u p"}),
    ({"time_as_integer": "on", "send_options": "on", "tag": "over"}, {}),
])
def test_output_to_input(out_opts: dict[str, Any], in_opts: dict[str, Any]) -> None:
    chunks = [make_chunk(records(100, k * 100), [T0 + k * 100 + i for i in range(100)], tag="app") for k in range(3)]

    async def main() -> tuple[list[Any], Collector]:
        c = Collector()
        async with trio.open_nursery() as n:
            p = await serve(n, c, **in_opts)
            out = make_plugin(ForwardOutput, host="127.0.0.1", port=p.port, **out_opts)
            await out.start()
            results = [await out.flush(ch) for ch in chunks]
            await c.wait(300)
            await out.stop()
            n.cancel_scope.cancel()
        return results, c

    results, c = trio.run(main)
    assert all(r.delivered_all for r in results), [r.reason for r in results]
    assert c.records == records(300)
    if out_opts.get("time_as_integer"):
        assert c.times == [T0 // NS * NS] * 300
    else:
        assert c.times == [T0 + i for i in range(300)]
    assert {b.tag for b in c.batches} == {out_opts.get("tag", "app")}


def test_output_retries_when_no_ack_comes() -> None:
    async def main() -> Any:
        c = Collector(hold=True)  # delivered nowhere: the input never acks
        async with trio.open_nursery() as n:
            p = await serve(n, c)
            out = make_plugin(ForwardOutput, host="127.0.0.1", port=p.port, require_ack_response="on",
                              ack_timeout="300ms")
            await out.start()
            r = await out.flush(make_chunk(records(2)))
            await out.stop()
            n.cancel_scope.cancel()
        return r

    r = trio.run(main)
    assert r.retry_all and "timed out" in r.reason


def test_output_reports_refused_handshake_and_refused_connection() -> None:
    async def main() -> Any:
        c = Collector()
        async with trio.open_nursery() as n:
            p = await serve(n, c, shared_key="right")
            out = make_plugin(ForwardOutput, host="127.0.0.1", port=p.port, shared_key="wrong")
            r1 = await out.flush(make_chunk(records(1)))
            n.cancel_scope.cancel()
        out = make_plugin(ForwardOutput, host="127.0.0.1", port=free_port())
        r2 = await out.flush(make_chunk(records(1)))
        return r1, r2

    r1, r2 = trio.run(main)
    assert r1.retry_all and "shared key mismatch" in r1.reason
    assert r2.retry_all and "refused" in r2.reason.lower()


def test_output_reconnects_after_the_server_closed_an_idle_connection() -> None:
    async def main() -> Any:
        c = Collector()
        async with trio.open_nursery() as n:
            p = await serve(n, c)
            out = make_plugin(ForwardOutput, host="127.0.0.1", port=p.port)
            assert (await out.flush(make_chunk(records(1)))).delivered_all
            n.cancel_scope.cancel()  # the server goes away: the idle connection is dead
        async with trio.open_nursery() as n:
            p2 = make_plugin(ForwardInput, listen="127.0.0.1", port=p.port)
            await n.start(lambda task_status: p2.run(c.emitter(p2), task_status=task_status))
            assert (await out.flush(make_chunk(records(1, 1)))).delivered_all
            await c.wait(2)
            n.cancel_scope.cancel()
        return c

    c = trio.run(main)
    assert [r["n"] for r in c.records] == [0, 1]


def test_upstream_round_robin_skips_a_dead_node(tmp_path: Path) -> None:
    """Fluent Bit's Upstream balances round-robin; a dead node costs no retry while another is up."""
    dead = free_port()

    async def main() -> Any:
        a, b = Collector(), Collector()
        async with trio.open_nursery() as n:
            pa = await serve(n, a, shared_key="s2")
            pb = await serve(n, b)
            up = tmp_path / "upstream.conf"
            up.write_text(f"[UPSTREAM]\n    name pool\n\n"
                          f"[NODE]\n    name a\n    host 127.0.0.1\n    port {pa.port}\n    shared_key s2\n\n"
                          f"[NODE]\n    name dead\n    host 127.0.0.1\n    port {dead}\n\n"
                          f"[NODE]\n    name b\n    host 127.0.0.1\n    port {pb.port}\n")
            out = make_plugin(ForwardOutput, upstream=str(up), require_ack_response="on")
            results = [await out.flush(make_chunk(records(1, start=i))) for i in range(6)]
            await a.wait(1)
            await b.wait(1)
            await out.stop()
            n.cancel_scope.cancel()
        return results, a, b, out

    results, a, b, out = trio.run(main)
    assert all(r.delivered_all for r in results)  # the dead node's turn went to the next node at once
    got = sorted(r["n"] for r in a.records + b.records)
    assert got == list(range(6))
    assert len(a.records) >= 2 and len(b.records) >= 2  # both live nodes took a share
    assert out.metrics["errors"] == 1  # marked down after one failure, then skipped


def test_upstream_every_node_down_is_one_retry_naming_them(tmp_path: Path) -> None:
    d1, d2 = free_port(), free_port()
    up = tmp_path / "upstream.conf"
    up.write_text(f"[UPSTREAM]\n    name pool\n[NODE]\n    name one\n    host 127.0.0.1\n    port {d1}\n"
                  f"[NODE]\n    name two\n    host 127.0.0.1\n    port {d2}\n")
    out = make_plugin(ForwardOutput, upstream=str(up))
    r = trio.run(out.flush, make_chunk(records(1)))
    assert r.retry_all and f"127.0.0.1:{d1}" in r.reason and f"127.0.0.1:{d2}" in r.reason


def test_upstream_file_errors() -> None:
    with pytest.raises(UpstreamError, match="no \\[NODE\\]"):
        parse_upstream("[UPSTREAM]\n    name x\n")
    with pytest.raises(UpstreamError, match=":3: .*port"):
        parse_upstream("[NODE]\n    host a\n    port x\n")
    name, nodes = parse_upstream("[UPSTREAM]\n name u\n[NODE]\n name a\n host h\n port 1\n TLS on\n")
    assert name == "u" and nodes[0].port == 1 and nodes[0].options["tls"] == "on"


def _make_cert(d: Path) -> tuple[Path, Path]:
    crt, key = d / "srv.crt", d / "srv.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(crt), "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)
    return crt, key


def test_tls_output_to_tls_input(tmp_path: Path) -> None:
    crt, key = _make_cert(tmp_path)

    async def main() -> Any:
        c = Collector()
        async with trio.open_nursery() as n:
            p = await serve(n, c, tls="on", tls__crt_file=crt, tls__key_file=key, tls__verify="off")
            out = make_plugin(ForwardOutput, host="localhost", port=p.port, tls="on", tls__ca_file=crt,
                              tls__verify="on", require_ack_response="on")
            r = await out.flush(make_chunk(records(5)))
            await c.wait(5)
            await out.stop()
            n.cancel_scope.cancel()
        return r, c

    r, c = trio.run(main)
    assert r.delivered_all and c.records == records(5)


def test_message_mode_records_of_one_read_become_one_batch_with_every_ack() -> None:
    async def main() -> Collector:
        c = Collector()
        async with trio.open_nursery() as n:
            p = await serve(n, c)
            s = await connect(p.port)
            data = b"".join(msgpack.packb(["m", i, {"n": i}, {"chunk": f"c{i}"}]) for i in range(50))
            await s.send_all(data)
            with trio.fail_after(5):
                acks = await read_acks(s, 50)
            assert sorted(acks) == sorted(f"c{i}" for i in range(50))
            n.cancel_scope.cancel()
        return c

    c = trio.run(main)
    assert [r["n"] for r in c.records] == list(range(50)) and c.times == [i * NS for i in range(50)]
    assert len(c.batches) < 50


def test_good_messages_before_garbage_in_the_same_read_are_kept() -> None:
    async def main() -> tuple[Collector, Any]:
        c = Collector()
        async with trio.open_nursery() as n:
            p = await serve(n, c)
            s = await connect(p.port)
            await s.send_all(encode_message("g", [T0, T0], records(2)) + b"\xc1garbage")
            with trio.fail_after(5):
                assert await eof(s)
            n.cancel_scope.cancel()
        return c, p

    c, p = trio.run(main)
    assert c.records == records(2) and p.metrics["protocol_errors"] == 1


def test_output_over_a_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "fwd.sock")

    async def main() -> tuple[Any, Collector]:
        c = Collector()
        p = make_plugin(ForwardInput, unix_path=path)
        async with trio.open_nursery() as n:
            await n.start(lambda task_status: p.run(c.emitter(p), task_status=task_status))
            out = make_plugin(ForwardOutput, unix_path=path, require_ack_response="on")
            r = await out.flush(make_chunk(records(3)))
            await out.stop()
            n.cancel_scope.cancel()
        return r, c

    r, c = trio.run(main)
    assert r.delivered_all and c.records == records(3)
