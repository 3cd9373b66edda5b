"""The kafka output's batched hot path: native JSON values and the librdkafka binding.

The fast path must send exactly what the per-record Python code sends, and map every
refusal and failed delivery back to its own record even when a chunk spans several produce
calls and topics. Checked against a real Kafka-protocol broker (tansu), with the native JSON
kernel and with the per-record Python code; the binding's report bookkeeping (``_rdkafka``)
is checked against an address where no broker listens, so every message fails or stays
queued, deterministically.
"""

from __future__ import annotations

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
from logfwd.plugins.out_kafka import _rdkafka as rdk
from logfwd.plugins.out_kafka import messages as out_messages
from logfwd.plugins.out_kafka import plugin as out_kafka
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


# ---------------------------------------------------------------- the librdkafka binding

NOWHERE = "127.0.0.1:9"  # nothing listens: messages wait for a broker until they time out


def _producer(**conf: str) -> rdk.Producer:
    return rdk.Producer({"bootstrap.servers": NOWHERE, "reconnect.backoff.max.ms": "100", **conf},
                        logging.getLogger("test.rdkafka"))


def _settle_all(p: rdk.Producer, deadline_polls: int = 200) -> list[rdk.Flush]:
    settled: list[rdk.Flush] = []
    for _ in range(deadline_polls):
        p.poll(50)
        settled += p.settled()
        if len(p) == 0 and not p.settled():
            break
    return settled


def test_failed_reports_name_their_records_and_settle_only_closed_flushes() -> None:
    p = _producer(**{"message.timeout.ms": "300"})
    try:
        a, b = rdk.Flush(None, None), rdk.Flush(None, None)
        assert p.produce(a, "t", [b"x", None, b"y"], None, 10) == []  # None: a refused record, skipped
        assert p.produce(a, "u", [b"z"], [b"k"], 0, [42]) == []
        assert p.produce(b, "t", [b"w"], None, 0) == []
        assert a.pending == 3 and b.pending == 1
        a.closed = True  # b is still queuing: it must not settle even once its messages are reported
        settled = _settle_all(p)
        assert settled == [a] and a.pending == 0 and b.pending == 0
        timed_out = KafkaError._MSG_TIMED_OUT
        assert sorted(a.failures()) == [(10, timed_out), (12, timed_out), (42, timed_out)]
        assert b.failures() == [(0, timed_out)]
        assert p.forget(rdk.Flush(None, None))  # nothing produced: settled at once
        b.closed = True
        assert p.settled() == [b]
        assert rdk.err_name(timed_out) == "_MSG_TIMED_OUT" and "timed out" in rdk.err_text(timed_out).lower()
    finally:
        p.close()


def test_what_librdkafka_does_not_take_is_returned_and_never_awaited() -> None:
    p = _producer(**{"queue.buffering.max.messages": "2", "message.max.bytes": "1000"})
    try:
        f = rdk.Flush(None, None)
        got = p.produce(f, "t", [b"a", b"b" * 5000, b"c", b"d"], None, 100)
        codes = dict(got)
        assert codes[101] == KafkaError.MSG_SIZE_TOO_LARGE
        assert codes[103] == KafkaError._QUEUE_FULL and 100 not in codes and 102 not in codes
        # only the two queued ones are awaited (len(p) may count a connect error's event as well)
        assert f.pending == 2 == p.awaiting <= len(p)
    finally:
        assert p.close() == 2
    # close purged them: their reports came in (as failures to retry) and the flush can settle
    f.closed = True
    assert f.pending == 0 and sorted(i for i, _ in f.failures()) == [100, 102]
    assert all(code in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT) for _, code in f.failures())


def test_configuration_errors_name_the_property() -> None:
    with pytest.raises(rdk.ConfigError) as e:
        _producer(**{"no.such.property": "1"})
    assert e.value.key == "no.such.property" and "no.such.property" in str(e.value)
    with pytest.raises(rdk.ConfigError) as e:
        _producer(**{"linger.ms": "-5"})
    assert e.value.key == "linger.ms"


def test_the_bound_library_is_the_one_confluent_kafka_loaded() -> None:
    import confluent_kafka  # noqa: PLC0415 - the version is what this test compares

    path = rdk.load()
    assert "librdkafka" in path
    assert confluent_kafka.libversion()[0]  # the same library answers both
