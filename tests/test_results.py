"""Outcomes → Result: the rules every output shares."""

from __future__ import annotations

from logfwd.batch import Result
from logfwd.engine.results import Outcomes, merge


def test_nothing_is_delivered() -> None:
    assert Outcomes().result(5).delivered_all


def test_all_retried_is_retry_all() -> None:
    o = Outcomes()
    o.add_retry([2, 0, 1], "down")
    r = o.result(3)
    assert r.retry_all and r.reason == "down"


def test_retry_all_not_when_something_is_refused() -> None:
    o = Outcomes()
    o.add_retry([0, 1], "down")
    o.add_refused([2], "bad")
    r = o.result(3)
    assert not r.retry_all and r.retry == [0, 1] and r.refused == [(2, "bad")] and r.reason == "down"


def test_refused_only_takes_first_reason_sorted() -> None:
    o = Outcomes()
    o.add_refused([4], "b")
    o.add_refused([1], "a")
    r = o.result(5)
    assert r.retry is None and r.refused == [(1, "a"), (4, "b")] and r.reason == "a"


def test_add_result_remaps() -> None:
    o = Outcomes()
    o.add_result(Result(retry=[0], refused=[(1, "x")], reason="r"), [10, 20, 30])
    assert o.retry == [10] and o.refused == [(20, "x")] and o.reason == "r"


def test_add_result_retry_all_spares_refused() -> None:
    o = Outcomes()
    o.add_result(Result(retry_all=True, refused=[(1, "x")], reason="r"), [10, 20, 30])
    assert sorted(o.retry) == [10, 30] and o.refused == [(20, "x")]


def test_remap() -> None:
    o = Outcomes([0], [(1, "x")], "r").remap([7, 9])
    assert o.retry == [7] and o.refused == [(9, "x")]


def test_merge_halves() -> None:
    a = Result.retry_everything("timeout")
    b = Result(refused=[(0, "bad")], reason="bad")
    r = merge([(a, [0, 1]), (b, [2, 3])], 4)
    assert r.retry == [0, 1] and r.refused == [(2, "bad")] and r.reason == "timeout"
    assert merge([(Result.ok(), [0]), (Result.ok(), [1])], 2).delivered_all
    assert merge([(Result.retry_everything("x"), [0]), (Result.retry_everything("y"), [1])], 2).retry_all
