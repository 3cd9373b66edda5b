"""A test Kubernetes API server: real HTTPS, real list/watch wire format, injectable faults.

No Kubernetes control plane runs here, so this speaks the parts of the API a log
forwarder uses, as the real server does:

- ``GET /api/v1/pods`` (``fieldSelector=spec.nodeName=X``) and ``/api/v1/namespaces``: a
  ``PodList`` / ``NamespaceList`` with ``metadata.resourceVersion``;
- the same with ``watch=1``: a chunked stream of ``{"type": ..., "object": ...}`` lines
  (ADDED / MODIFIED / DELETED / BOOKMARK), resumed from ``resourceVersion``; a version
  older than the server keeps gets an ERROR event with a 410 ``Status`` ("Expired"),
  and the stream ends after ``timeoutSeconds``;
- ``GET /api/v1/namespaces/<ns>/pods/<name>`` and ``/api/v1/namespaces/<name>``, 404 Status
  when absent;
- bearer tokens: a request without an accepted token gets 401 with a ``Status`` body.

Faults: ``fail(status, n, retry_after)`` answers the next ``n`` requests with an error
status; ``down()`` / ``up()`` make every request fail with 503 (or hang, ``hang=True``);
``drop_watches()`` cuts every open watch connection; ``compact()`` forgets old versions
so resuming watches get 410. The certificate is made at test time with ``openssl``.
"""

from __future__ import annotations

import copy
import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

DATA = Path(__file__).resolve().parent.parent / "data" / "k8s"


def load_fixture(name: str) -> Any:
    return json.loads((DATA / name).read_text())


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (it is its own CA)."""
    crt, key = directory / "apiserver.crt", directory / "apiserver.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
                    "-days", "2", "-subj", "/CN=kubernetes",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc"],
                   check=True, capture_output=True)
    return crt, key


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class KubeState:
    """Objects, their versions and the event history watches replay from."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.rv = 1000
        self.min_rv = 0  # watches from below this get 410 (what etcd compaction does)
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {"pods": {}, "namespaces": {}}
        self.events: list[tuple[int, str, str, dict[str, Any]]] = []  # (rv, kind, type, object)
        self.generation = 0  # bumped by drop_watches()

    def _bump(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        obj = copy.deepcopy(obj)
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
        return obj

    def put(self, kind: str, obj: dict[str, Any]) -> None:
        with self.cond:
            md = obj["metadata"]
            key = (md.get("namespace", ""), md["name"])
            typ = "MODIFIED" if key in self.objects[kind] else "ADDED"
            obj = self._bump(obj)
            self.objects[kind][key] = obj
            self.events.append((self.rv, kind, typ, obj))
            self.cond.notify_all()

    def delete(self, kind: str, namespace: str, name: str) -> None:
        with self.cond:
            obj = self.objects[kind].pop((namespace, name))
            obj = self._bump(obj)
            self.events.append((self.rv, kind, "DELETED", obj))
            self.cond.notify_all()


class KubeApiServer:
    """The server; tests drive its state and faults through these methods."""

    def __init__(self, workdir: Path, cert: tuple[Path, Path] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.crt, self.key = cert or make_cert(workdir)
        self.state = KubeState()
        self.tokens = {"test-token-1"}
        self.token_file = workdir / "token"
        self.token_file.write_text("test-token-1\n")
        self.requests: list[tuple[str, dict[str, list[str]]]] = []
        self.kubelet_node = "node-a"  # whose pods /pods (the kubelet's endpoint) lists
        self._fail: list[tuple[int, float | None]] = []
        self._down: str | None = None  # None, "503" or "hang"
        self._lock = threading.Lock()
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.api = self
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.crt, self.key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> KubeApiServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.up()
        self.drop_watches()
        self.httpd.shutdown()
        self.httpd.server_close()

    # ---------------------------------------------------------------- objects

    def add_pod(self, pod: dict[str, Any]) -> None:
        self.state.put("pods", pod)

    def delete_pod(self, namespace: str, name: str) -> None:
        self.state.delete("pods", namespace, name)

    def add_namespace(self, ns: dict[str, Any]) -> None:
        self.state.put("namespaces", ns)

    def load_defaults(self) -> None:
        for ns in load_fixture("namespaces.json"):
            self.add_namespace(ns)
        for name in ("pod-web.json", "pod-api.json", "pod-quiet.json", "pod-other-node.json"):
            self.add_pod(load_fixture(name))

    # ---------------------------------------------------------------- faults

    def fail(self, code: int, n: int = 1, retry_after: float | None = None) -> None:
        with self._lock:
            self._fail.extend([(code, retry_after)] * n)

    def down(self, mode: str = "503") -> None:
        """Every request fails (503), or hangs without an answer (``"hang"``), until ``up()``."""
        self._down = mode
        self.drop_watches()

    def up(self) -> None:
        self._down = None
        with self.state.cond:
            self.state.cond.notify_all()

    def drop_watches(self) -> None:
        with self.state.cond:
            self.state.generation += 1
            self.state.cond.notify_all()

    def compact(self) -> None:
        """Forget every version up to now: a watch resuming from an older one gets 410 Gone."""
        with self.state.cond:
            self.state.rv += 1  # lists answer from here on; a watch from before it gets 410
            self.state.min_rv = self.state.rv
            self.state.events.clear()

    def bookmark(self) -> None:
        with self.state.cond:
            self.state.rv += 1
            self.state.events.append((self.state.rv, "*", "BOOKMARK", {}))
            self.state.cond.notify_all()

    def rotate_token(self, new: str, *, keep_old: bool = False) -> None:
        """Accept ``new`` (and stop accepting the old ones) and write it as the kubelet would: atomically."""
        self.tokens = ({*self.tokens, new} if keep_old else {new})
        tmp = self.token_file.with_suffix(".tmp")
        tmp.write_text(new + "\n")
        tmp.replace(self.token_file)

    def next_fault(self) -> tuple[int, float | None] | None:
        with self._lock:
            return self._fail.pop(0) if self._fail else None

    def count(self, path: str, watch: bool | None = None) -> int:
        return sum(1 for p, q in list(self.requests)
                   if p == path and (watch is None or (q.get("watch") == ["1"]) == watch))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    api: KubeApiServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # dropped connections are part of the tests


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        api = self.server.api
        u = urlsplit(self.path)
        q = parse_qs(u.query)
        api.requests.append((u.path, q))
        if api._down == "hang":
            with api.state.cond:
                api.state.cond.wait_for(lambda: api._down != "hang", timeout=60)
            self.close_connection = True
            return
        if api._down:
            self._json(503, status(503, "ServiceUnavailable", "the server is currently unable to handle the request"))
            return
        fault = api.next_fault()
        if fault is not None:
            code, after = fault
            self._json(code, status(code, "TooManyRequests" if code == 429 else "InternalError", f"injected {code}"),
                       {"Retry-After": str(int(after))} if after is not None else None)
            return
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in api.tokens:
            self._json(401, status(401, "Unauthorized", "Unauthorized"))
            return
        self._route(u.path, q)

    def _route(self, path: str, q: dict[str, list[str]]) -> None:
        parts = path.strip("/").split("/")
        if parts == ["pods"]:  # the kubelet's read-only pod list (Use_Kubelet): this node's pods
            self._list("pods", {"fieldSelector": [f"spec.nodeName={self.server.api.kubelet_node}"]})
        elif parts[:2] != ["api", "v1"]:
            self._json(404, status(404, "NotFound", "the server could not find the requested resource"))
        elif parts[2:] == ["pods"] or parts[2:] == ["namespaces"]:
            kind = parts[2]
            if q.get("watch") == ["1"]:
                self._watch(kind, q)
            else:
                self._list(kind, q)
        elif len(parts) == 6 and parts[2] == "namespaces" and parts[4] == "pods":
            self._get("pods", (parts[3], parts[5]))
        elif len(parts) == 4 and parts[2] == "namespaces":
            self._get("namespaces", ("", parts[3]))
        else:
            self._json(404, status(404, "NotFound", "the server could not find the requested resource"))

    @staticmethod
    def _selected(kind: str, obj: dict[str, Any], q: dict[str, list[str]]) -> bool:
        sel = (q.get("fieldSelector") or [""])[0]
        if kind != "pods" or not sel:
            return True
        field, _, value = sel.partition("=")
        assert field == "spec.nodeName", f"unsupported field selector {sel!r}"
        return bool((obj.get("spec") or {}).get("nodeName") == value)

    def _list(self, kind: str, q: dict[str, list[str]]) -> None:
        st = self.server.api.state
        with st.cond:
            items = [o for o in st.objects[kind].values() if self._selected(kind, o, q)]
            rv = st.rv
        list_kind = "PodList" if kind == "pods" else "NamespaceList"
        self._json(200, {"kind": list_kind, "apiVersion": "v1", "metadata": {"resourceVersion": str(rv)}, "items": items})

    def _get(self, kind: str, key: tuple[str, str]) -> None:
        st = self.server.api.state
        with st.cond:
            obj = st.objects[kind].get(key)
        if obj is None:
            self._json(404, status(404, "NotFound", f'{kind} "{key[1]}" not found'))
        else:
            self._json(200, obj)

    def _chunk(self, obj: Any) -> None:
        data = json.dumps(obj).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _watch(self, kind: str, q: dict[str, list[str]]) -> None:
        api = self.server.api
        st = api.state
        since = int((q.get("resourceVersion") or ["0"])[0] or 0)
        timeout = float((q.get("timeoutSeconds") or ["1800"])[0])
        bookmarks = (q.get("allowWatchBookmarks") or ["false"])[0] == "true"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        deadline = time.monotonic() + timeout
        with st.cond:
            gen = st.generation
            if since and since < st.min_rv:
                self._chunk({"type": "ERROR", "object": status(410, "Expired", f"too old resource version: {since} ({st.min_rv})")})
                self._end()
                return
        try:
            while True:
                with st.cond:
                    after = since
                    st.cond.wait_for(lambda: st.generation != gen or api._down is not None
                                     or any(e[0] > after for e in st.events),  # noqa: B023 - waited on here only
                                     timeout=max(0.0, deadline - time.monotonic()))
                    if st.generation != gen or api._down is not None:
                        self._cut()
                        return
                    new = [e for e in st.events if e[0] > since]
                for rv, k, typ, obj in new:
                    since = rv
                    if typ == "BOOKMARK":
                        if bookmarks:
                            res = "Pod" if kind == "pods" else "Namespace"
                            self._chunk({"type": "BOOKMARK", "object": {"kind": res, "apiVersion": "v1",
                                                                        "metadata": {"resourceVersion": str(rv)}}})
                    elif k == kind and self._selected(kind, obj, q):
                        self._chunk({"type": typ, "object": obj})
                if time.monotonic() >= deadline:
                    self._end()
                    return
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.close_connection = True

    def _end(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _cut(self) -> None:
        """Drop the connection mid-stream, as a crashed API server or a load balancer would."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


@pytest.fixture(scope="session")
def kube_api_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One certificate for every test API server of the session (making one takes a second)."""
    return make_cert(tmp_path_factory.mktemp("kubeapi-cert"))


@pytest.fixture
def kube_api(tmp_path: Path, kube_api_cert: tuple[Path, Path]) -> Iterator[KubeApiServer]:
    """A fresh test API server holding the fixture pods and namespaces (node ``node-a``)."""
    server = KubeApiServer(tmp_path / "kubeapi", kube_api_cert).start()
    server.load_defaults()
    try:
        yield server
    finally:
        server.stop()
