"""Servers of the test suite that ``bench/run.py`` starts for one run: a real OpenSearch 2.19
node (the ``opensearch`` output) and a real InfluxDB 1.x (the ``influxdb`` output).

Both are the test suite's own fixtures (``tests/backends/opensearch.py``: the launcher in
``tests/opensearch/``, built once by Maven and cached; ``tests/backends/influx.py``: Debian's
``influxd`` with its own config and data directory), started on free loopback ports and
stopped by PID after the run, so the bench measures against exactly what the tests check.
logfwd and, when a ``fluent-bit`` binary is on PATH, Fluent Bit run alternately against a
fresh server with the same workload file and config. Only the forwarder's CPU and RSS are
counted (``wait4``), never the server's.

A server that cannot run here (no java/mvn, no ``influxd``) is reported as a reason, and the
row is skipped with it instead of failing the whole bench.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DATABASE = "bench"  # the influxdb row's database (InfluxDB 1.x refuses writes to a missing one)


def _suite_module(name: str) -> Any:
    """``tests.backends.<name>``, imported from the repository (the bench is not a test)."""
    sys.path.insert(0, str(REPO))
    try:
        import importlib  # noqa: PLC0415 - only for the rows that need a suite server

        return importlib.import_module(f"tests.backends.{name}")
    finally:
        sys.path.remove(str(REPO))


def _start(server: Any) -> str | None:
    """Start a suite server; the reason it cannot run here, or None once it is up."""
    import pytest  # noqa: PLC0415 - the fixtures report a missing tool through pytest's outcomes

    try:
        server.start()
    except (pytest.skip.Exception, pytest.fail.Exception) as e:
        return str(e)
    return None


def start_opensearch(workdir: Path) -> tuple[Any, str | None]:
    """(a started OpenSearch node, None) or (None, the reason it cannot run here)."""
    if shutil.which("java") is None or shutil.which("mvn") is None:
        return None, "no 'java' or 'mvn' on PATH (the OpenSearch launcher is built by Maven)"
    node = _suite_module("opensearch").OpenSearchNode(workdir / "opensearch")
    why = _start(node)
    return (None, why) if why else (node, None)


def start_influxdb(workdir: Path) -> tuple[Any, str | None]:
    """(a started InfluxDB 1.x with the bench database, None) or (None, why it cannot run here)."""
    base = workdir / "influxdb"
    shutil.rmtree(base, ignore_errors=True)  # a fresh data directory on every run
    server = _suite_module("influx").InfluxServer(base)
    why = _start(server)
    if why:
        return None, why
    server.create_database(DATABASE)
    return server, None
