"""The tail input's file discovery and inotify binding (``logfwd.plugins.in_tail.watch``), on real files."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from logfwd.plugins.in_tail import watch


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x\n")
    return path


def test_expand_globs_recursion_and_excludes(tmp_path: Path) -> None:
    a = touch(tmp_path / "a.log")
    b = touch(tmp_path / "b.log")
    touch(tmp_path / "a.log.gz")
    deep = touch(tmp_path / "x" / "y" / "deep.log")
    assert watch.expand([str(tmp_path / "*.log")], []) == [str(a), str(b)]
    assert watch.expand([str(tmp_path / "**" / "*.log")], []) == sorted([str(a), str(b), str(deep)])
    # Exclude_Path matches the whole path (``*`` crosses ``/``) or the name alone, as in Fluent Bit
    assert watch.expand([str(tmp_path / "*.log*")], ["*.gz"]) == [str(a), str(b)]
    assert watch.expand([str(tmp_path / "**" / "*.log")], [str(tmp_path / "x") + "*"]) == [str(a), str(b)]
    # a literal path that does not exist yet is not an error: it is found when it appears
    assert watch.expand([str(tmp_path / "later.log")], []) == []
    # patterns that overlap give each file once
    assert watch.expand([str(tmp_path / "a.*"), str(tmp_path / "*.log")], ["*.gz"]) == [str(a), str(b)]


def test_watch_dirs_cover_where_a_new_match_can_appear(tmp_path: Path) -> None:
    touch(tmp_path / "pods" / "ns_a" / "c.log")
    touch(tmp_path / "pods" / "ns_b" / "c.log")
    dirs = watch.watch_dirs([str(tmp_path / "pods" / "*" / "*.log")])
    assert {str(tmp_path / "pods"), str(tmp_path / "pods" / "ns_a"), str(tmp_path / "pods" / "ns_b")} <= dirs
    rec = watch.watch_dirs([str(tmp_path / "**" / "*.log")])
    assert str(tmp_path / "pods" / "ns_a") in rec and str(tmp_path) in rec


def test_find_inode_follows_a_rename(tmp_path: Path) -> None:
    f = touch(tmp_path / "app.log")
    st = f.stat()
    os.rename(f, tmp_path / "app.log.1")
    assert watch.find_inode(str(tmp_path), st.st_dev, st.st_ino) == str(tmp_path / "app.log.1")
    assert watch.find_inode(str(tmp_path / "missing"), st.st_dev, st.st_ino) is None


def test_inotify_reports_create_modify_and_move(tmp_path: Path) -> None:
    ino = watch.Inotify()
    try:
        wd = ino.add_watch(str(tmp_path), watch.IN_CREATE | watch.IN_MODIFY | watch.IN_MOVED_FROM)
        assert wd >= 0
        assert ino.add_watch(str(tmp_path / "nope"), watch.IN_CREATE) == -1  # missing: -1, not an exception

        async def main() -> list[tuple[int, int, str]]:
            seen: list[tuple[int, int, str]] = []
            (tmp_path / "new.log").write_text("line\n")
            os.rename(tmp_path / "new.log", tmp_path / "new.log.1")
            with trio.fail_after(10):
                while not any(m & watch.IN_MOVED_FROM for _, m, _ in seen):
                    seen.extend(await ino.read_events())
            return seen

        events = trio.run(main)
    finally:
        ino.close()
    names = {(name, bool(mask & watch.IN_CREATE), bool(mask & watch.IN_MOVED_FROM)) for w, mask, name in events
             if w == wd}
    assert ("new.log", True, False) in names and ("new.log", False, True) in names
    assert ino.fd == -1  # closed, and closing twice is harmless
    ino.close()
