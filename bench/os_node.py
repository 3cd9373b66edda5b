"""The ``opensearch`` bench row: tail docker → a real OpenSearch 2.19 node, logfwd beside Fluent Bit.

The node is the test suite's (``tests/backends/opensearch.py``: the launcher in
``tests/opensearch/``, built once by Maven and cached). It is started once for the row,
on free loopback ports, and stopped by PID at the end; the ``bench`` index is deleted
before every run, and after each run the node must hold exactly N documents. logfwd's
``opensearch`` output and, when a ``fluent-bit`` binary is on PATH, Fluent Bit's ``es``
output run alternately against the same node with the same workload file. Only the
forwarder's CPU and RSS are counted (``wait4``), never the JVM's.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

FB_PARSERS = """[PARSER]
    Name        docker
    Format      json
    Time_Key    time
    Time_Format %Y-%m-%dT%H:%M:%S.%L
    Time_Keep   On
"""

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


def reset_index(node: Any) -> None:
    node.request("DELETE", f"/{INDEX}")


def stored(node: Any) -> int:
    return int(node.count(INDEX))


def fluent_bit_config(workdir: Path, data: Path, http_port: int, os_port: int, flush: float) -> Path:
    """Fluent Bit: the same tail settings as logfwd's rows, its ``es`` output, metrics on ``http_port``.

    ``Buffer_Size False``: with its default (512k) Fluent Bit cannot read a real node's
    answer to a full bulk (one item per record, ~540 KB for a 2 MB chunk), logs
    ``cannot increase buffer`` and retries the chunk forever.
    """
    (workdir / "parsers.conf").write_text(FB_PARSERS)
    conf = workdir / "fluent-bit.conf"
    conf.write_text(f"""[SERVICE]
    Flush              {flush}
    Log_Level          warn
    Parsers_File       {workdir / 'parsers.conf'}
    HTTP_Server        On
    HTTP_Listen        127.0.0.1
    HTTP_Port          {http_port}

[INPUT]
    Name               tail
    Path               {data}
    Read_from_Head     On
    File_Cache_Advise  Off
    Parser             docker

[OUTPUT]
    Name               es
    Match              *
    Host               127.0.0.1
    Port               {os_port}
    Index              {INDEX}
    Suppress_Type_Name On
    Buffer_Size        False
    Retry_Limit        False
""")
    return conf


def run_row(lines: int, runs: int, run: Callable[[str, list[str] | None, int], Any],
            workdir: Path) -> dict[str, list[Any] | str]:
    """Alternate logfwd and Fluent Bit ``runs`` times each against one node.

    ``run(target_port_or_"fluent-bit", argv_or_None, port)`` measures one forwarder run;
    returns ``{"logfwd": [results], "fluent-bit": [results] or the reason it did not run}``
    or ``{"skip": reason}``.
    """
    node, why = start_node(workdir)
    if node is None:
        return {"skip": why or "no node"}
    fb = shutil.which("fluent-bit")
    out: dict[str, list[Any] | str] = {"logfwd": [], "fluent-bit": [] if fb else "no 'fluent-bit' on PATH"}
    try:
        for _ in range(runs):
            for who in ("logfwd", "fluent-bit"):
                if who == "fluent-bit" and not fb:
                    continue
                reset_index(node)
                res = run(who, [fb] if fb and who == "fluent-bit" else None, node.port)
                n = stored(node)
                if n != lines:
                    raise RuntimeError(f"opensearch/{who}: the node holds {n} documents, expected {lines}")
                out[who].append(res)  # type: ignore[union-attr]
    finally:
        node.stop()
    return out
