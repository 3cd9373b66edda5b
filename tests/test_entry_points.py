"""Third-party plugins register through the ``logfwd.plugins`` entry-point group.

A real distribution (dist-info with entry_points.txt, found on PYTHONPATH as any
installed package is) provides an output; the real ``logfwd`` command lists it,
documents its options, validates them and runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.clikit import file_lines, run_until

LOGFWD = str(Path(sys.executable).parent / "logfwd")

PLUGIN = '''
"""A third-party output: writes each record's keys upper-cased as JSON lines."""

import json

from logfwd.options import Option
from logfwd.plugin import Chunk, Output, Result


class ShoutOutput(Output):
    name = "shout"
    description = "writes records with upper-cased keys (third-party test plugin)"
    options = (Option("Path", "str", None, "file to append to", required=True),)

    async def flush(self, chunk: Chunk) -> Result:
        with open(self.config["path"], "a") as fh:
            for rec in chunk.records:
                fh.write(json.dumps({k.upper(): v for k, v in rec.items()}) + "\\n")
        return Result.ok()
'''


def _install_fake_dist(root: Path) -> dict[str, str]:
    (root / "logfwd_shout").mkdir(parents=True)
    (root / "logfwd_shout" / "__init__.py").write_text(PLUGIN)
    dist = root / "logfwd_shout-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: logfwd-shout\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[logfwd.plugins]\nshout = logfwd_shout:ShoutOutput\n")
    return {**os.environ, "PYTHONPATH": str(root)}


def test_entry_point_plugin_is_listed_documented_validated_and_run(tmp_path: Path) -> None:
    env = _install_fake_dist(tmp_path / "site")
    listing = subprocess.run([LOGFWD, "--list-plugins"], capture_output=True, env=env, text=True)
    assert "shout" in listing.stdout and "third-party test plugin" in listing.stdout

    helptext = subprocess.run([LOGFWD, "--help-plugin", "shout"], capture_output=True, env=env, text=True)
    assert "Path" in helptext.stdout and "file to append to" in helptext.stdout

    bad = subprocess.run([LOGFWD, "--dry-run", "-i", "dummy", "-o", "shout", "-m", "*", "-p", "pth=x"],
                         capture_output=True, env=env, text=True)
    assert bad.returncode == 1 and "did you mean 'Path'" in bad.stderr

    out = tmp_path / "shout.jsonl"
    run = run_until(["-i", "dummy", "-p", "samples=2", "-p", 'dummy={"msg": "hi"}', "-f", "0.1",
                     "-o", "shout", "-m", "*", "-p", f"path={out}"], file_lines(out, 2), env=env, timeout=30)
    assert run.returncode == 0, run.stderr.decode()
    assert [json.loads(x) for x in out.read_text().splitlines()] == [{"MSG": "hi"}, {"MSG": "hi"}]

    # without the distribution on the path, the name is unknown (and the error says so)
    plain = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    gone = subprocess.run([LOGFWD, "--dry-run", "-i", "dummy", "-o", "shout", "-m", "*"], capture_output=True,
                          env=plain, text=True)
    assert gone.returncode == 1 and "shout" in gone.stderr
