"""Fluent Bit's regular expressions (Onigmo, Ruby syntax) for the two engines that run them here.

Every regex of a config (a parser's ``Regex``, multiline rules, grep rules, ``Match_Regex``,
``Tag_Regex``) is written for Onigmo. Python's ``re`` runs it where PCRE2 cannot, and PCRE2
with its JIT runs it on the hot path; each needs a few constructs spelled its own way. Both
translations walk the pattern with one tokenizer (``_tokens``: escapes, character classes,
group openers), so a construct is recognised once and only the spelling differs:

=================  =======================  ==================  ====================
Onigmo             meaning                  Python ``re``       PCRE2
=================  =======================  ==================  ====================
``(?<n>...)``      named group              ``(?P<n>...)``      same
``\\k<n>``          back-reference           ``(?P=n)``          same
``\\h`` / ``\\H``    hex digit / not one      ``[0-9a-fA-F]``     ``[0-9a-fA-F]``
``\\z``             end of string            ``\\Z``              same
``\\Z``             end, or before a final   ``(?=\\n?\\Z)``       same
                   newline
=================  =======================  ==================  ====================

Inside a character class ``\\h`` is the range ``0-9a-fA-F``; lookbehinds ``(?<=``/``(?<!``
are not named groups.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

__all__ = ["to_python", "to_pcre2"]

_NAMED = re.compile(r"\(\?<(?![=!])([A-Za-z_][A-Za-z0-9_]*)>")
_BACKREF = re.compile(r"\\k<([A-Za-z_][A-Za-z0-9_]*)>")

# (kind, text): "esc" an escape (text = the two characters, or \k<name> whole), "named"
# a named-group opener (text = the name), "class" the opening of a character class up to
# and including a leading literal ] ("[", "[^", "[]", "[^]"), "lit" anything else.
# The flag says whether the token is inside a character class.
Token = tuple[str, str, bool]


def _tokens(pattern: str) -> Iterator[Token]:
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            m = _BACKREF.match(pattern, i) if pattern[i + 1] == "k" and not in_class else None
            text = m.group(0) if m else pattern[i : i + 2]
            yield "esc", text, in_class
            i += len(text)
        elif c == "[" and not in_class:
            j = i + 1 + pattern.startswith("^", i + 1)
            j += pattern.startswith("]", j)  # a ] first in the set is a literal
            yield "class", pattern[i:j], False
            in_class = True
            i = j
        elif c == "(" and not in_class and (m := _NAMED.match(pattern, i)):
            yield "named", m.group(1), False
            i = m.end()
        else:
            if c == "]" and in_class:
                in_class = False
            yield "lit", c, in_class
            i += 1


def _hex(text: str, in_class: bool) -> str | None:
    """``\\h``/``\\H``, spelled the same for both engines (PCRE2's ``\\h`` is a horizontal blank)."""
    if text == "\\h":
        return "0-9a-fA-F" if in_class else "[0-9a-fA-F]"
    if text == "\\H" and not in_class:
        return "[^0-9a-fA-F]"
    return None


def _python_escape(text: str, in_class: bool) -> str:
    if text.startswith("\\k<"):
        return f"(?P={text[3:-1]})"
    if not in_class and text in ("\\z", "\\Z"):
        return r"\Z" if text == "\\z" else r"(?=\n?\Z)"
    return text


def _spell(pattern: str, python: bool) -> str:
    """One walk for both engines; ``python`` picks the ``re`` spellings of the table above."""
    out = []
    for kind, text, in_class in _tokens(pattern):
        if kind == "named":
            out.append(f"(?P<{text}>" if python else f"(?<{text}>")
        elif kind == "esc":
            hx = _hex(text, in_class)
            out.append(hx if hx is not None else _python_escape(text, in_class) if python else text)
        elif python and text == "^" and not in_class:
            # Onigmo's ^ (under Python's re.M) does not match at the very end after a final
            # newline: "0\n" has no empty last line for ^$ (its OP_BEGIN_LINE checks that).
            out.append(r"(?:\A|^(?!\Z))")
        else:
            out.append(text)
    return "".join(out)


def to_python(pattern: str) -> str:
    """The pattern for Python's ``re``."""
    return _spell(pattern, python=True)


def to_pcre2(pattern: str) -> str:
    """The pattern for PCRE2: only ``\\h``/``\\H`` differ; named groups, ``\\k<n>``, ``\\A``,
    ``\\z``, ``\\Z``, possessive and atomic groups mean the same in both."""
    return _spell(pattern, python=False)
