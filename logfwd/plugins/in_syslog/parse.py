"""Turning syslog messages into records: parser choice per message, raw copies, UTF-8 accounting.

``Parser auto`` (the default) classifies each message: ``<PRI>1 `` is RFC 5424,
anything else RFC 3164, with the hostname-less form local senders write to Unix
sockets read by ``syslog-rfc3164-local`` when that parser exists. A batch is
parsed with one parser call per format present and its order is kept.

Bytes that are not UTF-8 are replaced (U+FFFD) when decoded; the messages that
held any are counted in ``invalid_utf8`` so a sender in the wrong encoding shows.
"""

from __future__ import annotations

import time
from typing import Any

from logfwd.plugin import ConfigValueError

__all__ = ["SyslogParsing", "classify", "RFC5424", "RFC3164", "RFC3164_LOCAL"]

RFC5424 = "syslog-rfc5424"
RFC3164 = "syslog-rfc3164"
RFC3164_LOCAL = "syslog-rfc3164-local"


def classify(m: bytes) -> int:
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


def count_invalid_utf8(messages: list[bytes]) -> int:
    """Messages holding bytes that are not UTF-8 (ASCII, the common case, is checked in C)."""
    bad = 0
    for m in messages:
        if not m.isascii():
            try:
                m.decode("utf-8")
            except UnicodeDecodeError:
                bad += 1
    return bad


class SyslogParsing:
    """The configured parser (or the auto choice) applied to batches of messages."""

    def __init__(self, registry: Any, name: str | None, raw_key: str | None, metrics: Any) -> None:
        if registry is None:
            raise ConfigValueError("parser", "no parser registry available (parsers.conf not loaded)")
        self.raw_key = raw_key
        self.metrics = metrics

        def get(n: str) -> Any:
            try:
                return registry.get(n)
            except KeyError:
                raise ConfigValueError("parser", f"unknown parser {n!r}; define it in a parsers file") from None

        self.auto = name is None or name.strip().lower() == "auto"
        self.parser: Any = None
        if self.auto:
            self.p5424 = get(RFC5424)
            self.p3164 = get(RFC3164)
            self.p3164_local = registry.get(RFC3164_LOCAL) if RFC3164_LOCAL in set(registry.names()) else None
        else:
            self.parser = get(name)  # type: ignore[arg-type]

    def parse(self, messages: list[bytes]) -> tuple[list[int], list[dict[str, Any]]]:
        """Parse a batch of messages with one parser call per format present; order is kept."""
        now = time.time_ns()
        if not self.auto:
            times, records, failed = self.parser.parse_lines(messages, now)
        else:
            times, records, failed = self._parse_auto(messages, now)
        if failed:
            self.metrics.inc("parse_errors", failed)
        bad = count_invalid_utf8(messages)
        if bad:
            self.metrics.inc("invalid_utf8", bad)
        if self.raw_key:
            key = self.raw_key
            for rec, m in zip(records, messages, strict=True):
                rec[key] = m.decode("utf-8", "replace")
        return times, records

    def _parse_auto(self, messages: list[bytes], now: int) -> tuple[list[int], list[dict[str, Any]], int]:
        groups: dict[int, list[int]] = {}
        for i, m in enumerate(messages):
            groups.setdefault(classify(m), []).append(i)
        if len(groups) == 1:
            (kind,) = groups
            return self._auto_parser(kind).parse_lines(messages, now)  # type: ignore[no-any-return]
        times = [0] * len(messages)
        records: list[dict[str, Any]] = [{}] * len(messages)
        failed = 0
        for kind, idx in groups.items():
            t, r, f = self._auto_parser(kind).parse_lines([messages[i] for i in idx], now)
            failed += f
            for j, i in enumerate(idx):
                times[i] = t[j]
                records[i] = r[j]
        return times, records, failed

    def _auto_parser(self, kind: int) -> Any:
        if kind == 2:
            return self.p5424
        if kind == 1 and self.p3164_local is not None:
            return self.p3164_local
        return self.p3164
