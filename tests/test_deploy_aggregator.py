"""The two-tier layout's shipped files load: the configs with ``logfwd --dry-run``, the manifests as YAML."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .backends.kubeapi import make_cert

ROOT = Path(__file__).resolve().parent.parent
LOGFWD = str(Path(sys.executable).parent / "logfwd")
ENV = {"KAFKA_BROKERS": "kafka-0:9092,kafka-1:9092", "KAFKA_TOPICS": "logs", "KAFKA_TOPIC": "logs",
       "KAFKA_GROUP": "logfwd-aggregators", "ES_HOST": "elasticsearch", "ES_PORT": "9200"}


def agent_env(tmp_path: Path) -> dict[str, str]:
    """The DaemonSet's environment for the agent config, with the host paths and the service account in ``tmp_path``."""
    sa = tmp_path / "sa"
    sa.mkdir()
    crt, _ = make_cert(sa)
    crt.rename(sa / "ca.crt")
    (sa / "token").write_text("t\n")
    return {"NODE_NAME": "node-1", "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443",
            "KUBE_SA_DIR": str(sa), "LOGFWD_LOG_DIR": str(tmp_path), "LOGFWD_STATE_DIR": str(tmp_path)}


@pytest.mark.parametrize("name", ["aggregator.yaml", "kubernetes-kafka.yaml"])
def test_config_loads(name: str, tmp_path: Path) -> None:
    env = {**os.environ, **ENV, **agent_env(tmp_path)}
    r = subprocess.run([LOGFWD, "--dry-run", "-c", str(ROOT / "conf" / name)], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_agent_config_is_the_node_pipeline_with_kafka_instead_of_es() -> None:
    """The agent enriches and buffers on disk exactly as the DaemonSet's own pipeline; only the output differs."""
    agent = yaml.safe_load((ROOT / "conf" / "kubernetes-kafka.yaml").read_text())
    node = yaml.safe_load((ROOT / "conf" / "kubernetes.yaml").read_text())
    assert agent["service"] == node["service"]
    assert agent["pipeline"]["inputs"] == node["pipeline"]["inputs"]
    assert agent["pipeline"]["filters"] == node["pipeline"]["filters"]
    assert [o["name"] for o in agent["pipeline"]["outputs"]] == ["kafka"]


def test_config_without_its_environment_is_refused() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ENV}
    r = subprocess.run([LOGFWD, "--dry-run", "-c", str(ROOT / "conf" / "aggregator.yaml")], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0


def test_deployment_manifest() -> None:
    docs = {d["kind"]: d for d in yaml.safe_load_all((ROOT / "deploy" / "aggregator.yaml").read_text())}
    assert {"ConfigMap", "Deployment", "PodDisruptionBudget"} <= set(docs)
    # The ConfigMap carries the shipped config unchanged, so the two cannot drift apart.
    assert docs["ConfigMap"]["data"]["aggregator.yaml"] == (ROOT / "conf" / "aggregator.yaml").read_text()
    spec = docs["Deployment"]["spec"]
    assert spec["replicas"] >= 2
    pod = spec["template"]["spec"]
    c = pod["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/api/v1/health"
    # a backend outage (health 500) must not restart the aggregators: liveness is the event loop only
    assert c["livenessProbe"]["httpGet"]["path"] == "/api/v1/uptime"
    assert {e["name"] for e in c["env"]} >= {"KAFKA_BROKERS", "KAFKA_TOPICS", "KAFKA_GROUP", "ES_HOST", "ES_PORT"}
    assert pod["terminationGracePeriodSeconds"] > 20  # longer than the config's grace
    selector = docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]
    assert selector == spec["selector"]["matchLabels"] == spec["template"]["metadata"]["labels"]
