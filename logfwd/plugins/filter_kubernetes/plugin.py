"""kubernetes: add pod and namespace metadata to container log records (Fluent Bit's filter).

The tag names the container's log file (``kube.var.log.containers.<pod>_<ns>_<container>-<id>.log``);
the pod's metadata comes from the API (``source.py``) and is added under ``kubernetes``
with Fluent Bit's field names, so dashboards built on Fluent Bit's records keep working.
Every record of a batch has the same tag, so the lookup is once per batch. With
``Use_Journal`` each record names its container in ``CONTAINER_NAME`` instead
(``journal.py``), and the lookup is once per container of the batch.

When the API cannot answer, records still get what the tag says (pod, namespace,
container, id), are counted in ``unenriched_records``, and go on: metadata is an
addition, never a reason to hold or drop a line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import trio

from logfwd.net.tls import tls_context
from logfwd.plugin import Batch, ConfigValueError, Filter

from .api import KubeApi, TokenSource
from .journal import JournalGroups
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
        self.journal = JournalGroups(regex_parser, self.log, self.metrics) if s.use_journal else None
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
        groups = self._groups(batch)
        if groups is None:
            return batch  # not a container log file: left as it is (Fluent Bit does the same)
        excluded: list[int] = []
        for info, idx in groups:
            excluded += await self._apply(batch, info, idx)
        if excluded:
            if len(excluded) == len(batch.records):
                return None
            gone = set(excluded)
            batch.select(i for i in range(len(batch.records)) if i not in gone)
        return batch

    def _groups(self, batch: Batch) -> Sequence[tuple[TagInfo, Sequence[int]]] | None:
        """The containers of the batch's records: one named by the tag, or with Use_Journal one per CONTAINER_NAME."""
        if self.journal is not None:
            return self.journal.split(batch.records)
        info = self.tags.parse(batch.tag)
        return None if info is None else [(info, range(len(batch.records)))]

    async def _apply(self, batch: Batch, info: TagInfo, idx: Sequence[int]) -> list[int]:
        """Look up the container's pod, then exclude, merge and enrich its records; returns the excluded ones."""
        pod: PodMeta | None = None
        ns: NamespaceMeta | None = None
        if self.source is not None:
            if self.want_pod:
                pod = await self.source.pod(info.namespace_name, info.pod_name, info.docker_id)
            if self.want_ns:
                ns = await self.source.namespace(info.namespace_name)
            if (self.want_pod and pod is None) or (self.want_ns and ns is None):
                self.metrics.inc("unenriched_records", len(idx))
        excluded: list[int] = []
        if pod is not None and self.settings.k8s_logging_exclude:
            excluded = self._excluded(batch.records, idx, pod, info)
            if excluded:
                gone = set(excluded)
                idx = [i for i in idx if i not in gone]
        self._enrich(batch, idx, info, pod, ns)
        return excluded

    def _excluded(self, records: list[dict[str, Any]], idx: Sequence[int], pod: PodMeta, info: TagInfo) -> list[int]:
        """The records among ``idx`` that the pod's ``fluentbit.io/exclude`` annotations exclude."""
        ann = pod.annotations
        if not any(k.startswith("fluentbit.io/exclude") for k in ann):
            return []
        out = []
        memo: dict[Any, bool] = {}
        for i in idx:
            stream = records[i].get("stream")
            ex = memo.get(stream)
            if ex is None:
                v = annotation(ann, "fluentbit.io/exclude", info.container_name, stream if type(stream) is str else None)
                ex = memo[stream] = (v or "").strip().lower() in _TRUE
            if ex:
                out.append(i)
        return out

    def _enrich(self, batch: Batch, idx: Sequence[int], info: TagInfo, pod: PodMeta | None,
                ns: NamespaceMeta | None) -> None:
        s = self.settings
        if s.merge_log:
            self._merge(batch, idx, info, pod)
        kube = self._kube_map(info, pod) if self.want_pod else None
        ns_map = self._ns_map(ns) if ns is not None else None
        recs = batch.records
        for r in recs if len(idx) == len(recs) else [recs[i] for i in idx]:  # the whole batch: no indexing
            if kube is not None:
                r["kubernetes"] = kube  # shared by the container's records: built once, never mutated
            if ns_map is not None:
                r["kubernetes_namespace"] = ns_map

    def _merge(self, batch: Batch, idx: Sequence[int], info: TagInfo, pod: PodMeta | None) -> None:
        s = self.settings
        recs = batch.records
        groups: dict[Any, list[int]] = {}
        for i in idx:
            r = recs[i]
            stream = r.get("stream") if type(r.get("stream")) is str else None
            groups.setdefault(stream, []).append(i)
        for stream, members in groups.items():
            parser = self.merge_parser
            if pod is not None and s.k8s_logging_parser:
                name = annotation(pod.annotations, "fluentbit.io/parser", info.container_name, stream)
                if name:
                    parser = self._suggested(name) or parser
            n = merge_logs(recs, batch.times, members, parser, key=s.merge_log_key, trim=bool(s.merge_log_trim),
                           keep_log=bool(s.keep_log))
            if n < len(members):
                self.metrics.inc("merge_skipped", len(members) - n)

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
        c = pod.containers.get(info.container_name) if pod is not None and info.container_name else None
        # As Fluent Bit: what the name held first (a journal name holds no id), then the pod's status.
        docker_id = info.docker_id or (c.docker_id if c is not None else None)
        if docker_id:
            k["docker_id"] = docker_id
        container_hash = info.container_hash or (c.container_hash if c is not None else None)
        if container_hash:
            k["container_hash"] = container_hash
        if c is not None and c.container_image:
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
