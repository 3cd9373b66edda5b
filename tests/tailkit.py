"""Helpers for the tail tests: a numbered-line writer, a line counter and an in-process harness.

The harness runs the real ``tail`` plugin with a real ``Emitter``, ``MemBudget``
and ``AckTracker``; its dispatch stands in for the engine's router and can hold
acknowledgements (a slow or failing output) or give them at once.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import trio

from logfwd.batch import MemBudget
from logfwd.plugin import find_plugin
from tests.pluginkit import DEFAULT, Collector, make_plugin

__all__ = ["LINE_RE", "NumberedWriter", "numbers", "assert_exactly", "Collector", "Harness", "run_tail"]

LINE_RE = re.compile(r"(\w+)-(\d{8})")


class NumberedWriter:
    """Appends ``<name>-<00000042> payload`` lines to a file, numbering across rotations."""

    def __init__(self, path: Path, name: str = "L", payload: int = 40) -> None:
        self.path = Path(path)
        self.name = name
        self.next = 0
        self.pad = "x" * payload

    def lines(self, n: int) -> bytes:
        out = b"".join(f"{self.name}-{i:08d} {self.pad}\n".encode() for i in range(self.next, self.next + n))
        self.next += n
        return out

    def write(self, n: int, fsync: bool = False) -> None:
        with open(self.path, "ab") as fh:
            fh.write(self.lines(n))
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())


def numbers(records: list[dict[str, Any]], key: str = "log") -> Counter[tuple[str, int]]:
    """(writer name, line number) → times seen."""
    c: Counter[tuple[str, int]] = Counter()
    for r in records:
        m = LINE_RE.search(str(r.get(key, "")))
        if m:
            c[(m.group(1), int(m.group(2)))] += 1
    return c


def assert_exactly(records: list[dict[str, Any]], expected: dict[str, int], key: str = "log",
                   allow_dups: bool = False) -> None:
    """Every line 0..n-1 of each writer arrived (once, unless ``allow_dups``)."""
    got = numbers(records, key)
    for name, n in expected.items():
        missing = [i for i in range(n) if got[(name, i)] == 0]
        assert not missing, f"{name}: {len(missing)} of {n} lines missing, first {missing[:10]}"
        if not allow_dups:
            dups = [i for i in range(n) if got[(name, i)] > 1]
            assert not dups, f"{name}: {len(dups)} lines duplicated, first {dups[:10]}"
    extra = [k for k in got if k[0] not in expected or k[1] >= expected[k[0]]]
    assert not extra, f"unexpected lines {extra[:10]}"


class Harness:
    """One tail instance wired to a Collector through a real Emitter."""

    def __init__(self, opts: dict[str, Any], tag: str = "tail.0", mem_buf_limit: int = 32 << 20,
                 collector: Collector | None = None, parsers: Any = None) -> None:
        self.plugin: Any = make_plugin(find_plugin("input", "tail"), options=opts,
                                       parsers=DEFAULT if parsers is None else parsers)
        self.metrics = self.plugin.metrics
        self.collector = collector or Collector()
        self.budget = MemBudget(mem_buf_limit)
        self.emitter = self.collector.emitter(self.plugin, tag=tag, budget=self.budget)
        self.finished = False

    async def _run(self) -> None:
        await self.plugin.run(self.emitter)
        self.finished = True

    def start(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self._run)

    async def wait_for(self, pred: Any, timeout: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: have {self.collector.count()} records, "
                                     f"metrics {dict(self.metrics)}")
            await trio.sleep(0.02)

    async def wait_count(self, n: int, timeout: float = 10.0) -> None:
        await self.wait_for(lambda: self.collector.count() >= n, timeout, f"{n} records")

    async def close(self) -> None:
        await self.plugin.close()


def run_tail(opts: dict[str, Any], scenario: Any, **kw: Any) -> Harness:
    """Run ``await scenario(h)`` while the plugin runs; then stop the plugin and close it."""
    h = Harness(opts, **kw)

    async def main() -> None:
        async with trio.open_nursery() as n:
            h.start(n)
            await trio.sleep(0.05)
            await scenario(h)
            n.cancel_scope.cancel()
        await h.close()

    trio.run(main)
    return h
