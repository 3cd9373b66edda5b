"""modify filter: rules in written order, conditions, Fluent Bit's key-order semantics."""

from __future__ import annotations

import pytest

from logfwd.plugin import ConfigValueError
from tests.pluginkit import make_batch as batch
from tests.pluginkit import make_filter as make

MEM = {"Mem.total": 4050908, "Mem.used": 738100, "Mem.free": 3312808, "Swap.total": 1046524,
       "Swap.used": 0, "Swap.free": 1046524}


def run(entries: list[tuple[str, str]], records: list[dict]) -> list[dict]:
    b = make("modify", entries).filter(batch(records))
    assert b is not None
    return b.records


def test_docs_example_add_and_rename_keeps_positions() -> None:
    out = run(
        [("Add", "Service1 SOMEVALUE"), ("Add", "Service3 SOMEVALUE3"), ("Add", "Mem.total2 TOTALMEM2"),
         ("Rename", "Mem.free MEMFREE"), ("Rename", "Mem.used MEMUSED"), ("Rename", "Swap.total SWAPTOTAL"),
         ("Add", "Mem.total TOTALMEM")],
        [dict(MEM)],
    )[0]
    assert list(out.items()) == [
        ("Mem.total", 4050908), ("MEMUSED", 738100), ("MEMFREE", 3312808), ("SWAPTOTAL", 1046524),
        ("Swap.used", 0), ("Swap.free", 1046524), ("Service1", "SOMEVALUE"), ("Service3", "SOMEVALUE3"),
        ("Mem.total2", "TOTALMEM2"),
    ]


def test_docs_example_conditions_chain() -> None:
    recs = [dict(MEM)]
    recs = run([("Condition", "Key_Does_Not_Exist cpustats"), ("Condition", "Key_Exists Mem.used"),
                ("Set", "cpustats UNKNOWN")], recs)
    recs = run([("Condition", "Key_Value_Does_Not_Equal cpustats KNOWN"), ("Add", "sourcetype memstats")], recs)
    recs = run([("Condition", "Key_Value_Equals cpustats UNKNOWN"), ("Remove_wildcard", "Mem"),
                ("Remove_wildcard", "Swap"), ("Add", "cpustats_more STILL_UNKNOWN")], recs)
    assert recs == [{"cpustats": "UNKNOWN", "sourcetype": "memstats", "cpustats_more": "STILL_UNKNOWN"}]


def test_docs_example_emoji_rules_in_order() -> None:
    out = run([("Remove_Wildcard", "Mem"), ("Remove_Wildcard", "Swap"), ("Set", "This_plugin_is_on 🔥"),
               ("Set", "🔥 is_hot"), ("Copy", "🔥 💦"), ("Rename", "💦 ❄️"), ("Set", "❄️ is_cold"),
               ("Set", "💦 is_wet")], [dict(MEM)])[0]
    assert out == {"This_plugin_is_on": "🔥", "🔥": "is_hot", "❄️": "is_cold", "💦": "is_wet"}


def test_set_moves_to_end_copy_lands_after_source_hard_variants_overwrite() -> None:
    out = run([("Set", "a 9"), ("Copy", "b c"), ("Copy", "b d")], [{"a": 1, "b": 2, "d": 4}])[0]
    assert list(out.items()) == [("b", 2), ("c", 2), ("d", 4), ("a", "9")]
    out = run([("Hard_copy", "b d"), ("Rename", "a d"), ("Hard_rename", "a e")], [{"a": 1, "b": 2, "d": 4}])[0]
    assert list(out.items()) == [("e", 1), ("b", 2), ("d", 2)]


def test_remove_regex_and_move() -> None:
    rec = {"x_1": 1, "y": 2, "x_2": 3, "z": 4}
    assert run([("Remove_regex", r"^x_\d$")], [dict(rec)]) == [{"y": 2, "z": 4}]
    assert list(run([("Move_to_start", "x_")], [dict(rec)])[0]) == ["x_1", "x_2", "y", "z"]
    assert list(run([("Move_to_end", "x_*")], [dict(rec)])[0]) == ["y", "z", "x_1", "x_2"]
    assert run([("Remove", "y"), ("Remove", "nope")], [dict(rec)]) == [{"x_1": 1, "x_2": 3, "z": 4}]


def test_quoted_values_and_nested_condition() -> None:
    entries = [("Condition", "Key_value_matches $kubernetes['labels']['tier'] ^back"),
               ("Set", 'message "hello world"')]
    recs = [{"kubernetes": {"labels": {"tier": "backend"}}}, {"kubernetes": {"labels": {"tier": "front"}}}, {}]
    out = run(entries, recs)
    assert out[0]["message"] == "hello world"
    assert "message" not in out[1] and out[2] == {}


@pytest.mark.parametrize(
    "condition, expected",
    [
        ("A_key_matches ^lev", [True, False, True]),
        ("No_key_matches ^lev", [False, True, False]),
        ("Key_value_matches level ^(warn|true)$", [True, False, True]),  # booleans match as true/false
        ("Key_value_does_not_match level ^warn$", [False, False, True]),  # missing key: false
        ("Key_value_does_not_equal level warn", [False, False, True]),
        ("Matching_keys_have_matching_values ^lev ^w", [True, True, False]),  # vacuously true without keys
        ("Matching_keys_do_not_have_matching_values ^lev ^w", [False, False, True]),
    ],
)
def test_conditions(condition: str, expected: list[bool]) -> None:
    recs = [{"level": "warn"}, {"msg": "x"}, {"level": True}]
    out = run([("Condition", condition), ("Add", "hit yes")], recs)
    assert ["hit" in r for r in out] == expected


@pytest.mark.parametrize(
    "entries, key",
    [
        ([("Condition", "Key_is_shiny a"), ("Set", "a b")], "condition"),
        ([("Condition", "Key_value_equals a"), ("Set", "a b")], "condition"),
        ([("Rename", "onlyone")], "rename"),
        ([("Remove_regex", "(")], "remove_regex"),
        ([("Condition", "Key_exists a")], "set"),
    ],
)
def test_config_errors(entries: list[tuple[str, str]], key: str) -> None:
    with pytest.raises(ConfigValueError) as e:
        make("modify", entries)
    assert e.value.key == key
