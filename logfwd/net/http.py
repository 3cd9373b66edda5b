"""What every HTTP output shares: how a status code is judged, and how a transport error reads.

Each HTTP output (es, influxdb) used to carry its own idea of which statuses are worth a
retry. One table here means a 408 or a 413 is treated the same way whatever the backend:

====================  ==========  =====================================================
status                verdict     why
====================  ==========  =====================================================
2xx                   DELIVERED   the request was accepted
408, 429, 5xx         RETRY       the server is busy or broken; the same body may pass later
1xx, 3xx              RETRY       nothing was stored (a redirect is a proxy misconfiguration)
no answer             RETRY       connection refused, reset, timeout, TLS failure
413                   SPLIT       too large: halves of the request may each pass
other 4xx             REFUSED     the same body will always fail the same way
====================  ==========  =====================================================

An output may overrule the table for statuses its backend gives another meaning (es and
influxdb retry 401/403/404: an operator can fix credentials or create the database/index,
and Fluent Bit retries them too); ``classify(status, retry=...)`` takes those.
"""

from __future__ import annotations

import enum
import ssl
from collections.abc import Collection

__all__ = ["Verdict", "classify", "describe_exception"]


class Verdict(enum.Enum):
    """What a request's answer means for the records in it."""

    DELIVERED = "delivered"
    RETRY = "retry"
    SPLIT = "split"
    REFUSED = "refused"


def classify(status: int | None, *, retry: Collection[int] = ()) -> Verdict:
    """The verdict for an HTTP ``status`` (None: no answer came back).

    ``retry``: statuses this backend wants retried although the table refuses them.
    """
    if status is None:
        return Verdict.RETRY
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status == 413:
        return Verdict.SPLIT
    if status in retry or status in (408, 429) or status >= 500 or status < 400:
        return Verdict.RETRY
    return Verdict.REFUSED


def describe_exception(exc: BaseException) -> str:
    """The most telling messages of an exception chain, on one line.

    httpx, anyio and trio wrap the real cause (``ECONNREFUSED``, a certificate error)
    several levels deep; the outermost message alone ("ConnectError") says little.
    """
    seen: set[int] = set()
    parts: list[str] = []
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        if type(e).__name__ == "Cancelled":  # trio's deadline inside httpx: the timeout says it already
            continue
        text = str(getattr(e, "message", "") or e).strip()
        if isinstance(e, ssl.SSLError):
            text = f"TLS: {getattr(e, 'verify_message', None) or e.reason or e}"
        if text and text not in parts and not any(text in p for p in parts):
            parts.append(f"{type(e).__name__}: {text}" if not text.startswith("TLS") else text)
        todo.extend(x for x in getattr(e, "errors", ()) or () if isinstance(x, BaseException))
        for nxt in (e.__cause__, e.__context__):
            if nxt is not None:
                todo.append(nxt)
    return "; ".join(parts[-2:]) if parts else type(exc).__name__
