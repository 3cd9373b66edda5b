"""forward output: Fluentd Forward Protocol v1 client. plugin (connections, acks, failover), upstream (Fluent Bit's upstream file)."""

from .plugin import ForwardOutput as PLUGIN

__all__ = ["PLUGIN"]
