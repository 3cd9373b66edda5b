"""End to end through the real ``logfwd`` CLI: Fluent Bit agent → logfwd aggregator → Elasticsearch.

One Fluent Bit process generates numbered records and sends each of them twice: with its
``forward`` output to ``logfwd -c`` (``forward`` input → ``es`` output, the aggregator
tier) and with its own ``es`` output straight to the same Elasticsearch stand-in. The
two indices must hold the same documents: putting logfwd between the agents and
Elasticsearch changes nothing in what is stored. Skipped without ``fluent-bit`` on PATH.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.backends._proc import ManagedProcess, free_port, port_open
from tests.backends.es import EsServer
from tests.clikit import wait_until
from tests.fluentbitkit import DUMMY, LUA, N, fb_record

FLUENT_BIT = shutil.which("fluent-bit")
LOGFWD = str(Path(sys.executable).parent / "logfwd")
pytestmark = [pytest.mark.skipif(FLUENT_BIT is None, reason="fluent-bit is not on PATH"), pytest.mark.backend]


def test_fluent_bit_through_logfwd_to_es_matches_fluent_bit_direct(tmp_path: Path, es_server: EsServer) -> None:
    fwd_port = free_port()
    (tmp_path / "logfwd.conf").write_text(f"""[SERVICE]
    Flush     0.2
    Log_Level info

[INPUT]
    Name   forward
    Listen 127.0.0.1
    Port   {fwd_port}

[OUTPUT]
    Name               es
    Match              *
    Host               127.0.0.1
    Port               {es_server.port}
    Index              via-logfwd
    Suppress_Type_Name On
""")
    (tmp_path / "number.lua").write_text(LUA)
    (tmp_path / "fb.conf").write_text(f"""[SERVICE]
    Flush     0.2
    Grace     2
    Log_Level info

[INPUT]
    Name    dummy
    Tag     app.fb
    Dummy   {DUMMY}
    Rate    1000
    Samples {N}

[FILTER]
    Name          lua
    Match         *
    Script        {tmp_path}/number.lua
    Call          number
    Time_as_table on

[OUTPUT]
    Name                 forward
    Match                *
    Host                 127.0.0.1
    Port                 {fwd_port}
    Require_ack_response on

[OUTPUT]
    Name               es
    Match              *
    Host               127.0.0.1
    Port               {es_server.port}
    Index              fb-direct
    Suppress_Type_Name On
""")
    logfwd = ManagedProcess([LOGFWD, "-c", str(tmp_path / "logfwd.conf")], tmp_path / "logfwd.log").start()
    fb: ManagedProcess | None = None
    try:
        wait_until(lambda: port_open(fwd_port), 30, "logfwd forward input", logfwd)
        fb = ManagedProcess([str(FLUENT_BIT), "-c", str(tmp_path / "fb.conf")], tmp_path / "fb.log").start()
        wait_until(lambda: es_server.count("via-logfwd") >= N and es_server.count("fb-direct") >= N, 90,
                   f"{N} documents in both indices", logfwd, fb)
    finally:
        if fb is not None:
            fb.stop()
        logfwd.stop()
    via = sorted(es_server.sources("via-logfwd"), key=lambda d: d["n"])
    direct = sorted(es_server.sources("fb-direct"), key=lambda d: d["n"])
    assert len(via) == len(direct) == N
    for a, b in zip(via, direct, strict=True):
        assert a == b
    assert {k: v for k, v in via[0].items() if k != "@timestamp"} == fb_record(1)
    assert "forward listening on 127.0.0.1:" in (tmp_path / "logfwd.log").read_text()
