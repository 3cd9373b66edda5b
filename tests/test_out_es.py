"""The ``es`` output against a real Elasticsearch-API server (noida-db), with a fault proxy.

Each test drives the plugin as the engine does (construct with converted config
and a PluginContext, ``setup``, ``start``, ``flush``, ``stop`` under trio) and
reads back what the server stored. Faults a stand-in cannot produce (429, 503,
stalls, resets, TLS, auth checks) come from ``tests/faultproxy.py``.
"""

from __future__ import annotations

import base64
import calendar
import ssl
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from logfwd.batch import Chunk, Result
from logfwd.plugin import ConfigValueError, find_plugin
from logfwd.plugins._es.plugin import parse_cloud_id
from logfwd.plugins.out_es import PLUGIN as EsOutput

from .backends._proc import free_port
from .backends.es import EsServer
from .clikit import run_until
from .faultproxy import FaultProxy
from .pluginkit import flush_all, make_chunk, make_plugin, run_output

pytestmark = pytest.mark.backend

T0 = calendar.timegm((2024, 5, 1, 12, 0, 0)) * 1_000_000_000 + 250_000_000
DAY = 86400 * 1_000_000_000


def make_output(**raw: Any) -> EsOutput:
    """Build the plugin as the config layer would (``tls__verify`` stands for ``tls.verify``)."""
    return make_plugin(EsOutput, parsers=None, **raw)


def chunk(records: list[dict[str, Any]], times: list[int] | None = None, keys: list[str | None] | None = None,
          tag: str = "app.log") -> Chunk:
    return make_chunk(records, times, tag, keys, t0=T0, step=1_000_000)


def new_index(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def proxy(es_server: EsServer):
    with FaultProxy(es_server.port) as p:
        yield p


# ------------------------------------------------------------------ delivery


def test_happy_path_records_arrive_with_content(es_server: EsServer) -> None:
    idx = new_index()
    records = [{"msg": f"line {i}", "level": "info" if i % 2 else "warn", "n": i, "nested": {"k": [i, i + 1]}}
               for i in range(200)]
    out = make_output(port=es_server.port, index=idx)
    [res] = flush_all(out, chunk(records))
    assert res.delivered_all, res
    assert es_server.count(idx) == 200
    got = sorted(es_server.sources(idx), key=lambda d: d["n"])
    assert got[0] == {"@timestamp": "2024-05-01T12:00:00.250Z", "msg": "line 0", "level": "warn", "n": 0,
                      "nested": {"k": [0, 1]}}
    assert [d["msg"] for d in got] == [f"line {i}" for i in range(200)]
    assert got[199]["@timestamp"] == "2024-05-01T12:00:00.449Z"


def test_alias_and_registry() -> None:
    assert find_plugin("output", "elasticsearch") is EsOutput
    assert find_plugin("output", "es") is EsOutput


def test_logstash_format_index_names_by_date(es_server: EsServer) -> None:
    prefix = new_index("ls")
    out = make_output(port=es_server.port, logstash_format="on", logstash_prefix=prefix,
                      logstash_prefix_key="$kubernetes['namespace_name']", logstash_dateformat="%Y.%m.%d")
    ns = new_index("ns")
    recs = [{"m": 1}, {"m": 2}, {"m": 3, "kubernetes": {"namespace_name": ns}}]
    [res] = flush_all(out, chunk(recs, times=[T0, T0 + DAY, T0]))
    assert res.delivered_all, res
    assert es_server.count(f"{prefix}-2024.05.01") == 1
    assert es_server.count(f"{prefix}-2024.05.02") == 1
    assert es_server.sources(f"{ns}-2024.05.01")[0]["m"] == 3


def test_include_tag_key_and_replace_dots(es_server: EsServer) -> None:
    idx = new_index()
    out = make_output(port=es_server.port, index=idx, include_tag_key="on", replace_dots="on")
    [res] = flush_all(out, chunk([{"kubernetes.pod": "p1", "a": {"b.c": 1}}], tag="kube.var.log.x"))
    assert res.delivered_all, res
    [doc] = es_server.sources(idx)
    assert doc["flb-key"] == "kube.var.log.x"
    assert doc["kubernetes_pod"] == "p1" and doc["a"] == {"b_c": 1}


def test_generate_id_sending_twice_stores_once(es_server: EsServer) -> None:
    idx = new_index()
    out = make_output(port=es_server.port, index=idx, generate_id="on")
    c = chunk([{"m": i} for i in range(20)])
    r1, r2 = flush_all(out, c, c)
    assert r1.delivered_all and r2.delivered_all, (r1, r2)  # 409s on the replay count as delivered
    assert es_server.count(idx) == 20
    assert out.metrics["es_duplicates"] == 20


def test_derived_ids_dedupe_replays_but_not_identical_lines(es_server: EsServer) -> None:
    idx = new_index()
    out = make_output(port=es_server.port, index=idx, id_mode="derived")
    line = {"log": "GET /health 200"}
    keys: list[str | None] = ["fp-abc:100", "fp-abc:131", "fp-abc:162"]
    c = chunk([dict(line), dict(line), dict(line)], times=[T0, T0, T0], keys=keys)
    r1, r2, r3 = flush_all(out, c, c, c.subset([1]))
    assert r1.delivered_all and r2.delivered_all and r3.delivered_all
    assert es_server.count(idx) == 3  # three identical lines: three documents, replays add none
    ids = {h["_id"] for h in es_server.docs(idx)}
    assert len(ids) == 3


def test_write_operation_index_replaces(es_server: EsServer) -> None:
    idx = new_index()
    out = make_output(port=es_server.port, index=idx, write_operation="index", id_key="id")
    r = flush_all(out, chunk([{"id": "k1", "v": 1}]), chunk([{"id": "k1", "v": 2}]))
    assert all(x.delivered_all for x in r)
    [doc] = es_server.sources(idx)
    assert doc["v"] == 2


def test_write_operation_create_keeps_first(es_server: EsServer) -> None:
    idx = new_index()
    out = make_output(port=es_server.port, index=idx, write_operation="create", id_key="id")
    r = flush_all(out, chunk([{"id": "k1", "v": 1}]), chunk([{"id": "k1", "v": 2}]))
    assert all(x.delivered_all for x in r)
    [doc] = es_server.sources(idx)
    assert doc["v"] == 1


def test_write_operation_update_and_upsert(es_server: EsServer) -> None:
    idx = new_index()
    upd = make_output(port=es_server.port, index=idx, write_operation="update", id_key="id")
    # update of a missing document: skipped (Fluent Bit's semantics), not an error
    [r] = flush_all(upd, chunk([{"id": "k1", "status": "late"}]))
    assert r.delivered_all and es_server.count(idx) == 0
    assert upd.metrics["skipped_records"] == 1
    ups = make_output(port=es_server.port, index=idx, write_operation="upsert", id_key="id")
    [r] = flush_all(ups, chunk([{"id": "k1", "a": 1}]))
    assert r.delivered_all and es_server.sources(idx)[0]["a"] == 1
    [r] = flush_all(upd, chunk([{"id": "k1", "b": 2}]))
    assert r.delivered_all
    [doc] = es_server.sources(idx)
    assert doc["a"] == 1 and doc["b"] == 2  # merged, not replaced
    [r] = flush_all(ups, chunk([{"id": "k1", "a": 3}]))
    [doc] = es_server.sources(idx)
    assert doc["a"] == 3 and doc["b"] == 2


def test_update_needs_ids() -> None:
    with pytest.raises(ConfigValueError) as e:
        make_output(write_operation="update")
    assert e.value.key == "write_operation"


def test_mapping_conflict_refuses_only_that_record(es_server: EsServer) -> None:
    idx = new_index()
    status, body = es_server.request("PUT", f"/{idx}", {"mappings": {"properties": {"code": {"type": "integer"}}}})
    assert status == 200, body
    out = make_output(port=es_server.port, index=idx)
    [r] = flush_all(out, chunk([{"code": 1}, {"code": "not-a-number"}, {"code": 3}]))
    assert r.retry is None and not r.retry_all
    assert [i for i, _ in r.refused] == [1]
    reason = r.refused[0][1]
    assert reason.startswith("400 ") and "parsing_exception" in reason and "code" in reason
    assert es_server.count(idx) == 2


def test_pipeline_runs_and_missing_pipeline_is_refused(es_server: EsServer) -> None:
    idx, pipe = new_index(), new_index("pipe")
    status, _ = es_server.request("PUT", f"/_ingest/pipeline/{pipe}",
                                  {"processors": [{"set": {"field": "via", "value": "pipeline"}}]})
    assert status == 200
    [r] = flush_all(make_output(port=es_server.port, index=idx, pipeline=pipe), chunk([{"m": 1}]))
    assert r.delivered_all and es_server.sources(idx)[0]["via"] == "pipeline"
    [r] = flush_all(make_output(port=es_server.port, index=idx, pipeline="no-such-pipeline"), chunk([{"m": 2}]))
    assert [i for i, _ in r.refused] == [0] and "no-such-pipeline" in r.refused[0][1]


def test_explicit_type_on_es8_refuses_with_reason(es_server: EsServer) -> None:
    idx = new_index()
    out = make_output(port=es_server.port, index=idx, suppress_type_name="off", type="flb_type")
    [r] = flush_all(out, chunk([{"m": 1}, {"m": 2}]))
    assert sorted(i for i, _ in r.refused) == [0, 1] and "_type" in r.reason
    assert es_server.count(idx) == 0


def test_unencodable_record_refused_rest_delivered(es_server: EsServer) -> None:
    idx = new_index()
    [r] = flush_all(make_output(port=es_server.port, index=idx), chunk([{"a": 1}, {"big": 1 << 80}, {"a": 3}]))
    assert [i for i, _ in r.refused] == [1] and r.retry is None
    assert es_server.count(idx) == 2


# ------------------------------------------------------------------ per-item retries


def test_real_per_item_429_from_blocked_index(es_server: EsServer) -> None:
    """A read-only-allow-delete block makes the server answer 429 for that index's items only."""
    blocked, ok = new_index("blocked"), new_index("ok")
    # index names are <dest><separator ''><date format 'x'>
    assert es_server.request("PUT", f"/{blocked}x", {})[0] == 200
    assert es_server.request("PUT", f"/{blocked}x/_settings",
                             {"index": {"blocks": {"read_only_allow_delete": True}}})[0] == 200
    out = make_output(port=es_server.port, logstash_format="on", logstash_prefix_key="dest",
                      logstash_dateformat="x", logstash_prefix_separator="")
    recs = [{"dest": ok}, {"dest": blocked}, {"dest": ok}, {"dest": blocked}]
    [r] = flush_all(out, chunk(recs))
    assert r.retry == [1, 3] and not r.refused and not r.retry_all
    assert es_server.count(f"{ok}x") == 2


def test_proxy_item_429_retries_only_those_then_no_duplicates(es_server: EsServer, proxy: FaultProxy) -> None:
    idx = new_index()
    out = make_output(port=proxy.port, index=idx, generate_id="on")
    c = chunk([{"m": i} for i in range(10)])
    proxy.fail_items({2, 7})

    async def go(o: EsOutput) -> tuple[Result, Result]:
        first = await o.flush(c)
        assert first.retry is not None
        second = await o.flush(c.subset(first.retry))  # what the engine does next
        return first, second

    first, second = run_output(out, go)
    assert first.retry == [2, 7] and not first.refused
    assert second.delivered_all
    assert sorted(d["m"] for d in es_server.sources(idx)) == list(range(10))


def test_item_rejected_execution_with_500_and_503_retried(es_server: EsServer, proxy: FaultProxy) -> None:
    idx = new_index()
    out = make_output(port=proxy.port, index=idx)
    proxy.fail_items({0}, status=503, etype="unavailable_shards_exception")
    [r] = flush_all(out, chunk([{"m": 0}, {"m": 1}]))
    assert r.retry == [0]
    proxy.fail_items({1}, status=400, etype="es_rejected_execution_exception")
    [r] = flush_all(out, chunk([{"m": 0}, {"m": 1}]))
    assert r.retry == [1]


# ------------------------------------------------------------------ whole-request failures


@pytest.mark.parametrize("status", [503, 429, 502])
def test_whole_request_status_retries_everything(es_server: EsServer, proxy: FaultProxy, status: int) -> None:
    idx = new_index()
    out = make_output(port=proxy.port, index=idx, suppress_type_name="on")
    proxy.fail_requests(status, n=1)
    r1, r2 = flush_all(out, chunk([{"m": 1}, {"m": 2}]), chunk([{"m": 1}, {"m": 2}]))
    assert r1.retry_all and str(status) in r1.reason
    assert r2.delivered_all  # the fault passed: the next attempt gets through
    assert es_server.count(idx) == 2


def test_connection_refused_retries_everything() -> None:
    out = make_output(port=free_port(), suppress_type_name="on")
    [r] = flush_all(out, chunk([{"m": 1}]))
    assert r.retry_all and "Connection" in r.reason


def test_version_probe_failure_retries() -> None:
    out = make_output(port=free_port())  # Suppress_Type_Name unset: asks the server first
    [r] = flush_all(out, chunk([{"m": 1}]))
    assert r.retry_all


def test_reset_connection_retries_everything(es_server: EsServer, proxy: FaultProxy) -> None:
    idx = new_index()
    out = make_output(port=proxy.port, index=idx, suppress_type_name="on")
    proxy.reset_connections(1)
    r1, r2 = flush_all(out, chunk([{"m": 1}]), chunk([{"m": 1}]))
    assert r1.retry_all
    assert r2.delivered_all and es_server.count(idx) == 1


def test_slow_answer_times_out_and_retries(es_server: EsServer, proxy: FaultProxy) -> None:
    out = make_output(port=proxy.port, index=new_index(), suppress_type_name="on", net__io_timeout="300ms")
    proxy.latency = 1.0
    t = time.monotonic()
    [r] = flush_all(out, chunk([{"m": 1}]))
    assert r.retry_all and "timeout" in r.reason.lower()
    assert time.monotonic() - t < 0.9


def test_server_stopped_then_back(es_server_factory: Callable[[], EsServer]) -> None:
    server = es_server_factory()
    idx = new_index()
    out = make_output(port=server.port, index=idx)

    async def go(o: EsOutput) -> list[Result]:
        results = [await o.flush(chunk([{"m": 1}]))]
        await trio.to_thread.run_sync(server.stop)
        results.append(await o.flush(chunk([{"m": 2}])))
        await trio.to_thread.run_sync(server.start)  # same port, fresh data
        results.append(await o.flush(chunk([{"m": 3}])))
        return results

    r1, r2, r3 = run_output(out, go)
    assert r1.delivered_all
    assert r2.retry_all
    assert r3.delivered_all
    assert [d["m"] for d in server.sources(idx)] == [3]


def test_413_splits_the_request(es_server: EsServer, proxy: FaultProxy) -> None:
    idx = new_index()
    out = make_output(port=proxy.port, index=idx, suppress_type_name="on")
    recs = [{"m": i, "pad": "x" * 200} for i in range(16)]
    proxy.max_body = 1500  # about 4 documents per request
    [r] = flush_all(out, chunk(recs))
    assert r.delivered_all, r
    assert sorted(d["m"] for d in es_server.sources(idx)) == list(range(16))
    sizes = [len(q.body) for q in proxy.bulk_requests() if q.answered == 200]
    assert len(sizes) >= 4 and max(sizes) <= 1500


# ------------------------------------------------------------------ wire details


def test_gzip_body(es_server: EsServer, proxy: FaultProxy) -> None:
    idx = new_index()
    out = make_output(port=proxy.port, index=idx, compress="gzip", suppress_type_name="on")
    recs = [{"m": i, "text": "repetitive " * 50} for i in range(50)]
    [r] = flush_all(out, chunk(recs))
    assert r.delivered_all
    [req] = proxy.bulk_requests()
    assert req.headers["content-encoding"] == "gzip"
    assert req.wire_body[:2] == b"\x1f\x8b" and len(req.wire_body) < len(req.body) / 5
    assert req.headers["content-type"] == "application/x-ndjson"
    assert req.headers["accept-encoding"] == "gzip"  # bandwidth chosen over CPU: answers may be gzipped too
    assert es_server.count(idx) == 50


def test_answers_are_not_asked_compressed_by_default(es_server: EsServer, proxy: FaultProxy) -> None:
    # A compressed bulk answer (a status per record) costs the server and us CPU to save one
    # network crossing; Fluent Bit asks for none either.
    [r] = flush_all(make_output(port=proxy.port, index=new_index()), chunk([{"m": i} for i in range(20)]))
    assert r.delivered_all
    assert proxy.requests and all(q.headers.get("accept-encoding") == "identity" for q in proxy.requests)


@pytest.mark.parametrize(
    "opts, expected",
    [
        ({"http_user": "elastic", "http_passwd": "s3cr:et"},
         "Basic " + base64.b64encode(b"elastic:s3cr:et").decode()),
        ({"http_api_key": "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="},
         "ApiKey VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="),
        ({"cloud_auth": "cloudy:pw", "http_api_key": "ignored"},
         "Basic " + base64.b64encode(b"cloudy:pw").decode()),
    ],
)
def test_auth_header_sent(es_server: EsServer, proxy: FaultProxy, opts: dict[str, str], expected: str) -> None:
    out = make_output(port=proxy.port, index=new_index(), **opts)
    [r] = flush_all(out, chunk([{"m": 1}]))
    assert r.delivered_all
    assert proxy.requests and all(q.headers.get("authorization") == expected for q in proxy.requests)


def test_no_auth_header_by_default(es_server: EsServer, proxy: FaultProxy) -> None:
    flush_all(make_output(port=proxy.port, index=new_index()), chunk([{"m": 1}]))
    assert proxy.requests and all("authorization" not in q.headers for q in proxy.requests)


def test_path_prefix(es_server: EsServer, proxy: FaultProxy) -> None:
    idx = new_index()
    proxy.strip_prefix = "/es-behind-proxy"
    out = make_output(port=proxy.port, index=idx, path="/es-behind-proxy/")
    [r] = flush_all(out, chunk([{"m": 1}]))
    assert r.delivered_all
    assert [q.path.split("?")[0] for q in proxy.requests] == ["/es-behind-proxy/", "/es-behind-proxy/_bulk"]
    # the answer is asked for only what the verdicts read
    assert proxy.requests[1].path.endswith("?filter_path=errors,items.*.status,items.*.error,error,status")
    assert es_server.count(idx) == 1


def test_trace_output_prints_body(es_server: EsServer, capfd: pytest.CaptureFixture[str]) -> None:
    idx = new_index()
    flush_all(make_output(port=es_server.port, index=idx, trace_output="on"), chunk([{"traced": "yes"}]))
    out = capfd.readouterr().out
    assert f'{{"create":{{"_index":"{idx}"}}}}' in out and '"traced":"yes"' in out


def test_cloud_id_parsing() -> None:
    raw = base64.b64encode(b"us-east-1.aws.found.io:9243$abc123$kib456").decode()
    assert parse_cloud_id(f"my-deploy:{raw}") == ("abc123.us-east-1.aws.found.io", 9243)
    raw = base64.b64encode(b"eu-west-1.aws.found.io$esid$kbid").decode().rstrip("=")
    assert parse_cloud_id(f"d:{raw}") == ("esid.eu-west-1.aws.found.io", 443)
    out = make_output(cloud_id=f"d:{raw}")
    assert (out.host, out.port, out.use_tls) == ("esid.eu-west-1.aws.found.io", 443, True)
    with pytest.raises(ConfigValueError) as e:
        make_output(cloud_id="no-colon")
    assert e.value.key == "cloud_id"


# ------------------------------------------------------------------ TLS


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost signed by it (openssl CLI)."""
    d = tmp_path_factory.mktemp("certs")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def sh(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    sh("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=logfwd test CA")
    sh("req", *ec, "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=localhost")
    (d / "ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")
    sh("x509", "-req", "-in", "srv.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
       "-out", "srv.crt", "-days", "2", "-extfile", "ext")
    sh("req", *ec, "-keyout", "cli.key", "-out", "cli.csr", "-subj", "/CN=logfwd client")
    (d / "cliext").write_text("basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    sh("x509", "-req", "-in", "cli.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
       "-out", "cli.crt", "-days", "2", "-extfile", "cliext")
    return {"ca": d / "ca.crt", "crt": d / "srv.crt", "key": d / "srv.key", "cli_crt": d / "cli.crt",
            "cli_key": d / "cli.key"}


@pytest.fixture
def tls_proxy(es_server: EsServer, certs: dict[str, Path]):

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(certs["crt"]), str(certs["key"]))
    with FaultProxy(es_server.port, ssl_context=ctx) as p:
        yield p


def test_tls_verified_with_ca_file(es_server: EsServer, tls_proxy: FaultProxy, certs: dict[str, Path]) -> None:
    idx = new_index()
    out = make_output(port=tls_proxy.port, index=idx, tls="on", tls__verify="on", tls__ca_file=str(certs["ca"]),
                      http_user="u", http_passwd="p")
    [r] = flush_all(out, chunk([{"m": 1}]))
    assert r.delivered_all, r
    assert es_server.count(idx) == 1
    assert tls_proxy.requests[-1].headers["authorization"] == "Basic " + base64.b64encode(b"u:p").decode()


def test_tls_vhost_is_the_name_checked_and_sent(es_server: EsServer, tls_proxy: FaultProxy,
                                               certs: dict[str, Path]) -> None:
    """tls.vhost is the SNI name, the name checked in the certificate and the Host header."""
    idx = new_index()
    base = {"port": tls_proxy.port, "index": idx, "tls": "on", "tls__ca_file": str(certs["ca"]),
            "tls__verify_hostname": "on", "suppress_type_name": "on"}
    [r] = flush_all(make_output(**base, tls__vhost="localhost"), chunk([{"m": 1}]))
    assert r.delivered_all, r
    assert tls_proxy.requests[-1].headers["host"] == "localhost"
    [r] = flush_all(make_output(**base, tls__vhost="elsewhere.example"), chunk([{"m": 2}]))
    assert r.retry_all and "elsewhere.example" in r.reason, r
    assert es_server.count(idx) == 1


def test_tls_unknown_ca_fails_verify_then_off_works(es_server: EsServer, tls_proxy: FaultProxy) -> None:
    idx = new_index()
    [r] = flush_all(make_output(port=tls_proxy.port, index=idx, tls="on", suppress_type_name="on"),
                    chunk([{"m": 1}]))
    assert r.retry_all and "certificate" in r.reason.lower()
    [r] = flush_all(make_output(port=tls_proxy.port, index=idx, tls="on", tls__verify="off"), chunk([{"m": 1}]))
    assert r.delivered_all
    assert es_server.count(idx) == 1


def test_tls_client_certificate(es_server: EsServer, certs: dict[str, Path]) -> None:

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(certs["crt"]), str(certs["key"]))
    ctx.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: the server wants our certificate
    ctx.load_verify_locations(str(certs["ca"]))
    idx = new_index()
    with FaultProxy(es_server.port, ssl_context=ctx) as p:
        base = {"port": p.port, "index": idx, "tls": "on", "tls__ca_file": str(certs["ca"]),
                "suppress_type_name": "on"}
        [r] = flush_all(make_output(**base), chunk([{"m": 1}]))
        assert r.retry_all
        [r] = flush_all(make_output(**base, tls__crt_file=str(certs["cli_crt"]), tls__key_file=str(certs["cli_key"])),
                        chunk([{"m": 1}]))
        assert r.delivered_all, r
    assert es_server.count(idx) == 1


def test_missing_tls_file_fails_setup(tmp_path: Path) -> None:
    with pytest.raises(ConfigValueError, match="nope.pem does not exist"):
        make_output(tls="on", tls__ca_file=str(tmp_path / "nope.pem"))


def test_plain_http_to_tls_port_retries(tls_proxy: FaultProxy) -> None:
    [r] = flush_all(make_output(port=tls_proxy.port, suppress_type_name="on"), chunk([{"m": 1}]))
    assert r.retry_all


# ------------------------------------------------------------------ end to end


def run_cli(tmp_path: Path, port: int, index: str, samples: int = 7, extra: str = "",
            *, stored: Callable[[], int]) -> subprocess.CompletedProcess[bytes]:
    """The daemon with ``samples`` dummy records, stopped (SIGTERM) once ``stored()`` reaches ``samples``."""
    conf = tmp_path / "es.conf"
    conf.write_text(
        "[SERVICE]\n    Flush 0.2\n    Grace 5\n    scheduler.base 1\n    scheduler.cap 1\n"
        f"    storage.path {tmp_path / 'storage'}\n\n"
        "[INPUT]\n    Name dummy\n    Tag app\n    Dummy {\"message\":\"dummy\",\"k.v\":1}\n"
        f"    Samples {samples}\n    Rate 100\n\n"
        "[OUTPUT]\n    Name elasticsearch\n    Match *\n    Host 127.0.0.1\n"
        f"    Port {port}\n    Index {index}\n    Include_Tag_Key On\n    Tag_Key tag\n"
        "    Replace_Dots On\n    Generate_ID On\n    Retry_Limit 5\n" + extra
    )
    return run_until(["-c", str(conf)], lambda _out: stored() >= samples, timeout=60)


def test_cli_dummy_to_es(es_server: EsServer, tmp_path: Path) -> None:
    """The real ``logfwd`` process: dummy input → es output, read back from the server."""
    idx = new_index("e2e")
    p = run_cli(tmp_path, es_server.port, idx, stored=lambda: es_server.count(idx))
    assert p.returncode == 0, p.stderr.decode()[-3000:]
    docs = es_server.sources(idx)
    assert len(docs) == 7, p.stderr.decode()[-3000:]
    assert all(d["message"] == "dummy" and d["tag"] == "app" and d["k_v"] == 1 and "@timestamp" in d for d in docs)


def test_cli_retries_through_faults_exactly_once(es_server: EsServer, proxy: FaultProxy, tmp_path: Path) -> None:
    """Whole-request 503 then per-item 429s: the engine retries; every record lands once."""
    idx = new_index("e2e")
    proxy.fail_requests(503, n=1)
    proxy.fail_items({0, 2}, n=1)
    p = run_cli(tmp_path, proxy.port, idx, samples=5, extra="    Suppress_Type_Name On\n",
                stored=lambda: es_server.count(idx))
    assert p.returncode == 0, p.stderr.decode()[-3000:]
    assert es_server.count(idx) == 5, p.stderr.decode()[-3000:]
    statuses = [q.answered for q in proxy.bulk_requests()]
    assert statuses[0] == 503 and len(statuses) >= 3
    # the per-item retry resent only the two rejected records
    assert any(q.body.count(b"\n") == 4 for q in proxy.bulk_requests()[2:]), [len(q.body) for q in proxy.requests]


def flush_at_once(chunks: list[Chunk]) -> Callable[[EsOutput], Any]:
    """A ``run_output`` body flushing every chunk concurrently, as the engine's workers do."""

    async def go(o: EsOutput) -> list[Result]:
        results: list[Result] = [Result.retry_everything("not run")] * len(chunks)

        async def one(k: int) -> None:
            results[k] = await o.flush(chunks[k])

        async with trio.open_nursery() as n:
            for k in range(len(chunks)):
                n.start_soon(one, k)
        return results

    return go


def test_concurrent_workers_and_big_chunks(es_server: EsServer, proxy: FaultProxy) -> None:
    """Several flushes at once (Workers), big chunks (encoded and gzipped off the event loop)."""
    idx = new_index()
    out = make_output(port=proxy.port, index=idx, compress="gzip", id_mode="derived")
    chunks = [chunk([{"w": w, "i": i, "msg": f"worker {w} line {i} " + "x" * 100} for i in range(2500)],
                    keys=[f"file{w}:{i}" for i in range(2500)]) for w in range(4)]
    results = run_output(out, flush_at_once(chunks))
    assert all(r.delivered_all for r in results), results
    assert es_server.count(idx) == 10000
    assert len(proxy.bulk_requests()) == 4
    assert all(len(q.body) > 256 * 1024 and q.wire_body[:2] == b"\x1f\x8b" for q in proxy.bulk_requests())


def test_every_worker_has_a_connection(es_server: EsServer, proxy: FaultProxy) -> None:
    """``Workers 16`` puts 16 bulk requests on the wire at once.

    The official client's transport pools 10 connections per node unless told otherwise;
    the workers above 10 then waited inside httpx for a connection, in flight for the
    engine but not sent, which capped throughput to servers that take more at once.
    """
    idx = new_index()
    out = make_output(port=proxy.port, index=idx, workers="16")
    chunks = [chunk([{"w": w, "i": i} for i in range(20)]) for w in range(16)]
    proxy.latency = 0.5  # every request stays open long enough for the others to arrive
    results = run_output(out, flush_at_once(chunks))
    assert all(r.delivered_all for r in results), results
    assert es_server.count(idx) == 16 * 20
    assert proxy.max_in_flight == 16
