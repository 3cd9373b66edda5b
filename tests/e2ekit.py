"""Running the real ``logfwd`` daemon in end-to-end tests: the process, numbered-line writers, read-backs.

Shared by the output, storage, kafka-group and OpenSearch end-to-end tests (a helper module,
not a test module that others import).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .backends._proc import ManagedProcess, free_port, wait_for
from .backends.es import EsServer, noida_binary
from .clikit import wait_until

LOGFWD = str(Path(sys.executable).parent / "logfwd")
DRAIN_TIMEOUT = 90.0
# Safety net for waits on a real OpenSearch node (a JVM sharing a 2-core CI machine is
# slow): the waits return as soon as their condition holds, so a generous deadline costs
# nothing when the test is green and only stops a hung run.
OPENSEARCH_DEADLINE = 300.0




class Logfwd:
    """One ``logfwd -c FILE`` process with its HTTP metrics API on a free port."""

    def __init__(self, workdir: Path, body: str, flush: float = 0.2) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.conf = workdir / "logfwd.conf"
        self.log = workdir / "logfwd.log"
        workdir.mkdir(parents=True, exist_ok=True)
        # Short retry backoff (scheduler.base/cap) so an outage of a few seconds costs
        # seconds, not Fluent Bit's default minutes; unlimited retries so nothing is
        # dead-lettered while a server is away.
        self.conf.write_text(
            f"""[SERVICE]
    Flush            {flush}
    Log_Level        info
    HTTP_Server      On
    HTTP_Listen      127.0.0.1
    HTTP_Port        {self.port}
    scheduler.base   1
    scheduler.cap    2

{body}"""
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Logfwd:
        fh = open(self.log, "ab")
        self.proc = subprocess.Popen([LOGFWD, "-c", str(self.conf)], stdout=fh, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        fh.close()
        self.wait(lambda: self.metrics() is not None, 30, "logfwd metrics API")
        return self

    def wait(self, check: Callable[[], object], timeout: float, what: str) -> None:
        """Wait for ``check`` with a deadline, but fail at once (``DaemonExited``) if the daemon has exited."""
        wait_until(check, timeout, what, self)

    def metrics(self) -> dict[str, Any] | None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"logfwd exited with {self.proc.returncode}:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/metrics", timeout=2) as r:
                return json.loads(r.read())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return None

    def counter(self, section: str, name: str, key: str) -> int:
        m = self.metrics() or {}
        return int(m.get(section, {}).get(name, {}).get(key, 0))

    def wait_counter(self, section: str, name: str, key: str, at_least: int, timeout: float = DRAIN_TIMEOUT) -> None:
        self.wait(lambda: self.counter(section, name, key) >= at_least, timeout,
                  f"{section} {name} {key} >= {at_least}")

    def signal(self, sig: int, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


@pytest.fixture
def logfwds() -> Iterator[list[Logfwd]]:
    """Every ``Logfwd`` a test appends here is stopped at its end, whatever happened."""
    procs: list[Logfwd] = []
    yield procs
    for p in procs:
        p.stop()


class LineWriter(threading.Thread):
    """Appends ``{"n": i, ...}`` lines 0..n-1 to a file in small bursts, like a live application.

    It writes the first ``hold_at`` lines, then waits for ``resume`` (set by the test once
    it has broken something) and writes the rest, so the failure always falls in the
    middle of the stream however fast or slow the machine is.
    """

    def __init__(self, path: Path, n: int, hold_at: int | None = None, seconds: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.n = n
        self.hold_at = n // 2 if hold_at is None else hold_at
        self.bursts = max(1, int(seconds / 0.05))
        self.resume = threading.Event()
        self.error: BaseException | None = None

    def _write(self, fh: Any, first: int, last: int) -> None:
        step = max(1, -(-self.n // self.bursts))
        for lo in range(first, last, step):
            hi = min(last, lo + step)
            fh.write(b"".join(b'{"n": %d, "msg": "end to end line %d"}\n' % (i, i) for i in range(lo, hi)))
            fh.flush()
            time.sleep(0.05)

    def run(self) -> None:
        try:
            with open(self.path, "ab") as fh:
                self._write(fh, 0, self.hold_at)
                if not self.resume.wait(120):
                    raise RuntimeError("never resumed")
                self._write(fh, self.hold_at, self.n)
        except BaseException as e:  # noqa: BLE001 - surfaced by finish()
            self.error = e

    def finish(self) -> None:
        self.resume.set()
        self.join(60)
        assert not self.is_alive() and self.error is None, self.error


def tail_input(path: Path, db: Path, tag: str = "e2e") -> str:
    return f"""[INPUT]
    Name             tail
    Tag              {tag}
    Path             {path}
    Read_from_Head   On
    DB               {db}
    Parser           json
    Refresh_Interval 1
"""


def numbers_exact(ns: list[int], n: int) -> tuple[set[int], int]:
    """(missing numbers, duplicate count) of ``ns`` against range(n)."""
    missing = set(range(n)) - set(ns)
    return missing, len(ns) - len(set(ns))


def es_numbers(es: EsServer, index: str) -> list[int]:
    """Every document's ``n``, paged with search_after (a single page is capped at 10,000)."""
    es.refresh(index)
    out: list[int] = []
    after: list[Any] | None = None
    while True:
        body: dict[str, Any] = {"size": 10000, "sort": [{"n": "asc"}], "_source": ["n"],
                                "query": {"match_all": {}}}
        if after is not None:
            body["search_after"] = after
        status, doc = es.request("POST", f"/{index}/_search", body)
        assert status == 200, doc
        hits = doc["hits"]["hits"]
        if not hits:
            return out
        out.extend(int(h["_source"]["n"]) for h in hits)
        after = hits[-1]["sort"]


def es_output(es: EsServer, index: str) -> str:
    return f"""[OUTPUT]
    Name               es
    Match              *
    Host               127.0.0.1
    Port               {es.port}
    Index              {index}
    Suppress_Type_Name On
    Id_Mode            derived
    Retry_Limit        no_limits
    net.connect_timeout 2s
    net.io_timeout     10s
"""


def stop_noida(es: EsServer) -> None:
    """SIGTERM: noida-db saves what it acknowledged (SIGKILL would lose it all, see the module doc)."""
    assert es.proc is not None
    es.proc.stop(sig=signal.SIGTERM)


def start_noida_keeping_data(es: EsServer) -> None:
    """Start noida-db again on the same data directory and port.

    ``EsServer.start`` deletes the data directory; here the point is that what the server
    acknowledged before going down is still there afterwards, as with a real cluster.
    """
    es.proc = ManagedProcess(
        [noida_binary(), "start", "--data-dir", str(es.workdir / "data"), "--host", "127.0.0.1",
         "--only", "elasticsearch", "--elasticsearch-port", str(es.port)],
        es.workdir / "noida.log",
    ).start()
    wait_for(es._healthy, 30, "noida-db after restart", es.workdir / "noida.log")


