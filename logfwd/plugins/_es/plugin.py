"""The ``es`` output (alias ``elasticsearch``): chunks to Elasticsearch ``_bulk``.

Options, values and defaults are Fluent Bit's ``es`` output's, so its config
sections move over unchanged. Each chunk becomes one NDJSON body
(``bulk.build_bulk``) sent as one request through the official client's
transport (``client.py``). The answer is judged per document (``reply.py``),
because a bulk request is not atomic.

A whole-request failure (connection refused, timeout, 429, 5xx, auth) retries
the whole chunk; the engine owns backoff and ``Retry_Limit``. A 413 splits the
body in halves (``logfwd.net.bisect``) so an oversized chunk still gets through;
a lone document still too large is refused. Statuses are judged by
``logfwd.net.http.classify``, except that 401/403/404 are retried (an operator
can fix credentials, or the host and path), as Fluent Bit does.

Beyond Fluent Bit: ``Id_Mode derived`` gives each record an ``_id`` derived from
its origin key (set by inputs, e.g. tail's ``<file fingerprint>:<offset>``) and
the tag, so a replay after a crash is deduplicated by Elasticsearch; and
``Suppress_Type_Name`` left unset asks the server its version once and omits
``_type`` for Elasticsearch 7+ and OpenSearch (Elasticsearch 8 refuses it).
"""

from __future__ import annotations

import functools
import gzip
import sys
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import orjson
import trio

from logfwd.net.bisect import Answer, bisect_send
from logfwd.net.http import Verdict, classify
from logfwd.net.tls import tls_context
from logfwd.plugin import Chunk, ConfigValueError, Output, Result, as_list
from logfwd.recordpath import RecordPathError, compile_path

from . import bulk as esbulk
from . import settings as opts
from .client import EsClient, RequestHook
from .reply import AllStored, error_text, judge_items
from .settings import parse_cloud_id

__all__ = ["EsOutput", "parse_cloud_id"]

# Above these sizes, CPU-heavy steps run in a worker thread so the event loop
# (and with it every input) keeps moving while a big chunk is encoded.
# The bulk answer reduced to what the verdicts read: a status (and error) per record, and a
# whole-request error. Unfiltered, each record's answer carries its index, id, version,
# sequence number and shard counts, about ten times the bytes, which the server writes and
# we parse for every record (filter_path: Elasticsearch since 1.6, OpenSearch).
_ANSWER_FIELDS = "errors,items.*.status,items.*.error,error,status"
_THREAD_RECORDS = 2000
_THREAD_GZIP_BYTES = 256 * 1024

# Retried although the HTTP table refuses them: an operator can fix credentials, host or path.
_RETRY_STATUSES = (401, 403, 404)


class EsOutput(Output):
    name = "es"
    description = "Send records to Elasticsearch (or OpenSearch) with the _bulk API"
    options = opts.OPTIONS

    # ------------------------------------------------------------- setup

    def setup(self) -> None:
        s = self.settings
        self._check(s)
        self.host, self.port, self.use_tls = opts.endpoint(s)
        self.auth_header = opts.auth_header(s)
        if self.auth_header and not self.use_tls:
            self.log.warning("credentials are sent without TLS to %s:%s (set tls on)", self.host, self.port)
        self.ssl_context = tls_context({**self.config, "tls": self.use_tls}) if self.use_tls else None
        self.buffer_size = opts.buffer_size(s.buffer_size)
        self.compress = s.compress == "gzip"
        path = "/" + s.path.strip("/") if s.path and s.path.strip("/") else ""
        query = [f"filter_path={_ANSWER_FIELDS}"]
        if s.pipeline:
            query.insert(0, "pipeline=" + quote(s.pipeline, safe=""))
        self.target = f"{path}/_bulk?" + "&".join(query)
        self.path_prefix = path
        self.suppress: bool | None = s.suppress_type_name
        self._settings_base = opts.bulk_base(s)
        self.bulk_settings: esbulk.BulkSettings | None = None
        if self.suppress is not None:
            self.bulk_settings = esbulk.BulkSettings(suppress_type_name=self.suppress, **self._settings_base)
        self.client: EsClient | None = None
        self._detect_lock = trio.Lock()

    @staticmethod
    def _check(s: Any) -> None:
        """Refuse settings that cannot work, naming the key."""
        for key in ("logstash_prefix_key", "id_key"):
            if getattr(s, key):
                try:
                    compile_path(getattr(s, key))
                except RecordPathError as e:
                    raise ConfigValueError(key, str(e)) from None
        op = s.write_operation
        if op in ("update", "upsert") and not (s.id_key or s.generate_id or s.id_mode == "derived"):
            raise ConfigValueError(
                "write_operation", f"{op} needs document ids: set Id_Key, Generate_ID on, or Id_Mode derived")
        for key in ("time_key_format", "logstash_dateformat", "index"):
            try:
                time.strftime(getattr(s, key), time.gmtime(0))
            except ValueError as e:
                raise ConfigValueError(key, f"invalid strftime format {getattr(s, key)!r}: {e}") from None
        if s.include_tag_key and not s.tag_key:
            raise ConfigValueError("tag_key", "must not be empty with Include_Tag_Key on")

    # ------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        s = self.settings
        self.client = EsClient(
            self.host, self.port, ssl_context=self.ssl_context, vhost=s.tls_vhost, auth_header=self.auth_header,
            connect_timeout=s.net_connect_timeout or None, io_timeout=s.net_io_timeout or None,
            compressed_answers=self.compress, connections=s.workers, request_hooks=self.request_hooks())

    def request_hooks(self) -> list[RequestHook]:
        """Hooks run on every request before it is sent; the opensearch output signs there (SigV4)."""
        return []

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None

    # ------------------------------------------------------------- requests

    async def _request(self, method: str, target: str, body: bytes | None = None,
                       headers: dict[str, str] | None = None, bulk: bool = False) -> tuple[int, Any, str | None]:
        assert self.client is not None, "flush before start"
        return await self.client.request(method, target, body, headers, bulk)

    async def _settings_for_flush(self) -> esbulk.BulkSettings | str:
        """Bulk settings; with Suppress_Type_Name unset, learn the server version first."""
        if self.bulk_settings is not None:
            return self.bulk_settings
        async with self._detect_lock:
            if self.bulk_settings is not None:
                return self.bulk_settings
            status, resp, why = await self._request("GET", self.path_prefix + "/")
            if why is not None:
                return why
            suppress = True
            if 200 <= status < 300 and isinstance(resp, dict):
                version = resp.get("version") or {}
                number = str(version.get("number", ""))
                major = int(number.split(".")[0]) if number.split(".")[0].isdigit() else 8
                is_opensearch = version.get("distribution") == "opensearch"
                suppress = is_opensearch or major >= 7
                self.log.debug("server %s %s: mapping types %s", version.get("distribution", "elasticsearch"),
                               number, "omitted" if suppress else "sent")
            elif status in (401, 403):
                self.log.debug("cannot read the server version (%s); omitting mapping types", status)
            elif status == 429 or status >= 500:
                return f"HTTP {status} from {self.host}:{self.port}"
            self.bulk_settings = esbulk.BulkSettings(suppress_type_name=suppress, **self._settings_base)
            return self.bulk_settings

    async def flush(self, chunk: Chunk) -> Result:
        if not chunk.records:
            return Result.ok()
        settings = await self._settings_for_flush()
        if isinstance(settings, str):
            return Result.retry_everything(f"es: {settings}")
        n = len(chunk.records)
        outcomes = await bisect_send(range(n), functools.partial(self._send, chunk, settings))
        return outcomes.result(n)

    async def _encode(self, chunk: Chunk, settings: esbulk.BulkSettings, idx: Sequence[int]) -> esbulk.BulkRequest:
        """The bulk body of the records at ``idx`` (in a worker thread when big)."""
        whole = len(idx) == len(chunk.records)
        times = chunk.times if whole else [chunk.times[i] for i in idx]
        records = chunk.records if whole else [chunk.records[i] for i in idx]
        keys = None
        if settings.id_mode == "derived" and chunk.keys:  # only derived ids read them: format them only then
            keys = as_list(chunk.keys) if whole else [chunk.keys[i] for i in idx]

        def build() -> esbulk.BulkRequest:
            return esbulk.build_bulk(settings, chunk.tag, times, records, keys)

        return await trio.to_thread.run_sync(build) if len(records) >= _THREAD_RECORDS else build()

    async def _body(self, body: bytes) -> tuple[bytes, dict[str, str]]:
        """The request body as sent (gzipped with Compress gzip) and its headers."""
        headers = {"content-type": "application/x-ndjson"}
        if self.compress:
            if len(body) >= _THREAD_GZIP_BYTES:
                body = await trio.to_thread.run_sync(gzip.compress, body)
            else:
                body = gzip.compress(body)
            headers["content-encoding"] = "gzip"
        return body, headers

    async def _send(self, chunk: Chunk, settings: esbulk.BulkSettings, idx: Sequence[int]) -> Answer:
        """Send the records at ``idx`` (chunk indices) as one request; verdicts count within ``idx``."""
        req = await self._encode(chunk, settings, idx)
        unencodable = Result(refused=list(req.failed))
        if not req.positions:
            return Answer(Verdict.DELIVERED, detail=unencodable)
        if self.settings.trace_output:
            await trio.to_thread.run_sync(_print_stdout, req.body)
        body, headers = await self._body(req.body)
        status, resp, why = await self._request("POST", self.target, body, headers, bulk=True)
        where = f"{self.host}:{self.port}"
        if why is not None:
            self.log.warning("cannot reach Elasticsearch at %s: %s", where, why)
            return Answer(Verdict.RETRY, f"es {where}: {why}", unencodable)
        if not 200 <= status < 300:
            return self._whole_failure(status, resp, where, req.body, unencodable)
        return self._judge(resp, req, settings, where)

    def _judge(self, resp: Any, req: esbulk.BulkRequest, settings: esbulk.BulkSettings, where: str) -> Answer:
        """The verdicts of a 2xx bulk answer, for the encoded records and the unencodable ones."""
        unencodable = Result(refused=list(req.failed))
        npos = len(req.positions)
        if isinstance(resp, AllStored):
            if resp.items == npos:
                return Answer(Verdict.DELIVERED, detail=unencodable)
            resp = resp.full()  # item count off: judge item by item, as any other answer
        if not isinstance(resp, dict) or not isinstance(resp.get("items"), list):
            self.log.warning("unexpected answer from %s: %.200r", where, resp)
            return Answer(Verdict.RETRY, f"es {where}: unexpected bulk answer", unencodable)
        if resp.get("errors") is False and len(resp["items"]) == npos:
            return Answer(Verdict.DELIVERED, detail=unencodable)
        verdicts = judge_items(resp["items"], npos, settings.write_operation)
        self._count(verdicts.result, verdicts.duplicates, verdicts.skipped, npos, req.body, resp)
        detail = Result(refused=list(req.failed))
        detail.retry = [req.positions[j] for j in verdicts.result.retry or ()] or None
        detail.refused += [(req.positions[j], why) for j, why in verdicts.result.refused]
        detail.reason = verdicts.result.reason
        return Answer(Verdict.DELIVERED, detail=detail)

    def _count(self, result: Result, duplicates: int, skipped: int, n: int, body: bytes, resp: Any) -> None:
        if duplicates:
            self.metrics.inc("es_duplicates", duplicates)
        if duplicates or skipped:
            self.metrics.inc("skipped_records", duplicates + skipped)
        if result.refused:
            self.log.warning("Elasticsearch refused %d of %d records, e.g. %s", len(result.refused), n,
                             result.refused[0][1])
        if result.retry:
            self.log.info("Elasticsearch asked to retry %d of %d records", len(result.retry), n)
        if (result.refused or result.retry) and self.settings.trace_error:
            self.log.error("bulk errors\nrequest:\n%s\nanswer:\n%s", body.decode("utf-8", "replace"),
                           self._clip(resp))

    def _whole_failure(self, status: int, resp: Any, where: str, body: bytes, unencodable: Result) -> Answer:
        """The verdict on a bulk request answered with a non-2xx status."""
        reason = error_text(resp) or f"HTTP {status}"
        msg = f"es {where}: HTTP {status}: {reason}"
        if self.settings.trace_error:
            self.log.error("bulk request failed: %s\nrequest:\n%s\nanswer:\n%s", msg,
                           body.decode("utf-8", "replace"), self._clip(resp))
        verdict = classify(status, retry=_RETRY_STATUSES)
        if status in (401, 403):
            self.log.error("%s (check HTTP_User/HTTP_Passwd, HTTP_API_Key or Cloud_Auth)", msg)
        elif status == 404:
            self.log.error("%s (check Host, Port and Path)", msg)
        elif verdict is Verdict.SPLIT:
            self.log.info("%s; splitting the request", msg)  # too big for http.max_content_length
        elif verdict is Verdict.RETRY:
            self.log.warning("%s; will retry", msg)
        else:
            # Any other 4xx on the whole request (a 400 for an unknown _type): the same
            # body will always fail the same way.
            self.log.error("%s; the records are refused", msg)
        return Answer(verdict, msg, unencodable)

    def _clip(self, resp: Any) -> str:
        text = resp if isinstance(resp, str) else orjson.dumps(resp, default=str).decode()
        return text if self.buffer_size is None else text[: self.buffer_size]


def _print_stdout(data: bytes) -> None:
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


PLUGIN = EsOutput
