"""The PCRE2 path of regex parsers (and of grep/multiline rules) gives exactly the ``re`` path's results.

Differential: every regex parser of the shipped parsers file and of Fluent Bit's test
parsers files, user-style expressions (Onigmo syntax, Types, flags), on the test data,
the bench generator's lines and arbitrary lines (hypothesis): ``Pcre2Parser.batch`` ==
``_fastparse.regex_batch`` over the translated expression + ``Types`` applied in Python.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from logfwd import _fastparse as fp
from logfwd._pcre import Pcre2Error, Pcre2Parser, Pcre2Search
from logfwd.config import config_from_cli
from logfwd.config.loader import SHIPPED_PARSERS
from logfwd.multiline import _BUILTIN_RULES
from logfwd.onigmo import to_pcre2 as onigmo_to_pcre2
from logfwd.parsers import PARSER_OPTIONS, Parser, _cast
from logfwd.regex import compile_fluent_regex, compile_onigmo, fluent_searcher
from logfwd.regex import split_flags as _split_ruby

DATA = Path(__file__).parent / "data" / "parsers"

def _load_gen() -> Any:
    """bench/gen.py (the benchmark's workload generator), loaded from its file."""
    spec = importlib.util.spec_from_file_location("bench_gen", Path(__file__).resolve().parent.parent / "bench" / "gen.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_gen"] = mod  # dataclasses and typing look the module up
    spec.loader.exec_module(mod)
    return mod


gen = _load_gen()

# Expressions the way users write them (own names, Onigmo syntax users copy from Fluent Bit).
USER_REGEXES: dict[str, tuple[str, str]] = {
    "apache_own": (r'^(?<remote>[^ ]+) (?<ident>[^ ]+) (?<user>[^ ]+) \[(?<time>[^\]]+)\] "(?<method>[A-Z]+) '
                   r'(?<path>[^ ]+) (?<proto>[^"]+)" (?<status>\d{3}) (?<bytes>\d+|-) "(?<referer>[^"]*)" '
                   r'"(?<agent>[^"]*)"$', "status:integer bytes:integer"),
    "syslog_own": (r"^<(?<pri>\d+)>(?<time>\w{3} +\d{1,2} \d{2}:\d{2}:\d{2}) (?<host>\S+) "
                   r"(?<ident>[^\[:]+)(?:\[(?<pid>\d+)\])?: (?<message>.*)$", "pri:integer pid:integer"),
    "hex": (r"^(?<id>\h+)-(?<rest>\H*)(?<tail>[\h.]*)$", "id:hex"),
    "caseless": (r"(?i)^(?<level>info|warn|error)\s+(?<msg>.*)$", ""),
    "ruby_flags": (r"/^(?<level>INFO|WARN) (?<msg>.*)$/i", ""),
    "atomic_possessive": (r"^(?<a>(?>\w+))++ (?<b>\d*+)(?<c>.*)$", "b:integer"),
    "unanchored": (r"(?<k>[a-z]+)=(?<v>[^ ]*)", "v:float"),
    "optional_groups": (r"^(?<a>x)?(?<b>y)?(?<c>z*)(?<d>.*)$", "c:bool d:integer"),
    "backref": (r"^(?<q>['\"])(?<v>.*?)\k<q>(?<rest>.*)$", ""),
    "unicode": (r"^(?<w>\w+) (?<d>\d+) (?<s>\S+)(?<any>.)?(?<more>.*)$", "d:integer"),
    "types_mix": (r"^(?<i>\S*) (?<f>\S*) (?<b>\S*) (?<h>\S*)(?: (?<e>.*))?$",
                  "i:integer f:float b:bool h:hex e:integer"),
}


def _types(spec: str) -> dict[str, str]:
    return dict(item.rsplit(":", 1) for item in spec.split()) if spec else {}


def _re_records(expr: str, flags: int, types: dict[str, str], values: list[Any], skip: bool) -> list[Any]:
    """The reference: Python's re over the translated expression, Types applied as Parser._post does."""
    pat = compile_onigmo(expr, re.M | flags)
    recs = [fp.regex_batch(pat, fp.decode_lines([v]), skip, False)[0] for v in values]
    for r in recs:
        if r is not None:
            for k, kind in types.items():
                if k in r:
                    r[k] = _cast(r[k], kind)
    return recs


def _pcre(expr: str, flags: int, types: dict[str, str], skip: bool) -> Pcre2Parser:
    pat = compile_onigmo(expr, re.M | flags)

    def fallback(value: Any) -> Any:
        return fp.regex_batch(pat, fp.decode_lines([value]), skip, False)[0]

    return Pcre2Parser(onigmo_to_pcre2(expr), flags, types, fallback, _cast)


def _same(a: list[Any], b: list[Any]) -> bool:
    """Equal records, same key order, same value types (1 == 1.0 == True must not pass)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if (x is None) != (y is None):
            return False
        if x is not None and [(k, type(v), v) for k, v in x.items()] != [(k, type(v), v) for k, v in y.items()]:
            if not all(isinstance(v, float) and v != v for v in x.values() if v not in y.values()):  # nan != nan
                return False
    return True


def _check(expr: str, flags: int, types: dict[str, str], values: list[Any]) -> None:
    for skip in (True, False):
        want = _re_records(expr, flags, types, values, skip)
        got = _pcre(expr, flags, types, skip).batch(list(values), skip)
        assert _same(got, want), (expr, skip, [(v, g, w) for v, g, w in zip(values, got, want, strict=True)
                                               if not _same([g], [w])][:3])


def _regex_parsers(path: Path) -> list[tuple[str, str, int, dict[str, str]]]:
    out = []
    registry = config_from_cli([("dummy", [])], [], [("null", [("match", "*")])], {}, [str(path)], env={}).parsers
    own = {registry.get(name) for name in registry.names()}
    for opts in (p.options for p in own):
        if str(opts.get("format")).lower() == "regex" and opts.get("regex"):
            expr, flags = _split_ruby(str(opts["regex"]))
            out.append((str(opts["name"]), expr, flags, _types(str(opts.get("types") or ""))))
    return out


FILES = [SHIPPED_PARSERS] + sorted(DATA.glob("*.conf"))
FILE_PARSERS = [(f"{f.stem}:{p[0]}", *p[1:]) for f in FILES for p in _regex_parsers(f)]
ALL = FILE_PARSERS + [(name, *_split_ruby(rx), _types(t)) for name, (rx, t) in USER_REGEXES.items()]


def _sample_lines() -> list[bytes]:
    lines: list[bytes] = []
    for f in sorted(DATA.glob("*.log")):
        lines += f.read_bytes().splitlines()
    for kind in ("apache", "syslog", "rfc5424", "docker"):
        lines += [ln.encode() for ln in gen.lines(kind, 150)]
    lines += [b"", b" ", b"INFO hello", b"warn  x", b"ERROR \xff\xfe broken", "caf\u00e9 42 \u00e9x".encode(),
              b"dead-beef cafe.0", b"a=1.5 b=nan c=", b"x", b"xyz", b"xyzzz 12", b"'quoted' rest", b'"a" b',
              b"42 1.5 true ff ", b"+7 -1e3 TRUE 0x1f 1_000", b"007 inf off FF 12", "\u0663 \u0664".encode(),
              b"word 12 s\x00t", "\u00c9T\u00c9 12 \u00e9\u00e8 \U0001f600".encode()]
    return lines


LINES = _sample_lines()


@pytest.mark.parametrize("name,expr,flags,types", ALL, ids=[a[0] for a in ALL])
def test_same_records_as_re(name: str, expr: str, flags: int, types: dict[str, str]) -> None:
    _check(expr, flags, types, LINES)
    _check(expr, flags, types, [ln.decode("utf-8", "replace") for ln in LINES])  # the parser filter's str values


def test_bench_workloads_parse_the_same() -> None:
    """The bench's user parsers on its generator's lines, with Types: same records, every line parsed."""
    for kind, name in (("apache", "apache_own"), ("syslog", "syslog_own")):
        values = [ln.encode() for ln in gen.lines(kind, 3000)]
        expr, flags = _split_ruby(USER_REGEXES[name][0])
        _check(expr, flags, _types(USER_REGEXES[name][1]), values)
        assert all(r is not None for r in _pcre(expr, flags, {}, True).batch(values, True))


ALPHABET = b"<>[]:= \t\"'\\-.0123456789abcdefxyzINFOWARNinfo+_\r\n/,\xc3\xa9\xff\x00"
delimited = st.lists(st.sampled_from([bytes([c]) for c in ALPHABET]), max_size=60).map(b"".join)
any_line = st.one_of(st.binary(max_size=120), delimited, st.text(max_size=60).map(lambda s: s.encode("utf-8")))
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.lists(any_line, min_size=1, max_size=8), st.sampled_from(ALL))
@example([b"\x1c", b"\xe2\x80\xa8"], ALL[0])
def test_fuzz_same_records_as_re(lines: list[bytes], parser: tuple[str, str, int, dict[str, str]]) -> None:
    _, expr, flags, types = parser
    # Python's str \s also takes \x1c-\x1f (str.isspace); PCRE2's does not: a documented difference
    if "\\s" in expr or "\\S" in expr:
        lines = [ln.translate(None, b"\x1c\x1d\x1e\x1f") for ln in lines]
    _check(expr, flags, types, lines)


def test_onigmo_translation() -> None:
    assert onigmo_to_pcre2(r"(?<a>\h+)") == r"(?<a>[0-9a-fA-F]+)"
    assert onigmo_to_pcre2(r"[\h.]\H") == r"[0-9a-fA-F.][^0-9a-fA-F]"
    assert onigmo_to_pcre2(r"[]\h]") == r"[]0-9a-fA-F]"
    assert onigmo_to_pcre2(r"\\h") == r"\\h"  # an escaped backslash followed by h


def test_expression_pcre2_cannot_compile_falls_back_to_re(caplog: pytest.LogCaptureFixture) -> None:
    long_name = "n" * 40  # PCRE2 names are at most 32 code units; re takes any identifier
    opts = {o.key: o.default_value() for o in PARSER_OPTIONS}
    opts.update(name="long", format="regex", regex=f"^(?<{long_name}>\\d+)$", types=f"{long_name}:integer")
    with caplog.at_level(logging.WARNING, logger="logfwd.parsers"):
        p = Parser(opts)
        Parser(opts)
    assert p._pcre is None
    assert len([r for r in caplog.records if "PCRE2" in r.getMessage()]) == 1
    assert p.parse_lines([b"12"], 0)[1] == [{long_name: 12}]
    with pytest.raises(Pcre2Error):
        Pcre2Parser(f"(?<{long_name}>x)", 0, {}, None, _cast)


def test_user_regex_runs_pcre2_and_shipped_kernels_stay() -> None:
    opts = {o.key: o.default_value() for o in PARSER_OPTIONS}
    opts.update(name="u", format="regex", regex=USER_REGEXES["apache_own"][0], types="status:integer bytes:integer",
                time_key="time", time_format="%d/%b/%Y:%H:%M:%S %z")
    p = Parser(opts)
    assert p._pcre is not None and p._pcre.jit_compiled
    line = (b'1.2.3.4 - bob [14/Mar/2026:09:26:53 +0000] "GET /x HTTP/1.1" 200 512 "-" "curl/8"')
    times, recs, failed = p.parse_lines([line, b"garbage"], 7)
    assert failed == 1 and recs[1] == {"log": "garbage"} and times[1] == 7
    assert times[0] == 1773480413 * 10**9
    assert recs[0] == {"remote": "1.2.3.4", "ident": "-", "user": "bob", "method": "GET", "path": "/x",
                       "proto": "HTTP/1.1", "status": 200, "bytes": 512, "referer": "-", "agent": "curl/8"}
    opts.update(name="s", format="syslog-rfc3164", regex=None, types=None, time_format=None)
    assert Parser(opts).native and Parser(opts)._pcre is None


def test_line_beyond_the_jit_stack_goes_to_re() -> None:
    """A line PCRE2 cannot finish (JIT stack limit) is matched by re, not lost."""
    expr = r"^(?<body>(?:a|b)*)c$"
    line = b"ab" * 200_000 + b"c"
    _check(expr, 0, {}, [line, b"abc", b"abd"])


def test_repeated_values_are_shared_and_equal() -> None:
    m = _pcre(r"^(?<h>\S+) (?<m>.*)$", 0, {}, True)
    lines = [b"web-1 hello", b"web-1 hello", b"web-2 hello"] * 3000
    recs = m.batch(lines, True)
    assert recs[0]["h"] is recs[3]["h"] and recs[0]["h"] == "web-1" and recs[2]["h"] == "web-2"
    assert [r["h"] for r in recs[:3]] == ["web-1", "web-1", "web-2"]


# ---------------------------------------------------------------- yes/no search (grep, multiline rules)

SEARCH_RULES = sorted({rx for rules in _BUILTIN_RULES.values() for _, rx, _ in rules}) + [
    r"^\d{4}-\d{2}-\d{2}", r"/error|warn/i", r"(?i)timeout", r"^\s", r"\h{8}-\h{4}", r"[\h]+$", r"^$",
    r"(?>a+)b", r"x*+y", r"\bpanic: ", r"^[^ ]+ (?<level>INFO|ERROR)\b", r"/^a.b$/m", "caf\u00e9",
]
SEARCH_VALUES = [ln.decode("utf-8", "replace") for ln in LINES] + [
    "panic: boom", "goroutine 1 [running]:", "\tat com.x.Y(Y.java:1)", "Traceback (most recent call last):",
    "java.lang.IllegalStateException: x", "ERROR here", "a\nb", "\n", "", "deadbeef-cafe", "aaab", "xxy",
    "CAF\u00c9", "caf\u00e9", "2026-03-14 x", "  File \"x\"", "a\ud800b",
]


def _search_pair(rule: str) -> tuple[Any, Any]:
    return fluent_searcher(rule), compile_fluent_regex(rule).search


@pytest.mark.parametrize("rule", SEARCH_RULES)
def test_search_same_answers_as_re(rule: str) -> None:
    fast, ref = _search_pair(rule)
    assert getattr(fast, "__self__", None).__class__ is Pcre2Search
    for v in SEARCH_VALUES:
        assert (fast(v) is not None) == (ref(v) is not None), (rule, v)


@FUZZ
@given(st.lists(st.one_of(st.text(max_size=60), delimited.map(lambda b: b.decode("utf-8", "replace"))),
                min_size=1, max_size=8), st.sampled_from(SEARCH_RULES))
def test_fuzz_search_same_answers_as_re(values: list[str], rule: str) -> None:
    fast, ref = _search_pair(rule)
    if "\\s" in rule or "\\S" in rule:  # str \s takes \x1c-\x1f in re, not in PCRE2 (documented)
        values = [v.translate({c: None for c in range(0x1c, 0x20)}) for v in values]
    for v in values:
        assert (fast(v) is not None) == (ref(v) is not None), (rule, v)


def test_search_falls_back_to_re_when_pcre2_cannot_compile(caplog: pytest.LogCaptureFixture) -> None:
    rule = "(?<" + "n" * 40 + ">x)"
    with caplog.at_level(logging.WARNING, logger="logfwd.regex"):
        fast = fluent_searcher(rule)
        fluent_searcher(rule)
    assert fast("axb") is not None and fast("ab") is None
    assert len([r for r in caplog.records if "PCRE2" in r.getMessage()]) == 1
