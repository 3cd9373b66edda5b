"""Opening the syslog input's sockets, with one-line errors, and naming peers.

A bind failure (port in use, no permission, a path that is not a socket) is a
``StartError`` such as ``cannot listen on 127.0.0.1:5514/tcp: address already in
use``, raised before the input reports itself started.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from typing import Any

from logfwd.plugin import StartError

__all__ = ["bind_error", "unix_socket", "udp_socket", "set_rcvbuf", "unlink_quiet", "addr_name", "peer_name"]


def bind_error(where: str, proto: str, e: OSError) -> StartError:
    """``cannot listen on ADDR/PROTO: reason`` from an OSError."""
    why = (e.strerror or str(e)).lower()
    return StartError(f"cannot listen on {where}/{proto}: {why}")


def unix_socket(path: str, kind: int, perm: int, proto: str) -> socket.socket:
    """A Unix socket bound at ``path`` (a stale socket file of a previous run is removed)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise bind_error(path, proto, e) from None
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise bind_error(path, proto, OSError(errno.EEXIST, "exists and is not a socket; refusing to remove it"))
        try:
            os.unlink(path)  # stale socket of a previous run
        except OSError as e:
            raise bind_error(path, proto, e) from None
    s = socket.socket(socket.AF_UNIX, kind)
    try:
        s.bind(path)
        os.chmod(path, perm)
    except OSError as e:
        s.close()
        raise bind_error(path, proto, e) from None
    return s


def udp_socket(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        family, _, _, _, addr = infos[0]
        s = socket.socket(family, socket.SOCK_DGRAM)
    except OSError as e:
        raise bind_error(f"{host}:{port}", "udp", e) from None
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(addr)
    except OSError as e:
        s.close()
        raise bind_error(f"{host}:{port}", "udp", e) from None
    return s


def set_rcvbuf(s: Any, size: int | None, log: Any) -> None:
    if size:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, int(size))
        except OSError as e:
            log.warning("cannot set Receive_Buffer_Size=%s: %s", size, e)


def unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def addr_name(prefix: str, addr: Any, path: str | None) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = addr[0]
        return f"{prefix}[{host}]:{addr[1]}" if ":" in host else f"{prefix}{host}:{addr[1]}"
    return f"unix://{path}"


def peer_name(stream: Any, mode: str, path: str | None) -> str:
    if mode == "unix_tcp":
        return f"unix://{path}"
    inner = getattr(stream, "transport_stream", stream)
    try:
        return addr_name("tcp://", inner.socket.getpeername(), path)
    except (OSError, AttributeError):
        return "tcp://unknown"
