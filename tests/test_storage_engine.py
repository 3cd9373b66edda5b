"""The storage layer inside the engine (no subprocess): acknowledgement on write, chunks deleted
once delivered, /api/v1/storage's shape, storage.keep.rejected off."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from logfwd.plugins.filter_multiline import PLUGIN as MultilineFilter

from .enginekit import OUTPUTS, Collect, ListInput, config, reset, run, section


@pytest.fixture(autouse=True)
def _reset() -> None:
    reset()


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


def test_records_a_filter_releases_later_are_stored_in_their_inputs_chunks(tmp_path: Path) -> None:
    """Multiline records released by the ticker (flush timeout) go to the input's chunk files.

    Released straight to the outputs' memory instead, they bypassed storage: the input's held
    records were acknowledged only on delivery (so a backend outage kept the checkpoint back),
    and a push input lost them on a kill. Here the only output is down: the released record must
    be on disk, the input's checkpoint past it, and a restart must deliver it.
    """
    trace = ["Traceback (most recent call last):", '  File "app.py", line 1, in <module>',
             "ValueError: boom"]
    ListInput.batches = [("t", [{"log": "before"}]), ("t", [{"log": line} for line in trace])]
    ListInput.commits = []
    ml = section(MultilineFilter, match="*", flush_ms=1, **{"multiline.parser": ["python"],
                                                            "multiline.key_content": "log"})
    cfg = config(section(ListInput, delay=0.5, **{"storage.type": "filesystem"}), ml,
                 section(Collect, "down", match="*", always_retry=True, retry_limit=None),
                 storage_path=str(tmp_path), grace=0.3)
    p = run(cfg)
    assert ListInput.commits and ListInput.commits[-1] == 1, "held lines acknowledged once their record is on disk"
    assert p.storage is not None and p.storage.undelivered()[1] == 2  # "before" and the joined traceback

    ListInput.batches = []
    cfg = config(section(ListInput, **{"storage.type": "filesystem"}), section(MultilineFilter, match="*",
                 **{"multiline.parser": ["python"], "multiline.key_content": "log"}),
                 section(Collect, "down", match="*"), storage_path=str(tmp_path),
                 **{"storage.backlog.flush_on_shutdown": True})
    run(cfg)  # the input ends at once; the backlog is delivered in the shutdown drain
    logs = [r["log"] for r in OUTPUTS["down"].got]
    assert logs[0] == "before" and logs[1].startswith(trace[0]) and "ValueError: boom" in logs[1]
