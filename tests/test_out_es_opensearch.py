"""The ``es`` output through the real ``logfwd`` process against a REAL OpenSearch 2.19 node.

Everything in ``test_out_es.py`` and ``test_e2e_outputs.py`` runs against noida-db, an API
stand-in. Here the server is OpenSearch itself (``tests/backends/opensearch.py``), for
what only the real code does:

1. a node that comes up after the forwarder: ``GET /`` product detection and the first
   bulks fail with connection refused, then every record arrives exactly once;
2. a write thread pool shrunk to one thread and a queue of one, with four concurrent
   flushes: OpenSearch rejects shard writes with real 429 ``es_rejected_execution_exception``
   items, ``logfwd`` retries just those, and every record is stored exactly once;
3. a mapping conflict (``long`` field, string values): Lucene's own refusal, only those
   records dead-lettered with the server's reason;
4. a data stream (``create`` only, ``@timestamp`` required), ``Logstash_Format`` daily
   indices and an ingest ``Pipeline`` with a painless script;
5. with the security plugin: HTTPS verified against the node's CA and basic auth for a
   user that is created (with a role allowing bulk writes to one index only) while the
   forwarder is being refused with 401; a certificate the forwarder cannot verify means
   nothing is sent and the records are dead-lettered with the TLS error.

When no node can be had (no ``java``/``mvn``, Maven Central unreachable) these tests skip.
``N`` comes from ``LOGFWD_E2E_N`` like the other end-to-end tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .backends._proc import wait_for
from .backends.opensearch import ADMIN, OpenSearchNode
from .e2ekit import LOGFWD, OPENSEARCH_DEADLINE, LineWriter, Logfwd, es_numbers, numbers_exact, tail_input

N = int(os.environ.get("LOGFWD_E2E_N", "50000"))
"""Numbered records of the stream tests (CI size; soak runs raise it)."""

N_SATURATED = max(N // 2, 40)
"""Spread over four files; smaller, as every record may be refused and retried several times."""


def os_output(node: OpenSearchNode, index: str, extra: str = "", retry_limit: str = "no_limits") -> str:
    """An ``es`` output section; ``Suppress_Type_Name`` left unset so ``GET /`` detection runs."""
    return f"""[OUTPUT]
    Name               es
    Alias              es_os
    Match              *
    Host               127.0.0.1
    Port               {node.port}
    Index              {index}
    Id_Mode            derived
    Retry_Limit        {retry_limit}
    net.connect_timeout 2s
    net.io_timeout     20s
{extra}"""


def _run_stdin(conf: Path, lines: list[dict[str, Any]]) -> subprocess.CompletedProcess[bytes]:
    data = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
    return subprocess.run([LOGFWD, "-c", str(conf)], input=data, capture_output=True, timeout=OPENSEARCH_DEADLINE)


def _dead_letters(storage: Path, output: str) -> list[dict[str, Any]]:
    path = storage / "rejected" / f"{output}.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _stdin_conf(path: Path, node: OpenSearchNode, index: str, extra_output: str = "",
                service: str = "", input_extra: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""[SERVICE]
    Flush         0.2
    storage.path  {path.parent}
    scheduler.base 1
    scheduler.cap  2
{service}
[INPUT]
    Name   stdin
    Tag    app
{input_extra}
{os_output(node, index, extra_output, retry_limit="5")}""")
    return path


def _assert_exactly(node: OpenSearchNode, index: str, n: int) -> None:
    ns = es_numbers(node, index)
    missing, dups = numbers_exact(ns, n)
    assert not missing, f"{len(missing)} numbers missing, e.g. {sorted(missing)[:10]}"
    assert dups == 0, f"{dups} duplicates"
    assert node.count(index) == n


# --------------------------------------------------------------------------- 1. late start


def test_node_starting_after_logfwd_gets_every_record_once(
        opensearch_factory: Callable[..., OpenSearchNode], tmp_path: Path, logfwds: list[Logfwd]) -> None:
    node = opensearch_factory(start=False)  # ports chosen, no process yet
    index = "late-start"
    data = tmp_path / "app.log"
    data.touch()
    lf = Logfwd(tmp_path / "lf", tail_input(data, tmp_path / "tail.db") + "\n" + os_output(node, index)).start()
    logfwds.append(lf)
    writer = LineWriter(data, N)
    writer.start()
    # The forwarder has read records and failed to deliver them (twice) before the node exists.
    lf.wait_counter("output", "es_os", "retries", 2, timeout=OPENSEARCH_DEADLINE)
    node.start()
    writer.finish()
    lf.wait_counter("output", "es_os", "proc_records", N, timeout=OPENSEARCH_DEADLINE)
    out = (lf.metrics() or {})["output"]["es_os"]
    assert out.get("dlq_records", 0) == 0, out
    _assert_exactly(node, index, N)
    print(f"\nopensearch: green {node.started_in:.1f}s after exec, RSS {node.rss_kib() // 1024} MiB; "
          f"logfwd retries {out['retries']}")


# --------------------------------------------------------------------------- 2. saturated write pool


def test_saturated_write_pool_real_429s_every_record_once(
        opensearch_factory: Callable[..., OpenSearchNode], tmp_path: Path, logfwds: list[Logfwd]) -> None:
    node = opensearch_factory({"thread_pool.write.size": "1", "thread_pool.write.queue_size": "1"})
    index = "saturated"
    # Four shards: every bulk becomes four shard writes at once on a pool that holds two.
    status, body = node.request("PUT", f"/{index}", {"settings": {"number_of_shards": 4},
                                                     "mappings": {"properties": {"n": {"type": "long"}}}})
    assert status == 200, body
    files = 4
    per = N_SATURATED // files
    inputs = []
    for i in range(files):
        path = tmp_path / f"app{i}.log"
        # each file holds its own range of numbers, so together they are 0..files*per-1
        path.write_bytes(b"".join(b'{"n": %d, "msg": "saturated %d"}\n' % (j, j)
                                  for j in range(i * per, (i + 1) * per)))
        inputs.append(tail_input(path, tmp_path / f"tail{i}.db", tag=f"sat.{i}"))
    total = files * per
    before = node.thread_pool()["rejected"]
    conf = "\n".join(inputs) + "\n" + os_output(node, index, "    Workers            4\n")
    lf = Logfwd(tmp_path / "lf", conf).start()
    logfwds.append(lf)
    lf.wait_counter("output", "es_os", "proc_records", total, timeout=OPENSEARCH_DEADLINE)
    out = (lf.metrics() or {})["output"]["es_os"]
    rejected = node.thread_pool()["rejected"] - before
    assert rejected > 0, f"the write pool never rejected: {node.thread_pool()}"
    assert out["retries"] > 0, f"429s were not retried: {out}"
    assert out.get("dlq_records", 0) == 0, out
    _assert_exactly(node, index, total)
    print(f"\nopensearch write pool rejected {rejected} shard writes; logfwd retries {out['retries']}")


# --------------------------------------------------------------------------- 3. mapping conflict


def test_mapping_conflict_dead_lettered_rest_indexed(opensearch: OpenSearchNode, tmp_path: Path) -> None:
    index = f"conflict-{uuid.uuid4().hex[:6]}"
    status, body = opensearch.request("PUT", f"/{index}", {"mappings": {"properties": {"code": {"type": "long"}}}})
    assert status == 200, body
    n = 1000
    bad = set(range(5, n, n // 10))
    assert len(bad) == 10
    lines = [{"n": i, "code": f"not a number {i}" if i in bad else i} for i in range(n)]
    p = _run_stdin(_stdin_conf(tmp_path / "c" / "logfwd.conf", opensearch, index), lines)
    assert p.returncode == 0, p.stderr.decode()
    assert opensearch.count(index) == n - len(bad)
    stored = set(es_numbers(opensearch, index))
    assert stored == set(range(n)) - bad
    dl = _dead_letters(tmp_path / "c", "es_os")
    assert sorted(d["record"]["n"] for d in dl) == sorted(bad)
    for d in dl:
        # OpenSearch's own words: the exception type and the field
        assert "mapper_parsing_exception" in d["reason"] and "code" in d["reason"], d["reason"]


# --------------------------------------------------------------------------- 4. data stream, daily indices, pipeline


def test_data_stream_create_only(opensearch: OpenSearchNode, tmp_path: Path) -> None:
    name = f"logs-lf-{uuid.uuid4().hex[:6]}"
    status, body = opensearch.request("PUT", f"/_index_template/{name}",
                                      {"index_patterns": [f"{name}*"], "data_stream": {}, "priority": 100})
    assert status == 200, body
    n = 500
    p = _run_stdin(_stdin_conf(tmp_path / "ds" / "logfwd.conf", opensearch, name),
                   [{"n": i, "msg": f"ds {i}"} for i in range(n)])
    assert p.returncode == 0, p.stderr.decode()
    assert not _dead_letters(tmp_path / "ds", "es_os")
    status, body = opensearch.request("GET", f"/_data_stream/{name}")
    assert status == 200, body
    (ds,) = body["data_streams"]
    assert ds["timestamp_field"]["name"] == "@timestamp"
    assert [i["index_name"] for i in ds["indices"]] == [f".ds-{name}-000001"]
    _assert_exactly(opensearch, name, n)
    assert all("@timestamp" in s for s in opensearch.sources(name)[:100])


def test_logstash_format_daily_indices(opensearch: OpenSearchNode, tmp_path: Path) -> None:
    prefix = f"lf-daily-{uuid.uuid4().hex[:6]}"
    parsers = tmp_path / "daily" / "parsers.conf"
    parsers.parent.mkdir(parents=True)
    parsers.write_text("""[PARSER]
    Name        stamped
    Format      json
    Time_Key    time
    Time_Format %Y-%m-%dT%H:%M:%S
""")
    days = ["2026-03-01", "2026-03-02", "2026-03-03"]
    per = 100
    lines = [{"n": d * per + i, "time": f"{day}T{i % 24:02d}:00:00"} for d, day in enumerate(days) for i in range(per)]
    conf = _stdin_conf(tmp_path / "daily" / "logfwd.conf", opensearch, "unused",
                       "    Logstash_Format    On\n"
                       f"    Logstash_Prefix    {prefix}\n",
                       service=f"    Parsers_File  {parsers}\n", input_extra="    Parser stamped\n")
    p = _run_stdin(conf, lines)
    assert p.returncode == 0, p.stderr.decode()
    expected = [f"{prefix}-{day.replace('-', '.')}" for day in days]
    assert opensearch.indices(f"{prefix}-*") == expected
    for d, idx in enumerate(expected):
        assert sorted(es_numbers(opensearch, idx)) == list(range(d * per, (d + 1) * per))
        assert all(s["@timestamp"].startswith(days[d]) for s in opensearch.sources(idx))


def test_ingest_pipeline_with_painless(opensearch: OpenSearchNode, tmp_path: Path) -> None:
    index = f"piped-{uuid.uuid4().hex[:6]}"
    pipeline = f"lf-{uuid.uuid4().hex[:6]}"
    status, body = opensearch.request("PUT", f"/_ingest/pipeline/{pipeline}", {"processors": [
        {"set": {"field": "via", "value": "pipeline"}},
        {"script": {"lang": "painless", "source": "ctx.double = ctx.n * 2"}},
        {"uppercase": {"field": "msg"}},
    ]})
    assert status == 200, body
    n = 300
    conf = _stdin_conf(tmp_path / "pipe" / "logfwd.conf", opensearch, index, f"    Pipeline           {pipeline}\n")
    p = _run_stdin(conf, [{"n": i, "msg": f"line {i}"} for i in range(n)])
    assert p.returncode == 0, p.stderr.decode()
    _assert_exactly(opensearch, index, n)
    for s in opensearch.sources(index):
        assert s["via"] == "pipeline" and s["double"] == 2 * s["n"] and s["msg"] == f"LINE {s['n']}"


def test_node_stops_by_pid_and_starts_again_with_its_data(
        opensearch_factory: Callable[..., OpenSearchNode]) -> None:
    """The fixture's own contract: stop() ends the JVM (by PID), start() brings back the same node."""
    node = opensearch_factory()
    status, body = node.request("PUT", "/kept/_doc/1?refresh=true", {"a": 1})
    assert status == 201, body
    pid = node.pid
    node.stop()
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    node.start()
    assert node.pid != pid
    wait_for(lambda: node.count("kept") == 1, OPENSEARCH_DEADLINE, "the document after a restart")


# --------------------------------------------------------------------------- 5. security plugin (TLS, basic auth)


def test_tls_and_basic_auth_user_created_while_logfwd_retries(
        opensearch_secure: OpenSearchNode, tmp_path: Path, logfwds: list[Logfwd]) -> None:
    """HTTPS verified against the test CA; the user exists only after logfwd was refused (401) a few times.

    The user's role allows bulk writes to one index and nothing else, so ``GET /``
    (product detection) is refused too (403): the output must still deliver.
    """
    node = opensearch_secure
    index = f"secure-{uuid.uuid4().hex[:6]}"
    user, password = f"lf-{uuid.uuid4().hex[:6]}", f"Lf-{uuid.uuid4().hex}-9!"
    n = max(N // 5, 20)
    data = tmp_path / "app.log"
    data.touch()
    out = os_output(node, index, f"""    tls                On
    tls.verify         On
    tls.ca_file        {node.ca_file}
    HTTP_User          {user}
    HTTP_Passwd        {password}
""")
    lf = Logfwd(tmp_path / "lf", tail_input(data, tmp_path / "tail.db") + "\n" + out).start()
    logfwds.append(lf)
    writer = LineWriter(data, n)
    writer.start()
    lf.wait_counter("output", "es_os", "retries", 2, timeout=OPENSEARCH_DEADLINE)  # refused: no such user yet
    assert node.count(index) == 0
    role = f"writer-{index}"
    status, body = node.request("PUT", f"/_plugins/_security/api/roles/{role}", {
        "cluster_permissions": ["indices:data/write/bulk"],
        "index_permissions": [{"index_patterns": [index], "allowed_actions": ["crud", "create_index"]}],
    })
    assert status in (200, 201), body
    status, body = node.request("PUT", f"/_plugins/_security/api/internalusers/{user}",
                                {"password": password, "opendistro_security_roles": [role]})
    assert status in (200, 201), body
    assert node.request("GET", "/", auth=(user, password))[0] == 403  # the role really is that narrow
    writer.finish()
    lf.wait_counter("output", "es_os", "proc_records", n, timeout=OPENSEARCH_DEADLINE)
    m = (lf.metrics() or {})["output"]["es_os"]
    assert m.get("dlq_records", 0) == 0, m
    _assert_exactly(node, index, n)


def test_tls_server_not_trusted_nothing_sent(opensearch_secure: OpenSearchNode, tmp_path: Path) -> None:
    """Without the test CA the certificate does not verify: no record reaches the server."""
    node = opensearch_secure
    index = f"untrusted-{uuid.uuid4().hex[:6]}"
    conf = _stdin_conf(tmp_path / "u" / "logfwd.conf", node, index, f"""    tls                On
    tls.verify         On
    HTTP_User          {ADMIN[0]}
    HTTP_Passwd        {ADMIN[1]}
""")
    conf.write_text(conf.read_text().replace("Retry_Limit        5", "Retry_Limit        1"))
    p = _run_stdin(conf, [{"n": i} for i in range(10)])
    assert p.returncode == 0, p.stderr.decode()
    status, _ = node.request("GET", f"/{index}/_count")
    assert status == 404
    dl = _dead_letters(tmp_path / "u", "es_os")
    assert sorted(d["record"]["n"] for d in dl) == list(range(10))
    assert all("certificate" in d["reason"].lower() for d in dl), dl[0]["reason"]
