"""Build engine pipelines directly from plugin classes, for engine tests.

The config layer has its own tests; these build ``PluginSection``-shaped objects
from classes defined in the tests, with every declared option's default filled in
exactly as the config layer does, so the engine is exercised on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from logfwd.batch import Chunk, Result
from logfwd.engine.pipeline import Pipeline
from logfwd.options import Option
from logfwd.plugin import Emitter, Input, Output, Plugin, all_options, create_plugin


@dataclass
class Section:
    kind: str
    name: str
    cls: type[Plugin]
    options: dict[str, Any]
    raw: list[tuple[str, str]]
    instance: str
    file: str = "<test>"
    line: int = 0
    plugin: Any = None  # set up by ``config()``, as the config layer does


@dataclass
class EngineConfig:
    service: dict[str, Any] = field(default_factory=dict)
    inputs: list[Section] = field(default_factory=list)
    filters: list[Section] = field(default_factory=list)
    outputs: list[Section] = field(default_factory=list)
    parsers: Any = None


def section(cls: type[Plugin], instance: str | None = None, **options: Any) -> Section:
    """A section for ``cls`` with option defaults filled in and ``options`` (already converted) applied."""
    opts = {o.key: o.default_value() for o in all_options(cls)}
    for k, v in options.items():
        opts[k.lower()] = v
    raw = [(k.lower(), str(v)) for k, v in options.items()]
    return Section(cls.kind, cls.name, cls, opts, raw, instance or f"{cls.name}.0")


def config(*sections: Section, **service: Any) -> EngineConfig:
    """An engine config of ``sections`` whose plugins are built and set up, as ``load_config`` leaves them."""
    svc = {"flush": 0.05, "grace": 5.0, "scheduler.base": 0.01, "scheduler.cap": 0.05}
    dotted = {"storage_path": "storage.path", "scheduler_base": "scheduler.base", "scheduler_cap": "scheduler.cap"}
    svc.update({dotted.get(k, k): v for k, v in service.items()})
    cfg = EngineConfig(service=svc)
    for s in sections:
        s.plugin = create_plugin(s.cls, s.options, instance=s.instance, service=svc, raw=s.raw)
        getattr(cfg, s.kind + "s").append(s)
    return cfg


# --------------------------------------------------------------------------- scripted plugins and a runner

class ListInput(Input):
    """Emits ``batches`` (list of (tag, records)) then returns; positions are batch numbers."""

    name = "listin"
    options = (Option("delay", "float", "0"),)
    batches: list[tuple[str, list[dict[str, Any]]]] = []
    commits: list[Any] = []
    closed_with: list[int] = []

    async def run(self, emitter: Emitter, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        tracker = emitter.tracker(self.commits.append)
        self.tracker = tracker
        for n, (tag, records) in enumerate(self.batches):
            await emitter.emit(records, tag=tag, handle=tracker.handle(n), nbytes=sum(len(str(r)) for r in records))
            if self.config["delay"]:
                await trio.sleep(self.config["delay"])

    def exit_when_done(self) -> bool:
        return True  # the engine tests run until the scripted batches are delivered

    async def close(self) -> None:
        self.closed_with.append(self.tracker.watermark)


class Collect(Output):
    """Records every delivered record; behaviour scripted per test through class attributes."""

    name = "collect"
    options = (Option("delay", "float", "0"), Option("fail_first", "int", "0"), Option("always_retry", "bool", "off"))

    def setup(self) -> None:
        self.got: list[dict[str, Any]] = []
        self.tags: list[str] = []
        self.calls = 0
        self.max_inflight = 0
        OUTPUTS[self.ctx.instance] = self

    async def flush(self, chunk: Chunk) -> Result:
        self.calls += 1
        if self.config["delay"]:
            await trio.sleep(self.config["delay"])
        if self.config["always_retry"] or self.calls <= self.config["fail_first"]:
            return Result.retry_everything("backend said 503")
        self.got.extend(chunk.records)
        self.tags.extend([chunk.tag] * len(chunk))
        return Result.ok()


OUTPUTS: dict[str, Any] = {}




def reset() -> None:
    """Forget what the scripted plugins recorded (each engine test starts clean)."""
    OUTPUTS.clear()
    ListInput.commits = []
    ListInput.closed_with = []


def run(cfg: Any, timeout: float = 20, until: Callable[[Pipeline], bool] | None = None) -> Pipeline:
    """Run a pipeline until its inputs end it (``exit_when_done``), or until ``until(p)`` holds, then stop it."""
    p = Pipeline(cfg)

    async def main() -> None:
        with trio.fail_after(timeout):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(p.run)
                if until is not None:
                    while not until(p):
                        await trio.sleep(0.01)
                    p.shutdown()

    trio.run(main)
    return p


# ------------------------------------------------------------ scripted plugins for storage/shutdown tests


class ScriptedInput(Input):
    """Emits ``batches`` (tag, records) with tracker positions 0, 1, ... then keeps running until stopped.

    ``commits`` records each checkpoint; ``on_commit`` (if set) is called with the position
    first, so a test can look at what is stored at the moment a checkpoint moves.
    """

    name = "scripted"
    options = (Option("delay", "float", "0"),)
    batches: list[tuple[str, list[dict[str, Any]]]] = []
    commits: list[Any] = []
    on_commit: Callable[[Any], None] | None = None

    async def run(self, emitter: Emitter, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        cls = type(self)

        def commit(pos: Any) -> None:
            if cls.on_commit is not None:
                cls.on_commit(pos)
            cls.commits.append(pos)

        tracker = emitter.tracker(commit)
        task_status.started()
        for n, (tag, records) in enumerate(self.batches):
            await emitter.emit(records, tag=tag, handle=tracker.handle(n), nbytes=sum(len(str(r)) for r in records))
            if self.config["delay"]:
                await trio.sleep(self.config["delay"])
        await trio.sleep_forever()


class Sink(Output):
    """Keeps what it delivers in ``SINKS[instance]``; ``down`` (class attribute) asks for retries instead."""

    name = "sink"
    options = (Option("flush_delay", "float", "0"), Option("stop_delay", "float", "0"))
    down = False

    def setup(self) -> None:
        self.got: list[dict[str, Any]] = []
        SINKS[self.ctx.instance] = self

    async def flush(self, chunk: Chunk) -> Result:
        if self.config["flush_delay"]:
            await trio.sleep(self.config["flush_delay"])
        if type(self).down:
            return Result.retry_everything("backend down")
        self.got.extend(chunk.records)
        return Result.ok()

    async def stop(self) -> None:
        if self.config["stop_delay"]:  # a graceful disconnect that takes a while
            await trio.sleep(self.config["stop_delay"])


SINKS: dict[str, Sink] = {}


def run_until(cfg: Any, until: Callable[[Pipeline], bool], timeout: float = 20) -> Pipeline:
    """Run a pipeline until ``until(p)`` holds (polled), then stop it as SIGTERM does and wait for the end."""
    p = Pipeline(cfg)

    async def main() -> None:
        with trio.fail_after(timeout):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(p.run)
                while not until(p):
                    await trio.sleep(0.01)
                p.shutdown()

    trio.run(main)
    return p
