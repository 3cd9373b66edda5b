"""grep: keep or drop records by regular expressions on their fields (Fluent Bit's ``grep``).

``Regex KEY REGEX`` keeps records whose KEY matches, ``Exclude KEY REGEX`` drops
them; KEY is a record accessor (``log``, ``$kubernetes['labels']['app']``).

As in Fluent Bit, only string values are matched (a number, a map or a missing key
never matches), regexes search anywhere in the value (anchor with ``^``/``$``), and
``Logical_Op legacy`` (the default) evaluates the rules in the order written and
stops at the first decisive one: a failing ``Regex`` drops, a matching ``Exclude``
drops, a matching ``Regex`` keeps at once. That means only the first ``Regex``
counts in legacy mode; ``Logical_Op AND`` / ``OR`` combine all rules of one kind
(mixing ``Regex`` and ``Exclude`` with them is a configuration error).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from logfwd.plugin import Batch, ConfigValueError, Filter, Option
from logfwd.recordpath import MISSING, RecordPathError, compile_path
from logfwd.regex import compile_fluent_regex, fluent_searcher

_REGEX, _EXCLUDE = "regex", "exclude"


def _matcher(path_expr: str, search: Callable[[str], Any]) -> Callable[[dict[str, Any]], bool]:
    """A per-record predicate, specialised for the common top-level key; ``search`` returns
    None when the value does not match (PCRE2's, or ``re``'s when PCRE2 cannot compile it)."""
    path = compile_path(path_expr)
    if not path.nested:
        key = path.key

        def top(rec: dict[str, Any]) -> bool:
            v = rec.get(key)
            if type(v) is str:
                return search(v) is not None
            if type(v) is bytes:
                return search(v.decode("utf-8", "replace")) is not None
            return False

        return top

    def nested(rec: dict[str, Any]) -> bool:
        v = path.get(rec)
        if v is MISSING:
            return False
        if type(v) is bytes:
            v = v.decode("utf-8", "replace")
        return type(v) is str and search(v) is not None

    return nested


class GrepFilter(Filter):
    name = "grep"
    description = "keep or drop records whose fields match regular expressions"
    options = (
        Option("Regex", "str", None, "KEY REGEX: keep records whose KEY matches (repeatable)", multi=True),
        Option("Exclude", "str", None, "KEY REGEX: drop records whose KEY matches (repeatable)", multi=True),
        Option("Logical_Op", "str", "legacy", "how several rules combine: legacy, AND or OR",
               choices=("legacy", "and", "or")),
    )

    def setup(self) -> None:
        entries = [(k, v) for k, v in self.ctx.raw if k in (_REGEX, _EXCLUDE)]
        if not entries:
            # No ordered view (a programmatic config): excludes first, as the docs advise.
            entries = [(_EXCLUDE, v) for v in self.config.get("exclude") or []]
            entries += [(_REGEX, v) for v in self.config.get("regex") or []]
        if not entries:
            raise ConfigValueError("regex", "grep needs at least one Regex or Exclude rule")
        self.op = str(self.config.get("logical_op") or "legacy").lower()
        kinds = {k for k, _ in entries}
        if self.op != "legacy" and len(kinds) > 1:
            raise ConfigValueError(
                "logical_op", "with Logical_Op AND/OR use only Regex or only Exclude rules, not both"
            )
        self.rules: list[tuple[str, Callable[[dict[str, Any]], bool]]] = []
        for kind, value in entries:
            parts = str(value).strip().split(None, 1)
            if len(parts) != 2:
                raise ConfigValueError(kind, f"expected 'KEY REGEX', got {value!r}")
            field, pattern = parts
            try:
                compile_fluent_regex(pattern)  # re's message for an invalid expression
                search = fluent_searcher(pattern)
            except re.error as e:
                raise ConfigValueError(kind, f"invalid regular expression {pattern!r}: {e}") from None
            try:
                fn = _matcher(field, search)
            except RecordPathError as e:
                raise ConfigValueError(kind, str(e)) from None
            self.rules.append((kind, fn))
        if self.op == "legacy":
            nregex = sum(1 for k, _ in entries if k == _REGEX)
            if nregex > 1:
                self.log.warning(
                    "grep: with Logical_Op legacy only the first Regex decides (Fluent Bit semantics); "
                    "set Logical_Op AND to require all of them"
                )
        self._keep = self._build()

    def _build(self) -> Callable[[dict[str, Any]], bool]:
        rules = self.rules
        if len(rules) == 1:
            kind, fn = rules[0]
            if kind == _REGEX:
                return fn
            return lambda rec: not fn(rec)
        if self.op == "legacy":

            def legacy(rec: dict[str, Any]) -> bool:
                for kind, fn in rules:
                    hit = fn(rec)
                    if kind == _REGEX:
                        return hit
                    if hit:
                        return False
                return True

            return legacy
        fns = [fn for _, fn in rules]
        is_regex = rules[0][0] == _REGEX
        if self.op == "and":
            if is_regex:
                return lambda rec: all(f(rec) for f in fns)
            return lambda rec: not all(f(rec) for f in fns)
        if is_regex:
            return lambda rec: any(f(rec) for f in fns)
        return lambda rec: not any(f(rec) for f in fns)

    def filter(self, batch: Batch) -> Batch | None:
        keep = self._keep
        records = batch.records
        kept = [i for i, rec in enumerate(records) if keep(rec)]
        dropped = len(records) - len(kept)
        if dropped == 0:
            return batch
        self.metrics.inc("drop_records", dropped)
        if not kept:
            return None
        batch.select(kept)
        return batch


PLUGIN = GrepFilter
