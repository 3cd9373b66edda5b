"""Rotation storms through the real ``logfwd`` daemon: every number of every file arrives.

Three writers append numbered lines while a seeded rotator mixes rename-and-create
(with late writes to the renamed file), copytruncate, delete-and-recreate,
renames of older generations (f.1 → f.2), compression of the oldest generation,
and rotations while the input is paused by backpressure (the output's reader
stalls past Rotate_Wait). See ``tests/tailstorm.py`` for how each operation is
coordinated so that no loss is unavoidable: any missing line is the daemon's.

On failure the message carries the seed and the operation sequence; rerun with
``STORM_SEED=<seed>`` to replay the same rotator choices (thread timing differs).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.tailstorm import Storm

SEED = int(os.environ.get("STORM_SEED", "20261127"))
OPS = int(os.environ.get("STORM_OPS", "24"))


def run_storm(tmp: Path, seed: int, inotify: bool, kills: int) -> Storm:
    s = Storm(tmp, seed, kills=kills, inotify=inotify)
    try:
        s.start_writer()
        s.start()
        s.run(OPS)
        s.stop_writer()
        s.wait(lambda: not s.missing(), 30, "every line to arrive")
        # nothing more trickles in (a rotated file read twice would show up late)
        s.wait(lambda: s.metric("files_watched") == len(s.files), 10, "rotated files to be closed")
        rc = s.stop()
        assert rc == 0, f"daemon exit status {rc}"
    finally:
        s.stop_writer()
        s.stop()
        s.sink.cut()
        s.sink.close()
    return s


def report(s: Storm, seed: int) -> str:
    return (f"seed={seed} lines={s.expected()} kills={s.kills} paused-stalls={s.stalls_paused} "
            f"dups={s.duplicates()} bad={s.sink.bad[:3]} ops={s.log}")


@pytest.mark.parametrize("inotify", [True, False], ids=["inotify", "stat"])
def test_storm_exactly_once(tmp_path: Path, inotify: bool) -> None:
    s = run_storm(tmp_path, SEED, inotify, kills=0)
    msg = report(s, SEED)
    print(msg)
    assert not s.missing(), msg
    assert s.duplicates() == 0, msg
    assert not s.sink.bad, msg
    assert sum(s.expected().values()) >= 6000, msg  # the storm had something to lose
    assert s.stalls_paused == s.stalls, msg  # every stall really paused the input


def test_storm_kill9_at_least_once(tmp_path: Path) -> None:
    s = run_storm(tmp_path, SEED + 7, inotify=True, kills=3)
    msg = report(s, SEED + 7)
    print(msg)
    assert s.kills == 3
    assert not s.missing(), msg
    assert not s.sink.bad, msg
    # replays come from offsets not yet committed (DB written each second, 64k Mem_Buf_Limit per
    # input plus what sat in the output): bounded, not a re-read of whole files
    assert s.duplicates() <= 3 * 3000, msg
