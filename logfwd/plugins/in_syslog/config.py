"""The syslog input's options and the validated settings its listeners run with."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from logfwd.net.tls import tls_context, tls_options
from logfwd.options import PORT, Option
from logfwd.plugin import ConfigValueError

from .framing import FRAMINGS

__all__ = ["OPTIONS", "SyslogConfig", "load_config", "STREAM_MODES", "UNIX_MODES"]

STREAM_MODES = ("tcp", "unix_tcp")
UNIX_MODES = ("unix_udp", "unix_tcp")

OPTIONS = (
    Option("Mode", "str", "unix_udp", "transport: udp, tcp, unix_udp or unix_tcp",
           choices=("udp", "tcp", "unix_udp", "unix_tcp")),
    Option("Listen", "str", "0.0.0.0", "address to bind in tcp/udp mode"),
    Option("Port", "int", "5140", "port to listen on in tcp/udp mode", **PORT),
    Option("Path", "str", None, "Unix socket file in unix_tcp/unix_udp mode (a stale file is removed)"),
    Option("Unix_Perm", "str", "0644", "permissions of the Unix socket file (octal)"),
    Option("Parser", "str", None,
           "parser name; unset or 'auto' detects RFC 5424 vs RFC 3164 per message"),
    Option("Buffer_Chunk_Size", "size", "32000", "bytes read from a connection at a time"),
    Option("Buffer_Max_Size", "size", None,
           "largest message accepted (defaults to Buffer_Chunk_Size); see Oversize. Also what one "
           "connection may hold of an unfinished message"),
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
    Option("Max_Connections", "int", "1024",
           "stream connections held at once (tcp, unix_tcp); a new one beyond it closes the longest idle one",
           minimum=1),
    Option("net.io_timeout", "time", "300",
           "close a stream connection that sent nothing for this long (0: never; Fluent Bit's default is 0)",
           aliases=("Idle_Timeout",)),
    *tls_options(verify_default="off", server=True),
)


@dataclass(frozen=True)
class SyslogConfig:
    mode: str
    listen: str
    port: int
    path: str | None
    unix_perm: int
    chunk_size: int
    max_size: int
    rcvbuf: int | None
    framing: str
    oversize: str
    batch_size: int
    batch_wait: float
    source_key: str | None
    raw_key: str | None
    max_connections: int
    idle_timeout: float  # 0: never
    tls: ssl.SSLContext | None

    @property
    def where(self) -> str:
        """The address in messages: ``127.0.0.1:5514`` or the socket path."""
        return str(self.path) if self.mode in UNIX_MODES else f"{self.listen}:{self.port}"


def load_config(s: Any, config: dict[str, Any]) -> SyslogConfig:
    """Validate typed settings ``s`` (``config``: the same values by key, for the TLS group)."""
    mode = s.mode
    if mode in UNIX_MODES and not s.path:
        raise ConfigValueError("path", f"Mode {mode} needs Path, the Unix socket file to create")
    try:
        unix_perm = int(str(s.unix_perm or "0644"), 8)
    except ValueError:
        raise ConfigValueError("unix_perm", f"expected an octal mode such as 0644, got {s.unix_perm!r}") from None
    if s.tls and mode not in STREAM_MODES:
        raise ConfigValueError("tls", "TLS needs a stream transport: Mode tcp (or unix_tcp)")
    chunk = max(1024, int(s.buffer_chunk_size or 32000))
    idle = s.net_io_timeout
    return SyslogConfig(
        mode=mode,
        listen=s.listen or "0.0.0.0",
        port=int(s.port if s.port is not None else 5140),
        path=s.path,
        unix_perm=unix_perm,
        chunk_size=chunk,
        max_size=int(s.buffer_max_size or chunk),
        rcvbuf=s.receive_buffer_size,
        framing=s.format or "auto",
        oversize=s.oversize or "truncate",
        batch_size=int(s.batch_size or 1000),
        batch_wait=float(s.batch_wait if s.batch_wait is not None else 0.05),
        source_key=s.source_address_key,
        raw_key=s.raw_message_key,
        max_connections=int(s.max_connections or 1024),
        idle_timeout=float(idle) if idle is not None else 300.0,
        tls=tls_context(config, server=True),
    )
