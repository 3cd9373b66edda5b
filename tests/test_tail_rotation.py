"""tail: rotation, truncation and deletion, counting every line (in-process, real Emitter)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import trio

from tests.tailkit import Collector, Harness, NumberedWriter, assert_exactly, run_tail


@pytest.mark.parametrize("inotify", ["on", "off"])
def test_rename_and_create(tmp_path: Path, inotify: str) -> None:
    log = tmp_path / "app.log"
    w = NumberedWriter(log)
    w.write(1000)

    async def scenario(h: Harness) -> None:
        await h.wait_count(1000)
        w.write(200)
        late = open(log, "ab")  # the application still holds the old file open
        os.rename(log, tmp_path / "app.log.1")
        w.write(1500)  # creates a new app.log
        late.write(b"LATE-00000000 written to the rotated file after the rename\n")
        late.close()
        await h.wait_count(2701, timeout=15)
        await h.wait_for(lambda: h.metrics["files_closed"] == 1, 10, "the rotated file to be closed")
        assert h.metrics["files_watched"] == 1
        w.write(10)
        await h.wait_count(2711)

    h = run_tail({"Path": str(log), "Read_from_Head": "on", "Rotate_Wait": "1", "Inotify_Watcher": inotify,
                  "Refresh_Interval": "2"}, scenario)
    assert_exactly(h.collector.records, {"L": 2710, "LATE": 1})
    assert h.metrics["rotations"] == 1


def test_rotated_name_still_matching_is_not_read_twice(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    w = NumberedWriter(log)
    w.write(300)

    async def scenario(h: Harness) -> None:
        await h.wait_count(300)
        os.rename(log, tmp_path / "app.1.log")  # still matches *.log
        w.write(100)
        await h.wait_count(400)
        await trio.sleep(1.5)  # rotate wait passes, rescans run
        w.write(5)
        await h.wait_count(405)
        await trio.sleep(0.5)

    h = run_tail({"Path": str(tmp_path / "*.log"), "Read_from_Head": "on", "Rotate_Wait": "0.5",
                  "Refresh_Interval": "0.3"}, scenario)
    assert_exactly(h.collector.records, {"L": 405})


def test_copytruncate(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    w = NumberedWriter(log)
    w.write(1000)

    async def scenario(h: Harness) -> None:
        await h.wait_count(1000)
        shutil.copy(log, tmp_path / "app.log.1")  # not matched by Path
        with open(log, "r+b") as fh:
            fh.truncate(0)
        await trio.sleep(0.1)
        w.write(300)
        await h.wait_count(1300)
        await trio.sleep(0.3)

    h = run_tail({"Path": str(log), "Read_from_Head": "on", "Inotify_Watcher": "off"}, scenario)
    assert_exactly(h.collector.records, {"L": 1300})
    assert h.metrics["truncations"] == 1
    # after truncation the origin keys change: new content at old offsets must not collide
    keys = h.collector.keys
    assert len(set(keys)) == len(keys)


def test_delete_while_reading(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    w = NumberedWriter(log)
    w.write(60_000)  # ~3 MB: several reads, slowed down by a small budget and a slow output

    async def scenario(h: Harness) -> None:
        await h.wait_count(1)
        os.unlink(log)
        await h.wait_count(60_000, timeout=30)
        await h.wait_for(lambda: h.metrics["files_watched"] == 0, 10, "the deleted file to be closed")


    h = run_tail({"Path": str(log), "Read_from_Head": "on", "Rotate_Wait": "5"}, scenario,
                 mem_buf_limit=256 * 1024, collector=Collector(delay=0.01))
    assert_exactly(h.collector.records, {"L": 60_000})


def test_rotation_while_paused_by_backpressure(tmp_path: Path) -> None:
    """Outputs acknowledge nothing for a while: the input pauses; rotation happens meanwhile;
    Rotate_Wait passes long before the old file is drained, and it must not be closed early."""

    log = tmp_path / "app.log"
    w = NumberedWriter(log)
    w.write(40_000)  # ~2 MB
    col = Collector(hold=True)

    async def scenario(h: Harness) -> None:
        await h.wait_count(1)
        await h.wait_for(lambda: h.budget.paused, 5, "the input to pause")
        n_before = h.collector.count()
        w.write(1000)
        os.rename(log, tmp_path / "app.log.1")
        w.write(5000)
        await trio.sleep(1.0)  # > Rotate_Wait, still paused
        assert h.collector.count() == n_before, "read past the memory budget"
        while h.collector.count() < 46_000:
            h.collector.ack_all()
            await trio.sleep(0.02)
        h.collector.ack_all()
        await h.wait_for(lambda: h.metrics["files_closed"] == 1, 10, "the rotated file to be closed")

    h = run_tail({"Path": str(log), "Read_from_Head": "on", "Rotate_Wait": "0.3", "Refresh_Interval": "0.5"},
                 scenario, mem_buf_limit=64 * 1024, collector=col)
    assert_exactly(h.collector.records, {"L": 46_000})


def test_rotated_partial_line_is_flushed(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"a\nb\nunterminated")

    async def scenario(h: Harness) -> None:
        await h.wait_count(2)
        os.rename(log, tmp_path / "old")
        log.write_bytes(b"c\n")
        await h.wait_count(4, timeout=10)

    h = run_tail({"Path": str(log), "Read_from_Head": "on", "Rotate_Wait": "0.2", "Refresh_Interval": "0.5"},
                 scenario)
    assert sorted(r["log"] for r in h.collector.records) == ["a", "b", "c", "unterminated"]


@pytest.mark.parametrize("inotify", ["on", "off"])
def test_many_rotations_under_continuous_writes(tmp_path: Path, inotify: str) -> None:
    """An application writing without pause while logrotate renames its file five times; the
    application reopens its log a little after each rename, so late lines land in the old file."""
    log = tmp_path / "app.log"
    w = NumberedWriter(log)
    w.write(100)
    # stat polling only finds a new file at the next scan: a file must live longer than that
    pause = 0.01 if inotify == "on" else 0.06

    async def scenario(h: Harness) -> None:
        fh = open(log, "ab")
        for rot in range(5):
            for _ in range(15):
                fh.write(w.lines(100))
                fh.flush()
                await trio.sleep(pause)
            os.rename(log, tmp_path / f"app.log.{rot}")
            for _ in range(3):  # still writing to the renamed file
                fh.write(w.lines(100))
                fh.flush()
                await trio.sleep(0.01)
            fh.close()
            fh = open(log, "ab")  # reopen: creates the new app.log
        fh.write(w.lines(100))
        fh.close()
        await h.wait_count(w.next, timeout=20)
        await h.wait_for(lambda: h.metrics["files_closed"] == 5, 10, "five rotated files closed")
        await trio.sleep(0.3)

    h = run_tail({"Path": str(log), "Read_from_Head": "on", "Rotate_Wait": "0.3", "Inotify_Watcher": inotify,
                  "Refresh_Interval": "0.25"}, scenario)
    assert_exactly(h.collector.records, {"L": w.next})
    assert h.metrics["rotations"] == 5
