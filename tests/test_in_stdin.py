"""The stdin input: real standard input (pipe, file), JSON or raw lines, EOF ends the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from logfwd.batch import Batch
from logfwd.config import default_parsers
from logfwd.plugin import ConfigValueError, find_plugin
from logfwd.plugins import in_stdin

from .pluginkit import Collector, make_plugin

NS = 1_000_000_000

# A child process that runs the stdin input on its real standard input and
# prints what it emitted: the test sees what a user piping into logfwd would get.
CHILD = r"""
import json, sys, trio
from logfwd.plugin import find_plugin
from tests.pluginkit import Collector, make_plugin

p = make_plugin(find_plugin("input", "stdin"), parsers=None)
col = Collector()
trio.run(p.run, col.emitter(p))
out = [{"times": b.times, "records": b.records} for b in col.batches]
json.dump({"batches": out, "metrics": dict(p.metrics)}, sys.stdout)
"""
ROOT = Path(__file__).resolve().parent.parent  # the child imports tests.pluginkit from here

SAMPLE = (
    b'{"key": "some value", "n": 1}\n'
    b"[1475898286.5, {\"key\": \"event array\"}]\n"
    b'[[1700000000.25, {"meta": 1}], {"key": "v2 event"}]\n'
    b"plain text line\r\n"
    b"\n"
    b"{not json}\n"
    b"caf\xc3\xa9 \xff\n"
    b'{"last": "unterminated"}'
)


def check_sample(result: dict[str, Any], started_ns: int) -> None:
    times = [t for b in result["batches"] for t in b["times"]]
    records = [r for b in result["batches"] for r in b["records"]]
    assert records == [
        {"key": "some value", "n": 1},
        {"key": "event array"},
        {"key": "v2 event"},
        {"log": "plain text line"},
        {"log": "{not json}"},
        {"log": "café \ufffd"},
        {"last": "unterminated"},
    ]
    assert times[1] == 1475898286_500_000_000
    assert times[2] == 1700000000_250_000_000
    assert abs(times[0] - started_ns) < 60 * NS
    assert result["metrics"]["records"] == 7
    assert result["metrics"]["parse_errors"] == 1  # "{not json}" looked like JSON


def run_child(stdin: Any, data: bytes | None = None) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", CHILD], input=data, stdin=stdin if data is None else None,
                          capture_output=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout)


def test_pipe_into_stdin() -> None:
    started = time.time_ns()
    check_sample(run_child(None, SAMPLE), started)


def test_file_redirected_to_stdin(tmp_path: Path) -> None:
    f = tmp_path / "input.log"
    f.write_bytes(SAMPLE)
    started = time.time_ns()
    with open(f, "rb") as fh:
        check_sample(run_child(fh), started)


def make(fd: int, parsers: Any = None, **raw: str) -> Any:
    p = make_plugin(find_plugin("input", "stdin"), parsers=parsers, **raw)
    p.fd = fd
    return p


def run_with_writer(p: Any, write: Any) -> list[Batch]:
    """Run the input on a pipe that ``write(fd)`` fills from a thread, until EOF."""
    r, w = os.pipe()
    p.fd = r
    col = Collector()

    def writer() -> None:
        try:
            write(w)
        finally:
            os.close(w)

    async def main() -> None:
        with trio.fail_after(60):
            await p.run(col.emitter(p))

    t = threading.Thread(target=writer)
    t.start()
    try:
        trio.run(main)
    finally:
        t.join()
        os.close(r)
    return col.batches


def test_many_lines_in_order_and_in_batches() -> None:
    n = 60000
    p = make(0)

    def write(fd: int) -> None:
        payload = b"".join(b'{"seq": %d, "msg": "line %d"}\n' % (i, i) for i in range(n))
        view = memoryview(payload)
        while view:  # irregular writes: lines split across reads
            k = os.write(fd, view[:7777])
            view = view[k:]

    batches = run_with_writer(p, write)
    seqs = [r["seq"] for b in batches for r in b.records]
    assert seqs == list(range(n))
    assert len(batches) < n // 50  # batched per read, not per line
    assert p.metrics["records"] == n


def test_long_line_is_truncated_not_lost() -> None:
    p = make(0)
    big = b"x" * (1024 * 1024 + 500)

    def write(fd: int) -> None:
        for chunk in (b"before\n", big, b"\nafter\n"):
            view = memoryview(chunk)
            while view:
                k = os.write(fd, view)
                view = view[k:]

    records = [r for b in run_with_writer(p, write) for r in b.records]
    assert records[0] == {"log": "before"}
    assert records[1]["log"] == "x" * (1024 * 1024)
    assert records[2] == {"log": "after"}
    assert p.metrics["truncated_lines"] == 1


def test_input_is_not_blocked_by_a_silent_writer() -> None:
    """With nothing on stdin the event loop keeps running other tasks."""
    p = make(0)
    r, w = os.pipe()
    p.fd = r
    ticks = 0

    async def main() -> None:
        nonlocal ticks
        async with trio.open_nursery() as nursery:
            nursery.start_soon(p.run, Collector().emitter(p))
            for _ in range(20):
                await trio.sleep(0.01)
                ticks += 1
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
        assert ticks == 20
        assert os.get_blocking(r)  # the descriptor's mode was restored
    finally:
        os.close(w)
        os.close(r)


def test_parser_option() -> None:

    registry = default_parsers()
    p = make(0, parsers=registry, Parser="json")

    def write(fd: int) -> None:
        os.write(fd, b'{"a": 1}\nnot json\n')

    records = [r for b in run_with_writer(p, write) for r in b.records]
    assert records[0]["a"] == 1
    assert records[1] == {"log": "not json"}  # the unparsable line is kept...
    assert p.metrics["parse_errors"] == 1  # ...and counted


def test_unknown_parser_is_a_config_error() -> None:
    class Registry:
        def get(self, name: str) -> Any:
            raise KeyError(name)

        def names(self) -> list[str]:
            return ["json", "docker"]

    with pytest.raises(ConfigValueError) as e:
        make(0, parsers=Registry(), Parser="jsn")
    assert e.value.key == "parser" and "docker" in e.value.message


def test_line_framing_across_arbitrary_reads() -> None:
    """Whatever the read boundaries, the lines are those of the whole stream."""


    cls = in_stdin.LineFramer

    @settings(max_examples=150, deadline=None)
    @given(st.lists(st.sampled_from([b"a", b"bc", b"\n", b"\r\n", b"\r", b"xyz\n", b""]), max_size=40),
           st.lists(st.integers(1, 9), min_size=1, max_size=10))
    def check(pieces: list[bytes], cuts: list[int]) -> None:
        data = b"".join(pieces)
        framer = cls(1000, False, 0)
        got: list[bytes] = []
        pos, k = 0, 0
        while pos < len(data):
            step = cuts[k % len(cuts)]
            got.extend(framer.feed(data[pos : pos + step])[0])
            pos += step
            k += 1
        got.extend(framer.flush()[0])
        parts = data.split(b"\n")
        if parts[-1] == b"":  # nothing after the last newline
            parts.pop()
        expected = [x[:-1] if x.endswith(b"\r") else x for x in parts]
        assert got == expected

    check()
