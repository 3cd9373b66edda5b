"""The ``influxdb`` output: records as line protocol points to InfluxDB (API v1 or v2).

Options are Fluent Bit's (``Host``, ``Port``, ``Database``, ``Bucket``, ``Org``,
``Sequence_Tag``, ``HTTP_User``/``HTTP_Passwd``, ``HTTP_Token``, ``HTTP_Header``,
``Tag_Keys``, ``Auto_Tags``, ``Tags_List_Enabled``/``Tags_List_Key``, ``Uri``,
``Add_Integer_Suffix``, ``tls.*``) plus ``Precision``, ``Measurement`` and
``Measurement_Key``. As in Fluent Bit the measurement is the record's tag unless
configured otherwise, and ``Bucket`` (or ``HTTP_Token``) selects the v2 API
(``/api/v2/write?org=&bucket=``, ``Authorization: Token``).

Delivery, and what each answer means for the chunk:

- 2xx: every point was written.
- 400 / 413 / 422: some or all points were refused for good (type conflict, unparsable
  line, too large, outside the retention policy). The server says how many it dropped
  and names only the first offender, and with InfluxDB 1.x the other points of the
  request *were* written. So the request is split in halves and re-sent, recursively,
  until each refused point is alone in a request that fails: exactly those points are
  refused (dead-lettered) with the server's own message, the rest are delivered.
  Re-sending a point already written is harmless: InfluxDB stores one value per series,
  field and timestamp, so writing the same point again overwrites it with itself. That
  holds because a record always serializes to the same line, sequence tag included (the
  value is remembered per in-flight record until it is resolved). When the server says it
  dropped every point of a request (``dropped=N`` with N = points sent), they are all
  refused without splitting further.
- 401 / 403, 404 (unknown database), 429, 5xx, timeouts and connection errors: nothing
  is refused; the whole chunk (or, in the middle of a split, what is not yet resolved) is
  retried by the engine. Authentication failures are logged as such and counted in
  ``auth_failures`` (Fluent Bit also retries).

HTTP statuses are judged by ``logfwd.net.http.classify`` (401/403/404 retried), the
halving by ``logfwd.net.bisect``; the request itself is ``client.py``.

Metrics added here: ``requests`` and ``request_seconds`` (time spent in HTTP requests, bisection included),
``skipped_records`` (records with no field to write), ``auth_failures``.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Sequence
from typing import Any

import httpx

from logfwd.net.bisect import Answer, bisect_send
from logfwd.net.http import Verdict, classify
from logfwd.net.tls import TLS_OPTIONS, tls_context
from logfwd.options import Option
from logfwd.plugin import Chunk, ConfigValueError, Output, Result

from ._lineproto import Sequencer
from .client import InfluxClient
from .lineproto import Encoded, LineEncoder

_BAD_DATA = (400, 413, 422)
_RETRY_STATUSES = (401, 403, 404)
_DROPPED_RE = re.compile(r"dropped=(\d+)")
_SEQ_MEMO_MAX = 1_000_000
_V1_PRECISION = {"ns": "n", "us": "u", "ms": "ms", "s": "s"}
_OFF = {"off", "false", "no", "none", ""}


class InfluxDBOutput(Output):
    name = "influxdb"
    description = "InfluxDB time series database (line protocol, API v1 or v2)"
    options = (
        Option("Host", "str", "127.0.0.1", "InfluxDB host name or IP address"),
        Option("Port", "int", "8086", "InfluxDB HTTP port", minimum=1, maximum=65535),
        Option("Database", "str", "fluentbit", "database (API v1); ignored when Bucket is set"),
        Option("Bucket", "str", None, "bucket (API v2); setting it selects the v2 API"),
        Option("Org", "str", "fluent", "organization of the bucket (API v2)"),
        Option("Sequence_Tag", "str", "_seq",
               "tag numbering the points that share a timestamp (0, 1, ...) so they stay distinct; "
               "off disables it"),
        Option("HTTP_User", "str", None, "user for HTTP basic authentication"),
        Option("HTTP_Passwd", "str", "", "password of HTTP_User"),
        Option("HTTP_Token", "str", None, "API token (Authorization: Token); selects the v2 API, "
               "HTTP_User/HTTP_Passwd are then ignored"),
        Option("HTTP_Header", "str", None, "extra request header 'Name value' (repeatable)", multi=True),
        Option("Tag_Keys", "list", None, "record keys written as tags (space or comma separated)"),
        Option("Auto_Tags", "bool", "off", "write every string value as a tag"),
        Option("Tags_List_Enabled", "bool", "off", "tag the keys listed in each record's Tags_List_Key"),
        Option("Tags_List_Key", "str", "tags", "record key holding a list of key names to tag"),
        Option("Uri", "str", None, "custom request path (and query) instead of /write or /api/v2/write"),
        Option("Add_Integer_Suffix", "bool", "off", "write integers as InfluxDB integers (123i), not floats"),
        Option("Precision", "str", "ns", "timestamp precision of the written points",
               choices=("ns", "us", "ms", "s", "n", "u")),
        Option("Measurement", "str", None, "measurement name (default: the record's tag)"),
        Option("Measurement_Key", "str", None, "record key whose value is the measurement (not written)"),
        # Fluent Bit flushes each chunk to InfluxDB in a coroutine of its own, so several
        # writes are in flight while the server parses one; one worker here kept one write
        # at a time and left the server's second core idle (bench/README.md). Two is what
        # the es output runs too; acks stay in order per input whatever the count.
        Option("Workers", "int", "2", "concurrent flushes (write requests in flight)", minimum=1),
        *TLS_OPTIONS,
        Option("net.connect_timeout", "time", "10s", "TCP connect timeout"),
        Option("net.io_timeout", "time", "60s", "timeout for a whole request; 0 waits forever"),
    )

    # ------------------------------------------------------------ setup

    def setup(self) -> None:
        s = self.settings
        self.token: str | None = s.http_token or None
        self.v2 = bool(s.bucket) or self.token is not None
        self.precision: str = {"n": "ns", "u": "us"}.get(s.precision, s.precision)
        seq = s.sequence_tag
        self.encoder = LineEncoder(
            measurement=s.measurement or None,
            measurement_key=s.measurement_key or None,
            tag_keys=s.tag_keys or (),
            auto_tags=s.auto_tags,
            tags_list_key=s.tags_list_key if s.tags_list_enabled else None,
            add_integer_suffix=s.add_integer_suffix,
            precision=self.precision,
            sequence_tag=None if seq is None or seq.strip().lower() in _OFF else seq.strip(),
        )
        self.path = self._request_path()
        self.headers = self._headers()
        self.auth: tuple[str, str] | None = None
        if self.token is None and s.http_user:
            self.auth = (s.http_user, s.http_passwd or "")
        host = s.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # IPv6 literal
        self.base_url = f"{'https' if s.tls else 'http'}://{host}:{s.port}"
        self.verify: Any = tls_context(self.config) or False
        self.timeout = httpx.Timeout(s.net_io_timeout or None, connect=s.net_connect_timeout or None)
        self.client: InfluxClient | None = None
        self._sequencer = Sequencer()
        self._seq_memo: dict[int, tuple[int, dict[str, Any]]] = {}

    def _headers(self) -> dict[str, str]:
        s = self.settings
        headers = {"User-Agent": "logfwd", "Content-Type": "text/plain; charset=utf-8"}
        for h in s.http_header or ():
            name, _, value = str(h).strip().partition(" ")
            if not name or not value.strip():
                raise ConfigValueError("http_header", f"expected 'Name value', got {h!r}")
            headers[name] = value.strip()
        if self.token is not None:
            headers["Authorization"] = f"Token {self.token}"
        if s.tls and s.tls_vhost:
            headers["Host"] = s.tls_vhost
        return headers

    def _request_path(self) -> str:
        s = self.settings
        uri = s.uri
        if uri:
            # Keep the timestamps and the server's reading of them in agreement.
            if "precision=" in uri:
                return str(uri)
            sep = "&" if "?" in uri else "?"
            p = self.precision if self.v2 else _V1_PRECISION[self.precision]
            return f"{uri}{sep}precision={p}"
        if self.v2:
            q = {"org": s.org, "bucket": s.bucket or s.database, "precision": self.precision}
            return "/api/v2/write?" + urllib.parse.urlencode(q)
        q = {"db": s.database, "precision": _V1_PRECISION[self.precision]}
        return "/write?" + urllib.parse.urlencode(q)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        s = self.settings
        self.client = InfluxClient(self.base_url, self.path, headers=self.headers, auth=self.auth, verify=self.verify,
                                   timeout=self.timeout, sni=s.tls_vhost if s.tls else None, metrics=self.metrics,
                                   connections=s.workers)
        api = "v2" if self.v2 else "v1"
        self.log.info("writing to %s%s (API %s)", self.base_url, self.path.split("?")[0], api)

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None

    # ------------------------------------------------------------ sequence tag

    def _seqs_for(self, times: list[int], records: list[dict[str, Any]]) -> list[int]:
        """Each record's sequence value: new records get theirs from the ``Sequencer`` (how
        many points before them had their timestamp), re-sent ones keep theirs.

        Only records that must be re-sent are remembered (``_settle``), so while nothing
        is being retried there is no per-record bookkeeping here.
        """
        memo = self._seq_memo
        if not memo:
            return self._sequencer.take(times, self.encoder.divisor)
        out: list[int] = []
        fresh: list[int] = []
        for i, r in enumerate(records):
            e = memo.get(id(r))
            if e is None or e[1] is not r:
                fresh.append(i)
                out.append(0)
            else:
                out.append(e[0])
        taken = self._sequencer.take([times[i] for i in fresh], self.encoder.divisor)
        for i, seq in zip(fresh, taken, strict=True):
            out[i] = seq
        return out

    def _settle(self, records: list[dict[str, Any]], seqs: list[int], retry: Sequence[int]) -> None:
        """Remember the values of the records at ``retry`` for their next attempt, forget
        those of the others (written, refused or skipped)."""
        memo = self._seq_memo
        if memo:
            keep = set(retry)
            for i, r in enumerate(records):
                if i not in keep:
                    e = memo.get(id(r))
                    if e is not None and e[1] is r:
                        del memo[id(r)]
        for i in retry:
            memo[id(records[i])] = (seqs[i], records[i])
        while len(memo) > _SEQ_MEMO_MAX:  # records the engine gave up on without telling us
            del memo[next(iter(memo))]

    # ------------------------------------------------------------ flush

    async def flush(self, chunk: Chunk) -> Result:
        records = chunk.records
        if not self.encoder.sequence_tag:
            return (await self._deliver(chunk, None))[0]
        seqs = self._seqs_for(chunk.times, records)
        try:
            result, retry = await self._deliver(chunk, seqs)
        except BaseException:
            # Cancelled or failed mid-flush: a request may have been written, so every
            # record keeps its value for the attempt that re-sends it.
            self._settle(records, seqs, range(len(records)))
            raise
        self._settle(records, seqs, retry)
        return result

    async def _deliver(self, chunk: Chunk, seqs: list[int] | None) -> tuple[Result, Sequence[int]]:
        """Encode and send the chunk: its result and the records to be retried."""
        enc = self.encoder.encode(chunk.tag, chunk.times, chunk.records, seqs)
        if enc.skipped:
            self.metrics.inc("skipped_records", len(enc.skipped))
            self.log.warning("skipped %d record(s) with no field to write (e.g. all keys are tags)", len(enc.skipped))
        if enc.dropped_values:
            self.log.debug("left out %d value(s) line protocol cannot represent (NaN, infinity)", enc.dropped_values)
        if len(enc) == 0:
            return Result.ok(), ()

        async def send(group: Sequence[int]) -> Answer:
            return await self._send(enc, group)

        outcomes = (await bisect_send(range(len(enc)), send)).remap(enc.index)
        return outcomes.result(len(enc)), outcomes.retry  # all lines retried: the whole chunk is

    async def _send(self, enc: Encoded, group: Sequence[int]) -> Answer:
        """One write of the lines at ``group``; a partial write (400/413/422) is split further."""
        assert self.client is not None, "flush before start"
        status, message = await self.client.post(enc.body(group))
        verdict = classify(status, retry=_RETRY_STATUSES)
        if verdict is Verdict.DELIVERED:
            return Answer(verdict)
        if status in _BAD_DATA:
            text = f"HTTP {status}: {message}"
            if len(group) == 1 or _all_dropped(message, len(group)):
                self.log.error("InfluxDB refused %d point(s): %s", len(group), text)
                return Answer(Verdict.REFUSED, text)
            return Answer(Verdict.SPLIT, text)
        # Transient or configuration trouble: nothing is refused, what is left is retried.
        return Answer(Verdict.RETRY, self._transient_reason(status, message))

    def _transient_reason(self, status: int | None, message: str) -> str:
        if status is None:
            self.log.warning("cannot reach InfluxDB at %s: %s; will retry", self.base_url, message)
            return f"connection error: {message}"
        if status in (401, 403):
            self.metrics.inc("auth_failures")
            self.log.error(
                "InfluxDB authentication failed (HTTP %d: %s); check HTTP_User/HTTP_Passwd or HTTP_Token; will retry",
                status, message,
            )
        elif status == 404:
            self.log.error("InfluxDB answered 404 for %s (%s): does the database/bucket exist? will retry",
                           self.path, message)
        else:
            self.log.warning("InfluxDB answered HTTP %d: %s; will retry", status, message)
        return f"HTTP {status}: {message}"


def _all_dropped(message: str, n: int) -> bool:
    """True when the server says it dropped every one of the ``n`` points it was sent."""
    m = _DROPPED_RE.search(message)
    return m is not None and int(m.group(1)) == n


PLUGIN = InfluxDBOutput
