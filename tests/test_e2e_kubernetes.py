"""The shipped node pipeline (conf/kubernetes.yaml) end to end: real ``logfwd``, real log files, ES.

A directory laid out as the kubelet lays out ``/var/log``: container files under
``pods/<ns>_<pod>_<uid>/<container>/0.log`` (CRI lines with partial ``P`` records from
containerd, json-file lines from docker), linked as
``containers/<pod>_<ns>_<container>-<id>.log``; the test API server holds the pods; the
Elasticsearch stand-in receives the records. Along the way the API goes away (records
keep flowing, unenriched for a pod it never described), comes back (enriched again), a
watch gets 410 Gone, and a log file is rotated as the kubelet rotates: every line must
arrive exactly once, with Fluent Bit's field names.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from .backends._proc import ManagedProcess, free_port
from .backends.es import EsServer
from .backends.kubeapi import KubeApiServer, load_fixture
from .clikit import wait_until
from .kubekit import API_ID, SIDECAR_ID, WEB_ID, WEB_META

pytestmark = pytest.mark.backend

ROOT = Path(__file__).resolve().parent.parent
LOGFWD = str(Path(sys.executable).parent / "logfwd")
INDEX = "logstash-*"


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


class Node:
    """A node's /var/log with container log files named and rotated as the kubelet does."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "containers").mkdir(parents=True)
        (root / "journal").mkdir()  # journald's persistent directory (empty here)

    def container(self, ns: str, pod: str, uid: str, container: str, cid: str) -> Path:
        real = self.root / "pods" / f"{ns}_{pod}_{uid}" / container / "0.log"
        real.parent.mkdir(parents=True, exist_ok=True)
        real.touch()
        link = self.root / "containers" / f"{pod}_{ns}_{container}-{cid}.log"
        link.symlink_to(real)
        return real

    @staticmethod
    def cri(path: Path, *lines: str, partial: bool = False) -> None:
        with path.open("a") as f:
            for line in lines:
                if partial:  # containerd splits a long line into P records ended by an F record
                    half = len(line) // 2
                    f.write(f"{_now()} stdout P {line[:half]}\n")
                    f.write(f"{_now()} stdout F {line[half:]}\n")
                else:
                    f.write(f"{_now()} stdout F {line}\n")

    @staticmethod
    def docker(path: Path, *lines: str) -> None:
        with path.open("a") as f:
            for line in lines:
                f.write(json.dumps({"log": line + "\n", "stream": "stdout", "time": _now()}) + "\n")

    @staticmethod
    def rotate(path: Path) -> None:
        """The kubelet's rotation: 0.log becomes 0.log.<time>, and a new 0.log is written."""
        path.rename(path.with_name("0.log." + time.strftime("%Y%m%d-%H%M%S")))
        path.touch()


def _env(kube: KubeApiServer, es: EsServer, tmp: Path) -> dict[str, str]:
    sa = tmp / "serviceaccount"
    sa.mkdir()
    shutil.copy(kube.crt, sa / "ca.crt")
    (sa / "token").symlink_to(kube.token_file)
    return {
        "NODE_NAME": "node-a",
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(kube.port),
        "KUBE_SA_DIR": str(sa),
        "LOGFWD_LOG_DIR": str(tmp / "var-log"),
        "LOGFWD_STATE_DIR": str(tmp / "state"),
        "ES_HOST": "127.0.0.1",
        "ES_PORT": str(es.port),
        "ES_USER": "elastic",
        "ES_PASSWORD": "changeme",
        "ES_TLS": "off",
        "ES_TLS_VERIFY": "on",
    }


def _metrics(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/metrics", timeout=2) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def _filter_counter(port: int, name: str) -> float:
    return float(_metrics(port).get("filter", {}).get("kubernetes.0", {}).get(name, 0))


def _docs(es: EsServer) -> list[dict[str, Any]]:
    return es.sources(INDEX)


def _by_log(docs: list[dict[str, Any]], prefix: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for d in docs:
        text = str(d.get("log", "")).rstrip("\n")
        if text.startswith(prefix):
            assert text not in out, f"duplicate record {text!r}"
            out[text] = d
    return out


def test_node_pipeline_end_to_end(tmp_path: Path, kube_api: KubeApiServer, es_server: EsServer) -> None:
    es_server.request("DELETE", "/logstash-*")
    node = Node(tmp_path / "var-log")
    web = node.container("shop", "web-7d9c6b5f4-x2x8q", WEB_META["pod_id"], "nginx", WEB_ID)
    api = node.container("payments", "api-0", "b7e2d1c0-3f4a-4b5c-8d9e-0a1b2c3d4e5f", "app", API_ID)
    sidecar = node.container("payments", "api-0", "b7e2d1c0-3f4a-4b5c-8d9e-0a1b2c3d4e5f", "sidecar", SIDECAR_ID)
    later_id = "c" * 64
    later = node.container("shop", "web-7d9c6b5f4-later", "00000000-0000-4000-8000-00000000abcd", "nginx", later_id)
    (tmp_path / "state").mkdir()
    env = _env(kube_api, es_server, tmp_path)

    # Before the start: plain and partial CRI lines, apache lines through docker (parsed by the
    # pod's fluentbit.io/parser annotation), sidecar lines (excluded by annotation).
    node.cri(web, *(f"web-a {i}" for i in range(20)))
    node.cri(web, *(f"web-partial {i} " + "x" * 300 for i in range(5)), partial=True)
    node.docker(api, *(f'10.0.0.{i} - - [01/May/2024:10:00:00 +0000] "GET /pay/{i} HTTP/1.1" 200 12' for i in range(10)))
    node.docker(sidecar, *(f"envoy noise {i}" for i in range(10)))

    port = free_port()
    conf = ROOT / "conf" / "kubernetes.yaml"
    proc = ManagedProcess([LOGFWD, "-c", str(conf), "-P", str(port)], tmp_path / "logfwd.log", env=env).start()
    try:
        wait_until(lambda: len(_docs(es_server)) >= 35, 60, "first records in Elasticsearch", proc)

        # The API goes away: known pods stay enriched from the cache, an unknown one passes unenriched.
        kube_api.down()
        node.cri(web, *(f"web-b {i}" for i in range(20)))
        node.cri(later, *(f"later-a {i}" for i in range(10)))
        wait_until(lambda: len(_docs(es_server)) >= 65, 60, "records during the outage", proc)
        assert _filter_counter(port, "unenriched_records") >= 10

        # It comes back, with the new pod; a rotation; then the watch's version expires (410).
        kube_api.up()
        pod = load_fixture("pod-web.json")
        pod["metadata"]["name"] = "web-7d9c6b5f4-later"
        pod["metadata"]["uid"] = "00000000-0000-4000-8000-00000000abcd"
        pod["status"]["containerStatuses"][1]["containerID"] = "containerd://" + later_id
        kube_api.add_pod(pod)
        wait_until(lambda: _filter_counter(port, "pods_cached") >= 4, 60, "the watch back", proc)
        node.cri(later, *(f"later-b {i}" for i in range(10)))
        node.rotate(web)
        node.cri(web, *(f"web-c {i}" for i in range(20)))
        kube_api.compact()
        kube_api.drop_watches()
        wait_until(lambda: _filter_counter(port, "pods_relists") >= 1, 60, "a relist after 410", proc)
        node.cri(web, *(f"web-d {i}" for i in range(20)))
        wait_until(lambda: len(_docs(es_server)) >= 115, 90, "every record", proc)
        assert _filter_counter(port, "pods_relists") == 1  # one relist, then watching again
    finally:
        proc.stop(timeout=30)
    log = (tmp_path / "logfwd.log").read_text()
    assert "Traceback" not in log, log[-3000:]

    docs = _docs(es_server)
    webs = _by_log(docs, "web-")
    for part, n in (("a", 20), ("b", 20), ("c", 20), ("d", 20)):
        assert {f"web-{part} {i}" for i in range(n)} <= set(webs), part
    assert {f"web-partial {i} " + "x" * 300 for i in range(5)} <= set(webs)  # P+F joined
    assert len(webs) == 85
    k = webs["web-a 0"]["kubernetes"]
    # Fluent Bit's fields (es Replace_Dots On rewrites dots in label keys, as with Fluent Bit).
    assert {f: k[f] for f in ("pod_name", "namespace_name", "pod_id", "host", "container_name", "docker_id",
                              "container_hash", "container_image")} == {
        f: WEB_META[f] for f in ("pod_name", "namespace_name", "pod_id", "host", "container_name", "docker_id",
                                 "container_hash", "container_image")}
    assert k["labels"]["tier"] == "frontend" and k["labels"]["app_kubernetes_io/name"] == "web"
    assert all(d["kubernetes"].get("pod_id") == WEB_META["pod_id"] for d in webs.values())  # outage and 410 too
    assert all(d["stream"] == "stdout" for d in webs.values())

    laters = _by_log(docs, "later-")
    assert len(laters) == 20
    assert all("pod_id" not in laters[f"later-a {i}"]["kubernetes"] for i in range(10))  # unenriched, not lost
    assert all(laters[f"later-a {i}"]["kubernetes"]["pod_name"] == "web-7d9c6b5f4-later" for i in range(10))
    assert all(laters[f"later-b {i}"]["kubernetes"]["pod_id"] == "00000000-0000-4000-8000-00000000abcd"
               for i in range(10))  # enriched again

    apache = [d for d in docs if d.get("kubernetes", {}).get("container_name") == "app"]
    assert len(apache) == 10
    assert sorted(d["path"] for d in apache) == sorted(f"/pay/{i}" for i in range(10))  # annotation's parser
    assert apache[0]["kubernetes"]["container_hash"].startswith("registry.example.com/payments/api@sha256:")
    assert not [d for d in docs if d.get("kubernetes", {}).get("container_name") == "sidecar"]  # excluded
    assert len(docs) == 85 + 20 + 10
    assert os.path.exists(tmp_path / "state" / "tail.db")
