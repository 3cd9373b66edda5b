"""Build and drive single plugin instances in tests, the way the daemon does.

Plugin tests used to convert options by hand, each slightly differently (some skipped
the engine's common options, some the prefix options, none reported unknown keys).
Here the conversion goes through the config layer's own ``convert_entries``, so a
test configures a plugin with exactly what a user would write and gets exactly the
``config`` dict, ``ctx.raw`` and errors the daemon would produce.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import trio

from logfwd.batch import Batch, Chunk, MemBudget, Result
from logfwd.config import default_parsers
from logfwd.config.model import ConfigIssue, RawEntry, RawSection
from logfwd.config.validate import convert_entries
from logfwd.metrics import FILTER_COUNTERS, INPUT_COUNTERS, OUTPUT_COUNTERS, Counters
from logfwd.options import OptionError
from logfwd.plugin import Emitter, Output, Plugin, PluginContext, all_options, find_plugin

__all__ = [
    "DEFAULT",
    "PluginConfigError",
    "default_registry",
    "make_plugin",
    "make_chunk",
    "run_output",
    "flush_all",
    "Collector",
    "make_emitter",
    "make_filter",
    "make_batch",
]

_COUNTERS = {"input": INPUT_COUNTERS, "filter": FILTER_COUNTERS, "output": OUTPUT_COUNTERS}

# A fixed default record time (2023-11-14T22:13:20Z) so chunks built without times are reproducible.
T0 = 1_700_000_000_000_000_000


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()
"""``parsers=DEFAULT``: the shipped parsers (``None`` means no registry at all)."""


class PluginConfigError(OptionError):
    """What the config layer would have reported for the given options (bad value, unknown key).

    An ``OptionError`` so that tests written against ``Option.convert`` keep matching;
    ``issues`` are the config layer's own ``ConfigIssue`` objects.
    """

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("; ".join(i.message for i in issues))


@functools.cache
def default_registry() -> Any:
    """The daemon's default ParserRegistry, loaded once per test process (loading reads a file).

    Shared between tests: add parsers to a registry of your own, never to this one.
    """
    return default_parsers()


def _entries(raw: Mapping[str, Any], options: Mapping[str, Any] | Iterable[tuple[str, Any]] | None) -> list[RawEntry]:
    pairs: list[tuple[str, Any]] = [(k.replace("__", "."), v) for k, v in raw.items()]
    if options is not None:
        pairs += list(options.items()) if isinstance(options, Mapping) else list(options)
    out = []
    for k, v in pairs:
        value: str | list[str] = [str(x) for x in v] if isinstance(v, (list, tuple)) else str(v)
        out.append(RawEntry(k, value, None))
    return out


def make_plugin(
    cls: type[Plugin],
    *,
    instance: str | None = None,
    parsers: Any = DEFAULT,
    service: dict[str, Any] | None = None,
    storage_path: str | None = None,
    options: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
    check_required: bool = False,
    **raw: Any,
) -> Any:
    """A set-up instance of ``cls`` configured with what a user would write.

    ``raw`` keys are option names in any case; a double underscore stands for a dot
    (``tls__verify`` is ``tls.verify``), since Python names cannot hold dots. ``options``
    gives further keys as written (``{"rdkafka.linger.ms": "5"}``), or ordered ``(key,
    value)`` pairs when a key repeats among others (grep's Regex/Exclude order). Values
    are stringified like config text; a list is a repeated key (or a YAML sequence).
    ``raw`` entries come first, then ``options``, in the order given.

    Bad values and unknown keys raise ``PluginConfigError`` (an ``OptionError``) with the
    config layer's messages; ``setup()`` errors (``ConfigValueError``) propagate as is.
    ``required`` keys are checked only with ``check_required``: by default a test can
    leave one out to reach the plugin's own ``setup()`` validation.
    """
    opts = tuple(all_options(cls))
    if not check_required:
        opts = tuple(dataclasses.replace(o, required=False) if o.required else o for o in opts)
    instance = instance or f"{cls.name}.0"
    sect = RawSection(cls.kind, "<test>", None, _entries(raw, options), style="cli")
    issues: list[ConfigIssue] = []
    conv = convert_entries(sect, opts, sect.label(instance), issues)
    if issues:
        raise PluginConfigError(issues)
    config = conv.values
    if cls.kind == "input" and not config.get("tag"):
        config["tag"] = instance  # the config layer tags an untagged input with its instance name
    service = dict(service or {})
    ctx = PluginContext(
        instance=instance,
        metrics=Counters(_COUNTERS.get(cls.kind, ())),
        log=logging.getLogger(f"test.{cls.name}"),
        service=service,
        parsers=default_registry() if parsers is DEFAULT else parsers,
        storage_path=storage_path if storage_path is not None else service.get("storage.path"),
        raw=list(conv.raw),
    )
    plugin = cls(config, ctx)
    plugin.setup()
    return plugin


# ------------------------------------------------------------------ outputs


def make_chunk(
    records: list[dict[str, Any]],
    times: list[int] | None = None,
    tag: str = "app.log",
    keys: list[str | None] | None = None,
    *,
    t0: int = T0,
    step: int = 1_000_000,
) -> Chunk:
    """A chunk as the engine hands it to ``flush``; without ``times``, record i is at ``t0 + i * step``.

    ``records`` is used as given (not copied), so a test can compare against its own list.
    """
    n = len(records)
    return Chunk(
        tag,
        times=list(times) if times is not None else [t0 + i * step for i in range(n)],
        records=records,
        keys=list(keys) if keys is not None else [None] * n,
    )


def run_output(out: Output, fn: Callable[[Any], Awaitable[Any]]) -> Any:
    """``start``, ``await fn(out)``, ``stop`` (even on failure), under ``trio.run``, as the engine runs outputs."""

    async def main() -> Any:
        await out.start()
        try:
            return await fn(out)
        finally:
            await out.stop()

    return trio.run(main)


def flush_all(out: Output, *chunks: Chunk) -> list[Result]:
    """Start ``out``, flush each chunk in turn, stop it: the result of every flush."""

    async def go(o: Output) -> list[Result]:
        return [await o.flush(c) for c in chunks]

    return run_output(out, go)  # type: ignore[no-any-return]


# ------------------------------------------------------------------- inputs


class Collector:
    """The engine's side of an input's emitter: keeps every batch it is handed.

    ``hold=True`` keeps an extra reference on each batch's ack (an output that has not
    delivered yet) until ``ack_some``/``ack_all``; ``delay`` makes each dispatch slow;
    setting ``gate`` to a ``trio.Event`` blocks dispatch until it is set (backpressure).
    """

    def __init__(self, hold: bool = False, delay: float = 0.0) -> None:
        self.hold = hold
        self.delay = delay
        self.gate: trio.Event | None = None
        self.batches: list[Batch] = []
        self.pending: list[Batch] = []

    async def dispatch(self, batch: Batch) -> None:
        self.batches.append(batch)
        if self.hold:
            batch.ack.add()
            self.pending.append(batch)
        if self.delay:
            await trio.sleep(self.delay)
        if self.gate is not None:
            await self.gate.wait()

    @property
    def records(self) -> list[dict[str, Any]]:
        return [r for b in self.batches for r in b.records]

    @property
    def times(self) -> list[int]:
        return [t for b in self.batches for t in b.times]

    @property
    def keys(self) -> list[str]:
        return [k for b in self.batches for k in (b.keys or [])]

    def count(self) -> int:
        return sum(len(b.records) for b in self.batches)

    def ack_some(self, n_batches: int) -> None:
        for b in self.pending[:n_batches]:
            b.ack.done()
        del self.pending[:n_batches]

    def ack_all(self) -> None:
        self.ack_some(len(self.pending))

    async def wait(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until ``n`` records arrived (asserting they did); all records so far."""
        with trio.move_on_after(timeout):
            while self.count() < n:
                await trio.sleep(0.02)
        assert self.count() >= n, f"expected {n} records, got {self.count()}: {self.records[:5]}"
        return self.records

    def emitter(self, plugin: Plugin, tag: str | None = None, budget: MemBudget | int = 0) -> Emitter:
        return make_emitter(plugin, self.dispatch, tag, budget)


def make_emitter(
    plugin: Plugin,
    dispatch: Callable[[Batch], Awaitable[None]],
    tag: str | None = None,
    budget: MemBudget | int = 0,
) -> Emitter:
    """A real Emitter for ``plugin``: its Tag (or ``tag``), a MemBudget (a limit in bytes, 0 = none)."""
    mem = budget if isinstance(budget, MemBudget) else MemBudget(budget)
    return Emitter(tag or plugin.config.get("tag") or plugin.ctx.instance, mem, dispatch, plugin.metrics)


def make_filter(name: str, entries: list[tuple[str, str]], parsers: Any = None) -> Plugin:
    """A built-in filter built the way the config layer does: declared options converted, raw kept in order."""
    return make_plugin(find_plugin("filter", name), options=entries, parsers=parsers)


def make_batch(records: list[dict[str, Any]], keys: bool = False, tag: str = "app") -> Batch:
    """A batch with times 0, 1, 2... and, with ``keys``, origin keys ``k0``, ``k1``..."""
    return Batch(tag, list(range(len(records))), records, keys=[f"k{i}" for i in range(len(records))] if keys else None)
