"""RFC 6587 framing: the same messages come out whatever way the stream is chunked."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logfwd.plugins.in_syslog.framing import SyslogFramer

# A syslog message body: anything but LF for newline framing (octet counting carries LF too).
_line = st.binary(min_size=1, max_size=60).filter(lambda b: b"\n" not in b and not b.endswith(b"\r"))
_body = st.binary(min_size=1, max_size=60).filter(lambda b: not b.endswith((b"\n", b"\r")))


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


def _run(framer: SyslogFramer, chunks: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for c in chunks:
        out += framer.feed(c)
    return out + framer.close()


def _octets(msgs: list[bytes], trailer: bytes = b"") -> bytes:
    return b"".join(b"%d %s" % (len(m) + len(trailer), m + trailer) for m in msgs)


@settings(max_examples=200, deadline=None)
@given(st.lists(_line, min_size=1, max_size=12), st.lists(st.integers(0, 2000), max_size=10))
def test_newline_any_chunking(msgs: list[bytes], cuts: list[int]) -> None:
    # The first byte decides the framing: a body starting with a digit would be read as octet counting.
    msgs = [b"<13>" + m for m in msgs]
    stream = b"".join(m + b"\n" for m in msgs)
    f = SyslogFramer(max_size=1000)
    assert _run(f, _chunks(stream, cuts)) == msgs
    assert f.framing == "newline" and f.error is None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(_body, min_size=1, max_size=12),
    st.lists(st.integers(0, 2000), max_size=10),
    st.sampled_from([b"", b"\n", b"\r\n"]),
)
def test_octet_counting_any_chunking(msgs: list[bytes], cuts: list[int], trailer: bytes) -> None:
    stream = _octets(msgs, trailer)
    f = SyslogFramer(max_size=1000)
    assert _run(f, _chunks(stream, cuts)) == msgs
    assert f.framing == "octet_counting" and f.error is None and f.incomplete == 0


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=40).filter(lambda b: not b.endswith(b"\n")), min_size=1, max_size=10),
    st.lists(st.integers(0, 2000), max_size=10),
    st.sampled_from(["truncate", "drop"]),
)
def test_octet_oversize_keeps_sync(msgs: list[bytes], cuts: list[int], mode: str) -> None:
    """An oversize octet-counted message is truncated or dropped; the ones after it still arrive."""
    limit = 20
    stream = _octets(msgs)
    f = SyslogFramer(max_size=limit, oversize=mode)
    got = _run(f, _chunks(stream, cuts))
    big = [m for m in msgs if len(m) > limit]
    if mode == "truncate":
        assert got == [m[:limit] for m in msgs]
        assert f.truncated == len(big) and f.dropped == 0
    else:
        assert got == [m for m in msgs if len(m) <= limit]
        assert f.dropped == len(big) and f.truncated == 0


@settings(max_examples=150, deadline=None)
@given(st.lists(_line, min_size=1, max_size=10), st.lists(st.integers(0, 2000), max_size=10),
       st.sampled_from(["truncate", "drop"]))
def test_newline_oversize(msgs: list[bytes], cuts: list[int], mode: str) -> None:
    limit = 24
    msgs = [b"<13>" + m for m in msgs]
    stream = b"".join(m + b"\n" for m in msgs)
    f = SyslogFramer(max_size=limit, oversize=mode)
    got = _run(f, _chunks(stream, cuts))
    if mode == "truncate":
        assert got == [m[:limit] for m in msgs]
    else:
        assert got == [m for m in msgs if len(m) <= limit]
    assert f.truncated + f.dropped == sum(len(m) > limit for m in msgs)
    assert f.buffered <= limit + 1


def test_rsyslog_frame_with_embedded_newline() -> None:
    body = b"<13>1 2024-01-01T00:00:00Z h app 1 - - line one\nline two"
    f = SyslogFramer()
    assert f.feed(b"%d %s\n" % (len(body) + 1, body)) == [body]


@pytest.mark.parametrize(
    "stream",
    [b"12 <13>hello wo12x <13>bad", b"5 <13>x\n99999999999 too long", b"4 <13>00 x", b"7 <13>abc0"],
)
def test_malformed_octet_stream_sets_error(stream: bytes) -> None:
    f = SyslogFramer()
    out = f.feed(stream)
    assert f.error is not None
    assert f.feed(b"5 hello") == [] and f.close() == []
    # Messages before the bad frame are still returned.
    assert all(m.startswith(b"<13>") for m in out)


def test_forced_framing() -> None:
    f = SyslogFramer(framing="newline")
    assert f.feed(b"12 not a count\n") == [b"12 not a count"]
    g = SyslogFramer(framing="octet_counting")
    assert g.feed(b"<13>x\n") == [] and g.error is not None


def test_incomplete_octet_frame_at_eof_is_counted() -> None:
    f = SyslogFramer()
    assert f.feed(b"20 <13>short") == []
    assert f.close() == [] and f.incomplete == 1


def test_crlf_and_empty_lines() -> None:
    f = SyslogFramer()
    assert f.feed(b"<13>a\r\n\n<13>b\n<13>c") == [b"<13>a", b"<13>b"]
    assert f.close() == [b"<13>c"]
