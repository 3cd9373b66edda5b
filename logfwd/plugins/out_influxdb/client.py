"""The HTTP side of the influxdb output: one write request, and the server's error message.

Writes go straight to ``/write`` (API v1) or ``/api/v2/write`` through httpx. Issue #12
asked whether the official ``influxdb-client`` should carry them instead (its blocking
calls in a worker thread); measured with ``bench/influx_client.py`` (1M points in
5,000-point requests to VictoriaMetrics' ``/api/v2/write``) it cost 0.28-0.33 CPU s where
httpx cost 0.24-0.28 (+11% to +38%), and it cannot write to InfluxDB before 1.8 at all, so
one direct path serves every version.
"""

from __future__ import annotations

import ssl
import time

import httpx
import orjson

from logfwd.metrics import Counters
from logfwd.net.http import describe_exception

__all__ = ["InfluxClient", "error_text"]


class InfluxClient:
    """An httpx client bound to the output's base URL, headers, auth, TLS and timeouts."""

    def __init__(self, base_url: str, path: str, *, headers: dict[str, str], auth: tuple[str, str] | None,
                 verify: ssl.SSLContext | bool, timeout: httpx.Timeout, sni: str | None, metrics: Counters,
                 connections: int) -> None:
        self.path = path
        self.metrics = metrics
        # One connection per worker: httpx's default pool (100) would make Workers above it wait
        # inside httpx while the engine counts them in flight.
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.client = httpx.AsyncClient(base_url=base_url, headers=headers, auth=auth, timeout=timeout,
                                        verify=verify, limits=limits)
        self.extensions = {"sni_hostname": sni} if sni else None

    async def close(self) -> None:
        await self.client.aclose()

    async def post(self, body: bytes) -> tuple[int | None, str]:
        """One write request: (status or None on a transport error, server or error message)."""
        t0 = time.monotonic()
        try:
            resp = await self.client.post(self.path, content=body, extensions=self.extensions)
        except httpx.HTTPError as e:
            return None, describe_exception(e)
        finally:
            self.metrics.inc("requests")
            self.metrics.inc("request_seconds", time.monotonic() - t0)
        if 200 <= resp.status_code < 300:
            return resp.status_code, ""
        return resp.status_code, error_text(resp)


def error_text(resp: httpx.Response) -> str:
    """The server's error message: ``{"error": ...}`` (v1), ``{"message": ...}`` (v2), or the body."""
    body = resp.content[:4000]
    try:
        doc = orjson.loads(body)
        if isinstance(doc, dict):
            msg = doc.get("error") or doc.get("message")
            if msg:
                return str(msg).strip()
    except orjson.JSONDecodeError:
        pass
    return body.decode("utf-8", "replace").strip() or resp.reason_phrase
