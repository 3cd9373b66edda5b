"""The Input / Filter / Output contracts and the plugin registry.

Built-in plugins live in ``logfwd/plugins/``, named by kind: ``in_<name>``,
``filter_<name>``, ``out_<name>``, each exposing ``PLUGIN = <class>``. A plugin
with one concern is one module (``out_null.py``); a plugin with more is a folder
holding everything only it uses (``in_tail/``: the input, its offsets DB, file
identity, inotify), as Fluent Bit's plugin folders are. They are found by
module name without importing them, so a daemon only imports the plugins its
config uses (the Kafka client is not loaded to tail a file). Third-party plugins
register a class through the ``logfwd.plugins`` entry-point group.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson
import trio

from . import plugins as builtin_plugins  # the package only: its __init__ imports no plugin
from .batch import AckHandle, AckTracker, Batch, Chunk, MemBudget, Result
from .log import parse_level, plugin_logger
from .metrics import Counters, new_counters
from .options import ConfigValueError, Option, closest, make_settings
from .originkeys import OriginKeys, as_list

__all__ = [
    "Plugin",
    "Input",
    "Filter",
    "Output",
    "PluginContext",
    "create_plugin",
    "Emitter",
    "ConfigValueError",
    "StartError",
    "PluginNotFound",
    "PluginUnavailable",
    "find_plugin",
    "all_options",
    "COMMON_OPTIONS",
    "list_plugins",
    "expand_tag",
    "Batch",
    "Chunk",
    "Result",
    "AckHandle",
    "AckTracker",
    "Option",
    "OriginKeys",
    "as_list",
]

KINDS = ("input", "filter", "output")
_PREFIX = {"input": "in_", "filter": "filter_", "output": "out_"}

# Friendly names users of other forwarders type; each points to a Fluent Bit name.
ALIASES: dict[str, dict[str, str]] = {
    "input": {"journald": "systemd"},
    "filter": {"k8s": "kubernetes"},
    "output": {"elasticsearch": "es", "influx": "influxdb"},
}


class PluginUnavailable(LookupError):
    """A plugin exists but its library cannot be imported (a broken or partial install)."""

    def __init__(self, kind: str, name: str, error: ImportError) -> None:
        self.kind, self.name = kind, name
        missing = error.name or str(error)
        super().__init__(
            f"{kind} plugin {name!r} cannot load: Python module {missing!r} is missing ({error}); "
            "reinstall logfwd with its dependencies (./run.sh, or pip install logfwd)"
        )


class StartError(Exception):
    """An input could not open its local resources (bind a port, open its DB or journal).

    Raised by ``Input.run`` before ``task_status.started()``; its message is one line
    the daemon prints as it stops, e.g. ``cannot listen on 127.0.0.1:5514/tcp: address
    already in use`` (no traceback, no exception group).
    """


class PluginNotFound(LookupError):
    def __init__(self, kind: str, name: str, suggestion: str | None) -> None:
        self.kind, self.name, self.suggestion = kind, name, suggestion
        hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
        super().__init__(f"unknown {kind} plugin {name!r}{hint}")


@dataclass
class PluginContext:
    """What the engine hands every plugin instance."""

    instance: str  # "tail.0", or the section's Alias
    metrics: Counters
    log: logging.Logger
    service: dict[str, Any] = field(default_factory=dict)  # converted [SERVICE] options
    parsers: Any = None  # logfwd.parsers.ParserRegistry: ctx.parsers.get(name)
    storage_path: str | None = None  # service storage.path, for DBs and dead letters
    raw: list[tuple[str, str]] = field(default_factory=list)  # (key lower, value), in file order


class Plugin:
    """Common base: declared options, converted config, metrics and logger.

    ``config`` maps each declared option's lower-case name to its converted value
    (defaults filled in). Subclasses validate cross-option rules in ``setup()``
    and raise ``ConfigValueError(key, message)``.
    """

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    options: ClassVar[tuple[Option, ...]] = ()

    def __init__(self, config: dict[str, Any], ctx: PluginContext) -> None:
        self.config = config
        # The same values as typed, frozen fields (``self.settings.db_sync``), generated from
        # the option declarations: read these in ``setup`` rather than string keys of ``config``.
        self.settings = make_settings(all_options(type(self)), config, f"{type(self).__name__}Settings")
        self.ctx = ctx
        self.metrics = ctx.metrics
        self.log = ctx.log

    def setup(self) -> None:
        """Validate and prepare (compile regexes, resolve parsers). No I/O here."""


def create_plugin(
    cls: type[Plugin],
    options: dict[str, Any],
    *,
    instance: str,
    service: dict[str, Any] | None = None,
    parsers: Any = None,
    raw: list[tuple[str, str]] | None = None,
) -> Plugin:
    """An instance of ``cls`` with its own counters and logger, set up; the one that will run.

    The config layer calls this to validate a section (``setup`` raises
    ``ConfigValueError``) and hands the instance to the engine in the
    ``PluginSection``: ``setup`` runs once per instance, and the counters and
    logger a plugin saw in ``setup`` are the ones it runs with.
    """
    service = service or {}
    ctx = PluginContext(
        instance=instance,
        metrics=new_counters(cls.kind),
        log=plugin_logger(cls.kind, cls.name, instance),
        service=service,
        parsers=parsers,
        storage_path=service.get("storage.path"),
        raw=list(raw or ()),
    )
    level = options.get("log_level")
    if level:
        ctx.log.setLevel(parse_level(level))
    plugin = cls(dict(options), ctx)
    plugin.setup()
    return plugin


class Emitter:
    """How an input hands records to the pipeline.

    ``emit`` waits for the input's memory budget (backpressure: an input that
    cannot emit stops reading), then runs filters and routing. The batch's
    acknowledgement handle completes when every matching output has delivered
    or dead-lettered it; pass a handle from ``tracker()`` to checkpoint on it.
    """

    def __init__(
        self,
        tag: str,
        budget: MemBudget,
        dispatch: Callable[[Batch], Awaitable[None]],
        metrics: Counters,
    ) -> None:
        self.tag = tag
        self.budget = budget
        self._dispatch = dispatch
        self._metrics = metrics
        # records emitted whose handle has not completed: what a shutdown leaves behind
        self.unacked_records = 0
        # True with storage.type filesystem: a handle completes once its records are in a chunk
        # file, so a checkpoint taken on it may be written at once
        self.durable = False

    @property
    def paused(self) -> bool:
        return self.budget.paused

    def expand_tag(self, value: str) -> str:
        """The input's Tag with ``*`` replaced by ``value`` (Fluent Bit's rule)."""
        return expand_tag(self.tag, value)

    def tracker(self, on_commit: Callable[[Any], None] | None = None) -> AckTracker:
        return AckTracker(on_commit)

    async def emit(
        self,
        records: list[dict[str, Any]],
        times: list[int] | None = None,
        *,
        tag: str | None = None,
        handle: AckHandle | None = None,
        nbytes: int = 0,
        keys: list[str] | None = None,
    ) -> None:
        if not records:
            if handle is not None:
                handle.done()
            return
        if times is None:
            now = time.time_ns()
            times = [now] * len(records)
        if nbytes <= 0:
            nbytes = estimate_bytes(records)
        cost = memory_cost(records, nbytes)
        await self.budget.acquire(cost)
        h = handle if handle is not None else AckHandle(nbytes)
        h.nbytes = nbytes
        n = len(records)
        self.unacked_records += n
        h.on_complete(lambda _h: self._acked(cost, n))
        self._metrics.inc("records", len(records))
        self._metrics.inc("bytes", nbytes)
        batch = Batch(tag or self.tag, times, records, h, nbytes, keys)
        try:
            await self._dispatch(batch)
        except BaseException:
            # Not routed in full (cancelled at shutdown while waiting for storage, an async
            # filter or a full disk; or failed): its handle must not complete, or the input would
            # checkpoint past records no output or chunk has. Its budget is given back.
            self._acked(cost, n)
            raise
        h.done()

    def _acked(self, cost: int, n: int) -> None:
        self.budget.release(cost)
        self.unacked_records -= n


# Python-object overhead of a parsed record beyond its text: the dict itself and one
# str/int object per value (keys are mostly shared). Measured with sys.getsizeof on
# typical parsed records; close enough to keep RSS near what mem_buf_limit promises.
_DICT_OVERHEAD = 200
_FIELD_OVERHEAD = 60


def memory_cost(records: list[dict[str, Any]], nbytes: int) -> int:
    """What a batch costs against ``mem_buf_limit``: its bytes plus the Python objects holding them.

    Counting raw bytes alone let a syslog pipeline (small lines, many fields) hold ten
    times the limit in RSS; Fluent Bit's limit counts msgpack, which has no such overhead.
    """
    n = len(records)
    return nbytes + n * (_DICT_OVERHEAD + _FIELD_OVERHEAD * len(records[0]))


def estimate_bytes(records: list[dict[str, Any]]) -> int:
    """Serialized size of a sample of records, scaled: a budget estimate, not exact."""
    n = len(records)
    if n <= 16:
        return len(orjson.dumps(records, default=str))
    step = n // 16
    sample = records[::step][:16]
    return len(orjson.dumps(sample, default=str)) * n // len(sample)


def expand_tag(template: str, value: str) -> str:
    """Fluent Bit's tag expansion: ``kube.*`` + ``/var/log/x.log`` → ``kube.var.log.x.log``."""
    if "*" not in template:
        return template
    v = value.replace("/", ".").strip(".")
    return template.replace("*", v)


class Input(Plugin):
    """An async task that reads a source and emits batches.

    ``run`` calls ``task_status.started()`` once its local resources are open (port
    bound, DB and journal opened, first scan done); an input with nothing to open calls
    it at once. A failure before that is a start-up failure: the daemon logs it in one
    line and exits 1. A failure after it is a runtime failure: the engine restarts the
    input with backoff. ``run`` returns when the source is exhausted (``stdin`` at EOF,
    ``dummy`` with ``samples``) or is cancelled at shutdown; whether the daemon then
    stops is ``exit_when_done``. ``close`` runs after the pipeline has drained, to commit
    final checkpoints.
    """

    kind = "input"
    # True when the source can be read again from a checkpoint (tail offsets, journal cursor):
    # such an input pauses rather than loses records when storage is full or unwritable, and
    # what a shutdown leaves undelivered is read again on restart. Push inputs (syslog,
    # dummy, stdin) keep the default False.
    replayable: ClassVar[bool] = False

    async def run(self, emitter: Emitter, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read the source until it is exhausted or the task is cancelled.

        Readiness: call ``task_status.started()`` once the input's local resources are
        open (port bound, journal opened, offsets DB opened); an input with nothing to
        open calls it at once. The pipeline starts each input with ``nursery.start``, so
        "started" means "listening", and a failure before ``started()`` stops the daemon:
        raise ``StartError`` with a one-line message then (not an exception group).
        """
        raise NotImplementedError

    def exit_when_done(self) -> bool:
        """Should the daemon stop once ``run`` returned? Fluent Bit stops for ``stdin`` at EOF and
        tail's ``Exit_On_Eof``; every other finished input leaves the rest running."""
        return False

    def save_checkpoint(self) -> None:
        """Write the acknowledged checkpoint now, synchronously (a second SIGTERM exits without draining)."""

    async def close(self) -> None:
        """Commit checkpoints and release resources (after outputs drained)."""


class Filter(Plugin):
    """A function from batch to batch; ``None`` drops the whole batch.

    Synchronous by default. A filter that must do I/O (Kubernetes metadata)
    sets ``is_async = True`` and implements ``filter_async``; the engine awaits
    it in the input's task, so a slow lookup applies backpressure to that input.

    A filter that keeps records across batches (multiline: a record is complete
    only when a later line arrives) sets ``holds_records = True`` and implements
    ``flush_pending``; the engine calls it on every flush tick and, with
    ``force=True``, at shutdown.
    """

    kind = "filter"
    is_async: ClassVar[bool] = False
    holds_records: ClassVar[bool] = False

    def filter(self, batch: Batch) -> Batch | None:
        raise NotImplementedError

    async def filter_async(self, batch: Batch) -> Batch | None:
        return self.filter(batch)

    def flush_pending(self, force: bool = False) -> list[Batch]:
        """Held records that are due (timed out; all of them with ``force``), as batches.

        Each returned batch owns a fresh ``AckHandle`` whose initial reference the
        engine releases after routing it through the filters after this one. While
        it holds lines, the filter keeps an extra reference on the handles of the
        batches they came from, so no input checkpoints past a held line.
        """
        return []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Optional background work for the pipeline's lifetime (the kubernetes filter's pod watch).

        The pipeline starts it in its nursery (``start_soon``: filtering must not wait for
        it, a filter works while its backend is away) and cancels it at shutdown, after
        ``close``. An exception here is logged and counted; it does not stop the pipeline.
        """
        task_status.started()

    async def close(self) -> None:
        """Release resources at shutdown."""


class Output(Plugin):
    """Delivers chunks to a backend and says what happened (see ``Result``).

    ``flush`` must not retry in a loop: return ``Result.retry_everything`` and
    the engine retries with backoff and ``Retry_Limit``. Several workers may
    call ``flush`` concurrently (``workers`` option).
    """

    kind = "output"

    async def start(self) -> None:
        """Connect; an exception here stops the daemon with a clear message."""

    async def flush(self, chunk: Chunk) -> Result:
        raise NotImplementedError

    async def stop(self) -> None:
        """Close connections after the last flush."""


# Options every plugin of a kind takes, handled by the engine, not the plugin.
COMMON_OPTIONS: dict[str, tuple[Option, ...]] = {
    "input": (
        Option("Tag", "str", None, "tag of the records; '*' is expanded by the input (tail: the path)"),
        Option("Alias", "str", None, "instance name in metrics and logs instead of name.N"),
        Option("Mem_Buf_Limit", "size", "32M", "bytes emitted but not yet delivered before the input pauses"),
        Option("storage.type", "str", "memory", "memory, or filesystem (chunks on disk)",
               choices=("memory", "filesystem")),
        Option("storage.pause_on_chunks_overlimit", "bool", "off", "pause instead of spilling at the limit"),
        Option("Log_Level", "str", None, "log level of this instance",
               choices=("off", "error", "warn", "warning", "info", "debug", "trace")),
        Option("Threaded", "bool", "off", "run the input in its own thread",
               unsupported="inputs share one event loop; blocking reads already run in worker threads"),
    ),
    "filter": (
        Option("Match", "str", None, "tag pattern with '*' wildcards"),
        Option("Match_Regex", "regex", None, "regular expression the whole tag must match"),
        Option("Alias", "str", None, "instance name in metrics and logs instead of name.N"),
        Option("Log_Level", "str", None, "log level of this instance",
               choices=("off", "error", "warn", "warning", "info", "debug", "trace")),
    ),
    "output": (
        Option("Match", "str", None, "tag pattern with '*' wildcards"),
        Option("Match_Regex", "regex", None, "regular expression the whole tag must match"),
        Option("Alias", "str", None, "instance name in metrics and logs instead of name.N"),
        Option("Retry_Limit", "retry_limit", "1",
               "retries per chunk: a number, no_limits (or False) for unlimited, no_retries"),
        Option("Workers", "int", "1", "concurrent flushes to this output", minimum=1),
        Option("storage.total_limit_size", "size", None, "bytes of chunks on disk for this output"),
        Option("Log_Level", "str", None, "log level of this instance",
               choices=("off", "error", "warn", "warning", "info", "debug", "trace")),
    ),
}


def all_options(cls: type[Plugin]) -> tuple[Option, ...]:
    """A plugin's own options followed by the engine's options for its kind."""
    own = {o.key for o in cls.options}
    return tuple(cls.options) + tuple(o for o in COMMON_OPTIONS[cls.kind] if o.key not in own)


# ---------------------------------------------------------------- registry

_entry_point_cache: dict[tuple[str, str], Any] | None = None


def _entry_point_plugins() -> dict[tuple[str, str], Any]:
    global _entry_point_cache
    if _entry_point_cache is None:
        _entry_point_cache = {}
        from importlib.metadata import entry_points  # noqa: PLC0415 - heavy, only for third-party names

        for ep in entry_points(group="logfwd.plugins"):
            try:
                cls = ep.load()
            except Exception as e:  # a broken third-party plugin must not break startup
                logging.getLogger("logfwd").warning("cannot load plugin entry point %s: %s", ep.name, e)
                continue
            if getattr(cls, "kind", None) in KINDS and getattr(cls, "name", None):
                _entry_point_cache[(cls.kind, cls.name)] = cls
    return _entry_point_cache


def _builtin_names(kind: str) -> list[str]:
    prefix = _PREFIX[kind]
    return sorted(
        m.name[len(prefix) :] for m in pkgutil.iter_modules(builtin_plugins.__path__) if m.name.startswith(prefix)
    )


def list_plugins(kind: str) -> list[str]:
    """Names of every plugin of a kind, built-in and third-party."""
    names = set(_builtin_names(kind))
    names.update(n for (k, n) in _entry_point_plugins() if k == kind)
    return sorted(names)


_NAME_RE = re.compile(r"^[a-z0-9_]+$")


def find_plugin(kind: str, name: str) -> type[Plugin]:
    """The plugin class for a config's ``Name``; raises PluginNotFound with a suggestion."""
    key = name.strip().lower()
    key = ALIASES.get(kind, {}).get(key, key)
    if _NAME_RE.match(key) and key in _builtin_names(kind):
        try:
            mod = importlib.import_module(f"logfwd.plugins.{_PREFIX[kind]}{key}")
        except ImportError as e:
            raise PluginUnavailable(kind, key, e) from e
        return mod.PLUGIN  # type: ignore[no-any-return]
    cls = _entry_point_plugins().get((kind, key))
    if cls is not None:
        return cls  # type: ignore[no-any-return]
    candidates = list_plugins(kind) + list(ALIASES.get(kind, {}))
    raise PluginNotFound(kind, name, closest(key, candidates))
