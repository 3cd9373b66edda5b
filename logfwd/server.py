"""The HTTP monitoring server: Fluent Bit's monitoring API on trio and h11.

Endpoints (Fluent Bit's paths, so existing probes and dashboards keep working):

- ``/`` build information: ``{"logfwd": {"version", "edition", "flags"}}``
- ``/api/v1/uptime``: ``{"uptime_sec": N, "uptime_hr": "..."}``
- ``/api/v1/metrics``: counters as JSON keyed by section and instance
- ``/api/v1/metrics/prometheus`` (and ``/api/v2/metrics/prometheus``): the
  same counters in the Prometheus text format, produced by ``prometheus_client``
- ``/api/v1/health``: ``200 ok`` or ``500 error`` by the ``health_check`` rule;
  ``/api/v2/health`` answers the same as JSON ``{"status": ...}``

Only GET and HEAD are served (405 otherwise); connections are kept alive; each
connection is its own task, so a slow scraper never delays a liveness probe.
The server reads counters and never writes them; it runs on the daemon's event
loop and does no blocking work.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import h11
import orjson
import trio

from . import __version__
from .metrics import MetricsRegistry, PrometheusCollector

__all__ = ["HealthPolicy", "serve_http", "uptime_text", "HEALTH_DEFAULTS"]

log = logging.getLogger("logfwd.http_server")

# Fluent Bit's service keys for the health check, with its defaults.
HEALTH_DEFAULTS = {"health_check": False, "hc_errors_count": 5, "hc_retry_failure_count": 5, "hc_period": 60}

_IDLE_TIMEOUT = 30.0  # seconds a kept-alive connection may sit idle
_READ_SIZE = 16384


class HealthPolicy:
    """Fluent Bit's ``health_check``: unhealthy when outputs fail too often, lately.

    Unhealthy when, over the last ``period`` seconds, the output ``errors``
    summed over every output exceed ``errors_count``, or the summed
    ``retries_failed`` exceed ``retry_failure_count`` (strictly greater, as
    Fluent Bit compares). Health recovers by itself once the failures age out
    of the window.

    The counters only ever grow, so the count within the window is the
    current total minus the total at the window's start. ``sample()`` records
    the totals with their time; ``run()`` samples a few times per period, and
    every ``healthy()`` call samples too.
    """

    def __init__(
        self,
        registry: MetricsRegistry,
        enabled: bool = False,
        errors_count: int = 5,
        retry_failure_count: int = 5,
        period: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.enabled = enabled
        self.errors_count = errors_count
        self.retry_failure_count = retry_failure_count
        self.period = float(period)
        self.clock = clock
        self._samples: deque[tuple[float, float, float]] = deque()
        self.sample()

    @classmethod
    def from_service(cls, registry: MetricsRegistry, service: dict[str, Any]) -> HealthPolicy:
        """From converted ``[SERVICE]`` options (missing keys take Fluent Bit's defaults).

        Either argument order is accepted: the two types cannot be confused.
        """
        from .options import parse_bool, parse_duration

        if isinstance(service, MetricsRegistry):
            registry, service = service, registry  # type: ignore[assignment]

        def get(key: str) -> Any:
            v = service.get(key)
            return HEALTH_DEFAULTS[key] if v is None else v

        return cls(
            registry,
            enabled=parse_bool(get("health_check")),
            errors_count=int(get("hc_errors_count")),
            retry_failure_count=int(get("hc_retry_failure_count")),
            period=parse_duration(get("hc_period")),
        )

    @property
    def sample_interval(self) -> float:
        return max(0.05, min(1.0, self.period / 10))

    def _totals(self) -> tuple[float, float]:
        return self.registry.totals("output", "errors"), self.registry.totals("output", "retries_failed")

    def sample(self) -> None:
        now = self.clock()
        errors, failed = self._totals()
        self._samples.append((now, errors, failed))
        # Keep one sample at or before the window's start: it is the baseline.
        horizon = now - self.period
        while len(self._samples) >= 2 and self._samples[1][0] <= horizon:
            self._samples.popleft()

    def window_counts(self) -> tuple[float, float]:
        """(errors, retries_failed) summed over outputs within the last ``period`` seconds."""
        self.sample()
        _, base_errors, base_failed = self._samples[0]
        _, errors, failed = self._samples[-1]
        return errors - base_errors, failed - base_failed

    def healthy(self) -> bool:
        if not self.enabled:
            return True
        errors, failed = self.window_counts()
        return errors <= self.errors_count and failed <= self.retry_failure_count

    async def run(self) -> None:
        """Sample forever (cancel to stop); precise windows even when nobody asks."""
        while True:
            self.sample()
            await trio.sleep(self.sample_interval)


def uptime_text(seconds: float) -> str:
    """``logfwd has been running:  1 day, 2 hours, 3 minutes and 4 seconds`` (Fluent Bit's wording)."""
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)

    def unit(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    return (f"logfwd has been running:  {unit(days, 'day')}, {unit(hours, 'hour')}, "
            f"{unit(minutes, 'minute')} and {unit(s, 'second')}")


class _App:
    """Routing: a request target to (status, content type, body)."""

    def __init__(self, registry: MetricsRegistry, health: HealthPolicy, build_info: dict[str, Any]) -> None:
        from prometheus_client import CollectorRegistry, exposition

        self.registry = registry
        self.health = health
        info = {"version": __version__, "edition": "Community", "flags": []}
        info.update(build_info or {})
        self.build_info = orjson.dumps({"logfwd": info})
        self.prom_registry = CollectorRegistry(auto_describe=False)
        self.prom_registry.register(PrometheusCollector(registry))
        # Our metric names are classic ones, so the text is the 0.0.4 format that
        # Fluent Bit declares and every Prometheus version reads.
        self.prom_type = getattr(exposition, "CONTENT_TYPE_PLAIN_0_0_4", exposition.CONTENT_TYPE_LATEST)
        self.routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
            "/": self.root,
            "/api/v1/uptime": self.uptime,
            "/api/v1/metrics": self.metrics_json,
            "/api/v1/metrics/prometheus": self.metrics_prometheus,
            "/api/v2/metrics/prometheus": self.metrics_prometheus,
            "/api/v1/health": self.health_v1,
            "/api/v2/health": self.health_v2,
        }

    def root(self) -> tuple[int, str, bytes]:
        return 200, "application/json", self.build_info

    def uptime(self) -> tuple[int, str, bytes]:
        up = self.registry.uptime()
        return 200, "application/json", orjson.dumps({"uptime_sec": int(up), "uptime_hr": uptime_text(up)})

    def metrics_json(self) -> tuple[int, str, bytes]:
        return 200, "application/json", orjson.dumps(self.registry.to_json())

    def metrics_prometheus(self) -> tuple[int, str, bytes]:
        from prometheus_client import generate_latest

        return 200, self.prom_type, generate_latest(self.prom_registry)

    def health_v1(self) -> tuple[int, str, bytes]:
        if self.health.healthy():
            return 200, "text/plain; charset=utf-8", b"ok"
        return 500, "text/plain; charset=utf-8", b"error"

    def health_v2(self) -> tuple[int, str, bytes]:
        ok = self.health.healthy()
        return (200 if ok else 500), "application/json", orjson.dumps({"status": "ok" if ok else "error"})

    def handle(self, method: bytes, target: bytes) -> tuple[int, str, bytes, list[tuple[bytes, bytes]]]:
        path = target.split(b"?", 1)[0].decode("latin-1")
        if len(path) > 1:
            path = path.rstrip("/")
        route = self.routes.get(path)
        if route is None:
            return 404, "text/plain; charset=utf-8", b"not found\n", []
        if method not in (b"GET", b"HEAD"):
            return 405, "text/plain; charset=utf-8", b"method not allowed\n", [(b"allow", b"GET, HEAD")]
        try:
            status, ctype, body = route()
        except Exception:
            log.exception("error serving %s", path)
            return 500, "text/plain; charset=utf-8", b"internal error\n", []
        return status, ctype, body, []


def add_storage_route(app: _App, snapshot: Callable[[], dict[str, Any]]) -> None:
    """``/api/v1/storage`` (service ``storage.metrics on``): the storage layer's chunks, as Fluent Bit's."""
    app.routes["/api/v1/storage"] = lambda: (200, "application/json", orjson.dumps(snapshot()))


async def _send(stream: trio.SocketStream, conn: h11.Connection, event: Any) -> None:
    data = conn.send(event)
    if data:
        await stream.send_all(data)


async def _respond(stream: trio.SocketStream, conn: h11.Connection, status: int, ctype: str, body: bytes,
                   head: bool, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [
        (b"content-type", ctype.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"server", f"logfwd/{__version__}".encode()),
        *(extra or []),
    ]
    await _send(stream, conn, h11.Response(status_code=status, headers=headers))
    if not head and body:
        await _send(stream, conn, h11.Data(data=body))
    await _send(stream, conn, h11.EndOfMessage())


async def _next_event(stream: trio.SocketStream, conn: h11.Connection) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        with trio.move_on_after(_IDLE_TIMEOUT) as scope:
            data = await stream.receive_some(_READ_SIZE)
        if scope.cancelled_caught:
            return None
        conn.receive_data(data)


async def _serve_connection(app: _App, stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            try:
                event = await _next_event(stream, conn)
            except h11.RemoteProtocolError as e:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await _respond(stream, conn, e.error_status_hint, "text/plain; charset=utf-8",
                                   b"bad request\n", head=False)
                return
            if event is None or isinstance(event, h11.ConnectionClosed):
                return
            if not isinstance(event, h11.Request):
                continue
            # The monitoring API takes no request bodies; drain any politely.
            while True:
                ev = await _next_event(stream, conn)
                if ev is None or isinstance(ev, (h11.EndOfMessage, h11.ConnectionClosed)):
                    break
            if ev is None or isinstance(ev, h11.ConnectionClosed):
                return
            status, ctype, body, extra = app.handle(event.method, event.target)
            await _respond(stream, conn, status, ctype, body, head=event.method == b"HEAD", extra=extra)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
        return
    finally:
        with trio.move_on_after(1) as cleanup:
            cleanup.shield = True
            await stream.aclose()


async def serve_http(
    registry: MetricsRegistry,
    health: HealthPolicy,
    host: str,
    port: int,
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
    build_info: dict[str, Any] | None = None,
    storage: Callable[[], dict[str, Any]] | None = None,
) -> None:
    """Serve the monitoring API until cancelled.

    ``task_status.started(port)`` reports the bound port (useful with port 0)
    once the socket listens, so ``nursery.start(serve_http, ...)`` returns
    only when probes can connect.
    """
    app = _App(registry, health, build_info or {})
    if storage is not None:
        add_storage_route(app, storage)
    listeners = await trio.open_tcp_listeners(port, host=host or None)
    bound = listeners[0].socket.getsockname()[1]
    log.info("listen iface=%s tcp_port=%d", host, bound)

    async def handler(stream: trio.SocketStream) -> None:
        try:
            await _serve_connection(app, stream)
        except Exception:  # one bad connection must never take the server (and daemon) down
            log.exception("error on a monitoring connection")

    async with trio.open_nursery() as nursery:
        if health.enabled:
            nursery.start_soon(health.run)
        task_status.started(bound)
        await trio.serve_listeners(handler, listeners)
