"""The shipped node pipeline (conf/kubernetes.yaml) end to end: real ``logfwd``, real log files, ES.

A directory laid out as the kubelet lays out ``/var/log``: container files under
``pods/<ns>_<pod>_<uid>/<container>/0.log`` (CRI lines with partial ``P`` records from
containerd, json-file lines from docker), linked as
``containers/<pod>_<ns>_<container>-<id>.log``; the test API server holds the pods; the
Elasticsearch stand-in receives the records. Along the way the API goes away (records
keep flowing, unenriched for a pod it never described), comes back (enriched again), a
watch gets 410 Gone, and a log file is rotated as the kubelet rotates: every line must
arrive exactly once, with Fluent Bit's field names.

The journal variant (Docker's journald log driver, ``Use_Journal On``) reads a real
journal file written by ``systemd-journal-remote`` with a Fluent Bit config, and runs
the same file and config through Fluent Bit itself (when ``fluent-bit`` is on PATH).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .backends._proc import ManagedProcess, free_port
from .backends.es import EsServer
from .backends.kubeapi import KubeApiServer, load_fixture
from .clikit import wait_until
from .e2ekit import Logfwd
from .kubekit import (
    API_ID,
    API_JOURNAL_NAME,
    QUIET_ID,
    QUIET_JOURNAL_NAME,
    SIDECAR_ID,
    SIDECAR_JOURNAL_NAME,
    WEB_ID,
    WEB_JOURNAL_NAME,
    WEB_META,
    docker_journal_entry,
)

pytestmark = pytest.mark.backend

ROOT = Path(__file__).resolve().parent.parent
LOGFWD = str(Path(sys.executable).parent / "logfwd")
FLUENT_BIT = shutil.which("fluent-bit")
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


def test_docker_journald_log_driver_end_to_end(tmp_path: Path, kube_api: KubeApiServer,
                                               journal_remote_dir: Callable[..., Path], logfwds: list[Logfwd]) -> None:
    """A Fluent Bit config for Docker's journald log driver: systemd input, Use_Journal On, pods' metadata out.

    The journal file holds dockerd's own line, lines of two pods' containers and of a container
    Kubernetes did not start; the modify filter renames MESSAGE to log so that Merge_Log (which
    reads 'log', as in Fluent Bit) merges the JSON line.
    """
    t0 = 1_700_000_000_000_000
    dockerd = {"MESSAGE": "API listen on /run/docker.sock", "SYSLOG_IDENTIFIER": "dockerd",
               "_SYSTEMD_UNIT": "docker.service"}
    journal = journal_remote_dir([
        (dockerd, t0),
        (docker_journal_entry(WEB_JOURNAL_NAME, WEB_ID, "GET / 200"), t0 + 1000),
        (docker_journal_entry(API_JOURNAL_NAME, API_ID, '{"level":"info","msg":"paid"}', stderr=True), t0 + 2000),
        (docker_journal_entry("registry", "9" * 64, "not a pod's"), t0 + 3000),
        (docker_journal_entry(WEB_JOURNAL_NAME, WEB_ID, "GET /health 200"), t0 + 4000),
    ])
    out = tmp_path / "out" / "records.json"
    lf = Logfwd(tmp_path / "logfwd", f"""[INPUT]
    Name   systemd
    Path   {journal}
    Tag    kube.*
    DB     {tmp_path}/journal.db

[FILTER]
    Name   modify
    Match  kube.*
    Rename MESSAGE log

[FILTER]
    Name            kubernetes
    Alias           k8s
    Match           kube.*
    Use_Journal     On
    Merge_Log       On
    Kube_URL        {kube_api.url}
    Kube_CA_File    {kube_api.crt}
    Kube_Token_File {kube_api.token_file}
    Kube_Node_Name  node-a

[OUTPUT]
    Name   file
    Match  *
    Path   {out.parent}
    File   {out.name}
    Format plain
    Mkdir  On
""")
    logfwds.append(lf)
    lf.start()

    lf.wait(lambda: len(_json_lines(out)) >= 5, 60, "the journal's five entries in the output")
    assert lf.counter("filter", "k8s", "journal_unnamed_records") == 1  # dockerd's own line
    assert lf.counter("filter", "k8s", "journal_unmatched_records") == 1  # the registry container
    lf.stop()
    assert "Traceback" not in lf.log.read_text()
    recs = _json_lines(out)
    assert [r["log"] for r in recs] == ["API listen on /run/docker.sock", "GET / 200",
                                        '{"level":"info","msg":"paid"}', "not a pod's", "GET /health 200"]
    assert "kubernetes" not in recs[0] and "kubernetes" not in recs[3]  # not a pod's: passed as they were
    assert recs[1]["kubernetes"] == WEB_META and recs[4]["kubernetes"] == WEB_META
    assert recs[1]["CONTAINER_NAME"] == WEB_JOURNAL_NAME and recs[1]["_SYSTEMD_UNIT"] == "docker.service"
    api = recs[2]
    assert api["level"] == "info" and api["msg"] == "paid"  # merged
    assert api["kubernetes"]["pod_id"] == "b7e2d1c0-3f4a-4b5c-8d9e-0a1b2c3d4e5f"
    assert api["kubernetes"]["container_name"] == "app" and api["kubernetes"]["docker_id"] == API_ID
    assert kube_api.count("/api/v1/pods", watch=False) == 1  # the node's pods were listed, not fetched one by one


def _json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.skipif(FLUENT_BIT is None, reason="fluent-bit is not on PATH")
def test_use_journal_matches_fluent_bit(tmp_path: Path, kube_api: KubeApiServer,
                                        journal_remote_dir: Callable[..., Path], logfwds: list[Logfwd]) -> None:
    """One journal file through Fluent Bit and through logfwd, same config: the same records but those naming no pod.

    Fluent Bit drops a record without CONTAINER_NAME, or with one that does not split; logfwd
    passes it. (Fluent Bit v5.1.1 also drops every later record of the same chunk after a name
    that does not split, so that one comes last here.) The exclude annotations, Merge_Log of
    the message renamed to 'log' and a name carrying the container's hash are compared too.
    """
    t0 = 1_700_000_000_000_000
    exporter = WEB_JOURNAL_NAME.replace("k8s_nginx_", "k8s_exporter.3f2a1b0c_")
    dockerd = {"MESSAGE": "API listen on /run/docker.sock", "SYSLOG_IDENTIFIER": "dockerd",
               "_SYSTEMD_UNIT": "docker.service"}
    entries: list[dict[str, str]] = [
        dockerd,
        docker_journal_entry(WEB_JOURNAL_NAME, WEB_ID, "GET / 200"),
        docker_journal_entry(API_JOURNAL_NAME, API_ID, '{"level":"info"}', stderr=True),
        docker_journal_entry(exporter, "e" * 64, "scraped"),
        docker_journal_entry(SIDECAR_JOURNAL_NAME, SIDECAR_ID, "envoy"),  # fluentbit.io/exclude-sidecar
        docker_journal_entry(QUIET_JOURNAL_NAME, QUIET_ID, "noise"),  # fluentbit.io/exclude
        docker_journal_entry(WEB_JOURNAL_NAME, WEB_ID, "GET /health 200"),
        docker_journal_entry("registry", "9" * 64, "not a pod's"),
    ]
    journal = journal_remote_dir([(e, t0 + i * 1000) for i, e in enumerate(entries)])

    def body(out: Path) -> str:
        return f"""[INPUT]
    Name   systemd
    Path   {journal}
    Tag    kube.*

[FILTER]
    Name   modify
    Match  kube.*
    Rename MESSAGE log

[FILTER]
    Name                kubernetes
    Match               kube.*
    Use_Journal         On
    Merge_Log           On
    Merge_Log_Key       app
    K8S-Logging.Exclude On
    Kube_URL            {kube_api.url}
    Kube_CA_File        {kube_api.crt}
    Kube_Token_File     {kube_api.token_file}

[OUTPUT]
    Name   file
    Match  *
    Path   {out.parent}
    File   {out.name}
    Format plain
"""

    fb_out, lf_out = tmp_path / "fb" / "records.json", tmp_path / "logfwd" / "records.json"
    fb_out.parent.mkdir()
    (tmp_path / "fb.conf").write_text("[SERVICE]\n    Flush 0.2\n    Grace 2\n\n" + body(fb_out))
    fb = ManagedProcess([str(FLUENT_BIT), "-c", str(tmp_path / "fb.conf")], tmp_path / "fb.log").start()
    try:
        wait_until(lambda: len(_json_lines(fb_out)) >= 4, 60, "Fluent Bit's records", fb)
    finally:
        fb.stop(timeout=30)  # flushes anything later (there must be nothing)
    lf = Logfwd(tmp_path / "logfwd", body(lf_out))
    logfwds.append(lf)
    lf.start()
    lf.wait(lambda: len(_json_lines(lf_out)) >= 6, 60, "logfwd's records")
    lf.stop()

    fb_recs, lf_recs = _json_lines(fb_out), _json_lines(lf_out)
    assert [r["log"] for r in fb_recs] == ["GET / 200", '{"level":"info"}', "scraped", "GET /health 200"]
    assert [r for r in lf_recs if "kubernetes" in r] == fb_recs
    assert [r["log"] for r in lf_recs if "kubernetes" not in r] == ["API listen on /run/docker.sock", "not a pod's"]
    assert fb_recs[0]["kubernetes"] == WEB_META
    assert fb_recs[1]["app"] == {"level": "info"} and fb_recs[1]["kubernetes"]["pod_name"] == "api-0"
    assert fb_recs[2]["kubernetes"]["container_hash"] == "3f2a1b0c"  # the name's, not the status's
