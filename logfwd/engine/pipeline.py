"""One running pipeline: inputs → filters → router → output buffers → outputs.

The pipeline owns a trio nursery: one task per input, per-output worker tasks,
the flush ticker and the HTTP server. Shutdown is structured: inputs are
cancelled first and awaited (every ``run()`` has returned), everything held and
buffered is flushed within ``grace`` seconds, the outputs' workers are stopped
(so no acknowledgement can arrive any more) and disconnect, and only then do
inputs commit their checkpoints and close (``close``). Whatever did not resolve
within the grace period stays unacknowledged, so its input replays it on the
next start: at-least-once is kept even by a shutdown that times out.
"""

from __future__ import annotations

import inspect
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import trio

from ..batch import Batch, MemBudget
from ..health import HealthPolicy
from ..metrics import MetricsRegistry
from ..plugin import Emitter, Filter, Input, Output, StartError
from .deadletter import DeadLetter, default_dead_letter_dir
from .outbuf import OutputBuffer
from .retry import RetryPolicy
from .router import TagMatcher
from .storage import InputStream, StorageError, StorageManager, StorageSettings, storage_json, update_gauges

__all__ = ["Pipeline", "StartupError"]

log = logging.getLogger("logfwd.engine")


# A restarted input that then runs this long has recovered: its failure count starts again.
RESTART_RESET = 60.0
RESTART_BASE = 1.0
RESTART_CAP = 60.0


def _uses_filesystem(sec: Any, service: dict[str, Any]) -> bool:
    """An input's ``storage.type``, or the service's with ``storage.inherit on`` when it sets none."""
    if any(k == "storage.type" for k, _ in sec.raw):
        return sec.options.get("storage.type") == "filesystem"
    return bool(service.get("storage.inherit")) and service.get("storage.type") == "filesystem"


class StartupError(RuntimeError):
    """Plugins that could not start: (the instance's logger, one line), logged as
    ``[error] [input:syslog:syslog.0] cannot listen on 127.0.0.1:5514/tcp: address already in use``."""

    def __init__(self, failures: list[tuple[logging.Logger, str]]) -> None:
        super().__init__("\n".join(f"[{lg.name}] {msg}" for lg, msg in failures))
        self.failures = failures


def restart_delay(consecutive: int) -> float:
    """Seconds before restart number ``consecutive``: doubling from 1 s up to 60 s, with equal jitter."""
    upper = min(RESTART_CAP, RESTART_BASE * 2 ** (consecutive - 1))
    return upper / 2 + random.random() * upper / 2


def describe_error(e: BaseException) -> str:
    """One line for a failure: the OS error's words (``address already in use``) rather than a type name,
    and the leaves of a trio ExceptionGroup rather than "1 sub-exception"."""
    if isinstance(e, BaseExceptionGroup):
        return "; ".join(describe_error(x) for x in e.exceptions)
    if isinstance(e, OSError) and e.strerror:
        where = f" ({e.filename})" if e.filename else ""
        return f"{e.strerror[0].lower()}{e.strerror[1:]}{where}"
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, (StartupError, StartError)):  # written to be read as they are
        return text
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _component(plugin: Any) -> str:
    """``input:syslog:syslog.0``: how Fluent Bit names an instance in its log."""
    return f"{plugin.kind}:{plugin.name}:{plugin.ctx.instance}"


class _Ready:
    """A task status that remembers whether the input reported ready, and reports at most once."""

    def __init__(self, inner: Any, on_ready: Any = None) -> None:
        self.inner = inner
        self.on_ready = on_ready
        self.reported = False

    def started(self, value: Any = None) -> None:
        if self.reported:
            return
        self.reported = True
        if self.inner is not None:
            self.inner.started()
        if self.on_ready is not None:
            self.on_ready()


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
        self._inputs_done = trio.Event()  # every input's run() has returned (or none was started)
        self._ticker_scope = trio.CancelScope()
        self._held_streams: dict[tuple[int, str], InputStream] = {}  # (holding filter, tag) -> chunk stream
        self.started = trio.Event()
        self.stopped_cleanly = False
        self._scope: trio.CancelScope | None = None
        self.fatal: str | None = None  # why the daemon stops by itself with an error
        self.failing: dict[str, str] = {}  # instance -> why, while it is being restarted
        self.health = HealthPolicy.from_service(self.registry, self.service)
        self.restart_limit = int(self.service.get("restart_limit") if self.service.get("restart_limit")
                                 is not None else 10)

        for sec in config.outputs:
            plugin = self._instantiate(sec)
            assert isinstance(plugin, Output)
            limit = sec.options.get("retry_limit")  # converted by the option: an int, or None for no limit
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
        """The instance the config layer built and set up; its counters become the daemon's."""
        self.registry.adopt(sec.kind, sec.instance, sec.plugin.metrics)
        return sec.plugin

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

    async def _deliver(self, batch: Batch, stream: InputStream | None, *, wait: bool = True) -> None:
        """Hand a filtered batch to its outputs: through its chunk files, or straight to memory."""
        bufs = [buf for match, buf in self._outputs if match(batch.tag)]
        if stream is not None and self.storage is not None and await self.storage.store(stream, batch, bufs,
                                                                                         wait=wait):
            return
        for buf in bufs:
            buf.add(batch)

    def storage_snapshot(self) -> dict[str, Any] | None:
        """``/api/v1/storage``."""
        memory = {s.plugin.ctx.instance: s.emitter.budget for s in self._inputs if s.stream is None}
        return storage_json(self.storage, memory)

    # ------------------------------------------------------------ data path

    async def dispatch(self, batch: Batch) -> None:
        """Filters in config order (those whose Match fits the tag), then routing."""
        await self._route(batch, 0)

    async def _route(self, batch: Batch | None, first_filter: int, stream: InputStream | None = None,
                     *, wait: bool = True) -> None:
        for i, slot in enumerate(self._filters[first_filter:], first_filter):
            if batch is None or not batch.records:
                return
            if not slot.match(batch.tag):
                continue
            if stream is not None and slot.plugin.holds_records:
                self._held_streams[(i, batch.tag)] = stream  # where what it releases later must be stored
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
        await self._deliver(batch, stream, wait=wait)

    async def _flush_filters(self, force: bool = False) -> None:
        """Release records filters hold across batches (multiline): timed-out ones, or all at shutdown.

        Each batch a filter releases goes through the filters after it only, then to the
        outputs; its handle's first reference is ours and is released after routing. With
        filesystem storage it is written to the chunk stream of the input whose records it
        holds (known by the filter and tag they came in with), so a kill after the release
        loses nothing and the held input records are acknowledged once it is on disk. The
        write does not wait for storage limits (the ticker must not block): the held records
        were admitted with their input's batches already.
        """
        for i, slot in enumerate(self._filters):
            if not slot.plugin.holds_records:
                continue
            for batch in slot.plugin.flush_pending(force):
                # Not in a ``finally``: a release cancelled before it was stored (the grace period
                # ended) must leave its held input records unacknowledged, so they are read again.
                await self._route(batch, i + 1, self._held_streams.get((i, batch.tag)), wait=False)
                batch.ack.done()

    def _seal_all(self) -> None:
        for _, buf in self._outputs:
            buf.seal_all()

    async def _run_ticker(self) -> None:
        with self._ticker_scope:
            await self._ticker()

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

    def shutdown(self, fatal: str | None = None) -> None:
        """Begin a graceful stop (first SIGTERM/SIGINT, or a fatal runtime failure)."""
        if fatal and self.fatal is None:
            self.fatal = fatal
        self._shutdown.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start everything, report ready, run until ``shutdown()``, then drain and stop.

        Start-up is all or nothing: every output's ``start`` and every input's local start
        (``task_status.started()`` inside its ``run``: port bound, DB and journal opened)
        must succeed before ``task_status.started()`` here; if any fails, what started is
        stopped and ``StartupError`` lists every failure, one line each.
        """
        failures = self._open_storage() + await self._start_outputs()
        async with trio.open_nursery() as nursery:
            self._scope = nursery.cancel_scope
            for _, buf in self._outputs:
                await nursery.start(buf.run)
            if self.storage is not None and not failures:
                await nursery.start(self.storage.run)  # the backlog is queued before any input runs
            nursery.start_soon(self._run_ticker)
            for slot in self._filters:
                nursery.start_soon(self._run_filter_task, slot)
            if self.health.enabled:
                nursery.start_soon(self.health.run)
            if not failures:
                failures = await nursery.start(self._host_inputs)
            else:
                self._inputs_done.set()  # no input was started
            if failures:
                await self._stop_inputs()
                await self._stop_plugins()
                nursery.cancel_scope.cancel()
                raise StartupError(failures)
            task_status.started()
            self.started.set()
            await self._shutdown.wait()
            # Order matters: inputs stop emitting first (every run() returned), then what is held
            # and buffered is flushed, then the outputs stop (no acknowledgement can arrive after
            # that), and only then do inputs commit their checkpoints and close their DBs.
            await self._stop_inputs()
            await self._drain()
            await self._stop_plugins()
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

    def abort(self) -> None:
        """Stop at once without draining (``hot_reload.timeout``): nothing undelivered was acknowledged."""
        if self._scope is not None:
            self._scope.cancel()

    def _open_storage(self) -> list[tuple[logging.Logger, str]]:
        """Create and open ``storage.path`` (recovering the chunks found there): a start-up failure if it cannot."""
        if self.storage is None:
            return []
        try:
            self.storage.open()
        except StorageError as e:
            return [(logging.getLogger("logfwd.storage"), str(e))]
        return []

    async def _start_outputs(self) -> list[tuple[logging.Logger, str]]:
        failures = []
        for _, buf in self._outputs:
            try:
                await buf.output.start()
            except Exception as e:
                failures.append((buf.output.log, f"cannot start: {describe_error(e)}"))
        return failures

    async def _stop_plugins(self) -> None:
        """Outputs stop, then inputs commit their checkpoints and close, then filters release resources.

        The outputs' workers are stopped (and awaited) before any input closes: a flush still in
        flight when the grace period ended could otherwise complete later and acknowledge into
        an input that had closed its DB (a tail offset written to a closed SQLite connection).
        Every acknowledgement that arrived until then is committed by the inputs' ``close``.
        """
        self._ticker_scope.cancel()  # a flush tick releases held records: none once the drain is over
        for _, buf in self._outputs:
            await buf.stop_workers(max(self.grace, 5.0))
            try:
                await buf.output.stop()
            except Exception as e:
                buf.output.log.error("stop failed: %s", describe_error(e))
        for slot in self._inputs:
            try:
                await slot.plugin.close()
            except Exception as e:
                slot.plugin.log.error("close failed: %s", describe_error(e))
        for f in self._filters:
            try:
                await f.plugin.close()
            except Exception as e:
                f.plugin.log.error("close failed: %s", describe_error(e))

    async def _stop_inputs(self) -> None:
        """Cancel the inputs and wait until every ``run()`` has returned, before anything is closed.

        Cancelling only asks: an input blocked in a worker thread (a file read, a stat scan, a
        DB flush, a poll) carries on until the thread returns, and may then touch its DB or
        socket once more. Closing it before that (``close()``) made such a late step fail on a
        closed resource and ended a clean SIGTERM with an internal error. The wait is bounded
        (threads here are short); past it the inputs are closed anyway, and it is logged.
        """
        self._inputs_cancel.cancel()
        with trio.move_on_after(max(self.grace, 5.0)):
            await self._inputs_done.wait()
            return
        log.warning("inputs still running after the stop was requested; closing them anyway")

    async def _host_inputs(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start every input in turn (each reports when it is ready), then keep them running."""
        failures: list[tuple[logging.Logger, str]] = []
        try:
            with self._inputs_cancel:
                async with trio.open_nursery() as nursery:
                    for slot in self._inputs:
                        try:
                            await nursery.start(self._supervise_input, slot)
                        except Exception as e:
                            failures.append((slot.plugin.log, describe_error(e)))
                    task_status.started(failures)
        finally:
            self._inputs_done.set()

    async def _supervise_input(self, slot: _InputSlot, *, task_status: trio.TaskStatus[None]) -> None:
        """Run an input; restart it with backoff when it fails after it started.

        A failure before it reported ready propagates (a start-up failure). Later ones are
        counted (``restarts``), logged, and shown by the health endpoint until the input is
        ready again; its checkpoint is whatever was acknowledged, so a restart replays and
        never skips. ``restart_limit`` failures in a row stop the daemon with an error.
        """
        gate = _Ready(task_status)
        consecutive = 0
        while True:
            began = trio.current_time()
            try:
                if self._legacy_run(slot.plugin):
                    gate.started()  # an input written before the readiness contract: ready at once
                    await slot.plugin.run(slot.emitter)
                else:
                    await slot.plugin.run(slot.emitter, task_status=gate)
            except trio.Cancelled:
                raise
            except Exception as e:
                if not gate.reported:
                    raise
                consecutive = 0 if trio.current_time() - began >= RESTART_RESET else consecutive
                consecutive += 1
                if not await self._restart_wait(slot, e, consecutive):
                    return
                gate = _Ready(None, on_ready=lambda s=slot: self._recovered(s))
                continue
            except BaseExceptionGroup as group:  # cancelled, and a task of its own nursery failed meanwhile
                _, failed = group.split(trio.Cancelled)
                if failed is None:
                    raise
                # A failure while being stopped is logged, not a crash of the daemon: its checkpoint is
                # what was acknowledged, so nothing is skipped, and the drain goes on.
                slot.plugin.metrics.inc("errors")
                slot.plugin.log.error("input failed while stopping: %s", describe_error(failed))
                return
            gate.started()
            slot.done.set()
            if slot.plugin.exit_when_done():
                slot.plugin.log.info("input finished: stopping (as Fluent Bit does for this input)")
                self.shutdown()
            else:
                slot.plugin.log.info("input finished; the daemon keeps running until it is stopped")
            return

    @staticmethod
    def _legacy_run(plugin: Input) -> bool:
        return "task_status" not in inspect.signature(plugin.run).parameters

    async def _restart_wait(self, slot: _InputSlot, error: Exception, consecutive: int) -> bool:
        """Record a runtime failure and wait before the restart; False when the daemon must stop instead."""
        why = describe_error(error)
        slot.plugin.metrics.inc("errors")
        slot.plugin.metrics.inc("restarts")
        self.failing[slot.plugin.ctx.instance] = why
        limit = self.restart_limit
        if limit and consecutive > limit:
            msg = f"[{_component(slot.plugin)}] failed {consecutive} times in a row, giving up: {why}"
            slot.plugin.log.error("failed %d times in a row, stopping the daemon: %s", consecutive, why)
            self.shutdown(fatal=msg)
            return False
        delay = restart_delay(consecutive)
        slot.plugin.log.error("input failed (restart %d in %.1fs): %s", consecutive, delay, why)
        await trio.sleep(delay)
        return True

    def _recovered(self, slot: _InputSlot) -> None:
        if self.failing.pop(slot.plugin.ctx.instance, None) is not None:
            slot.plugin.log.info("input running again")

    def save_checkpoints(self) -> None:
        """Write every input's acknowledged checkpoint now (a second signal exits without draining)."""
        for slot in self._inputs:
            try:
                slot.plugin.save_checkpoint()
            except Exception as e:
                slot.plugin.log.error("cannot save checkpoint: %s", describe_error(e))

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

    def dump(self) -> str:
        """The internal state as text, for SIGCONT (Fluent Bit prints the same kind of dump)."""
        lines = ["===== logfwd internal state ====="]
        for slot in self._inputs:
            b = slot.emitter.budget
            state = "finished" if slot.done.is_set() else "paused" if b.paused else "running"
            if slot.plugin.ctx.instance in self.failing:
                state = f"failing ({self.failing[slot.plugin.ctx.instance]})"
            m = slot.plugin.metrics
            lines.append(f"[input] {slot.plugin.ctx.instance}: {state}; records={int(m.get('records', 0))} "
                         f"mem_buf_limit={b.limit} unacknowledged_bytes={b.used} pauses={b.pauses}")
        for _, buf in self._outputs:
            lines.append(f"[output] {buf.instance}: " + buf.describe())
        return "\n".join(lines)


    # ------------------------------------------------------------ introspection

    @property
    def outputs(self) -> list[OutputBuffer]:
        return [buf for _, buf in self._outputs]

    def buffered_records(self) -> int:
        return sum(buf.buffered_records for _, buf in self._outputs)
