"""Fluent Bit's ``health_check`` rule over the output counters, as a sliding window.

Separate from the HTTP server because the pipeline owns it (it samples its own
counters) and the server only asks it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from .metrics import MetricsRegistry
from .options import parse_bool, parse_duration

__all__ = ["HealthPolicy", "HEALTH_DEFAULTS"]

# Fluent Bit's service keys for the health check, with its defaults.
HEALTH_DEFAULTS = {"health_check": False, "hc_errors_count": 5, "hc_retry_failure_count": 5, "hc_period": 60}


class HealthPolicy:
    """Fluent Bit's ``health_check``: unhealthy when outputs fail too often, lately.

    Unhealthy when, over the last ``period`` seconds, the output ``errors``
    summed over every output exceed ``errors_count``, or the summed
    ``retries_failed`` exceed ``retry_failure_count`` (strictly greater, as
    Fluent Bit compares). Health recovers by itself once the failures age out
    of the window.

    The counters only ever grow, so the count within the window is the
    current total minus the total at the window's start. ``sample()`` records
    the totals with their time; ``run()`` samples a few times per period, and
    every ``healthy()`` call samples too.
    """

    def __init__(
        self,
        registry: MetricsRegistry,
        enabled: bool = False,
        errors_count: int = 5,
        retry_failure_count: int = 5,
        period: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.enabled = enabled
        self.errors_count = errors_count
        self.retry_failure_count = retry_failure_count
        self.period = float(period)
        self.clock = clock
        self._samples: deque[tuple[float, float, float]] = deque()
        self.sample()

    @classmethod
    def from_service(cls, registry: MetricsRegistry, service: dict[str, Any]) -> HealthPolicy:
        """From converted ``[SERVICE]`` options (missing keys take Fluent Bit's defaults).

        Either argument order is accepted: the two types cannot be confused.
        """
        if isinstance(service, MetricsRegistry):
            registry, service = service, registry  # type: ignore[assignment]

        def get(key: str) -> Any:
            v = service.get(key)
            return HEALTH_DEFAULTS[key] if v is None else v

        return cls(
            registry,
            enabled=parse_bool(get("health_check")),
            errors_count=int(get("hc_errors_count")),
            retry_failure_count=int(get("hc_retry_failure_count")),
            period=parse_duration(get("hc_period")),
        )

    @property
    def sample_interval(self) -> float:
        return max(0.05, min(1.0, self.period / 10))

    def _totals(self) -> tuple[float, float]:
        return self.registry.totals("output", "errors"), self.registry.totals("output", "retries_failed")

    def sample(self) -> None:
        now = self.clock()
        errors, failed = self._totals()
        self._samples.append((now, errors, failed))
        # Keep one sample at or before the window's start: it is the baseline.
        horizon = now - self.period
        while len(self._samples) >= 2 and self._samples[1][0] <= horizon:
            self._samples.popleft()

    def window_counts(self) -> tuple[float, float]:
        """(errors, retries_failed) summed over outputs within the last ``period`` seconds."""
        self.sample()
        _, base_errors, base_failed = self._samples[0]
        _, errors, failed = self._samples[-1]
        return errors - base_errors, failed - base_failed

    def healthy(self) -> bool:
        if not self.enabled:
            return True
        errors, failed = self.window_counts()
        return errors <= self.errors_count and failed <= self.retry_failure_count

    async def run(self) -> None:
        """Sample forever (cancel to stop); precise windows even when nobody asks."""
        while True:
            self.sample()
            await trio.sleep(self.sample_interval)
