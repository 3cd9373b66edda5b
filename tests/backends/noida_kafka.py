"""A second real Kafka-protocol broker for tests: the Kafka listener of noida-db.

tansu (``tests/backends/kafka.py``) is the main broker, but it has no message size limit and
always creates topics, so the kafka output's *broker-side* refusals cannot be seen against it.
noida-db (already installed for the Elasticsearch stand-in) also speaks Kafka, and differs where
it matters: it refuses a record over 1 MB with ``MSG_SIZE_TOO_LARGE``, it reports correct
watermarks, and its broker config ``auto.create.topics.enable`` can be switched off at run time
through the Admin API (``IncrementalAlterConfigs``), after which a produce to a missing topic
fails with ``UNKNOWN_TOPIC_OR_PART``.

Fixtures:

- ``noida_kafka``: one noida-db (``--only kafka``) for the session on a free loopback port, in a
  fresh data directory (noida-db saves its data on shutdown and reloads it on start). It starts
  with noida's default, auto-creation on; a test that switches it off must switch it back
  (``noida_kafka.auto_create(False)`` in a ``try/finally``).

Read messages back with ``tests.backends.kafka.consume``; it works against either broker.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType

from ._proc import ManagedProcess, free_port, wait_for
from .es import noida_binary


class NoidaKafka:
    """A running noida-db Kafka listener we own: ``bootstrap`` is ``127.0.0.1:PORT``."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log = workdir / "noida-kafka.log"
        self.proc: ManagedProcess | None = None

    def start(self) -> NoidaKafka:
        data = self.workdir / "data"
        shutil.rmtree(data, ignore_errors=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = ManagedProcess(
            [noida_binary(), "start", "--data-dir", str(data), "--host", "127.0.0.1", "--only", "kafka",
             "--kafka-port", str(self.port)],
            self.log,
        ).start()
        wait_for(self.healthy, 30, f"noida-db (Kafka) on {self.bootstrap}", self.log)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def healthy(self) -> bool:

        if self.proc is not None and not self.proc.alive():
            raise RuntimeError("noida-db exited")
        md = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=2)
        return bool(md.brokers)

    def _admin(self):  # type: ignore[no-untyped-def]

        return AdminClient({"bootstrap.servers": self.bootstrap})

    def broker_config(self) -> dict[str, str]:
        """The broker's configuration as DescribeConfigs reports it."""

        admin = self._admin()
        broker_id = str(next(iter(admin.list_topics(timeout=5).brokers)))
        res = ConfigResource(ResourceType.BROKER, broker_id)
        return {k: str(v.value) for k, v in admin.describe_configs([res])[res].result(10).items()}

    def auto_create(self, enabled: bool) -> None:
        """Switch the broker's ``auto.create.topics.enable`` (checked by reading it back)."""

        admin = self._admin()
        broker_id = str(next(iter(admin.list_topics(timeout=5).brokers)))
        value = "true" if enabled else "false"
        entry = ConfigEntry("auto.create.topics.enable", value, incremental_operation=AlterConfigOpType.SET)
        res = ConfigResource(ResourceType.BROKER, broker_id, incremental_configs=[entry])
        admin.incremental_alter_configs([res])[res].result(10)
        got = self.broker_config().get("auto.create.topics.enable")
        if got != value:
            raise RuntimeError(f"noida-db kept auto.create.topics.enable={got!r} after setting {value!r}")

    def create_topic(self, name: str, partitions: int = 1) -> None:

        admin = self._admin()  # kept referenced: a collected client fails its futures with _DESTROY
        admin.create_topics([NewTopic(name, partitions, 1)])[name].result(10)

    def topics(self) -> set[str]:
        return {t for t in self._admin().list_topics(timeout=5).topics if not t.startswith("__")}


@pytest.fixture(scope="session")
def noida_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NoidaKafka]:
    """One real noida-db Kafka listener for the whole session (auto-creation on)."""
    broker = NoidaKafka(tmp_path_factory.mktemp("noida-kafka")).start()
    try:
        yield broker
    finally:
        broker.stop()
