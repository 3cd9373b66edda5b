"""The ``kafka`` output against a real Kafka-protocol broker (tansu).

The plugin is driven directly (config → setup → start → flush → stop under trio) and what
arrived is read back with a confluent-kafka consumer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
import trio

from logfwd.plugin import Chunk, ConfigValueError, Result
from logfwd.plugins.out_kafka.plugin import KafkaOutput

from .backends._proc import free_port
from .backends.kafka import KafkaBroker, KafkaMessage
from .clikit import delivered, run_until
from .pluginkit import flush_all, make_chunk, make_plugin

pytestmark = pytest.mark.backend

T0 = 1_750_000_000_123_456_789  # 2025-06-15T15:06:40.123456789Z
Consume = Callable[..., list[KafkaMessage]]


def make_output(**raw: Any) -> KafkaOutput:
    """Build the plugin as the engine does; ``options={...}`` holds keys with dots (``rdkafka.linger.ms``)."""
    return make_plugin(KafkaOutput, parsers=None, service={"grace": 5}, **raw)


def chunk(records: list[dict[str, Any]], times: list[int] | None = None) -> Chunk:
    return make_chunk(records, times, t0=T0, step=1)


def values(msgs: list[KafkaMessage]) -> list[dict[str, Any]]:
    return [json.loads(m.value or b"") for m in msgs]


# ---------------------------------------------------------------- happy path


def test_json_messages_with_timestamp_first(kafka_broker: KafkaBroker, kafka_topic: str, kafka_consume: Consume) -> None:
    out = make_output(brokers=kafka_broker.bootstrap, topics=kafka_topic)
    records = [{"msg": f"line {i}", "n": i, "nested": {"a": [1, 2]}, "raw": b"bytes"} for i in range(100)]
    [res] = flush_all(out, chunk(records))
    assert res.delivered_all, res
    msgs = kafka_consume(kafka_broker.bootstrap, kafka_topic, 100, settle=0.5)
    assert len(msgs) == 100
    docs = sorted(values(msgs), key=lambda d: d["n"])
    for i, d in enumerate(docs):
        assert d == {"@timestamp": (T0 + i) / 1_000_000_000, "msg": f"line {i}", "n": i, "nested": {"a": [1, 2]}, "raw": "bytes"}
    assert all(m.value is not None and m.value.startswith(b'{"@timestamp":') for m in msgs)
    assert all(m.key is None for m in msgs)


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("iso8601", "2025-06-15T15:06:40.123456Z"), ("iso8601_ns", "2025-06-15T15:06:40.123456789Z")],
)
def test_timestamp_formats_and_key(
    kafka_broker: KafkaBroker, kafka_topic: str, kafka_consume: Consume, fmt: str, expected: str
) -> None:
    out = make_output(brokers=kafka_broker.bootstrap, topics=kafka_topic, timestamp_key="ts", timestamp_format=fmt)
    assert flush_all(out, chunk([{}], times=[T0]))[0].delivered_all
    [m] = kafka_consume(kafka_broker.bootstrap, kafka_topic, 1)
    assert json.loads(m.value or b"") == {"ts": expected}


def test_topics_topic_key_and_dynamic_topic(kafka_broker: KafkaBroker, kafka_topic: str, kafka_consume: Consume) -> None:
    a, b, dyn = kafka_topic + "-a", kafka_topic + "-b", kafka_topic + "-dyn"
    records = [{"route": b, "i": 0}, {"route": "unlisted", "i": 1}, {"i": 2}, {"route": dyn, "i": 3}]
    static = make_output(brokers=kafka_broker.bootstrap, topics=f"{a},{b}", topic_key="route")
    assert flush_all(static, chunk(records))[0].delivered_all
    assert sorted(d["i"] for d in values(kafka_consume(kafka_broker.bootstrap, a, 3))) == [1, 2, 3]
    assert [d["i"] for d in values(kafka_consume(kafka_broker.bootstrap, b, 1))] == [0]

    dynamic = make_output(brokers=kafka_broker.bootstrap, topics=f"{a}2", topic_key="route", dynamic_topic="on")
    assert flush_all(dynamic, chunk([records[3]]))[0].delivered_all
    assert [d["i"] for d in values(kafka_consume(kafka_broker.bootstrap, dyn, 1))] == [3]


def test_message_key_and_key_field(kafka_broker: KafkaBroker, kafka_topic: str, kafka_consume: Consume) -> None:
    out = make_output(brokers=kafka_broker.bootstrap, topics=kafka_topic, message_key="fixed",
                      message_key_field="id")
    records = [{"id": "abc", "i": 0}, {"id": 42, "i": 1}, {"i": 2}]  # a non-string field falls back
    assert flush_all(out, chunk(records))[0].delivered_all
    msgs = kafka_consume(kafka_broker.bootstrap, kafka_topic, 3)
    assert sorted((json.loads(m.value or b"")["i"], m.key) for m in msgs) == [(0, b"abc"), (1, b"fixed"),
                                                                              (2, b"fixed")]


def test_raw_msgpack_and_gelf_formats(kafka_broker: KafkaBroker, kafka_topic: str, kafka_consume: Consume) -> None:
    raw = make_output(brokers=kafka_broker.bootstrap, topics=kafka_topic + "-raw", format="raw", raw_log_key="log")
    res = flush_all(raw, chunk([{"log": "plain text"}, {"other": 1}, {"log": "second"}]))[0]
    # the record without the key cannot become a message: refused (dead-lettered), the rest delivered
    assert res.retry is None and [i for i, _ in res.refused] == [1] and "log" in res.refused[0][1]
    got = sorted(m.value for m in kafka_consume(kafka_broker.bootstrap, kafka_topic + "-raw", 2, settle=0.3))
    assert got == [b"plain text", b"second"]

    mp = make_output(brokers=kafka_broker.bootstrap, topics=kafka_topic + "-mp", format="msgpack")
    assert flush_all(mp, chunk([{"k": "v", "n": 1}], times=[T0]))[0].delivered_all
    [m] = kafka_consume(kafka_broker.bootstrap, kafka_topic + "-mp", 1)
    assert msgpack.unpackb(m.value) == {"@timestamp": T0 / 1_000_000_000, "k": "v", "n": 1}

    gelf = make_output(brokers=kafka_broker.bootstrap, topics=kafka_topic + "-gelf", format="gelf",
                       gelf_short_message_key="log", gelf_host_key="host", gelf_level_key="lvl")
    rec = {"log": "boom", "host": "web1", "lvl": "3", "k8s": {"pod": "p"}, "id": 7}
    assert flush_all(gelf, chunk([rec], times=[T0]))[0].delivered_all
    [m] = kafka_consume(kafka_broker.bootstrap, kafka_topic + "-gelf", 1)
    assert json.loads(m.value or b"") == {
        "version": "1.1", "short_message": "boom", "host": "web1", "timestamp": T0 / 1_000_000_000, "level": 3,
        "_k8s_pod": "p", "__id": 7,
    }


def test_concurrent_flushes_each_get_their_own_reports(
    kafka_broker: KafkaBroker, kafka_topic: str, kafka_consume: Consume, caplog: pytest.LogCaptureFixture
) -> None:
    # delivery.report.only.error is accepted (Fluent Bit configs set it) and has no effect
    out = make_output(brokers=kafka_broker.bootstrap, topics=kafka_topic,
                      options={"rdkafka.delivery.report.only.error": "true"})
    assert "has no effect" in caplog.text
    results: list[Result] = []

    async def main() -> None:
        await out.start()
        try:
            async def one(k: int) -> None:
                results.append(await out.flush(chunk([{"c": k, "i": i} for i in range(200)])))

            async with trio.open_nursery() as n:
                for k in range(4):
                    n.start_soon(one, k)
        finally:
            await out.stop()

    trio.run(main)
    assert len(results) == 4 and all(r.delivered_all for r in results)
    assert len(kafka_consume(kafka_broker.bootstrap, kafka_topic, 800, settle=0.5)) == 800


# ---------------------------------------------------------------- rdkafka passthrough and refusals


def test_rdkafka_properties_pass_through(kafka_broker: KafkaBroker, kafka_topic: str, kafka_consume: Consume) -> None:
    out = make_output(brokers=kafka_broker.bootstrap, topics=kafka_topic,
                      options={"rdkafka.compression.codec": "gzip", "rdkafka.linger.ms": "5"})
    assert flush_all(out, chunk([{"i": i, "pad": "x" * 500} for i in range(20)]))[0].delivered_all
    assert len(kafka_consume(kafka_broker.bootstrap, kafka_topic, 20)) == 20

    with pytest.raises(ConfigValueError, match="expected true or false") as e:
        make_output(brokers=kafka_broker.bootstrap, options={"rdkafka.delivery.report.only.error": "maybe"})
    assert e.value.key == "rdkafka.delivery.report.only.error"

    bad = make_output(brokers=kafka_broker.bootstrap, options={"rdkafka.no.such.property": "1"})
    with pytest.raises(ConfigValueError, match="no.such.property"):
        trio.run(bad.start)


def test_message_too_large_is_refused_rest_delivered(
    kafka_broker: KafkaBroker, kafka_topic: str, kafka_consume: Consume
) -> None:
    # tansu has no size limit: the producer's own message.max.bytes triggers librdkafka's check
    out = make_output(brokers=kafka_broker.bootstrap, topics=kafka_topic,
                      options={"rdkafka.message.max.bytes": "2000"})
    records = [{"i": 0}, {"i": 1, "big": "x" * 5000}, {"i": 2}]
    res = flush_all(out, chunk(records))[0]
    assert res.retry is None and not res.retry_all
    assert [i for i, _ in res.refused] == [1]
    assert res.refused[0][1].startswith("MSG_SIZE_TOO_LARGE")
    assert sorted(d["i"] for d in values(kafka_consume(kafka_broker.bootstrap, kafka_topic, 2, settle=0.5))) == [0, 2]


def test_invalid_topic_name_is_refused(kafka_broker: KafkaBroker, kafka_topic: str, kafka_consume: Consume) -> None:
    out = make_output(brokers=kafka_broker.bootstrap, topics=kafka_topic, topic_key="t", dynamic_topic="on")
    res = flush_all(out, chunk([{"t": "not a valid topic!"}, {"i": 1}]))[0]
    assert [i for i, _ in res.refused] == [0] and res.retry is None
    assert "TOPIC_EXCEPTION" in res.refused[0][1]
    assert len(kafka_consume(kafka_broker.bootstrap, kafka_topic, 1)) == 1


# ---------------------------------------------------------------- broker down


def test_broker_down_retry_then_everything_arrives_once(
    kafka_broker_factory: Callable[[], KafkaBroker], kafka_consume: Consume
) -> None:
    broker = kafka_broker_factory()  # private: stopping it disturbs no other test
    out = make_output(brokers=broker.bootstrap, topics="downup",
                      options={"rdkafka.message.timeout.ms": "1500", "rdkafka.reconnect.backoff.max.ms": "200"})
    c = chunk([{"i": i} for i in range(50)])

    async def main() -> tuple[Result, Result]:
        await out.start()
        try:
            await trio.to_thread.run_sync(broker.stop)
            first = await out.flush(c)  # nothing can be delivered: every message times out
            await trio.to_thread.run_sync(broker.start)
            second = await out.flush(c)  # the engine's retry of the same chunk
            return first, second
        finally:
            await out.stop()

    first, second = trio.run(main)
    assert first.retry_all and not first.refused and "MSG_TIMED_OUT" in first.reason
    assert second.delivered_all, second
    msgs = kafka_consume(broker.bootstrap, "downup", 50, settle=1.0)
    assert sorted(d["i"] for d in values(msgs)) == list(range(50))


def test_broker_back_within_message_timeout_delivers_in_one_flush(
    kafka_broker_factory: Callable[[], KafkaBroker], kafka_consume: Consume
) -> None:
    broker = kafka_broker_factory()
    out = make_output(brokers=broker.bootstrap, topics="comeback",
                      options={"rdkafka.message.timeout.ms": "20000", "rdkafka.reconnect.backoff.max.ms": "200"})

    async def main() -> Result:
        await out.start()
        try:
            await trio.to_thread.run_sync(broker.stop)
            async with trio.open_nursery() as n:
                n.start_soon(_restart_later, broker, 1.5)
                # flush waits (without blocking the loop) until librdkafka delivered everything
                return await out.flush(chunk([{"i": i} for i in range(20)]))
        finally:
            await out.stop()

    assert trio.run(main).delivered_all
    assert sorted(d["i"] for d in values(kafka_consume(broker.bootstrap, "comeback", 20, settle=0.5))) == list(
        range(20)
    )


async def _restart_later(broker: KafkaBroker, delay: float) -> None:
    await trio.sleep(delay)
    await trio.to_thread.run_sync(broker.start)


def test_queue_full_hands_back_what_was_not_queued(
    kafka_broker_factory: Callable[[], KafkaBroker], kafka_consume: Consume
) -> None:
    """A full librdkafka queue does not make the output loop: the records not yet queued
    come back as a retry (the engine backs off), the queued ones are awaited as usual."""
    broker = kafka_broker_factory()
    out = make_output(brokers=broker.bootstrap, topics="qfull",
                      options={"rdkafka.queue.buffering.max.messages": "10", "rdkafka.message.timeout.ms": "1500",
                               "rdkafka.reconnect.backoff.max.ms": "200"})
    c = chunk([{"i": i} for i in range(30)])

    async def main() -> tuple[Result, list[Result]]:
        await out.start()
        try:
            await trio.to_thread.run_sync(broker.stop)
            first = await out.flush(c)  # 10 queued (then time out), 20 never fit in the queue
            await trio.to_thread.run_sync(broker.start)
            # what the engine does: flush what is left to retry, after a backoff, until nothing is
            results: list[Result] = []
            left = list(range(30))
            while left and len(results) < 50:
                r = await out.flush(c.subset(left))
                results.append(r)
                left = [] if r.delivered_all else [left[i] for i in (r.retry or range(len(left)))]
                await trio.sleep(0.1)
            return first, results
        finally:
            await out.stop()

    first, results = trio.run(main)
    assert first.retry_all and not first.refused
    assert out.metrics["queue_full"] >= 2
    # at most 10 of the 30 fit in the queue at once: the rest came back, not looped on
    assert results[0].retry is not None and len(results[0].retry) >= 20, results[0]
    assert not any(r.refused for r in results) and results[-1].delivered_all, results
    assert sorted(d["i"] for d in values(kafka_consume(broker.bootstrap, "qfull", 30, settle=0.5))) == list(range(30))


# ---------------------------------------------------------------- end to end through the CLI


def test_cli_dummy_to_kafka(kafka_broker: KafkaBroker, kafka_topic: str, kafka_consume: Consume, tmp_path) -> None:

    port = free_port()
    conf = tmp_path / "kafka.conf"
    conf.write_text(
        f"""[SERVICE]
    Flush        0.2
    Grace        5
    Log_Level    info
    HTTP_Server  on
    HTTP_Listen  127.0.0.1
    HTTP_Port    {port}

[INPUT]
    Name         dummy
    Tag          e2e.kafka
    Dummy        {{"message": "hello", "level": "info"}}
    Samples      25
    Rate         200

[OUTPUT]
    Name               kafka
    Match              e2e.*
    Brokers            {kafka_broker.bootstrap}
    Topics             {kafka_topic}
    Message_Key        e2e
    Timestamp_Format   iso8601
    rdkafka.linger.ms  5
"""
    )
    p = run_until(["-c", str(conf)], delivered(port, 25), timeout=90)
    assert p.returncode == 0, p.stderr.decode()[-3000:]
    msgs = kafka_consume(kafka_broker.bootstrap, kafka_topic, 25, settle=1.0)
    assert len(msgs) == 25 and {m.key for m in msgs} == {b"e2e"}
    for d in values(msgs):
        assert d["message"] == "hello" and d["level"] == "info" and d["@timestamp"].endswith("Z")
