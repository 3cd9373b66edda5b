"""tail input: follow files with rotation, an offsets DB and parsers.

plugin (wiring), config (options and settings), db (offsets), scan (discovery),
watcher (inotify and stat polling), file (a followed file and its identity),
reader (reading, framing, descriptor budget), multiline (held records), multiline_legacy
and dockermode (the older ways of joining lines), fingerprint
(first-bytes identity), watch (the inotify binding).
"""

from .plugin import TailInput as PLUGIN

__all__ = ["PLUGIN"]
