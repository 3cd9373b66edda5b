"""Fluent Bit's classic ``.conf`` format, read with Fluent Bit's rules.

The rules (from Fluent Bit's reader, so that its configs load unchanged and
its mistakes are caught the same way): a section header ``[NAME]`` starts at
column 0; entries are indented, and the first indented line of a file fixes
the indentation every later entry of that file must use (tabs and spaces are
not interchangeable; exactly twice the indentation is accepted, as Fluent Bit
does for its group lines); the key ends at the first blank, the value is the
rest with surrounding blanks trimmed; ``#`` starts a comment line; ``@INCLUDE``
and ``@SET`` start at column 0.

Departures, all on the lenient side: comment and blank lines are not held to
the indentation rule, a glob include that matches nothing is a warning rather
than a fatal error, and @INCLUDE paths may use ``${VARS}``.
"""

from __future__ import annotations

import os
import re

from ..options import closest
from ..regex import compile_fluent_regex
from .include import ReadContext, resolve_include
from .model import ConfigIssue, Document, RawEntry, RawSection
from .variables import interpolate

__all__ = ["read_classic_text", "parse_rule", "check_rule_regex", "SECTION_KINDS"]

# Section name (lower case) -> kind in the model.
SECTION_KINDS = {
    "service": "service",
    "input": "input",
    "filter": "filter",
    "output": "output",
    "parser": "parser",
    "multiline_parser": "multiline_parser",
}
# Sections Fluent Bit has and logfwd does not: a clear "not supported" instead of "unknown".
UNSUPPORTED_SECTIONS = {
    "plugins": "external Fluent Bit plugins (.so) are not supported; logfwd plugins are Python packages "
    "registered in the 'logfwd.plugins' entry-point group",
    "upstream": "[UPSTREAM] (load-balanced upstream servers) is not supported",
    "node": "[NODE] (load-balanced upstream servers) is not supported",
    "custom": "[CUSTOM] plugins are not supported",
    "stream_task": "the stream processor ([STREAM_TASK]) is not supported",
}

_SPLIT = re.compile(r"[ \t]+")
_SET = re.compile(r"^\s*([^=\s]+)\s*=\s*(.*?)\s*$")


def _describe(ws: str) -> str:
    tabs, spaces = ws.count("\t"), ws.count(" ")
    parts = []
    if spaces:
        parts.append(f"{spaces} space{'s' if spaces != 1 else ''}")
    if tabs:
        parts.append(f"{tabs} tab{'s' if tabs != 1 else ''}")
    return " and ".join(parts) or "nothing"


def _tokens(text: str) -> list[str] | None:
    """Split a rule value into quoted or bare tokens; ``\\"`` inside quotes is a quote.

    Backslashes are otherwise kept as they are: they belong to the regex.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t":
            i += 1
            continue
        if c in "\"'":
            j = i + 1
            buf = []
            while j < n and text[j] != c:
                if text[j] == "\\" and j + 1 < n and text[j + 1] == c:
                    buf.append(c)
                    j += 2
                    continue
                buf.append(text[j])
                j += 1
            if j >= n:
                return None  # unterminated quote
            out.append("".join(buf))
            i = j + 1
        else:
            j = i
            while j < n and text[j] not in " \t":
                j += 1
            out.append(text[i:j])
            i = j
    return out




def check_rule_regex(regex: str) -> str | None:
    """Why a rule's regex does not compile, or None.

    Fluent Bit writes rule regexes between slashes with optional flags
    (``/^\\s+at/``, ``/error/i``); the tuple keeps the text as written and the
    multiline parser interprets it, this only checks it early so that the
    error names the rule's own line.
    """
    try:
        compile_fluent_regex(regex)
    except Exception as e:  # re.error, or anything odd the translator raises
        return f"invalid regular expression {regex!r} in rule: {e}"
    return None


def parse_rule(value: str) -> tuple[tuple[str, str, str] | None, str | None]:
    """``"state" "/regex/" "next"`` → ((state, regex, next), None), or (None, error message)."""
    toks = _tokens(value)
    if toks is None:
        return None, "unterminated quote in rule"
    if len(toks) != 3:
        return None, (
            f"a rule needs 3 quoted parts, got {len(toks)}: "
            'expected rule "state" "/regex/" "next_state"'
        )
    state, regex, nxt = toks
    err = check_rule_regex(regex)
    if err:
        return None, err
    return (state, regex, nxt), None


def read_classic_text(text: str, path: str, doc: Document, ctx: ReadContext) -> None:
    """Read one classic-format file into ``doc`` (sections appended in file order)."""

    def issue(line: int, msg: str, key: str | None = None, section: str = "", suggestion: str | None = None) -> None:
        doc.issues.append(ConfigIssue(path, line, section, key, msg, suggestion))

    indent: str | None = None
    current: RawSection | None = None
    skipping = False  # inside an unknown/unsupported section: its entries are not reported again

    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.rstrip()
        body = line.lstrip(" \t")
        if not body or body.startswith("#"):
            continue

        # ---- commands
        if body.startswith("@"):
            word = _SPLIT.split(body, maxsplit=1)
            cmd = word[0].upper()
            arg = word[1].strip() if len(word) > 1 else ""
            if cmd not in ("@INCLUDE", "@SET"):
                issue(lineno, f"unknown command {word[0]!r} (commands are @INCLUDE and @SET)", key=word[0],
                      suggestion=closest(cmd, ["@INCLUDE", "@SET"]))
                continue
            if line[0] != "@":
                issue(lineno, f"{cmd} must start at the beginning of the line, not inside a section", key=cmd)
                continue
            if not arg:
                issue(lineno, f"{cmd} needs an argument", key=cmd)
                continue
            if cmd == "@SET":
                m = _SET.match(arg)
                if not m:
                    issue(lineno, f"@SET needs KEY=VALUE, got {arg!r}", key="@SET")
                    continue
                val, _ = interpolate(m.group(2), doc.variables, ctx.env)
                doc.variables[m.group(1)] = val
                continue
            _include(arg, path, lineno, doc, ctx)
            continue

        # ---- section header
        if line[0] == "[":
            end = line.find("]")
            if end < 0:
                issue(lineno, f"bad section header {line!r}: missing ']'")
                current, skipping = None, True
                continue
            name = line[1:end].strip()
            lname = name.lower()
            kind = SECTION_KINDS.get(lname)
            current, skipping = None, True
            if kind is None:
                if lname in UNSUPPORTED_SECTIONS:
                    issue(lineno, UNSUPPORTED_SECTIONS[lname], section=f"[{name}]")
                else:
                    hint = closest(lname, SECTION_KINDS)
                    issue(
                        lineno,
                        f"unknown section [{name}] (sections are SERVICE, INPUT, FILTER, OUTPUT, "
                        "PARSER, MULTILINE_PARSER)",
                        section=f"[{name}]",
                        suggestion=hint.upper() if hint else None,
                    )
                continue
            if ctx.allowed is not None and kind not in ctx.allowed:
                issue(lineno, "only [PARSER] and [MULTILINE_PARSER] sections are allowed in a parsers file",
                      section=f"[{name}]")
                continue
            current, skipping = RawSection(kind, path, lineno), False
            doc.sections.append(current)
            continue

        # ---- entry
        parts = _SPLIT.split(body, maxsplit=1)
        key = parts[0]
        value = parts[1].strip() if len(parts) > 1 else ""
        label = current.label() if current else ""
        ws = line[: len(line) - len(body)]
        if not ws:
            issue(lineno, f"entry {key!r} must be indented (Fluent Bit's classic format indents every "
                  "key under its [SECTION] header)", key=key, section=label)
        elif indent is None:
            indent = ws
        elif ws != indent and ws != indent * 2:
            if ws.startswith(indent):
                msg = "extra indentation level found"
            elif indent.startswith(ws):
                msg = "indentation level is too low"
            else:
                msg = "inconsistent use of tabs and spaces"
            issue(lineno, f"invalid indentation of {key!r}: {msg} (this file indents entries with "
                  f"{_describe(indent)}, this line with {_describe(ws)})", key=key, section=label)
        if current is None:
            if not skipping:
                issue(lineno, f"entry {key!r} is outside of any [SECTION]", key=key)
            continue
        if not value:
            issue(lineno, f"key {key!r} has an empty value", key=key, section=label)
            continue
        entry = RawEntry(key, value, lineno)
        if current.kind == "multiline_parser" and key.lower() == "rule":
            rule, err = parse_rule(value)
            if err:
                issue(lineno, err, key=key, section=label)
                continue
            entry.rule = rule
        current.entries.append(entry)


def _include(arg: str, path: str, lineno: int, doc: Document, ctx: ReadContext) -> None:
    pattern, unset = interpolate(arg, doc.variables, ctx.env)
    if unset:
        doc.warnings.append(f"{path}:{lineno}: @INCLUDE: variable(s) {', '.join(unset)} not set")
    if not pattern.strip():
        doc.issues.append(ConfigIssue(path, lineno, "", "@INCLUDE", "@INCLUDE path is empty"))
        return
    hits, bases = resolve_include(pattern, path, ctx)
    if not hits:
        looked = ", ".join(os.path.join(b, pattern) if b else pattern for b in bases)
        if any(c in pattern for c in "*?["):
            doc.warnings.append(f"{path}:{lineno}: @INCLUDE {pattern}: no file matches (looked for {looked})")
        else:
            doc.issues.append(
                ConfigIssue(path, lineno, "", "@INCLUDE", f"cannot include {pattern!r}: file not found "
                            f"(looked for {looked})")
            )
        return
    for hit in hits:
        ctx.include(hit, doc, from_file=path, from_line=lineno)
