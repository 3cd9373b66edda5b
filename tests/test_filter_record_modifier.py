"""record_modifier filter: Record, Remove_key, Allowlist_key/Whitelist_key, Uuid_key."""

from __future__ import annotations

import uuid

import pytest

from logfwd.plugin import ConfigValueError
from tests.pluginkit import make_batch as batch
from tests.pluginkit import make_filter as make

MEM = {"Mem.total": 1016024, "Mem.used": 716672, "Mem.free": 299352, "Swap.total": 2064380, "Swap.used": 32656}


def test_append_fields_with_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGFWD_TEST_HOST", "node-7")
    f = make("record_modifier", [("Record", "hostname ${LOGFWD_TEST_HOST}"), ("Record", "product Awesome Tool")])
    b = f.filter(batch([dict(MEM)]))
    assert b is not None
    assert b.records[0] == {**MEM, "hostname": "node-7", "product": "Awesome Tool"}


def test_remove_key_exact_prefix_and_case_insensitive() -> None:
    f = make("record_modifier", [("Remove_key", "swap.total"), ("Remove_key", "Mem.f*")])
    b = f.filter(batch([dict(MEM)]))
    assert b is not None and b.records[0] == {"Mem.total": 1016024, "Mem.used": 716672, "Swap.used": 32656}


def test_allowlist_and_legacy_whitelist() -> None:
    f = make("record_modifier", [("Allowlist_key", "Mem.total"), ("Whitelist_key", "Swap.*"),
                                 ("Record", "added x")])
    b = f.filter(batch([dict(MEM)]))
    assert b is not None
    assert b.records[0] == {"Mem.total": 1016024, "Swap.total": 2064380, "Swap.used": 32656, "added": "x"}


def test_uuid_key_unique_per_record() -> None:
    f = make("record_modifier", [("Uuid_key", "uid")])
    b = f.filter(batch([{"a": 1}, {"a": 2}]))
    assert b is not None
    ids = [r["uid"] for r in b.records]
    assert len(set(ids)) == 2 and all(uuid.UUID(i).version == 4 for i in ids)


@pytest.mark.parametrize(
    "entries, key",
    [
        ([("Remove_key", "a"), ("Allowlist_key", "b")], "remove_key"),
        ([("Record", "onlykey")], "record"),
        ([], "record"),
    ],
)
def test_config_errors(entries: list[tuple[str, str]], key: str) -> None:
    with pytest.raises(ConfigValueError) as e:
        make("record_modifier", entries)
    assert e.value.key == key
