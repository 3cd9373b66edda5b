"""The dead-letter file: one JSON line per refused record, with the reason, never lost."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from logfwd.engine.deadletter import DeadLetter, default_dead_letter_dir


def test_lines_carry_output_tag_time_reason_and_record(tmp_path: Path) -> None:
    dl = DeadLetter(tmp_path / "dead-letter")
    assert dl.write("es.0", "app", [1, 2], [{"a": 1}, {"b": b"\xff"}], ["mapper_parsing_exception", "400"]) == 2
    lines = [json.loads(x) for x in (tmp_path / "dead-letter" / "es.0.jsonl").read_text().splitlines()]
    assert [(x["output"], x["tag"], x["time_ns"], x["reason"], x["record"]) for x in lines] == [
        ("es.0", "app", 1, "mapper_parsing_exception", {"a": 1}),
        ("es.0", "app", 2, "400", {"b": "\ufffd"}),
    ]
    assert all(x["dead_lettered_at"].endswith("+00:00") for x in lines)


def test_appends_and_writes_nothing_for_no_records(tmp_path: Path) -> None:
    dl = DeadLetter(tmp_path)
    assert dl.write("o", "t", [], [], []) == 0 and not list(tmp_path.iterdir())
    dl.write("o", "t", [1], [{"n": 1}], ["r"])
    dl.write("o", "t", [2], [{"n": 2}], ["r"])
    assert [json.loads(x)["record"]["n"] for x in dl.path_for("o").read_text().splitlines()] == [1, 2]


def test_output_names_cannot_escape_the_directory(tmp_path: Path) -> None:
    dl = DeadLetter(tmp_path)
    assert dl.path_for("../../etc/passwd").parent == tmp_path
    assert dl.path_for("es main/1").name == "es_main_1.jsonl"


def test_reasons_must_match_records(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        DeadLetter(tmp_path).write("o", "t", [1, 2], [{}, {}], ["only one"])


def test_concurrent_writers_do_not_interleave_lines(tmp_path: Path) -> None:
    dl = DeadLetter(tmp_path)
    big = "x" * 10_000

    def writer(i: int) -> None:
        for j in range(20):
            dl.write("o", "t", [j] * 5, [{"w": i, "pad": big}] * 5, ["r"] * 5)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = dl.path_for("o").read_text().splitlines()
    assert len(lines) == 4 * 20 * 5 and all(json.loads(x)["record"]["pad"] == big for x in lines)


def test_default_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert default_dead_letter_dir({"storage.path": "/data/logfwd"}) == Path("/data/logfwd/rejected")
    assert default_dead_letter_dir({"storage.path": "/data/logfwd", "storage.rejected.path": "/srv/rej"}) == \
        Path("/srv/rej")
    assert default_dead_letter_dir({"storage.path": "/data/logfwd", "storage.keep.rejected": False}) is None
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert default_dead_letter_dir({}) == tmp_path / "logfwd" / "rejected"
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert default_dead_letter_dir({}) == Path("/var/lib/logfwd/rejected")
