"""The stream listeners (tcp, with or without TLS, and unix_tcp): one task per connection.

Each connection's bytes go through its own ``SyslogFramer`` and the messages of
each read are sent on to the emitter as one list. Hostile or broken peers are
contained:

- **Connection cap** (``Max_Connections``). A connection accepted beyond the cap
  closes the connection that has been silent the longest (not one whose messages
  are waiting for the pipeline). Refusing the newcomer instead would let a
  thousand idle sockets lock every good sender out; closing the idlest keeps
  whoever is talking served. Counted in ``connections_evicted``, logged at most
  once a minute. Only when every connection is busy handing messages to a
  blocked pipeline is the newcomer refused (``connections_refused``).
- **Descriptor limit.** ``accept`` failing with EMFILE/ENFILE (the process's
  ``RLIMIT_NOFILE``) is counted in ``accept_errors``, logged at most once a
  minute, and closes the idlest connection so the pending one can be accepted;
  with nothing to close, accepting pauses for 100 ms instead of spinning.
- **Idle timeout** (``net.io_timeout``). A connection that sends nothing for
  that long is closed (``idle_closed``); what it held of an unfinished
  newline-framed message is emitted first.
- **Bounded buffers.** A connection holds at most ``Buffer_Max_Size`` bytes of an
  unfinished message (plus a length field), so all connections together hold at
  most ``Max_Connections`` times that; the ``partial_bytes`` gauge shows how
  much is held now. Reads are ``Buffer_Chunk_Size`` at a time.
"""

from __future__ import annotations

import errno
import math
import socket
import ssl
import time
from typing import Any

import trio

from .config import SyslogConfig
from .framing import SyslogFramer
from .sockets import bind_error, peer_name, set_rcvbuf, unix_socket, unlink_quiet

__all__ = ["StreamServer"]

_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_WARN_EVERY = 60.0  # seconds between two warnings of the same kind


class _Conn:
    """One accepted connection, as the cap and the EMFILE handling see it."""

    __slots__ = ("scope", "last_active", "busy", "closed", "held")

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.last_active = trio.current_time()
        self.busy = False  # waiting for the emitter: its messages are in hand, do not evict it
        self.closed = trio.Event()
        self.held = 0  # bytes of an unfinished message


class StreamServer:
    """Binds the listening sockets (``open``, before the input reports started), then serves them."""

    def __init__(self, cfg: SyslogConfig, metrics: Any, log: Any, count_oversize: Any) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.log = log
        self.count_oversize = count_oversize
        self.port: int | None = None
        self.conns: dict[_Conn, None] = {}
        self.partial_bytes = 0
        self._warned: dict[str, float] = {}
        metrics.set("connections", 0)
        metrics.set("partial_bytes", 0)
        for name in ("connections_evicted", "connections_refused", "accept_errors", "idle_closed"):
            metrics.setdefault(name, 0)

    @property
    def connections(self) -> int:
        return len(self.conns)

    # ------------------------------------------------------------ listening

    async def open(self) -> list[Any]:
        """The listeners; StartError when a socket cannot be bound."""
        cfg = self.cfg
        listeners: list[Any]
        if cfg.mode == "tcp":
            try:
                listeners = list(await trio.open_tcp_listeners(cfg.port, host=cfg.listen))
            except OSError as e:
                raise bind_error(f"{cfg.listen}:{cfg.port}", "tcp", e) from None
            for lst in listeners:
                set_rcvbuf(lst.socket, cfg.rcvbuf, self.log)
            self.port = listeners[0].socket.getsockname()[1]
        else:
            raw = unix_socket(cfg.path or "", socket.SOCK_STREAM, cfg.unix_perm, cfg.mode)
            set_rcvbuf(raw, cfg.rcvbuf, self.log)
            raw.listen(512)
            listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(raw))]
        if cfg.tls is not None:
            listeners = [trio.SSLListener(lst, cfg.tls, https_compatible=False) for lst in listeners]
        self.log.info("syslog %s listening on %s", cfg.mode,
                      cfg.path if cfg.mode == "unix_tcp" else f"{cfg.listen}:{self.port}")
        return listeners

    async def serve(self, listeners: list[Any], send: trio.MemorySendChannel[Any]) -> None:
        """Accept on every listener until cancelled; a Unix socket file is removed at the end."""
        try:
            async with send, trio.open_nursery() as nursery:
                for lst in listeners:
                    nursery.start_soon(self._accept_loop, lst, nursery, send)
        finally:
            for lst in listeners:
                await trio.aclose_forcefully(lst)
            if self.cfg.mode == "unix_tcp":
                unlink_quiet(self.cfg.path or "")

    async def _accept_loop(self, listener: Any, nursery: trio.Nursery, send: trio.MemorySendChannel[Any]) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as e:
                await self._accept_failed(e)
                continue
            if len(self.conns) >= self.cfg.max_connections and not self._make_room():
                await trio.aclose_forcefully(stream)
                continue
            conn = _Conn()
            self.conns[conn] = None
            self.metrics.set("connections", len(self.conns))
            nursery.start_soon(self._handle, conn, stream, send.clone())

    def _make_room(self) -> bool:
        """At Max_Connections: close the idlest connection; False (refuse the newcomer) if every one is busy."""
        self._warn("cap", "syslog %s: Max_Connections (%d) reached; closing the longest idle connection",
                   self.cfg.mode, self.cfg.max_connections)
        if self._evict() is not None:
            self.metrics.inc("connections_evicted")
            return True
        self.metrics.inc("connections_refused")
        return False

    async def _accept_failed(self, e: OSError) -> None:
        self.metrics.inc("accept_errors")
        if e.errno in _OUT_OF_DESCRIPTORS:
            self._warn("emfile", "syslog %s: cannot accept a connection: %s (%d open); closing the longest idle one",
                       self.cfg.mode, e.strerror or e, len(self.conns))
            victim = self._evict()
            if victim is not None:
                with trio.move_on_after(1.0):
                    await victim.closed.wait()  # its descriptor is free once its task has unwound
                return
        else:
            self._warn("accept", "syslog %s: accept failed: %s", self.cfg.mode, e)
        await trio.sleep(0.1)

    def _evict(self) -> _Conn | None:
        """Close the connection silent the longest (not one handing messages to the pipeline)."""
        victim: _Conn | None = None
        for c in self.conns:
            if not c.busy and not c.scope.cancel_called and (victim is None or c.last_active < victim.last_active):
                victim = c
        if victim is not None:
            victim.scope.cancel()
        return victim

    def _warn(self, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._warned.get(key, -math.inf) >= _WARN_EVERY:
            self._warned[key] = now
            self.log.warning(msg, *args)

    # ------------------------------------------------------------ connections

    async def _handle(self, conn: _Conn, stream: Any, send: trio.MemorySendChannel[Any]) -> None:
        peer = peer_name(stream, self.cfg.mode, self.cfg.path)
        try:
            with conn.scope:
                async with send, stream:
                    await self._read(conn, stream, send, peer)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the emitter is gone (shutdown) or the peer vanished while closing
        finally:
            self._hold(conn, 0)
            del self.conns[conn]
            self.metrics.set("connections", len(self.conns))
            conn.closed.set()

    async def _read(self, conn: _Conn, stream: Any, send: trio.MemorySendChannel[Any], peer: str) -> None:
        cfg = self.cfg
        framer = SyslogFramer(cfg.max_size, cfg.oversize, cfg.framing)
        idle = cfg.idle_timeout if cfg.idle_timeout > 0 else math.inf
        truncated = dropped = 0
        while True:
            data = b""
            with trio.move_on_after(idle) as timer:
                try:
                    data = await stream.receive_some(cfg.chunk_size)
                except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError) as e:
                    self.log.debug("syslog connection %s broke: %s", peer, e)
            if timer.cancelled_caught:
                self.metrics.inc("idle_closed")
                self.log.debug("syslog connection %s closed: idle for %.0fs", peer, cfg.idle_timeout)
            else:
                conn.last_active = trio.current_time()
            msgs = framer.feed(data) if data else framer.close()
            if framer.truncated != truncated or framer.dropped != dropped:
                self.count_oversize(framer.truncated - truncated, framer.dropped - dropped, peer)
                truncated, dropped = framer.truncated, framer.dropped
            self._hold(conn, framer.buffered)
            if msgs:
                conn.busy = True
                try:
                    await send.send((msgs, peer))
                finally:
                    conn.busy = False
            if framer.error is not None:
                self.metrics.inc("malformed_frames")
                self.metrics.inc("errors")
                self.log.warning("syslog connection %s closed: malformed frame (%s)", peer, framer.error)
                return
            if not data:
                if framer.incomplete:
                    self.metrics.inc("incomplete_frames", framer.incomplete)
                return

    def _hold(self, conn: _Conn, held: int) -> None:
        if held != conn.held:
            self.partial_bytes += held - conn.held
            conn.held = held
            self.metrics.set("partial_bytes", self.partial_bytes)
