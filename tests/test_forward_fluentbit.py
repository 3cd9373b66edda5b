"""Interop with the real Fluent Bit binary: its forward output → our input, our output → its forward input.

Fluent Bit generates numbered records (``dummy`` + a Lua filter that numbers each record
and gives record n the time 1700000000+n s + n*7919 ns), so every record and timestamp
is known and compared field by field, to the nanosecond. Our output is read back from
Fluent Bit's ``file`` output, whose default format prints the time as
``seconds.nanoseconds``. Skipped when ``fluent-bit`` is not on PATH.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio

from logfwd.engine.pipeline import Pipeline
from logfwd.plugin import Emitter, Input
from logfwd.plugins.in_forward import PLUGIN as ForwardInput
from logfwd.plugins.out_forward import PLUGIN as ForwardOutput
from tests.backends._proc import ManagedProcess, free_port, port_open
from tests.clikit import wait_until, wait_until_async
from tests.enginekit import config, section
from tests.fluentbitkit import DUMMY, LUA, NS, N, fb_record, fb_time
from tests.pluginkit import Collector, make_plugin

FLUENT_BIT = shutil.which("fluent-bit")
pytestmark = pytest.mark.skipif(FLUENT_BIT is None, reason="fluent-bit is not on PATH")

def start_fluent_bit(tmp: Path, body: str, name: str = "fb") -> ManagedProcess:
    (tmp / "number.lua").write_text(LUA)
    conf = tmp / f"{name}.conf"
    conf.write_text("[SERVICE]\n    Flush 0.2\n    Grace 2\n    Log_Level info\n" + body)
    return ManagedProcess([str(FLUENT_BIT), "-c", str(conf)], tmp / f"{name}.log").start()


def numbered_source(tmp: Path, out: str, rate: int = 1000) -> str:
    return f"""
[INPUT]
    Name    dummy
    Tag     app.fb
    Dummy   {DUMMY}
    Rate    {rate}
    Samples {N}
[FILTER]
    Name          lua
    Match         *
    Script        {tmp}/number.lua
    Call          number
    Time_as_table on
[OUTPUT]
    Name  forward
    Match *
{out}"""


def _cert(d: Path) -> tuple[Path, Path]:
    crt, key = d / "srv.crt", d / "srv.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(crt), "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True)
    return crt, key


# ----------------------------------------------------- Fluent Bit → our input

CASES = {
    "plain": ({}, {}),
    "ack": ({"Require_ack_response": "on"}, {}),
    "gzip": ({"Require_ack_response": "on", "Compress": "gzip"}, {}),
    "shared_key": ({"Require_ack_response": "on", "Shared_Key": "s3cret", "Self_Hostname": "agent"},
                   {"shared_key": "s3cret", "self_hostname": "aggregator"}),
    "users": ({"Shared_Key": "k", "Username": "alice", "Password": "pw"},
              {"shared_key": "k", "security.users": "alice pw"}),
    "tls": ({"Require_ack_response": "on", "tls": "on", "tls.verify": "off"}, {"tls": "on"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fluent_bit_forward_output_to_our_input(tmp_path: Path, case: str) -> None:
    fb_opts, our_opts = CASES[case]
    if case == "tls":
        crt, key = _cert(tmp_path)
        our_opts = {**our_opts, "tls.crt_file": str(crt), "tls.key_file": str(key), "tls.verify": "off"}

    async def main() -> tuple[Collector, Any]:
        c = Collector()
        p = make_plugin(ForwardInput, listen="127.0.0.1", port=0, options=our_opts)
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: p.run(c.emitter(p), task_status=task_status))
            out = f"    Host 127.0.0.1\n    Port {p.port}\n" + "".join(f"    {k} {v}\n" for k, v in fb_opts.items())
            fb = start_fluent_bit(tmp_path, numbered_source(tmp_path, out))
            try:
                await wait_until_async(lambda: c.count() >= N, 60, f"{N} records from Fluent Bit", fb)
            finally:
                fb.stop()
            nursery.cancel_scope.cancel()
        return c, p

    c, p = trio.run(main)
    log = (tmp_path / "fb.log").read_text(errors="replace")
    assert c.count() == N, log[-3000:]
    assert c.records == [fb_record(n) for n in range(1, N + 1)]
    assert c.times == [fb_time(n) for n in range(1, N + 1)]
    assert {b.tag for b in c.batches} == {"app.fb"}
    assert p.metrics.get("protocol_errors", 0) == 0 and p.metrics.get("auth_failures", 0) == 0


def test_fluent_bit_with_a_wrong_key_is_refused(tmp_path: Path) -> None:
    async def main() -> tuple[Collector, Any]:
        c = Collector()
        p = make_plugin(ForwardInput, listen="127.0.0.1", port=0, shared_key="right")
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: p.run(c.emitter(p), task_status=task_status))
            fb = start_fluent_bit(tmp_path, numbered_source(
                tmp_path, f"    Host 127.0.0.1\n    Port {p.port}\n    Shared_Key wrong\n"))
            try:
                await wait_until_async(lambda: p.metrics.get("auth_failures"), 30, "an auth failure", fb)
            finally:
                fb.stop()
            nursery.cancel_scope.cancel()
        return c, p

    c, p = trio.run(main)
    assert p.metrics.get("auth_failures", 0) >= 1 and c.count() == 0


# ----------------------------------------------------- our output → Fluent Bit


def read_fb_file(path: Path) -> list[tuple[str, int, dict[str, Any]]]:
    """Fluent Bit's file output lines ``tag: [sec.nsec, {record}]`` as (tag, ns, record).

    Only whole lines: the file is read while Fluent Bit writes it, so its last line may
    not be complete yet (it is read on the next call).
    """
    out = []
    if not path.exists():
        return out
    text = path.read_text()
    for line in text[: text.rfind("\n") + 1].splitlines():
        tag, _, rest = line.partition(": [")
        ts, _, rec = rest.partition(", ")
        sec, _, frac = ts.partition(".")
        out.append((tag, int(sec) * NS + int(frac.ljust(9, "0")[:9]), json.loads(rec[:-1])))
    return out


def fb_receiver(tmp: Path, port: int, extra: str = "") -> ManagedProcess:
    fb = start_fluent_bit(tmp, f"""
[INPUT]
    Name   forward
    Listen 127.0.0.1
    Port   {port}
{extra}
[OUTPUT]
    Name  file
    Match *
    Path  {tmp}
    File  out.txt
""", name="receiver")
    wait_until(lambda: port_open(port), 20, "fluent-bit forward input", fb)
    return fb


T0 = 1_700_000_000 * NS + 987_654_321


def ours(n: int) -> dict[str, Any]:
    return {"n": n, "msg": f"line {n}", "f": 0.25, "ok": n % 2 == 0, "nested": {"k": [n, "é"]}}


class Numbered(Input):
    """Emits ``total`` numbered records in batches, with a pause between batches."""

    name = "numbered"
    options = ()
    total = 3000
    batch = 250
    pause = 0.02

    async def run(self, emitter: Emitter, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        for start in range(0, self.total, self.batch):
            ns = range(start, min(start + self.batch, self.total))
            await emitter.emit([ours(n) for n in ns], [T0 + n * 1001 for n in ns], tag="app.ours")
            await trio.sleep(self.pause)

    def exit_when_done(self) -> bool:
        return True  # the pipeline of these tests ends once every record is delivered


def run_pipeline(port: int, during: Any = None, **out: Any) -> Pipeline:
    cfg = config(section(Numbered, tag="app.ours"),
                 section(ForwardOutput, match="*", host="127.0.0.1", port=port, retry_limit=None, **out),
                 grace=60.0)
    p = Pipeline(cfg)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            if during is not None:
                nursery.start_soon(during)
            with trio.fail_after(120):
                await p.run()

    trio.run(main)
    return p


OUT_CASES = {
    "plain": ({}, ""),
    "ack": ({"require_ack_response": True}, ""),
    "gzip": ({"require_ack_response": True, "compress": "gzip"}, ""),
    "shared_key": ({"require_ack_response": True, "shared_key": "k2", "self_hostname": "logfwd"},
                   "    Shared_Key k2\n    Self_Hostname fb\n"),
    "users": ({"shared_key": "k3", "username": "bob", "password": "pw"},
              "    Shared_Key k3\n    Security.Users bob pw\n"),
    "time_as_integer": ({"time_as_integer": True, "send_options": True}, ""),
}


@pytest.mark.parametrize("case", list(OUT_CASES))
def test_our_forward_output_to_fluent_bit(tmp_path: Path, case: str) -> None:
    out_opts, fb_extra = OUT_CASES[case]
    port = free_port()
    fb = fb_receiver(tmp_path, port, fb_extra)
    try:
        p = run_pipeline(port, **out_opts)
        assert p.stopped_cleanly
        wait_until(lambda: len(read_fb_file(tmp_path / "out.txt")) >= Numbered.total, 30,
                   "records in fluent-bit's file", fb)
    finally:
        fb.stop()
    got = read_fb_file(tmp_path / "out.txt")
    assert [r for _, _, r in got] == [ours(n) for n in range(Numbered.total)]
    if case == "time_as_integer":
        assert [t for _, t, _ in got] == [(T0 + n * 1001) // NS * NS for n in range(Numbered.total)]
    else:
        assert [t for _, t, _ in got] == [T0 + n * 1001 for n in range(Numbered.total)]
    assert {tag for tag, _, _ in got} == {"app.ours"}


def test_fluent_bit_restarting_mid_stream_loses_nothing(tmp_path: Path) -> None:
    """Require_ack_response on: a peer stopped and started again mid-stream; every record arrives."""
    port = free_port()
    procs = [fb_receiver(tmp_path, port)]
    out_file = tmp_path / "out.txt"

    async def restart() -> None:
        await wait_until_async(lambda: len(read_fb_file(out_file)) >= Numbered.total // 3, 60,
                               "a third of the records in fluent-bit's file", procs[-1])
        await trio.to_thread.run_sync(procs[-1].stop)
        await trio.sleep(0.5)  # flushes fail meanwhile and are retried by the engine
        procs.append(await trio.to_thread.run_sync(fb_receiver, tmp_path, port))

    Numbered.total, Numbered.pause = 6000, 0.05
    try:
        p = run_pipeline(port, during=restart, require_ack_response=True)
        wait_until(lambda: {r["n"] for _, _, r in read_fb_file(out_file)} >= set(range(Numbered.total)), 30,
                   "every record in fluent-bit's file", procs[-1])
    finally:
        Numbered.total, Numbered.pause = 3000, 0.02
        for fb in procs:
            fb.stop()
    assert len(procs) == 2, "the peer was not restarted"
    counts = Counter(r["n"] for _, _, r in read_fb_file(out_file))
    dups = sum(c - 1 for c in counts.values())
    assert set(counts) == set(range(6000))
    retries = p.registry.to_json()["output"]["forward.0"].get("retries", 0)
    print(f"restart: 6000 records, {dups} duplicate(s), {retries} retried flush(es)")
    assert retries >= 1
