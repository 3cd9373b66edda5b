"""One reading of a config's regular expression, wherever it appears.

Fluent Bit accepts ``/pattern/flags`` and Onigmo syntax in every regex a config
holds; the parser definitions, multiline rules, the grep filter and the
``regex`` option type (``Match_Regex``) all go through ``compile_fluent_regex``.
"""

from __future__ import annotations

import re

import pytest

from logfwd.engine.router import TagMatcher
from logfwd.multiline import MultilineParser
from logfwd.onigmo import to_pcre2, to_python
from logfwd.options import Option, OptionError
from logfwd.parsers import Parser
from logfwd.regex import compile_fluent_regex, compile_onigmo, compile_search, split_flags, translate
from tests.pluginkit import make_batch, make_filter


@pytest.mark.parametrize(
    ("text", "pattern", "flags"),
    [
        ("/abc/", "abc", 0),
        ("/abc/i", "abc", re.I),
        ("/a.c/mx", "a.c", re.S | re.X),  # Ruby's m is "dot matches newline"
        ("/a/b/", "a/b", 0),  # the last slash closes
        ("abc", "abc", 0),
        ("/abc", "/abc", 0),  # no closing slash: a bare pattern
        ("/abc/q", "/abc/q", 0),  # an unknown option letter: a bare pattern
        ("/", "/", 0),
        ("//", "", 0),
    ],
)
def test_split_flags(text: str, pattern: str, flags: int) -> None:
    assert split_flags(text) == (pattern, flags)


def test_onigmo_translation() -> None:
    assert translate(r"(?<n>\h+)\k<n>\z(?<=x)") == r"(?P<n>[0-9a-fA-F]+)(?P=n)\Z(?<=x)"


def test_compile_has_ruby_anchors_and_flags() -> None:
    rx = compile_fluent_regex("/^b(?<rest>.+)$/i")
    assert rx.search("a\nBxy").group("rest") == "xy"  # ^ at a line start, case-insensitive
    assert compile_fluent_regex("/a.b/m").search("a\nb") and not compile_fluent_regex("a.b").search("a\nb")


def test_regex_option_type_takes_the_same_syntax() -> None:
    opt = Option("Match_Regex", "regex", None, "tag regex")
    rx = opt.convert("/^(?<ns>kube)\\.APP$/i")
    assert TagMatcher(None, rx)("kube.app") and not TagMatcher(None, rx)("kube.other")
    with pytest.raises(OptionError, match="invalid regular expression"):
        opt.convert("(?<open")


def test_every_user_reads_flags_the_same_way() -> None:
    text = "/^error (?<code>\\d+)/i"
    # a parser definition
    parser = Parser({"name": "p", "format": "regex", "regex": text})
    assert parser.parse_record_field("ERROR 42")[1] == {"code": "42"}
    # a multiline rule
    ml = MultilineParser.from_config({"name": "m", "type": "regex", "rule": [f'"start_state" "{text}" "cont"',
                                                                            '"cont" "/^ +/" "cont"']})
    assert ml.rules[0].regex.search("Error 7")
    # the grep filter
    grep = make_filter("grep", [("Regex", f"log {text}")])
    out = grep.filter(make_batch([{"log": "ERROR 1"}, {"log": "warn"}]))
    assert out is not None and [r["log"] for r in out.records] == ["ERROR 1"]


# --------------------------------------------------------------------------- one Onigmo translation, two engines


@pytest.mark.parametrize(("onigmo", "python", "pcre2"), [
    (r"(?<word>\w+) \k<word>", r"(?P<word>\w+) (?P=word)", r"(?<word>\w+) \k<word>"),
    (r"\h+[\h_]\H", r"[0-9a-fA-F]+[0-9a-fA-F_][^0-9a-fA-F]", r"[0-9a-fA-F]+[0-9a-fA-F_][^0-9a-fA-F]"),
    (r"\Aab\z", r"\Aab\Z", r"\Aab\z"),
    (r"ab\Z", r"ab(?=\n?\Z)", r"ab\Z"),
    (r"(?<=x)(?<!y)(?<n>z)", r"(?<=x)(?<!y)(?P<n>z)", r"(?<=x)(?<!y)(?<n>z)"),
    (r"[]\\(?<n>]", r"[]\\(?<n>]", r"[]\\(?<n>]"),  # inside a class nothing is a group or escape to rewrite
    (r"[^]\h]", r"[^]0-9a-fA-F]", r"[^]0-9a-fA-F]"),
    (r"^a", r"(?:\A|^(?!\Z))a", r"^a"),
])
def test_each_construct_is_spelled_for_each_engine(onigmo: str, python: str, pcre2: str) -> None:
    assert to_python(onigmo) == python
    assert to_pcre2(onigmo) == pcre2


@pytest.mark.parametrize(("pattern", "text", "hit"), [
    (r"ab\Z", "ab", True), (r"ab\Z", "ab\n", True), (r"ab\Z", "ab\n\n", False),  # Onigmo: end or before a final \n
    (r"ab\z", "ab", True), (r"ab\z", "ab\n", False),
    (r"^$", "0\n", False), (r"^$", "", True), (r"^$", "a\n\nb", True), (r"^b", "a\nb", True),
    (r"^\h+$", "00ff", True), (r"^\h+$", "00fg", False),
])
def test_both_engines_agree_with_onigmo(pattern: str, text: str, hit: bool) -> None:
    # re.M: Ruby's ^ and $ are always line anchors; every config regex is compiled so.
    assert bool(compile_onigmo(pattern, re.M).search(text)) is hit
    assert bool(compile_search(pattern, re.M)(text)) is hit  # PCRE2's JIT
