"""syslog input: UDP, TCP, unix sockets, TLS. plugin (listeners), framing (RFC 6587 sans-I/O framer)."""

from .plugin import SyslogInput as PLUGIN

__all__ = ["PLUGIN"]
