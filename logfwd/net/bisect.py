"""Sending a request in halves until the records a backend rejects are isolated.

Some answers refuse a request without saying which records are to blame: a 413 (the
body is too large, though its halves may not be), or InfluxDB's 400 for a partial write
(it names the first bad line only, and with 1.x stores the others). ``bisect_send`` sends
the records, and while the answer is ``SPLIT`` sends each half on its own, depth first,
until a lone record is left to refuse: exactly the bad records are refused, the rest are
delivered. Re-sending a record that was already stored must be harmless for the backend
(an Elasticsearch ``_id``, an InfluxDB point overwriting itself).

The send function judges each answer (it knows its backend's statuses; see
``logfwd.net.http.classify``) and may attach a per-record ``Result`` for the records of
that request (per-document bulk errors, records that could not be encoded), whose indices
count within the request. A ``RETRY`` answer stops the bisection: the halves not yet sent
are retried with it, because a backend that is down fails them all, only more slowly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ..batch import Result
from ..engine.results import Outcomes
from .http import Verdict

__all__ = ["Answer", "bisect_send"]


@dataclass(slots=True)
class Answer:
    """How one request went.

    ``detail``: verdicts for some records of the request (indices within the request);
    those records are settled by it, and ``verdict`` applies to the others.
    """

    verdict: Verdict
    reason: str = ""
    detail: Result | None = None


Send = Callable[[Sequence[int]], Awaitable[Answer]]


async def bisect_send(indices: Sequence[int], send: Send) -> Outcomes:
    """Send ``indices`` with ``send``, splitting on ``SPLIT``; the verdict of every index."""
    out = Outcomes()
    # A range stays a range through the halving (slices of a range are ranges), so a
    # sender can tell a run of consecutive records without comparing them one by one.
    stack: list[Sequence[int]] = [indices] if indices else []
    while stack:
        group = stack.pop()
        answer = await send(group)
        rest: Sequence[int] = group
        if answer.detail is not None:
            out.add_result(answer.detail, group)
            settled = _settled(answer.detail, len(group))
            rest = [i for j, i in enumerate(group) if j not in settled]
        if not rest or answer.verdict is Verdict.DELIVERED:
            continue
        if answer.verdict is Verdict.SPLIT and len(rest) > 1:
            mid = len(rest) // 2
            stack.append(rest[mid:])
            stack.append(rest[:mid])
        elif answer.verdict is Verdict.RETRY:
            out.add_retry(rest, answer.reason)
            for g in stack:
                out.add_retry(g)
            break
        else:  # REFUSED, or a lone record still too large
            out.add_refused(rest, answer.reason)
    return out


def _settled(detail: Result, n: int) -> set[int]:
    if detail.retry_all:
        return set(range(n))
    settled = {j for j, _ in detail.refused}
    settled.update(detail.retry or ())
    return settled
