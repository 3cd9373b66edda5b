#!/usr/bin/env python3
"""One aggregator's throughput: the real ``logfwd`` with the ``kafka`` input, until a topic is drained.

A tansu broker is started (as ``bench/run.py`` does for the kafka output), a 6-partition
topic is filled with ``--records`` docker-like records as a node agent's kafka output writes
them (a JSON object with ``@timestamp`` in ``iso8601_ns``, ``log``, ``stream``, ``time``),
then ``logfwd -c`` runs a consumer-group member (``Format json``, ``Envelope off``, offsets
committed on delivery) into the ``null`` output (or ``es``: noida-db, ``Id_Mode derived``)
until its metrics show every record processed. Only the daemon is measured (``wait4``): CPU
seconds (user + sys) per million records, records/s from the first record consumed (the
group join, which tansu delays by ``session.timeout.ms / 2``, is left out) and peak RSS.

Usage::

    .venv/bin/python bench/kafka_input.py                      # 1,000,000 records → null, 3 runs
    .venv/bin/python bench/kafka_input.py --records 200000 --runs 1 --output es
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import time
import urllib.request
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from run import OUT, Server, free_port, logfwd_argv, processed, start_es, start_kafka

TOPIC = "containers"
PARTITIONS = 6


def fill(bootstrap: str, records: int) -> None:
    """The topic as node agents would leave it: one JSON message per container log line."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)]).values():
        f.result(30)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.num.messages": 10000,
                  "queue.buffering.max.messages": 500000})
    base = 1_796_400_000
    for i in range(records):
        sec, ns = base + i // 1000, (i % 1000) * 1_000_000 + 123
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{ns:09d}Z"
        doc = {"@timestamp": ts, "log": f"{ts} INFO  [worker-{i % 16}] request {i} served in {i % 997} ms "
               f"path=/api/v1/items/{i % 5000} status=200\n", "stream": "stdout", "time": ts}
        while True:
            try:
                p.produce(TOPIC, json.dumps(doc).encode())
                break
            except BufferError:
                p.poll(0.1)
        if i % 10000 == 0:
            p.poll(0)
    left = p.flush(120)
    if left:
        raise RuntimeError(f"{left} messages not delivered to the broker")


def no_date_detection(port: int) -> None:
    """The index with dynamic date detection off: a ``log`` text that starts with a timestamp
    would otherwise map the field as a date and every later line would be refused."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/fluent-bit", method="PUT",
                                 data=json.dumps({"mappings": {"date_detection": False}}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()


def config(workdir: Path, bootstrap: str, port: int, output: str, target: str) -> Path:
    out = "    Name null\n    Match *\n"
    if output == "es":
        out = (f"    Name es\n    Match *\n    Host 127.0.0.1\n    Port {target}\n    Id_Mode derived\n"
               "    Suppress_Type_Name on\n    Workers 2\n    Retry_Limit no_limits\n")
    conf = workdir / "logfwd.conf"
    conf.write_text(f"""[SERVICE]
    Flush        1
    Log_Level    info
    HTTP_Server  On
    HTTP_Listen  127.0.0.1
    HTTP_Port    {port}

[INPUT]
    Name        kafka
    Brokers     {bootstrap}
    Topics      {TOPIC}
    Group_Id    bench-{time.time_ns()}
    Format      json
    Envelope    off
    Tag         kube.*
    rdkafka.session.timeout.ms 6000

[OUTPUT]
{out}""")
    return conf


def run_once(records: int, output: str) -> tuple[float, float, float]:
    """(records/s, CPU s per 1M, peak RSS MiB) of one run against a freshly filled broker."""
    workdir = OUT / f"kafka-input-{output}"
    workdir.mkdir(parents=True, exist_ok=True)
    servers: list[Server] = []
    try:
        broker, bootstrap = start_kafka(workdir)
        servers.append(broker)
        target = ""
        if output == "es":
            es, es_port = start_es(workdir)
            servers.append(es)
            target = str(es_port)
            no_date_detection(es_port)
        fill(bootstrap, records)
        port = free_port()
        log = open(workdir / "daemon.log", "wb")
        proc = subprocess.Popen(logfwd_argv(config(workdir, bootstrap, port, output, target)), stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        first = end = None
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and proc.poll() is None:
                n = processed(port) or 0
                if n and first is None:
                    first = time.monotonic()
                if n >= records:
                    end = time.monotonic()
                    break
                time.sleep(0.1 if first is None else max(0.05, (time.monotonic() - first) / 100))
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            _, _status, ru = os.wait4(proc.pid, 0)
            log.close()
        if end is None or first is None:
            tail = (workdir / "daemon.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"not every record was consumed; daemon log:\n{tail}")
        cpu = ru.ru_utime + ru.ru_stime
        # The rate counts from the first record seen; the poll granularity (~1%) is the error.
        return records / max(end - first, 1e-6), cpu * 1_000_000 / records, ru.ru_maxrss / 1024.0
    finally:
        for s in servers:
            s.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--output", choices=("null", "es"), default="null")
    args = ap.parse_args()
    results = [run_once(args.records, args.output) for _ in range(args.runs)]
    rate = statistics.median(r[0] for r in results)
    cpu = statistics.median(r[1] for r in results)
    rss = statistics.median(r[2] for r in results)
    print(f"kafka input → {args.output}, {args.records:,} records, median of {args.runs}")
    print("records/s  CPU s/1M  RSS MiB")
    print(f"{rate:9,.0f}  {cpu:8.2f}  {rss:7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
