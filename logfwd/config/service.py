"""The [SERVICE] section's keys, with Fluent Bit's names and defaults.

A Fluent Bit config must move over unchanged, so every key Fluent Bit documents
for its service section is accepted here; the ones logfwd has no use for (DNS
resolver tuning, coroutine stack size, Windows stdio) are declared as accepted
and ignored rather than rejected as unknown.
"""

from __future__ import annotations

from ..options import Option

__all__ = ["SERVICE_OPTIONS", "UNSUPPORTED_SERVICE_KEYS"]

_LEVELS = ("off", "error", "warn", "warning", "info", "debug", "trace")

SERVICE_OPTIONS: tuple[Option, ...] = (
    Option("flush", "time", "1", "seconds between flushes of buffered records to outputs (fractional allowed)"),
    Option("grace", "time", "5", "seconds to wait for outputs to drain at shutdown"),
    Option("daemon", "bool", "off", "go to the background at start (do not use under systemd)"),
    Option("log_file", "str", None, "write logfwd's own log to this file instead of stderr"),
    Option("log_level", "str", "info", "verbosity of logfwd's own log", choices=_LEVELS),
    Option("parsers_file", "str", None, "parsers file to load, relative to the main config's directory",
           multi=True),
    Option("plugins_file", "str", None, "Fluent Bit external (.so) plugins file: not supported", multi=True),
    Option("streams_file", "str", None, "Fluent Bit stream processor file: not supported"),
    Option("http_server", "bool", "off", "serve health and metrics over HTTP"),
    Option("http_listen", "str", "0.0.0.0", "address of the HTTP server"),
    Option("http_port", "int", "2020", "port of the HTTP server", minimum=0),
    Option("health_check", "bool", "off", "report unhealthy on /api/v1/health after too many errors"),
    Option("hc_errors_count", "int", "5", "output errors within hc_period that make the service unhealthy",
           minimum=0),
    Option("hc_retry_failure_count", "int", "5",
           "failed retries within hc_period that make the service unhealthy", minimum=0),
    Option("hc_period", "int", "60", "seconds of the health check window", minimum=1),
    Option("storage.path", "str", None, "directory for filesystem buffering chunks and checkpoints"),
    Option("storage.sync", "str", "normal", "normal, or full (fsync every chunk write)", choices=("normal", "full")),
    Option("storage.checksum", "bool", "off", "CRC32 checksums on chunk files"),
    Option("storage.max_chunks_up", "int", "128", "chunks of filesystem inputs held in memory", minimum=1),
    Option("storage.backlog.mem_limit", "size", "5M", "memory for replaying chunks found at startup"),
    Option("storage.backlog.flush_on_shutdown", "bool", "off", "try to deliver the backlog before exiting"),
    Option("storage.metrics", "bool", "off", "expose storage metrics on the HTTP server"),
    Option("storage.delete_irrecoverable_chunks", "bool", "off", "delete corrupt chunk files instead of keeping"),
    Option("storage.type", "str", None, "default storage.type for inputs with storage.inherit",
           choices=("memory", "filesystem", "memrb")),
    Option("storage.inherit", "bool", "off", "inputs without storage.type take the service's storage.type"),
    Option("storage.keep.rejected", "bool", "off", "keep chunks that cannot be delivered (dead letters)"),
    Option("storage.rejected.path", "str", "rejected", "subdirectory of storage.path for rejected chunks"),
    Option("storage.trim_files", "bool", "off", "trim chunk files after flushing"),
    Option("scheduler.base", "int", "5", "base seconds of the retry backoff", minimum=1),
    Option("scheduler.cap", "int", "2000", "maximum seconds between retries", minimum=1),
    Option("hot_reload", "bool", "off", "reload the configuration on SIGHUP"),
    Option("hot_reload.ensure_thread_safety", "bool", "on", "Fluent Bit's reload locking",
           unsupported="a reload stops the running pipeline before the new one starts"),
    Option("hot_reload.timeout", "int", "0", "seconds a reload may take before it is abandoned (0: no limit)",
           minimum=0),
    Option("json.convert_nan_to_null", "bool", "off", "serialize NaN as null in JSON outputs"),
    Option("json.escape_unicode", "bool", "on", "escape non-ASCII characters in JSON",
           unsupported="JSON outputs write UTF-8 as is"),
    Option("multiline_buffer_limit", "size", "2M", "largest record a multiline parser builds"),
    # Accepted so that Fluent Bit configs load; they have no effect in logfwd (a warning says so).
    Option("coro_stack_size", "int", "24576", "Fluent Bit engine tuning", unsupported="not applicable to logfwd"),
    Option("dns.mode", "str", "UDP", "Fluent Bit engine tuning", unsupported="not applicable to logfwd"),
    Option("dns.resolver", "str", None, "Fluent Bit engine tuning", unsupported="not applicable to logfwd"),
    Option("dns.prefer_ipv4", "bool", "off", "Fluent Bit engine tuning", unsupported="not applicable to logfwd"),
    Option("dns.prefer_ipv6", "bool", "off", "Fluent Bit engine tuning", unsupported="not applicable to logfwd"),
    Option("sp.convert_from_str_to_num", "bool", "on", "Fluent Bit engine tuning", unsupported="not applicable to logfwd"),
    Option("enable_chunk_trace", "bool", "off", "Fluent Bit engine tuning", unsupported="not applicable to logfwd"),
    Option("windows.maxstdio", "int", "512", "Fluent Bit engine tuning", unsupported="not applicable to logfwd"),
)

# Keys that would change behaviour in Fluent Bit but that logfwd cannot honour:
# an error (plugins_file) or a warning (streams_file), never silence.
UNSUPPORTED_SERVICE_KEYS = {
    "plugins_file": (
        "error",
        "external Fluent Bit plugins (.so) are not supported; logfwd plugins are Python packages "
        "registered in the 'logfwd.plugins' entry-point group",
    ),
    "streams_file": ("warning", "the stream processor is not supported; streams_file is ignored"),
}
