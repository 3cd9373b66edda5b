"""DaemonSet.yaml and the Dockerfile: what ``kubectl apply`` and ``docker build`` would get.

No cluster and no container runtime run here, so the manifests are validated against the
Kubernetes OpenAPI schemas (kubernetes-validate, strict: an unknown field is an error),
the ConfigMap is checked to be conf/kubernetes.yaml byte for byte (and to load), and the
Dockerfile's build stage is replayed: the same files, the same ``pip wheel`` command,
then the wheel is installed into a fresh virtualenv and run.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from .backends.kubeapi import make_cert

ROOT = Path(__file__).resolve().parent.parent
LOGFWD = str(Path(sys.executable).parent / "logfwd")


def manifests() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((ROOT / "DaemonSet.yaml").read_text()) if d]


def by_kind(kind: str) -> dict[str, Any]:
    [d] = [d for d in manifests() if d["kind"] == kind]
    return d


def validate(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


# ------------------------------------------------------------------ DaemonSet.yaml


def test_every_manifest_validates_strictly() -> None:
    docs = manifests()
    assert [d["kind"] for d in docs] == ["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Secret",
                                         "ConfigMap", "DaemonSet"]
    for d in docs:
        validate(d)
    proc = subprocess.run([str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", "--quiet",
                           str(ROOT / "DaemonSet.yaml")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_strict_validation_is_real() -> None:
    """A misspelled field fails: the check above would catch a broken manifest."""
    ds = copy.deepcopy(by_kind("DaemonSet"))
    ds["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(ds)


def test_configmap_is_the_shipped_config() -> None:
    data = by_kind("ConfigMap")["data"]["logfwd.yaml"]
    assert data.encode() == (ROOT / "conf" / "kubernetes.yaml").read_bytes(), \
        "DaemonSet.yaml's ConfigMap differs from conf/kubernetes.yaml: copy the file into it (indented 4 spaces)"


def node_env(tmp_path: Path) -> dict[str, str]:
    """What the DaemonSet's env gives the container, with the host paths in ``tmp_path``."""
    ds = by_kind("DaemonSet")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] if "value" in e else "from-" + next(iter(e["valueFrom"])) for e in ds["env"]}
    sa = tmp_path / "sa"
    sa.mkdir()
    crt, _ = make_cert(sa)
    crt.rename(sa / "ca.crt")
    (sa / "token").write_text("t\n")
    env.update(KUBE_SA_DIR=str(sa), LOGFWD_LOG_DIR=str(tmp_path), LOGFWD_STATE_DIR=str(tmp_path),
               KUBERNETES_SERVICE_HOST="10.96.0.1", KUBERNETES_SERVICE_PORT="443")
    return env


def test_configmap_config_loads(tmp_path: Path) -> None:
    cfg = tmp_path / "logfwd.yaml"
    cfg.write_text(by_kind("ConfigMap")["data"]["logfwd.yaml"])
    env = {**os.environ, **node_env(tmp_path)}
    proc = subprocess.run([LOGFWD, "--dry-run", "-c", str(cfg)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    env_vars = {e["name"] for e in by_kind("DaemonSet")["spec"]["template"]["spec"]["containers"][0]["env"]}
    for needed in ("NODE_NAME", "KUBE_SA_DIR", "LOGFWD_LOG_DIR", "LOGFWD_STATE_DIR", "ES_HOST", "ES_PORT", "ES_USER",
                   "ES_PASSWORD", "ES_TLS", "ES_TLS_VERIFY"):
        assert needed in env_vars  # every ${VAR} of the config is set by the DaemonSet


def test_daemonset_shape() -> None:
    spec = by_kind("DaemonSet")["spec"]
    pod = spec["template"]["spec"]
    [c] = pod["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["ES_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "logfwd-es"
    assert c["readinessProbe"]["httpGet"]["path"] == "/api/v1/health"
    assert c["livenessProbe"]["httpGet"]["path"] == "/api/v1/uptime"  # only needs the event loop
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["serviceAccountName"] == by_kind("ServiceAccount")["metadata"]["name"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"]["drop"] == ["ALL"]
    assert sc["allowPrivilegeEscalation"] is False
    grace = yaml.safe_load((ROOT / "conf" / "kubernetes.yaml").read_text())["service"]["grace"]
    assert pod["terminationGracePeriodSeconds"] > grace
    assert spec["updateStrategy"]["type"] == "RollingUpdate"
    ann = spec["template"]["metadata"]["annotations"]
    assert ann == {"prometheus.io/scrape": "true", "prometheus.io/port": "2020",
                   "prometheus.io/path": "/api/v1/metrics/prometheus"}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    assert mounts["varlog"]["readOnly"] is True and vols["varlog"]["hostPath"]["path"] == "/var/log"
    assert not mounts["state"].get("readOnly") and vols["state"]["hostPath"]["path"] == env["LOGFWD_STATE_DIR"]["value"]
    assert c["resources"]["limits"]["memory"] == "256Mi"
    rules = by_kind("ClusterRole")["rules"]
    assert rules == [{"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["get", "list", "watch"]}]


# ------------------------------------------------------------------ Dockerfile


def dockerfile_stages() -> list[dict[str, Any]]:
    """Each stage's base, name and instructions (continuation lines joined)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    stages: list[dict[str, Any]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, arg = line.partition(" ")
        if op.upper() == "FROM":
            parts = arg.split()
            stages.append({"from": parts[0], "name": parts[2] if len(parts) > 2 else None, "ops": []})
        else:
            stages[-1]["ops"].append((op.upper(), arg.strip()))
    return stages


def test_dockerfile_stages_and_entrypoint() -> None:
    build, runtime = dockerfile_stages()
    assert build["from"] == runtime["from"] == "python:3.11-slim-bookworm"
    assert build["name"] == "build"
    build_runs = " ".join(a for op, a in build["ops"] if op == "RUN")
    for pkg in ("gcc", "libsystemd-dev", "pkg-config"):
        assert pkg in build_runs
    assert "pip wheel --no-cache-dir --no-deps -w /wheels ." in build_runs
    assert ("COPY", "--from=build /wheels /wheels") in runtime["ops"]
    runtime_runs = " ".join(a for op, a in runtime["ops"] if op == "RUN")
    assert "libsystemd0" in runtime_runs and "gcc" not in runtime_runs
    [entry] = [json.loads(a) for op, a in runtime["ops"] if op == "ENTRYPOINT"]
    assert entry == ["logfwd", "-c", "/etc/logfwd/logfwd.yaml"]
    assert ("COPY", "conf/kubernetes.yaml /etc/logfwd/logfwd.yaml") in runtime["ops"]
    for op, arg in build["ops"] + runtime["ops"]:
        if op == "COPY" and not arg.startswith("--from"):
            for src in shlex.split(arg)[:-1]:
                assert (ROOT / src).exists(), f"Dockerfile copies {src}, which does not exist"


@pytest.mark.slow
def test_build_stage_wheel_installs_and_runs(tmp_path: Path) -> None:
    """Replay the build stage: its COPYs into a clean directory, its ``pip wheel``, then install and run."""
    build, _ = dockerfile_stages()
    src = tmp_path / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.c", "*.egg-info")
    for op, arg in build["ops"]:
        if op != "COPY":
            continue
        *items, dest = shlex.split(arg)
        for item in items:
            target = src / dest / Path(item).name if dest.endswith("/") or len(items) > 1 else src / dest
            if (ROOT / item).is_dir():
                shutil.copytree(ROOT / item, target, ignore=ignore)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / item, target)
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    proc = subprocess.run([*pip, "wheel", "--no-cache-dir", "--no-deps", "-w", str(wheels), "."], cwd=src,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [wheel] = list(wheels.glob("logfwd-*.whl"))
    assert "-cp311-" in wheel.name  # a platform wheel: the hot path is compiled in

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    vpy = venv / "bin" / "python"
    subprocess.run([str(vpy), "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check", str(wheel)],
                   check=True, timeout=300)
    # The dependencies come from this test environment (no index needed); logfwd from the wheel.
    site = Path(subprocess.check_output([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())
    (site / "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    out = subprocess.run([str(venv / "bin" / "logfwd"), "--version"], capture_output=True, text=True, cwd="/",
                         timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("logfwd "), out.stdout + out.stderr
    where = subprocess.check_output([str(vpy), "-c", "import logfwd._fastparse as f; print(f.__file__)"], cwd="/",
                                    text=True).strip()
    assert where.startswith(str(venv)) and where.endswith(".so"), where
    kube = subprocess.run([str(venv / "bin" / "logfwd"), "--help-plugin", "kubernetes"], capture_output=True,
                          text=True, cwd="/", timeout=60)
    assert kube.returncode == 0 and "Kube_URL" in kube.stdout  # the plugin folder is in the wheel
