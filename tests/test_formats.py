"""Record serializations shared by the stdout and file outputs, as Fluent Bit writes them."""

from __future__ import annotations

import json

import pytest

from logfwd import formats

T = 1_700_000_000_123_456_789  # 2023-11-14T22:13:20.123456789Z
RECS = [{"log": "a \"q\"\n", "n": 1}, {"nested": {"k": [1, 2.5, None, True]}}]


def test_json_lines_with_and_without_date() -> None:
    out = formats.format_json_lines([T, T], RECS)
    assert [json.loads(x) for x in out.splitlines()] == [{"date": T / 1e9, **RECS[0]}, {"date": T / 1e9, **RECS[1]}]
    plain = formats.format_json_lines([T, T], RECS, None)
    assert [json.loads(x) for x in plain.splitlines()] == RECS and plain.endswith(b"\n")
    assert formats.format_json_lines([], [], None) == b"" and formats.format_json_lines([], []) == b""


@pytest.mark.parametrize(
    ("fmt", "value"),
    [
        ("double", T / 1e9),
        ("epoch", 1_700_000_000),
        ("epoch_ms", 1_700_000_000_123),
        ("iso8601", "2023-11-14T22:13:20.123456Z"),
        ("java_sql_timestamp", "2023-11-14 22:13:20.123456"),
    ],
)
def test_date_formats(fmt: str, value: object) -> None:
    assert formats.date_formatter(fmt)(T) == value


def test_unknown_date_format_names_the_choices() -> None:
    with pytest.raises(ValueError, match="iso8601"):
        formats.date_formatter("rfc822")


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("", None), ("off", None), ("false", None),
                                                 ("ts", "ts"), (" date ", "date")])
def test_date_key_can_be_switched_off(value: str | None, expected: str | None) -> None:
    assert formats.parse_date_key(value) == expected


def test_json_stream_and_array() -> None:
    assert formats.format_json_stream([T], [{"a": 1}], None) == b'{"a":1}'
    assert json.loads(formats.format_json_array([T, T], RECS, None)) == RECS


def test_json_dumps_never_raises() -> None:
    assert formats.json_dumps({"b": b"\xff", "s": {1}, 2: "k"}) == b'{"b":"\xef\xbf\xbd","s":[1],"2":"k"}'
    big = 2**70
    assert json.loads(formats.json_dumps({"n": big})) == {"n": big}  # beyond orjson's 64-bit integers


def test_msgpack_print_is_fluent_bit_stdout() -> None:
    out = formats.format_msgpack_print("app", [T, T], RECS).decode()
    assert out == (
        '[0] app: [[1700000000.123456789, {}], {"log"=>"a \\"q\\"\\n", "n"=>1}]\n'
        '[1] app: [[1700000000.123456789, {}], {"nested"=>{"k"=>[1, 2.500000, nil, true]}}]\n'
    )


def test_out_file_default_format_fast_and_generic_paths_agree() -> None:
    fast = formats.format_out_file("app", [T, T], RECS)
    generic = formats.format_out_file("app", tuple([T, T]), tuple(RECS))
    assert fast == generic
    assert fast.splitlines()[0] == b'app: [1700000000.123456789, {"log":"a \\"q\\"\\n","n":1}]'


def test_csv_with_header_and_empty_records() -> None:
    out = formats.format_csv([T, T, T], [{"a": "x", "b": 1}, {}, {"a": "y", "b": 2}], header=True)
    assert out.decode().splitlines() == [
        'timestamp,"a","b"', '1700000000.123456789,"x",1', '1700000000.123456789,"y",2'
    ]
    assert formats.format_csv([T], [{}]) == b""


def test_ltsv() -> None:
    assert formats.format_ltsv([T], [{"a": "x", "n": 1}]) == b'"time":1700000000.123457\t"a":"x"\t"n":1\n'


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{time} {log}", "1700000000.123457 hello"),
        ("{missing}!", "{missing}!"),  # a typo stays visible
        ("{{log}", "{hello"),  # a second '{' makes the first literal
        ("open {log", "open {log"),
        ("{n}/{d}", '3/{"k"=>"v"}'),
    ],
)
def test_template(template: str, expected: str) -> None:
    rec = {"log": "hello", "n": 3, "d": {"k": "v"}}
    assert formats.format_template(template, [T], [rec]) == (expected + "\n").encode()
    assert formats.format_template(formats.compile_template(template), [T], [rec]) == (expected + "\n").encode()
