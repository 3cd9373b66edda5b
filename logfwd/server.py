"""The HTTP monitoring server: Fluent Bit's monitoring API on trio and h11.

Endpoints (Fluent Bit's paths, so existing probes and dashboards keep working):

- ``/`` build information: ``{"logfwd": {"version", "edition", "flags"}}``
- ``/api/v1/uptime``: ``{"uptime_sec": N, "uptime_hr": "..."}``
- ``/api/v1/metrics``: counters as JSON keyed by section and instance
- ``/api/v1/metrics/prometheus`` (and ``/api/v2/metrics/prometheus``): the
  same counters in the Prometheus text format, produced by ``prometheus_client``
- ``/api/v1/health``: ``200 ok``, or ``500 error`` while a plugin is failing (being
  restarted) or the ``health_check`` rule says so; ``/api/v2/health`` answers the same
  as JSON ``{"status": ..., "failing": {instance: why}, "health_check": {...}}``
- ``/api/v2/reload``: ``GET`` gives ``{"hot_reload_count": N}``; ``POST``/``PUT`` reloads
  the configuration (with ``hot_reload on``), as SIGHUP does

Other methods answer 405; connections are kept alive; each
connection is its own task, so a slow scraper never delays a liveness probe.
The server reads counters and never writes them; it runs on the daemon's event
loop and does no blocking work.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import h11
import orjson
import trio

from . import __version__
from .health import HealthPolicy
from .metrics import MetricsRegistry, PrometheusCollector

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["Monitor", "StaticMonitor", "serve_http", "uptime_text"]

log = logging.getLogger("logfwd.http_server")

_IDLE_TIMEOUT = 30.0  # seconds a kept-alive connection may sit idle
_READ_SIZE = 16384


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


class Monitor(Protocol):
    """What the server reads: the running pipeline's counters and health, and the reload hook.

    The daemon implements it, so that the server (bound once) keeps answering for the
    pipeline that replaced the one it started with after a reload.
    """

    registry: MetricsRegistry
    health: HealthPolicy
    reload_count: int

    def failing(self) -> dict[str, str]:
        """Plugin instances failing right now (being restarted), with why."""
        ...

    def storage(self) -> dict[str, Any] | None:
        """``/api/v1/storage`` (Fluent Bit's shape) when ``storage.metrics`` is on, else None (404)."""
        ...

    async def reload(self) -> tuple[int, dict[str, Any]]:
        """Reload the configuration; (HTTP status, Fluent Bit's JSON answer)."""
        ...


class StaticMonitor:
    """A Monitor over one registry and health policy, with no reload (tests, tools)."""

    def __init__(self, registry: MetricsRegistry, health: HealthPolicy) -> None:
        self.registry = registry
        self.health = health
        self.reload_count = 0

    def failing(self) -> dict[str, str]:
        return {}

    def storage(self) -> dict[str, Any] | None:
        return None

    async def reload(self) -> tuple[int, dict[str, Any]]:
        return 400, {"reload": "not enabled", "status": -1}


Handler = Callable[[], Awaitable[tuple[int, str, bytes]]]
_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"


class _App:
    """Routing: (method, target) to (status, content type, body)."""

    def __init__(self, monitor: Monitor, build_info: dict[str, Any]) -> None:
        self.monitor = monitor
        info = {"version": __version__, "edition": "Community", "flags": []}  # Fluent Bit's word
        info.update(build_info or {})
        self.build_info = orjson.dumps({"logfwd": info})
        self._prom: tuple[MetricsRegistry, CollectorRegistry] | None = None
        get = (b"GET", b"HEAD")
        self.routes: dict[str, tuple[tuple[bytes, ...], Handler]] = {
            "/": (get, self.root),
            "/api/v1/uptime": (get, self.uptime),
            "/api/v1/metrics": (get, self.metrics_json),
            "/api/v1/metrics/prometheus": (get, self.metrics_prometheus),
            "/api/v2/metrics/prometheus": (get, self.metrics_prometheus),
            "/api/v1/health": (get, self.health_v1),
            "/api/v2/health": (get, self.health_v2),
            "/api/v2/reload": ((*get, b"POST", b"PUT"), self.reload),
            "/api/v1/storage": (get, self.storage),
        }
        self.method = b"GET"

    def add_route(self, path: str, handler: Handler, methods: tuple[bytes, ...] = (b"GET", b"HEAD")) -> None:
        self.routes[path] = (methods, handler)

    async def root(self) -> tuple[int, str, bytes]:
        return 200, _JSON, self.build_info

    async def uptime(self) -> tuple[int, str, bytes]:
        up = self.monitor.registry.uptime()
        return 200, _JSON, orjson.dumps({"uptime_sec": int(up), "uptime_hr": uptime_text(up)})

    async def metrics_json(self) -> tuple[int, str, bytes]:
        return 200, _JSON, orjson.dumps(self.monitor.registry.to_json())

    async def metrics_prometheus(self) -> tuple[int, str, bytes]:
        # heavy (a sixth of the start-up imports), and most daemons are never scraped
        import prometheus_client as pc  # noqa: PLC0415 - heavy, needed only once Prometheus scrapes

        reg = self.monitor.registry
        if self._prom is None or self._prom[0] is not reg:  # a reload brought a new registry
            prom = pc.CollectorRegistry(auto_describe=False)
            prom.register(PrometheusCollector(reg))
            self._prom = (reg, prom)
        # Our metric names are classic ones, so the text is the 0.0.4 format that
        # Fluent Bit declares and every Prometheus version reads.
        content_type = getattr(pc.exposition, "CONTENT_TYPE_PLAIN_0_0_4", pc.exposition.CONTENT_TYPE_LATEST)
        return 200, content_type, pc.generate_latest(self._prom[1])

    def _healthy(self) -> tuple[bool, dict[str, str]]:
        failing = self.monitor.failing()
        return (not failing and self.monitor.health.healthy()), failing

    async def health_v1(self) -> tuple[int, str, bytes]:
        ok, _ = self._healthy()
        return (200, _TEXT, b"ok") if ok else (500, _TEXT, b"error")

    async def health_v2(self) -> tuple[int, str, bytes]:
        ok, failing = self._healthy()
        h = self.monitor.health
        body: dict[str, Any] = {"status": "ok" if ok else "error"}
        if failing:
            body["failing"] = failing
        if h.enabled:
            errors, retries_failed = h.window_counts()
            body["health_check"] = {"errors": errors, "retries_failed": retries_failed, "period": h.period,
                                    "hc_errors_count": h.errors_count,
                                    "hc_retry_failure_count": h.retry_failure_count}
        return (200 if ok else 500), _JSON, orjson.dumps(body)

    async def storage(self) -> tuple[int, str, bytes]:
        snapshot = self.monitor.storage()
        if snapshot is None:
            return 404, _TEXT, b"storage metrics are off (service storage.metrics on)\n"
        return 200, _JSON, orjson.dumps(snapshot)

    async def reload(self) -> tuple[int, str, bytes]:
        if self.method in (b"GET", b"HEAD"):
            return 200, _JSON, orjson.dumps({"hot_reload_count": self.monitor.reload_count})
        status, body = await self.monitor.reload()
        return status, _JSON, orjson.dumps(body)

    async def handle(self, method: bytes, target: bytes) -> tuple[int, str, bytes, list[tuple[bytes, bytes]]]:
        path = target.split(b"?", 1)[0].decode("latin-1")
        if len(path) > 1:
            path = path.rstrip("/")
        route = self.routes.get(path)
        if route is None:
            return 404, _TEXT, b"not found\n", []
        methods, handler = route
        if method not in methods:
            allow = ", ".join(m.decode() for m in methods)
            return 405, _TEXT, b"method not allowed\n", [(b"allow", allow.encode())]
        try:
            self.method = method
            status, ctype, body = await handler()
        except Exception:
            log.exception("error serving %s", path)
            return 500, _TEXT, b"internal error\n", []
        return status, ctype, body, []


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
            status, ctype, body, extra = await app.handle(event.method, event.target)
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
    monitor: Monitor,
    host: str,
    port: int,
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
    build_info: dict[str, Any] | None = None,
    routes: dict[str, Handler] | None = None,
) -> None:
    """Serve the monitoring API until cancelled.

    ``task_status.started(port)`` reports the bound port (useful with port 0)
    once the socket listens, so ``nursery.start(serve_http, ...)`` returns
    only when probes can connect. A port that cannot be bound raises OSError
    before that, for the caller to report in one line.
    """
    app = _App(monitor, build_info or {})
    for path, handler in (routes or {}).items():
        app.add_route(path, handler)
    listeners = await trio.open_tcp_listeners(port, host=host or None)
    bound = listeners[0].socket.getsockname()[1]
    log.info("listen iface=%s tcp_port=%d", host, bound)

    async def handler(stream: trio.SocketStream) -> None:
        try:
            await _serve_connection(app, stream)
        except Exception:  # one bad connection must never take the server (and daemon) down
            log.exception("error on a monitoring connection")

    task_status.started(bound)
    await trio.serve_listeners(handler, listeners)
