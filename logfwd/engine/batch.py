"""Moved to ``logfwd.batch`` (the plugin contract's data types are not the engine's).

Kept for code written against the old path while branches merge; import from
``logfwd.batch`` (or ``logfwd.plugin``) in new code.
"""

from ..batch import AckHandle, AckTracker, Batch, Chunk, MemBudget, Result

__all__ = ["Batch", "Chunk", "Result", "AckHandle", "AckTracker", "MemBudget"]
