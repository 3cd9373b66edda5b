"""Fluent Bit regular expressions (Onigmo/Ruby syntax) translated for Python's ``re``.

Fluent Bit parsers files write named groups as ``(?<name>...)`` and use a few
Ruby escapes. Translating them lets a parsers file written for Fluent Bit load
unchanged.

Every regular expression a config holds goes through ``compile_fluent_regex``: a
parser's ``Regex``, a multiline rule, a grep ``Regex``/``Exclude``, ``Match_Regex``
and any option of type ``regex``. Each accepts Fluent Bit's ``/pattern/flags`` form
and has Ruby's anchors, so the same text means the same thing everywhere.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["translate", "compile_onigmo", "split_flags", "compile_fluent_regex"]

_NAMED = re.compile(r"\(\?<(?![=!])([A-Za-z_][A-Za-z0-9_]*)>")
_BACKREF = re.compile(r"\\k<([A-Za-z_][A-Za-z0-9_]*)>")


def translate(pattern: str) -> str:
    """Onigmo → Python: ``(?<n>`` → ``(?P<n>``, ``\\k<n>`` → ``(?P=n)``, ``\\h`` → hex digit,
    ``\\A``/``\\z`` anchors. Lookbehinds ``(?<=``/``(?<!`` are left alone."""
    out = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            if nxt == "h":
                out.append("[0-9a-fA-F]")
            elif nxt == "H":
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
        if c == "(":
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


# Ruby's option letters: ``m`` is Ruby's "dot matches newline" (Python's DOTALL), not MULTILINE.
_FLAGS = {"i": re.IGNORECASE, "m": re.DOTALL, "x": re.VERBOSE}


def split_flags(text: str) -> tuple[str, int]:
    """``/pattern/opts`` (Fluent Bit's form; opts among ``i``, ``m``, ``x``) → (pattern, re flags).

    Anything else (no leading slash, no closing slash, an unknown option letter) is a
    bare pattern, returned unchanged with no flags.
    """
    if len(text) >= 2 and text[0] == "/":
        end = text.rfind("/")
        opts = text[end + 1 :]
        if end > 0 and all(c in _FLAGS for c in opts):
            flags = 0
            for c in opts:
                flags |= _FLAGS[c]
            return text[1:end], flags
    return text, 0


def compile_fluent_regex(text: str) -> re.Pattern[str]:
    """A config's regular expression, ``/pattern/opts`` or bare, in Onigmo syntax.

    Anchors are Ruby's: ``^``/``$`` match at line boundaries, hence ``re.M``.
    Raises ``re.error`` with Python's message.
    """
    pattern, flags = split_flags(text)
    return compile_onigmo(pattern, re.MULTILINE | flags)
