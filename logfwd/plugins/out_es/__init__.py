"""es output (alias ``elasticsearch``): Elasticsearch and OpenSearch bulk API; the code is in ``plugins._es``."""

from logfwd.plugins._es.plugin import EsOutput as PLUGIN

__all__ = ["PLUGIN"]
