"""What reading one configuration file needs to know about the others: includes and cycles.

Both formats include other files, and a classic file may include a YAML one (and
the reverse), so the bookkeeping shared by the two readers lives here: where a
relative include is looked for, which files are being read (to detect a cycle),
and which were read already (Fluent Bit refuses to read a file twice).

A format reader reads an included file through ``ReadContext.include``, which
calls back into ``reader.read_any``: the format modules never import the module
that dispatches to them, so the import graph stays a tree.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .model import Document

__all__ = ["ReadContext", "FileReader", "resolve_include"]

_GLOB_CHARS = re.compile(r"[*?\[]")

# reader.read_any: (path, doc, ctx, *, from_file, from_line, from_key) -> None
FileReader = Callable[..., None]


@dataclass
class ReadContext:
    env: Mapping[str, str]
    main_dir: str  # directory of the main config (as the user wrote it; may be relative)
    read: FileReader  # how one file of either format is read (reader.read_any)
    allowed: frozenset[str] | None = None  # section kinds allowed (parsers files), None = all
    stack: list[str] = field(default_factory=list)  # real paths being read, outermost first
    seen: set[str] = field(default_factory=set)  # real paths read so far

    def include(self, path: str, doc: Document, *, from_file: str, from_line: int | None,
                from_key: str = "@INCLUDE") -> None:
        """Read an included file (either format) into ``doc``; problems are reported at the include."""
        self.read(path, doc, self, from_file=from_file, from_line=from_line, from_key=from_key)


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
