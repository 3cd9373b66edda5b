"""The _bulk body builder: what Elasticsearch receives for each option (no server needed)."""

from __future__ import annotations

import calendar
import json
from typing import Any

import pytest

from logfwd.plugins._es.bulk import BulkSettings, build_bulk, derived_id, replace_dots

T0 = calendar.timegm((2024, 3, 9, 23, 59, 58)) * 1_000_000_000 + 123_456_789  # 2024-03-09T23:59:58.123456789Z
DAY = 86400 * 1_000_000_000


def pairs(body: bytes) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    assert body.endswith(b"\n")
    lines = [json.loads(x) for x in body.decode().split("\n") if x]
    assert len(lines) % 2 == 0
    return [(lines[i], lines[i + 1]) for i in range(0, len(lines), 2)]


def build(settings: BulkSettings, records: list[dict[str, Any]], times: list[int] | None = None,
          keys: list[str | None] | None = None, tag: str = "app.log", now_ns: int | None = None):
    times = times if times is not None else [T0] * len(records)
    return build_bulk(settings, tag, times, records, keys, now_ns=now_ns)


def test_default_shape_is_fluent_bits() -> None:
    req = build(BulkSettings(), [{"log": "hello", "n": 1}])
    [(action, doc)] = pairs(req.body)
    assert action == {"create": {"_index": "fluent-bit"}}
    # time key first, millisecond fraction, UTC 'Z'
    assert list(doc) == ["@timestamp", "log", "n"]
    assert doc == {"@timestamp": "2024-03-09T23:59:58.123Z", "log": "hello", "n": 1}
    assert req.positions == [0] and req.failed == []


def test_type_only_without_suppress() -> None:
    [(action, _)] = pairs(build(BulkSettings(suppress_type_name=False, type="flb_type"), [{"a": 1}]).body)
    assert action == {"create": {"_index": "fluent-bit", "_type": "flb_type"}}


def test_time_key_options() -> None:
    s = BulkSettings(time_key="ts", time_key_format="%Y/%m/%d %H:%M:%S", time_key_nanos=True)
    [(_, doc)] = pairs(build(s, [{"a": 1}]).body)
    assert doc["ts"] == "2024/03/09 23:59:58.123456789Z" and "@timestamp" not in doc


def test_record_keeps_its_own_time_key() -> None:
    # Fluent Bit would emit the key twice (Elasticsearch rejects the duplicate field).
    [(_, doc)] = pairs(build(BulkSettings(), [{"@timestamp": "2020-01-01T00:00:00Z", "a": 1}]).body)
    assert doc["@timestamp"] == "2020-01-01T00:00:00Z"


def test_logstash_index_names_by_record_date() -> None:
    s = BulkSettings(logstash_format=True, logstash_prefix="web", logstash_prefix_separator="_",
                     logstash_dateformat="%Y.%m.%d")
    req = build(s, [{"a": 1}, {"a": 2}, {"a": 3}], times=[T0, T0 + 3 * 1_000_000_000, T0 + DAY])
    assert [a["create"]["_index"] for a, _ in pairs(req.body)] == ["web_2024.03.09", "web_2024.03.10",
                                                                  "web_2024.03.10"]


def test_logstash_prefix_key_and_fallback() -> None:
    s = BulkSettings(logstash_format=True, logstash_prefix_key="$kubernetes['namespace_name']")
    recs = [{"kubernetes": {"namespace_name": "payments"}}, {"kubernetes": {}}, {"other": 1}]
    names = [a["create"]["_index"] for a, _ in pairs(build(s, recs).body)]
    assert names == ["payments-2024.03.09", "logstash-2024.03.09", "logstash-2024.03.09"]


def test_current_time_index() -> None:
    s = BulkSettings(logstash_format=True, current_time_index=True)
    [(a, d)] = pairs(build(s, [{"a": 1}], times=[0], now_ns=T0).body)
    assert a["create"]["_index"] == "logstash-2024.03.09"
    assert d["@timestamp"] == "1970-01-01T00:00:00.000Z"  # the record keeps its own time


def test_index_strftime_uses_record_time() -> None:
    req = build(BulkSettings(index="app-%Y.%m"), [{"a": 1}, {"a": 1}], times=[T0, T0 + 30 * DAY])
    assert [a["create"]["_index"] for a, _ in pairs(req.body)] == ["app-2024.03", "app-2024.04"]


def test_tag_key_and_replace_dots() -> None:
    s = BulkSettings(include_tag_key=True, tag_key="tag", replace_dots=True)
    rec = {"a.b": 1, "nested": {"c.d": {"e.f": 2}}, "list": [{"g.h": 3}, "x.y"]}
    [(_, doc)] = pairs(build(s, [rec], tag="kube.var.log").body)
    assert doc == {"@timestamp": "2024-03-09T23:59:58.123Z", "tag": "kube.var.log", "a_b": 1,
                   "nested": {"c_d": {"e_f": 2}}, "list": [{"g_h": 3}, "x.y"]}
    assert rec == {"a.b": 1, "nested": {"c.d": {"e.f": 2}}, "list": [{"g.h": 3}, "x.y"]}  # input untouched
    assert replace_dots(["a.b", {"k.k": None}]) == ["a.b", {"k_k": None}]


def test_generate_id_is_content_hash() -> None:
    s = BulkSettings(generate_id=True)
    a = pairs(build(s, [{"m": "x"}, {"m": "x"}, {"m": "y"}]).body)
    ids = [x["create"]["_id"] for x, _ in a]
    assert ids[0] == ids[1] != ids[2]
    assert len(ids[0]) == 36 and ids[0].count("-") == 4  # UUID-shaped, like Fluent Bit's
    again = [x["create"]["_id"] for x, _ in pairs(build(s, [{"m": "x"}]).body)]
    assert again[0] == ids[0]
    other_time = [x["create"]["_id"] for x, _ in pairs(build(s, [{"m": "x"}], times=[T0 + 1_000_000]).body)]
    assert other_time[0] != ids[0]


def test_id_key_overrides_generate_id() -> None:
    s = BulkSettings(generate_id=True, id_key="$meta['id']")
    recs = [{"meta": {"id": "abc"}}, {"meta": {"id": 42}}, {"meta": {}}]
    ids = [a["create"].get("_id") for a, _ in pairs(build(s, recs).body)]
    assert ids[0] == "abc" and ids[1] == "42"
    assert ids[2] is not None and len(ids[2]) == 36  # falls back to Generate_ID


def test_derived_ids_from_origin_keys() -> None:
    s = BulkSettings(id_mode="derived")
    recs = [{"log": "same line"}, {"log": "same line"}]
    keys: list[str | None] = ["fp1:100", "fp1:200"]
    ids = [a["create"]["_id"] for a, _ in pairs(build(s, recs, keys=keys).body)]
    assert ids[0] != ids[1]  # identical lines at different offsets stay two documents
    replay = [a["create"]["_id"] for a, _ in pairs(build(s, recs, keys=keys).body)]
    assert replay == ids  # a replay after a crash gets the same ids
    assert ids[0] == derived_id("app.log", "fp1:100")
    # same key under another tag (another file/stream) is another document
    assert [a["create"]["_id"] for a, _ in pairs(build(s, recs[:1], keys=keys[:1], tag="other").body)] != ids[:1]


def test_derived_without_key_hashes_content_and_exact_time() -> None:
    s = BulkSettings(id_mode="derived")
    r1 = [a["create"]["_id"] for a, _ in pairs(build(s, [{"m": 1}, {"m": 1}], times=[T0, T0 + 1]).body)]
    assert r1[0] != r1[1]  # same ms, different ns: not collapsed
    r2 = [a["create"]["_id"] for a, _ in pairs(build(s, [{"m": 1}], times=[T0]).body)]
    assert r2[0] == r1[0]


@pytest.mark.parametrize(
    "op, action, body",
    [
        ("index", "index", lambda d: d),
        ("create", "create", lambda d: d),
        ("update", "update", lambda d: {"doc": d}),
        ("upsert", "update", lambda d: {"doc": d, "doc_as_upsert": True}),
    ],
)
def test_write_operations(op: str, action: str, body: Any) -> None:
    s = BulkSettings(write_operation=op, id_key="id")
    [(a, d)] = pairs(build(s, [{"id": "k1", "v": 2}]).body)
    assert a == {action: {"_index": "fluent-bit", "_id": "k1"}}
    assert d == body({"@timestamp": "2024-03-09T23:59:58.123Z", "id": "k1", "v": 2})


def test_data_stream_shape() -> None:
    # A data stream takes only 'create' actions, and every document needs @timestamp.
    s = BulkSettings(index="logs-app-default", write_operation="create")
    for a, d in pairs(build(s, [{"m": 1}, {"m": 2}]).body):
        assert list(a) == ["create"] and a["create"]["_index"] == "logs-app-default"
        assert "_type" not in a["create"]
        assert d["@timestamp"].endswith("Z")


def test_odd_values_and_bad_records() -> None:
    recs: list[Any] = [
        {"raw": b"bytes \xff value", "set": {1}, "when": object.__new__(type("X", (), {"__str__": lambda s: "X!"}))},
        {"too_big": 1 << 70},
        "not a map",
        {1: "int key"},
    ]
    req = build(BulkSettings(), recs)
    assert req.positions == [0, 3]
    assert [i for i, _ in req.failed] == [1, 2]
    assert "JSON" in req.failed[0][1] and "not a map" in req.failed[1][1]
    docs = [d for _, d in pairs(req.body)]
    assert docs[0]["raw"] == "bytes \ufffd value" and docs[0]["set"] == [1] and docs[0]["when"] == "X!"
    assert docs[1]["1"] == "int key"


def test_unicode_and_escaping_round_trip() -> None:
    rec = {"msg": 'quote " newline \n tab \t ü 日本 😀', "ctrl": "\x00\x1f"}
    [(_, doc)] = pairs(build(BulkSettings(), [rec]).body)
    assert doc["msg"] == rec["msg"] and doc["ctrl"] == rec["ctrl"]


def test_empty_chunk() -> None:
    req = build(BulkSettings(), [])
    assert req.body == b"" and req.positions == []


def test_empty_record_and_tag_key_collision() -> None:
    s = BulkSettings(include_tag_key=True, tag_key="tag")
    docs = [d for _, d in pairs(build(s, [{}, {"tag": "mine", "a": 1}], tag="t1").body)]
    assert docs[0] == {"@timestamp": "2024-03-09T23:59:58.123Z", "tag": "t1"}
    assert docs[1] == {"@timestamp": "2024-03-09T23:59:58.123Z", "tag": "mine", "a": 1}
    [(_, d)] = pairs(build(BulkSettings(), [{}]).body)
    assert d == {"@timestamp": "2024-03-09T23:59:58.123Z"}


def test_time_key_format_is_json_escaped() -> None:
    [(_, d)] = pairs(build(BulkSettings(time_key='t"k', time_key_format='%Y "q" \\'), [{"a": 1}]).body)
    assert d == {'t"k': '2024 "q" \\.123Z', "a": 1}


# --------------------------------------------------------------------------- kernel path vs reference

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from logfwd.plugins._es import bulk as esbulk  # noqa: E402

_KEYS = st.sampled_from(["log", "a.b", "@timestamp", "ts", "tag", "id", "x.y.z", "n", "", "ü.日"])
_LEAF = (
    st.none() | st.booleans() | st.integers(min_value=-(2**65), max_value=2**65)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12) | st.binary(max_size=6)
)
_VALUE = st.recursive(_LEAF, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
                      max_leaves=8)
_RECORD = st.dictionaries(_KEYS | st.integers(0, 3), _VALUE, max_size=5) | st.sampled_from(["text", None, 3, [1]])
_TIME = st.integers(min_value=esbulk._KERNEL_MIN_NS, max_value=esbulk._KERNEL_MAX_NS) | st.integers(
    min_value=-5 * DAY, max_value=T0 + 400 * DAY)


@st.composite
def kernel_settings(draw: st.DrawFn) -> BulkSettings:
    """Option combinations the kernel path covers (ISO time format, tag key != time key)."""
    time_key = draw(st.sampled_from(["@timestamp", "ts", 't"k']))
    tag_key = draw(st.sampled_from(["tag", "flb-key", "log"]))
    return BulkSettings(
        index=draw(st.sampled_from(["fluent-bit", "app-%Y.%m.%d", 'q"uote'])),
        suppress_type_name=draw(st.booleans()),
        logstash_format=draw(st.booleans()),
        logstash_prefix_key=draw(st.sampled_from([None, "tag", "$a.b", "$n"])),
        logstash_dateformat=draw(st.sampled_from(["%Y.%m.%d", "%Y-%W"])),
        time_key=time_key,
        time_key_nanos=draw(st.booleans()),
        include_tag_key=draw(st.booleans()),
        tag_key=tag_key,
        generate_id=draw(st.booleans()),
        id_key=draw(st.sampled_from([None, "id", "$log"])),
        id_mode=draw(st.sampled_from(["none", "derived"])),
        write_operation=draw(st.sampled_from(esbulk.WRITE_OPERATIONS)),
        replace_dots=draw(st.booleans()),
        current_time_index=draw(st.booleans()),
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    s=kernel_settings(),
    data=st.lists(st.tuples(_TIME, _RECORD, st.none() | st.sampled_from(["fp:1", "fp:2", "fp:3"])), max_size=8),
    tag=st.sampled_from(["app.log", "kube.日本", 'q"t']),
)
def test_kernel_path_is_byte_identical_to_python_builder(s: BulkSettings, data: list[Any], tag: str) -> None:
    times = [t for t, _, _ in data]
    records = [r for _, r, _ in data]
    keys = [k for _, _, k in data]
    assert esbulk._kernel_covers(s, times)
    # The kernel path itself (no fallback): a _Fallback here would fail the test.
    fast = esbulk._build_bulk_kernel(s, tag, times, records, keys, T0)
    ref = esbulk.build_bulk_py(s, tag, times, records, keys, T0)
    assert fast.body == ref.body
    assert fast.positions == ref.positions
    assert fast.failed == ref.failed
    assert build(s, records, times, keys, tag, T0).body == ref.body


def test_cases_outside_the_kernel_use_the_python_builder() -> None:
    class Sub(dict):  # a map to the Python builder, not an exact dict to the kernel
        pass

    far = 300_000_000_000 * 1_000_000_000  # year 11476: strftime writes 5 digits
    cases = [
        (BulkSettings(time_key_format="%d/%m/%Y %H:%M:%S"), [{"a": 1}], [T0]),
        (BulkSettings(), [{"a": 1}, {"a": 2}], [T0, far]),
        (BulkSettings(), [Sub(a=1), {"a": 2}], [T0, T0]),
        (BulkSettings(include_tag_key=True, tag_key="@timestamp"), [{"a": 1}], [T0]),
    ]
    for s, recs, times in cases:
        got = build_bulk(s, "t", times, recs, None, now_ns=T0)
        ref = esbulk.build_bulk_py(s, "t", times, recs, None, now_ns=T0)
        assert (got.body, got.positions, got.failed) == (ref.body, ref.positions, ref.failed)
        assert got.positions == list(range(len(recs)))
    assert b'"11476-' in build_bulk(BulkSettings(), "t", [far], [{}]).body
