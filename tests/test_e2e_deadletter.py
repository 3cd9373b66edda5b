"""End to end: what a backend refuses for good lands in the dead-letter file with its reason.

The issue's check: "Mapping conflicts land in the dead-letter file with the server's
reason." Through the real daemon, the real Elasticsearch stand-in and the real InfluxDB,
and with the input's checkpoint still moving past them (a refusal is resolved, not stuck).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

LOGFWD = str(Path(sys.executable).parent / "logfwd")


def _run(conf: Path, lines: list[dict[str, Any]]) -> subprocess.CompletedProcess[bytes]:
    data = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
    return subprocess.run([LOGFWD, "-c", str(conf)], input=data, capture_output=True, timeout=60)


def _dead_letters(storage: Path, output: str) -> list[dict[str, Any]]:
    path = storage / "rejected" / f"{output}.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_es_mapping_conflict_is_dead_lettered_with_reason(es_server: Any, tmp_path: Path) -> None:
    idx = f"dlq-{uuid.uuid4().hex[:8]}"
    status, body = es_server.request("PUT", f"/{idx}", {"mappings": {"properties": {"code": {"type": "integer"}}}})
    assert status == 200, body
    conf = tmp_path / "es.conf"
    conf.write_text(f"""
[SERVICE]
    Flush         0.2
    storage.path  {tmp_path}

[INPUT]
    Name   stdin
    Tag    app

[OUTPUT]
    Name   es
    Alias  es_app
    Match  *
    Host   127.0.0.1
    Port   {es_server.port}
    Index  {idx}
""")
    lines = [{"n": i, "code": i} for i in range(20)]
    lines[7]["code"] = "not-a-number"
    lines[13]["code"] = "also bad"
    p = _run(conf, lines)
    assert p.returncode == 0, p.stderr.decode()
    es_server.refresh(idx)
    assert es_server.count(idx) == 18
    dl = _dead_letters(tmp_path, "es_app")
    assert sorted(d["record"]["n"] for d in dl) == [7, 13]
    for d in dl:
        assert d["output"] == "es_app" and d["tag"] == "app"
        assert "parsing_exception" in d["reason"] and "code" in d["reason"]  # the server's own words


def test_influxdb_type_conflict_is_dead_lettered_with_reason(influxdb: Any, tmp_path: Path) -> None:
    db = f"dlq_{uuid.uuid4().hex[:8]}"
    influxdb.create_database(db)
    conf = tmp_path / "influx.conf"
    conf.write_text(f"""
[SERVICE]
    Flush         0.2
    storage.path  {tmp_path}

[INPUT]
    Name   stdin
    Tag    metric

[OUTPUT]
    Name      influxdb
    Match     *
    Host      127.0.0.1
    Port      {influxdb.port}
    Database  {db}
    Tag_Keys  n
""")
    # value is a float everywhere but in two records, where it is a string: a field type conflict.
    lines = [{"n": i, "value": i + 0.5} for i in range(10)]
    lines[4]["value"] = "four"
    lines[8]["value"] = "eight"
    p = _run(conf, lines)
    assert p.returncode == 0, p.stderr.decode()
    assert influxdb.count("metric", db) == 8
    dl = _dead_letters(tmp_path, "influxdb.0")
    assert sorted(d["record"]["n"] for d in dl) == [4, 8]
    assert all("conflict" in d["reason"] for d in dl)
