"""modify: rename, add, remove, copy and reorder keys under conditions (Fluent Bit's ``modify``).

Rules run in the order written, each on the result of the previous one, and only
on records for which every ``Condition`` holds. Rules work on top-level keys;
conditions that name one key (``Key_exists``, ``Key_value_equals``…) accept a
record accessor (``$kubernetes['labels']['app']``). Values with spaces are
written in double quotes (``Set msg "hello world"``), as in Fluent Bit.

Semantics follow Fluent Bit: ``Set`` replaces the key and moves it to the end,
``Add`` only adds a missing key, ``Rename``/``Copy`` do nothing when the target
exists (the ``Hard_`` forms overwrite it), a renamed key keeps its position and a
copy lands right after its source, ``Remove_wildcard``/``Move_to_*`` match key
prefixes, value comparisons only see strings (regex matches also see booleans
as ``true``/``false``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from logfwd.plugin import Batch, ConfigValueError, Filter, Option
from logfwd.recordpath import MISSING, RecordPathError, compile_path
from logfwd.regex import compile_fluent_regex

Record = dict[str, Any]

# rule name → number of parameters
_RULES = {
    "set": 2, "add": 2, "add_if_not_present": 2, "remove": 1, "remove_wildcard": 1, "remove_regex": 1,
    "rename": 2, "hard_rename": 2, "copy": 2, "hard_copy": 2, "move_to_start": 1, "move_to_end": 1,
}
_CONDITIONS = {
    "key_exists": 1, "key_does_not_exist": 1, "a_key_matches": 1, "no_key_matches": 1,
    "key_value_equals": 2, "key_value_does_not_equal": 2, "key_value_matches": 2,
    "key_value_does_not_match": 2, "matching_keys_have_matching_values": 2,
    "matching_keys_do_not_have_matching_values": 2,
}

_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|\'((?:[^\'\\]|\\.)*)\'|(\S+)')


def split_quoted(value: str, nparams: int) -> list[str]:
    """Split ``value`` into ``nparams`` parameters; quotes group words, the last takes the rest."""
    out: list[str] = []
    pos = 0
    text = value.strip()
    while len(out) < nparams - 1:
        m = _TOKEN.search(text, pos)
        if m is None:
            break
        out.append(_unquote(m))
        pos = m.end()
    rest = text[pos:].strip()
    if rest:
        m = _TOKEN.fullmatch(rest)
        out.append(_unquote(m) if m is not None and m.group(3) is None else rest)
    return out


def _unquote(m: re.Match[str]) -> str:
    if m.group(1) is not None:
        return re.sub(r'\\(["\\])', r"\1", m.group(1))
    if m.group(2) is not None:
        return re.sub(r"\\(['\\])", r"\1", m.group(2))
    return m.group(3)


def _value_matches(v: Any, rx: re.Pattern[str]) -> bool:
    if type(v) is str:
        return rx.search(v) is not None
    if type(v) is bool:
        return rx.search("true" if v else "false") is not None
    return False


def _rebuild(rec: Record, fn: Callable[[str, Any], list[tuple[str, Any]]]) -> Record:
    """A new dict, each (key, value) replaced by the pairs ``fn`` returns (order preserved)."""
    out: Record = {}
    for k, v in rec.items():
        for nk, nv in fn(k, v):
            out[nk] = nv
    return out


def _make_rule(op: str, params: list[str], key: str) -> Callable[[Record], Record]:
    a = params[0]
    b = params[1] if len(params) > 1 else ""
    if op in ("set",):
        def set_(rec: Record) -> Record:
            rec.pop(a, None)
            rec[a] = b
            return rec
        return set_
    if op in ("add", "add_if_not_present"):
        def add(rec: Record) -> Record:
            if a not in rec:
                rec[a] = b
            return rec
        return add
    if op == "remove":
        def remove(rec: Record) -> Record:
            rec.pop(a, None)
            return rec
        return remove
    if op in ("remove_wildcard", "move_to_start", "move_to_end"):
        prefix = a[:-1] if a.endswith("*") else a
        if op == "remove_wildcard":
            def remove_wildcard(rec: Record) -> Record:
                for k in [k for k in rec if k.startswith(prefix)]:
                    del rec[k]
                return rec
            return remove_wildcard
        first = op == "move_to_start"

        def move(rec: Record) -> Record:
            hit = [k for k in rec if k.startswith(prefix)]
            if not hit:
                return rec
            moved = {k: rec[k] for k in hit}
            rest = {k: v for k, v in rec.items() if k not in moved}
            return {**moved, **rest} if first else {**rest, **moved}
        return move
    if op == "remove_regex":
        try:
            rx = compile_fluent_regex(a)
        except re.error as e:
            raise ConfigValueError(key, f"invalid regular expression {a!r}: {e}") from None

        def remove_regex(rec: Record) -> Record:
            for k in [k for k in rec if rx.search(k)]:
                del rec[k]
            return rec
        return remove_regex
    if op in ("rename", "hard_rename"):
        hard = op == "hard_rename"

        def rename(rec: Record) -> Record:
            if a not in rec or a == b or (b in rec and not hard):
                return rec
            return _rebuild(rec, lambda k, v: [] if k == b else [(b, v)] if k == a else [(k, v)])
        return rename
    if op in ("copy", "hard_copy"):
        hard = op == "hard_copy"

        def copy_(rec: Record) -> Record:
            if a not in rec or a == b or (b in rec and not hard):
                return rec
            return _rebuild(rec, lambda k, v: [] if k == b else [(k, v), (b, v)] if k == a else [(k, v)])
        return copy_
    raise ConfigValueError(key, f"unknown modify operation {op!r}")


def _make_condition(ctype: str, params: list[str], key: str) -> Callable[[Record], bool]:
    a = params[0]
    b = params[1] if len(params) > 1 else ""
    try:
        if ctype in ("a_key_matches", "no_key_matches", "matching_keys_have_matching_values",
                     "matching_keys_do_not_have_matching_values"):
            ka = compile_fluent_regex(a)
        if ctype in ("key_value_matches", "key_value_does_not_match", "matching_keys_have_matching_values",
                     "matching_keys_do_not_have_matching_values"):
            vb = compile_fluent_regex(b)
    except re.error as e:
        raise ConfigValueError(key, f"invalid regular expression in {ctype}: {e}") from None
    if ctype in ("key_exists", "key_does_not_exist", "key_value_equals", "key_value_does_not_equal",
                 "key_value_matches", "key_value_does_not_match"):
        try:
            path = compile_path(a)
        except RecordPathError as e:
            raise ConfigValueError(key, str(e)) from None
        get = path.get
    if ctype == "key_exists":
        return lambda rec: get(rec) is not MISSING
    if ctype == "key_does_not_exist":
        return lambda rec: get(rec) is MISSING
    if ctype == "a_key_matches":
        return lambda rec: any(ka.search(k) for k in rec)
    if ctype == "no_key_matches":
        return lambda rec: not any(ka.search(k) for k in rec)
    if ctype == "key_value_equals":
        return lambda rec: (v := get(rec)) is not MISSING and type(v) is str and v == b
    if ctype == "key_value_does_not_equal":
        return lambda rec: (v := get(rec)) is not MISSING and not (type(v) is str and v == b)
    if ctype == "key_value_matches":
        return lambda rec: (v := get(rec)) is not MISSING and _value_matches(v, vb)
    if ctype == "key_value_does_not_match":
        return lambda rec: (v := get(rec)) is not MISSING and not _value_matches(v, vb)

    def all_match(rec: Record) -> bool:
        return all(_value_matches(v, vb) for k, v in rec.items() if ka.search(k))

    if ctype == "matching_keys_have_matching_values":
        return all_match
    return lambda rec: not all_match(rec)


class ModifyFilter(Filter):
    name = "modify"
    description = "rename, add, remove, copy and reorder keys, optionally under conditions"
    options = (
        Option("Set", "str", None, "KEY VALUE: set KEY, overwriting it", multi=True),
        Option("Add", "str", None, "KEY VALUE: add KEY if it does not exist", multi=True),
        Option("Add_if_not_present", "str", None, "deprecated name of Add", multi=True),
        Option("Remove", "str", None, "KEY: remove KEY", multi=True),
        Option("Remove_wildcard", "str", None, "PREFIX: remove keys starting with PREFIX", multi=True),
        Option("Remove_regex", "str", None, "REGEX: remove keys matching REGEX", multi=True),
        Option("Rename", "str", None, "KEY NEW: rename KEY if NEW does not exist", multi=True),
        Option("Hard_rename", "str", None, "KEY NEW: rename KEY, overwriting NEW", multi=True),
        Option("Copy", "str", None, "KEY NEW: copy KEY to NEW if NEW does not exist", multi=True),
        Option("Hard_copy", "str", None, "KEY NEW: copy KEY to NEW, overwriting it", multi=True),
        Option("Move_to_start", "str", None, "PREFIX: move keys starting with PREFIX to the start", multi=True),
        Option("Move_to_end", "str", None, "PREFIX: move keys starting with PREFIX to the end", multi=True),
        Option("Condition", "str", None, "CONDITION KEY [VALUE]: apply the rules only when it holds",
               multi=True),
    )

    def setup(self) -> None:
        entries = [(k, v) for k, v in self.ctx.raw if k in _RULES or k == "condition"]
        if not entries:
            # No ordered view (a programmatic config): declaration order.
            for opt in self.options:
                entries += [(opt.key, v) for v in self.config.get(opt.key) or []]
        self.conditions: list[Callable[[Record], bool]] = []
        self.rules: list[Callable[[Record], Record]] = []
        for key, value in entries:
            value = str(value)
            if key == "condition":
                head = split_quoted(value, 2)
                ctype = head[0].lower() if head else ""
                if ctype not in _CONDITIONS:
                    raise ConfigValueError(
                        key, f"unknown condition {head[0] if head else ''!r}; one of: {', '.join(_CONDITIONS)}"
                    )
                n = _CONDITIONS[ctype]
                params = split_quoted(head[1] if len(head) > 1 else "", n)
                if len(params) != n:
                    raise ConfigValueError(key, f"condition {ctype} takes {n} parameter(s), got {value!r}")
                self.conditions.append(_make_condition(ctype, params, key))
            else:
                n = _RULES[key]
                params = split_quoted(value, n)
                if len(params) != n:
                    raise ConfigValueError(key, f"{key} takes {n} parameter(s), got {value!r}")
                if key == "add_if_not_present":
                    self.log.warning("modify: Add_if_not_present is deprecated, use Add")
                self.rules.append(_make_rule(key, params, key))
        if not self.rules:
            raise ConfigValueError("set", "modify needs at least one rule (Set, Add, Remove, Rename, ...)")

    def filter(self, batch: Batch) -> Batch | None:
        conditions = self.conditions
        rules = self.rules
        records = batch.records
        for i, rec in enumerate(records):
            if conditions and not all(c(rec) for c in conditions):
                continue
            new = rec
            for rule in rules:
                new = rule(new)
            if new is not rec:
                records[i] = new
        return batch


PLUGIN = ModifyFilter
