"""The storage layer inside the engine (no subprocess): acknowledgement on write, chunks deleted
once delivered, /api/v1/storage's shape, storage.keep.rejected off."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_engine import OUTPUTS, Collect, ListInput, run

from .enginekit import config, section


def test_checkpoint_follows_the_write_and_chunks_go_once_delivered(tmp_path: Path) -> None:
    ListInput.batches = [("t", [{"n": i * 10 + j} for j in range(10)]) for i in range(20)]
    ListInput.commits = []
    cfg = config(section(ListInput, **{"storage.type": "filesystem"}),
                 section(Collect, "a", match="*"), section(Collect, "b", match="*"),
                 storage_path=str(tmp_path), **{"storage.sync": "full"})
    p = run(cfg)
    assert sorted(r["n"] for r in OUTPUTS["a"].got) == list(range(200))
    assert sorted(r["n"] for r in OUTPUTS["b"].got) == list(range(200))
    assert ListInput.commits[-1] == 19
    assert p.storage is not None
    assert not list((tmp_path / "listin.0").glob("*.chunk")) and not list((tmp_path / "listin.0").glob("*.ack"))
    doc = json.loads(json.dumps(p.storage_snapshot()))
    assert set(doc) == {"storage_layer", "input_chunks"}
    assert set(doc["storage_layer"]["chunks"]) == {"total_chunks", "mem_chunks", "fs_chunks", "fs_chunks_up",
                                                    "fs_chunks_down"}
    inp = doc["input_chunks"]["listin.0"]
    assert set(inp["status"]) == {"overlimit", "mem_size", "mem_limit"}
    assert set(inp["chunks"]) == {"total", "up", "down", "busy", "busy_size"} and inp["chunks"]["total"] == 0


def test_chunks_of_an_output_that_never_delivers_stay_on_disk(tmp_path: Path) -> None:
    ListInput.batches = [("t", [{"n": i}]) for i in range(5)]
    ListInput.commits = []
    cfg = config(section(ListInput, **{"storage.type": "filesystem"}),
                 section(Collect, "ok", match="*"), section(Collect, "down", match="*", always_retry=True,
                                                             retry_limit=None),
                 storage_path=str(tmp_path), grace=0.5)
    p = run(cfg)
    assert ListInput.commits[-1] == 4, "the checkpoint moved with the write, not with delivery"
    assert sorted(r["n"] for r in OUTPUTS["ok"].got) == list(range(5))
    chunks = list((tmp_path / "listin.0").glob("*.chunk"))
    acks = list((tmp_path / "listin.0").glob("*.ack"))
    assert chunks and {a.read_text() for a in acks} == {"ok\n"}, "ok's delivery is recorded, down's is owed"
    assert p.storage is not None and p.storage.undelivered()[1] == 5


def test_keep_rejected_off_drops_and_counts(tmp_path: Path) -> None:
    ListInput.batches = [("t", [{"n": i} for i in range(3)])]
    cfg = config(section(ListInput), section(Collect, "down", match="*", always_retry=True, retry_limit=0),
                 storage_path=str(tmp_path), **{"storage.keep.rejected": False})
    p = run(cfg)
    m = p.registry.get("output", "down")
    assert m["dropped_records"] == 3 and m["dlq_records"] == 0
    assert not (tmp_path / "rejected").exists()

