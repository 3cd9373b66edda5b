"""kubernetes: add pod and namespace metadata to container log records (Fluent Bit's filter).

The tag names the container's log file (``kube.var.log.containers.<pod>_<ns>_<container>-<id>.log``);
the pod's metadata comes from the API (``source.py``) and is added under ``kubernetes``
with Fluent Bit's field names, so dashboards built on Fluent Bit's records keep working.
Every record of a batch has the same tag, so the lookup is once per batch.

When the API cannot answer, records still get what the tag says (pod, namespace,
container, id), are counted in ``unenriched_records``, and go on: metadata is an
addition, never a reason to hold or drop a line.
"""

from __future__ import annotations

import os
from typing import Any

import trio

from logfwd.net.tls import tls_context
from logfwd.plugin import Batch, ConfigValueError, Filter

from .api import KubeApi, TokenSource
from .merge import merge_logs
from .meta import MetaCache, NamespaceMeta, PodMeta
from .options import OPTIONS, SA_DIR
from .source import MetaSource
from .tagname import TagInfo, TagParser

__all__ = ["KubernetesFilter"]

_TRUE = {"true", "on", "yes", "1"}


def annotation(annotations: dict[str, str], base: str, container: str | None, stream: str | None) -> str | None:
    """Fluent Bit's lookup order: ``base_<stream>-<container>``, ``base-<container>``, ``base_<stream>``, ``base``."""
    names = []
    if container:
        if stream:
            names.append(f"{base}_{stream}-{container}")
        names.append(f"{base}-{container}")
    if stream:
        names.append(f"{base}_{stream}")
    names.append(base)
    for n in names:
        v = annotations.get(n)
        if v is not None:
            return v
    return None


class KubernetesFilter(Filter):
    name = "kubernetes"
    description = "add Kubernetes pod and namespace metadata to container log records"
    is_async = True
    options = OPTIONS

    def setup(self) -> None:
        s = self.settings
        parsers = self.ctx.parsers
        self.merge_parser = self._parser("merge_parser", s.merge_parser) if s.merge_parser else None
        regex_parser = self._parser("regex_parser", s.regex_parser) if s.regex_parser else None
        self.tags = TagParser(s.kube_tag_prefix or "", regex_parser)
        self.parsers = parsers
        self.want_ns = bool(s.namespace_labels or s.namespace_annotations)
        self.want_pod = not s.namespace_metadata_only
        self.source: MetaSource | None = None
        if not s.use_tag_for_meta:
            self.source = self._make_source()

    def _parser(self, key: str, name: str) -> Any:
        if self.ctx.parsers is None:
            raise ConfigValueError(key, "no parsers are loaded (set Parsers_File in [SERVICE])")
        try:
            return self.ctx.parsers.get(name)
        except KeyError:
            raise ConfigValueError(key, f"unknown parser {name!r} (known: {', '.join(self.ctx.parsers.names())})") from None

    def _make_source(self) -> MetaSource:
        s = self.settings
        tls_conf = {"tls": True, "tls.verify": s.tls_verify, "tls.ca_file": s.kube_ca_file, "tls.ca_path": s.kube_ca_path,
                    "tls.verify_hostname": s.tls_verify}
        if s.kube_ca_file == f"{SA_DIR}/ca.crt" and not os.path.exists(s.kube_ca_file):
            tls_conf["tls.ca_file"] = None  # the default, outside a pod: the system's CAs
        try:
            ctx = tls_context(tls_conf)
        except ConfigValueError as e:
            raise ConfigValueError("kube_ca_file" if "ca" in e.key else e.key, e.message) from None
        token = TokenSource(s.kube_token_file, s.kube_token_ttl, s.kube_token_command or None, self.log)
        try:
            api = KubeApi(s.kube_url, ssl_context=ctx, token=token, timeout=s.kube_request_timeout, vhost=s.tls_vhost)
            kubelet = (KubeApi(f"https://{s.kubelet_host}:{s.kubelet_port}", ssl_context=ctx, token=token,
                               timeout=s.kube_request_timeout, vhost=s.tls_vhost) if s.use_kubelet else None)
        except ValueError as e:
            raise ConfigValueError("kube_url", str(e)) from None
        node = s.kube_node_name or os.environ.get("NODE_NAME") or None
        size = s.kube_meta_cache_size
        return MetaSource(
            api, node=node, kubelet=kubelet, watch_namespaces=self.want_ns,
            pods=MetaCache(size, s.kube_meta_cache_ttl, s.kube_meta_deleted_grace),
            namespaces=MetaCache(size, s.kube_meta_namespace_cache_ttl, s.kube_meta_deleted_grace),
            buffer_size=s.buffer_size, use_docker_id=bool(s.cache_use_docker_id), log=self.log, metrics=self.metrics)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The pod (and namespace) watches, started by the pipeline in its nursery."""
        task_status.started()
        if self.source is not None:
            await self.source.run()

    # ------------------------------------------------------------------ data path

    async def filter_async(self, batch: Batch) -> Batch | None:
        info = self.tags.parse(batch.tag)
        if info is None:
            return batch  # not a container log file: left as it is (Fluent Bit does the same)
        pod: PodMeta | None = None
        ns: NamespaceMeta | None = None
        if self.source is not None:
            if self.want_pod:
                pod = await self.source.pod(info.namespace_name, info.pod_name, info.docker_id)
            if self.want_ns:
                ns = await self.source.namespace(info.namespace_name)
            if (self.want_pod and pod is None) or (self.want_ns and ns is None):
                self.metrics.inc("unenriched_records", len(batch.records))
        if pod is not None and self.settings.k8s_logging_exclude and self._exclude(batch, pod, info) == "all":
            return None
        self._enrich(batch, info, pod, ns)
        return batch

    def _exclude(self, batch: Batch, pod: PodMeta, info: TagInfo) -> str:
        """Drop the records the pod's ``fluentbit.io/exclude`` annotations exclude; "all" when none is left."""
        ann = pod.annotations
        if not any(k.startswith("fluentbit.io/exclude") for k in ann):
            return "none"
        keep = []
        memo: dict[Any, bool] = {}
        for i, r in enumerate(batch.records):
            stream = r.get("stream")
            ex = memo.get(stream)
            if ex is None:
                v = annotation(ann, "fluentbit.io/exclude", info.container_name, stream if type(stream) is str else None)
                ex = memo[stream] = (v or "").strip().lower() in _TRUE
            if not ex:
                keep.append(i)
        if len(keep) == len(batch.records):
            return "none"
        if not keep:
            return "all"
        batch.select(keep)
        return "some"

    def _enrich(self, batch: Batch, info: TagInfo, pod: PodMeta | None, ns: NamespaceMeta | None) -> None:
        s = self.settings
        if s.merge_log:
            self._merge(batch, info, pod)
        kube = self._kube_map(info, pod) if self.want_pod else None
        ns_map = self._ns_map(ns) if ns is not None else None
        for r in batch.records:
            if kube is not None:
                r["kubernetes"] = kube  # shared by the batch's records: built once, never mutated
            if ns_map is not None:
                r["kubernetes_namespace"] = ns_map

    def _merge(self, batch: Batch, info: TagInfo, pod: PodMeta | None) -> None:
        s = self.settings
        recs = batch.records
        groups: dict[Any, list[int]] = {}
        for i, r in enumerate(recs):
            stream = r.get("stream") if type(r.get("stream")) is str else None
            groups.setdefault(stream, []).append(i)
        for stream, idx in groups.items():
            parser = self.merge_parser
            if pod is not None and s.k8s_logging_parser:
                name = annotation(pod.annotations, "fluentbit.io/parser", info.container_name, stream)
                if name:
                    parser = self._suggested(name) or parser
            n = merge_logs(recs, batch.times, idx, parser, key=s.merge_log_key, trim=bool(s.merge_log_trim),
                           keep_log=bool(s.keep_log))
            if n < len(idx):
                self.metrics.inc("merge_skipped", len(idx) - n)

    def _suggested(self, name: str) -> Any:
        try:
            return self.parsers.get(name.strip()) if self.parsers is not None else None
        except KeyError:
            self.metrics.inc("unknown_parser_annotations")
            return None

    def _kube_map(self, info: TagInfo, pod: PodMeta | None) -> dict[str, Any]:
        """Fluent Bit's ``kubernetes`` map, in its field order."""
        s = self.settings
        k: dict[str, Any] = {"pod_name": info.pod_name, "namespace_name": info.namespace_name}
        if pod is not None:
            if pod.uid:
                k["pod_id"] = pod.uid
            if s.labels and pod.labels:
                k["labels"] = pod.labels
            if s.annotations and pod.annotations:
                k["annotations"] = pod.annotations
            if s.owner_references and pod.owner_references:
                k["ownerReferences"] = pod.owner_references
            if pod.host:
                k["host"] = pod.host
            if pod.pod_ip:
                k["pod_ip"] = pod.pod_ip
        if info.container_name:
            k["container_name"] = info.container_name
        if info.docker_id:
            k["docker_id"] = info.docker_id
        c = pod.containers.get(info.container_name) if pod is not None and info.container_name else None
        if c is not None:
            if c.container_hash:
                k["container_hash"] = c.container_hash
            if c.container_image:
                k["container_image"] = c.container_image
        return k

    def _ns_map(self, ns: NamespaceMeta) -> dict[str, Any]:
        s = self.settings
        m: dict[str, Any] = {"name": ns.name}
        if s.namespace_labels and ns.labels:
            m["labels"] = ns.labels
        if s.namespace_annotations and ns.annotations:
            m["annotations"] = ns.annotations
        return m


PLUGIN = KubernetesFilter
