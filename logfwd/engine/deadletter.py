"""The dead-letter (rejected records) file: records a backend refused for good, with the reason.

One JSON object per line, appended to ``<storage.path>/<storage.rejected.path>/<output>.jsonl``
(``<storage.path>/rejected/`` by default),
so an operator can inspect, fix and replay them (``jq``, or logfwd's stdin input with a
json parser). Writing here is what lets the engine promise that no record is dropped
silently: every refusal and every exhausted retry ends up either delivered or here.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

__all__ = ["DeadLetter", "default_dead_letter_dir"]


def default_dead_letter_dir(service: dict[str, Any]) -> Path | None:
    """Where rejected records go: ``storage.rejected.path`` (relative to ``storage.path``, or absolute).

    Keeping rejected records is logfwd's default (``storage.keep.rejected on``), unlike Fluent
    Bit's, because nothing is dropped silently; ``off`` returns None and refusals are counted
    as dropped. Without ``storage.path`` a per-user state directory is used.
    """
    if service.get("storage.keep.rejected") is False:
        return None
    sub = str(service.get("storage.rejected.path") or "rejected")
    storage_path = service.get("storage.path")
    if storage_path:
        base = Path(storage_path)
    elif os.geteuid() == 0:
        base = Path("/var/lib/logfwd")
    else:
        base = Path(os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")) / "logfwd"
    return base / sub  # an absolute sub replaces base


class DeadLetter:
    """Appends refused records, one JSON line each; thread-safe, flushed per call."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory  # None: storage.keep.rejected off
        self._lock = threading.Lock()

    def path_for(self, output: str) -> Path:
        assert self.directory is not None
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in output)
        return self.directory / f"{safe}.jsonl"

    def write(
        self,
        output: str,
        tag: str,
        times: Sequence[int],
        records: Sequence[dict[str, Any]],
        reasons: Sequence[str],
    ) -> int:
        """Append one line per record; returns how many were written (0 when keeping is off)."""
        if not records or self.directory is None:
            return 0
        now = dt.datetime.now(dt.UTC).isoformat()
        lines = []
        for t, rec, why in zip(times, records, reasons, strict=True):
            lines.append(
                orjson.dumps(
                    {"dead_lettered_at": now, "output": output, "tag": tag, "time_ns": t, "reason": why, "record": rec},
                    default=_fallback,
                    option=orjson.OPT_NON_STR_KEYS,
                )
            )
        data = b"\n".join(lines) + b"\n"
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            with open(self.path_for(output), "ab") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        return len(records)


def _fallback(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray)):
        return obj.decode("utf-8", "replace")
    return str(obj)
