"""kafka output: produce through librdkafka (confluent-kafka)."""

from .plugin import KafkaOutput as PLUGIN

__all__ = ["PLUGIN"]
