"""bench/run.py itself: a small run of the real daemon prints its row and its memory curve.

The benchmark is how every performance claim in the closing notes is measured, so it must
keep running on a clean clone; this runs it at a size where only behaviour is checked
(records counted, figures present, the RSS curve reaching the last record), never speed.
Fluent Bit is left out (``--fluent-bit off``): its side-by-side runs are the bench's own
business, and the published figures give the ratio column something to divide by.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "run.py"
LINES = 3000


def run_bench(tmp_path: Path, output: str) -> tuple[list[dict], str]:
    argv = [sys.executable, str(BENCH), "--only", "docker", "--output", output, "--lines", str(LINES),
            "--runs", "1", "--fluent-bit", "off", "--rss-curve", "--json", "--workdir", str(tmp_path)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    start = r.stdout.index("\n[") + 1  # --json prints the table as JSON after the text table
    return json.loads(r.stdout[start:]), r.stdout


@pytest.mark.parametrize("output", ["null", "influxdb"])
def test_bench_row_and_rss_curve(tmp_path: Path, output: str) -> None:
    table, text = run_bench(tmp_path, output)
    (row,) = table
    assert (row["row"], row["output"], row["lines"]) == ("docker", output, LINES)
    assert row["records_per_s"] > 0 and row["cpu_s_per_1m"] > 0 and row["peak_rss_mib"] > 0
    assert row["fluent_bit_source"] == "published"
    if output == "null":  # a published Fluent Bit figure exists for this row only
        assert row["cpu_ratio"] == pytest.approx(row["cpu_s_per_1m"] / row["fluent_bit"]["cpu_s_per_1m"])
    curve = text.split(f"RSS over the run: logfwd, docker/{output}, run 1", 1)[1].split("\n\n", 1)[0]
    points = [line.split() for line in curve.splitlines()[2:]]
    assert points and points[-1][1] == f"{LINES:,}", curve
    assert all(float(p[2]) > 0 for p in points if p[1] != "0"), curve
    assert (tmp_path / "data" / f"docker-{LINES}.log").exists()  # --workdir kept the bench's files there
