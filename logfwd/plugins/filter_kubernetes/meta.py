"""Pod and namespace metadata as the filter attaches it, and the bounded cache holding it.

The API's pod object is large (spec, every status condition); the cache keeps only
what records carry, prepared once per pod version, so enriching a batch is a dict
lookup and a shallow copy.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PodMeta", "NamespaceMeta", "ContainerMeta", "MetaCache", "pod_meta", "namespace_meta"]


@dataclass(frozen=True, slots=True)
class ContainerMeta:
    docker_id: str | None
    container_hash: str | None
    container_image: str | None


@dataclass(slots=True)
class PodMeta:
    name: str
    namespace: str
    uid: str | None
    labels: dict[str, str]
    annotations: dict[str, str]
    host: str | None
    pod_ip: str | None
    owner_references: list[dict[str, Any]]
    containers: dict[str, ContainerMeta]
    deleted_at: float | None = None
    fetched_at: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class NamespaceMeta:
    name: str
    uid: str | None
    labels: dict[str, str]
    annotations: dict[str, str]
    deleted_at: float | None = None
    fetched_at: float = field(default_factory=time.monotonic)


def _strip_scheme(value: str | None) -> str | None:
    """``docker-pullable://nginx@sha256:…`` → ``nginx@sha256:…``; ``containerd://<id>`` → ``<id>``."""
    if not value:
        return value
    i = value.find("://")
    return value[i + 3 :] if i >= 0 else value


def pod_meta(obj: dict[str, Any]) -> PodMeta:
    """The parts of an API pod object that records carry (Fluent Bit's fields)."""
    md = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    containers: dict[str, ContainerMeta] = {}
    for key in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
        for cs in status.get(key) or ():
            name = cs.get("name")
            if name:
                containers[name] = ContainerMeta(
                    _strip_scheme(cs.get("containerID")), _strip_scheme(cs.get("imageID")), cs.get("image"))
    for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        # Not started yet (no status): the image is known from the spec.
        if c.get("name") and c["name"] not in containers:
            containers[c["name"]] = ContainerMeta(None, None, c.get("image"))
    return PodMeta(
        name=str(md.get("name") or ""),
        namespace=str(md.get("namespace") or ""),
        uid=md.get("uid"),
        labels=dict(md.get("labels") or {}),
        annotations=dict(md.get("annotations") or {}),
        host=spec.get("nodeName"),
        pod_ip=status.get("podIP"),
        owner_references=list(md.get("ownerReferences") or []),
        containers=containers,
    )


def namespace_meta(obj: dict[str, Any]) -> NamespaceMeta:
    md = obj.get("metadata") or {}
    return NamespaceMeta(str(md.get("name") or ""), md.get("uid"), dict(md.get("labels") or {}),
                         dict(md.get("annotations") or {}))


class MetaCache:
    """Metadata by key, bounded in size, with TTL for polled entries and a grace for deleted ones.

    A deleted pod is kept ``deleted_grace`` seconds after the API said so, because its
    last lines are still in the files being tailed. ``ttl`` (0: none) expires entries
    that were fetched one by one (a watch keeps its entries current instead). Past
    ``max_entries`` the least recently used entry goes.
    """

    def __init__(self, max_entries: int, ttl: float, deleted_grace: float) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self.deleted_grace = deleted_grace
        self._items: OrderedDict[Any, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Any, *, watched: bool = False) -> Any:
        item = self._items.get(key)
        if item is None:
            return None
        now = time.monotonic()
        if item.deleted_at is not None and now - item.deleted_at > self.deleted_grace:
            del self._items[key]
            return None
        if not watched and self.ttl and now - item.fetched_at > self.ttl:
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return item

    def put(self, key: Any, item: Any) -> None:
        self._items[key] = item
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def mark_deleted(self, key: Any) -> None:
        item = self._items.get(key)
        if item is not None and item.deleted_at is None:
            item.deleted_at = time.monotonic()

    def keys(self) -> list[Any]:
        return list(self._items)

    def purge(self) -> None:
        """Drop deleted entries past their grace (called now and then by the watch)."""
        now = time.monotonic()
        for k in [k for k, v in self._items.items() if v.deleted_at is not None and now - v.deleted_at > self.deleted_grace]:
            del self._items[k]
