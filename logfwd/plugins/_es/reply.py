"""Reading Elasticsearch's answers: the JSON serializers the transport uses, and the verdict
on each document of a ``_bulk`` answer.

A bulk request is not atomic, so its answer is judged per document:

- 2xx: delivered; 409 on ``create``: the document already exists (a replay of a record
  whose ``_id`` we derived or generated), counted as delivered; 404
  ``document_missing_exception`` on ``update``: skipped, as Fluent Bit does;
- 429, 5xx, ``es_rejected_execution_exception``: only those records are retried;
- any other error (mapping conflicts, bad values, missing pipeline): refused for good with
  Elasticsearch's error type and reason (the engine dead-letters them).
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson
from elastic_transport import OrjsonSerializer, Serializer, TextSerializer

from logfwd.plugin import Result

_RETRY_ITEM_TYPES = frozenset({"es_rejected_execution_exception", "circuit_breaking_exception"})

# Set while this task waits for a ``_bulk`` answer: the JSON serializer then tries
# the cheap check below first. A context variable, because the transport calls the
# serializer itself and trio gives every task its own context.
BULK_ANSWER: contextvars.ContextVar[bool] = contextvars.ContextVar("logfwd_es_bulk_answer", default=False)


class AllStored:
    """A ``_bulk`` answer with ``"errors": false``, of which only the item count was read.

    Building a dict per item (``_index``, ``_id``, ``_shards``...) for answers that
    only say "all stored" cost more CPU than everything else the output does; msgspec
    validates the whole answer and counts the items without creating them. ``full()``
    gives the parsed answer, for the rare cases that need to look at the items.
    """

    __slots__ = ("items", "raw")

    def __init__(self, items: int, raw: bytes) -> None:
        self.items = items
        self.raw = raw

    def full(self) -> Any:
        """The parsed answer; None if orjson refuses what msgspec took (then it is retried)."""
        try:
            return orjson.loads(self.raw)
        except orjson.JSONDecodeError:
            return None


def _bulk_ok_decoder() -> Any:
    """A decoder of ``{"errors": <bool>, "items": [{...}, ...]}`` that keeps no item content."""
    # No fields: an item must be an object, its content is validated and skipped.
    # (defstruct: this module's postponed annotations would not resolve local names.)
    item = msgspec.defstruct("BulkItem", [])
    answer = msgspec.defstruct("BulkAnswer", [("errors", bool | None, None), ("items", list[item] | None, None)])
    return msgspec.json.Decoder(answer)


class _RawNdjson(Serializer):  # type: ignore[misc]
    mimetype = "application/x-ndjson"

    def dumps(self, data: Any) -> bytes:
        # Already NDJSON (and maybe gzipped): the stock serializer would copy it
        # and append a newline, which corrupts a gzip stream.
        return bytes(data)

    def loads(self, data: bytes) -> Any:
        return [orjson.loads(line) for line in data.splitlines() if line.strip()]


class _BulkAwareJson(OrjsonSerializer):  # type: ignore[misc]
    """orjson, except that a clean ``_bulk`` answer becomes an ``AllStored`` count.

    Anything else (errors true, odd shapes, invalid JSON, other requests) takes
    the stock path, so it is parsed, or refused, exactly as before.
    """

    def __init__(self) -> None:
        super().__init__()
        self._bulk_decoder = _bulk_ok_decoder()

    def loads(self, data: bytes) -> Any:
        if data and BULK_ANSWER.get():
            try:
                ans = self._bulk_decoder.decode(data)
            except Exception:  # noqa: BLE001 - any surprise: the stock path decides
                ans = None
            if ans is not None and ans.errors is False and ans.items is not None:
                return AllStored(len(ans.items), bytes(data))
        return super().loads(data)


def serializers() -> dict[str, Any]:
    """orjson for JSON answers; NDJSON request bodies pass through as the bytes we built."""
    js = _BulkAwareJson()
    return {
        "application/json": js,
        "application/vnd.elasticsearch+json": js,
        "application/x-ndjson": _RawNdjson(),
        "text/plain": TextSerializer(),
        "text/html": TextSerializer(),
    }


def error_text(obj: Any) -> str:
    """``type: reason (caused by type: reason)`` from an Elasticsearch error object or answer."""
    if not isinstance(obj, dict):
        return str(obj)[:500] if obj else ""
    err = obj.get("error", obj)
    if isinstance(err, str):
        return err
    if not isinstance(err, dict):
        return ""
    text = f"{err.get('type', 'error')}: {err.get('reason', '')}".strip()
    cause = err.get("caused_by")
    if isinstance(cause, dict) and cause.get("reason"):
        text += f" (caused by {cause.get('type', '')}: {cause['reason']})"
    return text


@dataclass(slots=True)
class ItemVerdicts:
    """The verdict on each document of a bulk answer (indices: positions in the request)."""

    result: Result
    duplicates: int = 0
    skipped: int = 0


def judge_items(items: list[Any], n: int, op: str) -> ItemVerdicts:
    """Judge the ``n`` documents of a request from the answer's ``items``."""
    retry: list[int] = []
    refused: list[tuple[int, str]] = []
    duplicates = skipped = 0
    for j in range(n):
        if j >= len(items):
            retry.append(j)  # no answer for this action: try it again
            continue
        item = items[j]
        info = next(iter(item.values()), {}) if isinstance(item, dict) and item else {}
        st = info.get("status", 0) if isinstance(info, dict) else 0
        if 200 <= st < 300:
            continue
        err = info.get("error") if isinstance(info, dict) else None
        etype = err.get("type", "") if isinstance(err, dict) else str(err or "")
        if st == 409 and op == "create":
            duplicates += 1
        elif st == 404 and op == "update" and etype in ("document_missing_exception", "index_not_found_exception"):
            skipped += 1
        elif st == 429 or st >= 500 or etype in _RETRY_ITEM_TYPES or st == 409 or not st:
            retry.append(j)
        else:
            refused.append((j, f"{st} {error_text(info) or etype}"))
    reason = refused[0][1] if refused else ("retry requested by Elasticsearch" if retry else "")
    return ItemVerdicts(Result(retry=retry or None, refused=refused, reason=reason), duplicates, skipped)
