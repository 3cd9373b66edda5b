"""kafka input: a consumer-group member that commits only delivered offsets (confluent-kafka)."""

from .plugin import KafkaInput as PLUGIN

__all__ = ["PLUGIN"]
