"""Merge_Log: the ``log`` field, when it holds structure, becomes fields of the record.

A JSON object (or what ``Merge_Parser`` / a pod's ``fluentbit.io/parser`` annotation
parses) is merged into the record's root, or under ``Merge_Log_Key``; ``Keep_Log Off``
drops the original text once it was merged. A value that does not parse leaves the
record as it is: merging never loses a line.
"""

from __future__ import annotations

import time
from typing import Any

from logfwd._fastparse import json_batch

__all__ = ["merge_logs", "LOG_KEY"]

LOG_KEY = "log"


def _as_text(v: Any) -> str | None:
    if type(v) is str:
        return v
    if type(v) is bytes:
        return v.decode("utf-8", "replace")
    return None


def _parse_json(values: list[str]) -> tuple[list[Any], list[dict[str, Any] | None]]:
    """JSON objects; text that cannot be one is not handed to the decoder (a failed decode costs)."""
    obj = [i for i, v in enumerate(values) if v[:1] == "{" or v.lstrip()[:1] == "{"]
    out: list[dict[str, Any] | None] = [None] * len(values)
    if obj:
        for i, d in zip(obj, json_batch([values[i] for i in obj]), strict=True):
            out[i] = d
    return [None] * len(values), out


def _trim(doc: dict[str, Any]) -> None:
    """Merge_Log_Trim: strip white space around string values, in place (most need none)."""
    for k, v in doc.items():
        if type(v) is str and v and (v[0].isspace() or v[-1].isspace()):
            doc[k] = v.strip()


def merge_logs(
    records: list[dict[str, Any]],
    times: list[int],
    indices: list[int],
    parser: Any,
    *,
    key: str | None,
    trim: bool,
    keep_log: bool,
) -> int:
    """Merge the ``log`` field of ``records[i]`` for each i in ``indices``; returns how many merged.

    ``parser`` is a logfwd parser (its time, if found, becomes the record's time) or None for JSON.
    """
    idx: list[int] = []
    vals: list[str] = []
    for i in indices:
        t = _as_text(records[i].get(LOG_KEY))
        if t is not None:
            idx.append(i)
            vals.append(t)
    if not vals:
        return 0
    if parser is None:
        ptimes, parsed = _parse_json(vals)
    else:
        ptimes, parsed = parser.parse_values(vals, time.time_ns(), None)
    merged = 0
    for i, t, doc in zip(idx, ptimes, parsed, strict=True):
        if doc is None:
            continue
        if trim:
            _trim(doc)
        rec = records[i]
        if not keep_log:
            del rec[LOG_KEY]
        if key:
            rec[key] = doc
        else:
            rec.update(doc)
        if t is not None:
            times[i] = t
        merged += 1
    return merged
