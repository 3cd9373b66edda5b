"""End to end through the real ``logfwd`` process and real servers: nothing lost when things fail.

Each test runs ``logfwd -c FILE`` as a user would, feeds it numbered records, breaks
something in the middle of the stream and checks on the *server* that every number
0..N-1 arrived:

- Elasticsearch (noida-db stand-in) stopped and restarted mid-stream; ``Id_Mode derived``
  makes replays idempotent, so the index must hold exactly N documents. noida-db keeps its
  data only through an orderly shutdown (SIGKILL loses everything it acknowledged, a fault
  of the stand-in, not of the forwarder), so it is stopped with SIGTERM and restarted on
  the same data directory and port: for ``logfwd`` the server is gone (connections refused)
  for a couple of seconds, exactly as with a crashed node.
- Kafka (tansu): tansu keeps messages in memory, so restarting it would erase what it had
  acknowledged. Instead the broker advertises a TCP proxy (``TcpCutProxy`` below) as its
  address and the proxy is cut for a few seconds: every connection is reset and new ones
  are refused, so from the producer's side the broker is down, while the broker keeps its
  log. Duplicates are allowed only for what was in flight and are reported.
- InfluxDB 1.6.7 killed (SIGKILL) and restarted on its data directory (it fsyncs its WAL
  before answering a write).
- ``logfwd`` itself SIGKILLed mid-stream and started again on the same tail ``DB``: with
  derived ids the index ends with exactly N documents (the headline at-least-once promise).
- syslog over TCP from ``logger`` (octet counting, RFC 5424) and journal entries from a real
  journald, with ``logfwd`` restarted by SIGTERM in the middle: each message exactly once.

``N`` is a module constant (``LOGFWD_E2E_N`` overrides it for soak runs).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .backends._proc import ManagedProcess, free_port, wait_for
from .backends.es import EsServer
from .backends.influx import InfluxServer
from .backends.kafka import consume, tansu_binary
from .e2ekit import (
    DRAIN_TIMEOUT,
    LineWriter,
    Logfwd,
    es_numbers,
    es_output,
    numbers_exact,
    start_noida_keeping_data,
    stop_noida,
    tail_input,
)

N = int(os.environ.get("LOGFWD_E2E_N", "50000"))
"""Numbered lines per output test (CI size; soak runs raise it through LOGFWD_E2E_N)."""

# Capped: the SIGTERM test needs its first half to stay in one unsealed chunk (< 2 MiB, < 50,000 records).
N_SYSLOG = min(max(N // 5, 2), 10_000)
N_JOURNAL = max(N // 10, 2)

OUTAGE_S = 2.5
"""How long a server stays unreachable."""


# --------------------------------------------------------------------------- Elasticsearch


def test_es_server_restart_mid_stream_exactly_n(es_server_factory: Callable[[], EsServer], tmp_path: Path,
                                                logfwds: list[Logfwd]) -> None:
    es = es_server_factory()
    index = "e2e-restart"
    data = tmp_path / "app.log"
    data.touch()
    lf = Logfwd(tmp_path / "lf", tail_input(data, tmp_path / "tail.db") + "\n" + es_output(es, index)).start()
    logfwds.append(lf)
    writer = LineWriter(data, N)
    writer.start()
    # the server goes away once part of the stream is delivered and the rest is still coming
    lf.wait_counter("output", "es.0", "proc_records", N // 5, timeout=60)
    stop_noida(es)
    writer.resume.set()  # the rest of the stream is written while the server is away
    time.sleep(OUTAGE_S)
    start_noida_keeping_data(es)
    writer.finish()
    lf.wait_counter("output", "es.0", "proc_records", N)
    m = lf.metrics() or {}
    out = m["output"]["es.0"]
    assert out["retries"] >= 1, f"the outage was not noticed: {out}"
    assert out.get("dlq_records", 0) == 0, out
    ns = es_numbers(es, index)
    missing, dups = numbers_exact(ns, N)
    assert not missing, f"{len(missing)} numbers missing, e.g. {sorted(missing)[:10]}"
    assert dups == 0 and es.count(index) == N


def test_logfwd_sigkill_restart_exactly_n_in_es(es_server: EsServer, tmp_path: Path,
                                                logfwds: list[Logfwd]) -> None:
    """SIGKILL the forwarder mid-stream, start it on the same DB: all N documents, no duplicate."""
    index = f"e2e-sigkill-{uuid.uuid4().hex[:6]}"
    data = tmp_path / "app.log"
    data.touch()
    body = tail_input(data, tmp_path / "tail.db") + "\n" + es_output(es_server, index)
    first = Logfwd(tmp_path / "lf", body).start()
    logfwds.append(first)
    writer = LineWriter(data, N)
    writer.start()
    first.wait_counter("output", "es.0", "proc_records", N // 4, timeout=60)
    assert first.signal(signal.SIGKILL) == -signal.SIGKILL
    writer.resume.set()  # the application keeps logging while the forwarder is down
    delivered_before = es_server.count(index)
    assert 0 < delivered_before < N
    second = Logfwd(tmp_path / "lf", body).start()  # same sections, same tail DB (a new metrics port)
    logfwds.append(second)
    writer.finish()
    # the second process delivers at least what the first had not acknowledged to its DB
    second.wait_counter("output", "es.0", "proc_records", N - delivered_before)
    second.wait(lambda: es_server.count(index) >= N, 30, f"{N} documents in {index}")
    time.sleep(1.0)  # anything replayed late would show up as an extra document
    ns = es_numbers(es_server, index)
    missing, dups = numbers_exact(ns, N)
    assert not missing, f"{len(missing)} numbers missing, e.g. {sorted(missing)[:10]}"
    assert dups == 0 and es_server.count(index) == N


# --------------------------------------------------------------------------- Kafka


class TcpCutProxy:
    """A TCP pass-through whose link can be cut: live connections reset, new ones refused.

    Threaded (one pump thread per direction per connection) so the test drives it
    from its own thread. ``cut()`` closes the listening socket (connects get RST from
    the kernel) and aborts every relayed connection with SO_LINGER 0 (RST);
    ``restore()`` listens again on the same port.
    """

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target_port = target_port
        self._lock = threading.Lock()
        self._conns: list[tuple[socket.socket, socket.socket, threading.Event]] = []
        self._listening = threading.Event()
        self._closed = False
        self.connections = 0
        self._thread: threading.Thread | None = None

    def start(self) -> TcpCutProxy:
        self._listening.set()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()
        wait_for(lambda: _port_open(self.port), 5, "proxy listening")
        return self

    def _accept_loop(self) -> None:
        lsock: socket.socket | None = None
        while not self._closed:
            if not self._listening.is_set():
                if lsock is not None:
                    lsock.close()
                    lsock = None
                time.sleep(0.05)
                continue
            if lsock is None:
                lsock = socket.socket()
                lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                lsock.bind(("127.0.0.1", self.port))
                lsock.listen(64)
                lsock.settimeout(0.05)
            try:
                client, _ = lsock.accept()
            except TimeoutError:
                continue
            except OSError:
                continue
            client.settimeout(None)
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                _abort(client)
                continue
            dead = threading.Event()
            with self._lock:
                self._conns.append((client, upstream, dead))
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, upstream, dead), daemon=True).start()
        if lsock is not None:
            lsock.close()

    def _pump(self, a: socket.socket, b: socket.socket, dead: threading.Event) -> None:
        """Relay both directions of one connection until either side closes or the link is cut."""
        peer = {a: b, b: a}
        try:
            while not dead.is_set():
                ready, _, _ = select.select([a, b], [], [], 0.05)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    peer[s].sendall(data)
        except OSError:
            return
        finally:
            _abort(a)
            _abort(b)
            with self._lock:
                self._conns = [c for c in self._conns if c[2] is not dead]

    def cut(self) -> None:
        self._listening.clear()
        with self._lock:
            for _, _, dead in self._conns:
                dead.set()
        wait_for(lambda: not _port_open(self.port), 5, "proxy stopped listening")

    def restore(self) -> None:
        self._listening.set()
        wait_for(lambda: _port_open(self.port), 5, "proxy listening again")

    def close(self) -> None:
        self._closed = True
        self.cut()


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _abort(s: socket.socket) -> None:
    """Close with RST (SO_LINGER on, timeout 0), as a crashed peer's kernel would."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    s.close()


@pytest.fixture
def kafka_behind_proxy(tmp_path: Path) -> Iterator[tuple[TcpCutProxy, str]]:
    """A private tansu broker that advertises a cuttable proxy as its address: (proxy, bootstrap)."""
    broker_port = free_port()
    proxy = TcpCutProxy(broker_port)
    log = tmp_path / "tansu.log"
    broker = ManagedProcess(
        [tansu_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{broker_port}",
         "--advertised-listener-url", f"tcp://127.0.0.1:{proxy.port}", "--storage-engine", "memory://tansu/"],
        log,
    ).start()
    try:
        wait_for(lambda: _port_open(broker_port), 20, "tansu broker", log)
        proxy.start()
        yield proxy, f"127.0.0.1:{proxy.port}"
    finally:
        proxy.close()
        broker.stop()


def test_kafka_broker_unreachable_mid_stream_every_number(kafka_behind_proxy: tuple[TcpCutProxy, str],
                                                          tmp_path: Path, logfwds: list[Logfwd]) -> None:
    proxy, bootstrap = kafka_behind_proxy
    topic = f"e2e-{uuid.uuid4().hex[:8]}"
    data = tmp_path / "app.log"
    data.touch()
    body = tail_input(data, tmp_path / "tail.db") + f"""
[OUTPUT]
    Name          kafka
    Match         *
    Brokers       {bootstrap}
    Topics        {topic}
    Format        json
    Retry_Limit   no_limits
    rdkafka.message.timeout.ms  4000
    rdkafka.reconnect.backoff.max.ms  500
"""
    lf = Logfwd(tmp_path / "lf", body).start()
    logfwds.append(lf)
    writer = LineWriter(data, N)
    writer.start()
    lf.wait_counter("output", "kafka.0", "proc_records", N // 5, timeout=60)
    before = proxy.connections
    proxy.cut()
    # Nothing past hold_at is written before the cut: what is not yet delivered now is the
    # most that can have been in flight, hence the most that can ever be duplicated.
    in_flight = writer.hold_at - lf.counter("output", "kafka.0", "proc_records")
    writer.resume.set()
    time.sleep(OUTAGE_S)
    proxy.restore()
    writer.finish()
    lf.wait_counter("output", "kafka.0", "proc_records", N)
    out = (lf.metrics() or {})["output"]["kafka.0"]
    assert out.get("dlq_records", 0) == 0, out
    assert proxy.connections > before, "the producer never reconnected: the cut did not hit it"
    msgs = consume(bootstrap, topic, N, timeout=60, settle=1.0)
    ns = [int(json.loads(m.value or b"{}")["n"]) for m in msgs]
    missing, dups = numbers_exact(ns, N)
    assert not missing, f"{len(missing)} numbers missing, e.g. {sorted(missing)[:10]}"
    # At-least-once: a duplicate can only be a record that was in flight when the link was
    # cut and was sent again (by librdkafka or by the engine); never a whole replay.
    print(f"kafka: {len(ns)} messages for {N} records, {dups} duplicates (at most {in_flight} in flight), "
          f"engine retries {out.get('retries', 0)} ({out.get('retried_records', 0)} records)")
    assert dups <= in_flight, f"{dups} duplicates: more than the {in_flight} records in flight at the cut"


# --------------------------------------------------------------------------- InfluxDB


def test_influxdb_killed_mid_stream_count_n(tmp_path: Path, logfwds: list[Logfwd]) -> None:
    influx = InfluxServer(tmp_path / "influx").start()
    try:
        db = influx.create_database("e2e")
        data = tmp_path / "app.log"
        data.touch()
        # n is a tag: every record is its own series, so two records can never overwrite
        # each other, and a replayed record (same n, same time) lands on its own point again.
        body = tail_input(data, tmp_path / "tail.db") + f"""
[OUTPUT]
    Name          influxdb
    Match         *
    Host          127.0.0.1
    Port          {influx.port}
    Database      {db}
    Measurement   e2e
    Tag_Keys      n
    Sequence_Tag  off
    Retry_Limit   no_limits
    net.connect_timeout 2s
    net.io_timeout 10s
"""
        lf = Logfwd(tmp_path / "lf", body).start()
        logfwds.append(lf)
        writer = LineWriter(data, N)
        writer.start()
        lf.wait_counter("output", "influxdb.0", "proc_records", N // 5, timeout=60)
        assert influx.proc is not None
        influx.proc.kill()
        writer.resume.set()
        time.sleep(OUTAGE_S)
        influx.start()
        writer.finish()
        lf.wait_counter("output", "influxdb.0", "proc_records", N)
        out = (lf.metrics() or {})["output"]["influxdb.0"]
        assert out["retries"] >= 1 and out.get("dlq_records", 0) == 0, out
        rows = influx.rows('SELECT * FROM "e2e"', db)
        ns = [int(r["n"]) for r in rows]
        missing, dups = numbers_exact(ns, N)
        assert not missing, f"{len(missing)} numbers missing, e.g. {sorted(missing)[:10]}"
        assert dups == 0 and len(rows) == N
    finally:
        influx.stop()


# --------------------------------------------------------------------------- syslog and journal inputs


def _file_output(path: Path) -> str:
    return f"""[OUTPUT]
    Name     file
    Match    *
    Path     {path.parent}
    File     {path.name}
    Format   plain
"""


def _logger_send(port: int, first: int, last: int) -> None:
    """Messages ``first..last-1`` through one ``logger`` TCP connection (octet counting, RFC 5424)."""
    text = "".join(f"e2e syslog {i}\n" for i in range(first, last)).encode()
    subprocess.run(["logger", "-n", "127.0.0.1", "-P", str(port), "--tcp", "--octet-count", "--rfc5424",
                    "-t", "e2eapp"], input=text, check=True, timeout=120)


def _numbers_in_file(path: Path, key: str, prefix: str) -> list[int]:
    out = []
    for line in path.read_text().splitlines():
        v = json.loads(line)[key]
        assert v.startswith(prefix), line
        out.append(int(v[len(prefix):]))
    return out


def test_syslog_tcp_logger_sigterm_restart_exactly_once(tmp_path: Path, logfwds: list[Logfwd]) -> None:
    """Messages buffered when SIGTERM arrives are delivered before exit; the restarted daemon takes the rest."""
    sport = free_port()
    out = tmp_path / "out" / "syslog.jsonl"
    out.parent.mkdir()
    body = f"""[INPUT]
    Name     syslog
    Tag      sys
    Mode     tcp
    Listen   127.0.0.1
    Port     {sport}
    Parser   syslog-rfc5424

""" + _file_output(out)
    half = N_SYSLOG // 2
    # a long Flush keeps the first half buffered in memory when SIGTERM comes
    first = Logfwd(tmp_path / "lf1", body, flush=30).start()
    logfwds.append(first)
    _logger_send(sport, 0, half)
    first.wait_counter("input", "syslog.0", "records", half, timeout=30)
    assert not out.exists() or not out.read_text(), "flushed before SIGTERM: the test would prove nothing"
    assert first.signal(signal.SIGTERM) == 0
    second = Logfwd(tmp_path / "lf2", body).start()
    logfwds.append(second)
    _logger_send(sport, half, N_SYSLOG)
    second.wait_counter("output", "file.0", "proc_records", N_SYSLOG - half, timeout=60)
    ns = _numbers_in_file(out, "message", "e2e syslog ")
    missing, dups = numbers_exact(ns, N_SYSLOG)
    assert not missing and dups == 0, (len(missing), dups)
    assert ns == list(range(N_SYSLOG)), "order within one TCP connection must be kept"


def test_journald_systemd_input_sigterm_restart_no_gap_no_repeat(journald: Any, tmp_path: Path,
                                                                 logfwds: list[Logfwd]) -> None:
    ident = f"e2e-{uuid.uuid4().hex[:6]}"
    out = tmp_path / "out" / "journal.jsonl"
    out.parent.mkdir()
    body = f"""[INPUT]
    Name            systemd
    Tag             journal
    Path            {journald.journal_dir}
    Systemd_Filter  SYSLOG_IDENTIFIER={ident}
    DB              {tmp_path / "journal.db"}
    Max_Entries     500

""" + _file_output(out)

    failure: list[BaseException] = []
    resume = threading.Event()

    def send_all() -> None:
        """Half the entries, then (once the test says so) the rest, while logfwd restarts."""
        try:
            for i in range(N_JOURNAL):
                if i == N_JOURNAL // 2 and not resume.wait(120):
                    raise RuntimeError("never resumed")
                journald.send_native({"MESSAGE": f"e2e journal {i}", "SYSLOG_IDENTIFIER": ident,
                                      "E2E_N": str(i)})
                if i % 200 == 199:
                    time.sleep(0.02)
        except BaseException as e:  # noqa: BLE001 - reported below
            failure.append(e)

    sender = threading.Thread(target=send_all, daemon=True)
    first = Logfwd(tmp_path / "lf1", body).start()
    logfwds.append(first)
    sender.start()
    first.wait_counter("output", "file.0", "proc_records", N_JOURNAL // 4, timeout=60)
    resume.set()  # entries keep arriving while the daemon shuts down and starts again
    assert first.signal(signal.SIGTERM) == 0
    second = Logfwd(tmp_path / "lf2", body).start()
    logfwds.append(second)
    sender.join(120)
    assert not failure, failure
    journald.wait_entries(f"SYSLOG_IDENTIFIER={ident}", N_JOURNAL, timeout=60)
    second.wait(lambda: out.exists() and len(out.read_text().splitlines()) >= N_JOURNAL, DRAIN_TIMEOUT,
                f"{N_JOURNAL} journal records in the file")
    time.sleep(1.0)
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    ns = [int(r["E2E_N"]) for r in recs]
    missing, dups = numbers_exact(ns, N_JOURNAL)
    assert not missing and dups == 0, (sorted(missing)[:10], dups)
    assert ns == list(range(N_JOURNAL))
    assert all(r["MESSAGE"] == f"e2e journal {r['E2E_N']}" for r in recs)
