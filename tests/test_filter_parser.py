"""The parser filter: Fluent Bit's Key_Name / Parser / Reserve_Data / Preserve_Key / Unescape_Key."""

from __future__ import annotations

import calendar
from typing import Any

import pytest

from logfwd.batch import Batch
from logfwd.config import default_parsers
from logfwd.plugin import ConfigValueError, Plugin, find_plugin

from .pluginkit import make_plugin

REG = default_parsers()
REG.add_parser({"name": "kv", "format": "logfmt"})
REG.add_parser({"name": "num", "format": "regex", "regex": r"^(?<n>\d+)$", "types": "n:integer"})


def make(entries: list[tuple[str, str]], parsers: Any = REG) -> Plugin:
    """Build the filter the way the config layer does: declared options converted, raw kept in order."""
    return make_plugin(find_plugin("filter", "parser"), options=entries, parsers=parsers)


def batch(records: list[dict[str, Any]]) -> Batch:
    return Batch("app", [7] * len(records), records)


def test_parses_the_field_replaces_record_and_time() -> None:
    f = make([("Key_Name", "log"), ("Parser", "cri")])
    b = f.filter(batch([{"log": "2024-01-01T00:00:00.5Z stdout F hello", "other": 1}, {"log": "not cri"},
                        {"nolog": 1}, {"log": 5}]))
    assert b is not None
    assert b.records == [{"stream": "stdout", "logtag": "F", "message": "hello"}, {"log": "not cri"},
                         {"nolog": 1}, {"log": 5}]
    assert b.times == [calendar.timegm((2024, 1, 1, 0, 0, 0)) * 10**9 + 500_000_000, 7, 7, 7]
    assert f.metrics["parse_errors"] == 1  # "not cri"; absent or non-text fields are not parse errors


def test_parsers_tried_in_order_and_time_kept_when_none_found() -> None:
    f = make([("Key_Name", "msg"), ("Parser", "num"), ("Parser", "kv")])
    b = f.filter(batch([{"msg": "42"}, {"msg": "a=1 b=2"}, {"msg": b"7"}]))
    assert b is not None
    assert b.records == [{"n": 42}, {"a": "1", "b": "2"}, {"n": 7}]
    assert b.times == [7, 7, 7]
    assert f.metrics.get("parse_errors", 0) == 0


def test_reserve_data_and_preserve_key() -> None:
    rec = {"log": "a=1", "kubernetes": {"pod": "p"}, "a": "old"}
    f = make([("Key_Name", "log"), ("Parser", "kv"), ("Reserve_Data", "On")])
    assert f.filter(batch([dict(rec)])).records == [{"kubernetes": {"pod": "p"}, "a": "1"}]  # type: ignore[union-attr]
    f = make([("Key_Name", "log"), ("Parser", "kv"), ("Reserve_Data", "On"), ("Preserve_Key", "On")])
    assert f.filter(batch([dict(rec)])).records == [  # type: ignore[union-attr]
        {"kubernetes": {"pod": "p"}, "a": "1", "log": "a=1"}]
    f = make([("Key_Name", "log"), ("Parser", "kv"), ("Preserve_Key", "On")])
    assert f.filter(batch([dict(rec)])).records == [{"log": "a=1", "a": "1"}]  # type: ignore[union-attr]


def test_unescape_key_and_docker_in_docker() -> None:
    f = make([("Key_Name", "log"), ("Parser", "json"), ("Unescape_Key", "On")])
    b = f.filter(batch([{"log": '{\\"level\\":\\"info\\"}'}]))
    assert b is not None and b.records == [{"level": "info"}]
    f = make([("Key_Name", "log"), ("Parser", "docker")])
    b = f.filter(batch([{"log": '{"log":"x\\n","stream":"stderr","time":"2024-01-01T00:00:00.000000001Z"}'}]))
    assert b is not None and b.records[0]["log"] == "x\n"
    assert b.times == [calendar.timegm((2024, 1, 1, 0, 0, 0)) * 10**9 + 1]


def test_configuration_errors() -> None:
    with pytest.raises(ConfigValueError) as e:
        make([("Key_Name", "log"), ("Parser", "nope")])
    assert e.value.key == "parser" and "known:" in e.value.message
    with pytest.raises(ConfigValueError) as e:
        make([("Parser", "json")])
    assert e.value.key == "key_name"
    with pytest.raises(ConfigValueError):
        make([("Key_Name", "log"), ("Parser", "json")], parsers=None)
