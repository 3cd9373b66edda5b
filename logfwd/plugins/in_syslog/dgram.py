"""The datagram listeners (udp, unix_udp): one message per datagram, read in bursts.

The socket is read only when the emitter channel has room (backpressure): what
arrives meanwhile waits in the kernel's receive buffer, and what does not fit is
dropped by the kernel and counted (``drops``).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import trio

from .config import SyslogConfig
from .drops import KernelDrops
from .sockets import addr_name, set_rcvbuf, udp_socket, unix_socket, unlink_quiet

__all__ = ["DgramServer"]


class DgramServer:
    """Binds the datagram socket (``open``, before the input reports started), then reads it (``serve``)."""

    def __init__(self, cfg: SyslogConfig, metrics: Any, log: Any, count_oversize: Any) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.log = log
        self.count_oversize = count_oversize
        self.port: int | None = None

    def open(self) -> socket.socket:
        """The bound socket; StartError when it cannot be bound."""
        cfg = self.cfg
        if cfg.mode == "udp":
            s = udp_socket(cfg.listen, cfg.port)
            self.port = s.getsockname()[1]
        else:
            s = unix_socket(cfg.path or "", socket.SOCK_DGRAM, cfg.unix_perm, cfg.mode)
        set_rcvbuf(s, cfg.rcvbuf, self.log)
        s.setblocking(False)
        return s

    async def serve(self, s: socket.socket, send: trio.MemorySendChannel[Any]) -> None:
        """Read the socket from ``open()`` until cancelled; it is closed (and a Unix one unlinked) at the end."""
        cfg = self.cfg
        drops = KernelDrops(os.fstat(s.fileno()).st_ino, self.metrics, self.log) if cfg.mode == "udp" else None
        where = cfg.path if cfg.mode == "unix_udp" else f"{cfg.listen}:{self.port}"
        self.log.info("syslog %s listening on %s", cfg.mode, where)
        last_drop_check = 0.0
        try:
            async with send:
                while True:
                    # Wake up at least every second to refresh the kernel drop count.
                    with trio.move_on_after(1.0):
                        await trio.lowlevel.wait_readable(s)
                    await self._read_burst(s, send)
                    now = time.monotonic()
                    if drops is not None and now - last_drop_check >= 1.0:
                        last_drop_check = now
                        drops.check()
        finally:
            if drops is not None:
                drops.check()
            s.close()
            if cfg.mode == "unix_udp":
                unlink_quiet(cfg.path or "")

    async def _read_burst(self, s: socket.socket, send: trio.MemorySendChannel[Any]) -> None:
        """Up to Batch_Size datagrams that are waiting, sent on as one list (per source with Source_Address_Key)."""
        cfg = self.cfg
        bufsize = cfg.max_size + 1  # one byte more than we accept tells an oversize datagram from a full one
        prefix = "udp://" if cfg.mode == "udp" else "unix://"
        msgs: list[bytes] = []
        srcs: dict[str | None, list[bytes]] = {}
        truncated = dropped = 0
        for _ in range(cfg.batch_size):
            try:
                data, addr = s.recvfrom(bufsize)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:  # e.g. ECONNREFUSED from an ICMP error: not fatal
                self.log.debug("syslog recv: %s", e)
                break
            if len(data) > cfg.max_size:
                if cfg.oversize == "truncate":
                    truncated += 1
                    data = data[: cfg.max_size]
                else:
                    dropped += 1
                    continue
            data = data.rstrip(b"\n\x00")
            if not data:
                continue
            if cfg.source_key:
                srcs.setdefault(addr_name(prefix, addr, cfg.path), []).append(data)
            else:
                msgs.append(data)
        if truncated or dropped:
            self.count_oversize(truncated, dropped, prefix.rstrip(":/"))
        if cfg.source_key:
            for src, group in srcs.items():
                await send.send((group, src))
        elif msgs:
            await send.send((msgs, None))
