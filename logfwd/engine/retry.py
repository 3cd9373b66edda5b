"""Retry policy: exponential backoff with full jitter, and Fluent Bit's ``Retry_Limit``.

Full jitter (a uniform draw between 0 and the capped exponential) spreads the retries
of many chunks that failed together, so a backend that comes back is not hit by all of
them at the same instant.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..options import parse_retry_limit

__all__ = ["RetryPolicy", "parse_retry_limit"]


@dataclass(frozen=True)
class RetryPolicy:
    """``limit`` retries per chunk (None: unlimited); waits drawn from [0, min(cap, base·2ⁿ)] with n ≥ 1."""

    limit: int | None = 1
    base: float = 5.0
    cap: float = 2000.0

    def allows(self, attempts: int) -> bool:
        """May a chunk that has already been retried ``attempts`` times be retried again?"""
        return self.limit is None or attempts < self.limit

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        upper = min(self.cap, self.base * (2 ** max(attempt, 1)))
        r = rng.random() if rng is not None else random.random()
        # Never zero: a retry in the same tick as the failure helps nobody.
        return max(upper * r, min(self.base, 0.01))
