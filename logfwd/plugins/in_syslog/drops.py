"""Datagrams the kernel dropped on our UDP socket (receive buffer full), from ``/proc/net/udp``.

While the pipeline applies backpressure the socket is not read and the kernel
drops what does not fit in ``Receive_Buffer_Size``; nothing in userspace sees
those datagrams, so they are counted from the socket's ``drops`` column.
"""

from __future__ import annotations

from typing import Any

__all__ = ["proc_udp_drops", "KernelDrops"]


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


class KernelDrops:
    """Turns the socket's cumulative drop count into the ``udp_kernel_drops`` gauge and ``dropped_records``."""

    def __init__(self, inode: int, metrics: Any, log: Any) -> None:
        self.inode = inode
        self.metrics = metrics
        self.log = log
        self.seen = 0

    def check(self) -> None:
        drops = proc_udp_drops(self.inode)
        if drops is None:
            return
        self.metrics.set("udp_kernel_drops", drops)
        if drops > self.seen:
            self.metrics.inc("dropped_records", drops - self.seen)
            self.log.warning("syslog udp: the kernel dropped %d datagram(s) (receive buffer full); "
                             "raise Receive_Buffer_Size or Mem_Buf_Limit", drops - self.seen)
        self.seen = max(self.seen, drops)
