"""Engine behaviour: routing, backpressure, retries with dead letters, ack watermarks, shutdown."""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path
from typing import Any

import pytest
import trio

import logfwd.plugin as plugin_mod
from logfwd.batch import AckTracker, Chunk, Result
from logfwd.config import load_config
from logfwd.engine.pipeline import Pipeline
from logfwd.engine.retry import RetryPolicy, parse_retry_limit
from logfwd.engine.router import TagMatcher
from logfwd.options import Option
from logfwd.plugin import Emitter, Filter, Input, Output, find_plugin

from .enginekit import OUTPUTS, Collect, ListInput, config, reset, run, section


class EndlessInput(Input):
    name = "endless"
    options = ()
    emitted = 0

    async def run(self, emitter: Emitter, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        tracker = emitter.tracker()
        n = 0
        while True:
            await emitter.emit([{"n": n}], handle=tracker.handle(n), nbytes=100)
            type(self).emitted = n + 1
            n += 1
            await trio.sleep(0.001)


class Picky(Output):
    """Refuses records with bad=True for good, asks once for records with flaky=True to be retried."""

    name = "picky"
    options = ()

    def setup(self) -> None:
        self.got: list[dict[str, Any]] = []
        self.seen_flaky: set[int] = set()
        OUTPUTS[self.ctx.instance] = self

    async def flush(self, chunk: Chunk) -> Result:
        retry, refused, ok = [], [], []
        for i, r in enumerate(chunk.records):
            if r.get("bad"):
                refused.append((i, "mapper_parsing_exception: field [n] of type long"))
            elif r.get("flaky") and r["n"] not in self.seen_flaky:
                self.seen_flaky.add(r["n"])
                retry.append(i)
            else:
                ok.append(r)
        self.got.extend(ok)
        return Result(retry=retry, refused=refused, reason="partial")


class AddField(Filter):
    name = "addfield"
    options = ()

    def filter(self, batch):  # type: ignore[no-untyped-def]
        for r in batch.records:
            r["filtered"] = True
        return batch


class Boom(Filter):
    name = "boom"
    options = ()

    def filter(self, batch):  # type: ignore[no-untyped-def]
        raise ValueError("bug")


@pytest.fixture(autouse=True)
def _reset() -> None:
    reset()


def test_tag_matcher() -> None:
    assert TagMatcher("kube.*", None)("kube.var.log.x")
    assert not TagMatcher("kube.*", None)("kub.x")
    assert TagMatcher("*", None)("anything")
    assert TagMatcher("a.*.c", None)("a.b.b.c")
    assert TagMatcher(None, re.compile(r"^b\.\d+$"))("b.12")
    assert not TagMatcher(None, re.compile(r"b\.\d"))("xb.1")  # Match_Regex must match the whole tag
    assert not TagMatcher(None, None)("x")


def test_routing_and_filters(tmp_path: Path) -> None:
    ListInput.batches = [("a.x", [{"n": 1}]), ("b.y", [{"n": 2}]), ("c", [{"n": 3}])]
    cfg = config(
        section(ListInput),
        section(AddField, match="a.*"),
        section(Collect, "only_a", match="a.*"),
        section(Collect, "only_b", match_regex=re.compile(r"b\..*")),
        section(Collect, "all", match="*"),
        section(Collect, "none"),
        storage_path=str(tmp_path),
    )
    run(cfg)
    assert OUTPUTS["only_a"].got == [{"n": 1, "filtered": True}]
    assert OUTPUTS["only_b"].got == [{"n": 2}]
    assert sorted(r["n"] for r in OUTPUTS["all"].got) == [1, 2, 3]
    assert OUTPUTS["none"].got == []
    # every batch acknowledged, so the watermark reached the last position
    assert ListInput.commits[-1] == 2
    assert ListInput.closed_with == [2]


def test_backpressure_bounds_memory_and_loses_nothing(tmp_path: Path) -> None:
    limit = 64 * 1024
    ListInput.batches = [("t", [{"n": i * 10 + j, "pad": "x" * 100} for j in range(10)]) for i in range(300)]
    cfg = config(
        section(ListInput, mem_buf_limit=limit),
        section(Collect, "slow", match="*", delay=0.002),
        storage_path=str(tmp_path),
        flush=0.01,
    )
    p = Pipeline(cfg)
    peak = 0

    async def main() -> None:
        nonlocal peak
        with trio.fail_after(60):
            await _main()

    async def _main() -> None:
        nonlocal peak
        async with trio.open_nursery() as n:
            n.start_soon(p.run)
            budget = p._inputs[0].emitter.budget
            while not p._shutdown.is_set() or budget.used:
                peak = max(peak, budget.used)
                await trio.sleep(0)
                if p._shutdown.is_set() and budget.used == 0:
                    break

    trio.run(main)
    got = [r["n"] for r in OUTPUTS["slow"].got]
    assert got == list(range(3000))  # nothing lost, nothing duplicated, in order
    batch_bytes = max(sum(len(str(r)) for r in recs) for _, recs in ListInput.batches)
    assert 0 < peak <= limit + batch_bytes


def test_retry_then_deliver(tmp_path: Path) -> None:
    ListInput.batches = [("t", [{"n": i}]) for i in range(5)]
    cfg = config(
        section(ListInput),
        section(Collect, "flaky", match="*", fail_first=2, retry_limit=3),
        storage_path=str(tmp_path),
    )
    p = run(cfg)
    assert sorted(r["n"] for r in OUTPUTS["flaky"].got) == list(range(5))
    m = p.registry.get("output", "flaky")
    assert m["retries"] >= 2 and m["retries_failed"] == 0 and m["dlq_records"] == 0
    assert m["proc_records"] == 5


def test_retry_limit_dead_letters(tmp_path: Path) -> None:
    ListInput.batches = [("t", [{"n": i} for i in range(3)])]
    cfg = config(
        section(ListInput),
        section(Collect, "down", match="*", always_retry=True, retry_limit=2),
        storage_path=str(tmp_path),
    )
    p = run(cfg)
    m = p.registry.get("output", "down")
    assert m["retries"] == 2 and m["retries_failed"] == 1 and m["dlq_records"] == 3 and m["proc_records"] == 0
    lines = [json.loads(x) for x in (tmp_path / "rejected" / "down.jsonl").read_text().splitlines()]
    assert [x["record"]["n"] for x in lines] == [0, 1, 2]
    assert all("retry limit reached" in x["reason"] and "503" in x["reason"] for x in lines)
    assert ListInput.commits[-1] == 0  # dead-lettered counts as resolved: the checkpoint moves on


def test_no_retries(tmp_path: Path) -> None:
    assert parse_retry_limit("no_retries") == 0
    assert parse_retry_limit("no_limits") is None and parse_retry_limit("False") is None
    ListInput.batches = [("t", [{"n": 1}])]
    cfg = config(section(ListInput), section(Collect, "x", match="*", always_retry=True, retry_limit=0),
                 storage_path=str(tmp_path))
    p = run(cfg)
    assert p.registry.get("output", "x")["dlq_records"] == 1
    assert OUTPUTS["x"].calls == 1


def test_partial_refusal_and_item_retry(tmp_path: Path) -> None:
    ListInput.batches = [("t", [{"n": 0}, {"n": 1, "bad": True}, {"n": 2, "flaky": True}, {"n": 3}])]
    cfg = config(section(ListInput), section(Picky, "es", match="*", retry_limit=5), storage_path=str(tmp_path))
    p = run(cfg)
    assert sorted(r["n"] for r in OUTPUTS["es"].got) == [0, 2, 3]
    dl = [json.loads(x) for x in (tmp_path / "rejected" / "es.jsonl").read_text().splitlines()]
    assert [x["record"]["n"] for x in dl] == [1] and "mapper_parsing_exception" in dl[0]["reason"]
    m = p.registry.get("output", "es")
    assert m["proc_records"] == 3 and m["dlq_records"] == 1 and m["retried_records"] == 1


def test_retry_backoff_full_jitter() -> None:
    pol = RetryPolicy(limit=None, base=1, cap=30)
    rng = random.Random(1)
    delays = [pol.delay(a, rng) for a in range(1, 12) for _ in range(50)]
    assert all(0 < d <= 30 for d in delays)
    assert max(pol.delay(1, rng) for _ in range(200)) <= 2
    assert pol.allows(10**6)
    assert RetryPolicy(limit=2).allows(1) and not RetryPolicy(limit=2).allows(2)


def test_ack_watermark_is_ordered() -> None:
    async def main() -> list[Any]:
        commits: list[Any] = []
        t = AckTracker(commits.append)
        hs = [t.handle(pos) for pos in (10, 20, 30, 40)]
        hs[2].done()
        hs[1].done()
        assert commits == [] and t.watermark is None  # 10 still pending
        hs[0].done()
        assert commits == [30]
        hs[3].add()
        hs[3].done()
        assert t.watermark == 30 and t.outstanding == 1
        hs[3].done()
        assert commits == [30, 40] and t.outstanding == 0
        return commits

    trio.run(main)


def test_watermark_with_concurrent_out_of_order_workers(tmp_path: Path) -> None:
    class Jittery(Output):
        name = "jittery"
        options = ()

        async def flush(self, chunk: Chunk) -> Result:
            await trio.sleep(0.02 if chunk.records[0]["n"] % 2 == 0 else 0.001)
            return Result.ok()

    ListInput.batches = [("t", [{"n": i}]) for i in range(40)]
    cfg = config(section(ListInput, delay=0.003), section(Jittery, "j", match="*", workers=4),
                 storage_path=str(tmp_path), flush=0.001)
    run(cfg)
    assert ListInput.commits == sorted(ListInput.commits)  # never goes backwards
    assert ListInput.commits[-1] == 39


def test_filter_error_passes_records_on(tmp_path: Path) -> None:
    ListInput.batches = [("t", [{"n": 1}])]
    cfg = config(section(ListInput), section(Boom, match="*"), section(Collect, "c", match="*"),
                 storage_path=str(tmp_path))
    p = run(cfg)
    assert OUTPUTS["c"].got == [{"n": 1}]
    assert p.registry.get("filter", "boom.0")["errors"] == 1


def test_shutdown_flushes_everything_buffered(tmp_path: Path) -> None:
    cfg = config(section(EndlessInput), section(Collect, "c", match="*", delay=0.05),
                 storage_path=str(tmp_path), flush=0.5)
    p = Pipeline(cfg)

    async def main() -> None:
        with trio.fail_after(20):
            async with trio.open_nursery() as n:
                await n.start(p.run)
                await trio.sleep(0.3)
                p.shutdown()

    trio.run(main)
    assert p.stopped_cleanly
    got = [r["n"] for r in OUTPUTS["c"].got]
    assert got == list(range(EndlessInput.emitted)) and len(got) > 10


def test_grace_timeout_leaves_unacked(tmp_path: Path) -> None:
    ListInput.batches = [("t", [{"n": 1}])]
    cfg = config(section(ListInput), section(Collect, "down", match="*", always_retry=True, retry_limit=None),
                 storage_path=str(tmp_path), grace=0.3)
    p = run(cfg)
    assert not p.stopped_cleanly
    assert ListInput.commits == []  # nothing acknowledged: a restart reads it again
    assert not (tmp_path / "rejected" / "down.jsonl").exists()


class CountingSetup(Output):
    """Counts ``setup`` calls per class; the instance the config layer validated is the one that runs."""

    name = "countsetup"
    options = ()
    setups = 0

    def setup(self) -> None:
        type(self).setups += 1
        self.metrics.inc("flushes", 0)
        OUTPUTS[self.ctx.instance] = self

    async def flush(self, chunk: Chunk) -> Result:
        return Result.ok()


def test_setup_runs_once_and_the_validated_instance_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugin_mod, "_entry_point_cache", {("output", "countsetup"): CountingSetup})
    CountingSetup.setups = 0
    path = tmp_path / "a.conf"
    path.write_text("[INPUT]\n    Name dummy\n    Samples 3\n[OUTPUT]\n    Name countsetup\n    Match *\n")
    cfg = load_config(path, env={})
    validated = cfg.outputs[0].plugin
    assert CountingSetup.setups == 1 and OUTPUTS["countsetup.0"] is validated
    p = run(cfg, until=lambda p: validated.metrics.get("proc_records", 0) >= 3)
    assert CountingSetup.setups == 1
    assert p.registry.get("output", "countsetup.0") is validated.metrics
    assert validated.metrics["proc_records"] == 3


def test_only_filters_that_hold_records_are_asked_for_them() -> None:
    """The contract: ``flush_pending`` is a base-class method, ``holds_records`` says who overrides it."""
    assert not AddField.holds_records and AddField.flush_pending(AddField.__new__(AddField), True) == []
    assert find_plugin("filter", "multiline").holds_records


class Watching(Filter):
    """A filter with a background task (as the kubernetes filter's watch)."""

    name = "watching"
    options = (Option("fail", "bool", "off"),)
    events: list[str] = []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        self.events.append("started")
        if self.config["fail"]:
            raise RuntimeError("watch broke")
        try:
            await trio.sleep_forever()
        finally:
            self.events.append("cancelled")

    def filter(self, batch):  # type: ignore[no-untyped-def]
        return batch


@pytest.mark.parametrize("fail", [False, True])
def test_filter_background_task(tmp_path: Path, fail: bool) -> None:
    """Filter.run runs beside the inputs and is cancelled at shutdown; its failure is counted, not fatal."""
    Watching.events = []
    ListInput.batches = [("t", [{"n": 1}])]
    cfg = config(section(ListInput), section(Watching, match="*", fail=fail),
                 section(Collect, "c", match="*"), storage_path=str(tmp_path))
    p = run(cfg)
    assert OUTPUTS["c"].got == [{"n": 1}]
    assert p.registry.get("filter", "watching.0")["errors"] == (1 if fail else 0)
    assert Watching.events == (["started"] if fail else ["started", "cancelled"])


class SlowToStopInput(Input):
    """An input caught in a worker thread when the stop comes, which then uses its resource once more.

    As the tail input does after a file read or a DB flush in a thread: the thread cannot be
    cancelled, so the task goes on until its next checkpoint. ``close()`` releases the resource.
    """

    name = "slowstop"
    options = ()
    events: list[str] = []

    async def run(self, emitter: Emitter, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.open = True
        task_status.started()
        while True:
            await trio.to_thread.run_sync(time.sleep, 0.2)
            if not self.open:
                self.events.append("used after close")
                raise RuntimeError("Cannot operate on a closed database.")
            self.events.append("used")

    async def close(self) -> None:
        self.open = False
        self.events.append("closed")


def test_inputs_are_closed_only_after_their_run_returned(tmp_path: Path) -> None:
    """A SIGTERM while an input sits in a worker thread ends cleanly: close() waits for run() to return."""
    SlowToStopInput.events = []
    cfg = config(section(SlowToStopInput), section(Collect, "c", match="*"), storage_path=str(tmp_path))
    p = Pipeline(cfg)

    async def main() -> None:
        with trio.fail_after(20):
            async with trio.open_nursery() as n:
                await n.start(p.run)
                await trio.sleep(0.1)  # inside the thread now
                p.shutdown()

    trio.run(main)
    assert SlowToStopInput.events[-1] == "closed" and "used after close" not in SlowToStopInput.events


class FailsWhileStopping(Input):
    """An input whose own nursery has a task that fails as the stop's cancellation arrives (a worker thread
    returning onto a resource that is gone): run() raises Cancelled and that error together."""

    name = "failstop"
    options = ()

    async def run(self, emitter: Emitter, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async def worker() -> None:
            try:
                await trio.sleep_forever()
            finally:
                raise RuntimeError("Cannot operate on a closed database.")

        async with trio.open_nursery() as n:
            n.start_soon(worker)
            task_status.started()
            await trio.sleep_forever()


def test_an_input_failing_while_it_stops_does_not_crash_the_daemon(tmp_path: Path) -> None:
    cfg = config(section(FailsWhileStopping), section(Collect, "c", match="*"), storage_path=str(tmp_path))
    p = run(cfg, until=lambda p: p.started.is_set())
    assert p.fatal is None and p.stopped_cleanly
    assert p.registry.get("input", "failstop.0")["errors"] == 1
