"""The ``kafka`` output's fatal-error paths against a second Kafka broker (noida-db's Kafka listener).

tansu, the broker of ``test_out_kafka.py``, has no message size limit and always creates
topics, so there the output's refusals only come from librdkafka's own checks. noida-db
refuses records over 1 MB and can run with topic auto-creation off, so here the *broker*
says no, and the output must dead-letter exactly the records it refused (``Result.refused``
with the broker's error) while the rest of the chunk is delivered. The happy path runs too:
a second broker implementation must agree with tansu on what arrives.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from logfwd.plugin import Chunk
from logfwd.plugins.out_kafka.plugin import KafkaOutput

from .backends.kafka import KafkaMessage, consume
from .backends.noida_kafka import NoidaKafka
from .pluginkit import flush_all, make_chunk, make_plugin

pytestmark = pytest.mark.backend

T0 = 1_750_000_000_123_456_789
# librdkafka holds messages for a topic missing from the metadata this long before failing
# them (default 30 s); 1 s keeps the unknown-topic tests fast.
FAST_UNKNOWN_TOPIC = {"rdkafka.topic.metadata.propagation.max.ms": "1000"}


def make_output(broker: NoidaKafka, options: dict[str, str] | None = None, **raw: Any) -> KafkaOutput:
    return make_plugin(KafkaOutput, parsers=None, service={"grace": 5}, brokers=broker.bootstrap,
                       options=options, **raw)


def chunk(records: list[dict[str, Any]]) -> Chunk:
    return make_chunk(records, t0=T0, step=1)


def docs(msgs: list[KafkaMessage]) -> list[dict[str, Any]]:
    return [json.loads(m.value or b"") for m in msgs]


def high_watermarks(broker: NoidaKafka, topic: str) -> int:
    """Messages the broker holds in ``topic`` (sum of high watermarks; noida's are exact)."""

    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "wm-" + uuid.uuid4().hex})
    try:
        parts = c.list_topics(topic, timeout=5).topics[topic].partitions
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1] for p in parts)
    finally:
        c.close()


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    return "n-" + "".join(c if c.isalnum() else "-" for c in request.node.name)[:60] + "-" + uuid.uuid4().hex[:6]


@pytest.fixture
def no_auto_create(noida_kafka: NoidaKafka) -> Iterator[NoidaKafka]:
    """The session broker with topic auto-creation off for one test (switched back after)."""
    noida_kafka.auto_create(False)
    try:
        yield noida_kafka
    finally:
        noida_kafka.auto_create(True)


# ---------------------------------------------------------------- broker-side size limit


def test_broker_refuses_record_over_1mb_rest_delivered(noida_kafka: NoidaKafka, topic: str) -> None:
    # The producer's own limit is raised, so librdkafka sends the big record and noida refuses it.
    out = make_output(noida_kafka, topics=topic, options={"rdkafka.message.max.bytes": "3000000"})
    records: list[dict[str, Any]] = [{"i": i} for i in range(6)]
    records[2]["big"] = "x" * 1_100_000  # over noida's 1 MB record limit
    records[4]["near"] = "y" * 900_000  # under it: proves the limit is the broker's 1 MB, not "anything big"
    [res] = flush_all(out, chunk(records))

    assert res.retry is None and not res.retry_all, res
    assert [i for i, _ in res.refused] == [2], res.refused
    reason = res.refused[0][1]
    assert reason.startswith("MSG_SIZE_TOO_LARGE") and "Broker:" in reason and "too large" in reason, reason

    msgs = consume(noida_kafka.bootstrap, topic, 5, timeout=15, settle=0.5)
    got = sorted(docs(msgs), key=lambda d: d["i"])
    assert [d["i"] for d in got] == [0, 1, 3, 4, 5]
    assert got[3]["near"] == "y" * 900_000
    assert high_watermarks(noida_kafka, topic) == 5  # nothing of the refused record landed


# ---------------------------------------------------------------- unknown topic, auto-create off


def test_missing_topic_with_auto_create_off_is_refused(no_auto_create: NoidaKafka, topic: str) -> None:
    out = make_output(no_auto_create, topics=topic, options=FAST_UNKNOWN_TOPIC)
    [res] = flush_all(out, chunk([{"i": i} for i in range(5)]))

    assert res.retry is None and not res.retry_all, res
    assert [i for i, _ in res.refused] == [0, 1, 2, 3, 4]
    assert all(r.startswith("UNKNOWN_TOPIC_OR_PART") for _, r in res.refused), res.refused
    assert topic not in no_auto_create.topics()


def test_dynamic_topic_to_missing_topic_refuses_only_those_records(no_auto_create: NoidaKafka, topic: str) -> None:
    listed, existing, missing = topic + "-listed", topic + "-existing", topic + "-missing"
    no_auto_create.create_topic(listed)
    no_auto_create.create_topic(existing)
    out = make_output(no_auto_create, topics=listed, topic_key="route", dynamic_topic="on",
                      options=FAST_UNKNOWN_TOPIC)
    records = [
        {"i": 0},
        {"i": 1, "route": missing},
        {"i": 2, "route": existing},
        {"i": 3, "route": missing},
        {"i": 4, "route": listed},
        {"i": 5, "route": existing},
    ]
    [res] = flush_all(out, chunk(records))

    assert res.retry is None and not res.retry_all, res
    assert [i for i, _ in res.refused] == [1, 3], res.refused
    assert all(r.startswith("UNKNOWN_TOPIC_OR_PART") for _, r in res.refused), res.refused
    assert sorted(d["i"] for d in docs(consume(no_auto_create.bootstrap, listed, 2, settle=0.3))) == [0, 4]
    assert sorted(d["i"] for d in docs(consume(no_auto_create.bootstrap, existing, 2, settle=0.3))) == [2, 5]
    assert missing not in no_auto_create.topics()


# ---------------------------------------------------------------- happy path


def test_thousand_records_with_keys_round_trip(noida_kafka: NoidaKafka, topic: str) -> None:
    noida_kafka.create_topic(topic, partitions=3)
    out = make_output(noida_kafka, topics=topic, message_key_field="user")
    records = [{"user": f"u{i % 7}", "n": i, "msg": f"line {i} \u00e9\u2603"} for i in range(1000)]
    [res] = flush_all(out, chunk(records))
    assert res.delivered_all, res

    msgs = consume(noida_kafka.bootstrap, topic, 1000, timeout=20, settle=0.5)
    assert len(msgs) == 1000
    by_n = {d["n"]: (m, d) for m, d in zip(msgs, docs(msgs), strict=True)}
    assert sorted(by_n) == list(range(1000))
    partition_of: dict[bytes, int] = {}
    for i in range(1000):
        m, d = by_n[i]
        assert d == {"@timestamp": (T0 + i) / 1_000_000_000, "user": f"u{i % 7}", "n": i,
                     "msg": f"line {i} \u00e9\u2603"}
        assert m.key == f"u{i % 7}".encode()
        assert partition_of.setdefault(m.key, m.partition) == m.partition  # a key sticks to one partition
    assert len(set(partition_of.values())) > 1  # and the keys spread over the partitions
    # within a key (one partition) the broker keeps the chunk's order
    for key in partition_of:
        ns = [d["n"] for m, d in zip(msgs, docs(msgs), strict=True) if m.key == key]
        assert ns == sorted(ns)
    assert high_watermarks(noida_kafka, topic) == 1000
