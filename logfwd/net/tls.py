"""Fluent Bit's ``tls.*`` options, declared once, and the ``ssl.SSLContext`` they describe.

A plugin that connects (an output) or listens (a server input) adds ``TLS_OPTIONS`` (or
``tls_options(...)`` with its own defaults) to its options and calls ``tls_context`` in
``setup``: the certificate files are read there, so a missing or unreadable file is a
configuration error with the file's line, reported by ``--dry-run`` as well as at start,
instead of a failure on the first connection.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from typing import Any

from ..options import Option
from ..plugin import ConfigValueError

__all__ = ["TLS_OPTIONS", "tls_options", "tls_context", "server_name"]

_VERSIONS = {
    "tlsv1.2": ssl.TLSVersion.TLSv1_2,
    "tlsv1.3": ssl.TLSVersion.TLSv1_3,
}


def tls_options(*, verify_default: str = "on", server: bool = False) -> tuple[Option, ...]:
    """The ``tls.*`` option group; ``server`` words the help for a listener (client certificates)."""
    peer = "client certificates" if server else "the server certificate"
    return (
        Option("tls", "bool", "off", "listen with TLS" if server else "connect with TLS"),
        Option("tls.verify", "bool", verify_default,
               f"verify {peer} against tls.ca_file / tls.ca_path" + (" (and require one)" if server else "")),
        Option("tls.verify_hostname", "bool", "off",
               "also check that the server certificate names tls.vhost (or Host)" if not server
               else "accepted for Fluent Bit compatibility; client host names are not checked",
               unsupported=None if not server else "a listener does not check client host names"),
        Option("tls.ca_file", "str", None, "CA certificates (PEM) to verify the peer with"),
        Option("tls.ca_path", "str", None, "directory of CA certificates (hashed names, c_rehash)"),
        Option("tls.crt_file", "str", None, "this side's certificate (PEM)" + (" (required)" if server else "")),
        Option("tls.key_file", "str", None, "private key of tls.crt_file (PEM)"),
        Option("tls.key_passwd", "str", None, "password of tls.key_file"),
        Option("tls.vhost", "str", None, "host name sent in SNI and checked in the certificate (default: Host)",
               unsupported=None if not server else "a listener has no SNI host name to send"),
        Option("tls.min_version", "str", None, "lowest protocol version: TLSv1.2 or TLSv1.3",
               choices=("TLSv1.2", "TLSv1.3")),
        Option("tls.max_version", "str", None, "highest protocol version: TLSv1.2 or TLSv1.3",
               choices=("TLSv1.2", "TLSv1.3")),
        Option("tls.ciphers", "str", None, "OpenSSL cipher list for TLSv1.2 (e.g. HIGH:!aNULL)"),
        Option("tls.debug", "int", "1", "Fluent Bit's mbedTLS/OpenSSL debug level",
               unsupported="handshake failures are logged as errors; there are no debug levels"),
    )


TLS_OPTIONS = tls_options()


def _check_readable(key: str, path: str | None) -> None:
    """A file this process cannot read, named with the reason, before any connection needs it."""
    if not path or os.access(path, os.R_OK):
        return
    try:
        os.stat(path)
    except FileNotFoundError:
        raise ConfigValueError(key, f"{path} does not exist") from None
    except PermissionError:
        raise ConfigValueError(key, f"{path} cannot be reached: a directory on its path is not searchable "
                                    "by this user (permission denied)") from None
    raise ConfigValueError(key, f"{path} is not readable by this user (permission denied)")


def tls_context(config: Mapping[str, Any], *, server: bool = False) -> ssl.SSLContext | None:
    """The context for ``config``'s ``tls.*`` keys, or None when ``tls`` is off.

    Raises ``ConfigValueError`` naming the key whose file cannot be used, so the user
    sees ``key 'tls.crt_file': /etc/x.pem does not exist`` at load time.
    """
    if not config.get("tls"):
        return None
    for key in ("tls.ca_file", "tls.ca_path", "tls.crt_file", "tls.key_file"):
        _check_readable(key, config.get(key))
    if server:
        if not config.get("tls.crt_file") or not config.get("tls.key_file"):
            raise ConfigValueError("tls.crt_file", "a TLS listener needs tls.crt_file and tls.key_file")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    else:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    try:
        if config.get("tls.ca_file") or config.get("tls.ca_path"):
            ctx.load_verify_locations(cafile=config.get("tls.ca_file"), capath=config.get("tls.ca_path"))
        if config.get("tls.crt_file"):
            ctx.load_cert_chain(config["tls.crt_file"], config.get("tls.key_file"), password=config.get("tls.key_passwd"))
    except ssl.SSLError as e:
        key = "tls.crt_file" if "PEM" in str(e) or "key" in str(e).lower() else "tls.ca_file"
        raise ConfigValueError(key, f"cannot load TLS files: {e.reason or e}") from None
    except OSError as e:
        raise ConfigValueError("tls.crt_file", f"cannot load TLS files: {e.strerror or e}") from None
    _apply_versions(ctx, config)
    if server:
        ctx.verify_mode = ssl.CERT_REQUIRED if config.get("tls.verify") else ssl.CERT_NONE
    elif not config.get("tls.verify"):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.check_hostname = bool(config.get("tls.verify_hostname"))
    return ctx


def _apply_versions(ctx: ssl.SSLContext, config: Mapping[str, Any]) -> None:
    lo, hi = config.get("tls.min_version"), config.get("tls.max_version")
    if lo:
        ctx.minimum_version = _VERSIONS[str(lo).lower()]
    if hi:
        ctx.maximum_version = _VERSIONS[str(hi).lower()]
    if lo and hi and ctx.minimum_version > ctx.maximum_version:
        raise ConfigValueError("tls.min_version", f"tls.min_version {lo} is above tls.max_version {hi}")
    if config.get("tls.ciphers"):
        try:
            ctx.set_ciphers(str(config["tls.ciphers"]))
        except ssl.SSLError:
            raise ConfigValueError("tls.ciphers", f"OpenSSL knows no cipher in {config['tls.ciphers']!r}") from None


def server_name(config: Mapping[str, Any], host: str) -> str | None:
    """The SNI name for a connection to ``host``: ``tls.vhost`` when set (Fluent Bit's rule)."""
    return str(config.get("tls.vhost") or host) or None
