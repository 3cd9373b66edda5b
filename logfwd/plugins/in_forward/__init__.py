"""forward input: Fluentd Forward Protocol v1 server. plugin (listeners, connections, acks); the codec is in ``_forward``."""

from .plugin import ForwardInput as PLUGIN

__all__ = ["PLUGIN"]
