"""Per-plugin counters, shaped like Fluent Bit's monitoring API.

Counters are plain ints in a dict per plugin instance (cheap to bump from the
hot path, once per batch). ``MetricsRegistry.to_json`` gives
``{"input": {"tail.0": {"records": N, "bytes": N}}, "output": {...}}`` as
Fluent Bit's ``/api/v1/metrics``; ``PrometheusCollector`` exposes the same
numbers as ``logfwd_<section>_<name>_total{name="tail.0"}`` through
``prometheus_client`` (the exposition format is not hand-written).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

__all__ = ["Counters", "MetricsRegistry", "INPUT_COUNTERS", "FILTER_COUNTERS", "OUTPUT_COUNTERS", "new_counters"]

# Counter names per section. The first names match Fluent Bit's JSON metrics so
# that dashboards keep working; the rest are ours (dead-letter, buffer bytes).
INPUT_COUNTERS = ("records", "bytes", "errors", "dropped_records", "parse_errors", "skipped_lines")
FILTER_COUNTERS = ("add_records", "drop_records", "errors")
OUTPUT_COUNTERS = (
    "proc_records",
    "proc_bytes",
    "errors",
    "retries",
    "retries_failed",
    "retried_records",
    "dropped_records",
    "dlq_records",
    "skipped_records",
    "flushes",
    "flush_seconds",
)
# Gauges are reported as-is (not "_total") in Prometheus.
GAUGES = ("buffer_bytes", "buffer_records", "paused", "files_watched", "files_open", "connections", "udp_kernel_drops",
          "partial_bytes", "storage_chunks", "storage_chunks_up", "storage_chunks_down", "storage_chunks_busy",
          "storage_bytes", "storage_records")


class Counters(dict[str, float]):
    """A plugin instance's counters and gauges: ``c.inc("records", n)``."""

    def __init__(self, names: tuple[str, ...] = ()) -> None:
        super().__init__({n: 0 for n in names})

    def inc(self, name: str, n: float = 1) -> None:
        self[name] = self.get(name, 0) + n

    def set(self, name: str, value: float) -> None:
        self[name] = value


def new_counters(section: str) -> Counters:
    """A plugin instance's counters, every name of its section at zero (so a scrape shows them all)."""
    names = {"input": INPUT_COUNTERS, "filter": FILTER_COUNTERS, "output": OUTPUT_COUNTERS}.get(section, ())
    return Counters(names)


class MetricsRegistry:
    """All plugin counters of a running daemon, keyed by section and instance name."""

    def __init__(self) -> None:
        self.started = time.time()
        self.sections: dict[str, dict[str, Counters]] = defaultdict(dict)

    def register(self, section: str, instance: str) -> Counters:
        c = self.sections[section].get(instance)
        if c is None:
            c = new_counters(section)
            self.sections[section][instance] = c
        return c

    def adopt(self, section: str, instance: str, counters: Counters) -> Counters:
        """Report a plugin instance's own counters (built with it by the config layer) under its name.

        Counts already registered under that name carry over into ``counters``.
        """
        old = self.sections[section].get(instance)
        if old is not None and old is not counters:
            for name, value in old.items():
                counters[name] = counters.get(name, 0) + value
        self.sections[section][instance] = counters
        return counters

    def get(self, section: str, instance: str) -> Counters:
        return self.sections[section][instance]

    def to_json(self) -> dict[str, Any]:
        return {sec: {name: dict(c) for name, c in insts.items()} for sec, insts in self.sections.items()}

    def uptime(self) -> float:
        return time.time() - self.started

    def totals(self, section: str, name: str) -> float:
        return sum(c.get(name, 0) for c in self.sections.get(section, {}).values())


class PrometheusCollector:
    """A ``prometheus_client`` collector over a ``MetricsRegistry``."""

    def __init__(self, registry: MetricsRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Any]:
        # Only a daemon serving /api/v1/metrics/prometheus needs these (~110 ms of imports).
        import psutil  # noqa: PLC0415 - heavy, needed only with HTTP_Server on
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily  # noqa: PLC0415 - same

        families: dict[str, Any] = {}
        for section, insts in self.registry.sections.items():
            for inst, counters in insts.items():
                for cname, value in counters.items():
                    metric = f"logfwd_{section}_{cname}"
                    fam = families.get(metric)
                    if fam is None:
                        if cname in GAUGES:
                            fam = GaugeMetricFamily(metric, f"{section} {cname}", labels=["name"])
                        else:
                            fam = CounterMetricFamily(metric, f"{section} {cname}", labels=["name"])
                        families[metric] = fam
                    fam.add_metric([inst], value)
        yield from families.values()
        up = GaugeMetricFamily("logfwd_uptime", "Seconds since the daemon started")
        up.add_metric([], self.registry.uptime())
        yield up
        rss = GaugeMetricFamily("logfwd_process_rss_bytes", "Resident set size of the daemon")
        rss.add_metric([], psutil.Process().memory_info().rss)
        yield rss
