"""List-then-watch of one resource kind, kept in a ``MetaCache`` (a client-go "reflector").

One LIST gives the current objects and a ``resourceVersion``; one WATCH from that
version streams every change after it (ADDED/MODIFIED/DELETED, and BOOKMARKs that only
move the version on). When the stream ends (the server closes watches every few
minutes) it is resumed from the last version seen; when the server says that version
is too old (410 Gone) the objects are listed again. Errors back off with full jitter,
honouring Retry-After, and are never raised to the caller: while the API is away the
cache keeps what it had and the filter carries on.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

import trio

from .api import ApiError, Gone, KubeApi
from .meta import MetaCache

__all__ = ["Backoff", "Reflector"]


class Backoff:
    """Full-jitter exponential backoff: sleep uniform(0, min(cap, base * 2**n))."""

    def __init__(self, base: float = 0.5, cap: float = 30.0) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0

    def next_delay(self, retry_after: float | None = None) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        delay = random.uniform(0, ceiling)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.cap))
        return delay


class Reflector:
    """Keeps ``cache`` equal to the objects at ``path`` (``/api/v1/pods``), by list and watch.

    ``key`` and ``convert`` turn an API object into the cache's key and value. ``synced``
    is set after the first successful LIST; ``answered`` after the first LIST's outcome,
    success or error (what a lookup at start waits for: an API that refuses at once must
    not hold records back); ``healthy`` is False from an API error until the next
    successful call, so the filter can skip requests the API would not answer.
    """

    def __init__(
        self,
        api: KubeApi,
        path: str,
        cache: MetaCache,
        key: Callable[[dict[str, Any]], Any],
        convert: Callable[[dict[str, Any]], Any],
        *,
        field_selector: str | None = None,
        watch_timeout: int = 300,
        log: logging.Logger,
        metrics: Any,
        kind: str,
    ) -> None:
        self.api = api
        self.path = path
        self.cache = cache
        self.key = key
        self.convert = convert
        self.field_selector = field_selector
        self.watch_timeout = watch_timeout
        self.log = log
        self.metrics = metrics
        self.kind = kind
        self.synced = trio.Event()
        self.answered = trio.Event()
        self.healthy = True
        self.resource_version: str | None = None
        self.backoff = Backoff()
        self._gone_in_a_row = 0

    def _url(self, **params: Any) -> str:
        q = {}
        if self.field_selector:
            q["fieldSelector"] = self.field_selector
        q.update({k: v for k, v in params.items() if v is not None})
        return self.path + ("?" + urlencode(q, quote_via=quote) if q else "")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            try:
                if self.resource_version is None:
                    await self._list()
                await self._watch()
                self.backoff.reset()
            except Gone as e:
                self.metrics.inc(f"{self.kind}_relists")
                self.log.info("%s watch: %s; listing again", self.kind, e)
                self.resource_version = None
                self._gone_in_a_row += 1
                if self._gone_in_a_row > 1:  # a list's version already too old: do not hammer the API
                    await trio.sleep(self.backoff.next_delay())
            except ApiError as e:
                self._failed(e)
                await trio.sleep(self.backoff.next_delay(e.retry_after))
            except Exception as e:  # a bug or an odd answer must not end the watch for good
                self.log.error("%s watch failed: %s: %s", self.kind, type(e).__name__, e)
                self._failed(ApiError(0, str(e)))
                await trio.sleep(self.backoff.next_delay())

    def _failed(self, e: ApiError) -> None:
        if self.healthy:
            self.log.warning("Kubernetes API (%s): %s; retrying with backoff, records pass unenriched meanwhile",
                             self.kind, e)
        self.healthy = False
        self.answered.set()
        self.metrics.inc("api_errors")

    async def _list(self) -> None:
        doc = await self.api.get_json(self._url())
        items = doc.get("items") or []
        seen = set()
        for obj in items:
            k = self.key(obj)
            seen.add(k)
            self.cache.put(k, self.convert(obj))
        for k in self.cache.keys():
            if k not in seen:
                self.cache.mark_deleted(k)  # gone while we were not watching: keep it for its last lines
        self.resource_version = str((doc.get("metadata") or {}).get("resourceVersion") or "") or None
        if not self.healthy:
            self.log.info("Kubernetes API (%s) answers again", self.kind)
        self.healthy = True
        self.metrics.set(f"{self.kind}_cached", len(self.cache))
        self.synced.set()
        self.answered.set()

    async def _watch(self) -> None:
        url = self._url(watch="1", resourceVersion=self.resource_version, allowWatchBookmarks="true",
                        timeoutSeconds=str(self.watch_timeout))
        events = self.api.watch(url, idle_timeout=self.watch_timeout + 30)
        try:
            async for ev in events:
                self._apply(ev)
        finally:
            await events.aclose()
        self.cache.purge()

    def _apply(self, ev: dict[str, Any]) -> None:
        obj = ev.get("object") or {}
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        kind = ev.get("type")
        if kind in ("ADDED", "MODIFIED"):
            self.cache.put(self.key(obj), self.convert(obj))
        elif kind == "DELETED":
            k = self.key(obj)
            self.cache.put(k, self.convert(obj))  # its final state, then the grace period
            self.cache.mark_deleted(k)
        if rv:
            self.resource_version = str(rv)
        self._gone_in_a_row = 0
        self.healthy = True
        self.metrics.set(f"{self.kind}_cached", len(self.cache))
