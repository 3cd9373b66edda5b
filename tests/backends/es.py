"""Elasticsearch stand-in for tests: a real noida-db server (answers as Elasticsearch 8.15).

No real Elasticsearch can run on these machines; noida-db (PyPI, a single
binary inside the wheel) speaks the REST API the ``es`` output uses: ``_bulk``
with per-item 201/409/400/404 answers, mappings, ingest pipelines, gzip bodies,
``_refresh``, ``_count`` and ``_search``. What it cannot do (429, 503, stalls,
resets, TLS, auth) is tested through ``tests/faultproxy.py`` in front of it.

``es_server`` is one server for the session; ``es_server_factory`` starts private
servers for tests that stop and restart one. Every start uses a fresh data
directory: noida-db saves its data on shutdown and would reload it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ._proc import ManagedProcess, free_port, wait_for


def noida_binary() -> str:
    try:
        import noida_db  # noqa: PLC0415 - installed by the test command only; fail with how to get it
    except ImportError:
        pytest.fail("noida-db is not installed: pip install noida-db==0.2.3 (the test command installs it)")
    path = os.path.join(os.path.dirname(noida_db.__file__), "noida-db")
    if not os.path.exists(path):
        pytest.fail(f"noida-db binary missing at {path}")
    mode = os.stat(path).st_mode
    if not mode & stat.S_IXUSR:
        os.chmod(path, mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


class EsServer:
    """A running noida-db with a few helpers to read back what an output wrote."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> EsServer:
        data = self.workdir / "data"
        shutil.rmtree(data, ignore_errors=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = ManagedProcess(
            [noida_binary(), "start", "--data-dir", str(data), "--host", "127.0.0.1", "--only", "elasticsearch",
             "--elasticsearch-port", str(self.port)],
            self.workdir / "noida.log",
        ).start()
        wait_for(self._healthy, 30, f"noida-db (Elasticsearch) on port {self.port}", self.workdir / "noida.log")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def _healthy(self) -> bool:
        if self.proc is not None and not self.proc.alive():
            raise RuntimeError("noida-db exited")
        status, body = self.request("GET", "/_cluster/health")
        return status == 200 and "status" in body

    def request(self, method: str, path: str, body: Any = None, ndjson: bytes | None = None) -> tuple[int, Any]:
        data = None
        headers = {}
        if ndjson is not None:
            data, headers["Content-Type"] = ndjson, "application/x-ndjson"
        elif body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw.decode("utf-8", "replace")

    def refresh(self, index: str = "_all") -> None:
        self.request("POST", f"/{index}/_refresh")

    def count(self, index: str) -> int:
        self.refresh(index)
        status, body = self.request("GET", f"/{index}/_count")
        if status == 404:
            return 0
        assert status == 200, body
        return int(body["count"])

    def docs(self, index: str, size: int = 10000) -> list[dict[str, Any]]:
        """Every document of ``index`` (hits with ``_id``, ``_index`` and ``_source``)."""
        self.refresh(index)
        status, body = self.request("POST", f"/{index}/_search", {"size": size, "query": {"match_all": {}}})
        if status == 404:
            return []
        assert status == 200, body
        return list(body["hits"]["hits"])

    def sources(self, index: str) -> list[dict[str, Any]]:
        return [h["_source"] for h in self.docs(index)]

    def indices(self, pattern: str = "*") -> list[str]:
        status, body = self.request("GET", f"/_cat/indices/{pattern}?format=json")
        assert status == 200, body
        return sorted(i["index"] for i in body)


@pytest.fixture(scope="session")
def es_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EsServer]:
    """One real noida-db (Elasticsearch 8.15 API) for the whole session."""
    server = EsServer(tmp_path_factory.mktemp("noida-es")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def es_server_factory(tmp_path: Path) -> Iterator[Callable[[], EsServer]]:
    """Start private noida-db servers (stopped at the end of the test)."""
    servers: list[EsServer] = []

    def make() -> EsServer:
        s = EsServer(tmp_path / f"noida-{len(servers)}")
        servers.append(s)
        return s.start()

    try:
        yield make
    finally:
        for s in servers:
            s.stop()
