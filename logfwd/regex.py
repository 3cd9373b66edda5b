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

import logging
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from ._pcre import Pcre2Error, Pcre2Search
from .onigmo import to_pcre2, to_python

__all__ = ["translate", "compile_onigmo", "split_flags", "compile_fluent_regex", "compile_search", "fluent_searcher"]

_log = logging.getLogger("logfwd.regex")
_PCRE2_WARNED: set[str] = set()

def translate(pattern: str) -> str:
    """Onigmo → Python ``re`` (``logfwd.onigmo.to_python``; kept under this name for callers)."""
    return to_python(pattern)


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


def compile_search(pattern: str, flags: int = 0) -> Callable[[str], Any]:
    """``search`` of a Fluent Bit regex for yes/no matching (grep rules, multiline rules).

    PCRE2 with its JIT (True on a match, None otherwise: no match object per value), or
    ``re``'s ``search`` (a match or None) when PCRE2 cannot compile the expression, with
    one warning per expression. Raises ``re.error`` when ``re`` rejects the expression.
    """
    rx = compile_onigmo(pattern, flags)
    try:
        return Pcre2Search(to_pcre2(pattern), flags, rx.search).search  # type: ignore[no-any-return]
    except Pcre2Error as e:
        if pattern not in _PCRE2_WARNED:
            _PCRE2_WARNED.add(pattern)
            _log.warning("PCRE2 cannot compile the regex %r (%s); using Python's re (slower)", pattern, e)
        return rx.search


def fluent_searcher(text: str) -> Callable[[str], Any]:
    """``search`` of a config's regex (``/pattern/opts`` or bare) for yes/no matching: PCRE2's JIT
    where it compiles (see ``compile_search``); raises ``re.error`` like ``compile_fluent_regex``."""
    pattern, flags = split_flags(text)
    return compile_search(pattern, re.MULTILINE | flags)
