"""Numbered records as the real Fluent Bit generates them in the interop tests.

``dummy`` plus the Lua filter ``LUA`` numbers each record and gives record n the time
1700000000+n s + n*7919 ns, so every record and timestamp a test receives is known
(``fb_record``, ``fb_time``).
"""

from __future__ import annotations

from typing import Any

NS = 1_000_000_000
N = 2000

LUA = """
n = 0
function number(tag, ts, record)
  n = n + 1
  record["n"] = n
  record["nested"] = {a = n, s = "x" .. n}
  return 1, {sec = 1700000000 + n, nsec = (n * 7919) % 1000000000}, record
end
"""
DUMMY = '{"msg":"hello \\u00e9","f":1.5,"b":true,"list":["a","b"]}'


def fb_time(n: int) -> int:
    return (1_700_000_000 + n) * NS + (n * 7919) % NS


def fb_record(n: int) -> dict[str, Any]:
    return {"msg": "hello é", "f": 1.5, "b": True, "list": ["a", "b"], "n": n, "nested": {"a": n, "s": f"x{n}"}}
