"""The daemon around the pipeline: signals, reloads, the monitoring server, systemd's notify protocol.

A supervisor (systemd, the kubelet) trusts three things, and this module keeps them true:

- **the exit status**: a start-up failure (a port taken, a directory that cannot be
  created) or an input that keeps failing ends the process with status 1 and one line
  per failure; SIGTERM/SIGINT drain within ``grace`` and exit 0; a second one exits at
  once with status 1, after writing the acknowledged checkpoints;
- **readiness**: ``READY=1`` is sent (and the HTTP server says ok) only once every input
  listens; ``WATCHDOG=1`` comes from the event loop itself, so a hung loop is caught;
- **health**: ``/api/v1/health`` is 500 while a plugin is failing.

Reloads (SIGHUP, or ``POST /api/v2/reload``, with ``hot_reload on``) validate the new
configuration first and keep the running pipeline when it is invalid; otherwise the
running pipeline stops as on SIGTERM (its checkpoints commit) and the new one starts
from them. The HTTP server lives here, not in the pipeline, so it answers across reloads.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from typing import Any

import trio

from . import __version__
from .config import ConfigError
from .engine.pipeline import Pipeline, StartupError, describe_error
from .health import HealthPolicy
from .sdnotify import Notifier
from .server import serve_http

__all__ = ["Daemon"]

log = logging.getLogger("logfwd")


class Daemon:
    """Runs pipelines one after the other (reloads) until told to stop; implements ``server.Monitor``."""

    def __init__(self, cfg: Any, reload: Callable[[], Any] | None = None, notifier: Notifier | None = None) -> None:
        self.cfg = cfg
        self._load = reload
        self.notifier = notifier or Notifier()
        self.pipeline: Pipeline | None = None
        self.reload_count = 0
        self.reload_failures = 0
        self._stopping = False
        self._next_cfg: Any = None
        self._reload_lock = trio.Lock()
        self._http_key: tuple[Any, ...] | None = None
        self._http_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None

    # ------------------------------------------------------------ Monitor (for the HTTP server)

    @property
    def registry(self) -> Any:
        assert self.pipeline is not None
        return self.pipeline.registry

    @property
    def health(self) -> HealthPolicy:
        assert self.pipeline is not None
        return self.pipeline.health

    def failing(self) -> dict[str, str]:
        if self.pipeline is None or not self.pipeline.started.is_set():
            return {"pipeline": "starting"}  # not ready until every input listens
        return dict(self.pipeline.failing)

    def storage(self) -> dict[str, Any] | None:
        if self.pipeline is None or not self.pipeline.service.get("storage.metrics"):
            return None  # Fluent Bit serves /api/v1/storage only with storage.metrics on
        return self.pipeline.storage_snapshot()

    async def reload(self) -> tuple[int, dict[str, Any]]:
        """``POST /api/v2/reload``: Fluent Bit's answers, ``{"reload": "done", "status": 0}`` or why not."""
        if not self.cfg.service.get("hot_reload"):
            return 400, {"reload": "not enabled", "status": -1}
        if self._load is None:
            return 400, {"reload": "a command-line pipeline cannot be reloaded", "status": -1}
        if self._stopping or self._reload_lock.locked():
            return 409, {"reload": "in progress", "status": -1}
        error = await self._prepare_reload("HTTP request")
        if error:
            return 400, {"reload": "failed", "status": -1, "error": error}
        return 200, {"reload": "done", "status": 0}

    # ------------------------------------------------------------ running

    async def run(self) -> int:
        """Run until stopped; the process exit status."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._signals)
            if self.notifier.watchdog_interval:
                nursery.start_soon(self._watchdog, self.notifier.watchdog_interval)
            status = await self._pipelines()
            nursery.cancel_scope.cancel()
        self.notifier.close()
        return status

    async def _pipelines(self) -> int:
        first = True
        previous: Any = None
        while True:
            try:
                pipeline = await self._start(self.cfg)
            except Exception as group:
                e = _unwrap(group)
                if not isinstance(e, (StartupError, OSError)):
                    raise
                if first or previous is None:
                    self._report_startup(e)
                    return 1
                log.error("the reloaded configuration could not start (%s); going back to the previous one",
                          describe_error(e))
                self.cfg, previous = previous, None
                continue
            first = False
            await self._until_stopped(pipeline)
            if pipeline.fatal:
                log.error("%s", pipeline.fatal)
                self.notifier.stopping()
                return 1
            if self._next_cfg is None:
                log.info("stopped%s", "" if pipeline.stopped_cleanly else " (some records left unacknowledged)")
                return 0
            previous, self.cfg, self._next_cfg = self.cfg, self._next_cfg, None
            self.reload_count += 1
            for w in getattr(self.cfg, "warnings", []):
                log.warning("%s", w)

    async def _start(self, cfg: Any) -> Pipeline:
        """Build and start a pipeline and (if its settings changed) the HTTP server; ready when this returns."""
        pipeline = Pipeline(cfg)
        self.pipeline = pipeline
        self._pipeline_done = trio.Event()
        await self._ensure_http(cfg.service)  # first: a taken port must fail before any input starts
        assert self._nursery is not None
        await self._nursery.start(self._run_pipeline, pipeline)
        self._stopping = False
        summary = self._summary()
        log.info("started: %s", summary)
        if self.reload_count:
            log.info("reloaded (%d so far)", self.reload_count)
        self.notifier.ready(summary)
        return pipeline

    async def _run_pipeline(self, pipeline: Pipeline, *, task_status: trio.TaskStatus[None]) -> None:
        try:
            await pipeline.run(task_status=task_status)
        finally:
            self._pipeline_done.set()

    async def _until_stopped(self, pipeline: Pipeline) -> None:
        await self._pipeline_done.wait()

    def _report_startup(self, e: BaseException) -> None:
        self.notifier.stopping()
        if isinstance(e, StartupError):
            for logger, line in e.failures:
                logger.error("%s", line)
        else:
            log.error("%s", describe_error(e))
        log.info("exiting with status 1: start-up failed, nothing is collected; fix the line(s) above")

    def _summary(self) -> str:
        cfg = self.cfg
        return f"{len(cfg.inputs)} input(s), {len(cfg.filters)} filter(s), {len(cfg.outputs)} output(s)"

    # ------------------------------------------------------------ HTTP server

    async def _ensure_http(self, service: dict[str, Any]) -> None:
        """Start the monitoring server, or restart it when a reload changed its address; StartupError if it cannot bind."""
        key = (bool(service.get("http_server")), str(service.get("http_listen") or "0.0.0.0"),
               int(service["http_port"]) if service.get("http_port") is not None else 2020)
        if key == self._http_key:
            return
        if self._http_scope is not None:
            self._http_scope.cancel()
            self._http_scope = None
        self._http_key = key
        if not key[0]:
            return
        assert self._nursery is not None
        try:
            self._http_scope = await self._nursery.start(self._serve, key[1], key[2])
        except Exception as group:
            e = _unwrap(group)
            if not isinstance(e, OSError):
                raise
            self._http_key = None
            msg = (f"cannot listen on {key[1]}:{key[2]}/tcp: {describe_error(e)}; "
                   "set http_port to a free port (or http_server off)")
            raise StartupError([(logging.getLogger("logfwd.http_server"), msg)]) from None

    async def _serve(self, host: str, port: int, *, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(lambda task_status: serve_http(
                    self, host, port, task_status=task_status,
                    build_info={"version": __version__}))
                task_status.started(scope)

    # ------------------------------------------------------------ signals and reloads

    async def _signals(self) -> None:
        wanted = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCONT]
        with trio.open_signal_receiver(*wanted) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await self._on_sighup()
                elif signum == signal.SIGCONT:
                    if self.pipeline is not None:
                        log.info("received SIGCONT: internal state follows")
                        for line in self.pipeline.dump().splitlines():
                            log.info("%s", line)
                else:
                    self._on_stop_signal(signal.Signals(signum).name)

    def _on_stop_signal(self, name: str) -> None:
        pipeline = self.pipeline
        if self._stopping and self._next_cfg is None:
            log.warning("second %s: writing checkpoints and exiting now", name)
            if pipeline is not None:
                pipeline.save_checkpoints()
            os._exit(1)
        grace = pipeline.grace if pipeline is not None else 0
        log.info("received %s: stopping inputs, flushing within %.1fs", name, grace)
        self._stopping = True
        self._next_cfg = None
        self.notifier.stopping()
        if pipeline is not None:
            pipeline.shutdown()

    async def _on_sighup(self) -> None:
        if self._stopping:
            return
        if not self.cfg.service.get("hot_reload"):
            log.info("received SIGHUP: ignored (service hot_reload is off)")
            return
        if self._load is None:
            log.warning("received SIGHUP: a command-line pipeline cannot be reloaded")
            return
        await self._prepare_reload("SIGHUP")

    async def _prepare_reload(self, why: str) -> str | None:
        """Validate the configuration again; if it is valid, stop the running pipeline for it. An error, or None."""
        assert self._load is not None
        async with self._reload_lock:
            self.notifier.reloading()
            try:
                candidate = await trio.to_thread.run_sync(self._load)
            except (ConfigError, OSError) as e:
                self.reload_failures += 1
                log.error("reload (%s) refused, the running configuration stays: %s", why, e)
                self.notifier.ready(self._summary())
                return str(e)
            log.info("reload (%s): configuration valid; stopping the running pipeline first", why)
            self._next_cfg = candidate
            self._stopping = True
            pipeline = self.pipeline
            if pipeline is not None:
                pipeline.shutdown()
                timeout = float(self.cfg.service.get("hot_reload.timeout") or 0)
                if timeout > 0:
                    assert self._nursery is not None
                    self._nursery.start_soon(self._reload_deadline, pipeline, timeout)
            return None

    async def _reload_deadline(self, pipeline: Pipeline, timeout: float) -> None:
        """``hot_reload.timeout``: a pipeline that has not stopped by then is cancelled (its records replay)."""
        with trio.move_on_after(timeout):
            await self._pipeline_done.wait()
            return
        if self.pipeline is pipeline:
            log.warning("hot_reload.timeout (%.0fs) reached: cancelling the old pipeline; "
                        "what it had not delivered was not acknowledged and is read again", timeout)
            pipeline.abort()

    async def _watchdog(self, interval: float) -> None:
        """``WATCHDOG=1`` from the event loop itself: if the loop hangs, systemd stops hearing it."""
        while True:
            self.notifier.watchdog()
            if self.pipeline is not None and not self._stopping:
                self.notifier.status(self._status_line())
            await trio.sleep(interval)

    def _status_line(self) -> str:
        assert self.pipeline is not None
        reg = self.pipeline.registry
        failing = self.failing()
        text = (f"{int(reg.totals('input', 'records'))} records in, {int(reg.totals('output', 'proc_records'))} "
                f"delivered, {self.pipeline.buffered_records()} buffered")
        return text + (f"; failing: {', '.join(failing)}" if failing else "")


def _unwrap(e: BaseException) -> BaseException:
    """The one exception inside nested trio ExceptionGroups (a start-up failure raised through nurseries)."""
    while isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
        e = e.exceptions[0]
    return e
