"""Storage faults through the real daemon: damaged chunk files at start, a full disk, a read-only
path, a backend away while records keep coming, several outputs at different speeds, SIGTERM.

The full-disk and read-only cases mount a small tmpfs (or a read-only bind) in a private mount
namespace (``unshare -m``; the tests run as root) around the daemon only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from logfwd.engine.storage.format import ChunkMeta, encode_frame, encode_header, encode_seal, pack_batch
from tests.backends._proc import free_port
from tests.storagekit import LOGFWD, Daemon, FileWriter, SyslogSender, count_numbers, numbers_arrived, scale

NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                                reason="needs root and unshare(1) to mount a tmpfs in a private namespace")


def _get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def _service(tmp: Path, port: int, store: Path, extra: str = "") -> str:
    return f"""[SERVICE]
    flush           0.2
    grace           2
    http_server     on
    http_listen     127.0.0.1
    http_port       {port}
    storage.path    {store}
    storage.metrics on
    scheduler.base  1
    scheduler.cap   1
{extra}
"""


def _file_output(out: Path, name: str = "", match: str = "*", mkdir: bool = True) -> str:
    alias = f"    alias {name}\n" if name else ""
    return f"""[OUTPUT]
    name        file
    match       {match}
    path        {out}
    file        out.txt
    format      plain
    mkdir       {"on" if mkdir else "off"}
    retry_limit no_limits
{alias}"""


def _records(first: int, n: int) -> tuple[list[int], list[dict], None]:
    return [time.time_ns()] * n, [{"log": f"n={i:08d};"} for i in range(first, first + n)], None


def _write_chunk(path: Path, outputs: list[str], frames: list[tuple[list[int], list[dict], None]],
                 sealed: bool = True, tail: bytes = b"") -> bytes:
    data = [encode_header(ChunkMeta("t", "syslog.0", outputs, 1))]
    for times, recs, keys in frames:
        data.append(encode_frame(pack_batch(times, recs, keys), len(recs)))
    if sealed:
        data.append(encode_seal(len(frames), sum(len(f[1]) for f in frames)))
    blob = b"".join(data) + tail
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    return blob


def _syslog_input(port: int, extra: str = "") -> str:
    return f"""[INPUT]
    name         syslog
    mode         tcp
    listen       127.0.0.1
    port         {port}
    parser       syslog-rfc5424
    storage.type filesystem
{extra}"""


@pytest.mark.parametrize("delete", [False, True])
def test_damaged_chunks_at_start(tmp_path: Path, delete: bool) -> None:
    store, out = tmp_path / "storage", tmp_path / "out"
    d = store / "syslog.0"
    _write_chunk(d / "0000000000000001.chunk", ["file.0"], [_records(0, 10)])
    torn = _write_chunk(d / "0000000000000002.chunk", ["file.0"], [_records(10, 5), _records(15, 5)], sealed=False,
                        tail=encode_frame(pack_batch(*_records(90, 5)), 5)[:-7])
    bad = bytearray(_write_chunk(d / "0000000000000003.chunk", ["file.0"], [_records(50, 5), _records(55, 5)]))
    bad[len(bad) // 3] ^= 0x04
    (d / "0000000000000003.chunk").write_bytes(bytes(bad))
    (d / "0000000000000004.chunk").write_bytes(torn[:11])  # header cut short
    _write_chunk(d / "0000000000000005.chunk", ["file.0", "gone.0"], [_records(100, 5)])
    (d / "0000000000000005.ack").write_text("file.0\n")  # delivered to file.0 before the restart
    port = free_port()
    conf = tmp_path / "c.conf"
    extra = "    storage.delete_irrecoverable_chunks on\n" if delete else ""
    conf.write_text(_service(tmp_path, port, store, extra) + _syslog_input(free_port()) + _file_output(out))
    dm = Daemon(conf, tmp_path / "daemon.log").start()
    try:
        dm.wait(numbers_arrived(out / "out.txt", 20), 30, "20 records delivered")
        doc = _get(port, "/api/v1/storage")
    finally:
        dm.stop()
    got = count_numbers(out / "out.txt")
    assert sorted(got) == list(range(20)), "the good chunk and the torn one's whole frames; nothing else"
    events = doc["storage_layer"]["events"]
    assert events["corrupt_chunks"] == 2 and events["torn_chunks"] == 1
    log = dm.text()
    assert "torn tail of" in log and "cut at the last whole frame" in log
    assert "is unreadable" in log  # the second such line is held back by the log rate limit
    assert "no longer configured" in log
    corrupt = sorted(p.name for p in (store / "corrupt").glob("*.chunk")) if (store / "corrupt").exists() else []
    assert corrupt == ([] if delete else ["syslog.0-0000000000000003.chunk", "syslog.0-0000000000000004.chunk"])
    assert not list(d.glob("*.chunk")), "delivered chunks are deleted"


def test_fast_output_does_not_receive_again_what_it_delivered(tmp_path: Path) -> None:
    """Two outputs; one cannot write. After a restart only the slow one gets the chunks."""
    store, fast, slow = tmp_path / "storage", tmp_path / "fast", tmp_path / "slow"
    port, sport = free_port(), free_port()
    conf = tmp_path / "c.conf"
    conf.write_text(_service(tmp_path, port, store) + _syslog_input(sport) + _file_output(fast, "fast")
                    + _file_output(slow, "slow", mkdir=False))
    dm = Daemon(conf, tmp_path / "daemon.log").start()
    sender = SyslogSender(sport, 3000, 3000)
    sender.start()
    sender.join(30)
    dm.wait(numbers_arrived(fast / "out.txt", 3000), 30, "3000 records at the fast output")
    assert dm.stop() == 0
    assert list((store / "syslog.0").glob("*.ack")), "fast's deliveries are recorded beside the chunks"
    slow.mkdir()
    dm = Daemon(conf, tmp_path / "daemon.log").start()
    try:
        dm.wait(numbers_arrived(slow / "out.txt", 3000), 30, "3000 records at the slow output")
    finally:
        dm.stop()
    assert sum(count_numbers(fast / "out.txt").values()) == 3000, "fast never re-received a chunk"
    assert sorted(count_numbers(slow / "out.txt")) == list(range(3000))
    assert not list((store / "syslog.0").glob("*.chunk"))


def test_sigterm_keeps_undelivered_on_disk_and_delivers_after_restart(tmp_path: Path) -> None:
    store, out = tmp_path / "storage", tmp_path / "out"
    port, sport = free_port(), free_port()
    conf = tmp_path / "c.conf"
    conf.write_text(_service(tmp_path, port, store) + _syslog_input(sport) + _file_output(out, mkdir=False))
    dm = Daemon(conf, tmp_path / "daemon.log").start()
    sender = SyslogSender(sport, 2000, 4000)
    sender.start()
    sender.join(30)
    dm.wait(lambda: _get(port, "/api/v1/storage")["input_chunks"]["syslog.0"]["chunks"]["total"] > 0, 10,
            "a chunk on disk")
    time.sleep(0.5)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/metrics/prometheus", timeout=5) as r:
        prom = r.read().decode()
    assert 'logfwd_input_storage_chunks{name="syslog.0"}' in prom
    assert 'logfwd_input_storage_records{name="syslog.0"} 2000.0' in prom
    assert dm.stop() == 0
    assert "stay in" in dm.text() and "delivered after the next start" in dm.text()
    out.mkdir()
    dm = Daemon(conf, tmp_path / "daemon.log").start()
    try:
        dm.wait(numbers_arrived(out / "out.txt", 2000), 30, "2000 records after the restart")
    finally:
        dm.stop()
    assert "backlog of" in dm.text()


def test_memory_mode_shutdown_says_which_inputs_lose_records(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sport = free_port()
    log = tmp_path / "app.log"
    log.write_text("".join(f"record n={i:08d};\n" for i in range(500)))
    conf = tmp_path / "c.conf"
    conf.write_text(f"""[SERVICE]
    flush 0.2
    grace 1
[INPUT]
    name   syslog
    mode   tcp
    listen 127.0.0.1
    port   {sport}
[INPUT]
    name tail
    path {log}
    read_from_head on
{_file_output(out, mkdir=False)}""")
    dm = Daemon(conf, tmp_path / "daemon.log").start()
    sender = SyslogSender(sport, 300, 3000)
    sender.start()
    sender.join(30)
    time.sleep(1.0)
    dm.stop()
    text = dm.text()
    assert "input syslog.0: 300 record(s) undelivered and lost" in text, text
    assert "storage.type filesystem" in text
    assert "input tail.0: 500 record(s) undelivered; not acknowledged, they will be read again" in text


def _unshare_daemon(tmp: Path, conf: Path, mount: str) -> Daemon:
    """The daemon in a private mount namespace, after ``mount`` (a shell command) ran there."""
    d = Daemon(conf, tmp / "daemon.log")
    script = tmp / "run.sh"
    script.write_text(f"set -e\n{mount}\nexec {' '.join(LOGFWD)} -c {conf}\n")
    with open(d.log, "ab") as fh:
        d.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", str(script)],
                                  stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return d


@NEEDS_ROOT
def test_readonly_storage_path_at_start_exits_1_with_one_line(tmp_path: Path) -> None:
    store = tmp_path / "storage"
    store.mkdir()
    conf = tmp_path / "c.conf"
    conf.write_text(_service(tmp_path, free_port(), store) + _syslog_input(free_port()) + _file_output(tmp_path))
    d = _unshare_daemon(tmp_path, conf, f"mount --bind {store} {store}\nmount -o remount,bind,ro {store}")
    assert d.proc is not None and d.proc.wait(30) == 1
    errors = [ln for ln in d.text().splitlines() if "error" in ln]
    assert len(errors) == 1 and f"storage.path {store}: not writable" in errors[0], d.text()


@NEEDS_ROOT
@pytest.mark.parametrize("source", ["tail", "syslog"])
def test_full_disk_pauses_or_keeps_in_memory_and_loses_nothing(tmp_path: Path, source: str) -> None:
    """A 2 MB storage.path fills while the output is away; after it returns everything arrives."""
    store, out = tmp_path / "storage", tmp_path / "out"
    store.mkdir()
    n = 40_000  # ~3 MB of chunks: more than the tmpfs holds
    port, sport = free_port(), free_port()
    log = tmp_path / "app.log"
    log.touch()
    if source == "tail":
        inp = f"""[INPUT]
    name tail
    path {log}
    db   {tmp_path}/tail.db
    read_from_head on
    refresh_interval 0.2
    storage.type filesystem
"""
    else:
        inp = _syslog_input(sport, "    mem_buf_limit 4M\n")
    conf = tmp_path / "c.conf"
    conf.write_text(_service(tmp_path, port, store) + inp + _file_output(out, mkdir=False))
    d = _unshare_daemon(tmp_path, conf, f"mount -t tmpfs -o size=2m tmpfs {store}")
    feeder = FileWriter(log, n, 20_000) if source == "tail" else SyslogSender(sport, n, 20_000)
    time.sleep(1.0)
    feeder.start()
    try:
        d.wait(lambda: "disk full" in d.text(), 60, "the disk full line")
        metrics = _get(port, "/api/v1/metrics")["input"]
        name = f"{source}.0"
        assert metrics[name]["storage_errors"] > 0
        want = "input paused" if source == "tail" else "records kept in memory"
        assert want in d.text()
        out.mkdir()  # the output comes back
        feeder.join(120)
        d.wait(numbers_arrived(out / "out.txt", n), 120, f"all {n} records")
    finally:
        d.stop()
    assert sorted(count_numbers(out / "out.txt")) == list(range(n))
    assert "Traceback" not in d.text()


def _storage(port: int) -> dict:
    return _get(port, "/api/v1/storage")


def test_backend_down_memory_stays_bounded_and_everything_arrives(tmp_path: Path) -> None:
    """Records keep coming while the output cannot write: the disk backlog grows, RSS does not."""
    n = scale(200_000)
    store, out = tmp_path / "storage", tmp_path / "out"
    port = free_port()
    log = tmp_path / "app.log"
    log.touch()
    conf = tmp_path / "c.conf"
    conf.write_text(_service(tmp_path, port, store, "    storage.max_chunks_up 8\n    storage.backlog.mem_limit 4M\n")
                    + f"""[INPUT]
    name tail
    path {log}
    db   {tmp_path}/tail.db
    read_from_head on
    refresh_interval 0.2
    mem_buf_limit 8M
    storage.type filesystem
""" + _file_output(out, mkdir=False))
    d = Daemon(conf, tmp_path / "daemon.log").start()
    writer = FileWriter(log, n, 50_000)
    try:
        writer.start()
        samples = []
        while writer.is_alive() or not samples:
            samples.append(d.rss())
            time.sleep(0.2)
        d.wait(lambda: _storage(port)["input_chunks"]["tail.0"]["records"] >= n, 120, f"all {n} records on disk")
        doc = _storage(port)
        chunks = doc["input_chunks"]["tail.0"]["chunks"]
        outage_peak = max(samples)
        out.mkdir()  # the backend returns
        arrived = numbers_arrived(out / "out.txt", n)

        def drained() -> bool:
            d.rss()  # sampled through the drain as well: the peak RSS asserted below covers it
            return arrived()

        d.wait(drained, 300, f"all {n} records delivered")
        after = [d.rss() for _ in range(3)]
    finally:
        d.stop()
    print(f"\nbackend down: records={n} chunks on disk={chunks['total']} (up {chunks['up']}, down {chunks['down']}) "
          f"disk={doc['input_chunks']['tail.0']['fs_size'] / 2**20:.1f} MiB peak RSS during outage="
          f"{outage_peak / 2**20:.1f} MiB, peak overall={d.peak_rss / 2**20:.1f} MiB, after drain="
          f"{after[-1] / 2**20:.1f} MiB")
    assert sorted(count_numbers(out / "out.txt")) == list(range(n))
    assert chunks["up"] <= 8 < chunks["total"]
    # 8 chunks up (~2 MB of JSON each, several times that as Python objects), 8M Mem_Buf_Limit,
    # 4M backlog, the interpreter (~60 MiB): well under 250 MiB however long the outage
    assert d.peak_rss < 250 * 2**20


def test_total_limit_size_drops_oldest_for_push_inputs_and_pauses_tail(tmp_path: Path) -> None:
    store, out = tmp_path / "storage", tmp_path / "out"
    port, sport = free_port(), free_port()
    log = tmp_path / "app.log"
    log.touch()
    conf = tmp_path / "c.conf"
    limit_out = _file_output(out, mkdir=False).replace("retry_limit no_limits",
                                                       "retry_limit no_limits\n    storage.total_limit_size 1M")
    conf.write_text(_service(tmp_path, port, store) + _syslog_input(sport) + f"""[INPUT]
    name tail
    path {log}
    db   {tmp_path}/tail.db
    read_from_head on
    refresh_interval 0.2
    storage.type filesystem
""" + limit_out)
    d = Daemon(conf, tmp_path / "daemon.log").start()
    sender = SyslogSender(sport, 40_000, 20_000)
    writer = FileWriter(log, 40_000, 20_000)
    try:
        sender.start()
        writer.start()
        sender.join(60)
        writer.join(60)
        d.wait(lambda: "reached storage.total_limit_size" in d.text() and "paused" in d.text(), 30,
               "the total_limit_size and paused lines")
        metrics = _get(port, "/api/v1/metrics")["output"]["file.0"]
        assert metrics["storage_dropped_chunks"] > 0 and metrics["dropped_records"] > 0
        out.mkdir()
        # tail resumes and loses nothing; syslog lost exactly what was dropped
        d.wait(lambda: sum(1 for k in count_numbers(out / "out.txt") if k < 40_000) > 0, 60, "records delivered")
        d.wait(lambda: _storage(port)["storage_layer"]["chunks"]["total_chunks"] == 0
               and writer.written == 40_000 and not _get(port, "/api/v1/metrics")["input"]["tail.0"].get("paused"),
               120, "no chunk left, everything written, tail not paused")
    finally:
        d.stop()
    text = (out / "out.txt").read_text()
    tail_numbers = {int(x) for x in __import__("re").findall(r'record n=(\d{8});', text)}
    assert tail_numbers == set(range(40_000)), "tail paused at the limit instead of losing anything"
