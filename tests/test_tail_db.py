"""tail: the offsets database across restarts (in-process runs of the real plugin, one after the other)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
import trio

from logfwd.plugin import StartError
from tests.tailkit import Collector, Harness, NumberedWriter, assert_exactly, run_tail


def test_restart_resumes_from_db(tmp_path: Path) -> None:
    log, db = tmp_path / "app.log", tmp_path / "tail.db"
    w = NumberedWriter(log)
    w.write(1000)
    opts = {"Path": str(log), "DB": str(db)}

    async def first(h: Harness) -> None:
        await trio.sleep(0.2)
        w.write(1000)  # after start: read (the first 1000 existed before: tail starts at the end)
        await h.wait_count(1000)

    h1 = run_tail(opts, first)
    assert len(h1.collector.records) == 1000
    w.write(500)  # while stopped

    async def second(h: Harness) -> None:
        await h.wait_count(500)
        await trio.sleep(0.3)

    h2 = run_tail(opts, second)
    got = [int(r["log"][2:10]) for r in h2.collector.records]
    assert got == list(range(2000, 2500))
    con = sqlite3.connect(db)
    (name, offset), = con.execute("SELECT name, offset FROM in_tail_files").fetchall()
    assert name == str(log) and offset == log.stat().st_size
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_offset_advances_only_on_ack(tmp_path: Path) -> None:
    log, db = tmp_path / "app.log", tmp_path / "tail.db"
    w = NumberedWriter(log)
    w.write(30_000)  # ~1.5 MB: several batches
    opts = {"Path": str(log), "DB": str(db), "Read_from_Head": "on"}
    col = Collector(hold=True)

    async def first(h: Harness) -> None:
        await h.wait_for(lambda: len(h.collector.batches) >= 2, 10, "two batches")
        h.collector.ack_some(1)  # only the first batch is delivered
        await trio.sleep(1.3)  # one DB flush interval

    h1 = run_tail(opts, first, collector=col)
    acked = h1.collector.batches[0]
    last_acked = int(acked.records[-1]["log"][2:10])
    con = sqlite3.connect(db)
    assert con.execute("SELECT offset FROM in_tail_files").fetchone()[0] == int(acked.keys[-1].split(":")[1])
    con.close()

    async def second(h: Harness) -> None:
        await h.wait_count(30_000 - last_acked - 1)
        await trio.sleep(0.3)

    h2 = run_tail(opts, second)
    # a crash (here: stop without acks) replays exactly what was not acknowledged, and nothing is skipped
    assert_exactly(acked.records + h2.collector.records, {"L": 30_000})


def test_inode_reuse_detected_by_fingerprint(tmp_path: Path) -> None:
    log, db = tmp_path / "app.log", tmp_path / "tail.db"
    NumberedWriter(log, name="OLD").write(1000)
    opts = {"Path": str(log), "DB": str(db), "Read_from_Head": "on"}

    async def first(h: Harness) -> None:
        await h.wait_count(1000)
        await trio.sleep(1.2)

    run_tail(opts, first)
    ino = log.stat().st_ino
    # while stopped the file is replaced by another one with the same inode and more bytes than
    # our offset (an inode handed out again; here forced by rewriting in place)
    with open(log, "r+b") as fh:
        fh.write(NumberedWriter(log, name="NEW").lines(1500))
    assert log.stat().st_ino == ino and log.stat().st_size > 1000 * 52

    async def second(h: Harness) -> None:
        await h.wait_count(1500)
        await trio.sleep(0.3)

    h2 = run_tail(opts, second)
    assert_exactly(h2.collector.records, {"NEW": 1500})
    assert h2.metrics["inode_reuse"] == 1


def test_real_unlink_and_recreate_reads_new_file_from_start(tmp_path: Path) -> None:
    log, db = tmp_path / "app.log", tmp_path / "tail.db"
    NumberedWriter(log, name="OLD").write(100)
    opts = {"Path": str(log), "DB": str(db)}

    async def first(h: Harness) -> None:
        await trio.sleep(0.3)

    run_tail(opts, first)
    os.unlink(log)
    NumberedWriter(log, name="NEW").write(50)  # maybe the same inode, maybe not: both must read it all

    async def second(h: Harness) -> None:
        await h.wait_count(50)
        await trio.sleep(0.3)

    h2 = run_tail(opts, second)
    assert_exactly(h2.collector.records, {"NEW": 50})


def test_rotation_while_stopped(tmp_path: Path) -> None:
    log, db = tmp_path / "app.log", tmp_path / "tail.db"
    w = NumberedWriter(log)
    w.write(500)
    opts = {"Path": str(log), "DB": str(db), "Read_from_Head": "on", "Rotate_Wait": "0.2"}

    async def first(h: Harness) -> None:
        await h.wait_count(500)
        await trio.sleep(1.2)

    run_tail(opts, first)
    w.write(200)  # unread tail of the file that is about to be rotated
    os.rename(log, tmp_path / "app.log.1")
    w.write(300)

    async def second(h: Harness) -> None:
        await h.wait_count(500)
        await trio.sleep(0.5)

    h2 = run_tail(opts, second)
    got = sorted(int(r["log"][2:10]) for r in h2.collector.records)
    assert got == list(range(500, 1000))


def test_fluent_bit_db_is_used(tmp_path: Path) -> None:
    """A DB written by Fluent Bit (its table, no fingerprint columns) keeps its offsets."""
    log, db = tmp_path / "app.log", tmp_path / "fb.db"
    w = NumberedWriter(log)
    w.write(100)
    offset = 60 * 52  # start of line 60: each line is 52 bytes
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE in_tail_files (id INTEGER PRIMARY KEY, name TEXT NOT NULL, offset INTEGER,"
                " inode INTEGER, created INTEGER, rotated INTEGER DEFAULT 0)")
    con.execute("INSERT INTO in_tail_files (name, offset, inode, created) VALUES (?, ?, ?, 0)",
                (str(log), offset, log.stat().st_ino))
    con.commit()
    con.close()

    async def scenario(h: Harness) -> None:
        await h.wait_count(40)
        await trio.sleep(0.3)

    h = run_tail({"Path": str(log), "DB": str(db)}, scenario)
    assert [int(r["log"][2:10]) for r in h.collector.records] == list(range(60, 100))


def test_db_in_missing_directory_is_a_start_error(tmp_path: Path) -> None:
    h = Harness({"path": str(tmp_path / "*.log"), "db": str(tmp_path / "x" / "tail.db")})
    with pytest.raises(StartError) as e:
        trio.run(h.plugin.run, h.emitter)
    assert str(e.value) == f"cannot open DB {tmp_path}/x/tail.db: directory {tmp_path}/x does not exist"


def test_started_after_db_opened_and_startup_scan(tmp_path: Path) -> None:
    for name in ("a.log", "b.log"):
        (tmp_path / name).write_text("one\n")
    h = Harness({"path": str(tmp_path / "*.log"), "db": str(tmp_path / "tail.db"), "read_from_head": True})

    async def main() -> None:
        async with trio.open_nursery() as n:
            await n.start(h.plugin.run, h.emitter)
            assert h.metrics["files_watched"] == 2  # found before "started", not some time after
            assert (tmp_path / "tail.db").exists()
            n.cancel_scope.cancel()
        await h.close()

    trio.run(main)


def test_an_ack_after_close_never_touches_the_closed_db(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An acknowledgement delivered after close() (a straggler the engine could not stop in time) is not
    written through the closed SQLite connection: no 'Cannot operate on a closed database', no error. What it
    acknowledged is read again after a restart (the DB keeps the offset written at close)."""
    log, db = tmp_path / "app.log", tmp_path / "tail.db"
    NumberedWriter(log).write(100)
    opts = {"Path": str(log), "DB": str(db), "Read_from_Head": "on"}
    h = Harness(opts, collector=Collector(hold=True))
    h.emitter.durable = True  # as with filesystem storage: an ack writes the DB at once

    async def main() -> None:
        async with trio.open_nursery() as n:
            h.start(n)
            await h.wait_for(lambda: len(h.collector.batches) >= 1, 10, "a batch")
            n.cancel_scope.cancel()
        await h.close()  # cancelled and closed with the batch unacknowledged

    trio.run(main)
    assert h.plugin.db.closed
    col = h.collector
    col.ack_some(1)  # the late acknowledgement
    assert "closed database" not in caplog.text and "failed" not in caplog.text
    con = sqlite3.connect(db)
    assert con.execute("SELECT offset FROM in_tail_files").fetchone()[0] == 0
    con.close()
