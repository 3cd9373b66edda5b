"""One running pipeline: inputs → filters → router → output buffers → outputs.

The pipeline owns a trio nursery: one task per input, per-output worker tasks,
the flush ticker and the HTTP server. Shutdown is structured: inputs are
cancelled first, everything buffered is flushed within ``grace`` seconds, then
inputs commit their checkpoints (``close``) and outputs disconnect. Whatever did
not resolve within the grace period stays unacknowledged, so its input replays
it on the next start: at-least-once is kept even by a shutdown that times out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import trio

from ..log import plugin_logger
from ..metrics import MetricsRegistry
from ..plugin import Emitter, Filter, Input, Output, PluginContext
from .batch import Batch, MemBudget
from .deadletter import DeadLetter, default_dead_letter_dir
from .outbuf import OutputBuffer
from .retry import RetryPolicy, parse_retry_limit
from .router import TagMatcher

__all__ = ["Pipeline", "StartupError"]

log = logging.getLogger("logfwd.engine")


class StartupError(RuntimeError):
    """An output could not start (bad credentials, unreachable TLS config...)."""


@dataclass
class _FilterSlot:
    plugin: Filter
    match: TagMatcher
    metrics: Any


@dataclass
class _InputSlot:
    plugin: Input
    emitter: Emitter
    done: trio.Event = field(default_factory=trio.Event)


class Pipeline:
    """Builds plugin instances from a validated ``Config`` and runs them."""

    def __init__(self, config: Any, registry: MetricsRegistry | None = None) -> None:
        self.config = config
        self.service: dict[str, Any] = dict(config.service)
        self.registry = registry or MetricsRegistry()
        self.flush_interval = float(self.service.get("flush") or 1.0)
        self.grace = float(self.service.get("grace") if self.service.get("grace") is not None else 5.0)
        storage_path = self.service.get("storage.path")
        self.dead_letter = DeadLetter(default_dead_letter_dir(storage_path))
        base = float(self.service.get("scheduler.base") or 5)
        cap = float(self.service.get("scheduler.cap") or 2000)
        self._inputs: list[_InputSlot] = []
        self._filters: list[_FilterSlot] = []
        self._outputs: list[tuple[TagMatcher, OutputBuffer]] = []
        self._shutdown = trio.Event()
        self._inputs_cancel = trio.CancelScope()
        self.started = trio.Event()
        self.stopped_cleanly = False

        for sec in config.outputs:
            plugin = self._instantiate(sec)
            assert isinstance(plugin, Output)
            limit = parse_retry_limit(sec.options.get("retry_limit"))
            buf = OutputBuffer(
                plugin,
                sec.instance,
                plugin.metrics,
                RetryPolicy(limit, base, cap),
                self.dead_letter,
                workers=int(sec.options.get("workers") or 1),
                log=plugin.log,
            )
            self._outputs.append((TagMatcher(sec.options.get("match"), sec.options.get("match_regex")), buf))
        for sec in config.filters:
            plugin = self._instantiate(sec)
            assert isinstance(plugin, Filter)
            self._filters.append(
                _FilterSlot(plugin, TagMatcher(sec.options.get("match"), sec.options.get("match_regex")), plugin.metrics)
            )
        for sec in config.inputs:
            plugin = self._instantiate(sec)
            assert isinstance(plugin, Input)
            tag = sec.options.get("tag") or sec.instance
            budget = MemBudget(int(sec.options.get("mem_buf_limit") or 0), self._seal_all)
            self._inputs.append(_InputSlot(plugin, Emitter(tag, budget, self.dispatch, plugin.metrics)))

    def _instantiate(self, sec: Any) -> Any:
        metrics = self.registry.register(sec.kind, sec.instance)
        ctx = PluginContext(
            instance=sec.instance,
            metrics=metrics,
            log=plugin_logger(sec.kind, sec.name, sec.instance),
            service=self.service,
            parsers=self.config.parsers,
            storage_path=self.service.get("storage.path"),
            raw=list(sec.raw),
        )
        level = sec.options.get("log_level")
        if level:
            from ..log import parse_level

            ctx.log.setLevel(parse_level(level))
        plugin = sec.cls(dict(sec.options), ctx)
        plugin.setup()
        return plugin

    # ------------------------------------------------------------ data path

    async def dispatch(self, batch: Batch) -> None:
        """Filters in config order (those whose Match fits the tag), then routing."""
        await self._route(batch, 0)

    async def _route(self, batch: Batch | None, first_filter: int) -> None:
        for slot in self._filters[first_filter:]:
            if batch is None or not batch.records:
                return
            if not slot.match(batch.tag):
                continue
            before = len(batch.records)
            try:
                if slot.plugin.is_async:
                    out = await slot.plugin.filter_async(batch)
                else:
                    out = slot.plugin.filter(batch)
            except Exception as e:  # a filter bug must not lose records: pass the batch on unchanged
                slot.metrics.inc("errors")
                slot.plugin.log.error("filter failed, records passed on unfiltered: %s: %s", type(e).__name__, e)
                out = batch
            after = len(out.records) if out is not None else 0
            if after < before:
                slot.metrics.inc("drop_records", before - after)
            elif after > before:
                slot.metrics.inc("add_records", after - before)
            if out is None and batch is not None:
                return
            batch = out
        if batch is None or not batch.records:
            return
        for match, buf in self._outputs:
            if match(batch.tag):
                buf.add(batch)

    async def _flush_filters(self, force: bool = False) -> None:
        """Release records filters hold across batches (multiline): timed-out ones, or all at shutdown.

        Each batch a filter releases goes through the filters after it only, then to the
        outputs; its handle's first reference is ours and is released after routing.
        """
        for i, slot in enumerate(self._filters):
            flush = getattr(slot.plugin, "flush_pending", None)
            if flush is None:
                continue
            for batch in flush(force=force):
                try:
                    await self._route(batch, i + 1)
                finally:
                    batch.ack.done()

    def _seal_all(self) -> None:
        for _, buf in self._outputs:
            buf.seal_all()

    async def _ticker(self) -> None:
        while True:
            await trio.sleep(self.flush_interval)
            await self._flush_filters()
            for _, buf in self._outputs:
                buf.seal_all()

    # ------------------------------------------------------------ lifecycle

    def shutdown(self) -> None:
        """Begin a graceful stop (first SIGTERM/SIGINT)."""
        self._shutdown.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until every input has finished by itself or ``shutdown()`` is called."""
        for _, buf in self._outputs:
            try:
                await buf.output.start()
            except Exception as e:
                raise StartupError(f"output {buf.instance} could not start: {e}") from e
        async with trio.open_nursery() as nursery:
            for _, buf in self._outputs:
                await nursery.start(buf.run)
            nursery.start_soon(self._ticker)
            for slot in self._filters:
                nursery.start_soon(self._run_filter_task, slot)
            if self.service.get("http_server"):
                await nursery.start(self._serve_http)
            nursery.start_soon(self._run_inputs)
            task_status.started()
            self.started.set()
            await self._shutdown.wait()
            self._inputs_cancel.cancel()
            await self._drain()
            for slot in self._inputs:
                try:
                    await slot.plugin.close()
                except Exception as e:
                    slot.plugin.log.error("close failed: %s", e)
            for _, buf in self._outputs:
                buf.close()
                try:
                    await buf.output.stop()
                except Exception as e:
                    buf.output.log.error("stop failed: %s", e)
            for slot in self._filters:
                try:
                    await slot.plugin.close()
                except Exception as e:
                    slot.plugin.log.error("close failed: %s", e)
            nursery.cancel_scope.cancel()

    async def _run_filter_task(self, slot: _FilterSlot) -> None:
        """A filter's background task (``Filter.run``, e.g. a watch); its failure is logged, not fatal."""
        try:
            await slot.plugin.run()
        except trio.Cancelled:
            raise
        except Exception as e:
            slot.metrics.inc("errors")
            slot.plugin.log.error("background task stopped: %s: %s", type(e).__name__, e)

    async def _run_inputs(self) -> None:
        with self._inputs_cancel:
            async with trio.open_nursery() as nursery:
                for slot in self._inputs:
                    nursery.start_soon(self._run_input, slot)
        # Every input returned by itself (stdin at EOF, dummy Samples, tail Exit_On_Eof).
        self._shutdown.set()

    async def _run_input(self, slot: _InputSlot) -> None:
        try:
            await slot.plugin.run(slot.emitter)
        except trio.Cancelled:
            raise
        except Exception as e:
            slot.plugin.metrics.inc("errors")
            slot.plugin.log.error("input stopped: %s: %s", type(e).__name__, e)
        finally:
            slot.done.set()

    async def _drain(self) -> None:
        """Flush held and buffered records, waiting at most ``grace`` seconds."""
        with trio.move_on_after(self.grace) as scope:
            await self._flush_filters(force=True)
            for _, buf in self._outputs:
                await buf.wait_idle()
        if scope.cancelled_caught:
            left = sum(buf.buffered_records for _, buf in self._outputs)
            log.warning("grace period of %.1fs ended with %d record(s) undelivered; "
                        "they were not acknowledged and will be read again on restart", self.grace, left)
        else:
            self.stopped_cleanly = True

    async def _serve_http(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        from .. import __version__
        from ..server import HealthPolicy, serve_http

        health = HealthPolicy.from_service(self.registry, self.service)
        await serve_http(
            self.registry,
            health,
            str(self.service.get("http_listen") or "0.0.0.0"),
            int(self.service["http_port"]) if self.service.get("http_port") is not None else 2020,
            task_status=task_status,
            build_info={"version": __version__, "edition": "community"},
        )

    # ------------------------------------------------------------ introspection

    @property
    def outputs(self) -> list[OutputBuffer]:
        return [buf for _, buf in self._outputs]

    def buffered_records(self) -> int:
        return sum(buf.buffered_records for _, buf in self._outputs)
