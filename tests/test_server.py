"""The monitoring server answers Fluent Bit's API paths over real HTTP."""

from __future__ import annotations

import concurrent.futures
import json
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from logfwd.health import HealthPolicy
from logfwd.metrics import MetricsRegistry
from logfwd.server import StaticMonitor, serve_http, uptime_text


def with_server(registry: MetricsRegistry, health: HealthPolicy, client_fn: Callable[[str], Any],
                build_info: dict[str, Any] | None = None) -> Any:
    """Start the server in trio, run ``client_fn(base_url)`` in a thread with a real client, stop."""
    result: list[Any] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            if health.enabled:
                nursery.start_soon(health.run)
            port = await nursery.start(lambda task_status: serve_http(
                StaticMonitor(registry, health), "127.0.0.1", 0, task_status=task_status, build_info=build_info or {}))
            with trio.fail_after(60):
                result.append(await trio.to_thread.run_sync(client_fn, f"http://127.0.0.1:{port}"))
            nursery.cancel_scope.cancel()

    trio.run(main)
    return result[0]


def sample_registry() -> MetricsRegistry:
    reg = MetricsRegistry()
    tail = reg.register("input", "tail.0")
    tail.inc("records", 1234)
    tail.inc("bytes", 98765)
    reg.register("input", "syslog_in").inc("records", 5)
    es = reg.register("output", "es.0")
    es.inc("proc_records", 1200)
    es.inc("proc_bytes", 90000)
    es.inc("retries", 3)
    es.set("buffer_bytes", 4096)
    reg.register("filter", "grep.0").inc("drop_records", 34)
    return reg


def test_endpoints() -> None:
    reg = sample_registry()
    reg.started -= 93784  # 1 day, 2 hours, 3 minutes, 4 seconds ago

    def client(base: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        with httpx.Client(base_url=base) as c:
            for path in ("/", "/api/v1/uptime", "/api/v1/metrics", "/api/v1/metrics/prometheus",
                         "/api/v2/metrics/prometheus", "/api/v1/health", "/api/v2/health", "/api/v1/metrics/",
                         "/api/v1/metrics?x=1", "/nope"):
                r = c.get(path)
                out[path] = (r.status_code, r.headers.get("content-type"), r.content, r.http_version)
        return out

    out = with_server(reg, HealthPolicy(reg), client, build_info={"flags": ["FLB_HAVE_METRICS"]})
    status, ctype, body, _ = out["/"]
    assert status == 200 and ctype == "application/json"
    info = json.loads(body)["logfwd"]
    assert info["flags"] == ["FLB_HAVE_METRICS"] and info["version"] and info["edition"] == "Community"

    uptime = json.loads(out["/api/v1/uptime"][2])
    assert 93784 <= uptime["uptime_sec"] < 93800
    assert uptime["uptime_hr"].startswith("logfwd has been running:  1 day, 2 hours, 3 minutes and ")

    metrics = json.loads(out["/api/v1/metrics"][2])
    assert metrics["input"]["tail.0"]["records"] == 1234
    assert metrics["input"]["tail.0"]["bytes"] == 98765
    assert metrics["output"]["es.0"]["proc_records"] == 1200
    assert metrics["output"]["es.0"]["errors"] == 0
    assert metrics["filter"]["grep.0"]["drop_records"] == 34
    assert json.loads(out["/api/v1/metrics/"][2]) == metrics
    assert json.loads(out["/api/v1/metrics?x=1"][2]) == metrics

    status, ctype, body, _ = out["/api/v1/metrics/prometheus"]
    assert status == 200 and ctype.startswith("text/plain") and "version=0.0.4" in ctype
    samples = {
        (s.name, s.labels.get("name")): s.value
        for fam in text_string_to_metric_families(body.decode())
        for s in fam.samples
    }
    # Every counter of the registry is in the exposition with the same value.
    for section, insts in reg.to_json().items():
        for inst, counters in insts.items():
            for cname, value in counters.items():
                key = f"logfwd_{section}_{cname}" + ("" if cname == "buffer_bytes" else "_total")
                assert samples[(key, inst)] == value, key
    assert samples[("logfwd_input_records_total", "tail.0")] == 1234
    assert samples[("logfwd_output_buffer_bytes", "es.0")] == 4096
    assert samples[("logfwd_uptime", None)] >= 93784
    assert out["/api/v2/metrics/prometheus"][0] == 200

    assert out["/api/v1/health"][:3] == (200, "text/plain; charset=utf-8", b"ok")
    assert out["/api/v2/health"][0] == 200 and json.loads(out["/api/v2/health"][2]) == {"status": "ok"}
    assert out["/nope"][0] == 404


def test_methods_keepalive_and_head() -> None:
    reg = sample_registry()

    def client(base: str) -> dict[str, Any]:
        with httpx.Client(base_url=base) as c:
            get = c.get("/api/v1/metrics")
            head = c.head("/api/v1/metrics")
            post = c.post("/api/v1/metrics", content=b"{}")
            put404 = c.put("/nothing", content=b"x")
            again = c.get("/api/v1/health")
        return {"get": get, "head": head, "post": post, "put404": put404, "again": again}

    out = with_server(reg, HealthPolicy(reg), client)
    assert out["head"].status_code == 200 and out["head"].content == b""
    assert out["head"].headers["content-length"] == out["get"].headers["content-length"]
    assert out["post"].status_code == 405 and out["post"].headers["allow"] == "GET, HEAD"
    assert out["put404"].status_code == 404
    assert out["again"].status_code == 200


def test_keepalive_uses_one_connection() -> None:
    reg = sample_registry()

    def client(base: str) -> list[bytes]:
        host, port = base.removeprefix("http://").split(":")
        bodies = []
        with socket.create_connection((host, int(port)), timeout=10) as s:
            for _ in range(3):
                s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
                buf = b""
                while not buf.endswith(b"ok"):
                    chunk = s.recv(4096)
                    assert chunk, "server closed a kept-alive connection"
                    buf += chunk
                bodies.append(buf)
            s.sendall(b"GARBAGE\r\n\r\n")
            bad = s.recv(4096)
        return [*bodies, bad]

    out = with_server(reg, HealthPolicy(reg), client)
    assert all(b.startswith(b"HTTP/1.1 200") for b in out[:3])
    assert out[3].startswith(b"HTTP/1.1 400")


def test_many_concurrent_clients() -> None:
    reg = sample_registry()

    def client(base: str) -> list[int]:
        def one(i: int) -> int:
            with httpx.Client(base_url=base) as c:
                return sum(c.get("/api/v1/metrics/prometheus").status_code == 200 for _ in range(5))

        with concurrent.futures.ThreadPoolExecutor(16) as ex:
            return list(ex.map(one, range(32)))

    # A client that opens a connection and says nothing must not block the others.
    def with_idle(base: str) -> list[int]:
        host, port = base.removeprefix("http://").split(":")
        idle = socket.create_connection((host, int(port)))
        try:
            return client(base)
        finally:
            idle.close()

    assert with_server(reg, HealthPolicy(reg), with_idle) == [5] * 32


def test_health_flips_on_errors_and_recovers() -> None:
    """Through the HTTP endpoint, with the policy's clock moved by hand (no waiting on wall time)."""
    reg = sample_registry()
    es = reg.get("output", "es.0")
    kafka = reg.register("output", "kafka.0")
    now = [1000.0]
    health = HealthPolicy(reg, enabled=True, errors_count=3, retry_failure_count=2, period=1,
                          clock=lambda: now[0])
    assert HealthPolicy.from_service(reg, {"health_check": "on", "hc_errors_count": "3",
                                           "hc_retry_failure_count": "2", "hc_period": "1"}).period == 1.0

    def client(base: str) -> list[tuple[str, int]]:
        seen = []
        with httpx.Client(base_url=base) as c:
            def status() -> int:
                return c.get("/api/v1/health").status_code

            seen.append(("start", status()))
            es.inc("errors", 2)
            kafka.inc("errors", 1)
            seen.append(("3 errors: not over the threshold", status()))
            kafka.inc("errors", 1)  # 4 > 3, summed over outputs
            seen.append(("4 errors", status()))
            body = c.get("/api/v1/health").text
            seen.append((body, 0))
            now[0] += 1.4  # the errors age out of the 1 s window
            seen.append(("after the period", status()))
            es.inc("retries_failed", 3)  # 3 > 2
            seen.append(("retries failed", status()))
            now[0] += 1.4
            seen.append(("recovered", status()))
        return seen

    seen = with_server(reg, health, client)
    assert seen == [
        ("start", 200),
        ("3 errors: not over the threshold", 200),
        ("4 errors", 500),
        ("error", 0),
        ("after the period", 200),
        ("retries failed", 500),
        ("recovered", 200),
    ]


def test_health_check_off_is_always_ok() -> None:
    reg = sample_registry()
    reg.get("output", "es.0").inc("errors", 1000)
    health = HealthPolicy.from_service(reg, {})
    assert not health.enabled and health.period == 60

    def client(base: str) -> tuple[int, str]:
        r = httpx.get(base + "/api/v1/health")
        return r.status_code, r.text

    assert with_server(reg, health, client) == (200, "ok")


def test_health_window_with_a_clock() -> None:
    """Errors counted within the period only, including errors from before the first probe."""
    reg = MetricsRegistry()
    out = reg.register("output", "file.0")
    now = [1000.0]
    h = HealthPolicy(reg, enabled=True, errors_count=5, retry_failure_count=5, period=60, clock=lambda: now[0])
    for _ in range(12):  # an error every 10 s: 6 in any 60 s window
        now[0] += 10
        out.inc("errors")
        h.sample()
    assert h.window_counts() == (6, 0)
    assert not h.healthy()
    now[0] += 30  # no errors for 30 s: 3 left in the window
    assert h.window_counts() == (3, 0) and h.healthy()
    assert len(h._samples) <= 10  # old samples are dropped


@pytest.mark.parametrize("sec,text", [(0, "0 days, 0 hours, 0 minutes and 0 seconds"),
                                      (90061, "1 day, 1 hour, 1 minute and 1 second")])
def test_uptime_text(sec: int, text: str) -> None:
    assert uptime_text(sec) == "logfwd has been running:  " + text


def test_health_from_service_either_argument_order() -> None:
    reg = MetricsRegistry()
    a = HealthPolicy.from_service(reg, {"health_check": True, "hc_period": 5})
    b = HealthPolicy.from_service({"health_check": True, "hc_period": 5}, reg)  # type: ignore[arg-type]
    assert a.registry is b.registry is reg and a.period == b.period == 5.0 and a.enabled and b.enabled
