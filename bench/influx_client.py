#!/usr/bin/env python3
"""CPU of the InfluxDB write path: httpx (what the output uses) vs the ``influxdb-client`` library.

Usage: bench/influx_client.py [--points N] [--batch B]

Issue #12 asked whether the official client should carry the writes. This measures only
the write path (line protocol bodies are built once beforehand; the encoder is the same
either way): N points (default 1,000,000) in requests of B points (default 5,000), as
process CPU seconds (every thread of this process; the servers are not counted).

- httpx → InfluxDB 1.6.7 ``/write`` (the 1.x path), and httpx → VictoriaMetrics ``/api/v2/write``;
- influxdb-client ``WriteApi(SYNCHRONOUS).write(record=<bytes>)`` → VictoriaMetrics
  ``/api/v2/write``, called in a trio worker thread (``trio.to_thread.run_sync`` with a
  limiter), as the output would. InfluxDB 1.6.7 has no v2 API, so the client cannot be
  measured against it; VictoriaMetrics accepts the v2 request shape.

Needs ``influxd`` and ``victoria-metrics`` (``scripts/install.sh --test``) and the
``influxdb-client`` package, which logfwd itself does not depend on.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx
import trio

from tests.backends.influx import InfluxServer, VictoriaServer


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def body(batch: int, k: int) -> bytes:
    t0 = 1_700_000_000_000_000_000 + k * batch * 1000
    return b"".join(
        b"access,host=10.0.%d.%d,method=GET code=%di,size=%di,path=\"/api/v1/items/%d\" %d\n"
        % (i % 250, i % 7, 200 + i % 3, 512 + i, i, t0 + i * 1000)
        for i in range(batch)
    )


def measure(name: str, fn: Callable[[], None], points: int) -> None:
    c0 = cpu()
    fn()
    used = cpu() - c0
    print(f"{name:58s} {used:7.2f} CPU s per {points:,} points ({used * 1e6 / points:.2f} µs/point)")


def via_httpx(url: str, path: str, bodies: list[bytes], headers: dict[str, str]) -> None:
    async def main() -> None:
        async with httpx.AsyncClient(base_url=url, headers=headers) as client:
            for b in bodies:
                r = await client.post(path, content=b)
                assert 200 <= r.status_code < 300, r.text

    trio.run(main)


def via_client(url: str, bodies: list[bytes]) -> None:
    from influxdb_client import InfluxDBClient  # noqa: PLC0415 - optional: only this benchmark uses it
    from influxdb_client.client.write_api import SYNCHRONOUS  # noqa: PLC0415 - same

    client = InfluxDBClient(url=url, token="t", org="o")
    api = client.write_api(write_options=SYNCHRONOUS)
    limiter = trio.CapacityLimiter(1)

    async def main() -> None:
        for b in bodies:
            await trio.to_thread.run_sync(lambda b=b: api.write(bucket="b", org="o", record=b), limiter=limiter)

    try:
        trio.run(main)
    finally:
        client.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=5_000)
    args = ap.parse_args()
    n = args.points // args.batch
    bodies = [body(args.batch, k) for k in range(n)]
    points = n * args.batch
    with tempfile.TemporaryDirectory() as d:
        influx = InfluxServer(Path(d) / "influx").start()
        vm = VictoriaServer(Path(d) / "vm").start()
        try:
            influx.query("CREATE DATABASE bench")
            measure("httpx → InfluxDB 1.6.7 /write", lambda: via_httpx(
                influx.url, "/write?db=bench&precision=ns", bodies, {}), points)
            v2 = "/api/v2/write?org=o&bucket=b&precision=ns"
            measure("httpx → VictoriaMetrics /api/v2/write", lambda: via_httpx(
                vm.url, v2, bodies, {"Authorization": "Token t"}), points)
            try:
                measure("influxdb-client (worker thread) → VictoriaMetrics /api/v2/write",
                        lambda: via_client(vm.url, bodies), points)
            except ImportError:
                print("influxdb-client is not installed (pip install influxdb-client) to compare with it")
        finally:
            vm.stop()
            influx.stop()


if __name__ == "__main__":
    main()
