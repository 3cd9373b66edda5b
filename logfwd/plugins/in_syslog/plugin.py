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

Stream peers that hold connections open, flood them or exhaust descriptors are
contained by ``Max_Connections``, ``net.io_timeout`` and bounded per-connection
buffers (see ``stream``). Bytes that are not UTF-8 are replaced and the
messages holding them counted (``invalid_utf8``).

Parts: ``config`` (options, settings), ``stream`` (tcp/TLS/unix_tcp listeners),
``dgram`` (udp/unix_udp), ``framing`` (RFC 6587), ``parse`` (parser choice),
``drops`` (kernel drop counting), ``sockets`` (binding, peer names).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import trio

from logfwd.plugin import Emitter, Input

from .config import OPTIONS, SyslogConfig, load_config
from .dgram import DgramServer
from .drops import proc_udp_drops
from .parse import SyslogParsing
from .stream import StreamServer

__all__ = ["SyslogInput", "PLUGIN", "proc_udp_drops"]


class SyslogInput(Input):
    name = "syslog"
    description = "Syslog messages (RFC 3164 / 5424) over UDP, TCP, TLS or Unix sockets"
    options = OPTIONS

    def setup(self) -> None:
        self.cfg: SyslogConfig = load_config(self.settings, self.config)
        self.parsing = SyslogParsing(self.ctx.parsers, self.settings.parser, self.cfg.raw_key, self.metrics)
        self._server: StreamServer | DgramServer | None = None

    @property
    def port(self) -> int | None:
        """The bound port (tcp/udp), known once listening."""
        return self._server.port if self._server is not None else None

    @property
    def connections(self) -> int:
        """Stream connections open now."""
        return self._server.connections if isinstance(self._server, StreamServer) else 0

    def parse(self, messages: list[bytes]) -> tuple[list[int], list[dict[str, Any]]]:
        return self.parsing.parse(messages)

    # ----------------------------------------------------------------- run

    async def run(self, emitter: Emitter, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind every socket (StartError if one cannot be), report started, then read until cancelled."""
        send, recv = trio.open_memory_channel[tuple[list[bytes], str | None]](64)
        if self.cfg.mode in ("udp", "unix_udp"):
            dgram = self._server = DgramServer(self.cfg, self.metrics, self.log, self._count_oversize)
            sock = dgram.open()
            serve: Any = partial(dgram.serve, sock, send)
        else:
            stream = self._server = StreamServer(self.cfg, self.metrics, self.log, self._count_oversize)
            listeners = await stream.open()
            serve = partial(stream.serve, listeners, send)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._emit_loop, emitter, recv)
            nursery.start_soon(serve)
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
                deadline = trio.current_time() + self.cfg.batch_wait
                closed = False
                while count < self.cfg.batch_size:
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
        source_key = self.cfg.source_key
        messages: list[bytes] = []
        sources: list[str | None] = []
        for msgs, src in items:
            messages.extend(msgs)
            if source_key:
                sources.extend([src] * len(msgs))
        times, records = self.parsing.parse(messages)
        if source_key:
            for rec, src in zip(records, sources, strict=True):
                if src is not None:
                    rec[source_key] = src
        nbytes = sum(map(len, messages)) + 48 * len(messages)
        await emitter.emit(records, times, nbytes=nbytes)

    def _count_oversize(self, truncated: int, dropped: int, peer: str | None) -> None:
        if truncated:
            self.metrics.inc("truncated_records", truncated)
        if dropped:
            self.metrics.inc("dropped_records", dropped)
        self.log.warning("syslog %s: %d message(s) over Buffer_Max_Size=%d %s", peer, truncated + dropped,
                         self.cfg.max_size, "truncated" if truncated else "dropped")


PLUGIN = SyslogInput
