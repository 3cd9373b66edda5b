"""Fluent Bit regular expressions (Onigmo/Ruby syntax) translated for Python's ``re``.

Fluent Bit parsers files write named groups as ``(?<name>...)`` and use a few
Ruby escapes. Translating them lets a parsers file written for Fluent Bit load
unchanged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from ._pcre import Pcre2Error, Pcre2Search, onigmo_to_pcre2

__all__ = ["translate", "compile_onigmo", "compile_search"]

_log = logging.getLogger("logfwd.regex")
_PCRE2_WARNED: set[str] = set()

_NAMED = re.compile(r"\(\?<(?![=!])([A-Za-z_][A-Za-z0-9_]*)>")
_BACKREF = re.compile(r"\\k<([A-Za-z_][A-Za-z0-9_]*)>")


def translate(pattern: str) -> str:
    """Onigmo → Python: ``(?<n>`` → ``(?P<n>``, ``\\k<n>`` → ``(?P=n)``, ``\\h`` → hex digit,
    ``\\A``/``\\z`` anchors. Lookbehinds ``(?<=``/``(?<!`` are left alone."""
    out = []
    i = 0
    n = len(pattern)
    in_class = False  # inside [...]: \\h is the range itself, not a nested set
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            if nxt == "h":
                out.append("0-9a-fA-F" if in_class else "[0-9a-fA-F]")
            elif nxt == "H" and not in_class:
                out.append("[^0-9a-fA-F]")
            elif nxt == "z":
                out.append(r"\Z")
            elif nxt == "k":
                m = _BACKREF.match(pattern, i)
                if m:
                    out.append(f"(?P={m.group(1)})")
                    i = m.end()
                    continue
                out.append(pattern[i : i + 2])
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if c == "[" and not in_class:
            in_class = True
            j = i + 1 + (pattern.startswith("^", i + 1))
            j += pattern.startswith("]", j)  # a ] first in the set is a literal
            out.append(pattern[i:j])
            i = j
            continue
        if c == "]" and in_class:
            in_class = False
        if c == "(" and not in_class:
            m = _NAMED.match(pattern, i)
            if m:
                out.append(f"(?P<{m.group(1)}>")
                i = m.end()
                continue
        out.append(c)
        i += 1
    return "".join(out)


@lru_cache(maxsize=512)
def compile_onigmo(pattern: str, flags: int = 0) -> re.Pattern[str]:
    """Compile a Fluent Bit regex; raises ``re.error`` with Python's message."""
    return re.compile(translate(pattern), flags)


def compile_search(pattern: str, flags: int = 0) -> Callable[[str], Any]:
    """``search`` of a Fluent Bit regex for yes/no matching (grep rules, multiline rules).

    PCRE2 with its JIT (True on a match, None otherwise: no match object per value), or
    ``re``'s ``search`` (a match or None) when PCRE2 cannot compile the expression, with
    one warning per expression. Raises ``re.error`` when ``re`` rejects the expression.
    """
    rx = compile_onigmo(pattern, flags)
    try:
        return Pcre2Search(onigmo_to_pcre2(pattern), flags, rx.search).search  # type: ignore[no-any-return]
    except Pcre2Error as e:
        if pattern not in _PCRE2_WARNED:
            _PCRE2_WARNED.add(pattern)
            _log.warning("PCRE2 cannot compile the regex %r (%s); using Python's re (slower)", pattern, e)
        return rx.search
