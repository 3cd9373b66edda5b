"""The Forward Protocol v1 codec and handshake, sans I/O: every mode, any chunking, bad input."""

from __future__ import annotations

import gzip
import hashlib
import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logfwd.plugins._forward.protocol import (
    Ack,
    Authenticated,
    AuthFailed,
    ClientProtocol,
    Entries,
    ProtocolError,
    Reply,
    ServerProtocol,
    encode_event_time,
    encode_message,
    gunzip,
    shared_key_digest,
)

NS = 1_000_000_000
T = 1_700_000_000 * NS + 123_456_789


def et(ns: int) -> msgpack.ExtType:
    return msgpack.ExtType(0, struct.pack(">II", ns // NS, ns % NS))


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def server(**kw: object) -> ServerProtocol:
    return ServerProtocol(max_size=kw.pop("max_size", 1 << 20), **kw)  # type: ignore[arg-type]


def entries(events: list[object]) -> list[Entries]:
    return [e for e in events if isinstance(e, Entries)]


def test_message_mode_with_every_time_form() -> None:
    p = server()
    data = pack(["a", et(T), {"k": 1}]) + pack(["b", 1_700_000_000, {"k": 2}]) + pack(["c", 1.5, {"k": 3}, {"chunk": "x"}])
    ev = entries(p.receive_data(data))
    assert [(e.tag, e.times, e.records, e.chunk) for e in ev] == [
        ("a", [T], [{"k": 1}], None),
        ("b", [1_700_000_000 * NS], [{"k": 2}], None),
        ("c", [1_500_000_000], [{"k": 3}], "x"),
    ]


def test_forward_mode_and_fluent_bit_metadata_entries() -> None:
    p = server()
    msg = pack(["t", [[et(T), {"i": 0}], [[et(T + 1), {"m": 1}], {"i": 1}]], {"size": 2, "chunk": "c1"}])
    (e,) = entries(p.receive_data(msg))
    assert e.times == [T, T + 1] and e.records == [{"i": 0}, {"i": 1}] and e.chunk == "c1"
    assert e.nbytes == len(msg)


def test_packed_and_compressed_packed_forward() -> None:
    payload = b"".join(pack([et(T + i), {"i": i}]) for i in range(5))
    p = server()
    (a,) = entries(p.receive_data(pack(["t", payload])))
    # Two gzip members one after the other, as a sender appending to its buffer writes them.
    gz = gzip.compress(payload[:20]) + gzip.compress(payload[20:])
    (b,) = entries(p.receive_data(pack(["t", gz, {"compressed": "gzip", "size": 5}])))
    assert a.records == b.records == [{"i": i} for i in range(5)]
    assert a.times == b.times == [T + i for i in range(5)]


def test_encode_message_round_trips_to_the_nanosecond() -> None:
    times = [T + i for i in range(3)]
    recs = [{"n": i, "s": "é"} for i in range(3)]
    for kw in ({}, {"compress": True}, {"chunk": "abc"}, {"send_options": True}):
        (e,) = entries(server().receive_data(encode_message("tag", times, recs, **kw)))  # type: ignore[arg-type]
        assert (e.tag, e.times, e.records, e.chunk) == ("tag", times, recs, kw.get("chunk"))
    (e,) = entries(server().receive_data(encode_message("tag", times, recs, time_as_integer=True)))
    assert e.times == [T // NS * NS] * 3


def test_heartbeat_is_ignored() -> None:
    assert server().receive_data(pack(None)) == []


@pytest.mark.parametrize("bad", [
    pack({"not": "an array"}),
    pack(["tag"]),
    pack(["tag", et(T)]),
    pack(["tag", et(T), "not a map"]),
    pack(["tag", [[et(T)]]]),
    pack(["tag", [["time", {}]]]),
    pack(["tag", b"\xc1"]),
    pack(["tag", pack([et(T), {}])[:-1]]),
    pack(["tag", b"not gzip", {"compressed": "gzip"}]),
    pack(["tag", b"x", {"compressed": "lz4"}]),
    b"\xc1",
])
def test_malformed_messages_are_protocol_errors(bad: bytes) -> None:
    with pytest.raises(ProtocolError):
        server().receive_data(bad)


def test_oversize_message_is_refused_before_it_is_buffered() -> None:
    p = server(max_size=1024)
    big = pack(["t", et(T), {"x": "y" * 5000}])
    with pytest.raises(ProtocolError, match="Buffer_Max_Size"):
        for i in range(0, len(big), 100):
            p.receive_data(big[i:i + 100])


def test_gzip_bomb_is_refused() -> None:
    with pytest.raises(ProtocolError, match="inflates"):
        gunzip(gzip.compress(b"\0" * 100_000), 10_000)


def test_truncated_stream_leaves_bytes_pending() -> None:
    p = server()
    msg = pack(["t", et(T), {"k": 1}])
    assert p.receive_data(msg[:-2]) == [] and p.pending == len(msg) - 2


# ---------------------------------------------------------------- any chunking

_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20) | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)
_records = st.dictionaries(st.text(max_size=10), _values, max_size=5)
_times = st.integers(0, 2**32 - 1).map(lambda s: s * NS) | st.integers(0, (2**32 - 1) * NS)
_message = st.tuples(st.sampled_from(["message", "forward", "packed", "gzip"]), st.text(min_size=1, max_size=10),
                     st.lists(st.tuples(_times, _records), min_size=1, max_size=5), st.none() | st.text(max_size=8))


def _encode(mode: str, tag: str, evs: list[tuple[int, dict]], chunk: str | None) -> bytes:
    opt = {"chunk": chunk} if chunk is not None else {}
    if mode == "message":
        return b"".join(pack([tag, et(t), r, opt]) for t, r in evs)
    if mode == "forward":
        return pack([tag, [[et(t), r] for t, r in evs], opt])
    ts, rs = [t for t, _ in evs], [r for _, r in evs]
    return encode_message(tag, ts, rs, chunk=chunk, compress=mode == "gzip")


@settings(max_examples=150, deadline=None)
@given(st.lists(_message, min_size=1, max_size=4), st.data())
def test_any_chunking_of_a_stream_gives_the_same_events(messages: list, data: st.DataObject) -> None:
    stream = b"".join(pack(None) + _encode(*m) for m in messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    p = server()
    got: list[Entries] = []
    prev = 0
    for c in [*cuts, len(stream)]:
        got += entries(p.receive_data(stream[prev:c]))
        prev = c
    assert p.pending == 0
    flat = [(e.tag, t, r) for e in got for t, r in zip(e.times, e.records, strict=True)]
    want = [(tag, t, r) for _, tag, evs, _ in messages for t, r in evs]
    assert flat == want


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=1, max_size=200))
def test_garbage_never_escapes_as_anything_but_protocol_error(junk: bytes) -> None:
    p = server(max_size=4096)
    try:
        for ev in p.receive_data(junk):
            assert isinstance(ev, Entries)
    except ProtocolError:
        pass


# ------------------------------------------------------------------ handshake

def _run_handshake(srv: ServerProtocol, cli: ClientProtocol) -> list[object]:
    (ping,) = cli.receive_data(srv.start())
    assert isinstance(ping, Reply)
    (answer,) = srv.receive_data(ping.data)
    if isinstance(answer, AuthFailed):
        return [answer, *cli.receive_data(answer.reply)]
    assert isinstance(answer, Authenticated)
    return [answer, *cli.receive_data(answer.reply)]


def test_handshake_with_shared_key_and_users() -> None:
    srv = server(shared_key="s3cret", self_hostname="agg", users={"u": "pw"})
    cli = ClientProtocol(shared_key="s3cret", self_hostname="node1", username="u", password="pw")
    a, b = _run_handshake(srv, cli)
    assert isinstance(a, Authenticated) and a.hostname == "node1"
    assert isinstance(b, Authenticated) and b.hostname == "agg" and cli.ready and srv.authenticated


@pytest.mark.parametrize("key,user,pw,why", [("wrong", "u", "pw", "shared key"), ("s3cret", "u", "bad", "password")])
def test_handshake_refusals(key: str, user: str, pw: str, why: str) -> None:
    srv = server(shared_key="s3cret", users={"u": "pw"})
    cli = ClientProtocol(shared_key=key, username=user, password=pw)
    a, b = _run_handshake(srv, cli)
    assert isinstance(a, AuthFailed) and why in a.reason
    assert isinstance(b, AuthFailed) and not cli.ready and not srv.authenticated


def test_digest_matches_the_spec_formula() -> None:
    assert shared_key_digest(b"salt", "host", b"nonce", "key") == hashlib.sha512(b"salthostnoncekey").hexdigest()


def test_data_before_the_handshake_is_refused() -> None:
    srv = server(shared_key="k")
    (ev,) = srv.receive_data(pack(["t", et(T), {}]))
    assert isinstance(ev, AuthFailed)


def test_client_reads_acks() -> None:
    cli = ClientProtocol()
    assert cli.ready
    assert cli.receive_data(ServerProtocol.ack("a") + ServerProtocol.ack("b")) == [Ack("a"), Ack("b")]


def test_event_time_encoding() -> None:
    assert encode_event_time(T).data == struct.pack(">II", T // NS, T % NS)


def test_good_messages_before_an_error_are_returned_first() -> None:
    p = server()
    (e,) = p.receive_data(pack(["t", et(T), {"k": 1}]) + b"\xc1")
    assert e.records == [{"k": 1}] and p.error is not None
    with pytest.raises(ProtocolError):
        p.receive_data(b"")
