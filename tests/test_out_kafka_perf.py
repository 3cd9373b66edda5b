"""The kafka output's batched hot path: native JSON values, ``produce_batch``, failure-only reports.

The fast path must send exactly what the per-record Python code sends, and map every
refusal and failed delivery back to its own record even when a chunk spans several produce
calls and topics. Checked against a real Kafka-protocol broker (tansu), with the native kernels and
with the pure-Python fallback the plugin uses when the extension is not built.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing
from confluent_kafka import KafkaError

from logfwd.metrics import OUTPUT_COUNTERS, Counters
from logfwd.plugin import Chunk, PluginContext, Result
from logfwd.plugins.out_kafka import messages as out_messages
from logfwd.plugins.out_kafka import plugin as out_kafka
from logfwd.plugins.out_kafka import reports as out_reports
from logfwd.plugins.out_kafka.plugin import KafkaOutput

from .backends.kafka import KafkaBroker, KafkaMessage

T0 = 1_750_000_000_123_456_789
Consume = Callable[..., list[KafkaMessage]]


def _output(**opts: str) -> KafkaOutput:
    config: dict[str, Any] = {o.key: o.default_value() for o in KafkaOutput.options}
    by_key = {o.key: o for o in KafkaOutput.options}
    for k, v in opts.items():
        if k.startswith("rdkafka_"):
            config["rdkafka."][k[len("rdkafka_"):].replace("_", ".")] = v
        else:
            config[k] = by_key[k].convert(v)
    ctx = PluginContext("kafka.perf", Counters(OUTPUT_COUNTERS), logging.getLogger("test.kafka.perf"),
                        service={"grace": 5})
    out = KafkaOutput(config, ctx)
    out.setup()
    return out


def _chunk(records: list[dict[str, Any]], times: list[int]) -> Chunk:
    c = Chunk(tag="perf")
    c.records, c.times, c.keys = records, times, [None] * len(records)
    return c


def _flush(out: KafkaOutput, c: Chunk) -> Result:
    async def main() -> Result:
        await out.start()
        try:
            return await out.flush(c)
        finally:
            await out.stop()

    return trio.run(main)


@pytest.fixture(params=["native", "python"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on the Cython kernels and again on the pure-Python fallback."""
    if request.param == "native":
        assert out_messages._json_values is not None
    else:
        monkeypatch.setattr(out_messages, "_json_values", None)
        monkeypatch.setattr(out_reports, "kafka_messages", out_reports.py_kafka_messages)
    return str(request.param)


ODD_RECORDS: list[dict[str, Any]] = [
    {"log": "plain", "stream": "stdout"},
    {},
    {"raw": b"bytes \xff", "nested": {"a": [1, 2.5, None, True]}, "uni": "h\u00e9\u2603\U0001f600"},
    {"@timestamp": "the record's own", "x": 1},
    {"big": 2**70},  # beyond orjson's 64-bit integers: the json module fallback
    {1: "non-str key", "s": frozenset([3])},
]
ODD_TIMES = [T0, 0, -1_500_000_001, 253_402_300_799_999_999_999, T0 + 999_999_999, 1]


@pytest.mark.parametrize("ts_format", ["double", "iso8601", "iso8601_ns"])
def test_native_values_match_the_per_record_code(ts_format: str) -> None:
    out = _output(brokers="127.0.0.1:9", timestamp_format=ts_format, timestamp_key="ts")
    refused: list[tuple[int, str]] = []
    got = out.encoder.values(ODD_TIMES, ODD_RECORDS, 0, refused)
    want = [out.encoder.value(t, r) for t, r in zip(ODD_TIMES, ODD_RECORDS, strict=True)]
    assert got == want and not refused
    assert json.loads(got[0])["ts"] is not None and got[1].startswith(b'{"ts":') and got[1].endswith(b"}")


def test_message_dicts_carry_their_index_and_are_not_gc_tracked() -> None:
    # A GC-tracked object per in-flight message made full collections scan them all.
    for make in (out_reports.kafka_messages, out_reports.py_kafka_messages):
        [m, k] = make([b"v", None, b"w"], [None, b"x", b"kw"], 7)
        assert m == {"value": b"v", "i": 7} and k == {"value": b"w", "i": 9, "key": b"kw"}
        assert not gc.is_tracked(m) and not gc.is_tracked(k)


def test_big_chunk_two_topics_refusals_map_to_their_records(
    path: str, kafka_broker: KafkaBroker, kafka_topic: str, kafka_consume: Consume
) -> None:
    """More records than one produce call takes, routed to two topics, with oversized records
    scattered through it: exactly those are refused, every other record arrives once, on its topic."""
    a, b = f"{kafka_topic}-{path}-a", f"{kafka_topic}-{path}-b"
    n = out_kafka._SLICE * 2 + 123
    big = {5, out_kafka._SLICE - 1, out_kafka._SLICE, out_kafka._SLICE + 4000, n - 1}
    records = [{"i": i, "to": b if i % 3 == 0 else a, **({"pad": "x" * 3000} if i in big else {})}
               for i in range(n)]
    out = _output(brokers=kafka_broker.bootstrap, topics=f"{a},{b}", topic_key="to",
                  message_key_field="to", rdkafka_message_max_bytes="2000", rdkafka_linger_ms="20")
    res = _flush(out, _chunk(records, [T0 + i for i in range(n)]))
    assert res.retry is None and not res.retry_all, res
    assert [i for i, _ in res.refused] == sorted(big)
    assert all(reason.startswith("MSG_SIZE_TOO_LARGE") for _, reason in res.refused)

    want_b = [i for i in range(n) if i % 3 == 0 and i not in big]
    want_a = [i for i in range(n) if i % 3 != 0 and i not in big]
    got_a = kafka_consume(kafka_broker.bootstrap, a, len(want_a), settle=0.3, timeout=30)
    got_b = kafka_consume(kafka_broker.bootstrap, b, len(want_b), settle=0.3, timeout=30)
    assert sorted(json.loads(m.value or b"")["i"] for m in got_a) == want_a
    assert sorted(json.loads(m.value or b"")["i"] for m in got_b) == want_b
    assert {m.key for m in got_a} == {a.encode()} and {m.key for m in got_b} == {b.encode()}
    first = min(got_b, key=lambda m: json.loads(m.value or b"")["i"])
    assert first.value == b'{"@timestamp":%s,"i":0,"to":"%s"}' % (repr(T0 / 1e9).encode(), b.encode())


# ---------------------------------------------------------------- failure-only reports


class _Msg:
    def __init__(self, topic: str, key: bytes | None, value: bytes) -> None:
        self._t, self._k, self._v = topic, key, value

    def topic(self) -> str:
        return self._t

    def key(self) -> bytes | None:
        return self._k

    def value(self) -> bytes:
        return self._v


def test_failures_map_to_distinct_records_even_when_messages_repeat() -> None:
    r = out_reports.FlushReports(None)  # type: ignore[arg-type]
    r.sent = [("a", out_reports.py_kafka_messages([b"x", b"y", b"x"], None, 0)),
              ("b", out_reports.py_kafka_messages([b"x"], [b"k"], 3))]
    r(None, _Msg("a", None, b"y"))  # a success reported anyway: ignored
    err = KafkaError(KafkaError._MSG_TIMED_OUT)
    r(err, _Msg("a", None, b"x"))
    r(err, _Msg("a", None, b"x"))
    r(err, _Msg("b", b"k", b"x"))
    found, unmatched = r.match()
    assert sorted(found) == [0, 2, 3] and unmatched == 0
    r(err, _Msg("a", None, b"never sent"))
    assert r.match()[1] == 1


def test_only_closed_flushes_settle_and_only_on_an_empty_queue() -> None:
    async def main() -> None:
        token = trio.lowlevel.current_trio_token()
        waiting = out_reports.Waiting()
        closed, queuing = out_reports.FlushReports(token), out_reports.FlushReports(token)
        waiting.add(closed)
        waiting.add(queuing)
        closed.closed = True
        lengths = iter([3, 0])

        def queue_length() -> int:
            # a flush that closes after the closed ones were read is not settled by this check
            queuing.closed = True
            return next(lengths)

        await trio.to_thread.run_sync(waiting.check, queue_length)  # messages outstanding
        await trio.testing.wait_all_tasks_blocked()
        assert not closed.done.is_set()
        queuing.closed = False
        await trio.to_thread.run_sync(waiting.check, queue_length)  # empty queue
        await trio.testing.wait_all_tasks_blocked()
        assert closed.done.is_set() and not queuing.done.is_set()

    trio.run(main)
