"""Fluent Bit's upstream file: the servers a ``forward`` output may send to.

The format (Fluent Bit's "Upstream Servers")::

    [UPSTREAM]
        name  forward-balancing

    [NODE]
        name  node-1
        host  127.0.0.1
        port  43000
        shared_key secret     # any output option may be overridden per node (tls, tls.verify, ...)

Keys are case-insensitive; ``#`` starts a comment line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Node", "UpstreamError", "read_upstream", "parse_upstream"]


class UpstreamError(ValueError):
    """The upstream file is unusable; the message names the file and line."""


@dataclass
class Node:
    name: str
    host: str
    port: int
    options: dict[str, str] = field(default_factory=dict)  # every key of the [NODE] section, lower-case


def read_upstream(path: str) -> tuple[str, list[Node]]:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as e:
        raise UpstreamError(f"cannot read upstream file {path}: {e.strerror or e}") from None
    return parse_upstream(text, path)


def parse_upstream(text: str, path: str = "<upstream>") -> tuple[str, list[Node]]:
    """The upstream's name and its nodes, in file order."""
    sections: list[tuple[str, int, dict[str, str]]] = []
    lines: dict[tuple[int, str], int] = {}  # (section index, key) -> line, for messages
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            sections.append((line[1:-1].strip().lower(), lineno, {}))
            continue
        if not sections:
            raise UpstreamError(f"{path}:{lineno}: an entry before any [UPSTREAM] or [NODE] section")
        key, _, value = line.partition(" ")
        sections[-1][2][key.strip().lower()] = value.strip()
        lines[(len(sections) - 1, key.strip().lower())] = lineno
    name = ""
    nodes: list[Node] = []
    for i, (kind, lineno, kv) in enumerate(sections):
        if kind == "upstream":
            name = kv.get("name", "")
        elif kind == "node":
            nodes.append(_node(kv, path, lines.get((i, "port"), lineno), len(nodes)))
        else:
            raise UpstreamError(f"{path}:{lineno}: unknown section [{kind.upper()}] (expected UPSTREAM or NODE)")
    if not nodes:
        raise UpstreamError(f"{path}: no [NODE] section")
    return name, nodes


def _node(kv: dict[str, str], path: str, lineno: int, index: int) -> Node:
    host = kv.get("host", "127.0.0.1")
    try:
        port = int(kv.get("port", "24224"))
    except ValueError:
        raise UpstreamError(f"{path}:{lineno}: [NODE] port must be a number, got {kv['port']!r}") from None
    if not 0 < port < 65536:
        raise UpstreamError(f"{path}:{lineno}: [NODE] port {port} is out of range")
    return Node(kv.get("name", f"node-{index}"), host, port, kv)
