"""The dead-letter file: records a backend refused for good, with the reason.

One JSON object per line, appended to ``<storage.path>/dead-letter/<output>.jsonl``,
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


def default_dead_letter_dir(storage_path: str | None) -> Path:
    """``storage.path``/dead-letter when set; otherwise a per-user state directory."""
    if storage_path:
        return Path(storage_path) / "dead-letter"
    if os.geteuid() == 0:
        return Path("/var/lib/logfwd/dead-letter")
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state) / "logfwd" / "dead-letter"


class DeadLetter:
    """Appends refused records, one JSON line each; thread-safe, flushed per call."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()

    def path_for(self, output: str) -> Path:
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
        """Append one line per record; returns how many were written."""
        if not records:
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
