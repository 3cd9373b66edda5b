"""tail input: follow files with rotation, an offsets DB and parsers. plugin (the input task), db (offsets), fingerprint (file identity), watch (inotify)."""

from .plugin import TailInput as PLUGIN

__all__ = ["PLUGIN"]
