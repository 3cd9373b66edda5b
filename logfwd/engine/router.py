"""Tag routing as Fluent Bit does it: ``Match`` with ``*`` wildcards, or ``Match_Regex``.

Tags are few and repeat for every batch, so each matcher caches its answer per tag:
routing costs a dict lookup per batch, not a pattern match.
"""

from __future__ import annotations

import re
from re import Pattern

__all__ = ["TagMatcher", "wildcard_to_regex"]


def wildcard_to_regex(pattern: str) -> Pattern[str]:
    """``kube.*`` → ``^kube\\..*$``: ``*`` matches any run of characters, everything else is literal."""
    return re.compile("^" + ".*".join(re.escape(p) for p in pattern.split("*")) + "$", re.DOTALL)


class TagMatcher:
    """Does a tag match a plugin's ``Match`` / ``Match_Regex``?

    With neither set nothing matches (Fluent Bit warns and routes nothing to such an
    output). ``Match_Regex`` must match the whole tag, as Fluent Bit's does.
    """

    def __init__(self, match: str | None, match_regex: Pattern[str] | None) -> None:
        self.match = match
        self.match_regex = match_regex
        self._wild = wildcard_to_regex(match) if match else None
        self._cache: dict[str, bool] = {}

    def __call__(self, tag: str) -> bool:
        hit = self._cache.get(tag)
        if hit is None:
            hit = False
            if self._wild is not None and self._wild.match(tag):
                hit = True
            elif self.match_regex is not None and self.match_regex.fullmatch(tag):
                hit = True
            if len(self._cache) > 10000:  # tags expanded from paths can be many; stay bounded
                self._cache.clear()
            self._cache[tag] = hit
        return hit
