"""Helpers for the tail tests: a numbered-line writer, a line counter and an in-process harness.

The harness runs the real ``tail`` plugin with a real ``Emitter``, ``MemBudget``
and ``AckTracker``; its dispatch stands in for the engine's router and can hold
acknowledgements (a slow or failing output) or give them at once.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import trio

from logfwd.engine.batch import Batch, MemBudget
from logfwd.metrics import Counters
from logfwd.plugin import Emitter, PluginContext, find_plugin

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


class Collector:
    """The engine's side of the emitter: records what arrives and acknowledges it.

    ``hold=True`` keeps every batch unacknowledged until ``ack_all``/``ack_some``
    (an output that has not delivered yet); ``delay`` makes each dispatch slow.
    """

    def __init__(self, hold: bool = False, delay: float = 0.0) -> None:
        self.hold = hold
        self.delay = delay
        self.batches: list[Batch] = []
        self.pending: list[Batch] = []

    async def dispatch(self, batch: Batch) -> None:
        self.batches.append(batch)
        if self.hold:
            batch.ack.add()
            self.pending.append(batch)
        if self.delay:
            await trio.sleep(self.delay)

    @property
    def records(self) -> list[dict[str, Any]]:
        return [r for b in self.batches for r in b.records]

    @property
    def keys(self) -> list[str]:
        return [k for b in self.batches for k in (b.keys or [])]

    def count(self) -> int:
        return sum(len(b.records) for b in self.batches)

    def ack_some(self, n_batches: int) -> None:
        for b in self.pending[:n_batches]:
            b.ack.done()
        del self.pending[:n_batches]

    def ack_all(self) -> None:
        self.ack_some(len(self.pending))


def parser_registry() -> Any:
    try:
        from logfwd.config import default_parsers  # type: ignore[attr-defined]

        return default_parsers()
    except ImportError:  # parsers module not there yet: tests without a parser still run
        return None


def make_config(cls: Any, opts: dict[str, Any]) -> dict[str, Any]:
    given = {k.lower(): v for k, v in opts.items()}
    cfg = {}
    for o in cls.options:
        cfg[o.key] = o.convert(given.pop(o.key)) if o.key in given else o.default_value()
    assert not given, f"unknown tail options in test: {given}"
    return cfg


class Harness:
    """One tail instance wired to a Collector through a real Emitter."""

    def __init__(self, opts: dict[str, Any], tag: str = "tail.0", mem_buf_limit: int = 32 << 20,
                 collector: Collector | None = None, parsers: Any = None) -> None:
        cls = find_plugin("input", "tail")
        self.metrics = Counters()
        ctx = PluginContext(instance="tail.0", metrics=self.metrics, log=logging.getLogger("test.tail"),
                            parsers=parsers if parsers is not None else parser_registry())
        self.plugin: Any = cls(make_config(cls, opts), ctx)
        self.plugin.setup()
        self.collector = collector or Collector()
        self.budget = MemBudget(mem_buf_limit)
        self.emitter = Emitter(tag, self.budget, self.collector.dispatch, self.metrics)
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


def test_numbered_writer_and_counter(tmp_path: Path) -> None:
    w = NumberedWriter(tmp_path / "a.log", name="A")
    w.write(3)
    w.write(2)
    recs = [{"log": ln} for ln in (tmp_path / "a.log").read_text().splitlines()]
    assert_exactly(recs, {"A": 5})
    try:
        assert_exactly(recs[:-1], {"A": 5})
    except AssertionError:
        pass
    else:
        raise AssertionError("a missing line was not detected")
