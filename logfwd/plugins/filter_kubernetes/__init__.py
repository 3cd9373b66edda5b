"""kubernetes filter: pod and namespace metadata for container log records (see plugin.py)."""

from .plugin import PLUGIN, KubernetesFilter

__all__ = ["PLUGIN", "KubernetesFilter"]
