"""Reading files into the intermediate ``Document``: format choice, include cycles, dispatch.

``read_any`` picks the format of a file and hands it to ``classic`` or ``yaml_``;
those read their includes back through ``ReadContext.include`` (see ``include``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from . import classic
from .include import ReadContext
from .model import ConfigIssue, Document

__all__ = ["read_any", "detect_format", "new_context"]

_YAML_FIRST = re.compile(r"^(---|[A-Za-z_][\w.-]*\s*:(\s|$))")


def new_context(env: Mapping[str, str], main_dir: str, allowed: frozenset[str] | None = None) -> ReadContext:
    """A context for reading a main file and its includes (or a set of parsers files)."""
    return ReadContext(env=env, main_dir=main_dir, read=read_any, allowed=allowed)


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
            from . import yaml_  # noqa: PLC0415 - heavy (PyYAML), needed only for a YAML file

            yaml_.read_yaml_text(text, path, doc, ctx)
        else:
            classic.read_classic_text(text, path, doc, ctx)
    finally:
        ctx.stack.pop()
