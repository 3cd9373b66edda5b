"""The [SERVICE] section's keys, with Fluent Bit's names and defaults.

A Fluent Bit config must move over unchanged, so every key Fluent Bit documents
for its service section loads here; the ones logfwd has no use for (DNS resolver
tuning, coroutine stack size, Windows stdio) carry an ``unsupported`` reason: they
load with a warning naming the key, instead of being rejected as unknown or
accepted in silence.
"""

from __future__ import annotations

from ..options import PORT, Option

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
    Option("http_port", "int", "2020", "port of the HTTP server", **PORT),
    Option("health_check", "bool", "off", "report unhealthy on /api/v1/health after too many errors"),
    Option("hc_errors_count", "int", "5", "output errors within hc_period that make the service unhealthy",
           minimum=0),
    Option("hc_retry_failure_count", "int", "5",
           "failed retries within hc_period that make the service unhealthy", minimum=0),
    Option("hc_period", "int", "60", "seconds of the health check window", minimum=1),
    Option("storage.path", "str", None,
           "directory for chunk files (one subdirectory per filesystem input), created at start if missing"),
    Option("storage.sync", "str", "normal",
           "normal (chunks reach the page cache: a kill loses nothing), or full (fsync every write: an OS "
           "crash or power cut loses nothing either)", choices=("normal", "full")),
    Option("storage.checksum", "bool", "off", "CRC32 checksums on chunk files",
           unsupported="every chunk frame always carries a CRC32C; it cannot be turned off"),
    Option("storage.max_chunks_up", "int", "128",
           "chunks (about 2 MB each) of filesystem inputs held in memory; the rest stay on disk only", minimum=1),
    Option("storage.backlog.mem_limit", "size", "5M", "memory for chunks read back from disk for delivery"),
    Option("storage.backlog.flush_on_shutdown", "bool", "off",
           "at shutdown, also deliver chunks that are only on disk (within grace)"),
    Option("storage.metrics", "bool", "off", "serve /api/v1/storage on the HTTP server"),
    Option("storage.delete_irrecoverable_chunks", "bool", "off",
           "delete unreadable chunk files instead of moving them to <storage.path>/corrupt/"),
    Option("storage.type", "str", None, "default storage.type for inputs with storage.inherit",
           choices=("memory", "filesystem")),
    Option("storage.inherit", "bool", "off", "inputs without storage.type take the service's storage.type"),
    Option("storage.keep.rejected", "bool", "on",
           "keep records a backend refused for good (or that ran out of retries) as JSON lines; on by "
           "default in logfwd, unlike Fluent Bit, so that nothing is dropped silently"),
    Option("storage.rejected.path", "str", "rejected",
           "directory of rejected records, relative to storage.path (or absolute)"),
    Option("storage.trim_files", "bool", "off", "trim chunk files after flushing",
           unsupported="chunk files are append-only and deleted once delivered; there is nothing to trim"),
    Option("restart_limit", "int", "10",
           "an input that fails this many times in a row (restarted with backoff) stops the daemon with "
           "status 1, so that its supervisor restarts it cleanly; 0: never", minimum=0),
    Option("scheduler.base", "int", "5", "base seconds of the retry backoff", minimum=1),
    Option("scheduler.cap", "int", "2000", "maximum seconds between retries", minimum=1),
    Option("hot_reload", "bool", "off", "reload the configuration on SIGHUP and POST /api/v2/reload"),
    Option("hot_reload.ensure_thread_safety", "bool", "on", "Fluent Bit's reload lock between threads",
           unsupported="one event loop runs the pipeline; a reload needs no lock between threads"),
    Option("hot_reload.timeout", "int", "0", "seconds a reload may take before it is abandoned (0: no limit)",
           minimum=0),
    Option("json.convert_nan_to_null", "bool", "off", "serialize NaN as null in JSON outputs",
           unsupported="NaN and Infinity are always written as null: JSON has no literal for them"),
    Option("json.escape_unicode", "bool", "on", "write non-ASCII characters as \\uXXXX escapes",
           unsupported="JSON is written as UTF-8; non-ASCII characters are not escaped"),
    Option("multiline_buffer_limit", "size", "2M", "largest record a multiline parser builds"),
    # Fluent Bit tuning with no meaning here: they load (with a warning) so a Fluent Bit config moves over.
    Option("coro_stack_size", "int", "24576", "Fluent Bit tuning",
           unsupported="no coroutine stacks to size: trio tasks grow as needed"),
    Option("dns.mode", "str", "UDP", "Fluent Bit tuning",
           unsupported="host names are resolved by the system resolver (getaddrinfo)"),
    Option("dns.resolver", "str", None, "Fluent Bit tuning",
           unsupported="host names are resolved by the system resolver (getaddrinfo)"),
    Option("dns.prefer_ipv4", "bool", "off", "Fluent Bit tuning",
           unsupported="the system resolver's address order (gai.conf) applies"),
    Option("dns.prefer_ipv6", "bool", "off", "Fluent Bit tuning",
           unsupported="the system resolver's address order (gai.conf) applies"),
    Option("sp.convert_from_str_to_num", "bool", "on", "Fluent Bit tuning",
           unsupported="there is no stream processor"),
    Option("enable_chunk_trace", "bool", "off", "Fluent Bit tuning",
           unsupported="there is no chunk tracing"),
    Option("windows.maxstdio", "int", "512", "Fluent Bit tuning",
           unsupported="Windows only"),
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
