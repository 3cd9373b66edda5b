"""Hot reload through the real process: SIGHUP with ``hot_reload on`` swaps the pipeline.

What a systemd ``ExecReload=kill -HUP $MAINPID`` relies on: a valid new config takes
over without a new process and without losing what the old pipeline held; an invalid
one is refused and the running pipeline carries on; without ``hot_reload`` the signal
is ignored rather than killing the daemon (SIGHUP's default action).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.backends._proc import free_port, wait_for

LOGFWD = str(Path(sys.executable).parent / "logfwd")


def _conf(out: Path, tag: str, hot_reload: str = "on", flush: str = "0.2", port: int | None = None) -> str:
    http = f"    HTTP_Server On\n    HTTP_Port   {port}\n" if port else ""
    return f"""
[SERVICE]
    Flush       {flush}
    Grace       5
    Hot_Reload  {hot_reload}
{http}
[INPUT]
    Name   dummy
    Tag    {tag}
    Rate   20
    Dummy  {{"tag": "{tag}"}}

[OUTPUT]
    Name   file
    Match  *
    Path   {out.parent}
    File   {out.name}
    Format plain
"""


def _lines(path: Path) -> list[dict[str, str]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _emitted(port: int) -> int:
    """Records the running pipeline's input has emitted so far (its metrics)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/metrics", timeout=5) as r:
        return int(json.loads(r.read())["input"]["dummy.0"]["records"])


def _start(conf: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([LOGFWD, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_sighup_reloads_a_valid_config_and_refuses_an_invalid_one(tmp_path: Path) -> None:
    out_a, out_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    conf = tmp_path / "logfwd.conf"
    port = free_port()
    conf.write_text(_conf(out_a, "first", flush="30", port=port))
    proc = _start(conf)
    try:
        # Flush 30 keeps records buffered: the reload must flush them, not drop them.
        wait_for(lambda: _emitted(port) >= 20, 20, "records buffered by the first pipeline")
        assert not out_a.exists()
        conf.write_text(_conf(out_b, "second"))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: len(_lines(out_b)) >= 5, 20, "records from the reloaded pipeline")
        assert proc.poll() is None
        first = _lines(out_a)
        assert len(first) >= 20 and all(r["tag"] == "first" for r in first)  # flushed at the reload
        assert all(r["tag"] == "second" for r in _lines(out_b))

        conf.write_text(_conf(out_a, "third").replace("Name   file", "Name   fiel"))
        proc.send_signal(signal.SIGHUP)
        n_b = len(_lines(out_b))
        time.sleep(1.5)
        assert proc.poll() is None
        assert len(_lines(out_b)) > n_b  # the running pipeline carries on
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()
    log = err.decode()
    assert "reloading" in log and "reload refused" in log and "fiel" in log


def test_sighup_without_hot_reload_is_ignored(tmp_path: Path) -> None:
    out = tmp_path / "a.jsonl"
    conf = tmp_path / "logfwd.conf"
    conf.write_text(_conf(out, "only", hot_reload="off"))
    proc = _start(conf)
    try:
        wait_for(lambda: len(_lines(out)) >= 3, 20, "records")
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "SIGHUP: ignored" in err.decode()
