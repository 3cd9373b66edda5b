"""Where pod and namespace metadata come from: a watch of this node's pods, or one GET per pod.

With a node name (``NODE_NAME`` from the downward API) one LIST+WATCH of
``/api/v1/pods?fieldSelector=spec.nodeName=<node>`` keeps every pod of the node in the
cache: one long request per node instead of one per new pod. A pod the watch has not
delivered yet (its log file can appear a moment before the event) is fetched once by
GET. Without a node name, every pod is fetched by GET when first seen, as Fluent Bit
does; ``Use_Kubelet`` reads the kubelet's ``/pods`` list instead.

Lookups never wait on an API that is failing: after an error, misses answer None at
once until the backoff delay has passed, and the records go on unenriched.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import trio

from .api import ApiError, KubeApi
from .meta import MetaCache, NamespaceMeta, PodMeta, namespace_meta, pod_meta
from .watch import Backoff, Reflector

__all__ = ["MetaSource"]

_SYNC_WAIT = 2.0  # how long after the start lookups may wait for the first LIST (once, not per batch)
_NOT_FOUND_TTL = 30.0  # a pod the API does not know is asked for again after this long


def _pod_key(obj: dict[str, Any]) -> tuple[str, str]:
    md = obj.get("metadata") or {}
    return (str(md.get("namespace") or ""), str(md.get("name") or ""))


def _ns_key(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


class MetaSource:
    """Pod and namespace lookups over a cache fed by watches or by on-demand GETs."""

    def __init__(
        self,
        api: KubeApi,
        *,
        node: str | None,
        kubelet: KubeApi | None,
        watch_namespaces: bool,
        pods: MetaCache,
        namespaces: MetaCache,
        buffer_size: int,
        use_docker_id: bool,
        log: logging.Logger,
        metrics: Any,
    ) -> None:
        self.api = api
        self.kubelet = kubelet
        self.pods = pods
        self.namespaces = namespaces
        self.buffer_size = buffer_size
        self.use_docker_id = use_docker_id
        self.log = log
        self.metrics = metrics
        self.backoff = Backoff()
        self._down_until = 0.0
        self._inflight: dict[Any, trio.Event] = {}
        self._missing: dict[Any, float] = {}
        self._sync_deadline = time.monotonic() + _SYNC_WAIT
        self.pod_watch: Reflector | None = None
        self.ns_watch: Reflector | None = None
        if node and kubelet is None:
            self.pod_watch = Reflector(api, "/api/v1/pods", pods, _pod_key, pod_meta,
                                       field_selector=f"spec.nodeName={node}", log=log, metrics=metrics, kind="pods")
        if watch_namespaces and node:
            self.ns_watch = Reflector(api, "/api/v1/namespaces", namespaces, _ns_key, namespace_meta,
                                      log=log, metrics=metrics, kind="namespaces")

    async def run(self) -> None:
        """The watches, for as long as the pipeline runs (they never raise)."""
        self._sync_deadline = time.monotonic() + _SYNC_WAIT
        async with trio.open_nursery() as nursery:
            for r in (self.pod_watch, self.ns_watch):
                if r is not None:
                    nursery.start_soon(r.run)

    # ------------------------------------------------------------------ lookups

    @property
    def api_down(self) -> bool:
        return time.monotonic() < self._down_until

    async def pod(self, namespace: str, name: str, docker_id: str | None) -> PodMeta | None:
        key = (namespace, name)
        watched = self.pod_watch is not None
        meta = self.pods.get(key, watched=watched)
        if meta is not None and not self._stale_container(meta, docker_id):
            return meta  # type: ignore[no-any-return]
        if self.pod_watch is not None:
            if await self._wait_synced(self.pod_watch):
                meta = self.pods.get(key, watched=True)
                if meta is not None:
                    return meta  # type: ignore[no-any-return]
            if not self.pod_watch.healthy:
                return None  # the API is failing: do not add a GET per pod to the watch's retries
        if self.kubelet is not None:
            return await self._once(("kubelet",), self._fetch_kubelet, key, self.pods)  # type: ignore[no-any-return]
        return await self._once(key, self._fetch_pod, key, self.pods)  # type: ignore[no-any-return]

    async def _wait_synced(self, watch: Reflector) -> bool:
        """Just after the start, wait for the watch's first LIST rather than GET each pod; True if it came.

        The wait is bounded by one deadline from the start, not per batch, and ends as soon as
        the first LIST fails: an API that refuses at start costs the pipeline nothing, one that
        does not answer costs it the deadline once.
        """
        if not watch.answered.is_set():
            with trio.move_on_after(max(0.0, self._sync_deadline - time.monotonic())):
                await watch.answered.wait()
        return watch.synced.is_set()

    def _stale_container(self, meta: PodMeta, docker_id: str | None) -> bool:
        """Cache_Use_Docker_Id: a container id the cached pod does not list means a newer pod version."""
        if not self.use_docker_id or not docker_id or self.pod_watch is not None:
            return False
        return all(c.docker_id != docker_id for c in meta.containers.values())

    async def namespace(self, name: str) -> NamespaceMeta | None:
        watched = self.ns_watch is not None
        meta = self.namespaces.get(name, watched=watched)
        if meta is not None:
            return meta  # type: ignore[no-any-return]
        if self.ns_watch is not None:
            if await self._wait_synced(self.ns_watch):
                meta = self.namespaces.get(name, watched=True)
                if meta is not None:
                    return meta  # type: ignore[no-any-return]
            if not self.ns_watch.healthy:
                return None
        return await self._once(("ns", name), self._fetch_namespace, name, self.namespaces)  # type: ignore[no-any-return]

    async def _once(self, flight: Any, fetch: Any, key: Any, cache: MetaCache) -> Any:
        """One fetch per key at a time; none while the API is failing or the object was just not found."""
        now = time.monotonic()
        if self.api_down or now < self._missing.get(flight, 0.0):
            return None
        if len(self._missing) > 1024:
            self._missing = {k: t for k, t in self._missing.items() if t > now}
        ev = self._inflight.get(flight)
        if ev is not None:  # another batch is fetching it: share its answer
            await ev.wait()
            return cache.get(key)
        ev = self._inflight[flight] = trio.Event()
        try:
            result = await fetch(key)
            self.backoff.reset()
            return result
        except ApiError as e:
            if e.status == 404:
                self._missing[flight] = time.monotonic() + _NOT_FOUND_TTL
                return None
            self.metrics.inc("api_errors")
            delay = self.backoff.next_delay(e.retry_after)
            self._down_until = time.monotonic() + delay
            self.log.warning("Kubernetes API: %s; records pass unenriched for %.1fs before the next try", e, delay)
            return None
        finally:
            del self._inflight[flight]
            ev.set()

    async def _fetch_pod(self, key: tuple[str, str]) -> PodMeta:
        ns, name = key
        obj = await self.api.get_json(f"/api/v1/namespaces/{ns}/pods/{name}", limit=self.buffer_size)
        meta = pod_meta(obj)
        self.pods.put(key, meta)
        self.metrics.inc("pod_requests")
        return meta

    async def _fetch_kubelet(self, key: tuple[str, str]) -> PodMeta | None:
        assert self.kubelet is not None
        doc = await self.kubelet.get_json("/pods")
        seen = set()
        for obj in doc.get("items") or []:
            k = _pod_key(obj)
            seen.add(k)
            self.pods.put(k, pod_meta(obj))
        for k in self.pods.keys():
            if k not in seen:
                self.pods.mark_deleted(k)
        self.metrics.inc("pod_requests")
        found = self.pods.get(key)
        if found is None:
            self._missing[("kubelet",)] = time.monotonic() + 1.0  # at most one kubelet list a second
        return found  # type: ignore[no-any-return]

    async def _fetch_namespace(self, name: str) -> NamespaceMeta:
        obj = await self.api.get_json(f"/api/v1/namespaces/{name}", limit=self.buffer_size)
        meta = namespace_meta(obj)
        self.namespaces.put(name, meta)
        return meta
