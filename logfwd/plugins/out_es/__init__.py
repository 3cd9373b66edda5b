"""es output: Elasticsearch and OpenSearch bulk API. plugin (client, replies), bulk (NDJSON body and its Cython kernel)."""

from .plugin import EsOutput as PLUGIN

__all__ = ["PLUGIN"]
