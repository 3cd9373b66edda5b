"""The ``es`` output (alias ``elasticsearch``): chunks to Elasticsearch ``_bulk``.

Options, values and defaults are Fluent Bit's ``es`` output's, so its config
sections move over unchanged. Each chunk becomes one NDJSON body
(``logfwd.esbulk.build_bulk``) sent as one request through the official client's
transport (``elasticsearch.AsyncElasticsearch``, httpx node, so it runs under
trio through anyio). The answer is judged per document, because a bulk request
is not atomic:

- 2xx: delivered; 409 on ``create``: the document already exists (a replay of a
  record whose ``_id`` we derived or generated), counted as delivered;
  404 ``document_missing_exception`` on ``update``: skipped, as Fluent Bit does;
- 429, 5xx, ``es_rejected_execution_exception``: only those records are retried;
- any other error (mapping conflicts, bad values, missing pipeline): refused for
  good with Elasticsearch's error type and reason (the engine dead-letters them).

A whole-request failure (connection refused, timeout, 429, 5xx, auth) retries
the whole chunk; the engine owns backoff and ``Retry_Limit``. A 413 splits the
body in halves (one level at a time) so an oversized chunk still gets through.

Beyond Fluent Bit: ``Id_Mode derived`` gives each record an ``_id`` derived from
its origin key (set by inputs, e.g. tail's ``<file fingerprint>:<offset>``) and
the tag, so a replay after a crash is deduplicated by Elasticsearch; and
``Suppress_Type_Name`` left unset asks the server its version once and omits
``_type`` for Elasticsearch 7+ and OpenSearch (Elasticsearch 8 refuses it).
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import gzip
import ssl
import time
from typing import Any
from urllib.parse import quote

import trio

from logfwd.options import Option, OptionError, parse_size
from logfwd.plugin import Chunk, ConfigValueError, Output, Result
from logfwd.recordpath import RecordPathError, compile_path

from . import bulk as esbulk

# Above these sizes, CPU-heavy steps run in a worker thread so the event loop
# (and with it every input) keeps moving while a big chunk is encoded.
_THREAD_RECORDS = 2000
_THREAD_GZIP_BYTES = 256 * 1024

_RETRY_ITEM_TYPES = frozenset({"es_rejected_execution_exception", "circuit_breaking_exception"})


def parse_cloud_id(cloud_id: str) -> tuple[str, int]:
    """Host and port of Elasticsearch from an Elastic Cloud id ``name:base64(host$es$kibana)``."""
    _, sep, encoded = cloud_id.partition(":")
    if not sep or not encoded:
        raise ValueError("expected <deployment name>:<base64 data>")
    try:
        decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as e:
        raise ValueError(f"the part after ':' is not base64: {e}") from None
    parts = decoded.split("$")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError("decoded data must be <host>$<elasticsearch id>$<kibana id>")
    host, _, port = parts[0].partition(":")
    return f"{parts[1]}.{host}", int(port) if port.isdigit() else 443


class _TrioClock:
    """Stands in for the asyncio loop the transport asks for: it only reads ``time()``.

    ``AsyncTransport`` grabs ``asyncio.get_running_loop()`` to time requests and
    to start sniffing tasks; under trio there is no asyncio loop. Sniffing stays
    off (a log forwarder talks to the hosts it is given), so only ``time`` is used.
    """

    @staticmethod
    def time() -> float:
        return time.monotonic()

    @staticmethod
    def create_task(coro: Any) -> Any:
        coro.close()
        raise RuntimeError("node sniffing is not supported by the es output")


def _transport_class() -> type:
    from elastic_transport import AsyncTransport

    class TrioAsyncTransport(AsyncTransport):  # type: ignore[misc]
        """The official async transport, made loop-agnostic (runs under trio via httpx/anyio)."""

        async def _async_call(self) -> None:
            if self._loop is None:
                self._loop = _TrioClock()

    return TrioAsyncTransport


# Set while this task waits for a ``_bulk`` answer: the JSON serializer then tries
# the cheap check below first. A context variable, because the transport calls the
# serializer itself and trio gives every task its own context.
_BULK_ANSWER: contextvars.ContextVar[bool] = contextvars.ContextVar("logfwd_es_bulk_answer", default=False)


class _AllStored:
    """A ``_bulk`` answer with ``"errors": false``, of which only the item count was read.

    Building a dict per item (``_index``, ``_id``, ``_shards``...) for answers that
    only say "all stored" cost more CPU than everything else the output does; msgspec
    validates the whole answer and counts the items without creating them. ``full()``
    gives the parsed answer, for the rare cases that need to look at the items.
    """

    __slots__ = ("items", "raw")

    def __init__(self, items: int, raw: bytes) -> None:
        self.items = items
        self.raw = raw

    def full(self) -> Any:
        """The parsed answer; None if orjson refuses what msgspec took (then it is retried)."""
        import orjson

        try:
            return orjson.loads(self.raw)
        except orjson.JSONDecodeError:
            return None


def _bulk_ok_decoder() -> Any:
    """A decoder of ``{"errors": <bool>, "items": [{...}, ...]}`` that keeps no item content."""
    try:
        import msgspec
    except ImportError:  # without msgspec every answer is parsed in full (slower, same outcome)
        return None

    # No fields: an item must be an object, its content is validated and skipped.
    # (defstruct: this module's postponed annotations would not resolve local names.)
    item = msgspec.defstruct("BulkItem", [])
    answer = msgspec.defstruct("BulkAnswer", [("errors", bool | None, None), ("items", list[item] | None, None)])
    return msgspec.json.Decoder(answer)


def _serializers() -> dict[str, Any]:
    """orjson for JSON answers; NDJSON request bodies pass through as the bytes we built."""
    from elastic_transport import OrjsonSerializer, Serializer, TextSerializer

    class RawNdjson(Serializer):  # type: ignore[misc]
        mimetype = "application/x-ndjson"

        def dumps(self, data: Any) -> bytes:
            # Already NDJSON (and maybe gzipped): the stock serializer would copy it
            # and append a newline, which corrupts a gzip stream.
            return bytes(data)

        def loads(self, data: bytes) -> Any:
            import orjson

            return [orjson.loads(line) for line in data.splitlines() if line.strip()]

    bulk_decoder = _bulk_ok_decoder()

    class BulkAwareJson(OrjsonSerializer):  # type: ignore[misc]
        """orjson, except that a clean ``_bulk`` answer becomes an ``_AllStored`` count.

        Anything else (errors true, odd shapes, invalid JSON, other requests) takes
        the stock path, so it is parsed, or refused, exactly as before.
        """

        def loads(self, data: bytes) -> Any:
            if bulk_decoder is not None and data and _BULK_ANSWER.get():
                try:
                    ans = bulk_decoder.decode(data)
                except Exception:  # noqa: BLE001 - any surprise: the stock path decides
                    ans = None
                if ans is not None and ans.errors is False and ans.items is not None:
                    return _AllStored(len(ans.items), bytes(data))
            return super().loads(data)

    js = BulkAwareJson()
    return {
        "application/json": js,
        "application/vnd.elasticsearch+json": js,
        "application/x-ndjson": RawNdjson(),
        "text/plain": TextSerializer(),
        "text/html": TextSerializer(),
    }


class EsOutput(Output):
    name = "es"
    description = "Send records to Elasticsearch (or OpenSearch) with the _bulk API"
    options = (
        Option("Host", "str", "127.0.0.1", "Elasticsearch host name or IP address"),
        Option("Port", "int", "9200", "Elasticsearch TCP port", minimum=1, maximum=65535),
        Option("Path", "str", "", "path prefix when Elasticsearch sits behind a reverse proxy on a sub-path"),
        Option("Index", "str", "fluent-bit", "index name (strftime patterns expand with the record time, UTC)"),
        Option("Type", "str", "_doc", "mapping type; ignored with Suppress_Type_Name"),
        Option("Suppress_Type_Name", "bool", None,
               "omit the mapping type; unset: ask the server once, omit for Elasticsearch 7+ and OpenSearch"),
        Option("Logstash_Format", "bool", "off", "index names <Logstash_Prefix><separator><date>"),
        Option("Logstash_Prefix", "str", "logstash", "index name prefix with Logstash_Format"),
        Option("Logstash_Prefix_Key", "str", None,
               "record accessor ($kubernetes['namespace_name']) whose value replaces Logstash_Prefix"),
        Option("Logstash_Prefix_Separator", "str", "-", "between the prefix and the date"),
        Option("Logstash_DateFormat", "str", "%Y.%m.%d", "strftime format of the date part (UTC)"),
        Option("Time_Key", "str", "@timestamp", "field that receives the record time"),
        Option("Time_Key_Format", "str", "%Y-%m-%dT%H:%M:%S", "strftime format of the time key (then .mmmZ)"),
        Option("Time_Key_Nanos", "bool", "off", "nanosecond fraction (.nnnnnnnnnZ) instead of milliseconds"),
        Option("Include_Tag_Key", "bool", "off", "add the tag to each document"),
        Option("Tag_Key", "str", "flb-key", "field that receives the tag with Include_Tag_Key"),
        Option("Generate_ID", "bool", "off", "_id = hash of the document (with its time): retries do not duplicate"),
        Option("Id_Key", "str", None, "record accessor whose (string) value becomes _id; overrides Generate_ID"),
        Option("Id_Mode", "str", "off",
               "derived: _id from each record's origin key (e.g. tail file+offset) and tag, so replays after a "
               "crash dedupe; records without a key get a hash of content and exact time",
               choices=("off", "derived")),
        Option("Write_Operation", "str", "create", "bulk operation: create, index, update or upsert",
               choices=esbulk.WRITE_OPERATIONS),
        Option("Pipeline", "str", None, "ingest pipeline to run on the documents"),
        Option("Replace_Dots", "bool", "off", "replace '.' in field names with '_'"),
        Option("Current_Time_Index", "bool", "off", "date the index name with the current time, not the record's"),
        Option("HTTP_User", "str", None, "basic authentication user"),
        Option("HTTP_Passwd", "str", None, "basic authentication password"),
        Option("HTTP_API_Key", "str", None, "API key (base64 id:key) sent as 'ApiKey'; ignored with HTTP_User"),
        Option("Cloud_ID", "str", None, "Elastic Cloud id <name>:<base64>; sets host, port and TLS"),
        Option("Cloud_Auth", "str", None, "Elastic Cloud credentials user:password"),
        Option("Compress", "str", None, "gzip the request body", choices=("gzip", "none", "off")),
        Option("Buffer_Size", "str", "512k", "how much of an error answer is logged (False: all of it)"),
        Option("Trace_Output", "bool", "off", "print every bulk body to standard output"),
        Option("Trace_Error", "bool", "off", "log the request and the answer when Elasticsearch reports errors"),
        Option("tls", "bool", "off", "use HTTPS"),
        Option("tls.verify", "bool", "on", "verify the server certificate and host name"),
        Option("tls.ca_file", "str", None, "CA certificates (PEM) to verify the server with"),
        Option("tls.ca_path", "str", None, "directory of CA certificates"),
        Option("tls.crt_file", "str", None, "client certificate (PEM)"),
        Option("tls.key_file", "str", None, "client private key (PEM)"),
        Option("tls.key_passwd", "str", None, "password of the client private key"),
        Option("net.connect_timeout", "time", "10s", "TCP/TLS connect timeout"),
        Option("net.io_timeout", "time", "60s", "time to wait for an answer (0: no limit)"),
    )

    # ------------------------------------------------------------- setup

    def setup(self) -> None:
        c = self.config
        op = c["write_operation"]
        id_mode = c["id_mode"]
        for key in ("logstash_prefix_key", "id_key"):
            if c[key]:
                try:
                    compile_path(c[key])
                except RecordPathError as e:
                    raise ConfigValueError(key, str(e)) from None
        if op in ("update", "upsert") and not (c["id_key"] or c["generate_id"] or id_mode == "derived"):
            raise ConfigValueError(
                "write_operation", f"{op} needs document ids: set Id_Key, Generate_ID on, or Id_Mode derived")
        for key in ("time_key_format", "logstash_dateformat", "index"):
            try:
                time.strftime(c[key], time.gmtime(0))
            except ValueError as e:
                raise ConfigValueError(key, f"invalid strftime format {c[key]!r}: {e}") from None
        if c["include_tag_key"] and not c["tag_key"]:
            raise ConfigValueError("tag_key", "must not be empty with Include_Tag_Key on")

        host, port, use_tls = c["host"], c["port"], bool(c["tls"])
        if c["cloud_id"]:
            try:
                host, port = parse_cloud_id(c["cloud_id"])
            except ValueError as e:
                raise ConfigValueError("cloud_id", f"invalid Cloud_ID: {e}") from None
            use_tls = True  # Elastic Cloud only speaks HTTPS
        self.host, self.port, self.use_tls = host, port, use_tls

        self.auth_header: str | None = None
        if c["http_user"]:
            self.auth_header = _basic(c["http_user"], c["http_passwd"] or "")
        elif c["cloud_auth"]:
            user, sep, pw = c["cloud_auth"].partition(":")
            if not sep:
                raise ConfigValueError("cloud_auth", "expected user:password")
            self.auth_header = _basic(user, pw)
        elif c["http_api_key"]:
            self.auth_header = f"ApiKey {c['http_api_key']}"
        if self.auth_header and not use_tls:
            self.log.warning("credentials are sent without TLS to %s:%s (set tls on)", host, port)

        bs = str(c["buffer_size"]).strip().lower()
        if bs in ("false", "off", "0", "unlimited"):
            self.buffer_size: int | None = None
        else:
            try:
                self.buffer_size = parse_size(bs)
            except OptionError as e:
                raise ConfigValueError("buffer_size", str(e)) from None

        self.compress = c["compress"] == "gzip"
        path = "/" + c["path"].strip("/") if c["path"] and c["path"].strip("/") else ""
        target = f"{path}/_bulk"
        if c["pipeline"]:
            target += "?pipeline=" + quote(c["pipeline"], safe="")
        self.target = target
        self.path_prefix = path
        self.suppress: bool | None = c["suppress_type_name"]
        self._settings_base = dict(
            index=c["index"],
            type=c["type"],
            logstash_format=c["logstash_format"],
            logstash_prefix=c["logstash_prefix"],
            logstash_prefix_key=c["logstash_prefix_key"],
            logstash_prefix_separator=c["logstash_prefix_separator"],
            logstash_dateformat=c["logstash_dateformat"],
            time_key=c["time_key"],
            time_key_format=c["time_key_format"],
            time_key_nanos=c["time_key_nanos"],
            include_tag_key=c["include_tag_key"],
            tag_key=c["tag_key"],
            generate_id=c["generate_id"],
            id_key=c["id_key"],
            id_mode="derived" if id_mode == "derived" else "none",
            write_operation=op,
            replace_dots=c["replace_dots"],
            current_time_index=c["current_time_index"],
        )
        self.bulk_settings: esbulk.BulkSettings | None = None
        if self.suppress is not None:
            self.bulk_settings = esbulk.BulkSettings(suppress_type_name=self.suppress, **self._settings_base)
        self.client: Any = None
        self.transport: Any = None
        self._detect_lock = trio.Lock()

    # ------------------------------------------------------------- lifecycle

    def _ssl_context(self) -> ssl.SSLContext:
        c = self.config
        ctx = ssl.create_default_context(cafile=c["tls.ca_file"], capath=c["tls.ca_path"])
        if not c["tls.verify"]:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if c["tls.crt_file"]:
            ctx.load_cert_chain(c["tls.crt_file"], c["tls.key_file"], password=c["tls.key_passwd"])
        return ctx

    async def start(self) -> None:
        import logging

        import httpx
        from elasticsearch import AsyncElasticsearch

        # The libraries log every request (httpx at INFO) and every node failure with a
        # traceback (elastic_transport at WARNING); this output logs each failure once,
        # with the reason, so quiet them unless the user configured them explicitly.
        for name, level in (("httpx", logging.WARNING), ("elastic_transport", logging.ERROR)):
            lg = logging.getLogger(name)
            if lg.level == logging.NOTSET:
                lg.setLevel(level)
        c = self.config
        kwargs: dict[str, Any] = {}
        if self.use_tls:
            try:
                kwargs["ssl_context"] = self._ssl_context()
            except (OSError, ssl.SSLError) as e:
                raise RuntimeError(f"es output {self.ctx.instance}: cannot load TLS files: {e}") from e
        io_timeout = c["net.io_timeout"] or None
        self.client = AsyncElasticsearch(
            hosts=[{"scheme": "https" if self.use_tls else "http", "host": self.host, "port": self.port}],
            node_class="httpxasync",
            transport_class=_transport_class(),
            serializers=_serializers(),
            max_retries=0,  # the engine retries, with backoff
            retry_on_timeout=False,
            request_timeout=io_timeout,
            http_compress=False,  # we gzip ourselves, off the event loop for big bodies
            **kwargs,
        )
        self.transport = self.client.transport
        timeout = httpx.Timeout(io_timeout, connect=c["net.connect_timeout"] or None)
        for node in self.transport.node_pool.all():
            node.client.timeout = timeout

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None

    # ------------------------------------------------------------- requests

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = {"accept": "application/json", "user-agent": "logfwd"}
        if self.auth_header:
            h["authorization"] = self.auth_header
        if extra:
            h.update(extra)
        return h

    async def _request(self, method: str, target: str, body: bytes | None = None,
                       headers: dict[str, str] | None = None, bulk: bool = False) -> tuple[int, Any, str | None]:
        """(status, parsed body, None) or (0, None, why) when no HTTP answer came back.

        With ``bulk``, a 2xx answer reporting no errors comes back as ``_AllStored``.
        """
        from elastic_transport import ConnectionTimeout, SerializationError, TransportError

        token = _BULK_ANSWER.set(bulk)
        try:
            # No transport-level retries: one attempt per flush, the engine retries with backoff.
            meta, resp = await self.transport.perform_request(
                method, target, body=body, headers=self._headers(headers),
                max_retries=0, retry_on_status=(), retry_on_timeout=False)
        except ConnectionTimeout as e:
            return 0, None, f"timeout: {_describe(e)}"
        except SerializationError as e:
            return 0, None, f"unreadable answer: {_describe(e)}"
        except TransportError as e:
            return 0, None, _describe(e)
        finally:
            _BULK_ANSWER.reset(token)
        if isinstance(resp, _AllStored) and not 200 <= meta.status < 300:
            resp = resp.full()  # a failed request is judged (and logged) from the whole answer
        return meta.status, resp, None

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
        return await self._flush_indices(chunk, settings, list(range(len(chunk.records))))

    async def _flush_indices(self, chunk: Chunk, settings: esbulk.BulkSettings, idx: list[int]) -> Result:
        """Send the records at ``idx`` (chunk indices) as one request; the Result uses chunk indices."""
        whole = len(idx) == len(chunk.records)
        times = chunk.times if whole else [chunk.times[i] for i in idx]
        records = chunk.records if whole else [chunk.records[i] for i in idx]
        keys = (chunk.keys or None) if whole else [chunk.keys[i] for i in idx] if chunk.keys else None

        def build() -> esbulk.BulkRequest:
            return esbulk.build_bulk(settings, chunk.tag, times, records, keys)

        req = await trio.to_thread.run_sync(build) if len(records) >= _THREAD_RECORDS else build()
        refused = [(idx[i], why) for i, why in req.failed]
        if not req.positions:
            return Result(refused=refused, reason=refused[0][1] if refused else "")
        positions = [idx[j] for j in req.positions]

        if self.config["trace_output"]:
            await trio.to_thread.run_sync(_print_stdout, req.body)

        body = req.body
        extra = {"content-type": "application/x-ndjson"}
        if self.compress:
            if len(body) >= _THREAD_GZIP_BYTES:
                body = await trio.to_thread.run_sync(gzip.compress, body)
            else:
                body = gzip.compress(body)
            extra["content-encoding"] = "gzip"

        status, resp, why = await self._request("POST", self.target, body, extra, bulk=True)
        where = f"{self.host}:{self.port}"
        if why is not None:
            self.log.warning("cannot reach Elasticsearch at %s: %s", where, why)
            return _retry(positions, refused, f"es {where}: {why}", whole and not refused)
        if status == 413 and len(positions) > 1:
            # Too big for http.max_content_length: split, each half one request.
            half = len(positions) // 2
            a = await self._flush_indices(chunk, settings, positions[:half])
            b = await self._flush_indices(chunk, settings, positions[half:])
            return _merge(a, b, positions[:half], positions[half:], refused)
        if not 200 <= status < 300:
            retry, msg = self._whole_failure(status, resp, where, req.body)
            if retry:
                return _retry(positions, refused, msg, whole and not refused)
            return Result(refused=refused + [(p, msg) for p in positions], reason=msg)
        if isinstance(resp, _AllStored):
            if resp.items == len(positions):
                return Result(refused=refused, reason=refused[0][1] if refused else "")
            resp = resp.full()  # item count off: judge item by item, as any other answer
        if not isinstance(resp, dict) or not isinstance(resp.get("items"), list):
            self.log.warning("unexpected answer from %s: %.200r", where, resp)
            return _retry(positions, refused, f"es {where}: unexpected bulk answer", whole and not refused)
        if resp.get("errors") is False and len(resp["items"]) == len(positions):
            return Result(refused=refused, reason=refused[0][1] if refused else "")
        result = self._judge_items(resp["items"], positions, settings, req.body, resp)
        if refused:
            result.refused = refused + result.refused
            result.reason = result.reason or refused[0][1]
        return result

    def _whole_failure(self, status: int, resp: Any, where: str, body: bytes) -> tuple[bool, str]:
        """(retry?, reason) for a bulk request answered with a non-2xx status."""
        reason = _error_text(resp) or f"HTTP {status}"
        msg = f"es {where}: HTTP {status}: {reason}"
        if self.config["trace_error"]:
            self.log.error("bulk request failed: %s\nrequest:\n%s\nanswer:\n%s", msg,
                           body.decode("utf-8", "replace"), self._clip(resp))
        if status in (401, 403):
            self.log.error("%s (check HTTP_User/HTTP_Passwd, HTTP_API_Key or Cloud_Auth)", msg)
            return True, msg
        if status == 404:
            self.log.error("%s (check Host, Port and Path)", msg)
            return True, msg
        if status in (408, 429) or status >= 500 or status < 400:
            self.log.warning("%s; will retry", msg)
            return True, msg
        # Any other 4xx on the whole request (a 400 for an unknown _type, a 413 for a
        # single oversized record): the same body will always fail the same way.
        self.log.error("%s; the records are refused", msg)
        return False, msg

    def _judge_items(self, items: list[Any], positions: list[int], settings: esbulk.BulkSettings,
                     body: bytes, resp: Any) -> Result:
        op = settings.write_operation
        retry: list[int] = []
        refused: list[tuple[int, str]] = []
        duplicates = skipped = 0
        for j, pos in enumerate(positions):
            if j >= len(items):
                retry.append(pos)  # no answer for this action: try it again
                continue
            item = items[j]
            info = next(iter(item.values()), {}) if isinstance(item, dict) and item else {}
            st = info.get("status", 0) if isinstance(info, dict) else 0
            if 200 <= st < 300:
                continue
            err = info.get("error") if isinstance(info, dict) else None
            etype = err.get("type", "") if isinstance(err, dict) else str(err or "")
            if st == 409 and op == "create":
                duplicates += 1
                continue
            if st == 404 and op == "update" and etype in ("document_missing_exception", "index_not_found_exception"):
                skipped += 1
                continue
            if st == 429 or st >= 500 or etype in _RETRY_ITEM_TYPES or st == 409 or not st:
                retry.append(pos)
                continue
            refused.append((pos, f"{st} {_error_text(info) or etype}"))
        if duplicates:
            self.metrics.inc("es_duplicates", duplicates)
        if duplicates or skipped:
            self.metrics.inc("skipped_records", duplicates + skipped)
        if refused:
            self.log.warning("Elasticsearch refused %d of %d records, e.g. %s", len(refused), len(positions),
                             refused[0][1])
        if retry:
            self.log.info("Elasticsearch asked to retry %d of %d records", len(retry), len(positions))
        if (refused or retry) and self.config["trace_error"]:
            self.log.error("bulk errors\nrequest:\n%s\nanswer:\n%s", body.decode("utf-8", "replace"),
                           self._clip(resp))
        reason = refused[0][1] if refused else ("retry requested by Elasticsearch" if retry else "")
        return Result(retry=retry or None, refused=refused, reason=reason)

    def _clip(self, resp: Any) -> str:
        import orjson

        text = resp if isinstance(resp, str) else orjson.dumps(resp, default=str).decode()
        return text if self.buffer_size is None else text[: self.buffer_size]


def _describe(exc: BaseException) -> str:
    """The most telling message in an exception chain (httpx/trio wrap the real cause deeply)."""
    seen: set[int] = set()
    parts: list[str] = []
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        text = str(getattr(e, "message", "") or e).strip()
        if type(e).__name__ == "Cancelled":  # trio's deadline inside httpx: the timeout says it already
            continue
        if isinstance(e, ssl.SSLError):
            text = f"TLS: {getattr(e, 'verify_message', None) or e.reason or e}"
        if text and text not in parts and not any(text in p for p in parts):
            parts.append(f"{type(e).__name__}: {text}" if not text.startswith("TLS") else text)
        todo.extend(x for x in getattr(e, "errors", ()) or () if isinstance(x, BaseException))
        for nxt in (e.__cause__, e.__context__):
            if nxt is not None:
                todo.append(nxt)
    return "; ".join(parts[-2:]) if parts else type(exc).__name__


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _error_text(obj: Any) -> str:
    """``type: reason (caused by type: reason)`` from an Elasticsearch error object or answer."""
    if not isinstance(obj, dict):
        return str(obj)[:500] if obj else ""
    err = obj.get("error", obj)
    if isinstance(err, str):
        return err
    if not isinstance(err, dict):
        return ""
    text = f"{err.get('type', 'error')}: {err.get('reason', '')}".strip()
    cause = err.get("caused_by")
    if isinstance(cause, dict) and cause.get("reason"):
        text += f" (caused by {cause.get('type', '')}: {cause['reason']})"
    return text


def _retry(positions: list[int], refused: list[tuple[int, str]], reason: str, everything: bool) -> Result:
    """Retry ``positions``; the whole chunk when nothing else (refused records) is in it."""
    if everything:
        return Result.retry_everything(reason)
    return Result(retry=list(positions), refused=refused, reason=reason)


def _merge(a: Result, b: Result, ia: list[int], ib: list[int], refused: list[tuple[int, str]]) -> Result:
    """One Result for two halves sent separately (all indices are chunk indices)."""
    retry: list[int] = []
    for r, idx in ((a, ia), (b, ib)):
        if r.retry_all:
            retry.extend(idx)
        elif r.retry:
            retry.extend(r.retry)
    refused = refused + a.refused + b.refused
    return Result(retry=sorted(retry) or None, refused=refused,
                  reason=a.reason or b.reason or (refused[0][1] if refused else ""))


def _print_stdout(data: bytes) -> None:
    import sys

    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


PLUGIN = EsOutput
