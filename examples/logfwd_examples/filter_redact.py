"""A filter: masks what a regular expression matches in one field of every record.

Filters are synchronous functions from batch to batch, run in the emitting
input's task: keep them cheap, and never block. Return the batch (changed in
place or not), a new one, or ``None`` to drop it entirely.
"""

from __future__ import annotations

from logfwd.plugin import Batch, Filter, Option


class RedactFilter(Filter):
    name = "redact"
    description = "masks matches of Regex in the Key field (example plugin)"
    options = (
        Option("Key", "str", "message", "field to redact"),
        # Type "regex": Fluent Bit's syntax (Onigmo, /pattern/flags), compiled once at load;
        # an invalid expression is a config error naming the line.
        Option("Regex", "regex", None, "what to mask", required=True),
        Option("Mask", "str", "***", "replacement text"),
    )

    def filter(self, batch: Batch) -> Batch | None:
        key, rx, mask = self.settings.key, self.settings.regex, self.settings.mask
        changed = 0
        for rec in batch.records:
            value = rec.get(key)
            if isinstance(value, str):
                new, n = rx.subn(mask, value)
                if n:
                    rec[key] = new
                    changed += 1
        self.metrics.inc("redacted_records", changed)  # shows in /api/v1/metrics under filter.redact.0
        return batch
