"""parser: parse one field of every record with named parsers (Fluent Bit's ``parser`` filter).

``Key_Name`` is the field; ``Parser`` (repeatable) names parsers from the
parsers files, tried in order until one parses the value. A parsed record
replaces the original (``Reserve_Data On`` keeps the other fields,
``Preserve_Key On`` keeps the parsed field itself), and its time replaces the
record's time when the parser found one. A value that no parser accepts, or a
record without the field, is passed on unchanged; the former is counted in the
``parse_errors`` metric.

The work is batch-wise: each parser runs once over all the values still
unparsed (one regex scan or one C loop per batch, not one call per record).
"""

from __future__ import annotations

import time
from typing import Any

from logfwd._fastparse import unescape
from logfwd.plugin import Batch, ConfigValueError, Filter, Option


class ParserFilter(Filter):
    name = "parser"
    description = "parse a field of each record with one or more parsers"
    options = (
        Option("Key_Name", "str", None, "field whose value is parsed", required=True),
        Option("Parser", "str", None, "parser name; repeat to try several in order", multi=True, required=True),
        Option("Reserve_Data", "bool", "off", "keep the record's other fields next to the parsed ones"),
        Option("Preserve_Key", "bool", "off", "keep the parsed field (Key_Name) in the result"),
        Option("Unescape_Key", "bool", "off", "decode backslash escapes in the value before parsing"),
    )

    def setup(self) -> None:
        c = self.config
        self.key: str = str(c.get("key_name") or "").strip()
        if not self.key:
            raise ConfigValueError("key_name", "the parser filter needs Key_Name (the field to parse)")
        raw = c.get("parser") or []
        if isinstance(raw, str):
            raw = [raw]
        names = [n.strip() for n in raw if str(n).strip()]
        if not names:
            raise ConfigValueError("parser", "the parser filter needs at least one Parser")
        registry = self.ctx.parsers
        if registry is None:
            raise ConfigValueError("parser", "no parsers are loaded (set Parsers_File in [SERVICE])")
        self.parsers = []
        for n in names:
            try:
                self.parsers.append(registry.get(n))
            except KeyError:
                known = ", ".join(registry.names())
                raise ConfigValueError("parser", f"unknown parser {n!r} (known: {known})") from None
        self.reserve = bool(c.get("reserve_data"))
        self.preserve = bool(c.get("preserve_key"))
        self.unescape = bool(c.get("unescape_key"))

    def filter(self, batch: Batch) -> Batch | None:
        key = self.key
        recs = batch.records
        idx: list[int] = []
        vals: list[Any] = []
        for i, r in enumerate(recs):
            v = r.get(key) if type(r) is dict else None
            if type(v) is str or type(v) is bytes:
                idx.append(i)
                vals.append(unescape(v) if self.unescape else v)
        if not vals:
            return batch
        m = len(vals)
        parsed: list[dict[str, Any] | None] = [None] * m
        ptimes: list[int | None] = [None] * m
        remaining = list(range(m))
        now = time.time_ns()
        for p in self.parsers:
            if not remaining:
                break
            sub = vals if len(remaining) == m else [vals[j] for j in remaining]
            try:
                times, out = p.parse_values(sub, now, None)
            except Exception as e:  # a parser bug must not drop the batch: leave the records as they are
                self.log.warning("parser %s failed on a batch: %s", p.name, e)
                continue
            still = []
            for j, t, o in zip(remaining, times, out, strict=True):
                if o is None:
                    still.append(j)
                else:
                    parsed[j] = o
                    ptimes[j] = t
            remaining = still
        if remaining:
            self.metrics.inc("parse_errors", len(remaining))
        if len(remaining) == m:
            return batch
        new_times = list(batch.times)
        for j, i in enumerate(idx):
            o = parsed[j]
            if o is None:
                continue
            orig = recs[i]
            if self.reserve or self.preserve:
                out_rec: dict[str, Any] = {}
                if self.reserve:
                    for k, v in orig.items():
                        if k != key:
                            out_rec[k] = v
                if self.preserve:
                    out_rec[key] = orig[key]
                out_rec.update(o)
                o = out_rec
            recs[i] = o
            t = ptimes[j]
            if t is not None:
                new_times[i] = t
        batch.times = new_times
        return batch


PLUGIN = ParserFilter
