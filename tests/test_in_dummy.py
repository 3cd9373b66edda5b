"""The dummy input: Fluent Bit's options, its schedule, and batching at high rates."""

from __future__ import annotations

import time
from typing import Any

import pytest
import trio
from trio.testing import MockClock

from logfwd.batch import Batch, MemBudget
from logfwd.options import OptionError
from logfwd.plugin import ConfigValueError, find_plugin

from .pluginkit import Collector, make_plugin

NS = 1_000_000_000


def make(**raw: str) -> Any:
    return make_plugin(find_plugin("input", "dummy"), parsers=None, **raw)


def collect(plugin: Any, timeout: float = 10.0) -> tuple[list[Batch], float]:
    """Run the input to completion; the batches it emitted and how long it took."""
    col = Collector()

    async def main() -> float:
        t0 = trio.current_time()
        with trio.fail_after(timeout):
            await plugin.run(col.emitter(plugin))
        return trio.current_time() - t0

    # The input's schedule runs on trio's clock: a MockClock makes rates exact and instant.
    elapsed = trio.run(main, clock=MockClock(autojump_threshold=0))
    return col.batches, elapsed


def flat(batches: list[Batch]) -> tuple[list[int], list[dict[str, Any]]]:
    times = [t for b in batches for t in b.times]
    records = [r for b in batches for r in b.records]
    return times, records


def test_defaults_emit_fluent_bits_record_and_stop_after_samples() -> None:
    p = make(Samples="3", Rate="50", Flush_on_startup="on")
    batches, _ = collect(p)
    times, records = flat(batches)
    assert records == [{"message": "dummy"}] * 3
    assert all(b.tag == "dummy.0" for b in batches)
    assert times == sorted(times) and len(set(times)) == 3
    assert abs(times[0] - time.time_ns()) < 5 * NS
    assert p.metrics["records"] == 3 and p.metrics["bytes"] > 0


def test_custom_record_copies_and_independent_records() -> None:
    p = make(Dummy='{"level":"info","ctx":{"user":"a"},"n":[1,2]}', Samples="2", Copies="3", Rate="100",
             Flush_on_startup="on")
    times, records = flat(collect(p)[0])
    assert len(records) == 6
    assert all(r == {"level": "info", "ctx": {"user": "a"}, "n": [1, 2]} for r in records)
    # The three copies of an event share its time; the two events differ.
    assert times[0] == times[1] == times[2] and times[3] == times[4] == times[5] and times[3] > times[0]
    # A filter editing one record (even a nested map) must not edit the others.
    records[0]["ctx"]["user"] = "changed"
    records[0]["level"] = "x"
    assert records[1] == {"level": "info", "ctx": {"user": "a"}, "n": [1, 2]}


def test_array_of_records() -> None:
    p = make(Dummy='[{"a":1},{"b":2}]', Samples="2", Rate="100", Flush_on_startup="on")
    _, records = flat(collect(p)[0])
    assert records == [{"a": 1}, {"b": 2}, {"a": 1}, {"b": 2}]


def test_start_time_and_interval() -> None:
    # Interval_nsec overrides Rate; Start_time_sec fixes the first timestamp and
    # later ones advance by the interval.
    p = make(Start_time_sec="1500000000", Start_time_nsec="5", Interval_nsec="20000000", Rate="1",
             Samples="4", Flush_on_startup="on")
    times, _ = flat(collect(p)[0])
    assert times == [1500000000 * NS + 5 + i * 20_000_000 for i in range(4)]


def test_fixed_timestamp() -> None:
    p = make(Start_time_sec="1000", Fixed_timestamp="on", Rate="100", Samples="5", Flush_on_startup="on")
    times, _ = flat(collect(p)[0])
    assert times == [1000 * NS] * 5


def test_flush_on_startup_controls_first_event() -> None:
    _, fast = collect(make(Rate="2", Samples="1", Flush_on_startup="on"))
    assert fast == 0
    _, slow = collect(make(Rate="2", Samples="1"))
    assert slow == pytest.approx(0.5)  # first event only after one interval


def test_rate_is_kept() -> None:
    p = make(Rate="40")
    col = Collector()

    async def main() -> None:
        with trio.move_on_after(1.0):
            await p.run(col.emitter(p))

    trio.run(main, clock=MockClock(autojump_threshold=0))
    n = col.count()
    # 40/s for 1 s on a clock that never lags: 40 fall due; those of the last 100 ms batching tick
    # may still wait for it when the run is cancelled.
    assert 36 <= n <= 40


def test_high_rate_emits_in_batches() -> None:
    p = make(Rate="100000", Samples="30000")
    batches, elapsed = collect(p, timeout=30)
    n = sum(len(b) for b in batches)
    assert n == 30000
    # ~10 000 records per 100 ms tick, never one emit per record.
    assert len(batches) <= 12
    assert max(len(b) for b in batches) >= 5000
    assert elapsed == pytest.approx(0.3, abs=0.11)  # the schedule holds: 30 000 at 100 000/s is 0.3 s
    times = [t for b in batches for t in b.times]
    assert times == sorted(times) and len(set(times)) == n
    assert times[-1] - times[0] == pytest.approx(0.3 * NS, rel=0.01)


def test_backpressure_pauses_generation() -> None:
    """While the pipeline holds the budget, the input waits, and does not burst afterwards."""
    p = make(Rate="1000", Dummy='{"message":"' + "x" * 100 + '"}')
    col = Collector(hold=True)  # the "output" keeps each batch until released below
    counts: list[int] = []

    async def main() -> None:
        budget = MemBudget(20_000)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(p.run, col.emitter(p, budget=budget))
            await trio.sleep(1.0)
            counts.append(col.count())  # stuck at the budget
            assert budget.paused
            await trio.sleep(0.5)
            counts.append(col.count())
            col.ack_all()
            await trio.sleep(0.5)
            counts.append(col.count())
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert counts[0] == counts[1] < 400  # paused: nothing more while the budget is full
    assert counts[2] > counts[1]  # resumed


@pytest.mark.parametrize(
    "raw,key",
    [
        ({"Dummy": '{"message": "unterminated'}, "dummy"),
        ({"Dummy": "[1, 2]"}, "dummy"),
        ({"Dummy": '"text"'}, "dummy"),
        ({"Metadata": "{oops}"}, "metadata"),
    ],
)
def test_invalid_json_is_a_config_error(raw: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigValueError) as e:
        make(**raw)
    assert e.value.key == key


def test_rate_zero_means_one_and_negative_is_refused() -> None:

    assert make(Rate="0").interval_ns == NS
    with pytest.raises(OptionError):
        make(Rate="-5")


def test_reports_started_at_once() -> None:
    """Nothing to open: ``nursery.start`` returns before the first record is due."""
    p = make(Samples="1", Rate="1")
    col = Collector()

    async def main() -> None:
        async with trio.open_nursery() as n:
            await n.start(p.run, col.emitter(p))
            assert col.count() == 0  # started, and the one sample is a second away
            n.cancel_scope.cancel()

    trio.run(main)
