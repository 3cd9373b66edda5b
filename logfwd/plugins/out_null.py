"""The ``null`` output: accept and drop every record.

Useful to benchmark inputs and filters without a backend, and to discard a
tag on purpose. The engine counts what it drops as delivered
(``proc_records``/``proc_bytes``), exactly as Fluent Bit's null output does.
"""

from __future__ import annotations

from logfwd.plugin import Chunk, Output, Result


class NullOutput(Output):
    name = "null"
    description = "Throw away records (counted as delivered)"
    options = ()

    async def flush(self, chunk: Chunk) -> Result:
        return Result.ok()


PLUGIN = NullOutput
