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
from .storage import InputStream, StorageError, StorageManager, StorageSettings, storage_json, update_gauges

__all__ = ["Pipeline", "StartupError"]

log = logging.getLogger("logfwd.engine")


def _uses_filesystem(sec: Any, service: dict[str, Any]) -> bool:
    """An input's ``storage.type``, or the service's with ``storage.inherit on`` when it sets none."""
    if any(k == "storage.type" for k, _ in sec.raw):
        return sec.options.get("storage.type") == "filesystem"
    return bool(service.get("storage.inherit")) and service.get("storage.type") == "filesystem"


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
    stream: InputStream | None = None  # storage.type filesystem


class Pipeline:
    """Builds plugin instances from a validated ``Config`` and runs them."""

    def __init__(self, config: Any, registry: MetricsRegistry | None = None) -> None:
        self.config = config
        self.service: dict[str, Any] = dict(config.service)
        self.registry = registry or MetricsRegistry()
        self.flush_interval = float(self.service.get("flush") or 1.0)
        self.grace = float(self.service.get("grace") if self.service.get("grace") is not None else 5.0)
        self.dead_letter = DeadLetter(default_dead_letter_dir(self.service))
        self.storage: StorageManager | None = None
        base = float(self.service.get("scheduler.base") or 5)
        cap = float(self.service.get("scheduler.cap") or 2000)
        self._inputs: list[_InputSlot] = []
        self._filters: list[_FilterSlot] = []
        self._outputs: list[tuple[TagMatcher, OutputBuffer]] = []
        self._output_limits: dict[str, int | None] = {}
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
            self._output_limits[buf.instance] = sec.options.get("storage.total_limit_size")
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
            stream = self._attach_storage(plugin, sec)
            dispatch = self.dispatch if stream is None else self._stream_dispatch(stream)
            emitter = Emitter(tag, budget, dispatch, plugin.metrics)
            emitter.durable = stream is not None
            self._inputs.append(_InputSlot(plugin, emitter, stream=stream))

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

    # ------------------------------------------------------------ storage (logfwd.engine.storage)

    def _attach_storage(self, plugin: Input, sec: Any) -> InputStream | None:
        """The chunk stream of a ``storage.type filesystem`` input (None for memory inputs)."""
        if not _uses_filesystem(sec, self.service):
            return None
        if self.storage is None:
            self.storage = StorageManager(StorageSettings.from_service(self.service))
            for buf in self.outputs:
                self.storage.add_output(buf, self._output_limits.get(buf.instance))
        return self.storage.add_input(
            sec.instance, replayable=type(plugin).replayable, metrics=plugin.metrics,
            pause_overlimit=bool(sec.options.get("storage.pause_on_chunks_overlimit")))

    def _stream_dispatch(self, stream: InputStream) -> Any:
        async def dispatch(batch: Batch) -> None:
            await self._route(batch, 0, stream)

        return dispatch

    async def _deliver(self, batch: Batch, stream: InputStream | None) -> None:
        """Hand a filtered batch to its outputs: through its chunk files, or straight to memory."""
        bufs = [buf for match, buf in self._outputs if match(batch.tag)]
        if stream is not None and self.storage is not None and await self.storage.store(stream, batch, bufs):
            return
        for buf in bufs:
            buf.add(batch)

    def storage_snapshot(self) -> dict[str, Any]:
        """``/api/v1/storage``."""
        memory = {s.plugin.ctx.instance: s.emitter.budget for s in self._inputs if s.stream is None}
        return storage_json(self.storage, memory)

    # ------------------------------------------------------------ data path

    async def dispatch(self, batch: Batch) -> None:
        """Filters in config order (those whose Match fits the tag), then routing."""
        await self._route(batch, 0)

    async def _route(self, batch: Batch | None, first_filter: int, stream: InputStream | None = None) -> None:
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
        await self._deliver(batch, stream)

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
            if self.storage is not None:
                await self.storage.tick()
                update_gauges(self.storage)
            for _, buf in self._outputs:
                buf.seal_all()

    # ------------------------------------------------------------ lifecycle

    def shutdown(self) -> None:
        """Begin a graceful stop (first SIGTERM/SIGINT)."""
        self._shutdown.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until every input has finished by itself or ``shutdown()`` is called."""
        if self.storage is not None:
            try:
                self.storage.open()
            except StorageError as e:
                raise StartupError(str(e)) from None
        for _, buf in self._outputs:
            try:
                await buf.output.start()
            except Exception as e:
                raise StartupError(f"output {buf.instance} could not start: {e}") from e
        async with trio.open_nursery() as nursery:
            for _, buf in self._outputs:
                await nursery.start(buf.run)
            if self.storage is not None:
                await nursery.start(self.storage.run)  # the backlog is queued before any input runs
            nursery.start_soon(self._ticker)
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
            if self.storage is not None:
                await self.storage.drain()
            for _, buf in self._outputs:
                await buf.wait_idle()
        if scope.cancelled_caught:
            for msg, args in self._shutdown_report():
                log.warning(msg, *args)
        else:
            self.stopped_cleanly = True
        if self.storage is not None:
            self.storage.close()
            chunks, records = self.storage.undelivered()
            if chunks:
                log.info("storage: %d chunk(s) with %d record(s) stay in %s and are delivered after the next start",
                         chunks, records, self.storage.root)

    def _shutdown_report(self) -> list[tuple[str, tuple[Any, ...]]]:
        """What a grace period that ran out leaves behind, per input: replayed, kept on disk, or lost.

        One template per outcome (the log's rate limit holds back repeats of one template).
        """
        lines: list[tuple[str, tuple[Any, ...]]] = []
        for slot in self._inputs:
            n = slot.emitter.unacked_records
            if slot.stream is not None or n <= 0:
                continue
            args = (self.grace, slot.plugin.ctx.instance, n)
            if type(slot.plugin).replayable:
                lines.append(("grace period of %.1fs ended: input %s: %d record(s) undelivered; not acknowledged, "
                              "they will be read again on restart", args))
            else:
                lines.append(("grace period of %.1fs ended: input %s: %d record(s) undelivered and lost (a push "
                              "input cannot re-read them; storage.type filesystem keeps them)", args))
        if not lines:
            lines.append(("grace period of %.1fs ended with records undelivered; what is not delivered stays on "
                          "disk (filesystem storage) or is read again on restart", (self.grace,)))
        return lines

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
            **self._storage_routes(),
        )

    def _storage_routes(self) -> dict[str, Any]:
        """``/api/v1/storage`` when ``storage.metrics`` is on (Fluent Bit serves it only then)."""
        if not self.service.get("storage.metrics"):
            return {}
        return {"storage": self.storage_snapshot}

    # ------------------------------------------------------------ introspection

    @property
    def outputs(self) -> list[OutputBuffer]:
        return [buf for _, buf in self._outputs]

    def buffered_records(self) -> int:
        return sum(buf.buffered_records for _, buf in self._outputs)
