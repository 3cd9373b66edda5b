#!/usr/bin/env python3
"""Benchmark the real ``logfwd`` daemon on the shared workloads, beside Fluent Bit's figures.

For each workload row: generate the file once (``../shared/bench/gen.py``, cached
in ``bench/data/`` and checked by md5), write a config (tail with
``Read_from_Head on``, no ``DB``, ``File_Cache_Advise off``, the matching parser,
output ``null`` or ``file``), start the daemon with its HTTP server on a free
port, poll ``/api/v1/metrics`` until the outputs have processed every line, stop
it with SIGTERM and read the child's resource usage from ``wait4``.

Columns: records/s (lines / seconds from process start to the poll that saw the
last record; the daemon's ``Flush`` interval applies, 1 s as in Fluent Bit's
runs), CPU seconds (user + sys of the whole process) per million records, and
peak RSS. Each figure is the median of ``--runs`` runs.

Usage (from the repository root or anywhere)::

    .venv/bin/python bench/run.py                    # 1,000,000 lines, every row, 3 runs
    .venv/bin/python bench/run.py --lines 20000 --runs 1 --only docker,apache
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GEN = REPO.parent / "shared" / "bench" / "gen.py"
DATA = HERE / "data"
OUT = HERE / "out"

# md5 of the 1,000,000-line files, from ../shared/BENCHMARKS.md
KNOWN_MD5 = {
    ("docker", 1_000_000): "6ba00a38010cadba5de9ffc655531c9f",
    ("apache", 1_000_000): "58f20caf3273e5835950826b69b7325d",
    ("syslog", 1_000_000): "e149810bc97b3b3b891e8a6b9c04668a",
}

# Fluent Bit v5.1.1, 1,000,000 lines, 2 vCPU (../shared/BENCHMARKS.md):
# (records/s, CPU s per 1M records, peak RSS MiB)
FLUENT_BIT = {
    ("docker", "null"): (509_684, 1.37, 171.5),
    ("docker", "file"): (473_037, 2.08, 155.8),
    ("multiline", "null"): (510_986, 1.81, 126.8),
    ("apache", "null"): (253_421, 2.95, 78.5),
    ("apache", "file"): (255_493, 4.70, 85.5),
    ("syslog", "null"): (339_559, 2.12, 96.3),
    ("syslog", "file"): (323_939, 3.25, 84.7),
}


@dataclass(frozen=True)
class Row:
    name: str  # row id used by --only
    kind: str  # gen.py workload
    label: str  # parser column
    tail_opts: tuple[tuple[str, str], ...]


ROWS = (
    Row("docker", "docker", "docker", (("Parser", "docker"),)),
    Row("multiline", "docker", "multiline.parser docker, cri", (("multiline.parser", "docker, cri"),)),
    Row("apache", "apache", "apache2", (("Parser", "apache2"),)),
    Row("syslog", "syslog", "syslog-rfc3164", (("Parser", "syslog-rfc3164"),)),
)


@dataclass
class Result:
    seconds: float
    cpu: float
    rss_mib: float
    records: int


def md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def workload(kind: str, lines: int) -> Path:
    """The workload file, generated once; regenerated if its md5 no longer matches."""
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"{kind}-{lines}.log"
    sidecar = path.with_suffix(".md5")
    want = KNOWN_MD5.get((kind, lines))
    if path.exists() and sidecar.exists():
        have = md5(path)
        if have == sidecar.read_text().strip() and (want is None or have == want):
            return path
    if not GEN.exists():
        sys.exit(f"workload generator not found: {GEN} (shared/ must sit beside the repository)")
    print(f"generating {path.name} ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, str(GEN), kind, str(lines), str(path)], check=True)
    have = md5(path)
    if want is not None and have != want:
        sys.exit(f"{path}: md5 {have} differs from the published {want}; the generator changed?")
    sidecar.write_text(have + "\n")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(row: Row, data: Path, output: str, port: int, flush: float, workdir: Path) -> Path:
    tail = "\n".join(f"    {k:<18} {v}" for k, v in row.tail_opts)
    out_extra = ""
    if output == "file":
        out_extra = f"    path               {workdir}\n    file               out.txt\n"
    conf = workdir / "logfwd.conf"
    conf.write_text(
        f"""[SERVICE]
    flush              {flush}
    log_level          warn
    http_server        on
    http_listen        127.0.0.1
    http_port          {port}

[INPUT]
    name               tail
    path               {data}
    read_from_head     on
    file_cache_advise  off
{tail}

[OUTPUT]
    name               {output}
    match              *
{out_extra}"""
    )
    return conf


def processed(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/metrics", timeout=2) as r:
            doc = json.loads(r.read())
    except (OSError, ValueError):
        return None
    return int(sum(v.get("proc_records", 0) for v in doc.get("output", {}).values()))


def logfwd_argv(conf: Path) -> list[str]:
    exe = Path(sys.executable).parent / "logfwd"
    if exe.exists():
        return [str(exe), "-c", str(conf)]
    return [sys.executable, "-m", "logfwd", "-c", str(conf)]


def run_once(row: Row, data: Path, lines: int, output: str, flush: float, timeout: float) -> Result:
    workdir = OUT / f"{row.name}-{output}"
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "out.txt").unlink(missing_ok=True)
    port = free_port()
    conf = write_config(row, data, output, port, flush, workdir)
    log = open(workdir / "daemon.log", "wb")
    t0 = time.monotonic()
    proc = subprocess.Popen(logfwd_argv(conf), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    count = 0
    end = None
    try:
        while time.monotonic() - t0 < timeout:
            if proc.poll() is not None:
                break
            n = processed(port)
            if n is not None:
                count = n
                if n >= lines:
                    end = time.monotonic()
                    break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.close()
    if end is None:
        tail = (workdir / "daemon.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{row.name}/{output}: {count} of {lines} records processed "
                           f"(exit {proc.returncode}); daemon log:\n{tail}")
    return Result(end - t0, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024.0, count)


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000, help="lines per workload (default 1,000,000)")
    ap.add_argument("--only", default="", help="comma list of rows: " + ",".join(r.name for r in ROWS))
    ap.add_argument("--runs", type=int, default=3, help="runs per row; the median is shown (default 3)")
    ap.add_argument("--output", default="null", help="comma list of outputs: null, file (default null)")
    ap.add_argument("--flush", type=float, default=1.0, help="daemon Flush seconds (Fluent Bit's runs: 1)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per run before giving up")
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = ap.parse_args(argv)

    only = {x.strip() for x in args.only.split(",") if x.strip()}
    unknown = only - {r.name for r in ROWS}
    if unknown:
        ap.error(f"unknown rows {sorted(unknown)}; choose from {[r.name for r in ROWS]}")
    outputs = [o.strip() for o in args.output.split(",") if o.strip()]
    rows = [r for r in ROWS if not only or r.name in only]

    table = []
    for row in rows:
        data = workload(row.kind, args.lines)
        for output in outputs:
            if row.name == "multiline" and output != "null":
                continue
            results = []
            for i in range(args.runs):
                print(f"{row.name}/{output}: run {i + 1}/{args.runs} ...", file=sys.stderr, flush=True)
                results.append(run_once(row, data, args.lines, output, args.flush, args.timeout))
            secs = statistics.median(r.seconds for r in results)
            cpu = statistics.median(r.cpu for r in results)
            rss = statistics.median(r.rss_mib for r in results)
            table.append({
                "row": row.name, "workload": row.kind, "parser": row.label, "output": output,
                "lines": args.lines, "records_per_s": args.lines / secs,
                "cpu_s_per_1m": cpu * 1_000_000 / args.lines, "peak_rss_mib": rss,
                "fluent_bit": FLUENT_BIT.get((row.name, output)),
            })

    hdr = ("workload", "parser", "output", "records/s", "FB rec/s", "CPU s/1M", "FB CPU", "RSS MiB", "FB RSS")
    lines_out = [hdr]
    for t in table:
        fb = t["fluent_bit"] or (None, None, None)
        lines_out.append((
            t["workload"], t["parser"], t["output"], fmt_rate(t["records_per_s"]),
            fmt_rate(fb[0]) if fb[0] else "-", f"{t['cpu_s_per_1m']:.2f}", f"{fb[1]:.2f}" if fb[1] else "-",
            f"{t['peak_rss_mib']:.1f}", f"{fb[2]:.1f}" if fb[2] else "-",
        ))
    widths = [max(len(str(r[i])) for r in lines_out) for i in range(len(hdr))]
    print(f"\nlogfwd vs Fluent Bit v5.1.1 ({args.lines:,} lines, median of {args.runs}, Flush {args.flush:g})")
    for k, r in enumerate(lines_out):
        print("  ".join(str(c).ljust(w) if j < 3 else str(c).rjust(w) for j, (c, w) in enumerate(zip(r, widths, strict=True))))
        if k == 0:
            print("  ".join("-" * w for w in widths))
    if args.lines != 1_000_000:
        print("(Fluent Bit figures are for 1,000,000 lines; fixed start-up and Flush costs weigh more on small runs)")
    if args.json:
        print(json.dumps(table, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
