"""influxdb output: InfluxDB 1.x/2.x writes. plugin (HTTP client), lineproto (line protocol encoder)."""

from .plugin import InfluxDBOutput as PLUGIN

__all__ = ["PLUGIN"]
