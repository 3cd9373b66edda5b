"""The ``kafka`` input: a consumer-group member, at least once end to end.

Options are Fluent Bit's (``Brokers``, ``Topics``, ``Group_Id``, ``Client_Id``, ``Format``,
``Poll_Ms``, ``Poll_Timeout_Ms``, ``Buffer_Max_Size``, ``Enable_Auto_Commit`` and any
``rdkafka.<property>``) plus what an aggregator tier needs: ``Envelope off`` (the payload
is the record, its ``Timestamp_Key`` the record time, so what our ``kafka`` output wrote
reads back as the same records), ``Format msgpack``, ``Metadata_Key`` (topic, partition,
offset, key, timestamp and headers under one key), ``Tag_Key``, and ``Tag`` with ``*``
expanded to the topic. Each record carries the origin key ``topic:partition:offset``, so an
output deriving ids from it (``es`` with ``Id_Mode derived``) deduplicates replays.

Why the offsets are handled by hand: librdkafka's auto commit commits what was *read*,
so a crash loses what was read but not yet delivered. Here ``enable.auto.commit`` and
``enable.auto.offset.store`` are off; each assigned partition has an ``AckTracker`` and
every batch of that partition a handle at its last offset. When every output has delivered
(or dead-lettered) a batch and all before it, the partition's watermark moves and offset+1
is queued for commit; commits go out every ``Commit_Interval``, when partitions are revoked
(a rebalance), and at shutdown after the pipeline drained. A kill -9 therefore replays what
was not yet committed, and never skips. A revoked partition's tracker is dropped: acks that
arrive later for it commit nothing (the new owner re-reads from the committed offset). A
*lost* partition (session timed out: another member may own it already) is dropped the same
way, with its queued offset and without a final commit.

Three rules keep a commit from ever passing an undelivered record across rebalances:
each read remembers the tracker of the assignment it was read under, and a batch whose
partition was revoked since (even if assigned back to us: the fetch position then restarts
at the committed offset) is discarded instead of being acknowledged into the new
assignment's tracker; a commit that failed is retried with the partition's *current*
delivered position (never an older offset re-queued over a newer one); and on revoke and at
close each owned partition's delivered position is committed whether or not it is still
queued (an asynchronous commit in flight may yet fail).

librdkafka's ``consume`` blocks, so it runs in a worker thread; the rebalance callbacks run
inside it and reach the trio thread through ``trio.from_thread``. When the input's
``Mem_Buf_Limit`` is used up, the assigned partitions are paused (librdkafka stops fetching)
and resumed once deliveries free room, so memory does not grow with the backlog.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import trio
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from logfwd.options import Option
from logfwd.plugin import AckTracker, ConfigValueError, Emitter, Input

from .decode import DecodeSettings, decode_messages

_PER_CALL = 1000  # messages asked of librdkafka per consume() call inside one poll cycle
_DEFAULT_STRATEGY = "cooperative-sticky"
_PAUSE_POLL = 0.1  # seconds between polls while paused (serves rebalances, keeps the group)

TP = tuple[str, int]
Owners = dict[TP, AckTracker]  # the trackers of the assignment a read was made under
Read = tuple[list[Any], Owners]  # messages of one consume() call, and whose they were


class KafkaInput(Input):
    name = "kafka"
    description = "Consume Kafka topics in a consumer group (at least once)"
    options = (
        Option("Brokers", "csv", None, "bootstrap brokers, e.g. 192.168.1.3:9092,192.168.1.4:9092"),
        Option("Topics", "csv", None, "topics to subscribe to, comma separated (^regex allowed)", required=True),
        Option("Group_Id", "str", "fluent-bit", "consumer group id: processes with the same id share partitions"),
        Option("Client_Id", "str", None, "Kafka client.id (default logfwd)"),
        Option("Format", "str", "none", "payload format: none (text), json or msgpack",
               choices=("none", "json", "msgpack")),
        Option("Envelope", "bool", "on", "on: Fluent Bit's record {topic, partition, offset, error, key, payload}; "
               "off: the decoded payload is the record (its Timestamp_Key is the record time)"),
        Option("Timestamp_Key", "str", "@timestamp", "with Envelope off: key holding the record time "
               "(double or ISO 8601, as the kafka output writes it); removed from the record"),
        Option("Raw_Log_Key", "str", "log", "with Envelope off: key of a payload that is not an object"),
        Option("Metadata_Key", "str", None, "add {topic, partition, offset, key, timestamp, headers} under this key"),
        Option("Tag_Key", "str", None, "record key whose string value is the tag (else Tag, '*' = topic)"),
        Option("Poll_Ms", "int", "500", "pause between polls that found nothing, milliseconds", minimum=1),
        Option("Poll_Timeout_Ms", "int", "1", "how long one poll waits for the first message, milliseconds",
               minimum=0),
        Option("Buffer_Max_Size", "size", "4M", "payload bytes read per poll cycle at most", minimum=1),
        Option("Commit_Interval", "time", "1s", "how often delivered offsets are committed"),
        Option("Enable_Auto_Commit", "bool", "off", "on: librdkafka commits what was read (faster, but a crash "
               "loses what was read and not yet delivered); off: commit only what was delivered"),
        Option("rdkafka.", "str", None, "any librdkafka consumer property, e.g. rdkafka.auto.offset.reset latest",
               prefix=True),
    )

    # ------------------------------------------------------------ setup

    def setup(self) -> None:
        s = self.settings
        self.rdkafka: dict[str, str] = {str(k): str(v) for k, v in (self.config["rdkafka."] or {}).items()}
        self.brokers: list[str] = s.brokers or []
        if not self.brokers and not ({"bootstrap.servers", "metadata.broker.list"} & set(self.rdkafka)):
            raise ConfigValueError("brokers", "no brokers: set Brokers, e.g. Brokers 127.0.0.1:9092")
        self.topics: list[str] = [t for t in (s.topics or []) if t]
        if not self.topics:
            raise ConfigValueError("topics", "no topics: set Topics, e.g. Topics logs")
        for key in ("enable.auto.commit", "enable.auto.offset.store"):
            if key in self.rdkafka:
                raise ConfigValueError(f"rdkafka.{key}", f"set Enable_Auto_Commit instead of rdkafka.{key}: "
                                       "offsets are committed by the input once records are delivered")
        self.decode = DecodeSettings(
            format=s.format, envelope=s.envelope, timestamp_key=s.timestamp_key or None,
            raw_log_key=s.raw_log_key or "log", metadata_key=s.metadata_key or None,
        )
        self.auto_commit: bool = s.enable_auto_commit
        self.consumer: Consumer | None = None
        self._trackers: dict[TP, AckTracker] = {}
        self._to_commit: dict[TP, int] = {}  # next offset to commit, per partition
        self._paused = False
        self._decode_errors_logged = 0

    def consumer_conf(self) -> dict[str, Any]:
        s = self.settings
        conf: dict[str, Any] = {
            "group.id": s.group_id,
            "client.id": s.client_id or "logfwd",
            "enable.auto.commit": self.auto_commit,
            "enable.auto.offset.store": self.auto_commit,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": _DEFAULT_STRATEGY,
        }
        if self.brokers:
            conf["bootstrap.servers"] = ",".join(self.brokers)
        conf.update(self.rdkafka)
        conf["logger"] = self.log
        conf["error_cb"] = self._on_error
        conf["on_commit"] = self._on_commit_result
        return conf

    # ------------------------------------------------------------ run

    async def run(self, emitter: Emitter, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            consumer = Consumer(self.consumer_conf())
        except (KafkaException, TypeError, ValueError) as e:
            err = e.args[0] if e.args else e
            text = err.str() if isinstance(err, KafkaError) else str(e)
            raise ConfigValueError("rdkafka.", f"librdkafka refused the configuration: {text}") from None
        self.consumer = consumer
        # A broker that is down now is no error: librdkafka connects (and the group forms) later.
        consumer.subscribe(self.topics, on_assign=self._cb_assign, on_revoke=self._cb_revoke,
                           on_lost=self._cb_lost)
        self.log.info("consuming %s as group %s from %s", ",".join(self.topics), self.settings.group_id,
                      ",".join(self.brokers) or "(rdkafka.*)")
        task_status.started()  # subscribed; the brokers need not be up
        async with trio.open_nursery() as nursery:
            if not self.auto_commit:
                nursery.start_soon(self._commit_loop)
            await self._consume_loop(emitter, consumer)

    async def _consume_loop(self, emitter: Emitter, consumer: Consumer) -> None:
        s = self.settings
        timeout = s.poll_timeout_ms / 1000.0
        idle = s.poll_ms / 1000.0
        while True:
            self._resume(consumer)
            reads = await trio.to_thread.run_sync(self._poll_cycle, consumer, timeout)
            if not any(msgs for msgs, _ in reads):
                await trio.sleep(idle)
                continue
            await self._emit_within_budget(emitter, consumer, reads)

    async def _emit_within_budget(self, emitter: Emitter, consumer: Consumer, reads: list[Read]) -> None:
        """Emit partition by partition, each once it fits in Mem_Buf_Limit.

        Never block in emit: a blocked emit stops polling, librdkafka keeps prefetching and the
        group drops us after max.poll.interval.ms. While the next partition's batch would not
        fit, pause the partitions and keep polling (which returns nothing for them). The check
        is per batch, not per poll cycle: a cycle that began with nothing outstanding could
        otherwise emit its first batch and then block on the second.
        """
        budget = emitter.budget
        queue = deque(self._by_partition(reads).items())
        while queue:
            (tp, owner), batch = queue.popleft()
            need = _cost_estimate(batch)
            while budget.limit and budget.used > 0 and budget.used + need > budget.limit:
                self._pause(consumer)
                more = await trio.to_thread.run_sync(self._consume, consumer, _PER_CALL, _PAUSE_POLL)
                if more[0]:  # partitions assigned since the pause are not paused yet; FIFO keeps order
                    queue.extend(self._by_partition([more]).items())
            await self._emit(emitter, tp, owner, batch)

    def _consume(self, consumer: Consumer, n: int, timeout: float) -> Read:
        """One ``consume`` call and the assignment its messages belong to (worker thread).

        Rebalance callbacks run inside ``consume`` (and reach the trio thread, which is waiting
        for this call, through ``from_thread``), so the trackers seen right after it are those
        of the assignment the returned messages were fetched under.
        """
        got = consumer.consume(n, timeout)
        return got, dict(self._trackers) if got else {}

    def _poll_cycle(self, consumer: Consumer, timeout: float) -> list[Read]:
        """Up to ``Buffer_Max_Size`` payload bytes of messages (worker thread)."""
        limit = self.settings.buffer_max_size
        out: list[Read] = []
        size = 0
        while size < limit:
            got, owners = self._consume(consumer, _PER_CALL, timeout)
            if got:
                out.append((got, owners))
            for m in got:
                v = m.value()
                size += len(v) if v is not None else 0
            if len(got) < _PER_CALL:
                break
            timeout = 0
        return out

    def _pause(self, consumer: Consumer) -> None:
        assignment = consumer.assignment()
        if assignment:
            consumer.pause(assignment)
        if not self._paused:
            self._paused = True
            self.metrics.inc("pauses")
            self.log.debug("Mem_Buf_Limit reached: %d partition(s) paused", len(assignment))

    def _resume(self, consumer: Consumer) -> None:
        if self._paused:
            self._paused = False
            assignment = consumer.assignment()
            if assignment:
                consumer.resume(assignment)

    def _by_partition(self, reads: list[Read]) -> dict[tuple[TP, AckTracker | None], list[Any]]:
        """Messages grouped by partition and the assignment they were read under, in offset order;
        errors counted and logged, EOFs skipped."""
        groups: dict[tuple[TP, AckTracker | None], list[Any]] = {}
        for msgs, owners in reads:
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        self.metrics.inc("errors")
                        self.log.warning("consume: %s", err.str())
                    continue
                tp = (m.topic(), m.partition())
                groups.setdefault((tp, owners.get(tp)), []).append(m)
        return groups

    async def _emit(self, emitter: Emitter, tp: TP, owner: AckTracker | None, batch: list[Any]) -> None:
        """One partition's batch, with a handle at its last offset on the tracker it was read under.

        A batch whose partition was revoked since it was read is dropped: acknowledged into a
        later assignment's tracker it could move that watermark past records the later
        assignment has not delivered. Whoever owns the partition now reads it again from the
        committed offset.
        """
        tracker = self._trackers.get(tp)
        if not self.auto_commit and tracker is not owner:
            self.metrics.inc("stale_dropped", len(batch))
            self.log.debug("%s[%d]: %d message(s) read before a rebalance dropped; they are read again",
                           tp[0], tp[1], len(batch))
            return
        topic, part = tp
        records, times, nbytes = decode_messages(batch, self.decode, time.time_ns(), self._decode_error)
        keys = [f"{topic}:{part}:{m.offset()}" for m in batch]
        handle = tracker.handle(batch[-1].offset()) if tracker is not None else None
        tag = emitter.expand_tag(topic)
        if self.settings.tag_key is None:
            await emitter.emit(records, times, tag=tag, handle=handle, nbytes=max(nbytes, 1), keys=keys)
        else:
            await self._emit_by_tag(emitter, records, times, keys, tag, handle, nbytes)

    async def _emit_by_tag(self, emitter: Emitter, records: list[dict[str, Any]], times: list[int],
                           keys: list[str], default: str, handle: Any, nbytes: int) -> None:
        """``Tag_Key``: split one partition's batch by tag; the handle completes with the last part."""
        tag_key = self.settings.tag_key
        parts: dict[str, list[int]] = {}
        for i, rec in enumerate(records):
            v = rec.get(tag_key)
            parts.setdefault(v if isinstance(v, str) and v else default, []).append(i)
        if handle is not None and len(parts) > 1:
            handle.add(len(parts) - 1)  # one reference per extra emit; each emit releases one
        for tag, idx in parts.items():
            share = max(nbytes * len(idx) // max(len(records), 1), 1)
            await emitter.emit([records[i] for i in idx], [times[i] for i in idx], tag=tag, handle=handle,
                               nbytes=share, keys=[keys[i] for i in idx])

    def _decode_error(self, msg: Any, reason: str) -> None:
        self.metrics.inc("decode_errors")
        if self._decode_errors_logged < 10:
            self._decode_errors_logged += 1
            self.log.warning("%s[%d]@%d: %s; kept as text", msg.topic(), msg.partition(), msg.offset(), reason)

    # ------------------------------------------------------------ offsets (trio thread)

    def _track(self, tp: TP) -> None:
        tracker: AckTracker

        def on_commit(offset: int) -> None:
            if self._trackers.get(tp) is tracker:  # not revoked since
                self._to_commit[tp] = offset + 1

        tracker = AckTracker(on_commit)
        self._trackers[tp] = tracker

    def _take_offsets(self) -> list[TopicPartition]:
        """Offsets ready to commit, removed from the queue."""
        keys = list(self._to_commit)
        return [TopicPartition(t, p, self._to_commit.pop((t, p))) for t, p in keys]

    def _positions(self, tps: list[TP] | None = None) -> list[TopicPartition]:
        """The delivered position (watermark + 1) of every owned partition (or of ``tps``) that has one.

        Used where a commit must not depend on the queue (revoke, close): a queued offset may
        have been taken by an asynchronous commit that is still in flight and may yet fail.
        Their queue entries go: the positions cover them.
        """
        keys = list(self._trackers) if tps is None else [tp for tp in tps if tp in self._trackers]
        out = []
        for tp in keys:
            self._to_commit.pop(tp, None)
            mark = self._trackers[tp].watermark
            if mark is not None:
                out.append(TopicPartition(tp[0], tp[1], mark + 1))
        return out

    def _assigned(self, tps: list[TP]) -> None:
        if not self.auto_commit:
            for tp in tps:
                self._track(tp)
        self.metrics.inc("rebalances")
        self.log.info("assigned %s", _fmt(tps))

    def _revoked(self, tps: list[TP]) -> list[TopicPartition]:
        """Drop the trackers of ``tps``; return their delivered positions, to commit now."""
        offsets = self._positions(tps)
        for tp in tps:
            self._trackers.pop(tp, None)
        self.log.info("revoked %s (committing %d offset(s))", _fmt(tps), len(offsets))
        return offsets

    def _lost(self, tps: list[TP]) -> None:
        """Forget ``tps`` without committing: the group already gave them to another member.

        A commit now would be refused at best, or move back the new owner's offset. Their
        queued offsets go, and acks that arrive later for their batches commit nothing (the
        trackers' ``on_commit`` checks they are still the partition's tracker).
        """
        for tp in tps:
            self._trackers.pop(tp, None)
            self._to_commit.pop(tp, None)
        self.log.warning("lost %s (another member owns them now; uncommitted records will be read again)",
                         _fmt(tps))

    async def _commit_loop(self) -> None:
        interval = max(float(self.settings.commit_interval), 0.01)
        while True:
            await trio.sleep(interval)
            self._commit(asynchronous=True)

    def _commit(self, asynchronous: bool) -> None:
        consumer = self.consumer
        offsets = self._take_offsets()
        if consumer is None or not offsets:
            return
        try:
            consumer.commit(offsets=offsets, asynchronous=asynchronous)
            self.metrics.inc("commits")
        except KafkaException as e:
            self._commit_failed(offsets, e)

    def _commit_failed(self, offsets: list[TopicPartition], e: Exception) -> None:
        """Queue the partitions' current delivered positions again, to be committed next time.

        Not the failed offsets themselves: an asynchronous commit's answer can arrive after a
        newer commit went out (re-queuing its older offset would move the group's offset
        back), or after the partition was revoked and assigned again (its offset then belongs
        to another assignment). The position is what this assignment delivered, never more; a
        partition no longer owned (revoked, lost) queues nothing: its owner commits it.
        """
        for tp in offsets:
            key = (tp.topic, tp.partition)
            tracker = self._trackers.get(key)
            if tracker is not None and tracker.watermark is not None:
                self._to_commit[key] = tracker.watermark + 1
        self.log.warning("commit failed (will retry): %s", e)

    # ------------------------------------------------------------ librdkafka callbacks (worker thread)

    def _cb_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        _from_thread(self._assigned, [(p.topic, p.partition) for p in partitions])

    def _cb_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        offsets = _from_thread(self._revoked, [(p.topic, p.partition) for p in partitions])
        if offsets:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as e:
                self.log.warning("commit on revoke failed (records will be read again): %s", e)

    def _cb_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        _from_thread(self._lost, [(p.topic, p.partition) for p in partitions])

    def _on_commit_result(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        # An asynchronous commit refused during a rebalance (ILLEGAL_GENERATION) must be sent
        # again: when no record follows on that partition, nothing else would carry its offset.
        failed = [tp for tp in partitions if tp.error is not None] if err is None else list(partitions)
        if failed and (err is None or err.code() != KafkaError._NO_OFFSET):
            _from_thread(self._commit_failed, failed, KafkaException(err or failed[0].error))

    def _on_error(self, err: KafkaError) -> None:
        # Global client errors (all brokers down, auth): librdkafka keeps retrying by itself.
        self.log.warning("kafka: %s", err.str())

    # ------------------------------------------------------------ close

    async def close(self) -> None:
        """After the pipeline drained: commit what was delivered, leave the group."""
        consumer = self.consumer
        if consumer is None:
            return
        # The final commit can meet a rebalance (other members leaving too): then serve the
        # rebalance with a short poll and try again; what is still owed goes back to the queue,
        # so the revoke that consumer.close() triggers commits it.
        for attempt in range(_FINAL_COMMIT_TRIES):
            offsets = self._positions()
            if not offsets:
                break
            try:
                await trio.to_thread.run_sync(lambda o=offsets: consumer.commit(offsets=o, asynchronous=False))
                break
            except KafkaException as e:
                self._commit_failed(offsets, e)
                if attempt + 1 == _FINAL_COMMIT_TRIES:
                    self.log.warning("final commit failed (records will be read again): %s", e)
                    break
                await trio.to_thread.run_sync(consumer.poll, 0.5)  # no records are stored: poll only rejoins
        pending = sum(t.outstanding for t in self._trackers.values())
        if pending:
            self.log.info("%d batch(es) undelivered at shutdown; they will be read again", pending)
        await trio.to_thread.run_sync(consumer.close)
        self.consumer = None


_FINAL_COMMIT_TRIES = 5


def _from_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn`` in the trio thread (rebalance callbacks come from librdkafka's caller thread)."""
    try:
        return trio.from_thread.run_sync(fn, *args)
    except RuntimeError:  # not in a trio worker thread (e.g. a test calling directly)
        return fn(*args)


def _fmt(tps: list[TP]) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in sorted(tps)) or "nothing"


def _cost_estimate(msgs: list[Any]) -> int:
    """An upper bound of what ``msgs`` will cost against Mem_Buf_Limit once decoded (see ``memory_cost``):
    their payload bytes twice over (text plus parsed values) and a dict with several fields each."""
    size = 0
    for m in msgs:
        v = m.value()
        size += len(v) if v is not None else 0
    return 2 * size + 700 * len(msgs)
