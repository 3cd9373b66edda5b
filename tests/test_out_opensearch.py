"""The ``opensearch`` output and the es code's server detection, against a REAL OpenSearch 2.19 node.

``opensearch`` is Fluent Bit's output of that name on ``EsOutput`` (``plugins._es``):
its option table, and AWS SigV4 signing. Here:

- the option table is Fluent Bit's (no Elastic Cloud keys, ``Tag_Key _flb-key``,
  ``AWS_*``), and bad AWS settings stop at load with the key named;
- a signed bulk reaches the real node (which ignores the signature) and the headers as
  they arrive on the wire (seen through ``tests/faultproxy.py``) carry a signature that
  verifies over the real Host header, path, query and gzipped body;
- server detection (``GET /`` at the first flush): the real node for OpenSearch 2.x; the
  proxy answers ``GET /`` as OpenSearch 1.x and Elasticsearch 6.x/7.x/8.x/9.x would (those
  servers cannot run here) and forwards the bulks to the real node, so the bulk body is
  what each of those servers accepts (``_type`` only for Elasticsearch < 7).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from logfwd.plugin import ConfigValueError
from logfwd.plugins.out_es import PLUGIN as EsOutput
from logfwd.plugins.out_opensearch import PLUGIN as OpenSearchOutput
from logfwd.plugins.out_opensearch import sigv4

from .backends.opensearch import OpenSearchNode
from .e2ekit import LOGFWD, OPENSEARCH_DEADLINE
from .faultproxy import FaultProxy, Recorded
from .pluginkit import PluginConfigError, flush_all, make_chunk, make_plugin

AK, SK, TOKEN = "AKIDLOGFWDTEST", "secret/for+tests", "session-token"


def new_index(prefix: str = "os") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def records(n: int) -> list[dict[str, Any]]:
    return [{"n": i, "msg": f"line {i}"} for i in range(n)]


@pytest.fixture
def proxy(opensearch: OpenSearchNode) -> Iterator[FaultProxy]:
    with FaultProxy(opensearch.port) as p:
        yield p


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AK)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SK)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-such-file"))


# ------------------------------------------------------------------ options


def test_options_are_fluent_bits_opensearch_ones() -> None:
    out = make_plugin(OpenSearchOutput, parsers=None)
    s = out.settings
    assert (s.host, s.port, s.index, s.type, s.tag_key, s.write_operation) == (
        "127.0.0.1", 9200, "fluent-bit", "_doc", "_flb-key", "create")
    assert (s.aws_auth, s.aws_service_name, s.aws_profile, s.suppress_type_name) == (False, "es", "default", None)
    for elastic_only in ("cloud_id", "http_api_key"):
        with pytest.raises(PluginConfigError, match=elastic_only.replace("_", ".")):
            make_plugin(OpenSearchOutput, parsers=None, **{elastic_only: "x:eA=="})
    # the es output keeps its own table
    assert make_plugin(EsOutput, parsers=None).settings.tag_key == "flb-key"


def test_aws_auth_needs_a_region_and_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ConfigValueError, match="required with AWS_Auth") as e:
        make_plugin(OpenSearchOutput, parsers=None, aws_auth="on")
    assert e.value.key == "aws_region"
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    with pytest.raises(ConfigValueError, match="no AWS credentials"):
        make_plugin(OpenSearchOutput, parsers=None, aws_auth="on", aws_region="eu-west-1")
    with pytest.raises(PluginConfigError, match="aws_service_name"):
        make_plugin(OpenSearchOutput, parsers=None, aws_service_name="s3")


def test_aws_auth_and_basic_auth_exclude_each_other(aws_env: None) -> None:
    with pytest.raises(ConfigValueError, match="cannot both") as e:
        make_plugin(OpenSearchOutput, parsers=None, aws_auth="on", aws_region="eu-west-1", http_user="u")
    assert e.value.key == "http_user"


# ------------------------------------------------------------------ SigV4 against the real node


def _verify(rec: Recorded, region: str, service: str) -> None:
    """Recompute the signature from the request as it arrived: host, path, query, wire body."""
    h = rec.headers
    path, _, query = rec.path.partition("?")
    assert h["x-amz-content-sha256"] == hashlib.sha256(rec.wire_body).hexdigest()
    assert h["x-amz-security-token"] == TOKEN
    signed = {"host": h["host"], "x-amz-content-sha256": h["x-amz-content-sha256"],
              "x-amz-date": h["x-amz-date"], "x-amz-security-token": h["x-amz-security-token"]}
    want = sigv4.authorization(sigv4.Credentials(AK, SK, TOKEN), region, service, rec.method, path, query,
                               signed, h["x-amz-content-sha256"])
    assert h["authorization"] == want
    assert f"Credential={AK}/{h['x-amz-date'][:8]}/{region}/{service}/aws4_request" in want


@pytest.mark.parametrize("service", ["es", "aoss"])
def test_signed_requests_reach_the_node_with_valid_signatures(
        aws_env: None, opensearch: OpenSearchNode, proxy: FaultProxy, service: str) -> None:
    idx = new_index()
    pipeline = f"p-{uuid.uuid4().hex[:8]}"
    status, _ = opensearch.request("PUT", f"/_ingest/pipeline/{pipeline}",
                                   {"processors": [{"set": {"field": "via", "value": "pipeline"}}]})
    assert status == 200
    out = make_plugin(OpenSearchOutput, parsers=None, port=proxy.port, index=idx, aws_auth="on",
                      aws_region="eu-west-1", aws_service_name=service, compress="gzip", pipeline=pipeline)
    [res] = flush_all(out, make_chunk(records(300)))
    assert res.delivered_all, res
    opensearch.refresh(idx)
    assert opensearch.count(idx) == 300
    assert {d["via"] for d in opensearch.sources(idx)} == {"pipeline"}
    assert [r.method for r in proxy.requests] == ["GET", "POST"]  # detection, then the bulk
    for rec in proxy.requests:
        _verify(rec, "eu-west-1", service)
    bulk = proxy.bulk_requests()[0]
    assert bulk.headers["content-encoding"] == "gzip" and gzip.decompress(bulk.wire_body) == bulk.body
    assert bulk.path == f"/_bulk?pipeline={pipeline}&filter_path=errors,items.*.status,items.*.error,error,status"


def test_cli_signed_stdin_to_the_node(opensearch: OpenSearchNode, proxy: FaultProxy, tmp_path: Path) -> None:
    """The real ``logfwd`` process: a Fluent Bit style section, credentials from a shared file profile."""
    creds = tmp_path / "credentials"
    creds.write_text(f"[ship]\naws_access_key_id = {AK}\naws_secret_access_key = {SK}\n"
                     f"aws_session_token = {TOKEN}\n")
    idx = new_index("cli")
    conf = tmp_path / "logfwd.conf"
    conf.write_text(f"""[SERVICE]
    Flush 0.2
[INPUT]
    Name   stdin
    Tag    app
[OUTPUT]
    Name             opensearch
    Match            *
    Host             127.0.0.1
    Port             {proxy.port}
    Index            {idx}
    AWS_Auth         On
    AWS_Region       us-east-1
    AWS_Profile      ship
    Include_Tag_Key  On
    Retry_Limit      3
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(creds)
    data = b"".join(json.dumps({"n": i}).encode() + b"\n" for i in range(500))
    done = subprocess.run([LOGFWD, "-c", str(conf)], input=data, capture_output=True, timeout=OPENSEARCH_DEADLINE, env=env)
    assert done.returncode == 0, done.stderr.decode()
    assert opensearch.count(idx) == 500
    assert {s["_flb-key"] for s in opensearch.sources(idx)} == {"app"}  # Fluent Bit's opensearch Tag_Key
    assert proxy.bulk_requests()
    for rec in proxy.requests:
        _verify(rec, "us-east-1", "es")


def test_without_aws_auth_nothing_is_signed(opensearch: OpenSearchNode, proxy: FaultProxy) -> None:
    idx = new_index()
    [res] = flush_all(make_plugin(OpenSearchOutput, parsers=None, port=proxy.port, index=idx),
                      make_chunk(records(5)))
    assert res.delivered_all
    assert all("authorization" not in r.headers and "x-amz-date" not in r.headers for r in proxy.requests)


# ------------------------------------------------------------------ server detection


def _actions(rec: Recorded) -> list[dict[str, Any]]:
    lines = rec.body.splitlines()
    return [json.loads(line) for line in lines[0::2]]


def test_real_opensearch_2_detected_type_omitted(opensearch: OpenSearchNode, proxy: FaultProxy) -> None:
    idx = new_index()
    status, root = opensearch.request("GET", "/")
    assert status == 200 and root["version"]["distribution"] == "opensearch"
    assert root["version"]["number"].startswith("2.")
    for plugin in (OpenSearchOutput, EsOutput):
        [res] = flush_all(make_plugin(plugin, parsers=None, port=proxy.port, index=idx), make_chunk(records(10)))
        assert res.delivered_all, res
    assert all("_type" not in a["create"] for r in proxy.bulk_requests() for a in _actions(r))
    opensearch.refresh(idx)
    assert opensearch.count(idx) == 20


# (GET / answer, mapping type sent?) of servers that cannot run here
SERVERS = {
    "opensearch-1.3": ({"distribution": "opensearch", "number": "1.3.20"}, False),
    "elasticsearch-6.8": ({"number": "6.8.23", "build_flavor": "default"}, True),
    "elasticsearch-7.17": ({"number": "7.17.25", "build_flavor": "default"}, False),
    "elasticsearch-8.15": ({"number": "8.15.3", "build_flavor": "default"}, False),
    "elasticsearch-9.1": ({"number": "9.1.0", "build_flavor": "default"}, False),
    "aws-compat-7.10": ({"distribution": "opensearch", "number": "7.10.2"}, False),
}


@pytest.mark.parametrize("server", sorted(SERVERS))
@pytest.mark.parametrize("plugin", [EsOutput, OpenSearchOutput], ids=["es", "opensearch"])
def test_detection_keeps_to_what_each_server_accepts(
        opensearch: OpenSearchNode, proxy: FaultProxy, server: str, plugin: Any) -> None:
    version, sends_type = SERVERS[server]
    proxy.fail_requests(200, 1, {"name": "n", "cluster_name": "c", "version": version, "tagline": "t"})
    idx = new_index()
    out = make_plugin(plugin, parsers=None, port=proxy.port, index=idx, retry_limit="no_retries")
    [res] = flush_all(out, make_chunk(records(4)))
    [bulk] = proxy.bulk_requests()
    actions = _actions(bulk)
    assert all(list(a) == ["create"] for a in actions)  # create: what data streams require, every version takes
    if sends_type:
        assert all(a["create"]["_type"] == "_doc" for a in actions)  # Elasticsearch 6 needs the type
        return  # (the real node, OpenSearch 2, refuses _type: nothing more to check)
    assert all("_type" not in a["create"] for a in actions)
    assert res.delivered_all, res
    opensearch.refresh(idx)
    assert opensearch.count(idx) == 4


@pytest.mark.parametrize("suppress", ["on", "off"])
def test_explicit_suppress_type_name_skips_detection(
        opensearch: OpenSearchNode, proxy: FaultProxy, suppress: str) -> None:
    out = make_plugin(OpenSearchOutput, parsers=None, port=proxy.port, index=new_index(),
                      suppress_type_name=suppress, retry_limit="no_retries")
    flush_all(out, make_chunk(records(2)))
    assert [r.method for r in proxy.requests] == ["POST"]  # no GET /
    assert all(("_type" in a["create"]) == (suppress == "off") for a in _actions(proxy.bulk_requests()[0]))


def test_data_stream_through_the_opensearch_output(opensearch: OpenSearchNode) -> None:
    """``create`` into a data stream (index template with ``data_stream``): what OpenSearch requires."""
    name = f"logs-os-{uuid.uuid4().hex[:8]}"
    status, body = opensearch.request("PUT", f"/_index_template/{name}",
                                      {"index_patterns": [f"{name}*"], "data_stream": {}, "priority": 500})
    assert status == 200, body
    [res] = flush_all(make_plugin(OpenSearchOutput, parsers=None, port=opensearch.port, index=name),
                      make_chunk(records(50)))
    assert res.delivered_all, res
    status, ds = opensearch.request("GET", f"/_data_stream/{name}")
    assert status == 200 and ds["data_streams"][0]["name"] == name
    opensearch.refresh(name)
    assert opensearch.count(name) == 50
