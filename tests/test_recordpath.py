"""Fluent Bit's record accessor: grammar, get/set/delete, and errors that say where."""

from __future__ import annotations

import pytest

from logfwd.recordpath import MISSING, RecordPathError, compile_path

REC = {"log": "x", "kubernetes": {"labels": {"app": "web", "odd key": 1}}, "items": [10, 20, {"a": 1}]}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("$log", "x"),
        ("log", "x"),  # grep and modify accept a key without '$'
        ("$kubernetes['labels']['app']", "web"),
        ('$kubernetes["labels"]["app"]', "web"),
        ("$kubernetes['labels']['odd key']", 1),
        ("$items[0]", 10),
        ("$items[-1]['a']", 1),
    ],
)
def test_get(expr: str, expected: object) -> None:
    assert compile_path(expr).get(REC) == expected


@pytest.mark.parametrize(
    "expr",
    ["$nope", "$log['x']", "$items[3]", "$items['a']", "$kubernetes['labels'][0]", "$kubernetes['none']['app']"],
)
def test_absent_paths_are_missing_never_an_exception(expr: str) -> None:
    p = compile_path(expr)
    assert p.get(REC) is MISSING and not p.exists(REC) and p.get(REC, "d") == "d"
    assert not MISSING  # falsy, so `if value:` reads naturally


def test_escaped_quotes_in_subscripts() -> None:
    assert compile_path(r"$m['it\'s']").get({"m": {"it's": 1}}) == 1


def test_plain_key_containing_a_bracket_is_literal() -> None:
    assert compile_path("a[b").get({"a[b": 1}) == 1


@pytest.mark.parametrize(("expr", "where"), [("", "empty"), ("$", "no key name"), ("$a[b]", "position 2")])
def test_errors_say_what_and_where(expr: str, where: str) -> None:
    with pytest.raises(RecordPathError, match=where):
        compile_path(expr)


def test_set_creates_intermediate_maps_and_replaces_scalars() -> None:
    rec: dict = {"a": "scalar"}
    assert compile_path("$a['b']['c']").set(rec, 1)
    assert rec == {"a": {"b": {"c": 1}}}
    assert compile_path("$top").set(rec, 2) and rec["top"] == 2


def test_set_without_create_and_through_lists() -> None:
    rec: dict = {"l": [{"x": 1}]}
    assert not compile_path("$m['k']").set(rec, 1, create=False) and "m" not in rec
    assert compile_path("$l[0]['x']").set(rec, 5) and rec["l"][0]["x"] == 5
    assert compile_path("$l[0]").set(rec, "new") and rec["l"] == ["new"]
    assert not compile_path("$l[4]").set(rec, 1)


def test_delete() -> None:
    rec = {"a": {"b": 1, "c": 2}, "l": [1, 2], "top": 0}
    assert compile_path("$a['b']").delete(rec) and rec["a"] == {"c": 2}
    assert not compile_path("$a['zz']").delete(rec)
    assert compile_path("$l[0]").delete(rec) and rec["l"] == [2]
    assert not compile_path("$l[5]").delete(rec)
    assert compile_path("$top").delete(rec) and not compile_path("$top").delete(rec)


def test_compiled_once() -> None:
    assert compile_path("$kubernetes['labels']['app']") is compile_path("$kubernetes['labels']['app']")
