"""The ``opensearch`` bench output: a real OpenSearch 2.19 node for one run of ``bench/run.py``.

The node is the test suite's (``tests/backends/opensearch.py``: the launcher in
``tests/opensearch/``, built once by Maven and cached), started on free loopback ports
and stopped by PID after the run. logfwd's ``opensearch`` output and, when a
``fluent-bit`` binary is on PATH, Fluent Bit's own ``opensearch`` output run alternately
against a fresh node with the same workload file and config. Only the forwarder's CPU
and RSS are counted (``wait4``), never the JVM's.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

INDEX = "bench"


def start_node(workdir: Path) -> tuple[Any, str | None]:
    """(a started node, None) or (None, the reason it cannot run here)."""
    repo = Path(__file__).resolve().parent.parent
    if shutil.which("java") is None or shutil.which("mvn") is None:
        return None, "no 'java' or 'mvn' on PATH (the OpenSearch launcher is built by Maven)"
    sys.path.insert(0, str(repo))
    try:
        import pytest  # noqa: PLC0415 - only for this row: the launcher skips with pytest's exception

        from tests.backends.opensearch import OpenSearchNode  # noqa: PLC0415 - only for this row
    finally:
        sys.path.remove(str(repo))
    node = OpenSearchNode(workdir / "opensearch")
    try:
        node.start()
    except pytest.skip.Exception as e:
        return None, str(e)
    return node, None
