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

``opensearch_secure`` is a second build (``tests/opensearch/security``): OpenSearch
2.19.4 with the ``opensearch-security`` plugin zip (the newest version published for
2.19), HTTPS with certificates from a throwaway CA made by ``openssl``, basic auth
(``admin``/``admin`` from the plugin's shipped users), roles and users via its REST API.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ._proc import ManagedProcess, free_port, wait_for
from .es import EsServer

PROJECT = Path(__file__).resolve().parent.parent / "opensearch"
MAIN_CLASS = "org.logfwd.testnode.OpenSearchTestNode"

BUILD_TIMEOUT = 600.0
"""First build downloads ~75 MB of jars (+45 MB for security); beyond ten minutes the network is the problem."""

START_TIMEOUT = 120.0
"""A node is up in ~5 s (~20 s with security) on an idle 2-core machine; a loaded CI box may need far more."""

HEAP = ["-Xms256m", "-Xmx512m"]

DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
"""Named in full (not the ``dependency:`` prefix): resolving a prefix needs a repository index."""

ADMIN = ("admin", "admin")
"""The security plugin's shipped ``internal_users.yml`` admin (a test node only listens on loopback)."""

# Maven's words for "the launcher's Java is wrong". Any other build failure (no network,
# an incomplete local repository, a full disk) is this machine's, and skips.
_CODE_ERRORS = ("COMPILATION ERROR", "cannot find symbol", ".java:[")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Build:
    """One Maven build of the launcher: ``plain`` (2.19.6 + modules) or ``security`` (2.19.4 + plugin zip)."""

    def __init__(self, name: str, project: Path, goals: list[str], outputs: tuple[str, ...]) -> None:
        self.name = name
        self.project = project
        self.target = project / "target"
        self.log = self.target / "logfwd-build.log"
        self.stamp = self.target / "logfwd-build.stamp"
        self.goals = goals
        self.outputs = outputs  # under target/: a build is reused only if all of them are there
        self.classpath: str | None = None  # once built in this session
        self.unavailable: str | None = None  # the skip reason, once known

    def source_key(self) -> str:
        """Hash of everything the build depends on: rebuild exactly when one of them changes."""
        h = hashlib.sha256()
        files = [self.project / "pom.xml", *sorted((PROJECT / "src").rglob("*"))]
        for f in files:
            if f.is_file():
                h.update(str(f.relative_to(PROJECT)).encode() + b"\0" + f.read_bytes() + b"\0")
        return h.hexdigest()

    def log_tail(self, n: int = 3) -> str:
        """The first ``n`` error lines of the last Maven run (the reason; the rest is Maven's advice)."""
        if not self.log.exists():
            return ""
        last_run = _ANSI.sub("", self.log.read_text(errors="replace")).rsplit("\n$ ", 1)[-1]
        errors = [x for x in last_run.splitlines() if x.startswith("[ERROR]") and x[7:].strip()]
        return "\n".join(errors[:n] or last_run.splitlines()[-n:])

    def run_maven(self, mvn: str, offline: bool) -> int:
        argv = [mvn, "-B", "-q", *(["-o"] if offline else []), "-f", str(self.project / "pom.xml"), *self.goals]
        with open(self.log, "ab") as fh:
            fh.write(f"\n$ {' '.join(argv)}\n".encode())
            fh.flush()
            try:
                return subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      timeout=BUILD_TIMEOUT, cwd=self.project).returncode
            except subprocess.TimeoutExpired:
                fh.write(f"\nlogfwd: build timed out after {BUILD_TIMEOUT:.0f}s\n".encode())
                return -1

    def get(self) -> str:
        """The launcher's Java classpath, building it first if the sources changed.

        Skips the calling test when the tools or the network are missing. A file lock makes
        concurrent sessions (pytest-xdist workers, two runs in one checkout) build one at a time.
        """
        if self.classpath is not None:
            return self.classpath
        if self.unavailable is not None:
            pytest.skip(self.unavailable)
        if shutil.which("java") is None:
            self.unavailable = "real OpenSearch node: no 'java' on PATH (Java 17 runs it)"
            pytest.skip(self.unavailable)
        self.target.mkdir(parents=True, exist_ok=True)
        key = self.source_key()
        with open(self.target / ".build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            built = self.stamp.exists() and self.stamp.read_text() == key
            if not (built and all((self.target / o).exists() for o in self.outputs)):
                self._build(key)
        self.classpath = f"{self.target / 'classes'}{os.pathsep}{self.target / 'lib' / '*'}"
        return self.classpath

    def _build(self, key: str) -> None:
        mvn = shutil.which("mvn")
        if mvn is None:
            self.unavailable = "real OpenSearch node: no 'mvn' on PATH to build tests/opensearch (apt-get install maven)"
            pytest.skip(self.unavailable)
        self.log.write_text("")
        self.stamp.unlink(missing_ok=True)
        # No jar of an older version may stay behind; unpack skips what its markers say it did.
        for d in ("lib", "plugins", "dependency-maven-plugin-markers"):
            shutil.rmtree(self.target / d, ignore_errors=True)
        # Offline first: after scripts/install.sh --test prefetched the jars this needs no network at all.
        if self.run_maven(mvn, offline=True) != 0 and self.run_maven(mvn, offline=False) != 0:
            log = _ANSI.sub("", self.log.read_text(errors="replace"))
            if any(s in log for s in _CODE_ERRORS):
                pytest.fail(f"tests/opensearch does not compile (see {self.log}):\n{self.log_tail()}")
            self.unavailable = (f"real OpenSearch node ({self.name}): Maven could not build it, no network? "
                                f"{self.log_tail(1)} (log: {self.log})")
            pytest.skip(self.unavailable)
        self.stamp.write_text(key)


_COMPILE = ["compile", f"{DEPENDENCY_PLUGIN}:copy-dependencies"]
PLAIN = Build("plain", PROJECT, _COMPILE, ("classes", "lib"))
SECURITY = Build("security", PROJECT / "security", [*_COMPILE, f"{DEPENDENCY_PLUGIN}:unpack"],
                 ("classes", "lib", "plugins/opensearch-security/config"))


def build_launcher() -> str:
    """The classpath of the plain node (no security), built on first use."""
    return PLAIN.get()


def _make_certs(config: Path) -> None:
    """A test CA, a node certificate for 127.0.0.1/localhost and an admin client certificate (PEM, PKCS#8 keys)."""
    config.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=config, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca-key.pem", "-out", "ca.pem",
            "-days", "30", "-subj", "/CN=logfwd-test-ca")
    for name, san in (("node", "IP:127.0.0.1,DNS:localhost"), ("admin", "DNS:admin")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}-key.rsa", "-out", f"{name}.csr",
                "-subj", f"/CN={name}")
        openssl("pkcs8", "-topk8", "-nocrypt", "-in", f"{name}-key.rsa", "-out", f"{name}-key.pem")
        (config / f"{name}.ext").write_text(
            f"subjectAltName={san}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth,clientAuth\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "30", "-extfile", f"{name}.ext")


class OpenSearchNode(EsServer):
    """One real OpenSearch node process; the read-back helpers are ``EsServer``'s.

    Ports are chosen once, at construction, so that a client configured before the node
    starts (a late start) and after a restart finds it at the same address; the data
    directory is kept across stop/start as on a real server.
    """

    def __init__(self, workdir: Path, settings: dict[str, str] | None = None, secure: bool = False) -> None:
        super().__init__(workdir)
        self.transport_port = free_port()
        self.settings = dict(settings or {})
        self.secure = secure
        self.build = SECURITY if secure else PLAIN
        self.started_in: float | None = None  # seconds from exec to green, of the last start

    @property
    def url(self) -> str:
        return f"{'https' if self.secure else 'http'}://127.0.0.1:{self.port}"

    @property
    def home(self) -> Path:
        return self.workdir / "home"

    @property
    def ca_file(self) -> Path:
        """The test CA that signed the node's certificate (secure nodes)."""
        return self.home / "config" / "ca.pem"

    def request(self, method: str, path: str, body: Any = None, ndjson: bytes | None = None,
                auth: tuple[str, str] | None = ADMIN) -> tuple[int, Any]:
        """``EsServer.request``, plus TLS (verified against the test CA) and basic auth on secure nodes."""
        data = None
        headers = {}
        if ndjson is not None:
            data, headers["Content-Type"] = ndjson, "application/x-ndjson"
        elif body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        ctx = None
        if self.secure:
            ctx = ssl.create_default_context(cafile=str(self.ca_file))
            if auth is not None:
                headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw.decode("utf-8", "replace")

    def _secure_home(self, plugin: Path) -> dict[str, str]:
        """Certificates, the plugin and its config in the node's home; the node settings that use them.

        A throwaway CA signs a node certificate (IP SAN 127.0.0.1, so clients verify it)
        and an admin certificate. The security index is created from the plugin's shipped
        YAML files on first start (``allow_default_init_securityindex``), with its users
        (``admin``/``admin``) and roles.
        """
        config = self.home / "config"
        if not (config / "node.pem").exists():
            if shutil.which("openssl") is None:
                pytest.skip("secure OpenSearch node: no 'openssl' to make its certificates")
            _make_certs(config)
        sec = config / "opensearch-security"
        if not sec.exists():
            shutil.copytree(plugin / "config", sec, ignore=shutil.ignore_patterns("*.example"))
        plugins = self.home / "plugins"
        plugins.mkdir(parents=True, exist_ok=True)
        link = plugins / "opensearch-security"
        if not link.exists():
            link.symlink_to(plugin, target_is_directory=True)
        tls = {}
        for layer in ("transport", "http"):
            tls |= {f"plugins.security.ssl.{layer}.pemcert_filepath": "node.pem",
                    f"plugins.security.ssl.{layer}.pemkey_filepath": "node-key.pem",
                    f"plugins.security.ssl.{layer}.pemtrustedcas_filepath": "ca.pem"}
        return {
            **tls,
            "plugins.security.ssl.http.enabled": "true",
            "plugins.security.ssl.transport.enforce_hostname_verification": "false",
            "plugins.security.allow_default_init_securityindex": "true",
            "plugins.security.authcz.admin_dn": "CN=admin",
            "plugins.security.nodes_dn": "CN=node",
            "plugins.security.restapi.roles_enabled": "all_access",
            "plugins.security.audit.type": "noop",
        }

    @property
    def pid(self) -> int:
        assert self.proc is not None, "node not started"
        return self.proc.pid

    @property
    def log_path(self) -> Path:
        return self.workdir / "opensearch.log"

    def argv(self, classpath: str) -> list[str]:
        home = self.home
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        settings = dict(self.settings)
        if self.secure:
            settings = {**self._secure_home(self.build.target / "plugins" / "opensearch-security"), **settings}
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
            *(f"-S{k}={v}" for k, v in settings.items()),
        ]

    def start(self, wait: bool = True) -> OpenSearchNode:
        """Exec the JVM; with ``wait`` return once the cluster is green."""
        classpath = self.build.get()
        self.workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        self.proc = ManagedProcess(self.argv(classpath), self.log_path).start()
        if wait:
            self.wait_ready()
            self.started_in = time.monotonic() - t0
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        wait_for(self._healthy, timeout, f"OpenSearch on {self.url}", self.log_path)

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


@pytest.fixture(scope="session")
def opensearch_secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenSearchNode]:
    """One real OpenSearch 2.19.4 node with the security plugin: HTTPS only, basic auth (admin/admin)."""
    node = OpenSearchNode(tmp_path_factory.mktemp("opensearch-secure"), secure=True)
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

    def make(settings: dict[str, str] | None = None, start: bool = True, secure: bool = False) -> OpenSearchNode:
        node = OpenSearchNode(tmp_path / f"opensearch-{len(nodes)}", settings, secure=secure)
        nodes.append(node)
        return node.start() if start else node

    try:
        yield make
    finally:
        for n in nodes:
            n.stop()
