"""Build engine pipelines directly from plugin classes, for engine tests.

The config layer has its own tests; these build ``PluginSection``-shaped objects
from classes defined in the tests, with every declared option's default filled in
exactly as the config layer does, so the engine is exercised on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from logfwd.plugin import Plugin, all_options, create_plugin


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
