"""A real single-node OpenSearch 2.19 for tests, built from Maven Central jars.

``tests/backends/es.py`` gives an API stand-in (noida-db); it cannot reject a bulk
because a write thread pool is full, enforce a mapping the way Lucene does, run an
ingest pipeline or own a data stream. This module starts the real server code instead:
``tests/opensearch`` holds logfwd's own small launcher (``OpenSearchTestNode``, a
``Node`` started with the HTTP, analysis, painless and ingest modules from the
classpath) and a ``pom.xml``. Maven builds it once per checkout (cache key: the pom
and the launcher's sources) into ``tests/opensearch/target``; later runs reuse it.

No distribution tarball and no internet beyond Maven Central are needed. Where
``java`` or ``mvn`` is missing or Maven Central cannot be reached, the tests that ask
for a node are skipped with one line saying why, never failed: the node is an extra
check on top of the stand-in tests, not a requirement of the test command. A build
that fails for any other reason (a compile error in the launcher) fails the test.

``opensearch`` is one node for the session; ``opensearch_factory`` makes private
nodes with extra node settings (``{"thread_pool.write.size": "1"}``) that a test may
start late, stop and start again (same ports, same data directory).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ._proc import ManagedProcess, free_port, wait_for
from .es import EsServer

PROJECT = Path(__file__).resolve().parent.parent / "opensearch"
TARGET = PROJECT / "target"
BUILD_LOG = TARGET / "logfwd-build.log"
STAMP = TARGET / "logfwd-build.stamp"
MAIN_CLASS = "org.logfwd.testnode.OpenSearchTestNode"

BUILD_TIMEOUT = 600.0
"""First build downloads ~50 MB of jars; beyond ten minutes the network is the problem."""

START_TIMEOUT = 120.0
"""A node is up in ~5 s on an idle 2-core machine; a loaded CI box may need far more."""

HEAP = ["-Xms256m", "-Xmx512m"]

DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
"""Named in full (not the ``dependency:`` prefix): resolving a prefix needs a repository index."""

# Maven's words for "the launcher's Java is wrong". Any other build failure (no network,
# an incomplete local repository, a full disk) is this machine's, and skips.
_CODE_ERRORS = ("COMPILATION ERROR", "cannot find symbol", ".java:[")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

_built: str | None = None  # the classpath, once built in this session
_unavailable: str | None = None  # the skip reason, once known


def _source_key() -> str:
    """Hash of everything the build depends on: rebuild exactly when one of them changes."""
    h = hashlib.sha256()
    files = [PROJECT / "pom.xml", *sorted((PROJECT / "src").rglob("*"))]
    for f in files:
        if f.is_file():
            h.update(str(f.relative_to(PROJECT)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def _classpath() -> str:
    return f"{TARGET / 'classes'}{os.pathsep}{TARGET / 'lib' / '*'}"


def _log_tail(n: int = 3) -> str:
    """The first ``n`` error lines of the last Maven run (the reason; the rest is Maven's advice)."""
    if not BUILD_LOG.exists():
        return ""
    last_run = _ANSI.sub("", BUILD_LOG.read_text(errors="replace")).rsplit("\n$ ", 1)[-1]
    errors = [x for x in last_run.splitlines() if x.startswith("[ERROR]") and x[7:].strip()]
    return "\n".join(errors[:n] or last_run.splitlines()[-n:])


def _run_maven(mvn: str, offline: bool) -> int:
    argv = [mvn, "-B", "-q", "-f", str(PROJECT / "pom.xml"), "compile", f"{DEPENDENCY_PLUGIN}:copy-dependencies"]
    if offline:
        argv.insert(1, "-o")
    with open(BUILD_LOG, "ab") as fh:
        fh.write(f"\n$ {' '.join(argv)}\n".encode())
        fh.flush()
        try:
            return subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  timeout=BUILD_TIMEOUT, cwd=PROJECT).returncode
        except subprocess.TimeoutExpired:
            fh.write(f"\nlogfwd: build timed out after {BUILD_TIMEOUT:.0f}s\n".encode())
            return -1


def build_launcher() -> str:
    """The launcher's Java classpath, building it first if the sources changed.

    Skips the calling test when the tools or the network are missing. A file lock makes
    concurrent sessions (pytest-xdist workers, two checkouts' runs) build one at a time.
    """
    global _built, _unavailable
    if _built is not None:
        return _built
    if _unavailable is not None:
        pytest.skip(_unavailable)
    java = shutil.which("java")
    if java is None:
        _unavailable = "real OpenSearch node: no 'java' on PATH (Java 17 runs it)"
        pytest.skip(_unavailable)
    TARGET.mkdir(parents=True, exist_ok=True)
    key = _source_key()
    with open(TARGET / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if STAMP.exists() and STAMP.read_text() == key and (TARGET / "classes").is_dir():
            _built = _classpath()
            return _built
        mvn = shutil.which("mvn")
        if mvn is None:
            _unavailable = "real OpenSearch node: no 'mvn' on PATH to build tests/opensearch (apt-get install maven)"
            pytest.skip(_unavailable)
        BUILD_LOG.write_text("")
        shutil.rmtree(TARGET / "lib", ignore_errors=True)  # no jar of an older version may stay on the classpath
        # Offline first: after scripts/install.sh --test prefetched the jars this needs no network at all.
        if _run_maven(mvn, offline=True) != 0 and _run_maven(mvn, offline=False) != 0:
            tail = _log_tail()
            log = _ANSI.sub("", BUILD_LOG.read_text(errors="replace"))
            if any(s in log for s in _CODE_ERRORS):
                pytest.fail(f"tests/opensearch does not compile (see {BUILD_LOG}):\n{tail}")
            _unavailable = (f"real OpenSearch node: Maven could not build it, no network? {_log_tail(1)} "
                            f"(log: {BUILD_LOG})")
            pytest.skip(_unavailable)
        STAMP.write_text(key)
    _built = _classpath()
    return _built


class OpenSearchNode(EsServer):
    """One real OpenSearch node process; the read-back helpers are ``EsServer``'s.

    Ports are chosen once, at construction, so that a client configured before the node
    starts (a late start) and after a restart finds it at the same address; the data
    directory is kept across stop/start as on a real server.
    """

    def __init__(self, workdir: Path, settings: dict[str, str] | None = None) -> None:
        super().__init__(workdir)
        self.transport_port = free_port()
        self.settings = dict(settings or {})
        self.started_in: float | None = None  # seconds from exec to green, of the last start

    @property
    def pid(self) -> int:
        assert self.proc is not None, "node not started"
        return self.proc.pid

    @property
    def log_path(self) -> Path:
        return self.workdir / "opensearch.log"

    def argv(self, classpath: str) -> list[str]:
        home = self.workdir / "home"
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        return [
            shutil.which("java") or "java", *HEAP,
            "-XX:+UseSerialGC",  # one node, small heap: the least memory and threads
            "-Xss1m",
            f"-Djava.io.tmpdir={home / 'tmp'}",
            "-Djava.awt.headless=true",
            "-Dfile.encoding=UTF-8",
            "-Dlog4j2.disable.jmx=true",
            "-Dlog4j.shutdownHookEnabled=false",  # the launcher's hook closes the node, log4j must outlive it
            # The launcher does not go through OpenSearch's Bootstrap, which would set these.
            "-Dopensearch.set.netty.runtime.available.processors=false",
            "-Dio.netty.noUnsafe=true",
            "-Dio.netty.recycler.maxCapacityPerThread=0",
            "-cp", classpath, MAIN_CLASS,
            "--home", str(home),
            "--http-port", str(self.port),
            "--transport-port", str(self.transport_port),
            *(f"-S{k}={v}" for k, v in self.settings.items()),
        ]

    def start(self, wait: bool = True) -> OpenSearchNode:
        """Exec the JVM; with ``wait`` return once the cluster is green."""
        classpath = build_launcher()
        self.workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        self.proc = ManagedProcess(self.argv(classpath), self.log_path).start()
        if wait:
            self.wait_ready()
            self.started_in = time.monotonic() - t0
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        wait_for(self._healthy, timeout, f"OpenSearch on port {self.port}", self.log_path)

    def _healthy(self) -> bool:
        if self.proc is not None and not self.proc.alive():
            raise RuntimeError("the OpenSearch JVM exited")
        status, body = self.request("GET", "/_cluster/health?wait_for_status=green&timeout=1s")
        return status == 200 and isinstance(body, dict) and body.get("status") == "green"

    def stop(self) -> None:
        """SIGTERM (the launcher closes the node cleanly), SIGKILL after 30 s."""
        if self.proc is not None:
            self.proc.stop(timeout=30)
            self.proc = None

    def rss_kib(self) -> int:
        """Resident memory of the JVM (for the report; no test compares it)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def thread_pool(self, name: str = "write") -> dict[str, int]:
        """The node's counters of one thread pool (``rejected`` counts real 429s)."""
        status, body = self.request("GET", f"/_nodes/stats/thread_pool?filter_path=nodes.*.thread_pool.{name}")
        assert status == 200, body
        (node,) = body["nodes"].values()
        return {k: int(v) for k, v in node["thread_pool"][name].items()}


@pytest.fixture(scope="session")
def opensearch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenSearchNode]:
    """One real OpenSearch node (default settings) for the whole session."""
    node = OpenSearchNode(tmp_path_factory.mktemp("opensearch"))
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def opensearch_factory(tmp_path: Path) -> Iterator[Callable[..., OpenSearchNode]]:
    """Make private nodes: ``make(settings={...}, start=True)``; all are stopped at the end of the test.

    With ``start=False`` the node has its ports but no process yet: the test configures
    a client against it and calls ``node.start()`` when it likes.
    """
    build_launcher()  # skip before the test does anything when no node can be had
    nodes: list[OpenSearchNode] = []

    def make(settings: dict[str, str] | None = None, start: bool = True) -> OpenSearchNode:
        node = OpenSearchNode(tmp_path / f"opensearch-{len(nodes)}", settings)
        nodes.append(node)
        return node.start() if start else node

    try:
        yield make
    finally:
        for n in nodes:
            n.stop()
