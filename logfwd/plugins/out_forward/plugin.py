"""The ``forward`` output: sends chunks to a Fluentd / Fluent Bit ``forward`` server (or logfwd's own).

Options follow Fluent Bit's ``out_forward``. A chunk goes out as one PackedForward
message (CompressedPackedForward with ``Compress gzip``) with EventTime timestamps
(nanoseconds kept) or integer seconds with ``Time_as_Integer``.

Delivery: with ``Require_ack_response`` the chunk carries a ``chunk`` id and the flush
succeeds only when the server answers ``{"ack": id}``; the server's ack is our delivery
acknowledgement, so an input's checkpoint advances only once the peer has the records.
No ack within ``Ack_Timeout``, a refused handshake or a broken connection returns
``retry_everything``: the engine retries with backoff (this plugin never loops), and a
retried chunk may arrive twice (at-least-once). Without acks a successful write is
delivery, as in Fluent Bit: records in flight when the peer dies can be lost.

Connections are kept open between flushes (one per concurrent worker) and checked for
a peer close before reuse. With ``Upstream`` the chunks are spread over the file's nodes
round-robin, as Fluent Bit does, so an aggregator tier shares the load. A node that fails
is marked down for ``_DOWN_SECONDS`` (skipped while others are up) and the same flush tries
the next node at once, so one dead aggregator costs neither a retry backoff nor an order of
the file; only when every node fails is the chunk handed back for retry.
"""

from __future__ import annotations

import base64
import os
import socket
import ssl
from dataclasses import dataclass
from typing import Any

import trio

from logfwd.net.tls import TLS_OPTIONS, server_name, tls_context
from logfwd.options import PORT, Option, parse_bool
from logfwd.plugin import Chunk, ConfigValueError, Output, Result
from logfwd.plugins._forward.protocol import (
    Ack,
    Authenticated,
    AuthFailed,
    ClientProtocol,
    ProtocolError,
    Reply,
    encode_message,
)

from .upstream import Node, UpstreamError, read_upstream

__all__ = ["ForwardOutput", "PLUGIN"]

_NET_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, ProtocolError,
               trio.TooSlowError)
_BOOL_KEYS = ("tls", "tls.verify", "tls.verify_hostname", "empty_shared_key")


class HandshakeError(Exception):
    """The server refused our handshake (or we refused its answer)."""


@dataclass
class _Target:
    """One server with its effective settings (an Upstream node may override the output's)."""

    name: str
    host: str
    port: int
    unix_path: str | None
    ssl: ssl.SSLContext | None
    sni: str | None
    shared_key: str | None
    self_hostname: str
    username: str
    password: str
    down_until: float = 0.0  # trio clock: skipped by the round-robin until then (unless all are down)


# How long a node that failed is passed over while another is up: long enough that a dead
# aggregator does not cost every flush a connect attempt, short enough to rejoin soon.
_DOWN_SECONDS = 10.0


class _Conn:
    def __init__(self, target: _Target, stream: Any, proto: ClientProtocol) -> None:
        self.target = target
        self.stream = stream
        self.proto = proto
        self.acks: set[str] = set()

    async def events(self, size: int = 65536) -> list[Any]:
        data = await self.stream.receive_some(size)
        if not data:
            raise trio.BrokenResourceError("the server closed the connection")
        return self.proto.receive_data(data)

    def alive(self) -> bool:
        """False when the peer has closed (EOF waiting): checked without blocking before reuse."""
        inner = getattr(self.stream, "transport_stream", self.stream)
        sock = getattr(inner, "socket", None)
        if sock is None:
            return True
        probe = socket.socket(sock.family, sock.type, fileno=sock.fileno())  # a view, detached below
        try:
            data = probe.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            probe.detach()
        return bool(data)

    async def aclose(self) -> None:
        with trio.move_on_after(1) as scope:
            scope.shield = True
            try:
                await self.stream.aclose()
            except (OSError, trio.BrokenResourceError, ssl.SSLError):
                pass


class ForwardOutput(Output):
    name = "forward"
    description = "Fluentd/Fluent Bit forward protocol client, with acks, shared key, TLS, round-robin and failover"
    options = (
        Option("Host", "str", "127.0.0.1", "server to send to"),
        Option("Port", "int", "24224", "its TCP port", **PORT),
        Option("Unix_Path", "str", None, "send over this Unix socket instead of Host/Port"),
        Option("Upstream", "str", None, "Fluent Bit upstream file: several [NODE]s, used round-robin; a failed node is skipped"),
        Option("Time_as_Integer", "bool", "off", "send integer seconds instead of EventTime (Fluentd v0.12)"),
        Option("Send_options", "bool", "off", "always send the option map (with size)"),
        Option("Require_ack_response", "bool", "off",
               "send a chunk id and count a chunk delivered only when the server acks it"),
        Option("Ack_Timeout", "time", "30s", "how long to wait for an ack before retrying the chunk", minimum=0.001),
        Option("Compress", "str", None, "gzip: send CompressedPackedForward", choices=("gzip",)),
        Option("Tag", "str", None, "tag sent instead of each chunk's own"),
        Option("Shared_Key", "str", None, "shared key for the HELO/PING/PONG handshake"),
        Option("Empty_Shared_Key", "bool", "off", "do the handshake with an empty shared key"),
        Option("Self_Hostname", "str", "localhost", "host name given in the handshake"),
        Option("Username", "str", "", "user name, when the server asks for one"),
        Option("Password", "str", "", "password of Username"),
        Option("Add_Option", "str", None, "'key value' added to the option map (repeatable)", multi=True),
        Option("Retain_Metadata_In_Forward_Mode", "bool", "on", "keep Fluent Bit record metadata",
               unsupported="logfwd records carry no metadata; entries are [time, record]"),
        Option("Fluentd_Compat", "bool", "off", "Fluentd-compatible metrics and traces",
               unsupported="logfwd carries logs only"),
        *TLS_OPTIONS,
    )

    def setup(self) -> None:
        s = self.settings
        self.extra: dict[str, str] = {}
        for entry in s.add_option or []:
            key, _, value = entry.strip().partition(" ")
            if not value.strip():
                raise ConfigValueError("add_option", f"expected 'key value', got {entry!r}")
            self.extra[key] = value.strip()
        if s.upstream:
            try:
                _, nodes = read_upstream(s.upstream)
            except UpstreamError as e:
                raise ConfigValueError("upstream", str(e)) from None
            self.targets = [self._target(n) for n in nodes]
        else:
            self.targets = [self._target(Node("default", s.host, s.port))]
        self._next = 0  # round-robin position
        self._idle: list[_Conn] = []

    def _target(self, node: Node) -> _Target:
        cfg: dict[str, Any] = dict(self.config)
        for k, v in node.options.items():
            cfg[k] = parse_bool(v) if k in _BOOL_KEYS else v
        try:
            ctx = tls_context(cfg)
        except ConfigValueError as e:
            raise ConfigValueError("upstream" if node.options else e.key, f"node {node.name}: {e.message}") from None
        key = cfg.get("shared_key")
        if key is None and cfg.get("empty_shared_key"):
            key = ""
        return _Target(node.name, node.host, node.port, None if node.options else self.settings.unix_path, ctx,
                       server_name(cfg, node.host) if ctx else None, key, cfg.get("self_hostname") or "localhost",
                       cfg.get("username") or "", cfg.get("password") or "")

    # ------------------------------------------------------------- flush

    async def flush(self, chunk: Chunk) -> Result:
        if not chunk.records:
            return Result.ok()
        errors: list[str] = []
        for target in self._order():
            conn: _Conn | None = None
            try:
                conn = await self._acquire(target)
                await self._send(conn, chunk)
            except (*_NET_ERRORS, HandshakeError) as e:
                if conn is not None:
                    await conn.aclose()
                self.metrics.inc("errors")
                errors.append(f"forward {_where(target)}: {_reason(e)}")
                self._mark_down(target, errors[-1])
                continue
            target.down_until = 0.0
            self._idle.append(conn)
            return Result.ok()
        return Result.retry_everything("; ".join(errors))

    def _order(self) -> list[_Target]:
        """The nodes one flush tries: round-robin from the next one, nodes marked down last."""
        n = len(self.targets)
        start = self._next % n
        self._next += 1
        order = [self.targets[(start + i) % n] for i in range(n)]
        now = trio.current_time()
        return [t for t in order if t.down_until <= now] + [t for t in order if t.down_until > now]

    def _mark_down(self, target: _Target, reason: str) -> None:
        if len(self.targets) > 1:
            if target.down_until <= trio.current_time():
                self.log.warning("node %s down (%s); the other nodes take its chunks", target.name, reason)
            target.down_until = trio.current_time() + _DOWN_SECONDS

    async def _send(self, conn: _Conn, chunk: Chunk) -> None:
        s = self.settings
        chunk_id = base64.b64encode(os.urandom(16)).decode() if s.require_ack_response else None
        data = encode_message(s.tag or chunk.tag, chunk.times, chunk.records, chunk=chunk_id,
                              compress=s.compress == "gzip", send_options=s.send_options,
                              time_as_integer=s.time_as_integer, extra=self.extra)
        await conn.stream.send_all(data)
        if chunk_id is not None:
            with trio.fail_after(s.ack_timeout):
                while chunk_id not in conn.acks:
                    for ev in await conn.events():
                        if isinstance(ev, Ack):
                            conn.acks.add(ev.chunk)
            conn.acks.discard(chunk_id)

    async def _acquire(self, target: _Target) -> _Conn:
        while self._idle:
            conn = self._idle.pop()
            if conn.target is target and conn.alive():
                return conn
            await conn.aclose()
        return await self._connect(target)

    async def _connect(self, target: _Target) -> _Conn:
        with trio.fail_after(10):
            if target.unix_path:
                stream: Any = await trio.open_unix_socket(target.unix_path)
            else:
                stream = await trio.open_tcp_stream(target.host, target.port)
            if target.ssl is not None:
                stream = trio.SSLStream(stream, target.ssl, server_hostname=target.sni)
                await stream.do_handshake()
            proto = ClientProtocol(shared_key=target.shared_key, self_hostname=target.self_hostname,
                                   username=target.username, password=target.password)
            conn = _Conn(target, stream, proto)
            try:
                while not proto.ready:
                    await self._handshake_step(conn)
            except BaseException:
                await conn.aclose()
                raise
        return conn

    async def _handshake_step(self, conn: _Conn) -> None:
        for ev in await conn.events():
            if isinstance(ev, Reply):
                await conn.stream.send_all(ev.data)
            elif isinstance(ev, AuthFailed):
                raise HandshakeError(ev.reason)
            elif isinstance(ev, Authenticated):
                self.log.debug("forward: authenticated with %s (%s)", conn.target.name, ev.hostname)

    async def stop(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.aclose()


def _where(t: _Target) -> str:
    return t.unix_path or f"{t.host}:{t.port}"


def _reason(e: BaseException) -> str:
    if isinstance(e, trio.TooSlowError):
        return "timed out (no connection, handshake or ack in time)"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    causes = getattr(e.__cause__, "exceptions", None)  # trio.open_tcp_stream: one error per address
    if causes:
        return "; ".join(c.strerror or str(c) for c in causes)
    return str(e) or type(e).__name__


PLUGIN = ForwardOutput
