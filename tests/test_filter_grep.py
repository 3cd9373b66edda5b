"""grep filter: Fluent Bit's Regex / Exclude / Logical_Op semantics on real batches."""

from __future__ import annotations

from typing import Any

import pytest

from logfwd.plugin import ConfigValueError

from .pluginkit import make_batch as batch
from .pluginkit import make_filter as make


def logs(*values: str) -> list[dict[str, Any]]:
    return [{"log": v} for v in values]


def test_docs_example_regex_keeps_matching() -> None:
    f = make("grep", [("Regex", "log aa")])
    b = f.filter(batch(logs("aaa", "aab", "bbb", "ccc", "xaa"), keys=True))
    assert b is not None
    assert [r["log"] for r in b.records] == ["aaa", "aab", "xaa"]  # a search, not an anchored match
    assert b.times == [0, 1, 4] and b.keys == ["k0", "k1", "k4"]
    assert f.metrics["drop_records"] == 2


def test_nested_exclude_with_record_accessor() -> None:
    f = make("grep", [("Exclude", "$kubernetes['labels']['app'] myapp")])
    recs = [
        {"log": "a", "kubernetes": {"labels": {"app": "myapp"}}},
        {"log": "b", "kubernetes": {"labels": {"app": "other"}}},
        {"log": "c", "kubernetes": {"labels": {}}},
        {"log": "d"},
    ]
    b = f.filter(batch(recs))
    assert b is not None and [r["log"] for r in b.records] == ["b", "c", "d"]


def test_missing_and_non_string_values_never_match() -> None:
    f = make("grep", [("Regex", r"iot_timestamp ^\d{4}-\d{2}-\d{2}")])
    recs = [{"iot_timestamp": "2024-01-02T00:00"}, {"other": 1}, {"iot_timestamp": 20240102}, {"iot_timestamp": ""}]
    b = f.filter(batch(recs))
    assert b is not None and b.records == [{"iot_timestamp": "2024-01-02T00:00"}]
    g = make("grep", [("Exclude", "status .*")])
    b = g.filter(batch([{"status": 500}, {"status": "500"}, {}]))
    assert b is not None and b.records == [{"status": 500}, {}]


def test_all_dropped_returns_none() -> None:
    f = make("grep", [("Regex", "log ^z")])
    assert f.filter(batch(logs("a", "b"))) is None
    assert f.metrics["drop_records"] == 2


def test_legacy_mode_first_decisive_rule_wins() -> None:
    recs = [{"a": "x", "b": "y"}, {"a": "x", "b": "no"}, {"a": "no", "b": "y"}]
    legacy = make("grep", [("Regex", "a x"), ("Regex", "b y")])
    b = legacy.filter(batch([dict(r) for r in recs]))
    assert b is not None and b.records == recs[:2]  # only the first Regex decides
    both = make("grep", [("Logical_Op", "AND"), ("Regex", "a x"), ("Regex", "b y")])
    b = both.filter(batch([dict(r) for r in recs]))
    assert b is not None and b.records == recs[:1]
    either = make("grep", [("Logical_Op", "or"), ("Regex", "a x"), ("Regex", "b y")])
    b = either.filter(batch([dict(r) for r in recs]))
    assert b is not None and b.records == recs


def test_legacy_exclude_before_regex_in_written_order() -> None:
    f = make("grep", [("Exclude", "log debug"), ("Regex", "log app")])
    b = f.filter(batch(logs("app debug", "app info", "other")))
    assert b is not None and [r["log"] for r in b.records] == ["app info"]
    # Written the other way round, the Regex decides first (Fluent Bit's legacy order).
    g = make("grep", [("Regex", "log app"), ("Exclude", "log debug")])
    b = g.filter(batch(logs("app debug", "app info", "other")))
    assert b is not None and [r["log"] for r in b.records] == ["app debug", "app info"]


def test_exclude_or_and() -> None:
    f = make("grep", [("Logical_Op", "OR"), ("Exclude", "log a"), ("Exclude", "log b")])
    b = f.filter(batch(logs("a", "b", "c")))
    assert b is not None and [r["log"] for r in b.records] == ["c"]
    g = make("grep", [("Logical_Op", "AND"), ("Exclude", "log a"), ("Exclude", "log b")])
    b = g.filter(batch(logs("a", "ab", "c")))
    assert b is not None and [r["log"] for r in b.records] == ["a", "c"]


@pytest.mark.parametrize(
    "entries, key",
    [
        ([("Logical_Op", "AND"), ("Regex", "a x"), ("Exclude", "b y")], "logical_op"),
        ([("Regex", "onlykey")], "regex"),
        ([("Regex", "log (unclosed")], "regex"),
        ([("Exclude", "$a['b' x")], "exclude"),
        ([], "regex"),
    ],
)
def test_config_errors_name_the_key(entries: list[tuple[str, str]], key: str) -> None:
    with pytest.raises(ConfigValueError) as e:
        make("grep", entries)
    assert e.value.key == key
