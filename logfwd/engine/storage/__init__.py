"""Filesystem buffering (``storage.type filesystem``): chunk files, recovery, feeders, metrics."""

from .manager import RESERVED_DIRS, StorageError, StorageManager, StorageSettings
from .metrics import storage_json, update_gauges
from .stream import InputStream

__all__ = ["StorageManager", "StorageSettings", "StorageError", "InputStream", "RESERVED_DIRS", "storage_json",
           "update_gauges"]
