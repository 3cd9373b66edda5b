"""The es output's options (Fluent Bit's, plus Id_Mode) and what ``setup`` derives from them.

Kept apart from the plugin so that the option table, the Cloud_ID decoding and the
credential rules can be read (and tested) without the HTTP client.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from logfwd.net.tls import TLS_OPTIONS
from logfwd.options import Option, OptionError, parse_size
from logfwd.plugin import ConfigValueError

from . import bulk as esbulk

OPTIONS: tuple[Option, ...] = (
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
    # Fluent Bit's es output runs 2 workers by default (since 1.8.12): two bulk requests in
    # flight, so a reply's round trip does not idle the output. Acks stay in order per input.
    Option("Workers", "int", "2", "concurrent flushes (bulk requests in flight)", minimum=1),
    *TLS_OPTIONS,
    Option("net.connect_timeout", "time", "10s", "TCP/TLS connect timeout"),
    Option("net.io_timeout", "time", "60s", "time to wait for an answer (0: no limit)"),
)


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


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def auth_header(s: Any) -> str | None:
    """The Authorization header: HTTP_User wins over Cloud_Auth, which wins over HTTP_API_Key.

    The opensearch output has neither Cloud_* nor HTTP_API_Key (Fluent Bit's does not): absent means unset.
    """
    if s.http_user:
        return basic_auth(s.http_user, s.http_passwd or "")
    cloud_auth = getattr(s, "cloud_auth", None)
    if cloud_auth:
        user, sep, pw = cloud_auth.partition(":")
        if not sep:
            raise ConfigValueError("cloud_auth", "expected user:password")
        return basic_auth(user, pw)
    api_key = getattr(s, "http_api_key", None)
    if api_key:
        return f"ApiKey {api_key}"
    return None


def endpoint(s: Any) -> tuple[str, int, bool]:
    """(host, port, TLS?): Cloud_ID overrides Host and Port and implies TLS."""
    cloud_id = getattr(s, "cloud_id", None)
    if not cloud_id:
        return s.host, s.port, bool(s.tls)
    try:
        host, port = parse_cloud_id(cloud_id)
    except ValueError as e:
        raise ConfigValueError("cloud_id", f"invalid Cloud_ID: {e}") from None
    return host, port, True  # Elastic Cloud only speaks HTTPS


def buffer_size(value: Any) -> int | None:
    """How much of an error answer is logged; None: all of it."""
    bs = str(value).strip().lower()
    if bs in ("false", "off", "0", "unlimited"):
        return None
    try:
        return parse_size(bs)
    except OptionError as e:
        raise ConfigValueError("buffer_size", str(e)) from None


def bulk_base(s: Any) -> dict[str, Any]:
    """``BulkSettings`` arguments, all but ``suppress_type_name`` (which may need the server's version)."""
    return dict(
        index=s.index,
        type=s.type,
        logstash_format=s.logstash_format,
        logstash_prefix=s.logstash_prefix,
        logstash_prefix_key=s.logstash_prefix_key,
        logstash_prefix_separator=s.logstash_prefix_separator,
        logstash_dateformat=s.logstash_dateformat,
        time_key=s.time_key,
        time_key_format=s.time_key_format,
        time_key_nanos=s.time_key_nanos,
        include_tag_key=s.include_tag_key,
        tag_key=s.tag_key,
        generate_id=s.generate_id,
        id_key=s.id_key,
        id_mode="derived" if s.id_mode == "derived" else "none",
        write_operation=s.write_operation,
        replace_dots=s.replace_dots,
        current_time_index=s.current_time_index,
    )
