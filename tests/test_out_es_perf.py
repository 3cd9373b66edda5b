"""The es output's cheap reading of clean ``_bulk`` answers changes no outcome.

A 2xx answer with ``"errors": false`` is only validated and counted (msgspec), not
turned into a dict per item; every other answer takes the full parse. These tests
pin that both roads give the Results the output always gave: against the real
noida-db, and through the fault proxy for answers a server could send but noida
does not (short item lists, odd item shapes, a failed request with a bulk body).
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from elastic_transport import SerializationError

from logfwd.batch import Chunk
from logfwd.plugins._es import reply as out_es
from logfwd.plugins.out_es import PLUGIN as EsOutput

from .backends.es import EsServer
from .faultproxy import FaultProxy
from .pluginkit import flush_all, make_chunk, make_plugin

pytestmark = pytest.mark.backend

T0 = 1_714_564_800_000_000_000


def make_output(**raw: Any) -> EsOutput:
    return make_plugin(EsOutput, parsers=None, **raw)


def chunk(records: list[dict[str, Any]]) -> Chunk:
    return make_chunk(records, None, "app.log", None, t0=T0, step=1_000_000)


def new_index() -> str:
    return f"perf-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def proxy(es_server: EsServer):
    with FaultProxy(es_server.port) as p:
        yield p


def bulk_answer(n: int, errors: bool = False, op: str = "create") -> dict[str, Any]:
    """What Elasticsearch answers for ``n`` stored documents (all fields of a real answer)."""
    return {"took": 3, "errors": errors, "items": [
        {op: {"_index": "x", "_id": f"id{i}", "_version": 1, "result": "created", "_seq_no": i,
              "_primary_term": 1, "_shards": {"total": 2, "successful": 1, "failed": 0}, "status": 201}}
        for i in range(n)]}


# ------------------------------------------------------------------ real server


def test_large_clean_chunk_is_delivered(es_server: EsServer) -> None:
    idx = new_index()
    recs = [{"n": i, "msg": f"line {i}"} for i in range(3000)]
    [r] = flush_all(make_output(port=es_server.port, index=idx, suppress_type_name="on"), chunk(recs))
    assert r.delivered_all and not r.refused and r.retry is None
    assert es_server.count(idx) == 3000


def test_errors_in_answer_still_judged_per_item(es_server: EsServer) -> None:
    """A replay with derived ids: the answer has errors (409s), all count as delivered."""
    idx = new_index()
    recs = [{"n": i} for i in range(50)]
    c = make_chunk(recs, None, "app.log", [f"f:{i}" for i in range(50)], t0=T0, step=1_000_000)
    out = make_output(port=es_server.port, index=idx, suppress_type_name="on", id_mode="derived")
    first, second = flush_all(out, c, c)
    assert first.delivered_all and second.delivered_all
    assert out.metrics.get("es_duplicates") == 50
    assert es_server.count(idx) == 50


def test_one_bad_record_among_many_is_the_only_one_refused(es_server: EsServer) -> None:
    idx = new_index()
    status, _ = es_server.request("PUT", f"/{idx}", {"mappings": {"properties": {"code": {"type": "integer"}}}})
    assert status == 200
    recs: list[dict[str, Any]] = [{"code": i} for i in range(500)]
    recs[321] = {"code": "not a number"}
    [r] = flush_all(make_output(port=es_server.port, index=idx, suppress_type_name="on"), chunk(recs))
    assert [i for i, _ in r.refused] == [321] and r.retry is None
    assert es_server.count(idx) == 499


# ------------------------------------------------------------------ crafted answers


def test_clean_answer_with_fewer_items_retries_the_missing_tail(proxy: FaultProxy) -> None:
    proxy.fail_requests(200, body=bulk_answer(3))
    [r] = flush_all(make_output(port=proxy.port, index="x", suppress_type_name="on"), chunk([{"n": i} for i in range(5)]))
    assert r.retry == [3, 4] and not r.refused and not r.retry_all


def test_clean_answer_with_non_object_items_counts_as_delivered(proxy: FaultProxy) -> None:
    """The old rule: ``errors: false`` and one item per action is success, whatever the items hold."""
    proxy.fail_requests(200, body={"errors": False, "items": [1, "two"]})
    [r] = flush_all(make_output(port=proxy.port, index="x", suppress_type_name="on"), chunk([{"a": 1}, {"a": 2}]))
    assert r.delivered_all


def test_clean_looking_body_on_a_failed_request_is_a_whole_failure(proxy: FaultProxy) -> None:
    proxy.fail_requests(503, body=bulk_answer(2))
    [r] = flush_all(make_output(port=proxy.port, index="x", suppress_type_name="on"), chunk([{"a": 1}, {"a": 2}]))
    assert r.retry_all and "HTTP 503" in r.reason


def test_answer_without_items_is_retried(proxy: FaultProxy) -> None:
    proxy.fail_requests(200, body={"errors": False, "took": 1})
    [r] = flush_all(make_output(port=proxy.port, index="x", suppress_type_name="on"), chunk([{"a": 1}]))
    assert r.retry_all and "unexpected bulk answer" in r.reason


# ------------------------------------------------------------------ the serializer


def test_serializer_counts_only_clean_bulk_answers() -> None:
    js = out_es.serializers()["application/json"]
    clean = orjson.dumps(bulk_answer(4))
    dirty = orjson.dumps(bulk_answer(4, errors=True))
    assert js.loads(clean) == bulk_answer(4)  # other requests (GET /): a dict, as always
    token = out_es.BULK_ANSWER.set(True)
    try:
        got = js.loads(clean)
        assert isinstance(got, out_es.AllStored) and got.items == 4 and got.full() == bulk_answer(4)
        assert js.loads(dirty) == bulk_answer(4, errors=True)
        assert js.loads(b"") is None
        with pytest.raises(SerializationError):
            js.loads(b'{"errors":false,"items":[')
    finally:
        out_es.BULK_ANSWER.reset(token)


def test_clean_answer_is_counted_without_building_items() -> None:
    """50k items: a clean answer comes back as a count, not as 50k decoded item dicts.

    (How much CPU that saves is measured by bench/run.py, not asserted here.)
    """
    js = out_es.serializers()["application/json"]
    raw = orjson.dumps(bulk_answer(50_000))
    token = out_es.BULK_ANSWER.set(True)
    try:
        got = js.loads(raw)
    finally:
        out_es.BULK_ANSWER.reset(token)
    assert isinstance(got, out_es.AllStored) and got.items == 50_000
    assert not isinstance(got, dict)
