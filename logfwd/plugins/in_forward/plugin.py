"""The ``forward`` input: a Fluentd Forward Protocol v1 server on TCP (optionally TLS) or a Unix socket.

Options follow Fluent Bit's ``in_forward`` so an aggregator section moves over unchanged.

One task per connection reads, decodes with the sans-I/O ``ServerProtocol`` and emits
each forward message as one batch, keeping the sender's tag (``Tag`` overrides it,
``Tag_Prefix`` prefixes it) and its timestamps to the nanosecond. Emitting waits for the
memory budget, so a slow pipeline stops the reads and TCP flow control slows the sender.

Acks: a message with a ``chunk`` option is answered with ``{"ack": chunk}`` only when
its batch's ``AckHandle`` completes, i.e. once every matching output has delivered (or
dead-lettered) it. A sender that waits for acks (Fluent Bit's ``Require_ack_response``)
therefore gets at-least-once delivery across logfwd: if logfwd dies first, no ack is
sent and the sender retries. Replies (PONG, acks) go through one writer task per
connection so they never interleave.

Bad input is contained: garbage, truncated or oversize msgpack (a message larger than
``Buffer_Max_Size``) closes only that connection, with one warning line and the
``protocol_errors`` counter; no connection buffers more than ``Buffer_Max_Size`` bytes.
"""

from __future__ import annotations

import errno
import math
import os
import socket
import ssl
import stat
from dataclasses import dataclass, field
from typing import Any

import trio

from logfwd.net.tls import tls_context, tls_options
from logfwd.options import PORT, Option
from logfwd.plugin import AckHandle, ConfigValueError, Emitter, Input
from logfwd.plugins._forward.protocol import (
    Authenticated,
    AuthFailed,
    Entries,
    ProtocolError,
    ServerProtocol,
)

__all__ = ["ForwardInput", "ListenError", "PLUGIN"]

_SIGNALS = {1: "metrics", 2: "traces"}


class ListenError(OSError):
    """The listener could not be opened; the message is the whole story (one line)."""


class ForwardInput(Input):
    name = "forward"
    description = "Fluentd/Fluent Bit forward protocol server (TCP, TLS or Unix socket)"
    options = (
        Option("Listen", "str", "0.0.0.0", "address to listen on"),
        Option("Port", "int", "24224", "TCP port to listen on (0 picks a free one)", **PORT),
        Option("Unix_Path", "str", None, "Unix socket to listen on instead of Listen/Port (a stale socket is removed)"),
        Option("Unix_Perm", "str", None, "permissions of the Unix socket file, octal (e.g. 0660)"),
        Option("Buffer_Chunk_Size", "size", "1024000", "bytes read from a connection at a time", minimum=1),
        Option("Buffer_Max_Size", "size", "6144000",
               "largest forward message accepted; a larger one closes its connection", minimum=1),
        Option("Tag_Prefix", "str", None, "prefix added to the tag each message carries"),
        Option("Shared_Key", "str", None, "shared key: clients must pass the HELO/PING/PONG handshake"),
        Option("Empty_Shared_Key", "bool", "off", "require the handshake with an empty shared key"),
        Option("Self_Hostname", "str", "localhost", "host name this server gives in the handshake"),
        Option("Security.Users", "str", None, "'user password' a client must present (repeatable)", multi=True),
        *tls_options(server=True),
    )

    def setup(self) -> None:
        s = self.settings
        self.unix_path: str | None = s.unix_path
        self.unix_perm: int | None = None
        if s.unix_perm:
            try:
                self.unix_perm = int(s.unix_perm, 8)
            except ValueError:
                raise ConfigValueError("unix_perm", f"expected an octal mode such as 0660, got {s.unix_perm!r}") from None
        self.shared_key: str | None = s.shared_key if s.shared_key is not None else ("" if s.empty_shared_key else None)
        self.users: dict[str, str] = {}
        for entry in s.security_users or []:
            parts = entry.split()
            if len(parts) != 2:
                raise ConfigValueError("security.users", f"expected 'username password', got {entry!r}")
            self.users[parts[0]] = parts[1]
        if self.users and self.shared_key is None:
            raise ConfigValueError("security.users", "Security.Users needs Shared_Key (or Empty_Shared_Key on)")
        if self.unix_path and self.config.get("tls"):
            raise ConfigValueError("tls", "TLS is for the TCP listener; unset Unix_Path to use it")
        self.ssl_context: ssl.SSLContext | None = tls_context(self.config, server=True)
        self.chunk_size: int = s.buffer_chunk_size
        self.max_size: int = max(s.buffer_max_size, 1024)
        # The config layer gives an untagged input its instance name as Tag; only a Tag the
        # user wrote overrides the tags senders give their records.
        self.fixed_tag: str | None = s.tag if any(k == "tag" for k, _ in self.ctx.raw) else None
        self.tag_prefix: str = s.tag_prefix or ""
        self.port: int | None = None
        self.connections = 0

    def _tag(self, tag: str) -> str:
        if self.fixed_tag:
            return self.fixed_tag
        return self.tag_prefix + tag

    # --------------------------------------------------------------- listen

    async def run(self, emitter: Emitter, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, then serve connections until cancelled; ``task_status.started()`` once listening."""
        listeners = await self._listeners()
        where = self.unix_path or f"{self.settings.listen}:{self.port}"
        self.log.info("forward listening on %s%s", where, " (TLS)" if self.ssl_context else "")
        try:
            await trio.serve_listeners(lambda stream: self._serve(stream, emitter), listeners,
                                       task_status=task_status)
        finally:
            if self.unix_path:
                _unlink_quiet(self.unix_path)

    async def _listeners(self) -> list[Any]:
        if self.unix_path:
            try:
                raw = self._unix_socket(self.unix_path)
            except OSError as e:
                raise ListenError(f"cannot listen on {self.unix_path}: {e.strerror or e}") from None
            listeners: list[Any] = [trio.SocketListener(trio.socket.from_stdlib_socket(raw))]
        else:
            host, port = self.settings.listen, self.settings.port
            try:
                listeners = list(await trio.open_tcp_listeners(port, host=host))
            except OSError as e:
                why = (e.strerror or str(e)).lower()
                raise ListenError(f"cannot listen on {host}:{port}/tcp: {why}") from None
            self.port = listeners[0].socket.getsockname()[1]
        if self.ssl_context is not None:
            listeners = [trio.SSLListener(lst, self.ssl_context, https_compatible=False) for lst in listeners]
        return listeners

    def _unix_socket(self, path: str) -> socket.socket:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise OSError(errno.EEXIST, f"{path} exists and is not a socket; refusing to remove it")
            os.unlink(path)  # stale socket of a previous run
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(path)
            if self.unix_perm is not None:
                os.chmod(path, self.unix_perm)
            s.listen(512)
        except BaseException:
            s.close()
            raise
        return s

    # ----------------------------------------------------------- connection

    async def _serve(self, stream: Any, emitter: Emitter) -> None:
        peer = _peer_name(stream, self.unix_path)
        proto = ServerProtocol(max_size=self.max_size, shared_key=self.shared_key,
                               self_hostname=self.settings.self_hostname or "localhost", users=self.users)
        send, recv = trio.open_memory_channel[bytes](math.inf)
        self.connections += 1
        self.metrics.set("connections", self.connections)
        try:
            async with stream, trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, stream, recv, peer)
                hello = proto.start()
                if hello:
                    send.send_nowait(hello)
                await self._read_loop(stream, proto, send, emitter, peer)
                # Replies already queued (a refusing PONG, acks) still go out, but a peer that
                # does not read them cannot hold the connection open for long.
                send.close()
                nursery.cancel_scope.deadline = trio.current_time() + 10
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError) as e:
            self.log.debug("forward connection %s broke: %s", peer, e)
        except Exception as e:  # one connection's failure must not stop the listener
            self.metrics.inc("errors")
            self.log.error("forward connection %s failed: %s: %s", peer, type(e).__name__, e)
        finally:
            send.close()
            self.connections -= 1
            self.metrics.set("connections", self.connections)

    async def _read_loop(self, stream: Any, proto: ServerProtocol, send: trio.MemorySendChannel[bytes],
                         emitter: Emitter, peer: str) -> None:
        while True:
            try:
                data = await stream.receive_some(self.chunk_size)
            except (trio.BrokenResourceError, ssl.SSLError, OSError) as e:
                self.log.debug("forward connection %s broke: %s", peer, e)
                return
            if not data:
                if proto.pending:
                    self._bad(peer, f"connection closed inside a message ({proto.pending} bytes cut off)")
                return
            try:
                events = proto.receive_data(data)
            except ProtocolError as e:
                self._bad(peer, str(e))
                return
            for ev in _coalesce(events):
                if isinstance(ev, _Group):
                    await self._emit(ev, emitter, send)
                elif isinstance(ev, Authenticated):
                    send.send_nowait(ev.reply)
                elif isinstance(ev, AuthFailed):
                    self.metrics.inc("auth_failures")
                    self.log.warning("forward connection %s closed: handshake failed: %s", peer, ev.reason)
                    send.send_nowait(ev.reply)
                    return
            if proto.error is not None:
                self._bad(peer, str(proto.error))
                return

    def _bad(self, peer: str, reason: str) -> None:
        self.metrics.inc("protocol_errors")
        self.metrics.inc("errors")
        self.log.warning("forward connection %s closed: %s", peer, reason)

    async def _emit(self, g: _Group, emitter: Emitter, send: trio.MemorySendChannel[bytes]) -> None:
        if g.signal in _SIGNALS:
            self.metrics.inc("dropped_records", len(g.records))
            self.log.warning("forward: dropped a %s message (tag %s): logfwd carries logs only",
                             _SIGNALS[g.signal], g.tag)
            for chunk in g.chunks:
                _send_quiet(send, ServerProtocol.ack(chunk))
            return
        handle = AckHandle(g.nbytes)
        if g.chunks:
            reply = b"".join(ServerProtocol.ack(c) for c in g.chunks)
            handle.on_complete(lambda _h: _send_quiet(send, reply))
        await emitter.emit(g.records, g.times, tag=self._tag(g.tag), handle=handle, nbytes=g.nbytes)

    async def _writer(self, stream: Any, recv: trio.MemoryReceiveChannel[bytes], peer: str) -> None:
        async with recv:
            async for data in recv:
                try:
                    await stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError) as e:
                    self.log.debug("forward connection %s: cannot reply: %s", peer, e)
                    return


@dataclass(slots=True)
class _Group:
    """Consecutive messages of one tag from one read, emitted as one batch (Message mode sends
    one record per message; a batch per record would cost more than the record)."""

    tag: str
    signal: int
    times: list[int] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    chunks: list[str] = field(default_factory=list)
    nbytes: int = 0


def _coalesce(events: list[Any]) -> list[Any]:
    out: list[Any] = []
    for ev in events:
        if not isinstance(ev, Entries):
            out.append(ev)
            continue
        last = out[-1] if out else None
        if not (isinstance(last, _Group) and last.tag == ev.tag and last.signal == ev.signal):
            last = _Group(ev.tag, ev.signal)
            out.append(last)
        last.times += ev.times
        last.records += ev.records
        last.nbytes += ev.nbytes
        if ev.chunk is not None:
            last.chunks.append(ev.chunk)
    return out


def _send_quiet(send: trio.MemorySendChannel[bytes], data: bytes) -> None:
    """Queue a reply; the connection may be gone already (the sender will retry unacked chunks)."""
    try:
        send.send_nowait(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _peer_name(stream: Any, unix_path: str | None) -> str:
    if unix_path:
        return f"unix://{unix_path}"
    inner = getattr(stream, "transport_stream", stream)
    try:
        host, port = inner.socket.getpeername()[:2]
    except (OSError, AttributeError, ValueError):
        return "tcp://unknown"
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


PLUGIN = ForwardInput
