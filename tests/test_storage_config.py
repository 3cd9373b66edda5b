"""Storage options as the config layer sees them: errors, warnings, inheritance, the storage path."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.storagekit import LOGFWD


def _dry_run(tmp: Path, text: str) -> subprocess.CompletedProcess[str]:
    conf = tmp / "c.conf"
    conf.write_text(text)
    return subprocess.run([*LOGFWD, "--dry-run", "-c", str(conf)], capture_output=True, text=True, timeout=60)


def test_inherited_filesystem_storage_needs_a_path(tmp_path: Path) -> None:
    r = _dry_run(tmp_path, """[SERVICE]
    storage.type    filesystem
    storage.inherit on
[INPUT]
    name dummy
[OUTPUT]
    name null
    match *
""")
    assert r.returncode == 1 and "storage.path" in r.stderr + r.stdout


def test_checksum_and_trim_files_are_marked_unsupported(tmp_path: Path) -> None:
    r = _dry_run(tmp_path, f"""[SERVICE]
    storage.path       {tmp_path}/s
    storage.checksum   on
    storage.trim_files on
[INPUT]
    name dummy
    storage.type filesystem
[OUTPUT]
    name null
    match *
""")
    out = r.stderr + r.stdout
    assert r.returncode == 0, out
    assert "storage.checksum" in out and "CRC32C" in out
    assert "storage.trim_files" in out
    assert "not implemented" not in out


def test_storage_path_that_cannot_be_created_exits_1_with_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    conf = tmp_path / "c.conf"
    conf.write_text(f"""[SERVICE]
    storage.path {blocker}/storage
[INPUT]
    name dummy
    storage.type filesystem
[OUTPUT]
    name null
    match *
""")
    r = subprocess.run([*LOGFWD, "-c", str(conf)], capture_output=True, text=True, timeout=60)
    errors = [ln for ln in (r.stderr + r.stdout).splitlines() if "error" in ln]
    assert r.returncode == 1
    assert len(errors) == 1 and f"storage.path {blocker}/storage: cannot create it" in errors[0], r.stderr
    assert "Traceback" not in r.stderr
