#!/usr/bin/env python3
"""CPU seconds per million lines of the hot-path kernels (framing, parsers).

Usage: bench/kernels.py [--lines N] [--dir DIR]
Workloads come from bench/gen.py (docker, apache, syslog, rfc5424)
and are generated into DIR when missing. Each figure is process CPU time for
framing the file in 256 KiB chunks and parsing the framed lines in batches, as
the tail input does, scaled to one million lines.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from logfwd._fastparse import LineFramer
from logfwd.config import default_parsers

GEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen.py")
CHUNK = 256 * 1024


def workload(kind: str, n: int, d: str) -> str:
    path = os.path.join(d, f"{kind}-{n}.log")
    if not os.path.exists(path):
        subprocess.run([sys.executable, GEN, kind, str(n), path], check=True)
    return path


def frame(path: str) -> list[list[bytes]]:
    fr = LineFramer(max_line_size=1 << 20)
    batches = []
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            lines, _ = fr.feed(chunk)
            batches.append(lines)
    return batches


def cpu(fn) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    t = time.process_time()
    r = fn()
    return time.process_time() - t, r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--dir", default="/tmp/logfwd-bench")
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    reg = default_parsers()
    scale = 1_000_000 / a.lines
    for kind, parser in (("docker", "docker"), ("apache", "apache"), ("syslog", "syslog-rfc3164"),
                         ("rfc5424", "syslog-rfc5424")):
        path = workload(kind, a.lines, a.dir)
        t_frame, batches = cpu(lambda p=path: frame(p))  # noqa: B023
        p = reg.get(parser)
        now = time.time_ns()

        def parse(p=p, batches=batches, now=now):  # type: ignore[no-untyped-def]
            fails = 0
            for b in batches:
                fails += p.parse_lines(b, now)[2]
            return fails

        t_parse, fails = cpu(parse)
        print(f"{kind:8s} parser={parser:16s} framing {t_frame * scale:5.2f}  parse {t_parse * scale:5.2f}  "
              f"total {(t_frame + t_parse) * scale:5.2f} CPU s/1M lines  (failed {fails})", flush=True)


if __name__ == "__main__":
    main()
