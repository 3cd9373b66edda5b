"""bisect_send isolates the records a backend rejects without naming them."""

from __future__ import annotations

from collections.abc import Sequence

import trio

from logfwd.batch import Result
from logfwd.net.bisect import Answer, bisect_send
from logfwd.net.http import Verdict


class Backend:
    """Refuses (with ``verdict``) any request holding a bad record; records what it was sent."""

    def __init__(self, bad: set[int], verdict: Verdict = Verdict.SPLIT, max_size: int | None = None) -> None:
        self.bad = bad
        self.verdict = verdict
        self.max_size = max_size
        self.requests: list[list[int]] = []

    async def send(self, group: Sequence[int]) -> Answer:
        self.requests.append(list(group))
        if self.max_size is not None and len(group) > self.max_size:
            return Answer(Verdict.SPLIT, "too large")
        if self.bad & set(group):
            return Answer(self.verdict, f"bad {min(self.bad & set(group))}")
        return Answer(Verdict.DELIVERED)


def run(indices: Sequence[int], backend: Backend):
    return trio.run(bisect_send, indices, backend.send)


def test_all_good_is_one_request() -> None:
    b = Backend(set())
    out = run(range(8), b)
    assert out.result(8).delivered_all and b.requests == [list(range(8))]


def test_isolates_bad_records() -> None:
    b = Backend({3, 6})
    out = run(range(8), b)
    r = out.result(8)
    assert r.retry is None and [i for i, _ in r.refused] == [3, 6]
    assert dict(r.refused)[3] == "bad 3"
    delivered = {i for req in b.requests for i in req if not ({3, 6} & set(req))}
    assert delivered == set(range(8)) - {3, 6}


def test_too_large_splits_until_it_fits() -> None:
    b = Backend(set(), max_size=3)
    out = run(range(10), b)
    assert out.result(10).delivered_all
    sent = [req for req in b.requests if len(req) <= 3]
    assert sorted(i for req in sent for i in req) == list(range(10))


def test_lone_record_too_large_is_refused() -> None:
    b = Backend(set(), max_size=0)
    r = run([5, 6], b).result(10)
    assert [i for i, _ in r.refused] == [5, 6] and r.reason == "too large"


def test_refused_verdict_does_not_split() -> None:
    b = Backend({1}, verdict=Verdict.REFUSED)
    r = run(range(4), b).result(4)
    assert [i for i, _ in r.refused] == [0, 1, 2, 3] and len(b.requests) == 1


def test_retry_stops_and_retries_the_rest() -> None:
    calls = 0

    async def send(group: Sequence[int]) -> Answer:
        nonlocal calls
        calls += 1
        if calls == 1:
            return Answer(Verdict.SPLIT, "too large")
        return Answer(Verdict.RETRY, "down")

    out = trio.run(bisect_send, list(range(6)), send)
    r = out.result(6)
    assert r.retry_all and r.reason == "down" and calls == 2


def test_detail_settles_records_and_verdict_covers_the_rest() -> None:
    async def send(group: Sequence[int]) -> Answer:
        # the first record of each request cannot be encoded; the others are delivered
        if 0 in group:
            return Answer(Verdict.SPLIT, "too large", Result(refused=[(0, "not encodable")]))
        return Answer(Verdict.DELIVERED, detail=Result(retry=[0]))

    r = trio.run(bisect_send, [0, 1, 2, 3], send).result(4)
    assert r.refused == [(0, "not encodable")]
    assert r.retry == [1, 2]  # the halves [1] and [2, 3]: the first record of each is retried


def test_empty() -> None:
    assert trio.run(bisect_send, [], Backend(set()).send).result(0).delivered_all
