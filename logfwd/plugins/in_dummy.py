"""The ``dummy`` input: generate a fixed record at a fixed rate.

Fluent Bit's options and defaults: ``Dummy`` (the JSON record),
``Metadata``, ``Rate`` (events per second), ``Interval_sec``/``Interval_nsec``
(override Rate), ``Samples`` (stop after that many events; 0 = forever),
``Copies`` (records per event), ``Start_time_sec``/``Start_time_nsec``
(timestamps start there and advance with real time), ``Fixed_timestamp``
(every record gets the same timestamp) and ``Flush_on_startup``.

Differences that are deliberate: invalid JSON in ``Dummy`` is a config error
(Fluent Bit silently falls back to the default record), and ``Dummy`` may also
be a JSON array of objects, each event then emits all of them.

The generator keeps to its schedule by counting events due since it started
rather than sleeping once per event. At high rates one emit carries every
event due in a 100 ms tick (``Rate 100000`` → batches of 10000), so the
per-record cost stays in the record copy, not in the event loop. If the
pipeline cannot keep up (backpressure), the missed schedule is dropped rather
than caught up in a burst, as a timer-driven collector would do.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import trio

from logfwd.options import Option
from logfwd.plugin import ConfigValueError, Emitter, Input

_NS = 1_000_000_000
_TICK = 0.1  # seconds: the batching period at high rates
_MAX_BATCH = 50_000  # records per emit, to bound a batch's memory at absurd rates


def _parse_json(key: str, text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise ConfigValueError(key, f"invalid JSON ({e}); write a JSON object such as {{\"message\":\"dummy\"}}") \
            from None


class DummyInput(Input):
    name = "dummy"
    description = "Generate dummy records"
    options = (
        Option("Dummy", "str", '{"message":"dummy"}', "the record: a JSON object (or array of objects)"),
        Option("Metadata", "str", "{}", "event metadata: a JSON object (validated; not carried)"),
        Option("Rate", "int", "1", "events per second (0 is taken as 1, as Fluent Bit does)", minimum=0),
        Option("Interval_sec", "int", "0", "seconds between events; with Interval_nsec, overrides Rate", minimum=0),
        Option("Interval_nsec", "int", "0", "nanoseconds between events; with Interval_sec, overrides Rate",
               minimum=0),
        Option("Samples", "int", "0", "stop after this many events (0: never stop)", minimum=0),
        Option("Copies", "int", "1", "records per event", minimum=1),
        Option("Start_time_sec", "int", "-1", "timestamp of the first event, seconds (-1: the current time)"),
        Option("Start_time_nsec", "int", "-1", "timestamp of the first event, nanoseconds part (-1: current)"),
        Option("Fixed_timestamp", "bool", "off", "give every record the same timestamp"),
        Option("Flush_on_startup", "bool", "off", "generate the first event at once instead of after one interval"),
    )

    def setup(self) -> None:
        c = self.config
        value = _parse_json("dummy", c["dummy"])
        if isinstance(value, dict):
            templates = [value]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            templates = value
        else:
            raise ConfigValueError("dummy", "must be a JSON object such as {\"message\":\"dummy\"} "
                                            "(or a non-empty array of objects)")
        meta = _parse_json("metadata", c["metadata"])
        if not isinstance(meta, dict):
            raise ConfigValueError("metadata", "must be a JSON object")
        self.templates: list[dict[str, Any]] = templates
        self.copies: int = c["copies"]
        self.samples: int = c["samples"]
        # A nested value must not be shared between records: a filter editing one
        # record's map in place would edit them all. Flat records copy cheaply.
        self._nested = any(isinstance(v, (dict, list)) for t in templates for v in t.values())
        self._raw = [orjson.dumps(t) for t in templates]
        self.record_bytes = sum(len(r) for r in self._raw)

        interval_ns = c["interval_sec"] * _NS + c["interval_nsec"]
        self.interval_ns: int = interval_ns if interval_ns > 0 else max(1, _NS // max(1, c["rate"]))
        self.flush_on_startup: bool = c["flush_on_startup"]
        self.fixed: bool = c["fixed_timestamp"]
        sec, nsec = c["start_time_sec"], c["start_time_nsec"]
        self.start_ns: int | None = None
        if sec >= 0 or nsec >= 0:
            self.start_ns = max(sec, 0) * _NS + max(nsec, 0)
        self.events = 0  # events generated so far

    def _records(self, n_events: int) -> list[dict[str, Any]]:
        """Fresh records for ``n_events`` events (every template, ``Copies`` times each)."""
        count = n_events * self.copies
        if self._nested:
            return [orjson.loads(raw) for _ in range(count) for raw in self._raw]
        if len(self.templates) == 1:
            t = self.templates[0]
            return [t.copy() for _ in range(count)]
        return [t.copy() for _ in range(count) for t in self.templates]

    async def run(self, emitter: Emitter, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()  # nothing to open
        interval = self.interval_ns
        per_event = len(self.templates) * self.copies
        tick = max(interval, int(_TICK * _NS))
        batching = tick > interval
        max_events = max(1, _MAX_BATCH // per_event)
        max_behind = max(1, 2 * _NS // interval)  # two seconds' worth of events
        offset = 0 if self.flush_on_startup else 1
        # The schedule runs on trio's clock (monotonic in the daemon; a MockClock in tests), so
        # the rate is kept without tests having to wait on, and compare with, wall time.
        base = _clock_ns()
        base_wall = time.time_ns()
        # ``slot`` is the schedule position of the next event: event slot k is due
        # at base + (k + offset) * interval. Skipped slots (backpressure) advance it
        # without generating records.
        slot = 0
        last_wake = base
        while self.samples == 0 or self.events < self.samples:
            now = _clock_ns()
            due = (now - base) // interval + 1 - offset
            # In batching mode, emit at most once per tick: what falls due in
            # between waits for the next tick and goes out with it.
            early = batching and slot > 0 and now < last_wake + tick
            if due <= slot or early:
                wake = base + (slot + offset) * interval
                if batching and slot > 0:
                    wake = max(wake, last_wake + tick)
                await trio.sleep(max(0, wake - now) / _NS)
                continue
            last_wake = now
            if due - slot > max_behind:
                slot = due - max(1, tick // interval)
            n = min(due - slot, max_events)
            if self.samples:
                n = min(n, self.samples - self.events)
            records = self._records(n)
            if self.fixed:
                t0 = self.start_ns if self.start_ns is not None else base_wall
                times = [t0] * len(records)
            else:
                # Each event carries its own scheduled time, so a batch of many
                # events still has distinct, evenly spaced timestamps.
                first = (self.start_ns + slot * interval if self.start_ns is not None
                         else base_wall + (slot + offset) * interval)
                if per_event == 1:
                    times = [first + i * interval for i in range(n)]
                else:
                    times = [first + (i // per_event) * interval for i in range(n * per_event)]
            slot += n
            self.events += n
            await emitter.emit(records, times, nbytes=self.record_bytes * self.copies * n)
            # Yield even when the pipeline never blocks this input.
            await trio.lowlevel.checkpoint()


PLUGIN = DummyInput


def _clock_ns() -> int:
    """trio's current time in integer nanoseconds."""
    return int(trio.current_time() * _NS)
