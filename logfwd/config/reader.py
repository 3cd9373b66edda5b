"""Reading files into the intermediate ``Document``: format choice, includes, cycles.

Both formats include other files, and a classic file may include a YAML one
(and the reverse), so the bookkeeping shared by the two readers lives here:
where a relative include is looked for, which files are being read (to detect a
cycle), and which were read already (Fluent Bit refuses to read a file twice).
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from .model import ConfigIssue, Document

__all__ = ["ReadContext", "read_any", "resolve_include", "detect_format"]

_GLOB_CHARS = re.compile(r"[*?\[]")
_YAML_FIRST = re.compile(r"^(---|[A-Za-z_][\w.-]*\s*:(\s|$))")


@dataclass
class ReadContext:
    env: Mapping[str, str]
    main_dir: str  # directory of the main config (as the user wrote it; may be relative)
    allowed: frozenset[str] | None = None  # section kinds allowed (parsers files), None = all
    stack: list[str] = field(default_factory=list)  # real paths being read, outermost first
    seen: set[str] = field(default_factory=set)  # real paths read so far


def detect_format(path: str, text: str) -> str:
    """"yaml" for .yaml/.yml, or a file whose first statement is a ``key:`` mapping; else "classic"."""
    if path.lower().endswith((".yaml", ".yml")):
        return "yaml"
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        return "yaml" if _YAML_FIRST.match(line) else "classic"
    return "classic"


def resolve_include(
    pattern: str, including: str | None, ctx: ReadContext
) -> tuple[list[str], list[str]]:
    """Paths an include names, and the directories looked in.

    A relative path is looked for next to the including file first (what
    people expect, and what Fluent Bit's YAML includes do), then in the main
    config's directory (where Fluent Bit's classic reader looks), then in the
    working directory. Globs are sorted so the order is reproducible.
    """
    bases: list[str] = []
    if os.path.isabs(pattern):
        bases = [""]
    else:
        for b in (os.path.dirname(including) if including else None, ctx.main_dir, os.curdir):
            if b is None:
                continue
            norm = os.path.normpath(b) if b else os.curdir
            if norm not in bases:
                bases.append(norm)
    is_glob = bool(_GLOB_CHARS.search(pattern))
    for base in bases:
        full = os.path.normpath(os.path.join(base, pattern)) if base else pattern
        if is_glob:
            hits = sorted(p for p in glob.glob(full) if os.path.isfile(p))
            if hits:
                return hits, bases
        elif os.path.exists(full):
            return [full], bases
    return [], bases


def read_any(
    path: str,
    doc: Document,
    ctx: ReadContext,
    *,
    from_file: str | None = None,
    from_line: int | None = None,
    from_key: str = "@INCLUDE",
) -> None:
    """Read one file (either format) into ``doc``; problems become issues, never exceptions."""
    from . import classic, yaml_

    def issue(msg: str) -> None:
        if from_file is None:
            doc.issues.append(ConfigIssue(path, None, "", None, msg))
        else:
            doc.issues.append(ConfigIssue(from_file, from_line, "", from_key, msg))

    real = os.path.realpath(path)
    if real in ctx.stack:
        chain = " -> ".join(os.path.basename(p) for p in [*ctx.stack[ctx.stack.index(real):], real])
        issue(f"include cycle: {chain}")
        return
    if real in ctx.seen:
        issue(f"{path} is already included (a file is read only once)")
        return
    try:
        with open(path, "rb") as f:
            data = f.read()
    except IsADirectoryError:
        issue(f"cannot read {path}: it is a directory")
        return
    except OSError as e:
        issue(f"cannot read {path}: {e.strerror or e}")
        return
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        issue(f"cannot read {path}: not UTF-8 text ({e.reason} at byte {e.start})")
        return
    ctx.seen.add(real)
    if os.path.abspath(path) not in doc.files:
        doc.files.append(os.path.abspath(path))
    ctx.stack.append(real)
    try:
        if detect_format(path, text) == "yaml":
            yaml_.read_yaml_text(text, path, doc, ctx)
        else:
            classic.read_classic_text(text, path, doc, ctx)
    finally:
        ctx.stack.pop()
