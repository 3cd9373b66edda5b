"""Storage numbers in the shape of Fluent Bit's ``/api/v1/storage``, and as Prometheus gauges.

Fluent Bit's JSON has a ``storage_layer`` block (chunks in total, in memory, on the
filesystem, up and down) and an ``input_chunks`` block per input (memory status and chunk
counts). The same numbers are copied onto each input's counters (``storage_chunks_up`` ...)
so that ``/api/v1/metrics/prometheus`` exposes them as ``logfwd_input_storage_*{name=...}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ...metrics import Counters
    from ..batch import MemBudget
    from .manager import StorageManager

__all__ = ["storage_json", "human_size", "update_gauges", "STORAGE_GAUGES"]

STORAGE_GAUGES = ("storage_chunks", "storage_chunks_up", "storage_chunks_down", "storage_chunks_busy",
                  "storage_bytes", "storage_records")


def human_size(n: float) -> str:
    """Fluent Bit's size text: ``0b``, ``512b``, ``1.5K``, ``2.0M``."""
    for unit, div in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return f"{int(n)}b"


def storage_json(mgr: StorageManager | None, memory_inputs: dict[str, MemBudget]) -> dict[str, Any]:
    """The ``/api/v1/storage`` document; ``memory_inputs`` are the memory-mode inputs' budgets."""
    inputs: dict[str, Any] = {}
    fs_total = fs_up = 0
    if mgr is not None:
        for name, stream in mgr.streams.items():
            c = stream.counts()
            fs_total += c["total"]
            fs_up += c["up"]
            inputs[name] = {
                "status": {"overlimit": False, "mem_size": human_size(0), "mem_limit": "0b"},
                "chunks": {"total": c["total"], "up": c["up"], "down": c["down"], "busy": c["busy"],
                           "busy_size": human_size(c["busy_size"])},
                "storage_type": "filesystem",
                "fs_size": c["size"],
                "records": c["records"],
            }
    for name, budget in memory_inputs.items():
        inputs[name] = {
            "status": {"overlimit": budget.paused, "mem_size": human_size(budget.used),
                       "mem_limit": human_size(budget.limit)},
            "chunks": {"total": 0, "up": 0, "down": 0, "busy": 0, "busy_size": "0b"},
            "storage_type": "memory",
        }
    doc: dict[str, Any] = {
        "storage_layer": {"chunks": {"total_chunks": fs_total, "mem_chunks": 0, "fs_chunks": fs_total,
                                     "fs_chunks_up": fs_up, "fs_chunks_down": fs_total - fs_up}},
        "input_chunks": inputs,
    }
    if mgr is not None:
        doc["storage_layer"]["path"] = str(mgr.root)
        doc["storage_layer"]["events"] = dict(mgr.stats)
    return doc


def update_gauges(mgr: StorageManager) -> None:
    """Copy chunk counts onto each filesystem input's counters (for Prometheus)."""
    for name, stream in mgr.streams.items():
        metrics: Counters | None = mgr.input_metrics.get(name)
        if metrics is None:
            continue
        c = stream.counts()
        metrics.set("storage_chunks", c["total"])
        metrics.set("storage_chunks_up", c["up"])
        metrics.set("storage_chunks_down", c["down"])
        metrics.set("storage_chunks_busy", c["busy"])
        metrics.set("storage_bytes", c["size"])
        metrics.set("storage_records", c["records"])
