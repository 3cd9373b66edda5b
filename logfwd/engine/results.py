"""Building an output's ``Result`` from what happened to each record.

An output learns the fate of its records piece by piece: an encoding failure here, a
per-document error in a bulk answer there, a half of a split request that timed out.
``Outcomes`` collects those verdicts by index and turns them into the one ``Result`` the
engine expects, with the rules every output used to spell out for itself:

- nothing retried nor refused: delivered;
- every record retried and none refused: ``retry_all`` (a whole-request failure);
- otherwise the sorted retry indices and refused ``(index, reason)`` pairs.

A sub-request's own ``Result`` (its indices count from 0 within the sub-request) is mapped
back to the chunk's indices by ``add_result`` / ``merge``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..batch import Result

__all__ = ["Outcomes", "merge"]


@dataclass(slots=True)
class Outcomes:
    """Per-index verdicts; an index not mentioned was delivered.

    ``reason`` is the first retry reason given; a result that only refuses records
    takes the first refusal's reason.
    """

    retry: list[int] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)
    reason: str = ""

    def add_retry(self, indices: Iterable[int], reason: str = "") -> None:
        self.retry.extend(indices)
        if reason and not self.reason:
            self.reason = reason

    def add_refused(self, indices: Iterable[int], reason: str) -> None:
        self.refused.extend((i, reason) for i in indices)

    def add_result(self, result: Result, indices: Sequence[int]) -> None:
        """Take over a sub-request's ``result``, whose index ``j`` is ``indices[j]`` here."""
        if result.retry_all:
            refused = {j for j, _ in result.refused}
            self.add_retry((i for j, i in enumerate(indices) if j not in refused), result.reason)
        elif result.retry:
            self.add_retry((indices[j] for j in result.retry), result.reason)
        self.refused.extend((indices[j], why) for j, why in result.refused)

    def remap(self, mapping: Sequence[int]) -> Outcomes:
        """The same verdicts with index ``j`` renamed ``mapping[j]``."""
        return Outcomes([mapping[j] for j in self.retry], [(mapping[j], why) for j, why in self.refused],
                        self.reason)

    def result(self, n: int) -> Result:
        """The ``Result`` for a chunk of ``n`` records."""
        if not self.retry and not self.refused:
            return Result.ok()
        retry = sorted(set(self.retry))
        if not self.refused and len(retry) >= n:
            return Result.retry_everything(self.reason)
        refused = sorted(self.refused)
        return Result(retry=retry or None, refused=refused, reason=self.reason or refused[0][1])


def merge(parts: Iterable[tuple[Result, Sequence[int]]], n: int) -> Result:
    """One ``Result`` for a chunk of ``n`` records sent as several requests.

    Each part is a request's ``Result`` and the chunk indices of its records, in order.
    """
    out = Outcomes()
    for result, indices in parts:
        out.add_result(result, indices)
    return out.result(n)
