"""The kubernetes filter against the test API server (real HTTPS, list/watch, tokens, faults)."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from logfwd.batch import Batch
from logfwd.parsers import ParserRegistry
from logfwd.plugins.filter_kubernetes import KubernetesFilter
from logfwd.plugins.filter_kubernetes import source as k8s_source

from .backends.kubeapi import KubeApiServer, load_fixture
from .kubekit import (
    API_ID,
    API_JOURNAL_NAME,
    API_TAG,
    QUIET_ID,
    QUIET_JOURNAL_NAME,
    QUIET_TAG,
    SIDECAR_ID,
    SIDECAR_JOURNAL_NAME,
    SIDECAR_TAG,
    WEB_ID,
    WEB_JOURNAL_NAME,
    WEB_META,
    WEB_TAG,
    docker_journal_entry,
)
from .pluginkit import make_plugin


def make_filter(api: KubeApiServer, **opts: Any) -> KubernetesFilter:
    base: dict[str, Any] = {"Kube_URL": api.url, "Kube_CA_File": str(api.crt), "Kube_Token_File": str(api.token_file),
                            "Kube_Request_Timeout": "2"}
    base.update(opts)
    return make_plugin(KubernetesFilter, **base)  # type: ignore[no-any-return]


def batch(tag: str, *records: dict[str, Any]) -> Batch:
    return Batch(tag, [1_700_000_000_000_000_000] * len(records), [dict(r) for r in records])


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(0.02)


def run(f: KubernetesFilter, body: Callable[[KubernetesFilter], Awaitable[None]]) -> None:
    """Run ``body`` with the filter's background watch running, as the pipeline does."""

    async def main() -> None:
        async with trio.open_nursery() as n:
            n.start_soon(f.run)
            await body(f)
            n.cancel_scope.cancel()

    trio.run(main)


async def enrich(f: KubernetesFilter, tag: str, *records: dict[str, Any]) -> list[dict[str, Any]]:
    out = await f.filter_async(batch(tag, *records))
    return [] if out is None else out.records


# ------------------------------------------------------------------ enrichment


@pytest.mark.parametrize("node", ["node-a", None], ids=["watch", "get-per-pod"])
def test_fields_exactly_as_fluent_bit(kube_api: KubeApiServer, node: str | None) -> None:
    f = make_filter(kube_api, **({"Kube_Node_Name": node} if node else {}))

    async def body(f: KubernetesFilter) -> None:
        [r] = await enrich(f, WEB_TAG, {"log": "GET / 200\n", "stream": "stdout"})
        assert r == {"log": "GET / 200\n", "stream": "stdout", "kubernetes": WEB_META}
        assert list(r["kubernetes"]) == list(WEB_META)  # Fluent Bit's field order
        [r] = await enrich(f, API_TAG, {"log": "x"})
        k = r["kubernetes"]
        assert k["container_hash"] == ("registry.example.com/payments/api@sha256:"
                                       "1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d")  # docker-pullable:// cut
        assert k["docker_id"] == API_ID and k["container_image"] == "registry.example.com/payments/api:2.3.1"

    run(f, body)
    if node:
        assert kube_api.count("/api/v1/pods", watch=False) == 1
        assert kube_api.count("/api/v1/namespaces/shop/pods/web-7d9c6b5f4-x2x8q") == 0
    else:
        assert kube_api.count("/api/v1/namespaces/shop/pods/web-7d9c6b5f4-x2x8q") == 1


def test_labels_annotations_off_owner_references_and_namespace(kube_api: KubeApiServer) -> None:
    f = make_filter(kube_api, Kube_Node_Name="node-a", Labels="off", Annotations="off", Owner_References="on",
                    Namespace_Labels="on", Namespace_Annotations="on")

    async def body(f: KubernetesFilter) -> None:
        [r] = await enrich(f, WEB_TAG, {"log": "x"})
        k = r["kubernetes"]
        assert "labels" not in k and "annotations" not in k
        assert k["ownerReferences"][0]["kind"] == "ReplicaSet"
        assert r["kubernetes_namespace"] == {
            "name": "shop", "labels": {"kubernetes.io/metadata.name": "shop", "team": "storefront"},
            "annotations": {"owner": "storefront@example.com"}}

    run(f, body)
    assert kube_api.count("/api/v1/namespaces", watch=False) == 1  # listed (then watched), not fetched one by one
    assert kube_api.count("/api/v1/namespaces/shop") == 0


def test_not_a_container_tag_is_left_alone(kube_api: KubeApiServer) -> None:
    f = make_filter(kube_api, Kube_Node_Name="node-a")

    async def body(f: KubernetesFilter) -> None:
        assert await enrich(f, "kube.var.log.syslog", {"log": "x"}) == [{"log": "x"}]

    run(f, body)


def test_tag_only_and_regex_parser(kube_api: KubeApiServer) -> None:
    f = make_filter(kube_api, Use_Tag_For_Meta="on")
    reg = ParserRegistry()
    reg.add_parser({"name": "k8s-custom-tag", "format": "regex",
                    "regex": r"^(?<namespace_name>[^.]+)\.(?<pod_name>[^.]+)\.(?<container_name>[^.]+)$"})
    g = make_filter(kube_api, parsers=reg, Kube_Node_Name="node-a", Kube_Tag_Prefix="custom.",
                    Regex_Parser="k8s-custom-tag")

    async def body(f: KubernetesFilter) -> None:
        [r] = await enrich(f, WEB_TAG, {"log": "x"})
        assert r["kubernetes"] == {"pod_name": "web-7d9c6b5f4-x2x8q", "namespace_name": "shop",
                                   "container_name": "nginx", "docker_id": WEB_ID}

    async def body_regex(g: KubernetesFilter) -> None:
        [r] = await enrich(g, "custom.shop.web-7d9c6b5f4-x2x8q.nginx", {"log": "x"})
        assert r["kubernetes"]["pod_id"] == WEB_META["pod_id"]
        assert r["kubernetes"]["container_image"] == WEB_META["container_image"]
        assert r["kubernetes"]["docker_id"] == WEB_ID  # not in the tag: from the pod's status, as Fluent Bit

    run(f, body)
    assert kube_api.requests == []
    run(g, body_regex)


# ------------------------------------------------------------------ merge log, annotations


def test_merge_log_json(kube_api: KubeApiServer) -> None:
    f = make_filter(kube_api, Kube_Node_Name="node-a", Merge_Log="on", Keep_Log="off")
    g = make_filter(kube_api, Kube_Node_Name="node-a", Merge_Log="on", Merge_Log_Key="app")

    async def body(f: KubernetesFilter) -> None:
        recs = await enrich(f, WEB_TAG, {"log": '{"level":"info","msg":"ok  \\n"}\n', "stream": "stdout"},
                            {"log": "plain text\n", "stream": "stdout"})
        assert recs[0]["level"] == "info" and recs[0]["msg"] == "ok" and "log" not in recs[0]
        assert recs[1]["log"] == "plain text\n"  # not JSON: untouched
        assert recs[0]["kubernetes"]["pod_name"] == "web-7d9c6b5f4-x2x8q"

    async def body_key(g: KubernetesFilter) -> None:
        [r] = await enrich(g, WEB_TAG, {"log": '{"level":"warn"}', "stream": "stderr"})
        assert r["app"] == {"level": "warn"} and r["log"] == '{"level":"warn"}'

    run(f, body)
    run(g, body_key)


def test_parser_and_exclude_annotations(kube_api: KubeApiServer) -> None:
    f = make_filter(kube_api, Kube_Node_Name="node-a", Merge_Log="on", **{"K8S-Logging.Parser": "on",
                                                                          "K8S-Logging.Exclude": "on"})
    line = '192.168.0.1 - - [28/Jul/2006:10:27:10 -0300] "GET /cgi-bin/try/ HTTP/1.0" 200 3395 "-" "curl/8"'

    async def body(f: KubernetesFilter) -> None:
        [r] = await enrich(f, API_TAG, {"log": line, "stream": "stdout"})
        assert r["method"] == "GET" and r["code"] == "200" and r["log"] == line  # apache2 from the annotation
        assert await enrich(f, SIDECAR_TAG, {"log": "envoy"}) == []  # fluentbit.io/exclude-sidecar
        assert await enrich(f, QUIET_TAG, {"log": "noise"}) == []  # fluentbit.io/exclude
        [r] = await enrich(f, WEB_TAG, {"log": line})
        assert "method" not in r  # no annotation on that pod

    run(f, body)


def test_annotations_ignored_when_options_off(kube_api: KubeApiServer) -> None:
    f = make_filter(kube_api, Kube_Node_Name="node-a", Merge_Log="on")

    async def body(f: KubernetesFilter) -> None:
        assert len(await enrich(f, QUIET_TAG, {"log": "noise"})) == 1
        [r] = await enrich(f, API_TAG, {"log": "1.2.3.4 - - [x] \"GET / HTTP/1.0\" 200 1"})
        assert "method" not in r

    run(f, body)


# ------------------------------------------------------------------ Use_Journal


def web_entry(message: str, **extra: str) -> dict[str, str]:
    return {**docker_journal_entry(WEB_JOURNAL_NAME, WEB_ID, message), **extra}


@pytest.mark.parametrize("node", ["node-a", None], ids=["watch", "get-per-pod"])
def test_journal_container_name_names_the_pod(kube_api: KubeApiServer, node: str | None) -> None:
    """Each record's CONTAINER_NAME, not the tag, names its pod: one batch mixes pods, in order."""
    f = make_filter(kube_api, Use_Journal="on", **({"Kube_Node_Name": node} if node else {}))
    web = web_entry("GET / 200")
    app = docker_journal_entry(API_JOURNAL_NAME, API_ID, "paid", stderr=True)

    async def body(f: KubernetesFilter) -> None:
        recs = await enrich(f, "kube.docker.service", web, app, web_entry("GET /x 404"))
        assert [r["MESSAGE"] for r in recs] == ["GET / 200", "paid", "GET /x 404"]
        # The docker id comes from the pod's status (the name holds none), as in Fluent Bit.
        assert recs[0] == {**web, "kubernetes": WEB_META}
        assert list(recs[0]["kubernetes"]) == list(WEB_META)
        k = recs[1]["kubernetes"]
        assert (k["pod_name"], k["namespace_name"], k["container_name"]) == ("api-0", "payments", "app")
        assert k["pod_id"] == "b7e2d1c0-3f4a-4b5c-8d9e-0a1b2c3d4e5f" and k["docker_id"] == API_ID
        assert k["labels"] and recs[2]["kubernetes"] is recs[0]["kubernetes"]  # one lookup per container
        # An old-style name with the container's hash: the name's hash wins, as in Fluent Bit.
        hashed = web_entry("x", CONTAINER_NAME=WEB_JOURNAL_NAME.replace("k8s_nginx_", "k8s_nginx.3f2a1b0c_"))
        [r] = await enrich(f, "anything", hashed)
        assert r["kubernetes"]["container_hash"] == "3f2a1b0c"
        assert r["kubernetes"]["container_image"] == WEB_META["container_image"]

    run(f, body)
    assert f.metrics.get("unenriched_records", 0) == 0
    if node is None:
        assert kube_api.count("/api/v1/namespaces/shop/pods/web-7d9c6b5f4-x2x8q") == 1
        assert kube_api.count("/api/v1/namespaces/payments/pods/api-0") == 1


def test_journal_entries_without_a_pod_name_pass_unchanged(kube_api: KubeApiServer,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """No CONTAINER_NAME (dockerd itself) or a name that is not a pod's: left as they are, counted, logged once."""
    f = make_filter(kube_api, Use_Journal="on", Kube_Node_Name="node-a")
    daemon = {"MESSAGE": "dockerd: starting", "_SYSTEMD_UNIT": "docker.service", "PRIORITY": "6"}
    compose = docker_journal_entry("shop-db-1", "d" * 64, "not started by Kubernetes")

    async def body(f: KubernetesFilter) -> None:
        recs = await enrich(f, "kube.docker.service", daemon, compose, web_entry("ok"), compose)
        assert recs[0] == daemon and recs[1] == compose and recs[3] == compose
        assert recs[2]["kubernetes"]["pod_id"] == WEB_META["pod_id"]
        assert await enrich(f, "kube.docker.service", compose, daemon) == [compose, daemon]

    with caplog.at_level("WARNING"):
        run(f, body)
    assert f.metrics["journal_unnamed_records"] == 2 and f.metrics["journal_unmatched_records"] == 3
    warned = [m for m in caplog.messages if "shop-db-1" in m]
    assert len(warned) == 1 and "CONTAINER_NAME" in warned[0]
    assert f.metrics.get("unenriched_records", 0) == 0


def test_journal_regex_parser_splits_container_name(kube_api: KubeApiServer) -> None:
    """Regex_Parser replaces the journal expression (and the tag prefix plays no part)."""
    reg = ParserRegistry()
    reg.add_parser({"name": "podman-names", "format": "regex",
                    "regex": r"^(?<namespace_name>[^.]+)\.(?<pod_name>[^.]+)\.(?<container_name>[^.]+)$"})
    f = make_filter(kube_api, parsers=reg, Use_Journal="on", Kube_Node_Name="node-a", Regex_Parser="podman-names",
                    Kube_Tag_Prefix="never.matches.")
    own = web_entry("mine", CONTAINER_NAME="shop.web-7d9c6b5f4-x2x8q.nginx")
    dockershim = web_entry("k8s_ name")

    async def body(f: KubernetesFilter) -> None:
        r, d = await enrich(f, "kube.journal", own, dockershim)
        assert r["kubernetes"] == WEB_META
        assert d == dockershim  # the default expression is replaced, not added to

    run(f, body)
    assert f.metrics["journal_unmatched_records"] == 1


def test_journal_merge_log_merges_log_not_message(kube_api: KubeApiServer) -> None:
    """As Fluent Bit: Merge_Log reads 'log' in journal mode too; MESSAGE is merged once renamed to 'log'."""
    f = make_filter(kube_api, Use_Journal="on", Kube_Node_Name="node-a", Merge_Log="on", Keep_Log="off")
    g = make_filter(kube_api, Use_Journal="on", Kube_Node_Name="node-a", Merge_Log="on", Merge_Log_Key="app")
    as_message = web_entry('{"level":"info"}')
    renamed = web_entry("")  # what a modify filter's "Rename MESSAGE log" makes of an entry
    del renamed["MESSAGE"]
    renamed["log"] = '{"level":"warn","msg":" trimmed "}'

    async def body(f: KubernetesFilter) -> None:
        m, r = await enrich(f, "kube.journal", as_message, renamed)
        assert m["MESSAGE"] == '{"level":"info"}' and "level" not in m and m["kubernetes"]["pod_name"]
        assert r["level"] == "warn" and r["msg"] == "trimmed" and "log" not in r
        assert r["kubernetes"] == WEB_META

    async def body_key(g: KubernetesFilter) -> None:
        [r] = await enrich(g, "kube.journal", renamed)
        assert r["app"] == {"level": "warn", "msg": "trimmed"} and r["log"] == renamed["log"]

    run(f, body)
    run(g, body_key)


def test_journal_annotations_apply_per_pod(kube_api: KubeApiServer) -> None:
    """K8S-Logging.Exclude/Parser in a batch mixing pods: each record gets its own pod's annotations."""
    f = make_filter(kube_api, Use_Journal="on", Kube_Node_Name="node-a", Merge_Log="on",
                    **{"K8S-Logging.Parser": "on", "K8S-Logging.Exclude": "on"})
    line = '10.0.0.1 - - [01/May/2024:10:00:00 +0000] "GET /pay HTTP/1.1" 200 12'
    app = docker_journal_entry(API_JOURNAL_NAME, API_ID, "")
    app["log"] = line
    sidecar = docker_journal_entry(SIDECAR_JOURNAL_NAME, SIDECAR_ID, "envoy")
    quiet = docker_journal_entry(QUIET_JOURNAL_NAME, QUIET_ID, "noise")

    async def body(f: KubernetesFilter) -> None:
        recs = await enrich(f, "kube.journal", quiet, web_entry("a"), sidecar, app, web_entry("b"), quiet)
        assert [r.get("MESSAGE") for r in recs] == ["a", "", "b"]
        assert recs[1]["path"] == "/pay" and recs[1]["kubernetes"]["container_name"] == "app"  # apache2
        assert await enrich(f, "kube.journal", quiet, sidecar) == []

    run(f, body)


# ------------------------------------------------------------------ the watch


def test_watch_follows_changes_and_deleted_pods_keep_metadata(kube_api: KubeApiServer) -> None:
    f = make_filter(kube_api, Kube_Node_Name="node-a")
    pod = load_fixture("pod-web.json")

    async def body(f: KubernetesFilter) -> None:
        await enrich(f, WEB_TAG, {"log": "x"})
        changed = copy.deepcopy(pod)
        changed["metadata"]["labels"]["tier"] = "edge"
        kube_api.add_pod(changed)
        await until(lambda: f.source.pods.get(("shop", "web-7d9c6b5f4-x2x8q")).labels["tier"] == "edge")
        kube_api.delete_pod("shop", "web-7d9c6b5f4-x2x8q")
        await until(lambda: f.source.pods.get(("shop", "web-7d9c6b5f4-x2x8q")).deleted_at is not None)
        [r] = await enrich(f, WEB_TAG, {"log": "last words"})
        assert r["kubernetes"]["labels"]["tier"] == "edge"  # still enriched after deletion (grace period)

    run(f, body)
    assert kube_api.count("/api/v1/namespaces/shop/pods/web-7d9c6b5f4-x2x8q") == 0  # all from the watch


def test_new_pod_arrives_through_the_watch(kube_api: KubeApiServer) -> None:
    f = make_filter(kube_api, Kube_Node_Name="node-a")
    pod = load_fixture("pod-web.json")
    pod["metadata"]["name"] = "web-7d9c6b5f4-new01"
    pod["metadata"]["uid"] = "00000000-0000-4000-8000-000000000001"
    tag = WEB_TAG.replace("x2x8q", "new01")

    async def body(f: KubernetesFilter) -> None:
        await until(lambda: f.source.pod_watch.synced.is_set())
        kube_api.add_pod(pod)
        await until(lambda: f.source.pods.get(("shop", "web-7d9c6b5f4-new01")) is not None)
        [r] = await enrich(f, tag, {"log": "x"})
        assert r["kubernetes"]["pod_id"] == "00000000-0000-4000-8000-000000000001"

    run(f, body)
    assert kube_api.count("/api/v1/namespaces/shop/pods/web-7d9c6b5f4-new01") == 0


def test_410_gone_relists(kube_api: KubeApiServer) -> None:
    f = make_filter(kube_api, Kube_Node_Name="node-a")
    pod = load_fixture("pod-web.json")
    pod["metadata"]["labels"]["tier"] = "after-410"

    async def body(f: KubernetesFilter) -> None:
        await until(lambda: f.source.pod_watch.synced.is_set() and kube_api.count("/api/v1/pods", watch=True) == 1)
        kube_api.compact()  # the version the watch holds is now too old
        kube_api.drop_watches()  # the watch reconnects from it and gets 410
        kube_api.add_pod(pod)
        await until(lambda: f.source.pods.get(("shop", "web-7d9c6b5f4-x2x8q")).labels["tier"] == "after-410")
        assert f.metrics.get("pods_relists") == 1
        [r] = await enrich(f, WEB_TAG, {"log": "x"})
        assert r["kubernetes"]["labels"]["tier"] == "after-410"

    run(f, body)
    assert kube_api.count("/api/v1/pods", watch=False) == 2


def test_bookmark_moves_the_resource_version(kube_api: KubeApiServer) -> None:
    f = make_filter(kube_api, Kube_Node_Name="node-a")

    async def body(f: KubernetesFilter) -> None:
        await until(lambda: f.source.pod_watch.synced.is_set() and kube_api.count("/api/v1/pods", watch=True) == 1)
        kube_api.bookmark()
        rv = str(kube_api.state.rv)
        await until(lambda: f.source.pod_watch.resource_version == rv)
        kube_api.drop_watches()
        await until(lambda: kube_api.count("/api/v1/pods", watch=True) == 2)

    run(f, body)
    last_watch = [q for p, q in kube_api.requests if p == "/api/v1/pods" and q.get("watch")][-1]
    assert last_watch["resourceVersion"] == [str(kube_api.state.rv)]
    assert last_watch["fieldSelector"] == ["spec.nodeName=node-a"]
    assert kube_api.count("/api/v1/pods", watch=False) == 1  # resumed, not relisted


# ------------------------------------------------------------------ tokens, outages


def test_token_rotation_is_read_again(kube_api: KubeApiServer) -> None:
    f = make_filter(kube_api)  # GET per pod: each request shows the token it carried

    async def body(f: KubernetesFilter) -> None:
        [r] = await enrich(f, WEB_TAG, {"log": "x"})
        assert "pod_id" in r["kubernetes"]
        kube_api.rotate_token("test-token-2")  # the old one is refused from now on
        [r] = await enrich(f, API_TAG, {"log": "x"})
        assert r["kubernetes"]["pod_id"] == "b7e2d1c0-3f4a-4b5c-8d9e-0a1b2c3d4e5f"

    run(f, body)
    assert f.metrics.get("unenriched_records", 0) == 0


def test_kube_token_command_is_run_again_after_a_401(kube_api: KubeApiServer, tmp_path: Any) -> None:
    """Kube_Token_Command's output is the token; a 401 runs it again (as after a rotation)."""
    runs = tmp_path / "runs"
    cmd = f"echo run >> {runs}; cat {kube_api.token_file}"
    f = make_filter(kube_api, Kube_Token_File=str(tmp_path / "absent"), Kube_Token_Command=cmd)

    async def body(f: KubernetesFilter) -> None:
        [r] = await enrich(f, WEB_TAG, {"log": "x"})
        assert "pod_id" in r["kubernetes"]
        kube_api.rotate_token("test-token-2")
        # The first request after the rotation gets a 401 and the filter backs off for a moment;
        # once it tries again the command has run again and the new token is accepted.
        with trio.fail_after(10):
            while "pod_id" not in (r := (await enrich(f, API_TAG, {"log": "x"}))[0])["kubernetes"]:
                await trio.sleep(0.05)
        assert r["kubernetes"]["pod_id"] == "b7e2d1c0-3f4a-4b5c-8d9e-0a1b2c3d4e5f"

    run(f, body)
    assert runs.read_text().count("run") >= 2


def test_kube_token_command_failing_passes_records_unenriched(kube_api: KubeApiServer,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    f = make_filter(kube_api, Kube_Token_Command="echo nope >&2; exit 3")

    async def body(f: KubernetesFilter) -> None:
        [r] = await enrich(f, WEB_TAG, {"log": "x"})
        assert "pod_id" not in r["kubernetes"]

    run(f, body)
    assert f.metrics["unenriched_records"] == 1
    assert any("Kube_Token_Command failed (exit status 3: nope)" in m for m in caplog.messages)


def test_wrong_token_401_passes_records_unenriched(kube_api: KubeApiServer) -> None:
    kube_api.token_file.write_text("not-the-token\n")
    f = make_filter(kube_api)

    async def body(f: KubernetesFilter) -> None:
        [r] = await enrich(f, WEB_TAG, {"log": "x"})
        assert r["kubernetes"] == {"pod_name": "web-7d9c6b5f4-x2x8q", "namespace_name": "shop",
                                   "container_name": "nginx", "docker_id": WEB_ID}

    run(f, body)
    assert f.metrics["unenriched_records"] == 1 and f.metrics["api_errors"] >= 1


@pytest.mark.parametrize("mode", ["503", "hang"])
def test_outage_passes_unenriched_then_enriches_again(kube_api: KubeApiServer, mode: str) -> None:
    f = make_filter(kube_api, Kube_Node_Name="node-a", Kube_Request_Timeout="0.5")
    new = load_fixture("pod-web.json")
    new["metadata"]["name"] = "web-7d9c6b5f4-later"
    tag = WEB_TAG.replace("x2x8q", "later")

    async def body(f: KubernetesFilter) -> None:
        await until(lambda: f.source.pod_watch.synced.is_set())
        kube_api.down(mode)
        await until(lambda: not f.source.pod_watch.healthy)
        with trio.fail_after(3):  # an outage must not hold the pipeline up
            recs = await enrich(f, tag, *({"log": str(i)} for i in range(10)))
        assert [r["log"] for r in recs] == [str(i) for i in range(10)]
        assert "pod_id" not in recs[0]["kubernetes"]
        [r] = await enrich(f, WEB_TAG, {"log": "known"})
        assert r["kubernetes"]["pod_id"]  # what was cached before the outage still enriches
        kube_api.up()
        kube_api.add_pod(new)
        await until(lambda: f.source.pod_watch.healthy and f.source.pods.get(("shop", "web-7d9c6b5f4-later")))
        [r] = await enrich(f, tag, {"log": "after"})
        assert r["kubernetes"]["pod_id"] == WEB_META["pod_id"]

    run(f, body)
    assert f.metrics["unenriched_records"] == 10


def test_429_retry_after_and_500_back_off(kube_api: KubeApiServer) -> None:
    kube_api.fail(429, 1, retry_after=1)
    kube_api.fail(500, 1)
    f = make_filter(kube_api, Kube_Node_Name="node-a")

    async def body(f: KubernetesFilter) -> None:
        await until(lambda: f.source.pod_watch.synced.is_set())
        [r] = await enrich(f, WEB_TAG, {"log": "x"})
        assert r["kubernetes"] == WEB_META

    run(f, body)
    assert f.metrics["api_errors"] == 2


def test_bad_options_are_config_errors(tmp_path: Any) -> None:
    from logfwd.plugin import ConfigValueError  # noqa: PLC0415 - only here

    with pytest.raises(ConfigValueError, match="unknown parser"):
        make_plugin(KubernetesFilter, Merge_Parser="nope", Kube_CA_File=str(tmp_path / "x"))
    with pytest.raises(ConfigValueError, match="does not exist"):
        make_plugin(KubernetesFilter, Kube_CA_File=str(tmp_path / "missing.crt"))
    with pytest.raises(ConfigValueError, match="http"):
        make_plugin(KubernetesFilter, Kube_URL="ftp://x", tls__verify="off")


# ------------------------------------------------------------------ other sources, scale


def test_use_kubelet_reads_the_node_pod_list(kube_api: KubeApiServer) -> None:
    f = make_filter(kube_api, Use_Kubelet="on", Kubelet_Host="127.0.0.1", Kubelet_Port=str(kube_api.port),
                    Kube_Node_Name="node-a")

    async def body(f: KubernetesFilter) -> None:
        [r] = await enrich(f, WEB_TAG, {"log": "x"})
        assert r["kubernetes"] == WEB_META
        [r] = await enrich(f, API_TAG, {"log": "x"})  # from the same list: no second request
        assert r["kubernetes"]["pod_id"] == "b7e2d1c0-3f4a-4b5c-8d9e-0a1b2c3d4e5f"

    run(f, body)
    assert kube_api.count("/pods") == 1 and kube_api.count("/api/v1/pods") == 0


def test_cache_use_docker_id_fetches_a_restarted_container(kube_api: KubeApiServer) -> None:
    f = make_filter(kube_api, Cache_Use_Docker_Id="on")
    pod = load_fixture("pod-web.json")
    new_id = "e" * 64
    pod["status"]["containerStatuses"][1]["containerID"] = "containerd://" + new_id

    async def body(f: KubernetesFilter) -> None:
        await enrich(f, WEB_TAG, {"log": "x"})
        kube_api.add_pod(pod)
        [r] = await enrich(f, WEB_TAG.replace(WEB_ID, new_id), {"log": "x"})
        assert r["kubernetes"]["docker_id"] == new_id
        await enrich(f, WEB_TAG.replace(WEB_ID, new_id), {"log": "x"})

    run(f, body)
    assert kube_api.count("/api/v1/namespaces/shop/pods/web-7d9c6b5f4-x2x8q") == 2


def test_many_pods_one_watch(kube_api: KubeApiServer) -> None:
    """200 pods on the node: one LIST and one WATCH, no request per pod (Fluent Bit: one GET each)."""
    base = load_fixture("pod-web.json")
    tags = []
    for i in range(200):
        pod = copy.deepcopy(base)
        pod["metadata"]["name"] = f"app-{i}"
        pod["metadata"]["uid"] = f"00000000-0000-4000-8000-{i:012d}"
        kube_api.add_pod(pod)
        tags.append(f"kube.var.log.containers.app-{i}_shop_nginx-{WEB_ID}.log")
    f = make_filter(kube_api, Kube_Node_Name="node-a")

    async def body(f: KubernetesFilter) -> None:
        for i, tag in enumerate(tags):
            [r] = await enrich(f, tag, {"log": "x"})
            assert r["kubernetes"]["pod_id"].endswith(f"{i:012d}")

    run(f, body)
    assert kube_api.count("/api/v1/pods", watch=False) == 1
    assert sum(1 for p, _ in kube_api.requests if "/pods/" in p) == 0
    assert f.metrics.get("unenriched_records", 0) == 0


@pytest.mark.parametrize("mode", ["503", "hang"])
def test_api_away_at_start_does_not_stall(kube_api: KubeApiServer, mode: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Lookups at start wait for the first LIST's outcome, not for its deadline: an API that
    refuses (503) or times out (Kube_Request_Timeout) ends the wait, once for every batch."""
    monkeypatch.setattr(k8s_source, "_SYNC_WAIT", 120.0)  # waiting out the deadline would fail below
    kube_api.down(mode)
    f = make_filter(kube_api, Kube_Node_Name="node-a", Kube_Request_Timeout="0.5")

    async def body(f: KubernetesFilter) -> None:
        with trio.fail_after(60):
            for i in range(20):
                [r] = await enrich(f, WEB_TAG, {"log": str(i)})
                assert "pod_id" not in r["kubernetes"]
        kube_api.up()
        await until(lambda: f.source.pod_watch.synced.is_set())
        [r] = await enrich(f, WEB_TAG, {"log": "x"})
        assert r["kubernetes"] == WEB_META

    run(f, body)
    assert f.metrics["unenriched_records"] == 20


def test_watch_reconnects_with_the_rotated_token(kube_api: KubeApiServer) -> None:
    f = make_filter(kube_api, Kube_Node_Name="node-a")
    pod = load_fixture("pod-web.json")
    pod["metadata"]["labels"]["tier"] = "rotated"

    async def body(f: KubernetesFilter) -> None:
        await until(lambda: f.source.pod_watch.synced.is_set() and kube_api.count("/api/v1/pods", watch=True) == 1)
        kube_api.rotate_token("test-token-2")
        kube_api.drop_watches()
        kube_api.add_pod(pod)
        await until(lambda: f.source.pods.get(("shop", "web-7d9c6b5f4-x2x8q")).labels["tier"] == "rotated")

    run(f, body)
    assert f.metrics["api_errors"] == 1  # the cut itself; the reconnect carried the new token (no 401)
