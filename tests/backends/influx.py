"""Real InfluxDB 1.x servers (Debian's ``influxd``) for output tests, plus a VictoriaMetrics
for the v2 write path.

Fixtures:

- ``influxdb``: a session-wide server without authentication. ``stop()``/``start()`` restart it
  on the same port with its data kept (InfluxDB persists meta/data/wal in its directory), for
  the down-then-up test.
- ``influxdb_auth``: a second server with ``auth-enabled = true`` and an admin user
  (``admin`` / ``s3cret``), for the authentication tests.
- ``victoria_metrics``: Debian's ``victoria-metrics``, which accepts ``/api/v2/write`` with the
  InfluxDB v2 request shape (org, bucket, precision, ``Authorization: Token``). It is not
  InfluxDB (it stores string fields as 0) but it checks the request a v2 server receives.

Each server listens on a free loopback port, works in the session's scratch directory and
is stopped by PID.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ._proc import ManagedProcess, free_port, require_tool, wait_for

INFLUXD = "/usr/bin/influxd"
VICTORIA = "/usr/bin/victoria-metrics"
ADMIN_USER = "admin"
ADMIN_PASSWORD = "s3cret"


def _http(
    method: str,
    url: str,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class InfluxServer:
    """One ``influxd`` process with its own directory, config and port."""

    def __init__(self, base: Path, auth: bool = False) -> None:
        self.base = base
        self.auth = auth
        self.port = free_port()
        self.rpc_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = base / "influxd.log"
        self.config = base / "influxdb.conf"
        base.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f"""reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"
[meta]
  dir = "{base}/meta"
[data]
  dir = "{base}/data"
  wal-dir = "{base}/wal"
  query-log-enabled = false
  max-values-per-tag = 0
  max-series-per-database = 0
[monitor]
  store-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{self.port}"
  auth-enabled = {"true" if auth else "false"}
  log-enabled = false
[continuous_queries]
  enabled = false
"""
        )
        self.proc: ManagedProcess | None = None

    # -- lifecycle
    def start(self) -> InfluxServer:
        require_tool(INFLUXD, "apt-get install influxdb")
        self.proc = ManagedProcess([INFLUXD, "run", "-config", str(self.config)], self.log).start()
        wait_for(self.ping, 30, f"influxd on port {self.port}", self.log)
        if self.auth:
            # With auth on and no user yet, InfluxDB 1.x lets anyone create the first admin.
            status, body = self._query_raw("SHOW USERS", auth=True)
            if status == 401 or b"create admin user first" in body:
                q = f"CREATE USER {ADMIN_USER} WITH PASSWORD '{ADMIN_PASSWORD}' WITH ALL PRIVILEGES"
                status, body = self._query_raw(q, auth=False)
                assert status == 200, body
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def ping(self) -> bool:
        status, _ = _http("GET", f"{self.url}/ping", timeout=1.0)
        return status == 204

    # -- queries
    def _headers(self, auth: bool) -> dict[str, str]:
        if not (self.auth and auth):
            return {}
        token = base64.b64encode(f"{ADMIN_USER}:{ADMIN_PASSWORD}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def _query_raw(self, q: str, db: str | None = None, auth: bool = True) -> tuple[int, bytes]:
        params = {"q": q, "epoch": "ns"}
        if db:
            params["db"] = db
        body = urllib.parse.urlencode(params).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", **self._headers(auth)}
        return _http("POST", f"{self.url}/query", body, headers)

    def query(self, q: str, db: str | None = None) -> dict[str, Any]:
        """Run an InfluxQL statement (as admin when auth is on); raise on any error."""
        status, body = self._query_raw(q, db)
        doc = json.loads(body)
        if status != 200 or "error" in doc or any("error" in r for r in doc.get("results", [])):
            raise RuntimeError(f"query {q!r} failed: HTTP {status} {body[:500]!r}")
        return doc  # type: ignore[no-any-return]

    def rows(self, q: str, db: str) -> list[dict[str, Any]]:
        """Every row of a SELECT as dicts (column → value), over all series; times in ns."""
        doc = self.query(q, db)
        out: list[dict[str, Any]] = []
        for result in doc["results"]:
            for series in result.get("series", []):
                cols = series["columns"]
                tags = series.get("tags", {})
                for values in series["values"]:
                    row = dict(zip(cols, values, strict=True))
                    row.update(tags)
                    row["_measurement"] = series["name"]
                    out.append(row)
        return out

    def count(self, measurement: str, db: str) -> int:
        """Number of points in a measurement (``SELECT *`` rows: every point, whatever its fields)."""
        m = '"' + measurement.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return len(self.rows(f"SELECT * FROM {m}", db))

    def create_database(self, name: str) -> str:
        self.query(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self.query(f'DROP DATABASE "{name}"')

    def write(self, lines: str, db: str, precision: str = "ns") -> tuple[int, bytes]:
        """Write line protocol directly (test setup, e.g. to fix a field's type first)."""
        url = f"{self.url}/write?" + urllib.parse.urlencode({"db": db, "precision": precision[:1]})
        return _http("POST", url, lines.encode(), self._headers(True))


class VictoriaServer:
    """Debian's ``victoria-metrics`` single-node server on a free port (v2 write endpoint)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = base / "victoria.log"
        base.mkdir(parents=True, exist_ok=True)
        self.proc: ManagedProcess | None = None

    def start(self) -> VictoriaServer:
        require_tool(VICTORIA, "apt-get install victoria-metrics")
        argv = [
            VICTORIA,
            f"-storageDataPath={self.base}/data",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",
            "-search.disableCache",
            "-loggerLevel=ERROR",
        ]
        self.proc = ManagedProcess(argv, self.log).start()
        wait_for(lambda: _http("GET", f"{self.url}/health", timeout=1.0)[0] == 200, 30, "victoria-metrics", self.log)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def export(self, match: str) -> list[dict[str, Any]]:
        """Series matching a selector, as VictoriaMetrics' JSON-lines export (flushes first)."""
        _http("GET", f"{self.url}/internal/force_flush")
        url = f"{self.url}/api/v1/export?" + urllib.parse.urlencode({"match[]": match})
        status, body = _http("GET", url)
        assert status == 200, body
        return [json.loads(line) for line in body.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    server = InfluxServer(tmp_path_factory.mktemp("influxdb")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def influxdb_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    server = InfluxServer(tmp_path_factory.mktemp("influxdb-auth"), auth=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def influx_db(influxdb: InfluxServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database on the shared server for one test, dropped afterwards."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:60]
    influxdb.create_database(name)
    try:
        yield name
    finally:
        if influxdb.proc is not None and influxdb.proc.alive():
            influxdb.drop_database(name)


@pytest.fixture(scope="session")
def victoria_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaServer]:
    server = VictoriaServer(tmp_path_factory.mktemp("victoria")).start()
    try:
        yield server
    finally:
        server.stop()
