"""A small Kubernetes API client: GET a JSON object, or stream a watch, over HTTP/1.1 (h11 on trio).

Why not a general HTTP client: the filter needs exactly two calls (a bounded GET and a
long-lived chunked watch stream read event by event), both with the service account's
bearer token, which the kubelet rotates in place (projected tokens). h11 is already a
core dependency and trio streams give timeouts and cancellation that fit the engine.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import h11
import orjson
import trio

__all__ = ["KubeApi", "ApiError", "Gone", "TokenSource"]

_MAX_BODY = 256 * 1024 * 1024  # a LIST of every pod on a node stays far below this
_READ = 65536


class ApiError(Exception):
    """The API answered with an error status, or could not be reached.

    ``status`` is 0 when there was no HTTP answer (refused, reset, timed out, TLS);
    ``retry_after`` is the server's Retry-After in seconds (429/503), if any.
    """

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class Gone(ApiError):
    """410: the resourceVersion a watch asked for is too old; the caller must list again."""

    def __init__(self, message: str = "resourceVersion too old") -> None:
        super().__init__(410, message)


class TokenSource:
    """The bearer token: read from a file, or printed by a command, and fetched again in time.

    The kubelet rotates a projected service-account token by swapping a symlink, so the
    file's mtime (``stat`` follows the link) changes; ``ttl`` bounds how long a read is
    trusted even without a visible change, and ``invalidate`` forces a read after a 401.
    With ``command`` (Fluent Bit's ``Kube_Token_Command``, e.g. ``aws-iam-authenticator
    token -i CLUSTER --token-only`` outside a pod) its standard output is the token, run
    again after ``ttl`` or a 401; it runs as a subprocess so the event loop never waits on it.
    A failed read or command keeps the last good token and says why once per failure run.
    """

    def __init__(self, path: str | None, ttl: float, command: str | None = None,
                 log: logging.Logger | None = None) -> None:
        self.path = path
        self.ttl = ttl
        self.command = command
        self.log = log or logging.getLogger("logfwd.kubernetes")
        self._token: str | None = None
        self._stamp: tuple[float, int] | None = None
        self._read_at = 0.0
        self._failing = False

    def invalidate(self) -> None:
        self._stamp = None
        self._read_at = -self.ttl  # a command runs again at the next request too

    async def get(self) -> str | None:
        if self.command:
            return await self._from_command()
        return self._from_file()

    def _from_file(self) -> str | None:
        if not self.path:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return self._token  # keep the last good token through a rotation's brief gap
        stamp = (st.st_mtime, st.st_ino)
        now = time.monotonic()
        if stamp != self._stamp or now - self._read_at >= self.ttl or self._token is None:
            try:
                with open(self.path, encoding="utf-8") as f:
                    self._token = f.read().strip() or None
            except OSError:
                return self._token
            self._stamp = stamp
            self._read_at = now
        return self._token

    async def _from_command(self) -> str | None:
        now = time.monotonic()
        if self._token is not None and now - self._read_at < self.ttl:
            return self._token
        self._read_at = now  # a failing command is not run again before ttl (or a 401)
        try:
            with trio.fail_after(_TOKEN_COMMAND_TIMEOUT):
                done = await trio.run_process(["/bin/sh", "-c", self.command or ""], capture_stdout=True,
                                              capture_stderr=True, check=False, stdin=b"")
        except (OSError, trio.TooSlowError) as e:
            self._command_failed(str(e) or f"no answer in {_TOKEN_COMMAND_TIMEOUT:g} s")
            return self._token
        token = done.stdout.decode("utf-8", "replace").strip()
        if done.returncode != 0 or not token:
            why = done.stderr.decode("utf-8", "replace").strip().splitlines()
            self._command_failed(f"exit status {done.returncode}" + (f": {why[-1]}" if why else "")
                                 if done.returncode else "it printed no token")
            return self._token
        if self._failing:
            self.log.info("Kube_Token_Command works again")
        self._failing = False
        self._token = token
        return token

    def _command_failed(self, why: str) -> None:
        if not self._failing:
            self.log.warning("Kube_Token_Command failed (%s); %s", why,
                             "keeping the last token" if self._token else "requests go without a token")
        self._failing = True


_TOKEN_COMMAND_TIMEOUT = 30.0


def _status_message(status: int, body: bytes) -> str:
    """The API's ``Status.message`` when the body is one, else the start of the body."""
    try:
        doc = orjson.loads(body)
        if isinstance(doc, dict) and doc.get("message"):
            return f"HTTP {status}: {doc['message']}"
    except orjson.JSONDecodeError:
        pass
    return f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}"


def _retry_after(resp: h11.Response) -> float | None:
    for k, v in resp.headers:
        if k == b"retry-after":
            try:
                return max(0.0, float(v))
            except ValueError:
                return None
    return None


@dataclass
class _Exchange:
    stream: trio.abc.Stream
    conn: h11.Connection
    response: h11.Response

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            ev = self.conn.next_event()
            if ev is h11.NEED_DATA:
                data = await self.stream.receive_some(_READ)
                self.conn.receive_data(data)
                continue
            if isinstance(ev, h11.Data):
                yield bytes(ev.data)
            elif isinstance(ev, (h11.EndOfMessage, h11.ConnectionClosed)):
                return

    async def body(self, limit: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        async for c in self.chunks():
            size += len(c)
            if limit and size > limit:
                raise ApiError(0, f"response larger than Buffer_Size ({limit} bytes)")
            parts.append(c)
        return b"".join(parts)


class KubeApi:
    """GET and watch against one API server (or kubelet) URL with a bearer token."""

    def __init__(
        self,
        url: str,
        *,
        ssl_context: ssl.SSLContext | None,
        token: TokenSource,
        timeout: float = 10.0,
        vhost: str | None = None,
    ) -> None:
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"expected http(s)://host[:port], got {url!r}")
        self.https = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.https else 80)
        self.base = u.path.rstrip("/")
        self.ssl_context = ssl_context
        self.token = token
        self.timeout = timeout
        self.vhost = vhost or self.host
        self._host_header = self.host if u.port is None else f"{self.host}:{self.port}"

    async def _connect(self) -> trio.abc.Stream:
        if self.https:
            ctx = self.ssl_context or ssl.create_default_context()
            tcp = await trio.open_tcp_stream(self.host, self.port)
            stream = trio.SSLStream(tcp, ctx, server_hostname=self.vhost, https_compatible=True)
            try:
                await stream.do_handshake()
            except BaseException:
                await trio.aclose_forcefully(tcp)
                raise
            return stream
        return await trio.open_tcp_stream(self.host, self.port)

    async def _exchange(self, path: str) -> _Exchange:
        stream = await self._connect()
        try:
            conn = h11.Connection(h11.CLIENT)
            headers = [("Host", self._host_header), ("Accept", "application/json"), ("User-Agent", "logfwd")]
            tok = await self.token.get()
            if tok:
                headers.append(("Authorization", f"Bearer {tok}"))
            req = h11.Request(method="GET", target=self.base + path, headers=headers)
            await stream.send_all(conn.send(req) + conn.send(h11.EndOfMessage()))
            while True:
                ev = conn.next_event()
                if ev is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(_READ))
                elif isinstance(ev, h11.Response):
                    return _Exchange(stream, conn, ev)
                elif isinstance(ev, h11.ConnectionClosed):
                    raise ApiError(0, "connection closed before a response")
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise

    async def _checked(self, path: str) -> _Exchange:
        """An exchange with a 2xx answer; anything else raises ApiError (Gone for 410)."""
        try:
            ex = await self._exchange(path)
        except (OSError, trio.BrokenResourceError, h11.ProtocolError, ssl.SSLError) as e:
            raise ApiError(0, f"{type(e).__name__}: {e}") from None
        status = ex.response.status_code
        if 200 <= status < 300:
            return ex
        try:
            body = await ex.body(64 * 1024)
        except (ApiError, OSError, trio.BrokenResourceError, h11.ProtocolError):
            body = b""
        finally:
            await trio.aclose_forcefully(ex.stream)
        if status == 401:
            self.token.invalidate()
        if status == 410:
            raise Gone(_status_message(status, body))
        raise ApiError(status, _status_message(status, body), _retry_after(ex.response))

    async def get_json(self, path: str, *, limit: int = 0) -> Any:
        """GET ``path`` and decode its JSON, within ``timeout`` seconds; ``limit`` caps the body."""
        try:
            with trio.fail_after(self.timeout):
                ex = await self._checked(path)
                try:
                    body = await ex.body(limit or _MAX_BODY)
                finally:
                    await trio.aclose_forcefully(ex.stream)
        except trio.TooSlowError:
            raise ApiError(0, f"no answer within {self.timeout:g}s") from None
        except (OSError, trio.BrokenResourceError, h11.ProtocolError, ssl.SSLError) as e:
            raise ApiError(0, f"{type(e).__name__}: {e}") from None
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise ApiError(0, f"invalid JSON from the API: {e}") from None

    async def watch(self, path: str, *, idle_timeout: float) -> AsyncIterator[dict[str, Any]]:
        """The events of a watch stream (one JSON object per line), until the server ends it.

        A stream silent for ``idle_timeout`` seconds (no event, no bookmark) is treated as
        dead and raises ApiError, so a half-open connection cannot freeze the cache.
        An ERROR event carrying a 410 Status raises Gone.
        """
        try:
            with trio.fail_after(self.timeout):
                ex = await self._checked(path)
        except trio.TooSlowError:
            raise ApiError(0, f"no answer within {self.timeout:g}s") from None
        try:
            buf = b""
            it = ex.chunks().__aiter__()
            while True:
                with trio.move_on_after(idle_timeout) as scope:
                    chunk = await it.__anext__()
                if scope.cancelled_caught:
                    raise ApiError(0, f"watch silent for {idle_timeout:g}s")
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield _event(line)
        except StopAsyncIteration:
            return
        except (OSError, trio.BrokenResourceError, h11.ProtocolError, ssl.SSLError) as e:
            raise ApiError(0, f"watch stream broke: {type(e).__name__}: {e}") from None
        finally:
            await trio.aclose_forcefully(ex.stream)


def _event(line: bytes) -> dict[str, Any]:
    try:
        ev = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise ApiError(0, f"invalid watch event: {e}") from None
    if not isinstance(ev, dict):
        raise ApiError(0, "invalid watch event: not an object")
    if ev.get("type") == "ERROR":
        obj = ev.get("object") or {}
        if obj.get("code") == 410:
            raise Gone(str(obj.get("message") or "resourceVersion too old"))
        raise ApiError(int(obj.get("code") or 0), f"watch error: {obj.get('message') or obj}")
    return ev
