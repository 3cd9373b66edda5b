"""The ``syslog`` input: RFC 3164 / RFC 5424 messages over UDP, TCP (optionally TLS) and Unix sockets.

Options, values and defaults follow Fluent Bit's ``in_syslog`` so that a Fluent
Bit section moves over unchanged. Where we do better, the same keys still work:

- TCP framing (RFC 6587) is detected per connection: octet counting
  (``LEN SP MSG``, what rsyslog's ``omfwd`` and ``logger --octet-count`` send)
  or newline-delimited. ``Format``/``Frame`` can force one.
- ``Parser auto`` (the default when ``Parser`` is unset) picks the parser per
  message: ``<PRI>1 `` is RFC 5424, anything else RFC 3164 (with
  ``syslog-rfc3164-local`` for the hostname-less form local senders write to
  Unix sockets, when that parser exists). Fluent Bit's fixed default would
  leave one of the two formats unparsed.
- A message the parser cannot read is kept raw (``{"log": ...}``) and counted
  in ``parse_errors``; an oversize message is truncated or dropped
  (``Oversize``) and counted; a malformed octet-counted stream closes only that
  connection (``malformed_frames``).

Concurrency: one task per connection (never per message) frames bytes with the
sans-I/O ``SyslogFramer`` and sends the list of messages of each read into one
bounded memory channel; a single emitter task gathers them into batches (up to
``Batch_Size`` messages or ``Batch_Wait`` seconds), parses them with one call
into the parser and emits. When the pipeline applies backpressure the emitter
awaits the memory budget, the channel fills, connection tasks block on send
and stop reading their sockets: TCP senders are slowed by the kernel's flow
control, UDP datagrams beyond ``Receive_Buffer_Size`` are dropped by the kernel
and counted from ``/proc/net/udp`` (``udp_kernel_drops`` gauge,
``dropped_records``).
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import stat
import time
from typing import Any

import trio

from logfwd.options import Option
from logfwd.plugin import ConfigValueError, Emitter, Input

from .framing import FRAMINGS, SyslogFramer

__all__ = ["SyslogInput", "PLUGIN", "proc_udp_drops"]

RFC5424 = "syslog-rfc5424"
RFC3164 = "syslog-rfc3164"
RFC3164_LOCAL = "syslog-rfc3164-local"

_STREAM_MODES = ("tcp", "unix_tcp")
_UNIX_MODES = ("unix_udp", "unix_tcp")


class SyslogInput(Input):
    name = "syslog"
    description = "Syslog messages (RFC 3164 / 5424) over UDP, TCP, TLS or Unix sockets"
    options = (
        Option("Mode", "str", "unix_udp", "transport: udp, tcp, unix_udp or unix_tcp",
               choices=("udp", "tcp", "unix_udp", "unix_tcp")),
        Option("Listen", "str", "0.0.0.0", "address to bind in tcp/udp mode"),
        Option("Port", "int", "5140", "port to listen on in tcp/udp mode", minimum=0, maximum=65535),
        Option("Path", "str", None, "Unix socket file in unix_tcp/unix_udp mode (a stale file is removed)"),
        Option("Unix_Perm", "str", "0644", "permissions of the Unix socket file (octal)"),
        Option("Parser", "str", None,
               "parser name; unset or 'auto' detects RFC 5424 vs RFC 3164 per message"),
        Option("Buffer_Chunk_Size", "size", "32000", "bytes read from a connection at a time"),
        Option("Buffer_Max_Size", "size", None,
               "largest message accepted (defaults to Buffer_Chunk_Size); see Oversize"),
        Option("Receive_Buffer_Size", "size", None, "socket receive buffer (SO_RCVBUF); capped by net.core.rmem_max"),
        Option("Source_Address_Key", "str", None, "key to store the sender's address in (e.g. udp://1.2.3.4:514)"),
        Option("Raw_Message_Key", "str", None, "key to keep the unparsed message in"),
        Option("Format", "str", "auto", "TCP framing: auto (per connection), newline or octet_counting",
               choices=FRAMINGS, aliases=("Frame",)),
        Option("Oversize", "str", "truncate",
               "a message over Buffer_Max_Size is truncated or dropped (both counted)",
               choices=("truncate", "drop")),
        Option("Batch_Size", "int", "1000", "messages gathered into one batch at most", minimum=1),
        Option("Batch_Wait", "time", "50ms", "longest a message waits for its batch to fill"),
        Option("tls", "bool", "off", "accept TLS connections (tcp mode)"),
        Option("tls.verify", "bool", "off", "require and verify client certificates against tls.ca_file"),
        Option("tls.ca_file", "str", None, "CA certificates for client verification"),
        Option("tls.crt_file", "str", None, "server certificate (PEM)"),
        Option("tls.key_file", "str", None, "server private key (PEM)"),
        Option("tls.key_passwd", "str", None, "password of tls.key_file"),
    )

    def setup(self) -> None:
        c = self.config
        self.mode: str = c["mode"]
        if self.mode in _UNIX_MODES and not c.get("path"):
            raise ConfigValueError("path", f"Mode {self.mode} needs Path, the Unix socket file to create")
        try:
            self.unix_perm = int(str(c.get("unix_perm") or "0644"), 8)
        except ValueError:
            raise ConfigValueError("unix_perm", f"expected an octal mode such as 0644, got {c['unix_perm']!r}") from None
        self.chunk_size: int = max(1024, int(c.get("buffer_chunk_size") or 32000))
        self.max_size: int = int(c.get("buffer_max_size") or self.chunk_size)
        self.framing: str = c.get("format") or "auto"
        self.oversize: str = c.get("oversize") or "truncate"
        self.batch_size: int = int(c.get("batch_size") or 1000)
        self.batch_wait: float = float(c.get("batch_wait") if c.get("batch_wait") is not None else 0.05)
        self.source_key: str | None = c.get("source_address_key")
        self.raw_key: str | None = c.get("raw_message_key")
        self.tls = bool(c.get("tls"))
        if self.tls:
            if self.mode not in _STREAM_MODES:
                raise ConfigValueError("tls", "TLS needs a stream transport: Mode tcp (or unix_tcp)")
            if not c.get("tls.crt_file") or not c.get("tls.key_file"):
                raise ConfigValueError("tls.crt_file", "tls on needs tls.crt_file and tls.key_file")
        self._resolve_parsers(c.get("parser"))
        self.port: int | None = None  # bound port (tcp/udp), known once listening
        self.connections = 0

    def _resolve_parsers(self, name: str | None) -> None:
        reg = self.ctx.parsers
        if reg is None:
            raise ConfigValueError("parser", "no parser registry available (parsers.conf not loaded)")

        def get(n: str) -> Any:
            try:
                return reg.get(n)
            except KeyError:
                raise ConfigValueError("parser", f"unknown parser {n!r}; define it in a parsers file") from None

        self.auto = name is None or name.strip().lower() == "auto"
        if self.auto:
            self.p5424 = get(RFC5424)
            self.p3164 = get(RFC3164)
            names = set(reg.names())
            self.p3164_local = reg.get(RFC3164_LOCAL) if RFC3164_LOCAL in names else None
            self.parser = None
        else:
            self.parser = get(name)  # type: ignore[arg-type]

    # ----------------------------------------------------------------- run

    async def run(self, emitter: Emitter, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, then read until cancelled. ``task_status.started()`` fires once listening."""
        send, recv = trio.open_memory_channel[tuple[list[bytes], str | None]](64)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._emit_loop, emitter, recv)
            if self.mode in ("udp", "unix_udp"):
                await nursery.start(self._serve_dgram, send)
            else:
                await nursery.start(self._serve_stream, send)
            task_status.started()

    # ------------------------------------------------------------- emitter

    async def _emit_loop(self, emitter: Emitter, recv: trio.MemoryReceiveChannel[Any]) -> None:
        """Gather per-read message lists from every connection into batches and emit them."""
        async with recv:
            while True:
                try:
                    first = await recv.receive()
                except trio.EndOfChannel:
                    return
                items = [first]
                count = len(first[0])
                deadline = trio.current_time() + self.batch_wait
                closed = False
                while count < self.batch_size:
                    with trio.move_on_at(deadline) as scope:
                        try:
                            item = await recv.receive()
                        except trio.EndOfChannel:
                            closed = True
                    if closed or scope.cancelled_caught:
                        break
                    items.append(item)
                    count += len(item[0])
                await self._emit(emitter, items)
                if closed:
                    return

    async def _emit(self, emitter: Emitter, items: list[tuple[list[bytes], str | None]]) -> None:
        messages: list[bytes] = []
        sources: list[str | None] = []
        for msgs, src in items:
            messages.extend(msgs)
            if self.source_key:
                sources.extend([src] * len(msgs))
        times, records = self.parse(messages)
        if self.source_key:
            key = self.source_key
            for rec, src in zip(records, sources, strict=True):
                if src is not None:
                    rec[key] = src
        nbytes = sum(map(len, messages)) + 48 * len(messages)
        await emitter.emit(records, times, nbytes=nbytes)

    def parse(self, messages: list[bytes]) -> tuple[list[int], list[dict[str, Any]]]:
        """Parse a batch of messages with one parser call per format present; order is kept."""
        now = time.time_ns()
        if not self.auto:
            times, records, failed = self.parser.parse_lines(messages, now)
        else:
            groups: dict[int, list[int]] = {}
            for i, m in enumerate(messages):
                groups.setdefault(self._classify(m), []).append(i)
            if len(groups) == 1:
                (kind,) = groups
                times, records, failed = self._auto_parser(kind).parse_lines(messages, now)
            else:
                times = [0] * len(messages)
                records = [{}] * len(messages)
                failed = 0
                for kind, idx in groups.items():
                    t, r, f = self._auto_parser(kind).parse_lines([messages[i] for i in idx], now)
                    failed += f
                    for j, i in enumerate(idx):
                        times[i] = t[j]
                        records[i] = r[j]
        if failed:
            self.metrics.inc("parse_errors", failed)
        if self.raw_key:
            key = self.raw_key
            for rec, m in zip(records, messages, strict=True):
                rec[key] = m.decode("utf-8", "replace")
        return times, records

    def _auto_parser(self, kind: int) -> Any:
        if kind == 2:
            return self.p5424
        if kind == 1 and self.p3164_local is not None:
            return self.p3164_local
        return self.p3164

    @staticmethod
    def _classify(m: bytes) -> int:
        """0: RFC 3164 with hostname, 1: RFC 3164 without hostname (local senders), 2: RFC 5424."""
        end = m.find(b">", 1, 6)
        if end < 0 or m[:1] != b"<":
            return 0
        if m[end + 1 : end + 3] == b"1 ":
            return 2
        # "<PRI>Mmm dd hh:mm:ss TOKEN ...": a hostname never ends with ':' nor holds '['.
        rest = m[end + 1 :]
        if len(rest) > 16 and rest[15:16] == b" ":
            sp = rest.find(b" ", 16)
            token = rest[16:sp] if sp > 0 else rest[16:]
            if token.endswith(b":") or b"[" in token:
                return 1
        return 0

    # ------------------------------------------------------------- streams

    def _ssl_context(self) -> ssl.SSLContext:
        c = self.config
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(c["tls.crt_file"], c["tls.key_file"], password=c.get("tls.key_passwd"))
        if c.get("tls.verify"):
            ctx.verify_mode = ssl.CERT_REQUIRED
            if c.get("tls.ca_file"):
                ctx.load_verify_locations(c["tls.ca_file"])
        return ctx

    def _unix_socket(self, kind: int) -> socket.socket:
        path = self.config["path"]
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise OSError(errno.EEXIST, f"{path} exists and is not a socket; refusing to remove it")
            os.unlink(path)  # stale socket of a previous run
        s = socket.socket(socket.AF_UNIX, kind)
        try:
            s.bind(path)
            os.chmod(path, self.unix_perm)
        except BaseException:
            s.close()
            raise
        return s

    def _set_rcvbuf(self, s: Any) -> None:
        size = self.config.get("receive_buffer_size")
        if size:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, int(size))
            except OSError as e:
                self.log.warning("cannot set Receive_Buffer_Size=%s: %s", size, e)

    async def _serve_stream(self, send: trio.MemorySendChannel[Any], *, task_status: Any) -> None:
        listeners: list[Any]
        if self.mode == "tcp":
            listeners = list(await trio.open_tcp_listeners(self.config["port"], host=self.config["listen"]))
            for lst in listeners:
                self._set_rcvbuf(lst.socket)
            self.port = listeners[0].socket.getsockname()[1]
        else:
            raw = self._unix_socket(socket.SOCK_STREAM)
            self._set_rcvbuf(raw)
            raw.listen(512)
            listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(raw))]
        if self.tls:
            ctx = self._ssl_context()
            listeners = [trio.SSLListener(lst, ctx, https_compatible=False) for lst in listeners]
        self.log.info("syslog %s listening on %s", self.mode,
                      self.config.get("path") if self.mode == "unix_tcp" else f"{self.config['listen']}:{self.port}")
        try:
            async with send:
                await trio.serve_listeners(
                    lambda stream: self._handle_stream(stream, send.clone()), listeners, task_status=task_status
                )
        finally:
            if self.mode == "unix_tcp":
                _unlink_quiet(self.config["path"])

    async def _handle_stream(self, stream: Any, send: trio.MemorySendChannel[Any]) -> None:
        peer = _peer_name(stream, self.mode, self.config.get("path"))
        framer = SyslogFramer(self.max_size, self.oversize, self.framing)
        self.connections += 1
        self.metrics.set("connections", self.connections)
        truncated = dropped = 0
        try:
            async with send, stream:
                while True:
                    try:
                        data = await stream.receive_some(self.chunk_size)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError) as e:
                        self.log.debug("syslog connection %s broke: %s", peer, e)
                        data = b""
                    msgs = framer.feed(data) if data else framer.close()
                    if framer.truncated != truncated or framer.dropped != dropped:
                        self._count_oversize(framer.truncated - truncated, framer.dropped - dropped, peer)
                        truncated, dropped = framer.truncated, framer.dropped
                    if msgs:
                        await send.send((msgs, peer))
                    if framer.error is not None:
                        self.metrics.inc("malformed_frames")
                        self.metrics.inc("errors")
                        self.log.warning("syslog connection %s closed: malformed frame (%s)", peer, framer.error)
                        return
                    if not data:
                        if framer.incomplete:
                            self.metrics.inc("incomplete_frames", framer.incomplete)
                        return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the emitter is gone (shutdown) or the peer vanished while closing
        finally:
            self.connections -= 1
            self.metrics.set("connections", self.connections)

    def _count_oversize(self, truncated: int, dropped: int, peer: str | None) -> None:
        if truncated:
            self.metrics.inc("truncated_records", truncated)
        if dropped:
            self.metrics.inc("dropped_records", dropped)
        self.log.warning("syslog %s: %d message(s) over Buffer_Max_Size=%d %s", peer, truncated + dropped,
                         self.max_size, "truncated" if truncated else "dropped")

    # ------------------------------------------------------------ datagrams

    async def _serve_dgram(self, send: trio.MemorySendChannel[Any], *, task_status: Any) -> None:
        if self.mode == "udp":
            host = self.config["listen"]
            infos = socket.getaddrinfo(host, self.config["port"], type=socket.SOCK_DGRAM)
            family, _, _, _, addr = infos[0]
            s = socket.socket(family, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(addr)
            self.port = s.getsockname()[1]
        else:
            s = self._unix_socket(socket.SOCK_DGRAM)
        self._set_rcvbuf(s)
        s.setblocking(False)
        inode = os.fstat(s.fileno()).st_ino if self.mode == "udp" else None
        self.log.info("syslog %s listening on %s", self.mode,
                      self.config.get("path") if self.mode == "unix_udp" else f"{self.config['listen']}:{self.port}")
        task_status.started()
        # Read one byte more than we accept to tell an oversize datagram from a full-size one.
        bufsize = self.max_size + 1
        prefix = "udp://" if self.mode == "udp" else "unix://"
        last_drop_check = 0.0
        kernel_drops = 0
        try:
            async with send:
                while True:
                    # Wake up at least every second to refresh the kernel drop count.
                    with trio.move_on_after(1.0):
                        await trio.lowlevel.wait_readable(s)
                    msgs: list[bytes] = []
                    srcs: dict[str | None, list[bytes]] = {}
                    truncated = dropped = 0
                    for _ in range(self.batch_size):
                        try:
                            data, addr = s.recvfrom(bufsize)
                        except (BlockingIOError, InterruptedError):
                            break
                        except OSError as e:  # e.g. ECONNREFUSED from an ICMP error: not fatal
                            self.log.debug("syslog recv: %s", e)
                            break
                        if len(data) > self.max_size:
                            if self.oversize == "truncate":
                                truncated += 1
                                data = data[: self.max_size]
                            else:
                                dropped += 1
                                continue
                        data = data.rstrip(b"\n\x00")
                        if not data:
                            continue
                        if self.source_key:
                            src = _addr_name(prefix, addr, self.config.get("path"))
                            srcs.setdefault(src, []).append(data)
                        else:
                            msgs.append(data)
                    if truncated or dropped:
                        self._count_oversize(truncated, dropped, prefix.rstrip(":/"))
                    if self.source_key:
                        for src, group in srcs.items():
                            await send.send((group, src))
                    elif msgs:
                        await send.send((msgs, None))
                    now = time.monotonic()
                    if inode is not None and now - last_drop_check >= 1.0:
                        last_drop_check = now
                        kernel_drops = self._check_kernel_drops(inode, kernel_drops)
        finally:
            if inode is not None:
                self._check_kernel_drops(inode, kernel_drops)
            s.close()
            if self.mode == "unix_udp":
                _unlink_quiet(self.config["path"])

    def _check_kernel_drops(self, inode: int, previous: int) -> int:
        drops = proc_udp_drops(inode)
        if drops is None:
            return previous
        self.metrics.set("udp_kernel_drops", drops)
        if drops > previous:
            self.metrics.inc("dropped_records", drops - previous)
            self.log.warning("syslog udp: the kernel dropped %d datagram(s) (receive buffer full); "
                             "raise Receive_Buffer_Size or Mem_Buf_Limit", drops - previous)
        return drops


def proc_udp_drops(inode: int) -> int | None:
    """Datagrams the kernel dropped on the UDP socket with this inode (/proc/net/udp[6] 'drops')."""
    needle = str(inode)
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(name) as fh:
                next(fh, None)
                for line in fh:
                    cols = line.split()
                    if len(cols) >= 13 and cols[9] == needle:
                        return int(cols[-1])
        except OSError:
            continue
    return None


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _addr_name(prefix: str, addr: Any, path: str | None) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = addr[0]
        return f"{prefix}[{host}]:{addr[1]}" if ":" in host else f"{prefix}{host}:{addr[1]}"
    return f"unix://{path}"


def _peer_name(stream: Any, mode: str, path: str | None) -> str:
    if mode == "unix_tcp":
        return f"unix://{path}"
    inner = getattr(stream, "transport_stream", stream)
    try:
        return _addr_name("tcp://", inner.socket.getpeername(), path)
    except (OSError, AttributeError):
        return "tcp://unknown"


PLUGIN = SyslogInput
