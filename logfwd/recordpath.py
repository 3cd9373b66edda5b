"""Fluent Bit's record accessor: ``$log``, ``$kubernetes['labels']['app']``, ``$items[0]``.

Filters (grep, modify conditions) and outputs (index names, message keys) name
fields with this syntax; a Fluent Bit config must keep working, so the grammar
is the same: an optional ``$``, a top-level key name, then any number of
``['key']`` / ``["key"]`` / ``[N]`` subscripts. A name without ``$`` is
accepted too (grep and modify prepend the ``$`` themselves).

An expression is compiled once (``compile_path``, cached) into a small object
whose ``get`` is a dict lookup for the common top-level case, so it is cheap to
call per record. A missing key, a subscript into a non-container or an index
out of range is simply "not found" (Fluent Bit omits the operation), never an
exception.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

__all__ = ["RecordPath", "compile_path", "MISSING", "RecordPathError"]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


class RecordPathError(ValueError):
    """An accessor that does not parse; the message shows where."""


_SUBSCRIPT = re.compile(r"""\[\s*(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)"|(-?\d+))\s*\]""")


def _parse(expr: str) -> tuple[str | int, ...]:
    text = expr.strip()
    if not text:
        raise RecordPathError("empty record accessor")
    dollar = text.startswith("$")
    body = text[1:] if dollar else text
    bracket = body.find("[")
    name = body if bracket < 0 else body[:bracket]
    if not name:
        raise RecordPathError(f"record accessor {expr!r} has no key name after '$'")
    path: list[str | int] = [name]
    pos = len(name)
    while pos < len(body):
        m = _SUBSCRIPT.match(body, pos)
        if m is None:
            if not dollar:
                # A plain key that merely contains '[' (e.g. "a[b"): a literal key name.
                return (body,)
            raise RecordPathError(
                f"record accessor {expr!r}: expected ['key'] or [index] at position {pos + 1}"
            )
        if m.group(3) is not None:
            path.append(int(m.group(3)))
        else:
            raw = m.group(1) if m.group(1) is not None else m.group(2)
            path.append(re.sub(r"\\(.)", r"\1", raw))
        pos = m.end()
    return tuple(path)


class RecordPath:
    """A compiled accessor: ``get``, ``exists``, ``set`` and ``delete`` on one record."""

    __slots__ = ("expr", "path", "key", "nested")

    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.path = _parse(expr)
        self.key: str = str(self.path[0])
        self.nested = len(self.path) > 1

    def __repr__(self) -> str:
        return f"RecordPath({self.expr!r})"

    def get(self, record: dict[str, Any], default: Any = MISSING) -> Any:
        """The value at the path, or ``default`` (``MISSING``) when any step is absent."""
        value = record.get(self.key, MISSING)
        if not self.nested or value is MISSING:
            return default if value is MISSING else value
        for step in self.path[1:]:
            if isinstance(step, int):
                if isinstance(value, list) and -len(value) <= step < len(value):
                    value = value[step]
                else:
                    return default
            elif isinstance(value, dict):
                value = value.get(step, MISSING)
                if value is MISSING:
                    return default
            else:
                return default
        return value

    def exists(self, record: dict[str, Any]) -> bool:
        return self.get(record) is not MISSING

    def _parent(self, record: dict[str, Any], create: bool) -> Any:
        """The container holding the last step (creating intermediate maps if asked)."""
        node: Any = record
        for step in self.path[:-1]:
            if isinstance(step, int):
                if isinstance(node, list) and -len(node) <= step < len(node):
                    node = node[step]
                else:
                    return None
            elif isinstance(node, dict):
                nxt = node.get(step, MISSING)
                if nxt is MISSING or (create and not isinstance(nxt, (dict, list))):
                    if not create:
                        return None
                    nxt = {}
                    node[step] = nxt
                node = nxt
            else:
                return None
        return node

    def set(self, record: dict[str, Any], value: Any, create: bool = True) -> bool:
        """Store ``value`` at the path; intermediate maps are created when ``create``.

        Returns False when the path runs through a non-container (nothing changes).
        """
        if not self.nested:
            record[self.key] = value
            return True
        parent = self._parent(record, create)
        last = self.path[-1]
        if isinstance(last, int):
            if isinstance(parent, list) and -len(parent) <= last < len(parent):
                parent[last] = value
                return True
            return False
        if isinstance(parent, dict):
            parent[last] = value
            return True
        return False

    def delete(self, record: dict[str, Any]) -> bool:
        """Remove the value at the path; True if something was removed."""
        if not self.nested:
            return record.pop(self.key, MISSING) is not MISSING
        parent = self._parent(record, False)
        last = self.path[-1]
        if isinstance(last, int):
            if isinstance(parent, list) and -len(parent) <= last < len(parent):
                del parent[last]
                return True
            return False
        if isinstance(parent, dict) and last in parent:
            del parent[last]
            return True
        return False


@lru_cache(maxsize=1024)
def compile_path(expr: str) -> RecordPath:
    """Compile (and cache) an accessor; raises ``RecordPathError`` with a readable message."""
    return RecordPath(expr)
