"""Records a holding filter (``multiline``) releases later go through their input's chunk stream.

The multiline filter holds a stack trace's lines until the record is complete or its
``flush_ms`` runs out; the engine's flush tick then releases it. With ``storage.type
filesystem`` that released record must be written to the chunk files of the input it came
from before the held lines are acknowledged: otherwise the input's checkpoint moves past
lines whose only copy is in memory, and a kill -9 loses them. Also here: the shutdown order
that keeps acknowledgements out of closed inputs, and emits cancelled at shutdown.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from logfwd.engine.pipeline import Pipeline
from logfwd.plugins.filter_multiline import PLUGIN as MultilineFilter
from tests.storagekit import Daemon, count_numbers

from .enginekit import SINKS, ScriptedInput, Sink, config, run_until, section

TRACE = ["Traceback (most recent call last):", '  File "app.py", line 1, in <module>', "ValueError: boom"]
FS = {"storage.type": "filesystem"}


@pytest.fixture(autouse=True)
def _reset() -> None:
    SINKS.clear()
    Sink.down = False
    ScriptedInput.commits = []
    ScriptedInput.on_commit = None


def _multiline(**opts: Any) -> Any:
    return section(MultilineFilter, match="*", **{"multiline.parser": ["python"], "multiline.key_content": "log"},
                   **opts)


def test_released_by_the_flush_tick_is_stored_before_the_held_lines_are_acknowledged(tmp_path: Path) -> None:
    """While running (not at shutdown), the tick's release lands in the input's chunks, then the checkpoint moves."""
    ScriptedInput.batches = [("t", [{"log": "before"}]), ("t", [{"log": line} for line in TRACE])]
    Sink.down = True
    stored_at: dict[Any, int] = {}
    holder: list[Pipeline] = []

    def on_commit(pos: Any) -> None:
        storage = holder[0].storage
        assert storage is not None
        stored_at[pos] = storage.undelivered()[1] + sum(
            c.records for s in storage.streams.values() for c in s.open.values() if c.seq not in s.chunks)

    ScriptedInput.on_commit = on_commit
    cfg = config(section(ScriptedInput, **FS), _multiline(flush_ms=50), section(Sink, "out", match="*", retry_limit=None),
                 storage_path=str(tmp_path), grace=0.2)
    p = Pipeline(cfg)
    holder.append(p)

    async def main() -> None:
        with trio.fail_after(15):
            async with trio.open_nursery() as n:
                await n.start(p.run)
                while 1 not in ScriptedInput.commits:  # the held traceback's batch, released by the tick
                    await trio.sleep(0.01)
                p.shutdown()

    trio.run(main)
    assert stored_at[1] == 2, "the joined traceback was in a chunk when its lines were acknowledged"
    assert not SINKS["out"].got

    # restart with the output up: the chunks deliver both records, exactly once
    ScriptedInput.batches = []
    Sink.down = False
    cfg = config(section(ScriptedInput, **FS), _multiline(), section(Sink, "out", match="*"),
                 storage_path=str(tmp_path))
    run_until(cfg, lambda _p: len(SINKS["out"].got) >= 2)
    logs = [r["log"] for r in SINKS["out"].got]
    assert logs == ["before", "\n".join(TRACE)]


class ReplayableInput(ScriptedInput):
    name = "scripted_replayable"
    replayable = True  # waits (paused) at storage.total_limit_size instead of dropping


def test_an_emit_cancelled_at_shutdown_is_not_acknowledged(tmp_path: Path) -> None:
    """An input paused at storage.total_limit_size when SIGTERM comes must not checkpoint the batch it was
    writing: cancelled before the write, that batch is in no chunk (it was acknowledged anyway, and lost)."""
    ReplayableInput.batches = [("t", [{"n": 0}]), ("t", [{"n": 1}])]
    Sink.down = True
    cfg = config(section(ReplayableInput, **FS),
                 section(Sink, "out", match="*", retry_limit=None, **{"storage.total_limit_size": 1}),
                 storage_path=str(tmp_path), grace=0.2)
    run_until(cfg, lambda p: p.storage is not None and p.storage.undelivered()[1] >= 1
              and bool(ReplayableInput.commits))
    assert ReplayableInput.commits == [0], "batch 1 never reached a chunk: its position must not be committed"


class DBInput(ScriptedInput):
    """Writes checkpoints to a 'DB' that, like sqlite3, refuses any use after close()."""

    name = "scripted_db"
    written: list[Any] = []

    async def run(self, emitter: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.is_closed = False

        def write(pos: Any) -> None:
            if self.is_closed:
                raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
            DBInput.written.append(pos)

        DBInput.on_commit = write
        await super().run(emitter, task_status=task_status)

    async def close(self) -> None:
        self.is_closed = True


def test_an_ack_arriving_after_the_grace_period_never_reaches_a_closed_input(tmp_path: Path) -> None:
    """A flush still in flight when grace ends used to complete while the outputs were being stopped,
    after the inputs had closed: the acknowledgement wrote to a closed DB and the daemon exited 1."""
    DBInput.batches = [("t", [{"n": 0}])]
    DBInput.written = []
    cfg = config(section(DBInput), section(Sink, "slow", match="*", flush_delay=0.6, stop_delay=1.5),
                 storage_path=str(tmp_path), grace=0.2)
    run_until(cfg, lambda _p: True if DBInput.batches and SINKS["slow"] else False)
    assert DBInput.written == [], "not delivered within grace: not acknowledged, read again after a restart"


def test_acks_during_the_drain_are_written_before_the_input_closes(tmp_path: Path) -> None:
    DBInput.batches = [("t", [{"n": 0}]), ("t", [{"n": 1}])]
    DBInput.written = []
    cfg = config(section(DBInput), section(Sink, "slow", match="*", flush_delay=0.3),
                 storage_path=str(tmp_path), grace=5)
    run_until(cfg, lambda _p: bool(SINKS["slow"]))
    assert DBInput.written and DBInput.written[-1] == 1 and len(SINKS["slow"].got) == 2


# ------------------------------------------------------------ the daemon: tail + multiline + filesystem storage


def _traceback(n: int) -> str:
    return ("Traceback (most recent call last):\n"
            f'  File "app.py", line {n}, in <module> n={n:08d};\n'
            f"ValueError: boom n={n + 1:08d};\n")


def test_tail_multiline_kill9_with_the_output_down_loses_nothing(tmp_path: Path) -> None:
    """Lines held by the multiline filter and released by its timeout survive a kill -9 while the output is
    down: the released record is in a chunk before tail's DB offset passes its lines."""
    log = tmp_path / "app.log"
    blocker = tmp_path / "out"
    blocker.write_text("a file where the output wants a directory: every write fails, the output is down\n")
    conf = tmp_path / "logfwd.conf"
    conf.write_text(f"""[SERVICE]
    flush         0.2
    grace         2
    storage.path  {tmp_path}/storage
    storage.sync  normal

[INPUT]
    name            tail
    path            {log}
    db              {tmp_path}/tail.db
    read_from_head  on
    refresh_interval 0.2
    storage.type    filesystem

[FILTER]
    name                  multiline
    match                 *
    multiline.key_content log
    multiline.parser      python
    flush_ms              300

[OUTPUT]
    name    file
    match   *
    path    {blocker}
    file    out.txt
    format  plain
    mkdir   on
    retry_limit no_limits
""")
    expected = set()
    text = ""
    for i in range(0, 40, 4):
        text += f"single n={i:08d};\nsingle n={i + 1:08d};\n" + _traceback(i + 2)
        expected |= {i, i + 1, i + 2, i + 3}
    log.write_text(text)  # ends with a traceback: held until flush_ms, then released by the tick
    d = Daemon(conf, tmp_path / "daemon.log").start()

    def offset() -> int:
        try:
            with sqlite3.connect(tmp_path / "tail.db") as db:
                return max((r[0] for r in db.execute("SELECT offset FROM in_tail_files")), default=0)
        except sqlite3.Error:
            return 0

    d.wait(lambda: offset() == len(text.encode()), 30,
           "every line checkpointed (the last record only once it is in a chunk)")
    time.sleep(0.3)
    d.kill9()
    assert not (tmp_path / "out.txt").exists()
    blocker.unlink()  # the output comes back
    d.start()
    out = blocker / "out.txt"

    def numbers() -> set[int]:
        return set(count_numbers(out))

    def all_arrived() -> bool:
        missing = expected - numbers()
        assert not missing, f"missing {sorted(missing)}"  # "not yet", shown at the deadline
        return True

    d.wait(all_arrived, 60, "every record after the restart")
    assert d.stop() == 0
    records = out.read_text().splitlines()
    joined = [r for r in records if "Traceback" in r]
    assert len(set(joined)) == len(expected) // 4, "each traceback arrived as one joined record"
    assert all("ValueError: boom" in r for r in joined)
