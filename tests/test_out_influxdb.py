"""The ``influxdb`` output against a real InfluxDB 1.6 (and VictoriaMetrics for the v2 API).

The plugin is driven directly (config → setup → start → flush → stop under trio), and what
arrived is read back with ``/query``.
"""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
import trio

from logfwd.plugin import Chunk, Result
from logfwd.plugins.out_influxdb.plugin import InfluxDBOutput

from .backends._proc import free_port
from .backends.influx import ADMIN_PASSWORD, ADMIN_USER, InfluxServer, VictoriaServer
from .clikit import run_until
from .pluginkit import flush_all, make_chunk, make_plugin

pytestmark = pytest.mark.backend

T0 = 1_750_000_000_000_000_000  # a fixed time in ns (2025-06-15)


def make_output(**raw: Any) -> InfluxDBOutput:
    """Build the plugin as the engine does: each option converted from its string form."""
    return make_plugin(InfluxDBOutput, parsers=None, **raw)


def chunk(records: list[dict[str, Any]], tag: str = "app.log", times: list[int] | None = None) -> Chunk:
    return make_chunk(records, times, tag, t0=T0, step=1000)


def server_opts(server: InfluxServer, db: str) -> dict[str, str]:
    return {"host": "127.0.0.1", "port": str(server.port), "database": db}


# ---------------------------------------------------------------- happy path


def test_points_arrive_with_types_tags_and_times(influxdb: InfluxServer, influx_db: str) -> None:
    out = make_output(**server_opts(influxdb, influx_db), tag_keys="host", add_integer_suffix="on")
    records = [
        {"host": f"h{i % 3}", "msg": f"line {i}", "n": i, "ratio": i / 4, "ok": i % 2 == 0, "k8s": {"pod": "p"}}
        for i in range(50)
    ]
    [res] = flush_all(out, chunk(records))
    assert res.delivered_all, res
    rows = sorted(influxdb.rows('SELECT * FROM "app.log"', influx_db), key=lambda r: r["time"])
    assert len(rows) == 50
    for i, row in enumerate(rows):
        assert row["time"] == T0 + i * 1000
        assert row["host"] == f"h{i % 3}" and row["msg"] == f"line {i}"
        assert row["n"] == i and row["ratio"] == i / 4 and row["ok"] is (i % 2 == 0)
        assert row["k8s.pod"] == "p"
    fields = influxdb.query('SHOW FIELD KEYS FROM "app.log"', influx_db)["results"][0]["series"][0]["values"]
    assert ["n", "integer"] in fields and ["ratio", "float"] in fields and ["ok", "boolean"] in fields
    # distinct timestamps: every point is the first of its timestamp, so all are one series
    assert {r["_seq"] for r in rows} == {"0"}
    assert len(influxdb.query('SHOW SERIES FROM "app.log"', influx_db)["results"][0]["series"][0]["values"]) == 3
    assert out.metrics["requests"] == 1 and out.metrics["request_seconds"] > 0


def test_sequence_tag_keeps_equal_timestamps_apart(influxdb: InfluxServer, influx_db: str) -> None:
    same = [T0] * 5
    with_seq = make_output(**server_opts(influxdb, influx_db), measurement="seq_on")
    without = make_output(**server_opts(influxdb, influx_db), measurement="seq_off", sequence_tag="off")
    assert flush_all(with_seq, chunk([{"v": i} for i in range(5)], times=same))[0].delivered_all
    assert flush_all(without, chunk([{"v": i} for i in range(5)], times=same))[0].delivered_all
    assert influxdb.count("seq_on", influx_db) == 5
    # without the tag, InfluxDB keeps one point per series and timestamp: the last one wins
    assert [r["v"] for r in influxdb.rows("SELECT * FROM seq_off", influx_db)] == [4]


def test_precision_seconds(influxdb: InfluxServer, influx_db: str) -> None:
    out = make_output(**server_opts(influxdb, influx_db), precision="s", measurement="prec")
    assert flush_all(out, chunk([{"v": 1}], times=[T0 + 987_654_321]))[0].delivered_all
    [row] = influxdb.rows("SELECT * FROM prec", influx_db)
    assert row["time"] == T0  # truncated to the second


def test_records_without_fields_are_skipped_and_counted(influxdb: InfluxServer, influx_db: str) -> None:
    out = make_output(**server_opts(influxdb, influx_db), measurement="skip", tag_keys="only")
    res = flush_all(out, chunk([{"only": "tag"}, {}, {"v": 1}]))[0]
    assert res.delivered_all
    assert out.metrics["skipped_records"] == 2
    assert influxdb.count("skip", influx_db) == 1


# ---------------------------------------------------------------- escaping round trip

WEIRD = [
    "plain",
    "with space",
    "comma,inside",
    "equals=sign",
    'double"quote',
    "back\\slash",
    "back\\slash then, comma= and space",
    "tab\there",
    "ünïcødé 中文 🚀",
    "single'quote",
    "#hash",
]


def test_escaping_round_trip(influxdb: InfluxServer, influx_db: str) -> None:
    """Weird measurement, tag and field names and values come back exactly as sent."""
    records = [
        {"m": f"m {w}", "tag " + w: "tv " + w, "field " + w: "fv " + w + '\n"second line"\\', "tags": ["tag " + w]}
        for w in WEIRD
    ]
    # Tags_List_Key names the tag keys per record (keys with spaces cannot be listed in Tag_Keys)
    out = make_output(**server_opts(influxdb, influx_db), measurement_key="m", sequence_tag="off",
                      tags_list_enabled="on")
    res = flush_all(out, chunk(records))[0]
    assert res.delivered_all, res
    measurements = {v[0] for v in influxdb.query("SHOW MEASUREMENTS", influx_db)["results"][0]["series"][0]["values"]}
    assert measurements == {f"m {w}" for w in WEIRD}
    for w in WEIRD:
        [row] = influxdb.rows(influx_select(f"m {w}"), influx_db)
        assert row["tag " + w] == "tv " + w
        assert row["field " + w] == "fv " + w + '\n"second line"\\'


def influx_select(measurement: str) -> str:
    return 'SELECT * FROM "' + measurement.replace("\\", "\\\\").replace('"', '\\"') + '"'


def test_names_influxdb_cannot_store_are_adapted_not_refused(influxdb: InfluxServer, influx_db: str) -> None:
    out = make_output(**server_opts(influxdb, influx_db), measurement="adapt", tag_keys="t", sequence_tag="off")
    rec = {"time": "x", "t": "ends\\", "k\nnl": 1, "nan": float("nan"), "v": 2, "odd\\ run": 3}
    res = flush_all(out, chunk([rec]))[0]
    assert res.delivered_all, res
    [row] = influxdb.rows("SELECT * FROM adapt", influx_db)
    assert row["time_"] == "x" and row["t"] == "ends\\_" and row["k\\nnl"] == 1 and row["v"] == 2
    assert row["odd\\\\ run"] == 3  # a backslash right before an escaped space is doubled
    assert "nan" not in row


def test_random_names_never_break_the_line(influxdb: InfluxServer, influx_db: str) -> None:
    """Names and values built from every character line protocol treats specially are all
    accepted (no point refused, none merged into another), and string values read back exactly."""

    rng = random.Random(4242)
    alphabet = [" ", ",", "=", "\\", '"', "\n", "\t", "a", "é", "\\ ", "\\,", "=\\"]

    def word() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8)))

    records = [{"tags": [f"t{i}"], f"t{i}": word(), f"f {word()}": 1, "s": word()} for i in range(300)]
    out = make_output(**server_opts(influxdb, influx_db), measurement="fuzz", sequence_tag="off",
                      tags_list_enabled="on")
    res = flush_all(out, chunk(records))[0]
    assert res.delivered_all, res.refused[:3]
    assert out.metrics["requests"] == 1
    rows = sorted(influxdb.rows("SELECT * FROM fuzz", influx_db), key=lambda r: r["time"])
    assert [r["s"] for r in rows] == [rec["s"] for rec in records]


# ---------------------------------------------------------------- refused points


def test_type_conflict_refuses_only_the_bad_points(influxdb: InfluxServer, influx_db: str) -> None:
    # field types are per shard (a week of time): seed the field as a string next to T0
    status, body = influxdb.write(f'conflict,_seq=x v="a string" {T0 - 1}', influx_db)
    assert status == 204, body
    records = [{"v": i if i in (3, 7, 15) else f"s{i}"} for i in range(20)]
    out = make_output(**server_opts(influxdb, influx_db), measurement="conflict", add_integer_suffix="on")
    res = flush_all(out, chunk(records))[0]
    assert res.retry is None and not res.retry_all
    assert [i for i, _ in res.refused] == [3, 7, 15]
    for _, reason in res.refused:
        assert reason.startswith("HTTP 400: partial write: field type conflict")
        assert 'input field \\"v\\"' in reason or 'input field "v"' in reason
    # the 17 good points are there exactly once (re-sent halves overwrote themselves), plus the seed
    rows = influxdb.rows("SELECT * FROM conflict", influx_db)
    assert len(rows) == 18
    assert sorted(r["v"] for r in rows if r["time"] != T0 - 1) == sorted(f"s{i}" for i in range(20) if i not in (3, 7, 15))
    assert out._seq_memo == {}  # resolved records are forgotten


def test_all_points_refused_in_one_request(influxdb: InfluxServer, influx_db: str) -> None:
    assert influxdb.write(f'allbad v="s" {T0 - 1}', influx_db)[0] == 204
    out = make_output(**server_opts(influxdb, influx_db), measurement="allbad", add_integer_suffix="on")
    res = flush_all(out, chunk([{"v": i} for i in range(10)]))[0]
    assert [i for i, _ in res.refused] == list(range(10))
    assert out.metrics["requests"] == 1  # the server said dropped=10: no need to split
    assert influxdb.count("allbad", influx_db) == 1


# ---------------------------------------------------------------- transient failures


def test_server_down_then_up_nothing_lost(influxdb: InfluxServer, influx_db: str) -> None:
    out = make_output(**server_opts(influxdb, influx_db), measurement="downup", **{"net.connect_timeout": "2s"})
    records = [{"v": i} for i in range(30)]

    async def main() -> tuple[Result, Result]:
        await out.start()
        try:
            c = chunk(records, times=[T0] * 30)  # one timestamp: sequence values 0..29
            influxdb.stop()
            try:
                first = await out.flush(c)
            finally:
                await trio.to_thread.run_sync(influxdb.start)
            second = await out.flush(c)  # the engine's retry: same chunk, same records
            assert (await out.flush(chunk([{"v": 100 + i} for i in range(5)], times=[T0] * 5))).delivered_all
            return first, second
        finally:
            await out.stop()

    first, second = trio.run(main)
    assert first.retry_all and "connection error" in first.reason
    assert second.delivered_all
    rows = influxdb.rows("SELECT * FROM downup", influx_db)
    # the re-sent records kept the sequence values of their first attempt (so a request that
    # did reach the server before a failure is overwritten, not doubled); new ones come after
    assert sorted((r["v"], int(r["_seq"])) for r in rows) == [(float(i), i) for i in range(30)] + [
        (float(100 + i), 30 + i) for i in range(5)]
    assert out._seq_memo == {}


def test_unknown_database_is_retried(influxdb: InfluxServer) -> None:
    out = make_output(**server_opts(influxdb, "no_such_db"))
    res = flush_all(out, chunk([{"v": 1}]))[0]
    assert res.retry_all and "database not found" in res.reason


def test_nothing_listening_is_retried() -> None:

    out = make_output(host="127.0.0.1", port=str(free_port()))
    res = flush_all(out, chunk([{"v": 1}]))[0]
    assert res.retry_all and not res.refused


# ---------------------------------------------------------------- authentication


def test_wrong_password_retried_right_password_delivered(influxdb_auth: InfluxServer) -> None:
    db = influxdb_auth.create_database("authdb")
    try:
        base = {**server_opts(influxdb_auth, db), "measurement": "auth", "http_user": ADMIN_USER}
        bad = make_output(**base, http_passwd="wrong")
        res = flush_all(bad, chunk([{"v": i} for i in range(4)]))[0]
        assert res.retry_all and "401" in res.reason
        assert bad.metrics["auth_failures"] == 1
        assert influxdb_auth.query("SELECT * FROM auth", db)["results"][0].get("series") is None

        good = make_output(**base, http_passwd=ADMIN_PASSWORD)
        assert flush_all(good, chunk([{"v": i} for i in range(4)]))[0].delivered_all
        assert influxdb_auth.count("auth", db) == 4
    finally:
        influxdb_auth.drop_database(db)


# ---------------------------------------------------------------- API v2 request shape


def test_v2_write_with_bucket_org_and_token(victoria_metrics: VictoriaServer) -> None:
    out = make_output(host="127.0.0.1", port=str(victoria_metrics.port), bucket="logs", org="acme",
                      http_token="tok3n", measurement="v2m", tag_keys="host", precision="ms",
                      sequence_tag="off")  # VictoriaMetrics would make each _seq value its own series
    assert out.path == "/api/v2/write?org=acme&bucket=logs&precision=ms"
    assert out.headers["Authorization"] == "Token tok3n"
    now_ms = time.time_ns() // 1_000_000
    stamps = [now_ms - 3000, now_ms - 2000, now_ms - 1000]
    records = [{"host": "h1", "cpu": float(i), "n": i} for i in range(3)]
    res = flush_all(out, chunk(records, times=[t * 1_000_000 + 123 for t in stamps]))[0]
    assert res.delivered_all, res
    got: dict[str, list[tuple[int, float]]] = {}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        got = {
            s["metric"]["__name__"]: sorted(zip(s["timestamps"], s["values"], strict=True))
            for s in victoria_metrics.export('{__name__=~"v2m_.*"}')
            if s["metric"].get("host") == "h1"
        }
        if len(got.get("v2m_cpu", [])) == 3 and len(got.get("v2m_n", [])) == 3:
            break
        time.sleep(0.3)
    # values and millisecond timestamps as sent: measurement_field naming is VictoriaMetrics'
    assert got["v2m_cpu"] == list(zip(stamps, [0.0, 1.0, 2.0], strict=True))
    assert got["v2m_n"] == list(zip(stamps, [0, 1, 2], strict=True))


# ---------------------------------------------------------------- end to end through the CLI


def test_cli_dummy_to_influxdb(influxdb: InfluxServer, influx_db: str, tmp_path) -> None:

    conf = tmp_path / "influx.conf"
    conf.write_text(
        f"""[SERVICE]
    Flush        0.2
    Grace        5

[INPUT]
    Name         dummy
    Tag          e2e.influx
    Dummy        {{"message": "hello", "host": "web1", "n": 3}}
    Samples      25
    Rate         200

[OUTPUT]
    Name                influxdb
    Match               e2e.*
    Host                127.0.0.1
    Port                {influxdb.port}
    Database            {influx_db}
    Tag_Keys            host
    Add_Integer_Suffix  on
"""
    )
    def stored() -> int:
        try:
            return len(influxdb.rows('SELECT * FROM "e2e.influx"', influx_db))
        except Exception:  # the measurement does not exist yet
            return 0

    p = run_until(["-c", str(conf)], lambda _out: stored() >= 25, timeout=90)
    assert p.returncode == 0, p.stderr.decode()[-3000:]
    rows = influxdb.rows('SELECT * FROM "e2e.influx"', influx_db)
    assert len(rows) == 25
    assert all(r["message"] == "hello" and r["host"] == "web1" and r["n"] == 3 for r in rows)
