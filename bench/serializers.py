#!/usr/bin/env python3
"""CPU seconds per million records of the output serializers, before/after the Cython kernels.

Usage: bench/serializers.py [--records N] [--runs R]

"before" is the retained pure-Python path (``esbulk.build_bulk_py``,
``LineEncoder.encode_py``, kafka's per-record ``MessageEncoder.value``); "after" is what the
outputs call (``build_bulk``, ``LineEncoder.encode``, ``MessageEncoder.values``). Each figure is process CPU time for one call over N
records (default 200,000; best of R runs), scaled to one million. The records
look like parsed apache access lines (eight fields, strings and integers).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from logfwd.plugins._es.bulk import BulkSettings, build_bulk, build_bulk_py
from logfwd.plugins.out_influxdb.lineproto import LineEncoder
from logfwd.plugins.out_kafka.messages import MessageEncoder

T0 = 1_700_000_000_000_000_000


def records(n: int) -> tuple[list[int], list[dict[str, Any]]]:
    times = [T0 + i * 1_000_003 for i in range(n)]
    recs = [
        {
            "host": f"10.0.{i % 250}.{i % 7}",
            "user": "-",
            "method": "GET",
            "path": f"/api/v1/items/{i}?q=a b",
            "code": 200 + i % 3,
            "size": 512 + i,
            "referer": "-",
            "agent": 'Mozilla/5.0 (X11; Linux x86_64) "quoted"',
        }
        for i in range(n)
    ]
    return times, recs


def kafka_encoder(ts_format: str) -> MessageEncoder:
    """The kafka output's value encoder with Format json and the given Timestamp_Format."""
    s = SimpleNamespace(topics=["t"], topic_key=None, dynamic_topic=False, message_key=None, message_key_field=None,
                        timestamp_key="@timestamp", timestamp_format=ts_format, format="json", raw_log_key=None,
                        gelf_short_message_key=None, gelf_full_message_key=None, gelf_host_key=None,
                        gelf_level_key=None, gelf_timestamp_key=None)
    return MessageEncoder(s, logging.getLogger("bench"))


def cpu(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(runs):
        t = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=2)
    a = ap.parse_args()
    n = a.records
    scale = 1_000_000 / n
    times, recs = records(n)
    seqs = [i % 100_000 for i in range(n)]

    rows: list[tuple[str, Callable[[], Any], Callable[[], Any], Callable[[Any], bytes]]] = []
    for label, s in (
        ("es default (create)", BulkSettings()),
        ("es logstash_format", BulkSettings(logstash_format=True)),
        ("es generate_id + upsert", BulkSettings(generate_id=True, write_operation="upsert")),
    ):
        rows.append((label,
                     lambda s=s: build_bulk_py(s, "app.log", times, recs, None, T0),
                     lambda s=s: build_bulk(s, "app.log", times, recs, None, T0),
                     lambda r: r.body))
    for label, enc in (
        ("influxdb default (_seq tag)", LineEncoder()),
        ("influxdb tag_keys + int suffix", LineEncoder(tag_keys=["host", "method"], add_integer_suffix=True)),
    ):
        rows.append((label,
                     lambda enc=enc: enc.encode_py("app.log", times, recs, seqs),
                     lambda enc=enc: enc.encode("app.log", times, recs, seqs),
                     lambda r: r.body()))

    for label, ts_format in (("kafka json (double time)", "double"), ("kafka json (iso8601)", "iso8601")):
        kenc = kafka_encoder(ts_format)
        rows.append((label,
                     lambda kenc=kenc: [kenc.value(t, r) for t, r in zip(times, recs, strict=True)],
                     lambda kenc=kenc: kenc.values(times, recs, 0, []),
                     lambda r: b"\n".join(r)))

    print(f"CPU s per 1M records ({n:,} records, best of {a.runs}, scaled)")
    print(f"{'serializer':34} {'before':>8} {'after':>8} {'speedup':>8}")
    for label, before, after, body in rows:
        tb, rb = cpu(before, a.runs)
        ta, ra = cpu(after, a.runs)
        same = body(rb) == body(ra)
        print(f"{label:34} {tb * scale:8.2f} {ta * scale:8.2f} {tb / ta:7.1f}x{'' if same else '  OUTPUT DIFFERS'}")


if __name__ == "__main__":
    main()
