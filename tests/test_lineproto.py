"""The line protocol serializer: exact output for each rule (the real-server round trip of the
same rules is in test_out_influxdb.py)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logfwd.plugins.out_influxdb._lineproto import Sequencer
from logfwd.plugins.out_influxdb.lineproto import (
    LineEncoder,
    escape_key,
    escape_measurement,
    escape_string,
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


def test_sequence_tag_is_written_as_given() -> None:
    assert one({"v": 1}, seq=7, sequence_tag="_seq") == f"app.log,_seq=7 v=1 {T}"


def test_sequencer_numbers_points_that_share_a_timestamp() -> None:
    seq = Sequencer()
    assert seq.take([T, T + 1, T + 2]) == [0, 0, 0]  # distinct timestamps: one series
    assert seq.take([T, T + 1, T, T + 1, T]) == [1, 1, 2, 2, 3]  # remembered across calls and interleaved
    # compared as written: at second precision these are one timestamp (floored, negatives too)
    s = Sequencer()
    assert s.take([T, T + 1, -1, -(10**9)], 10**9) == [0, 1, 0, 1]
    assert s.take([2**70, 2**70 + 1], 10**9) == [0, 1]  # beyond 64 bits: Python's floor division
    # a stamp from a time beyond 64 bits is remembered like any other: the same second from a
    # time that fits is its second point, not a new first one
    s = Sequencer()
    assert s.take([2**63, 2**63 - 1], 10**9) == [0, 1]


def test_sequencer_remembers_a_window_of_timestamps() -> None:
    seq = Sequencer(window=2)
    assert seq.take([1, 2, 3]) == [0, 0, 0]  # 1 and 2 filled a generation; 3 starts the next
    assert seq.take([1, 3]) == [1, 1]  # the previous generation is still consulted
    assert seq.take([4, 5, 1]) == [0, 0, 0]  # two more generations: 1 is forgotten


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


# --------------------------------------------------------------------------- kernel path vs reference

from hypothesis import HealthCheck  # noqa: E402

from logfwd.plugins.out_influxdb import lineproto  # noqa: E402

# Names made of the characters every escaping rule is about, plus lone surrogates.
_tricky = st.text(st.sampled_from(list("ab ,=\\\n\r\"\u00e9\u65e5\U0001f600") + ["\ud800"]), max_size=8)
_name = _tricky | st.sampled_from(["time", "m", "t", "tags", "host", "", "a.b"])


class _Sub(dict):
    """A map subclass: flattened like a dict by the reference."""


_leaf = (
    st.none() | st.booleans() | st.integers(min_value=-(2**65), max_value=2**65) | st.floats()
    | _tricky | st.binary(max_size=5) | st.lists(st.integers(0, 3) | _tricky, max_size=2)
)
_value = st.recursive(
    _leaf,
    lambda inner: st.dictionaries(_name, inner, max_size=3) | st.dictionaries(_name, inner, max_size=2).map(_Sub),
    max_leaves=6,
)
_record = st.dictionaries(_name | st.integers(0, 2) | st.binary(max_size=2), _value, max_size=6)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    recs=st.lists(_record, max_size=6),
    tag=_name,
    measurement=st.none() | _name,
    measurement_key=st.none() | _name,
    tag_keys=st.lists(_name, max_size=3),
    auto_tags=st.booleans(),
    tags_list_key=st.none() | st.just("tags"),
    add_integer_suffix=st.booleans(),
    precision=st.sampled_from(list(lineproto.PRECISIONS)),
    sequence_tag=st.none() | _name,
    with_seqs=st.booleans(),
)
def test_fast_encoder_is_byte_identical_to_reference(recs: list, tag: str, with_seqs: bool, **kw) -> None:
    for j, r in enumerate(recs):
        if j % 2 and kw["tags_list_key"]:
            r["tags"] = list(r)[:2]
    enc = LineEncoder(**kw)
    times = [T + 1_000_003 * j for j in range(len(recs))]
    seqs = list(range(len(recs))) if with_seqs else None
    fast = enc.encode(tag, times, recs, seqs)
    ref = enc.encode_py(tag, times, recs, seqs)
    assert fast.lines == ref.lines
    assert (fast.index, fast.skipped, fast.dropped_values) == (ref.index, ref.skipped, ref.dropped_values)
    assert fast.body() == ref.body()
    again = enc.encode(tag, times, recs, seqs)  # with the key cache warm
    assert again.lines == ref.lines


@settings(max_examples=300, deadline=None)
@given(_tricky | st.text())
def test_escape_kernels_match_reference(name: str) -> None:
    assert lineproto.escape_measurement(name) == lineproto.py_escape_measurement(name)
    assert lineproto.escape_key(name) == lineproto.py_escape_key(name)
    assert lineproto.escape_tag_value(name) == lineproto.py_escape_tag_value(name)
    assert lineproto.escape_string(name) == lineproto.py_escape_string(name)


def test_map_subclass_and_odd_keys_in_fast_path() -> None:
    rec = {"a": _Sub(b=1), b"k": 2, 3: "x", "f": math.nan}
    enc = LineEncoder(sequence_tag=None)
    fast = enc.encode("m", [T], [rec])
    assert fast.lines == [f'm a.b=1,k=2,3="x" {T}'] and fast.dropped_values == 1
    assert fast.lines == enc.encode_py("m", [T], [rec]).lines


@settings(max_examples=200, deadline=None)
@given(recs=st.lists(_record, min_size=1, max_size=8), data=st.data())
def test_body_of_any_group_is_those_points(recs: list, data: st.DataObject) -> None:
    """A split request's body (bisection sends halves, then single points) is exactly the
    reference lines of that group, joined; negative times are floored as ``//`` does."""
    enc = LineEncoder(precision="ms")
    times = [-T + 1_000_003 * j for j in range(len(recs))]
    fast = enc.encode("m", times, recs)
    ref = enc.encode_py("m", times, recs)
    assert fast.lines == ref.lines and fast.body() == ref.body()
    group = sorted(data.draw(st.sets(st.integers(0, max(len(fast) - 1, 0)), max_size=len(fast))))
    group = [j for j in group if j < len(fast)]
    want = "\n".join(ref.lines[j] for j in group).encode("utf-8", "surrogatepass")
    assert fast.body(group) == want
    assert fast.body(range(len(fast))) == fast.body()
