"""An output: appends each record, with its tag and time, to a JSON-lines file.

``flush`` says what happened through a ``Result`` and never loops on failure:
the engine retries (with backoff, up to ``Retry_Limit``) and dead-letters what
still fails. Several flushes may run at once when ``Workers`` > 1.
"""

from __future__ import annotations

import json

import trio

from logfwd.plugin import Chunk, Option, Output, Result


class JsonlOutput(Output):
    name = "jsonl"
    description = "appends records as JSON lines to a file (example plugin)"
    options = (Option("Path", "str", None, "file to append to", required=True),)

    async def start(self) -> None:
        # Connect / open here: an exception stops the daemon with one clear line.
        self._file = await trio.open_file(self.settings.path, "a", encoding="utf-8")

    async def flush(self, chunk: Chunk) -> Result:
        lines = "".join(
            json.dumps({"tag": chunk.tag, "time_ns": t, **rec}) + "\n" for t, rec in zip(chunk.times, chunk.records, strict=True)
        )
        try:
            await self._file.write(lines)
            await self._file.flush()
        except OSError as e:  # a full disk: let the engine retry the whole chunk later
            return Result.retry_everything(f"write {self.settings.path}: {e.strerror or e}")
        return Result.ok()

    async def stop(self) -> None:
        await self._file.aclose()
