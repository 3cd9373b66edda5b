"""Origin keys made on demand: same values as the strings tail used to build, and lazy until read."""

from __future__ import annotations

from logfwd.batch import Batch, Chunk
from logfwd.engine.storage.format import pack_batch, unpack_batch
from logfwd.originkeys import KeyColumn, OriginKeys, as_list, take


def test_origin_keys_read_as_the_strings_they_stand_for() -> None:
    k = OriginKeys("ab12", [10, 25, 40])
    assert len(k) == 3
    assert k[0] == "ab12:10" and k[-1] == "ab12:40"
    assert list(k) == ["ab12:10", "ab12:25", "ab12:40"]
    assert k == ["ab12:10", "ab12:25", "ab12:40"]
    assert k[1:] == ["ab12:25", "ab12:40"] and isinstance(k[1:], OriginKeys)
    assert take(k, [2, 0]) == ["ab12:40", "ab12:10"] and isinstance(take(k, [2, 0]), OriginKeys)
    assert "ab12:25" in k and k.index("ab12:40") == 2
    assert k != ["ab12:10"]


def test_a_chunk_keeps_batch_keys_lazy_until_an_output_reads_them() -> None:
    c = Chunk("t")
    c.add(Batch("t", [1, 2], [{"a": 1}, {"a": 2}], keys=OriginKeys("f", [5, 9])))
    c.add(Batch("t", [3], [{"a": 3}]))  # an input without keys
    c.add(Batch("t", [4], [{"a": 4}], keys=["x:1"]))
    assert isinstance(c.keys, KeyColumn) and c.keys._flat is None  # nothing formatted yet
    assert len(c.keys) == 4
    assert c.keys[0] == "f:5"
    assert list(c.keys) == ["f:5", "f:9", None, "x:1"]
    c.add(Batch("t", [5], [{"a": 5}], keys=OriginKeys("g", [7])))  # after the first read
    assert c.keys == ["f:5", "f:9", None, "x:1", "g:7"]
    sub = c.subset([4, 1])
    assert sub.keys == ["g:7", "f:9"] and sub.records == [{"a": 5}, {"a": 2}]


def test_a_chunk_given_a_key_list_still_takes_batches() -> None:
    c = Chunk("t", times=[0], records=[{}], keys=["k0"])
    c.add(Batch("t", [1], [{}], keys=OriginKeys("p", [3])))
    assert c.keys == ["k0", "p:3"]


def test_select_keeps_keys_aligned() -> None:
    b = Batch("t", [1, 2, 3], [{"i": 1}, {"i": 2}, {"i": 3}], keys=OriginKeys("p", [1, 2, 3]))
    b.select([0, 2])
    assert b.keys == ["p:1", "p:3"] and [r["i"] for r in b.records] == [1, 3]


def test_storage_writes_the_key_strings() -> None:
    keys = OriginKeys("p", [11, 22])
    payload = pack_batch([1, 2], [{"a": 1}, {"a": 2}], as_list(keys))
    assert unpack_batch(payload)[2] == ["p:11", "p:22"]
    assert as_list(None) is None
    lst: list[str | None] = ["a"]
    assert as_list(lst) is lst
