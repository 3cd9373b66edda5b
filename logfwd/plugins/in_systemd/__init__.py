"""systemd input: read the journal through libsystemd."""

from .plugin import SystemdInput as PLUGIN

__all__ = ["PLUGIN"]
