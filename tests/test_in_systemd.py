"""The systemd input against real journal files (systemd-journal-remote) and a real systemd-journald.

The plugin is driven directly with a real ``Emitter`` whose dispatch collects
batches; acknowledgements are withheld or given by the test to check that the
cursor in the DB follows only what was delivered.
"""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from logfwd.plugin import ConfigValueError, StartError, find_plugin
from logfwd.plugins.in_systemd.plugin import SystemdInput
from tests.pluginkit import Collector, make_plugin

T0 = 1_700_000_000_000_000  # microseconds


def make_input(**opts: Any) -> SystemdInput:
    return make_plugin(SystemdInput, parsers=None, **opts)


def drive(p: SystemdInput, until: Callable[[Collector], bool], col: Collector | None = None, tag: str = "journal",
          before_close: Callable[[Collector], None] | None = None, timeout: float = 15,
          during: Callable[[], Any] | None = None) -> Collector:
    col = col or Collector()

    async def main() -> None:
        emitter = col.emitter(p, tag=tag)
        async with trio.open_nursery() as n:
            await n.start(p.run, emitter)
            if during is not None:
                await trio.to_thread.run_sync(during)
            with trio.move_on_after(timeout):
                while not until(col):
                    await trio.sleep(0.05)
            if before_close is not None:
                before_close(col)
            await trio.sleep(0.1)  # let the DB writer catch up
            n.cancel_scope.cancel()
        await p.close()

    trio.run(main)
    return col


def entries(n: int, **extra: str) -> list[tuple[dict[str, str], int]]:
    return [({"MESSAGE": f"msg {i}", "SYSLOG_IDENTIFIER": "gen", **extra}, T0 + i * 1000) for i in range(n)]


# ---------------------------------------------------------- journal files


def test_fields_timestamps_binary_multiline(journal_remote_dir: Callable[..., Path]) -> None:
    binary = b"\x00\xff\xfe raw \x80"
    d = journal_remote_dir([
        ({"MESSAGE": "line one\nline two\n\tindented", "SYSLOG_IDENTIFIER": "ml", "_PID": "42",
          "_SYSTEMD_UNIT": "nginx.service"}, T0 + 123),
        ({"MESSAGE": "with blob", "BLOB": binary, "SYSLOG_IDENTIFIER": "bin"}, T0 + 456),
    ])
    p = make_input(Path=d)
    col = drive(p, lambda c: len(c.records) >= 2)
    r0, r1 = col.records
    assert r0["MESSAGE"] == "line one\nline two\n\tindented"
    assert r0["_PID"] == "42" and r0["_SYSTEMD_UNIT"] == "nginx.service" and r0["_BOOT_ID"]
    assert "__CURSOR" not in r0 and "__REALTIME_TIMESTAMP" not in r0
    assert col.times == [(T0 + 123) * 1000, (T0 + 456) * 1000]
    assert base64.b64decode(r1["BLOB"]) == binary

    p2 = make_input(Path=d / "x.journal", Binary_Encoding="latin1", Strip_Underscores="on", Lowercase="on")
    col2 = drive(p2, lambda c: len(c.records) >= 2)
    assert col2.records[1]["blob"].encode("latin-1") == binary
    assert col2.records[0]["pid"] == "42" and col2.records[0]["systemd_unit"] == "nginx.service"
    assert "message" in col2.records[0] and "_pid" not in col2.records[0]


def test_filters_and_or(journal_remote_dir: Callable[..., Path]) -> None:
    d = journal_remote_dir([
        ({"MESSAGE": "a", "_SYSTEMD_UNIT": "a.service", "PRIORITY": "3"}, T0 + 1),
        ({"MESSAGE": "b", "_SYSTEMD_UNIT": "b.service", "PRIORITY": "6"}, T0 + 2),
        ({"MESSAGE": "c", "_SYSTEMD_UNIT": "c.service", "PRIORITY": "3"}, T0 + 3),
        ({"MESSAGE": "d", "_SYSTEMD_UNIT": "a.service", "PRIORITY": "6"}, T0 + 4),
    ])

    def messages(**opts: Any) -> list[str]:
        col = drive(make_input(Path=d, **opts), lambda c: False, timeout=0.8)
        return [r["MESSAGE"] for r in col.records]

    assert messages(Systemd_Filter=["_SYSTEMD_UNIT=a.service", "_SYSTEMD_UNIT=b.service"]) == ["a", "b", "d"]
    assert messages(Systemd_Filter=["_SYSTEMD_UNIT=a.service", "PRIORITY=3"],
                    Systemd_Filter_Type="Or") == ["a", "c", "d"]
    assert messages(Systemd_Filter=["_SYSTEMD_UNIT=a.service", "PRIORITY=3"], Systemd_Filter_Type="And") == ["a"]
    with pytest.raises(ConfigValueError):
        make_input(Path=d, Systemd_Filter=["no equals sign"])


def test_tag_expansion(journal_remote_dir: Callable[..., Path]) -> None:
    d = journal_remote_dir([
        ({"MESSAGE": "1", "_SYSTEMD_UNIT": "nginx.service"}, T0 + 1),
        ({"MESSAGE": "2", "_SYSTEMD_UNIT": "nginx.service"}, T0 + 2),
        ({"MESSAGE": "3", "_SYSTEMD_UNIT": "sshd.service"}, T0 + 3),
        ({"MESSAGE": "4"}, T0 + 4),
    ])
    col = drive(make_input(Path=d), lambda c: len(c.records) >= 4, tag="host.*")
    assert [(b.tag, [r["MESSAGE"] for r in b.records]) for b in col.batches] == [
        ("host.nginx.service", ["1", "2"]), ("host.sshd.service", ["3"]), ("host.unknown", ["4"])]


def _db_cursor(db: Path) -> str:
    with sqlite3.connect(db) as c:
        return c.execute("SELECT cursor FROM in_systemd_cursor").fetchone()[0]


def test_cursor_resume_no_gap_no_repeat(journal_remote_dir: Callable[..., Path], tmp_path: Path) -> None:
    d = journal_remote_dir(entries(10))
    db = tmp_path / "cursor.db"

    def ack_first_two(col: Collector) -> None:
        for b in col.batches[:2]:
            b.ack.done()  # delivered; batches 3.. stay unacknowledged (in flight at the "crash")

    p1 = make_input(Path=d, DB=db, Max_Entries=3)
    col1 = drive(p1, lambda c: len(c.records) >= 10, col=Collector(hold=True), before_close=ack_first_two)
    assert [len(b) for b in col1.batches] == [3, 3, 3, 1]
    delivered = [r["MESSAGE"] for b in col1.batches[:2] for r in b.records]
    assert delivered == [f"msg {i}" for i in range(6)]
    assert _db_cursor(db)  # a cursor was stored

    journal_remote_dir(entries(3, SYSLOG_IDENTIFIER="later"))  # more arrived while we were down
    p2 = make_input(Path=d, DB=db, Max_Entries=3)
    col2 = drive(p2, lambda c: len(c.records) >= 7)
    again = [r["MESSAGE"] for r in col2.records]
    assert delivered + again == [f"msg {i}" for i in range(10)] + [f"msg {i}" for i in range(3)]
    assert p2.metrics.get("invalid_cursor", 0) == 0

    # Everything acknowledged: a third run reads nothing.
    p3 = make_input(Path=d, DB=db)
    col3 = drive(p3, lambda c: False, timeout=0.8)
    assert col3.records == []


def test_invalid_cursor_restarts_at_oldest(journal_remote_dir: Callable[..., Path], tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    d = journal_remote_dir(entries(4))
    # A well-formed cursor of an entry that is not in this journal (its file was vacuumed).
    gone = "s=0000aaaabbbbccccddddeeeeffff0000;i=99;b=0123456789abcdef0123456789abcdef;m=1;t=5fb3;x=1234"
    for bad in (gone, "not a cursor at all"):
        db = tmp_path / f"c{len(bad)}.db"
        with sqlite3.connect(db) as c:
            c.execute("CREATE TABLE in_systemd_cursor (cursor TEXT NOT NULL, updated INTEGER)")
            c.execute("INSERT INTO in_systemd_cursor VALUES (?, 0)", (bad,))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="test.systemd"):
            p = make_input(Path=d, DB=db)
            col = drive(p, lambda c: len(c.records) >= 4)
        assert [r["MESSAGE"] for r in col.records] == [f"msg {i}" for i in range(4)]
        assert any("no longer in the journal" in r.getMessage() for r in caplog.records)
        assert p.metrics["invalid_cursor"] == 1


def test_journald_alias_resolves() -> None:
    assert find_plugin("input", "journald") is SystemdInput


# ---------------------------------------------------------- live journald


def test_live_journald_tail_logger_native_systemd_cat(journald: Any) -> None:
    journald.logger("-t", "before", "written before we started")
    journald.wait_entries("SYSLOG_IDENTIFIER=before", 1)
    binary = b"bin\x00\xff"

    def send() -> None:
        journald.logger("-t", "lg", "--id=777", "from logger")
        journald.send_native({"MESSAGE": "native\nsecond line", "SYSLOG_IDENTIFIER": "nat", "BLOB": binary,
                              "PRIORITY": "4"})
        journald.systemd_cat("cat", "from systemd-cat\n")

    p = make_input(Path=journald.journal_dir, Read_From_Tail="on",
                   Systemd_Filter=["SYSLOG_IDENTIFIER=lg", "SYSLOG_IDENTIFIER=nat", "SYSLOG_IDENTIFIER=cat",
                                   "SYSLOG_IDENTIFIER=before"])
    col = drive(p, lambda c: len(c.records) >= 3, during=send)
    by_id = {r["SYSLOG_IDENTIFIER"]: (r, t) for r, t in zip(col.records, col.times, strict=True)}
    assert set(by_id) == {"lg", "nat", "cat"}  # "before" was skipped: Read_From_Tail
    assert by_id["lg"][0]["MESSAGE"] == "from logger" and by_id["lg"][0]["SYSLOG_PID"] == "777"
    assert by_id["nat"][0]["MESSAGE"] == "native\nsecond line" and by_id["nat"][0]["PRIORITY"] == "4"
    assert base64.b64decode(by_id["nat"][0]["BLOB"]) == binary
    assert by_id["cat"][0]["MESSAGE"] == "from systemd-cat" and by_id["cat"][0]["_TRANSPORT"] == "stdout"
    assert by_id["lg"][0]["_TRANSPORT"] == "syslog" and by_id["nat"][0]["_TRANSPORT"] == "journal"
    # Times are the journal's own __REALTIME_TIMESTAMP, to the microsecond.
    for line in journald.journalctl("-o", "json", "SYSLOG_IDENTIFIER=lg", "SYSLOG_IDENTIFIER=nat").splitlines():
        e = json.loads(line)
        assert by_id[e["SYSLOG_IDENTIFIER"]][1] == int(e["__REALTIME_TIMESTAMP"]) * 1000


def test_db_in_missing_directory_is_a_start_error(tmp_path: Path) -> None:
    p = make_input(Path=tmp_path, DB=tmp_path / "no" / "cursor.db")
    with pytest.raises(StartError) as e:
        trio.run(p.run, Collector().emitter(p, tag="journal"))
    assert str(e.value) == f"cannot open DB {tmp_path}/no/cursor.db: directory {tmp_path}/no does not exist"
