"""The connection to Elasticsearch: the official client's transport, run under trio.

``elasticsearch.AsyncElasticsearch`` with an httpx node speaks to the server (httpx runs
under trio through anyio). The transport's own retries and sniffing stay off: the engine
retries with backoff, and a log forwarder talks to the hosts it is given. ``tls.vhost``
goes to httpx as the SNI name and ``Host`` header of every request.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from elastic_transport import AsyncTransport, ConnectionTimeout, SerializationError, TransportError
from elasticsearch import AsyncElasticsearch

from logfwd.net.http import describe_exception

from .reply import BULK_ANSWER, AllStored, serializers

RequestHook = Callable[[httpx.Request], Awaitable[None]]
"""Called with each request just before it is sent (headers final): request signing."""


class _TrioClock:
    """Stands in for the asyncio loop the transport asks for: it only reads ``time()``.

    ``AsyncTransport`` grabs ``asyncio.get_running_loop()`` to time requests and
    to start sniffing tasks; under trio there is no asyncio loop. Sniffing stays
    off, so only ``time`` is used.
    """

    @staticmethod
    def time() -> float:
        return time.monotonic()

    @staticmethod
    def create_task(coro: Any) -> Any:
        coro.close()
        raise RuntimeError("node sniffing is not supported by the es output")


class TrioAsyncTransport(AsyncTransport):  # type: ignore[misc]
    """The official async transport, made loop-agnostic (runs under trio via httpx/anyio)."""

    async def _async_call(self) -> None:
        if self._loop is None:
            self._loop = _TrioClock()


def _quiet_libraries() -> None:
    # The libraries log every request (httpx at INFO) and every node failure with a
    # traceback (elastic_transport at WARNING); the output logs each failure once,
    # with the reason, so quiet them unless the user configured them explicitly.
    for name, level in (("httpx", logging.WARNING), ("elastic_transport", logging.ERROR)):
        lg = logging.getLogger(name)
        if lg.level == logging.NOTSET:
            lg.setLevel(level)


class EsClient:
    """One client per output instance; ``request`` makes exactly one attempt."""

    def __init__(self, host: str, port: int, *, ssl_context: ssl.SSLContext | None, vhost: str | None,
                 auth_header: str | None, connect_timeout: float | None, io_timeout: float | None,
                 connections: int, compressed_answers: bool = False,
                 request_hooks: list[RequestHook] | None = None) -> None:
        _quiet_libraries()
        kwargs: dict[str, Any] = {"ssl_context": ssl_context} if ssl_context is not None else {}
        self.client = AsyncElasticsearch(
            hosts=[{"scheme": "https" if ssl_context is not None else "http", "host": host, "port": port}],
            node_class="httpxasync",
            transport_class=TrioAsyncTransport,
            serializers=serializers(),
            max_retries=0,  # the engine retries, with backoff
            retry_on_timeout=False,
            request_timeout=io_timeout,
            http_compress=False,  # the output gzips itself, off the event loop for big bodies
            # The transport's pool holds 10 connections unless told: more Workers than that
            # would queue for a connection inside httpx, in flight for the engine but not sent.
            connections_per_node=connections,
            **kwargs,
        )
        self.transport = self.client.transport
        timeout = httpx.Timeout(io_timeout, connect=connect_timeout)
        hooks = [_sni_hook(vhost)] if vhost and ssl_context is not None else []
        hooks += request_hooks or []  # after the SNI hook: a signer must see the final Host header
        for node in self.transport.node_pool.all():
            node.client.timeout = timeout
            node.client.event_hooks = {"request": hooks, "response": []}
        # httpx asks for gzip answers by default: the server then compresses every bulk answer
        # (a status per record) and we inflate it, CPU on both ends for a reply that crosses
        # the network once; Fluent Bit asks for none either. With Compress gzip the user chose
        # bandwidth over CPU, so answers may come compressed too.
        self.headers = {"accept": "application/json", "user-agent": "logfwd",
                        "accept-encoding": "gzip" if compressed_answers else "identity"}
        if auth_header:
            self.headers["authorization"] = auth_header

    async def close(self) -> None:
        await self.client.close()

    async def request(self, method: str, target: str, body: bytes | None = None,
                      headers: dict[str, str] | None = None, bulk: bool = False) -> tuple[int, Any, str | None]:
        """(status, parsed body, None) or (0, None, why) when no HTTP answer came back.

        With ``bulk``, a 2xx answer reporting no errors comes back as ``AllStored``.
        """
        token = BULK_ANSWER.set(bulk)
        try:
            meta, resp = await self.transport.perform_request(
                method, target, body=body, headers={**self.headers, **(headers or {})},
                max_retries=0, retry_on_status=(), retry_on_timeout=False)
        except ConnectionTimeout as e:
            return 0, None, f"timeout: {describe_exception(e)}"
        except SerializationError as e:
            return 0, None, f"unreadable answer: {describe_exception(e)}"
        except TransportError as e:
            return 0, None, describe_exception(e)
        finally:
            BULK_ANSWER.reset(token)
        if isinstance(resp, AllStored) and not 200 <= meta.status < 300:
            resp = resp.full()  # a failed request is judged (and logged) from the whole answer
        return meta.status, resp, None


def _sni_hook(vhost: str) -> Any:
    """An httpx request hook: TLS server name (SNI, certificate check) and Host header ``vhost``."""

    async def hook(request: httpx.Request) -> None:
        request.extensions["sni_hostname"] = vhost
        request.headers["host"] = vhost

    return hook
