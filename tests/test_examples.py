"""The example plugins under ``examples/`` load through the ``logfwd.plugins`` entry points and run.

The distribution is "installed" the way pip would leave it: a dist-info whose
``entry_points.txt`` is the one ``examples/pyproject.toml`` declares, found on
PYTHONPATH with the package. The real ``logfwd`` command then lists the three
plugins and runs a config that chains them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

from tests.clikit import file_lines, run_until

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
LOGFWD = str(Path(sys.executable).parent / "logfwd")


def _install(site: Path) -> dict[str, str]:
    """A dist-info for ``examples/`` with the entry points its pyproject.toml declares; the env to find it."""
    project = tomllib.loads((EXAMPLES / "pyproject.toml").read_text())["project"]
    eps = project["entry-points"]["logfwd.plugins"]
    dist = site / "logfwd_examples-0.1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    (dist / "entry_points.txt").write_text("[logfwd.plugins]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()))
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(EXAMPLES)])}


def test_examples_are_listed_with_their_kinds(tmp_path: Path) -> None:
    env = _install(tmp_path / "site")
    out = subprocess.run([LOGFWD, "--list-plugins"], capture_output=True, env=env, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for name in ("counter", "redact", "jsonl"):
        assert name in out.stdout and "(example plugin)" in out.stdout


def test_input_filter_and_output_examples_run_in_the_daemon(tmp_path: Path) -> None:
    env = _install(tmp_path / "site")
    result = tmp_path / "out.jsonl"
    conf = tmp_path / "examples.conf"
    conf.write_text(textwrap.dedent(f"""
        [SERVICE]
            Flush 0.1
        [INPUT]
            Name    counter
            Tag     demo
            Count   6
            Batch   4
            Message user=alice password=hunter2
        [FILTER]
            Name    redact
            Match   demo
            Regex   /password=\\S+/
            Mask    password=***
        [OUTPUT]
            Name    jsonl
            Match   *
            Path    {result}
    """))
    run = run_until(["-c", str(conf)], file_lines(result, 6), env=env, timeout=60)
    assert run.returncode == 0, run.stderr.decode()
    lines = [json.loads(x) for x in result.read_text().splitlines()]
    assert [r["seq"] for r in lines] == list(range(6))
    assert {r["message"] for r in lines} == {"user=alice password=***"}
    assert {r["tag"] for r in lines} == {"demo"} and all(r["time_ns"] > 0 for r in lines)


def test_a_bad_example_option_is_a_config_error(tmp_path: Path) -> None:
    env = _install(tmp_path / "site")
    run = subprocess.run([LOGFWD, "--dry-run", "-i", "counter", "-p", "count=2", "-p", "batch=5",
                          "-o", "jsonl", "-m", "*", "-p", f"path={tmp_path / 'x'}"],
                         capture_output=True, env=env, text=True, timeout=60)
    assert run.returncode == 1 and "Batch cannot exceed Count" in run.stderr
