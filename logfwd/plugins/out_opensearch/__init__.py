"""opensearch output: Fluent Bit's ``opensearch`` options on the es output's code (``plugins._es``), plus AWS SigV4."""

from .plugin import OpenSearchOutput as PLUGIN

__all__ = ["PLUGIN"]
