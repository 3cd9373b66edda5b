"""Pods of the test API server's fixtures (tests/data/k8s) and the metadata the kubernetes filter must add.

Shared by the filter's own tests and the end-to-end test of the node pipeline.
"""

from __future__ import annotations

WEB_ID = "4f3b9a6c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a"
API_ID = "8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d"
SIDECAR_ID = "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b"
QUIET_ID = "7" * 64
WEB_TAG = f"kube.var.log.containers.web-7d9c6b5f4-x2x8q_shop_nginx-{WEB_ID}.log"
API_TAG = f"kube.var.log.containers.api-0_payments_app-{API_ID}.log"
SIDECAR_TAG = f"kube.var.log.containers.api-0_payments_sidecar-{SIDECAR_ID}.log"
QUIET_TAG = f"kube.var.log.containers.noisy-batch-28571234-abcde_shop_job-{QUIET_ID}.log"

WEB_META = {
    "pod_name": "web-7d9c6b5f4-x2x8q",
    "namespace_name": "shop",
    "pod_id": "2f1c6a0e-6a7b-4f0e-9d3e-5b8f0c1a2d34",
    "labels": {"app.kubernetes.io/name": "web", "pod-template-hash": "7d9c6b5f4", "tier": "frontend"},
    "annotations": {"kubectl.kubernetes.io/restartedAt": "2024-05-01T09:59:00Z", "prometheus.io/scrape": "true"},
    "host": "node-a",
    "pod_ip": "10.244.1.17",
    "container_name": "nginx",
    "docker_id": WEB_ID,
    "container_hash": "docker.io/library/nginx@sha256:9ff236ed47fe39cf1f0acf349d0e5137f8b8a6fd0b46e5117a401010e56222e1",
    "container_image": "docker.io/library/nginx:1.25.4",
}

# Docker's journald log driver: dockershim names a pod's container
# k8s_<container>_<pod>_<namespace>_<pod uid>_<attempt>, written to CONTAINER_NAME.
WEB_JOURNAL_NAME = f"k8s_nginx_web-7d9c6b5f4-x2x8q_shop_{WEB_META['pod_id']}_0"
API_JOURNAL_NAME = "k8s_app_api-0_payments_b7e2d1c0-3f4a-4b5c-8d9e-0a1b2c3d4e5f_1"
SIDECAR_JOURNAL_NAME = "k8s_sidecar_api-0_payments_b7e2d1c0-3f4a-4b5c-8d9e-0a1b2c3d4e5f_0"
QUIET_JOURNAL_NAME = "k8s_job_noisy-batch-28571234-abcde_shop_c0ffee00-1234-4abc-9def-000000000001_0"


def docker_journal_entry(name: str, container_id: str, message: str, stderr: bool = False) -> dict[str, str]:
    """The fields Docker's journald log driver writes for one line of a container."""
    return {"MESSAGE": message, "CONTAINER_NAME": name, "CONTAINER_ID": container_id[:12],
            "CONTAINER_ID_FULL": container_id, "CONTAINER_TAG": container_id[:12],
            "SYSLOG_IDENTIFIER": container_id[:12], "PRIORITY": "3" if stderr else "6",
            "_SYSTEMD_UNIT": "docker.service"}
