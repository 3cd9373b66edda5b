"""A fault-injecting HTTP/1.1 proxy for output tests, in front of a real backend.

The Elasticsearch stand-in here (noida-db) never answers 429 or 503, never stalls
and never drops a connection; real clusters do all of that. This proxy sits
between the output and the real server and, switched at run time by the test:

- passes requests through (and records each one: method, path, headers, body),
- adds latency before forwarding (timeouts),
- resets the next N connections (TCP RST, no answer),
- answers the next N requests itself with a status (429, 503, 413...),
- answers 413 to bodies larger than ``max_body``,
- makes chosen items of the next N ``_bulk`` requests fail with 429
  ``es_rejected_execution_exception``: those actions are removed from the request
  before it is forwarded (so the server really does not store them, as with a
  real rejection) and their answers are spliced back in at their positions,
- terminates TLS (give it a server ``ssl.SSLContext``).

It is threaded (one thread per client connection) so a test can drive it while
its own trio loop runs the output in the main thread.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FaultProxy", "Recorded"]


@dataclass
class Recorded:
    """One request as the proxy received it (body decompressed if it was gzipped)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    wire_body: bytes
    answered: int = 0  # status sent back to the client (0: connection reset)


@dataclass
class _ItemFault:
    select: Callable[[int, dict[str, Any], Any], bool]
    remaining: int
    status: int = 429
    etype: str = "es_rejected_execution_exception"


@dataclass
class _Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None


class _Conn:
    """Buffered reads of HTTP/1.1 messages from a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def read_head(self) -> bytes | None:
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                return None
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        return head

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionError("peer closed mid-body")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise ConnectionError("peer closed mid-chunk")
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def read_body(self, headers: list[tuple[str, str]], until_close: bool) -> bytes:
        hd = {k.lower(): v for k, v in headers}
        if "chunked" in hd.get("transfer-encoding", "").lower():
            parts = []
            while True:
                size = int(self.read_line().split(b";")[0], 16)
                if size == 0:
                    while self.read_line():
                        pass
                    return b"".join(parts)
                parts.append(self.read_exact(size))
                self.read_line()
        if "content-length" in hd:
            return self.read_exact(int(hd["content-length"]))
        if until_close:
            while self._fill():
                pass
            out, self.buf = self.buf, b""
            return out
        return b""


class _Upstream:
    """The proxied connection's own connection to the server, opened at its first forwarded request."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.sock: socket.socket | None = None
        self.conn: _Conn | None = None

    def open(self) -> tuple[socket.socket, _Conn]:
        if self.sock is None or self.conn is None:
            self.sock = socket.create_connection(self.address, timeout=30)
            self.conn = _Conn(self.sock)
        return self.sock, self.conn

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


def _parse_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.append((k.strip(), v.strip()))
    return lines[0], headers


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): the client sees 'connection reset', not a clean close."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class FaultProxy:
    """HTTP proxy on 127.0.0.1:``port`` forwarding to ``upstream_host:upstream_port``."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1",
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.ssl_context = ssl_context
        self.requests: list[Recorded] = []
        self.latency = 0.0
        self.in_flight = 0  # requests read and not yet answered
        self.max_in_flight = 0
        self.max_body: int | None = None
        self.strip_prefix = ""
        self._lock = threading.Lock()
        self._status_faults: list[tuple[int, int, bytes]] = []  # (status, remaining, body)
        self._resets = 0
        self._item_faults: list[_ItemFault] = []
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._closing = False
        self._conns: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept_loop, name="faultproxy", daemon=True)

    # ------------------------------------------------------------ control

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing = True
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        self._thread.join(5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_requests(self, status: int, n: int = 1, body: dict[str, Any] | None = None) -> None:
        """Answer the next ``n`` requests with ``status`` (and a JSON error body) without forwarding."""
        payload = body if body is not None else {
            "error": {"type": "fault_proxy", "reason": f"injected {status}"}, "status": status}
        with self._lock:
            self._status_faults.append((status, n, json.dumps(payload).encode()))

    def reset_connections(self, n: int = 1) -> None:
        """Reset the connection of the next ``n`` requests (after reading them, before any answer)."""
        with self._lock:
            self._resets += n

    def fail_items(self, select: set[int] | Callable[[int, dict[str, Any], Any], bool], n: int = 1,
                   status: int = 429, etype: str = "es_rejected_execution_exception") -> None:
        """Reject chosen actions of the next ``n`` bulk requests with a per-item ``status``.

        ``select`` is a set of action positions (0-based, in request order), or a
        function ``(position, action_line_dict, document) -> bool``.
        """
        if not callable(select):
            positions = set(select)

            def chosen(j: int, _a: dict[str, Any], _d: Any) -> bool:
                return j in positions

            fn = chosen
        else:
            fn = select
        with self._lock:
            self._item_faults.append(_ItemFault(fn, n, status, etype))

    def clear(self) -> None:
        with self._lock:
            self._status_faults.clear()
            self._item_faults.clear()
            self._resets = 0
            self.latency = 0.0
            self.max_in_flight = self.in_flight
            self.max_body = None
            self.requests.clear()

    def bulk_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.split("?")[0].endswith("/_bulk")]

    # ------------------------------------------------------------ serving

    def _accept_loop(self) -> None:
        self._listener.settimeout(0.05)  # so stop() is noticed promptly
        while not self._closing:
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        upstream = _Upstream(self.upstream)
        try:
            if self.ssl_context is not None:
                sock.settimeout(10)
                try:
                    sock = self.ssl_context.wrap_socket(sock, server_side=True)
                except (ssl.SSLError, OSError):
                    sock.close()
                    return
                sock.settimeout(None)
            with self._lock:
                self._conns.add(sock)
            conn = _Conn(sock)
            while not self._closing:
                head = conn.read_head()
                if head is None:
                    return
                first, headers = _parse_head(head)
                method, target, version = (first.split(" ", 2) + ["", ""])[:3]
                req = _Request(method, target, version, headers)
                req.body = conn.read_body(headers, until_close=False)
                rec = self._record(req)
                if self._take_reset():
                    _reset(sock)
                    return
                with self._counting():
                    self._handle(sock, req, rec, upstream)
        except (OSError, ConnectionError, ValueError):
            return
        finally:
            with self._lock:
                self._conns.discard(sock)
            try:
                sock.close()
            except OSError:
                pass
            upstream.close()

    @contextlib.contextmanager
    def _counting(self) -> Iterator[None]:
        """Count the request as in flight (``max_in_flight``: how many a client had open at once)."""
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= 1

    def _handle(self, sock: socket.socket, req: _Request, rec: Recorded, upstream: _Upstream) -> None:
        """Answer one request: latency, an injected fault, or the upstream's answer (item faults applied)."""
        if self.latency:
            time.sleep(self.latency)
        fault = self._take_status_fault()
        if fault is None and self.max_body is not None and len(req.body) > self.max_body:
            fault = (413, b'{"error":{"type":"content_too_long","reason":"request too large"},"status":413}')
        if fault is not None:
            rec.answered = fault[0]
            self._answer(sock, fault[0], [("Content-Type", "application/json")], fault[1])
            return
        item_fault = self._take_item_fault(req)
        up_sock, up_conn = upstream.open()
        if item_fault is not None:
            status, rh, rbody = self._forward_with_item_faults(up_sock, up_conn, req, rec, item_fault)
        else:
            status, rh, rbody = self._forward(up_sock, up_conn, req)
        rec.answered = status
        self._answer(sock, status, rh, rbody)

    def _record(self, req: _Request) -> Recorded:
        hd = {k.lower(): v for k, v in req.headers}
        body = req.body
        if "gzip" in hd.get("content-encoding", "").lower():
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError):
                pass
        rec = Recorded(req.method, req.target, hd, body, req.body)
        with self._lock:
            self.requests.append(rec)
        return rec

    def _take_reset(self) -> bool:
        with self._lock:
            if self._resets > 0:
                self._resets -= 1
                return True
            return False

    def _take_status_fault(self) -> tuple[int, bytes] | None:
        with self._lock:
            if not self._status_faults:
                return None
            status, n, body = self._status_faults[0]
            if n <= 1:
                self._status_faults.pop(0)
            else:
                self._status_faults[0] = (status, n - 1, body)
            return status, body

    def _take_item_fault(self, req: _Request) -> _ItemFault | None:
        if not req.target.split("?")[0].endswith("/_bulk"):
            return None
        with self._lock:
            if not self._item_faults:
                return None
            f = self._item_faults[0]
            f.remaining -= 1
            if f.remaining <= 0:
                self._item_faults.pop(0)
            return f

    def _send_upstream(self, upstream: socket.socket, up_conn: _Conn, req: _Request,
                       headers: list[tuple[str, str]], body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        target = req.target
        if self.strip_prefix and target.startswith(self.strip_prefix):
            target = target[len(self.strip_prefix):] or "/"
        lines = [f"{req.method} {target} HTTP/1.1"]
        for k, v in headers:
            # accept-encoding: the proxy reads (and may rewrite) answers, so ask for identity.
            if k.lower() in ("content-length", "transfer-encoding", "connection", "accept-encoding"):
                continue
            lines.append(f"{k}: {v}")
        lines.append(f"Content-Length: {len(body)}")
        upstream.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        head = up_conn.read_head()
        if head is None:
            raise ConnectionError("upstream closed")
        first, rh = _parse_head(head)
        status = int(first.split(" ")[1])
        rbody = up_conn.read_body(rh, until_close=req.method != "HEAD"
                                  and not any(k.lower() == "content-length" for k, _ in rh))
        return status, rh, rbody

    def _forward(self, upstream: socket.socket, up_conn: _Conn, req: _Request
                 ) -> tuple[int, list[tuple[str, str]], bytes]:
        return self._send_upstream(upstream, up_conn, req, req.headers, req.body)

    def _forward_with_item_faults(self, upstream: socket.socket, up_conn: _Conn, req: _Request, rec: Recorded,
                                  fault: _ItemFault) -> tuple[int, list[tuple[str, str]], bytes]:
        lines = [ln for ln in rec.body.split(b"\n") if ln.strip()]
        actions: list[tuple[bytes, bytes]] = [(lines[i], lines[i + 1]) for i in range(0, len(lines) - 1, 2)]
        kept: list[bytes] = []
        failed: dict[int, dict[str, Any]] = {}
        for j, (a, d) in enumerate(actions):
            action = json.loads(a)
            doc = json.loads(d)
            if fault.select(j, action, doc):
                op, meta = next(iter(action.items()))
                failed[j] = {op: {"_index": meta.get("_index"), "_id": meta.get("_id"), "status": fault.status,
                                  "error": {"type": fault.etype, "reason": "rejected by the fault proxy"}}}
            else:
                kept += [a, d]
        if kept:
            headers = [(k, v) for k, v in req.headers if k.lower() != "content-encoding"]
            status, rh, rbody = self._send_upstream(upstream, up_conn, req, headers, b"\n".join(kept) + b"\n")
            if status != 200:
                return status, rh, rbody
            answer = json.loads(rbody)
            upstream_items = iter(answer.get("items", []))
        else:
            rh = [("Content-Type", "application/json")]
            answer = {"took": 0}
            upstream_items = iter(())
        items = [failed[j] if j in failed else next(upstream_items) for j in range(len(actions))]
        answer["items"] = items
        answer["errors"] = bool(failed) or bool(answer.get("errors"))
        return 200, rh, json.dumps(answer).encode()

    def _answer(self, sock: socket.socket, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        lines = [f"HTTP/1.1 {status} {'OK' if status == 200 else 'Injected'}"]
        for k, v in headers:
            if k.lower() in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                continue
            lines.append(f"{k}: {v}")
        lines.append(f"Content-Length: {len(body)}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
