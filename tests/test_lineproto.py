"""The line protocol serializer: exact output for each rule (the real-server round trip of the
same rules is in test_out_influxdb.py)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logfwd.lineproto import (
    LineEncoder,
    escape_key,
    escape_measurement,
    escape_string,
    next_seq,
)

T = 1_700_000_000_123_456_789


def one(rec: dict, tag: str = "app.log", seq: int | None = None, **kw) -> str:
    kw.setdefault("sequence_tag", None)
    enc = LineEncoder(**kw).encode(tag, [T], [rec], [seq] if seq is not None else None)
    assert enc.index == [0], enc
    return enc.lines[0]


def test_basic_types_default_floats() -> None:
    line = one({"msg": "hi", "n": 3, "f": 1.5, "ok": True, "no": False, "none": None})
    assert line == f'app.log msg="hi",n=3,f=1.5,ok=true,no=false {T}'


def test_integer_suffix() -> None:
    assert one({"n": -3}, add_integer_suffix=True) == f"app.log n=-3i {T}"
    # beyond int64: no suffix (the server would refuse "…i"), written as a float
    assert one({"n": 2**63}, add_integer_suffix=True) == f"app.log n={2**63} {T}"


def test_escaping_rules() -> None:
    assert escape_measurement("a b,c=d") == "a\\ b\\,c=d"
    assert escape_key("k e,y=") == "k\\ e\\,y\\="
    assert escape_key("a\\b") == "a\\b"  # a lone backslash stays literal
    assert escape_key("ends\\") == "ends\\_"  # cannot end with a backslash
    assert escape_key("two\nlines") == "two\\nlines"
    assert escape_key("time") == "time_"
    assert escape_string('say "hi" \\ bye\nnext') == '"say \\"hi\\" \\\\ bye\nnext"'


def test_measurement_tag_and_fields_escaped_in_line() -> None:
    line = one({"f k": 'v"q', "t,k": "x y"}, tag="my tag,x", tag_keys=["t,k"])
    assert line == f'my\\ tag\\,x,t\\,k=x\\ y f\\ k="v\\"q" {T}'


def test_nested_maps_flattened_lists_as_json() -> None:
    rec = {"kubernetes": {"pod": "p1", "labels": {"app": "web"}}, "list": [1, "a"], "empty": {}}
    line = one(rec, tag_keys=["kubernetes.pod"])
    assert line == f'app.log,kubernetes.pod=p1 kubernetes.labels.app="web",list="[1,\\"a\\"]" {T}'


def test_auto_tags_and_tags_list() -> None:
    assert one({"a": "x", "n": 1}, auto_tags=True) == f"app.log,a=x n=1 {T}"
    rec = {"host": "h1", "dc": "eu", "v": 2, "tags": ["host"]}
    assert one(rec, tags_list_key="tags") == f'app.log,host=h1 dc="eu",v=2 {T}'


def test_measurement_options() -> None:
    assert one({"v": 1}, measurement="cpu") == f"cpu v=1 {T}"
    assert one({"m": "disk", "v": 1}, measurement_key="m") == f"disk v=1 {T}"
    # key missing or not a string: the default measurement
    assert one({"m": 5, "v": 1}, measurement_key="m") == f"app.log v=1 {T}"


def test_precisions() -> None:
    assert one({"v": 1}, precision="s").endswith(" 1700000000")
    assert one({"v": 1}, precision="ms").endswith(" 1700000000123")
    assert one({"v": 1}, precision="us").endswith(" 1700000000123456")
    with pytest.raises(ValueError):
        LineEncoder(precision="minutes")


def test_sequence_tag_and_wrap() -> None:
    assert one({"v": 1}, seq=7, sequence_tag="_seq") == f"app.log,_seq=7 v=1 {T}"
    assert next_seq(5) == 6 and next_seq(99_999) == 0


def test_unwritable_values_and_empty_records_skipped() -> None:
    enc = LineEncoder(sequence_tag=None, tag_keys=["t"])
    recs = [
        {"v": math.nan},  # NaN only: no field left
        {"t": "only-a-tag"},  # all keys are tags
        {},
        {"v": math.inf, "w": 2, "t": ""},  # inf dropped, empty tag value dropped
        {"": 1, "x": b"bytes"},
    ]
    out = enc.encode("m", [1, 2, 3, 4, 5], recs)
    assert out.skipped == [0, 1, 2]
    assert out.index == [3, 4]
    assert out.lines == ["m w=2 4", 'm x="bytes" 5']
    assert out.dropped_values == 2
    assert out.body([1]) == b'm x="bytes" 5'


_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_text, st.one_of(_text, st.integers(), st.floats(allow_nan=False), st.booleans()),
                       min_size=1, max_size=6), _text)
def test_any_record_gives_one_line_without_raw_newlines_outside_strings(rec: dict, tag: str) -> None:
    out = LineEncoder(auto_tags=True, sequence_tag="_seq").encode(tag, [T], [rec], [1])
    assert len(out.lines) + len(out.skipped) == 1
    for line in out.lines:
        # outside quoted string values a point never contains a raw line break
        unquoted = "".join(part for k, part in enumerate(_split_quoted(line)) if k % 2 == 0)
        assert "\n" not in unquoted and "\r" not in unquoted
        assert line.endswith(f" {T}")


def _split_quoted(line: str) -> list[str]:
    parts, cur, quoted, i = [], [], False, 0
    while i < len(line):
        ch = line[i]
        if quoted and ch == "\\" and i + 1 < len(line):
            cur.append(line[i : i + 2])
            i += 2
            continue
        if ch == '"':
            parts.append("".join(cur))
            cur, quoted = [], not quoted
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts
