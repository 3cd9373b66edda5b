"""LineFramer: lines and checkpoint offsets do not depend on how the stream is chunked."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logfwd._fastparse import LineFramer


def reference(data: bytes, max_line: int, skip: bool, flush: bool) -> tuple[list[bytes], list[int], int]:
    """The specification, written plainly: split at '\\n', strip one '\\r', apply the limit."""
    lines: list[bytes] = []
    offs: list[int] = []
    long_lines = 0
    pos = 0
    while True:
        nl = data.find(b"\n", pos)
        end = nl if nl >= 0 else len(data)
        if nl < 0 and (not flush or pos == len(data)):
            break
        line = data[pos:end]
        if line.endswith(b"\r"):
            line = line[:-1]
        off = nl + 1 if nl >= 0 else len(data)
        if len(line) > max_line:
            long_lines += 1
            if not skip:
                lines.append(line[:max_line])
                offs.append(off)
        else:
            lines.append(line)
            offs.append(off)
        if nl < 0:
            break
        pos = nl + 1
    return lines, offs, long_lines


def run(chunks: list[bytes], max_line: int, skip: bool, flush: bool, start: int = 0) -> tuple[list, list, int]:
    fr = LineFramer(max_line, skip, start)
    lines: list[bytes] = []
    offs: list[int] = []
    for c in chunks:
        ln, of = fr.feed(c)
        assert len(ln) == len(of)
        lines += ln
        offs += of
    assert fr.offset == start + sum(map(len, chunks))
    if flush:
        ln, of = fr.flush()
        lines += ln
        offs += of
        assert fr.pending == 0
    return lines, offs, fr.long_lines


def test_basic_lines_offsets_and_tail() -> None:
    fr = LineFramer()
    assert fr.feed(b"one\ntwo\r\nthr") == ([b"one", b"two"], [4, 9])
    assert fr.pending == 3
    assert fr.feed(b"ee\n\nfour") == ([b"three", b""], [15, 16])
    assert fr.pending == 4 and fr.offset == 20
    assert fr.flush() == ([b"four"], [20])
    assert fr.flush() == ([], [])


def test_start_offset_and_reset() -> None:
    fr = LineFramer(offset=1000)
    assert fr.feed(b"a\nb") == ([b"a"], [1002])
    fr.reset(50)
    assert fr.pending == 0 and fr.offset == 50
    assert fr.feed(b"c\n") == ([b"c"], [52])


def test_long_line_skipped_across_chunks_and_counted_once() -> None:
    fr = LineFramer(max_line_size=8, skip_long_lines=True)
    out = []
    for piece in (b"ok\n", b"x" * 5, b"x" * 30, b"x" * 30, b"\nafter\n"):
        out.append(fr.feed(piece))
    lines = [line for ls, _ in out for line in ls]
    assert lines == [b"ok", b"after"]
    assert fr.long_lines == 1
    # the line after the dropped one still carries its true end offset
    assert out[-1][1] == [3 + 65 + 1 + 6]


def test_long_line_truncated_is_emitted_at_its_newline() -> None:
    fr = LineFramer(max_line_size=4, skip_long_lines=False)
    assert fr.feed(b"abcdefgh") == ([], [])  # held: its offset is not known yet
    assert fr.feed(b"ij\nxy\n") == ([b"abcd", b"xy"], [11, 14])
    assert fr.long_lines == 1


def test_exact_limit_with_crlf_is_not_long() -> None:
    fr = LineFramer(max_line_size=3)
    assert fr.feed(b"abc\r") == ([], [])
    assert fr.feed(b"\n") == ([b"abc"], [5])
    assert fr.long_lines == 0


def test_memory_stays_bounded_for_a_huge_line() -> None:
    fr = LineFramer(max_line_size=16, skip_long_lines=False)
    for _ in range(100):
        fr.feed(b"y" * 10_000)
    assert fr.pending == 1_000_000  # bytes since the last line end, not bytes held
    assert fr.flush() == ([b"y" * 16], [1_000_000])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        LineFramer(max_line_size=0)
    assert LineFramer().feed(bytearray(b"a\n")) == ([b"a"], [2])
    assert LineFramer().feed(memoryview(b"a\nb")) == ([b"a"], [2])


streams = st.lists(st.sampled_from([b"a", b"bc", b"\n", b"\r", b"\r\n", b"xyz" * 3, b"\x00", b"\xff"]),
                   max_size=60).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(data=streams, cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=12),
       max_line=st.integers(min_value=1, max_value=12), skip=st.booleans(), flush=st.booleans(),
       start=st.integers(min_value=0, max_value=10**12))
def test_any_chunking_gives_the_reference_result(data: bytes, cuts: list[int], max_line: int, skip: bool,
                                                 flush: bool, start: int) -> None:
    points = sorted({c for c in cuts if c <= len(data)})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    lines, offs, long_lines = run(chunks, max_line, skip, flush, start)
    ref_lines, ref_offs, ref_long = reference(data, max_line, skip, flush)
    assert lines == ref_lines
    assert offs == [start + o for o in ref_offs]
    if flush:
        assert long_lines == ref_long
    else:  # a long unterminated tail may already be counted before its end is seen
        assert long_lines in (ref_long, reference(data, max_line, skip, True)[2])
    assert offs == sorted(offs)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=300), size=st.integers(min_value=1, max_value=40))
def test_byte_at_a_time_equals_one_feed(data: bytes, size: int) -> None:
    one = run([data], 10, True, True)
    many = run([data[i:i + size] for i in range(0, len(data), size)], 10, True, True)
    assert one == many
    # a restart from any reported offset frames the rest of the stream the same way
    lines, offs, _ = one
    for k, off in enumerate(offs[:5]):
        assert run([data[off:]], 10, True, True, off)[0] == lines[k + 1:]
