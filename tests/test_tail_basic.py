"""tail: reading, start position, tags, keys and line handling (in-process, real Emitter)."""

from __future__ import annotations

import os
import time as _time
from pathlib import Path

import pytest
import trio

from logfwd.plugin import ConfigValueError
from tests.tailkit import Harness, NumberedWriter, assert_exactly, run_tail


@pytest.mark.parametrize("inotify", ["on", "off"])
def test_read_from_head_and_follow(tmp_path: Path, inotify: str) -> None:
    w = NumberedWriter(tmp_path / "app.log")
    w.write(500)

    async def scenario(h: Harness) -> None:
        await h.wait_count(500)
        w.write(300)
        await h.wait_count(800)

    h = run_tail({"Path": str(tmp_path / "*.log"), "Read_from_Head": "on", "Inotify_Watcher": inotify}, scenario)
    assert_exactly(h.collector.records, {"L": 800})
    assert h.metrics["records"] == 800
    assert h.metrics["files_watched"] == 1
    # origin keys: one per record, unique, "<key id>:<end offset>"
    keys = h.collector.keys
    assert len(keys) == 800 and len(set(keys)) == 800
    size = (tmp_path / "app.log").stat().st_size
    assert keys[-1].endswith(f":{size}")


def test_startup_files_start_at_end_new_files_from_zero(tmp_path: Path) -> None:
    old = NumberedWriter(tmp_path / "old.log", name="OLD")
    old.write(100)  # present at startup: skipped (Read_from_Head off)

    async def scenario(h: Harness) -> None:

        await trio.sleep(0.3)
        old.write(10)  # appended after start: read
        new = NumberedWriter(tmp_path / "new.log", name="NEW")
        new.write(20)  # appears later: read from 0
        await h.wait_count(30)
        await trio.sleep(0.2)

    h = run_tail({"Path": str(tmp_path / "*.log"), "Refresh_Interval": "10"}, scenario)
    got = {r["log"][:12] for r in h.collector.records}
    assert len(h.collector.records) == 30
    assert not any(g.startswith("OLD-000000") and int(g[4:12]) < 100 for g in got)
    assert sum(1 for r in h.collector.records if r["log"].startswith("NEW")) == 20


def test_partial_last_line_waits_for_newline(tmp_path: Path) -> None:
    p = tmp_path / "p.log"
    p.write_bytes(b"one\ntwo\nthr")

    async def scenario(h: Harness) -> None:

        await h.wait_count(2)
        await trio.sleep(0.5)
        assert h.collector.count() == 2, "an unterminated line was emitted"
        with open(p, "ab") as fh:
            fh.write(b"ee\nfour\r\n")
        await h.wait_count(4)

    h = run_tail({"Path": str(p), "Read_from_Head": "on", "Inotify_Watcher": "off"}, scenario)
    assert [r["log"] for r in h.collector.records] == ["one", "two", "three", "four"]


def test_tag_expansion_path_key_offset_key(tmp_path: Path) -> None:
    p = tmp_path / "svc.log"
    p.write_bytes(b"a\nbb\nccc\n")

    async def scenario(h: Harness) -> None:
        await h.wait_count(3)

    h = run_tail({"Path": str(p), "Read_from_Head": "on", "Path_Key": "file", "Offset_Key": "off", "Key": "msg"},
                 scenario, tag="kube.*")
    b = h.collector.batches[0]
    assert b.tag == "kube." + str(p).strip("/").replace("/", ".")
    recs = h.collector.records
    assert [r["msg"] for r in recs] == ["a", "bb", "ccc"]
    assert all(r["file"] == str(p) for r in recs)
    assert [r["off"] for r in recs] == [0, 2, 5]  # each line's start, as Fluent Bit's Offset_Key


def test_tag_regex(tmp_path: Path) -> None:
    d = tmp_path / "containers"
    d.mkdir()
    cid = "a" * 64
    p = d / f"web-7d9f_shop_nginx-{cid}.log"
    p.write_bytes(b"hello\n")
    # Fluent Bit applies Tag_Regex to the whole path (the pytest directory has '_' in it: anchor on the dir)
    regex = r"containers/(?<pod_name>[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)_(?<namespace_name>[^_]+)_(?<container_name>.+)-(?<container_id>[a-z0-9]{64})\.log$"

    async def scenario(h: Harness) -> None:
        await h.wait_count(1)

    h = run_tail({"Path": str(d / "*.log"), "Read_from_Head": "on", "Tag_Regex": regex}, scenario,
                 tag="kube.<namespace_name>.<pod_name>.<container_name>.<nope>")
    assert h.collector.batches[0].tag == "kube.shop.web-7d9f.nginx._"


def test_long_lines_cut_or_skipped(tmp_path: Path) -> None:
    p = tmp_path / "long.log"
    p.write_bytes(b"short1\n" + b"y" * 5000 + b"\nshort2\n" + b"z" * 3000 + b"\nshort3\n")

    async def scenario(h: Harness) -> None:
        await h.wait_count(3)

    h = run_tail({"Path": str(p), "Read_from_Head": "on", "Buffer_Max_Size": "1k", "Skip_Long_Lines": "on"},
                 scenario)
    assert [r["log"] for r in h.collector.records] == ["short1", "short2", "short3"]
    assert h.metrics["skipped_lines"] == 2

    async def scenario2(h: Harness) -> None:
        await h.wait_count(5)

    h = run_tail({"Path": str(p), "Read_from_Head": "on", "Buffer_Max_Size": "1k"}, scenario2)
    logs = [r["log"] for r in h.collector.records]
    assert logs[0] == "short1" and logs[2] == "short2" and logs[4] == "short3"
    assert logs[1] == "y" * 1024 and logs[3] == "z" * 1024
    assert h.metrics["truncated_lines"] == 2


def test_skip_empty_lines_exclude_and_recursive(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "deep.log").write_bytes(b"deep\n\n\r\nx\n")
    (tmp_path / "top.log").write_bytes(b"top\n")
    (tmp_path / "a" / "skip.log").write_bytes(b"nope\n")

    async def scenario(h: Harness) -> None:

        await h.wait_count(3)
        await trio.sleep(0.3)

    h = run_tail({"Path": str(tmp_path / "**" / "*.log"), "Exclude_Path": "*/skip.log,*.gz", "Read_from_Head": "on",
                  "Skip_Empty_Lines": "on"}, scenario)
    assert sorted(r["log"] for r in h.collector.records) == ["deep", "top", "x"]
    assert h.metrics["files_watched"] == 2


def test_exit_on_eof_flushes_everything(tmp_path: Path) -> None:
    w = NumberedWriter(tmp_path / "e.log")
    w.write(2000)
    with open(tmp_path / "e.log", "ab") as fh:
        fh.write(b"L-00002000 no newline at the end")

    async def scenario(h: Harness) -> None:
        await h.wait_for(lambda: h.finished, 10, "run() to return")

    h = run_tail({"Path": str(tmp_path / "e.log"), "Read_from_Head": "on", "Exit_On_Eof": "on"}, scenario)
    assert_exactly(h.collector.records, {"L": 2001})


def test_bad_config_is_reported() -> None:

    with pytest.raises(ConfigValueError) as e:
        Harness({"Path": "/tmp/x", "Multiline": "on"})  # the old mode without Parser_Firstline
    assert e.value.key == "parser_firstline"


def test_ignore_older(tmp_path: Path) -> None:

    old, fresh = tmp_path / "old.log", tmp_path / "fresh.log"
    old.write_bytes(b"ancient 1\nancient 2\n")
    fresh.write_bytes(b"fresh 1\n")
    past = _time.time() - 3 * 86400
    os.utime(old, (past, past))

    async def scenario(h: Harness) -> None:

        await h.wait_count(1)
        await trio.sleep(0.3)
        assert h.metrics["files_watched"] == 1
        with open(old, "ab") as fh:  # becomes active: read from where it was when we started
            fh.write(b"revived\n")
        await h.wait_count(2, timeout=5)
        await trio.sleep(0.2)

    h = run_tail({"Path": str(tmp_path / "*.log"), "Read_from_Head": "on", "Ignore_Older": "1d",
                  "Refresh_Interval": "0.3"}, scenario)
    assert sorted(r["log"] for r in h.collector.records) == ["fresh 1", "revived"]
