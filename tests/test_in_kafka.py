"""The ``kafka`` input: decoding, and round trips through a real broker and the real CLI.

Decoding is tested on real ``confluent_kafka.Message`` objects. The round trips run two
``logfwd`` processes against tansu: one reads numbered JSON lines on stdin and writes them
both to a ``file`` output and to the ``kafka`` output (json, msgpack or raw); the other
consumes the topic with the ``kafka`` input into a ``file`` output. The two files must hold
the same records with the same times (to the nanosecond with ``iso8601_ns``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from logfwd.batch import Batch, MemBudget
from logfwd.plugin import ConfigValueError, Emitter
from logfwd.plugins.in_kafka import PLUGIN as KafkaInput
from logfwd.plugins.in_kafka.decode import DecodeSettings, decode_messages, parse_time

from .backends._proc import free_port
from .backends.kafka import KafkaBroker
from .clikit import wait_until
from .pluginkit import PluginConfigError, make_plugin

LOGFWD = str(Path(sys.executable).parent / "logfwd")
T = 1_700_000_000_123_456_789


def _settings(**kw: Any) -> DecodeSettings:
    base: dict[str, Any] = {"format": "json", "envelope": False, "timestamp_key": "@timestamp",
                            "raw_log_key": "log", "metadata_key": None}
    base.update(kw)
    return DecodeSettings(**base)


def _msg(value: bytes | None, offset: int = 7, ts_ms: int = 1_700_000_000_000, **kw: Any) -> Message:
    return Message(topic="logs", partition=2, offset=offset, key=kw.get("key", b"k1"), value=value,
                   headers=kw.get("headers"), timestamp=(1, ts_ms))


def _decode(msgs: list[Message], **kw: Any) -> tuple[list[dict[str, Any]], list[int], list[str]]:
    errors: list[str] = []
    recs, times, _ = decode_messages(msgs, _settings(**kw), 42, lambda m, why: errors.append(why))
    return recs, times, errors


# --------------------------------------------------------------------------- decoding


def test_parse_time_reads_what_the_kafka_output_writes() -> None:
    assert parse_time(1700000000.5) == 1_700_000_000_500_000_000
    assert parse_time(1700000000) == 1_700_000_000 * 10**9
    assert parse_time("2023-11-14T22:13:20.123456789Z") == T
    assert parse_time("2023-11-14T22:13:20.123456Z") == T - 789
    assert parse_time("2023-11-14T22:13:20Z") == 1_700_000_000 * 10**9
    assert parse_time("2023-11-14T23:13:20.5+01:00") == 1_700_000_000_500_000_000
    for bad in ("yesterday", "2023-11-14T22:13:20", True, None, [1]):
        assert parse_time(bad) is None


def test_envelope_is_fluent_bits_record_shape() -> None:
    recs, times, _ = _decode([_msg(b"hello")], format="none", envelope=True)
    assert recs == [{"topic": "logs", "partition": 2, "offset": 7, "error": None, "key": "k1", "payload": "hello"}]
    assert times == [1_700_000_000_000 * 10**6]  # the Kafka timestamp
    recs, _, _ = _decode([_msg(b'{"a":1}')], format="json", envelope=True)
    assert recs[0]["payload"] == {"a": 1}


def test_payload_is_the_record_and_its_timestamp_key_the_time() -> None:
    value = b'{"@timestamp":"2023-11-14T22:13:20.123456789Z","n":1,"log":"x"}'
    recs, times, _ = _decode([_msg(value)])
    assert recs == [{"n": 1, "log": "x"}]
    assert times == [T]
    packed = msgpack.packb({"@timestamp": 1700000000.25, "n": 2})
    recs, times, _ = _decode([_msg(packed)], format="msgpack")
    assert recs == [{"n": 2}] and times == [1_700_000_000_250_000_000]
    recs, times, _ = _decode([_msg(b"plain line")], format="none")
    assert recs == [{"log": "plain line"}] and times == [1_700_000_000_000 * 10**6]


def test_bad_payload_is_kept_as_text_and_reported() -> None:
    recs, _, errors = _decode([_msg(b"{not json"), _msg(b'"a string"'), _msg(None)])
    assert recs == [{"log": "{not json"}, {"log": "a string"}, {"log": None}]
    assert len(errors) == 1 and "invalid JSON" in errors[0]
    recs, _, errors = _decode([_msg(b"\xc1")], format="msgpack")
    assert recs == [{"log": "\ufffd"}] and "invalid msgpack" in errors[0]


def test_metadata_key_carries_partition_offset_key_headers() -> None:
    recs, _, _ = _decode([_msg(b'{"n":1}', headers=[("trace", b"abc")])], metadata_key="_kafka")
    assert recs[0] == {"n": 1, "_kafka": {"topic": "logs", "partition": 2, "offset": 7, "key": "k1",
                                          "timestamp": 1_700_000_000_000, "headers": {"trace": "abc"}}}


def test_options_are_checked_at_load() -> None:
    with pytest.raises((PluginConfigError, ConfigValueError), match="Topics"):
        make_plugin(KafkaInput, brokers="127.0.0.1:1", check_required=True)
    with pytest.raises(ConfigValueError, match="no brokers"):
        make_plugin(KafkaInput, topics="t")
    with pytest.raises(ConfigValueError, match="Enable_Auto_Commit"):
        make_plugin(KafkaInput, topics="t", brokers="b:1", **{"rdkafka.enable.auto.commit": "true"})
    p = make_plugin(KafkaInput, topics="a,b", brokers="b:1", group_id="agg",
                    **{"rdkafka.session.timeout.ms": "6000"})
    conf = p.consumer_conf()
    assert conf["group.id"] == "agg" and conf["enable.auto.commit"] is False
    assert conf["enable.auto.offset.store"] is False and conf["session.timeout.ms"] == "6000"


# --------------------------------------------------------------------------- Mem_Buf_Limit (pause, never block)


class _PausingConsumer:
    """What ``_emit_within_budget`` calls on a consumer: assignment, pause, resume, consume.

    The consume loop's own calls, recorded; ``consume`` while paused returns nothing, as
    librdkafka does for paused partitions.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("logs", p) for p in range(2)]

    def pause(self, tps: list[TopicPartition]) -> None:
        self.calls.append("pause")

    def resume(self, tps: list[TopicPartition]) -> None:
        self.calls.append("resume")

    def consume(self, n: int, timeout: float) -> list[Message]:
        self.calls.append("consume")
        return []


def test_a_cycle_that_outgrows_the_budget_pauses_instead_of_blocking_in_emit() -> None:
    """Nothing outstanding, one cycle with two partitions worth more than Mem_Buf_Limit.

    The first partition's batch is emitted (an empty budget admits one batch); the second must
    not block inside ``emit`` (no polling then: the group would drop us) but pause the
    partitions and keep polling until deliveries free room. Seen in CI as a daemon stuck in
    emit with its ``pauses`` counter at 0.
    """
    plugin = make_plugin(KafkaInput, topics="logs", brokers="b:1", format="json", envelope="off")
    emitted: list[int] = []
    budget = MemBudget(20_000)

    async def dispatch(batch: Batch) -> None:
        batch.ack.add(1)  # an output holds it: never delivered
        emitted.append(len(batch.records))

    def part(p: int, n: int) -> list[Message]:
        return [Message(topic="logs", partition=p, offset=i, value=b'{"pad": "%s"}' % (b"x" * 200),
                        timestamp=(1, 1_700_000_000_000)) for i in range(n)]

    consumer = _PausingConsumer()

    async def main() -> None:
        emitter = Emitter("t", budget, dispatch, plugin.metrics)
        with trio.move_on_after(1):  # nothing is ever acknowledged: it must still be polling, paused
            plugin._cb_assign(consumer, consumer.assignment())
            owners = dict(plugin._trackers)
            await plugin._emit_within_budget(emitter, consumer, [(part(0, 30) + part(1, 30), owners)])

    trio.run(main)
    assert emitted == [30]  # the second partition waits for room, outside emit
    assert plugin.metrics.get("pauses") == 1 and consumer.calls[0] == "pause"
    assert consumer.calls.count("consume") > 1  # it kept serving the group while paused


# --------------------------------------------------------------------------- commits across failures and rebalances


class _CommitConsumer(_PausingConsumer):
    """Records what is committed (synchronous commits succeed)."""

    def __init__(self) -> None:
        super().__init__()
        self.commits: list[list[tuple[str, int, int]]] = []

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = True) -> None:
        self.commits.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])

    def close(self) -> None:
        self.calls.append("close")


def _kafka_plugin() -> Any:
    return make_plugin(KafkaInput, topics="logs", brokers="b:1", format="json", envelope="off")


def _deliver(plugin: Any, tp: tuple[str, int], offset: int) -> None:
    """A batch of ``tp`` ending at ``offset``, delivered at once."""
    plugin._trackers[tp].handle(offset).done()


def _two_partitions_delivered() -> tuple[Any, _CommitConsumer, tuple[str, int], tuple[str, int]]:
    """A member owning logs[0] and logs[1], with batches delivered up to offsets 4 and 7."""
    plugin = _kafka_plugin()
    consumer = _CommitConsumer()
    plugin.consumer = consumer
    a, b = ("logs", 0), ("logs", 1)
    plugin._cb_assign(consumer, [TopicPartition(*a), TopicPartition(*b)])
    _deliver(plugin, a, 4)
    _deliver(plugin, b, 7)
    return plugin, consumer, a, b


def test_a_batch_read_before_a_rebalance_does_not_ack_into_the_new_assignment() -> None:
    """Read under one assignment, revoked and assigned back before it was emitted: dropped.

    Acknowledged into the new assignment's tracker (whose fetch restarted at the committed
    offset), its last offset would become that tracker's watermark and be committed while
    the records before it, re-read by the new assignment, are not yet delivered.
    """
    plugin = _kafka_plugin()
    consumer = _CommitConsumer()
    tps = [TopicPartition("logs", 0)]
    plugin._cb_assign(consumer, tps)
    old_owner = dict(plugin._trackers)
    plugin._cb_revoke(consumer, tps)
    plugin._cb_assign(consumer, tps)
    emitted: list[int] = []

    async def dispatch(batch: Batch) -> None:
        emitted.append(len(batch.records))

    async def main() -> None:
        emitter = Emitter("t", MemBudget(0), dispatch, plugin.metrics)
        stale = [Message(topic="logs", partition=0, offset=i, value=b'{"n": 1}', timestamp=(1, 1)) for i in (40, 41)]
        await plugin._emit_within_budget(emitter, consumer, [(stale, old_owner)])
        fresh = [Message(topic="logs", partition=0, offset=i, value=b'{"n": 1}', timestamp=(1, 1)) for i in (10, 11)]
        await plugin._emit_within_budget(emitter, consumer, [(fresh, dict(plugin._trackers))])

    trio.run(main)
    assert emitted == [2]  # only the batch read under the current assignment
    assert plugin.metrics.get("stale_dropped") == 2
    assert plugin._trackers[("logs", 0)].watermark == 11  # the stale offset 41 never reached it


def test_a_late_commit_failure_requeues_the_current_position_not_its_older_offset() -> None:
    plugin = _kafka_plugin()
    consumer = _CommitConsumer()
    plugin.consumer = consumer
    tp = ("logs", 3)
    plugin._cb_assign(consumer, [TopicPartition(*tp)])
    _deliver(plugin, tp, 5)
    first = plugin._take_offsets()  # an asynchronous commit of offset 6 goes out ...
    _deliver(plugin, tp, 9)
    plugin._commit(asynchronous=True)  # ... then one of 10, which succeeds
    assert consumer.commits[-1] == [("logs", 3, 10)]
    plugin._on_commit_result(KafkaError(KafkaError.REBALANCE_IN_PROGRESS), [TopicPartition("logs", 3, first[0].offset)])
    assert plugin._to_commit == {tp: 10}  # never 6: the group's offset must not move back


def test_revoke_and_close_commit_the_delivered_position_even_when_its_commit_is_in_flight() -> None:
    plugin, consumer, a, b = _two_partitions_delivered()
    plugin._take_offsets()  # both queued offsets are in an asynchronous commit that may yet fail
    plugin._cb_revoke(consumer, [TopicPartition(*a)])
    assert consumer.commits[-1] == [("logs", 0, 5)]
    trio.run(plugin.close)
    assert consumer.commits[-1] == [("logs", 1, 8)] and consumer.calls[-1] == "close"


def test_acks_of_a_batch_in_flight_across_revoke_and_reassign_do_not_advance_the_new_assignment() -> None:
    """Emitted under one assignment, still held by an output when the partition is revoked and
    assigned back: its ack must not move the new assignment's watermark (offset 41 would be
    committed while the new assignment, restarted at the committed offset, delivered only 11)."""
    plugin = _kafka_plugin()
    consumer = _CommitConsumer()
    plugin.consumer = consumer
    tp = ("logs", 0)
    held: list[Batch] = []

    async def dispatch(batch: Batch) -> None:
        batch.ack.add(1)  # an output holds it until released below
        held.append(batch)

    def msgs(*offsets: int) -> list[Message]:
        return [Message(topic="logs", partition=0, offset=i, value=b'{"n": 1}', timestamp=(1, 1)) for i in offsets]

    async def main() -> None:
        emitter = Emitter("t", MemBudget(0), dispatch, plugin.metrics)
        plugin._cb_assign(consumer, [TopicPartition(*tp)])
        await plugin._emit_within_budget(emitter, consumer, [(msgs(40, 41), dict(plugin._trackers))])
        plugin._cb_revoke(consumer, [TopicPartition(*tp)])
        plugin._cb_assign(consumer, [TopicPartition(*tp)])
        await plugin._emit_within_budget(emitter, consumer, [(msgs(10, 11), dict(plugin._trackers))])

    trio.run(main)
    old, new = held
    old.ack.done()  # the old assignment's batch is delivered late
    assert plugin._trackers[tp].watermark is None and plugin._to_commit == {}
    new.ack.done()
    assert plugin._to_commit == {tp: 12}
    assert consumer.commits == []  # the revoke had nothing delivered to commit


def test_lost_partitions_commit_nothing_later() -> None:
    """Lost (the group moved them without a revoke): their queued offsets are dropped, late acks
    and late commit failures queue nothing, and close commits only what is still owned."""
    plugin, consumer, a, b = _two_partitions_delivered()
    late = plugin._trackers[a].handle(9)
    plugin._cb_lost(consumer, [TopicPartition(*a)])
    assert plugin._to_commit == {b: 8}
    late.done()
    plugin._on_commit_result(KafkaError(KafkaError.ILLEGAL_GENERATION), [TopicPartition("logs", 0, 5)])
    assert plugin._to_commit == {b: 8}
    trio.run(plugin.close)
    assert consumer.commits == [[("logs", 1, 8)]]


def test_a_commit_refused_in_a_rebalance_requeues_what_was_delivered_since() -> None:
    """An asynchronous commit refused (ILLEGAL_GENERATION) while more was delivered and taken
    by a commit that also failed: the retry carries the newest delivered position."""
    plugin = _kafka_plugin()
    consumer = _CommitConsumer()
    plugin.consumer = consumer
    tp = ("logs", 2)
    plugin._cb_assign(consumer, [TopicPartition(*tp)])
    _deliver(plugin, tp, 5)
    first = plugin._take_offsets()  # 6 in flight
    _deliver(plugin, tp, 9)
    second = plugin._take_offsets()  # 10 in flight
    plugin._on_commit_result(KafkaError(KafkaError.ILLEGAL_GENERATION), first)  # must not queue 6 ...
    plugin._on_commit_result(KafkaError(KafkaError.REBALANCE_IN_PROGRESS), second)  # ... kept over 10
    assert plugin._to_commit == {tp: 10}
    plugin._commit(asynchronous=True)
    assert consumer.commits == [[("logs", 2, 10)]]


# --------------------------------------------------------------------------- round trips (real CLI, tansu)


def _run_producer(workdir: Path, bootstrap: str, topic: str, fmt: str, lines: list[str]) -> Path:
    """``logfwd`` stdin → file (the reference) + kafka output in ``fmt``; returns the reference file."""
    extra = {"json": "Timestamp_Format iso8601_ns", "msgpack": "", "raw": "Raw_Log_Key msg"}[fmt]
    conf = workdir / "producer.conf"
    conf.write_text(f"""[SERVICE]
    Flush 0.2
[INPUT]
    Name stdin
    Tag  src
[OUTPUT]
    Name  file
    Match *
    Path  {workdir}
    File  reference.txt
[OUTPUT]
    Name    kafka
    Match   *
    Brokers {bootstrap}
    Topics  {topic}
    Format  {fmt}
    {extra}
""")
    subprocess.run([LOGFWD, "-c", str(conf)], input="\n".join(lines).encode() + b"\n", check=True, timeout=60,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return workdir / "reference.txt"


def _run_consumer(workdir: Path, bootstrap: str, topic: str, fmt: str, n: int) -> Path:
    in_fmt = {"json": "json", "msgpack": "msgpack", "raw": "none"}[fmt]
    conf = workdir / "consumer.conf"
    out = workdir / "consumed.txt"
    conf.write_text(f"""[SERVICE]
    Flush 0.2
    Grace 5
[INPUT]
    Name     kafka
    Brokers  {bootstrap}
    Topics   {topic}
    Group_Id rt-{topic}
    Format   {in_fmt}
    Envelope off
    Raw_Log_Key msg
    Poll_Ms  50
    Tag      src
    rdkafka.session.timeout.ms 6000
[OUTPUT]
    Name  file
    Match *
    Path  {workdir}
    File  consumed.txt
""")
    log = open(workdir / "consumer.log", "wb")
    proc = subprocess.Popen([LOGFWD, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: out.exists() and out.read_bytes().count(b"\n") >= n, 60, f"{n} records consumed",
                   (proc, workdir / "consumer.log"))
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    return out


def _records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """``tag: [time, record]`` lines of the file output → (time ns, record)."""
    out = []
    for line in path.read_text().splitlines():
        _tag, _, body = line.partition(": ")
        sec, _, rest = body[1:].partition(", ")
        whole, _, frac = sec.partition(".")
        out.append((int(whole) * 10**9 + int((frac + "000000000")[:9]), json.loads(rest[:-1])))
    return out


@pytest.mark.parametrize("fmt", ["json", "msgpack", "raw"])
def test_round_trip_kafka_output_to_kafka_input(fmt: str, kafka_broker: KafkaBroker, kafka_topic: str,
                                                tmp_path: Path) -> None:
    n = 2000
    lines = [json.dumps({"n": i, "msg": f"line {i} \u00e9", "nested": {"a": [i, None, True]}}) for i in range(n)]
    if fmt == "raw":
        lines = [json.dumps({"msg": f"line {i}"}) for i in range(n)]
    ref = _records(_run_producer(tmp_path, kafka_broker.bootstrap, kafka_topic, fmt, lines))
    got = _records(_run_consumer(tmp_path, kafka_broker.bootstrap, kafka_topic, fmt, n))
    assert len(ref) == n
    if fmt == "raw":  # raw carries the value only: the records match, the time is the Kafka timestamp
        assert sorted(r["msg"] for _, r in got) == sorted(r["msg"] for _, r in ref)
        return
    key = lambda tr: tr[1]["n"]  # noqa: E731
    ref.sort(key=key)
    got.sort(key=key)
    assert [r for _, r in got] == [r for _, r in ref]
    if fmt == "json":  # iso8601_ns: exact
        assert [t for t, _ in got] == [t for t, _ in ref]
    else:  # a double: within its precision
        assert all(abs(a[0] - b[0]) < 1000 for a, b in zip(got, ref, strict=True))


def test_commits_what_was_delivered(kafka_broker: KafkaBroker, kafka_topic: str, tmp_path: Path) -> None:
    """After a clean stop the group's committed offset is one past the last message, per partition."""
    lines = [json.dumps({"n": i}) for i in range(500)]
    _run_producer(tmp_path, kafka_broker.bootstrap, kafka_topic, "json", lines)
    _run_consumer(tmp_path, kafka_broker.bootstrap, kafka_topic, "json", 500)
    c = Consumer({"bootstrap.servers": kafka_broker.bootstrap, "group.id": f"rt-{kafka_topic}"})
    try:
        md = c.list_topics(kafka_topic, timeout=5).topics[kafka_topic]
        committed = c.committed([TopicPartition(kafka_topic, p) for p in md.partitions], timeout=10)
    finally:
        c.close()
    assert sum(tp.offset for tp in committed if tp.offset >= 0) == 500


def test_broker_down_at_start_is_no_error(tmp_path: Path) -> None:
    """No broker yet: logfwd starts and waits; once the broker is up, records flow."""
    port = free_port()
    conf = tmp_path / "c.conf"
    conf.write_text(f"""[INPUT]
    Name kafka
    Brokers 127.0.0.1:{port}
    Topics late
    Format json
    Envelope off
    Poll_Ms 50
    rdkafka.session.timeout.ms 6000
[OUTPUT]
    Name file
    Match *
    Path {tmp_path}
    File out.txt
""")
    log = open(tmp_path / "logfwd.log", "wb")
    proc = subprocess.Popen([LOGFWD, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(2)
        assert proc.poll() is None, (tmp_path / "logfwd.log").read_text()
        broker = KafkaBroker(tmp_path / "broker", port=port).start()
        try:
            _run_producer(tmp_path, broker.bootstrap, "late", "json", [json.dumps({"n": 1})])
            out = tmp_path / "out.txt"
            wait_until(lambda: out.exists() and b'"n":1' in out.read_bytes(), 60, "the record",
                       (proc, tmp_path / "logfwd.log"))
        finally:
            proc.terminate()
            proc.wait(30)
            broker.stop()
    finally:
        log.close()
