"""An input: emits ``Count`` numbered records, ``Batch`` at a time, then returns.

What every input does, in a few lines: read typed settings, say when it is ready,
hand records to the emitter (which waits when the pipeline is full: an input
that cannot emit simply stops reading), and finish or be cancelled.
"""

from __future__ import annotations

import trio

from logfwd.plugin import ConfigValueError, Emitter, Input, Option


class CounterInput(Input):
    name = "counter"
    description = "emits Count numbered records with a message (example plugin)"
    options = (
        Option("Count", "int", "10", "records to emit before stopping", minimum=0),
        Option("Batch", "int", "4", "records per emit", minimum=1),
        Option("Message", "str", "hello", "the message field of every record"),
        Option("Interval", "time", "0", "pause between batches"),
    )

    def setup(self) -> None:
        # Cross-option checks go here, as ConfigValueError(key, why): the config layer
        # reports them with the file and line of the key. No I/O in setup.
        if self.settings.batch > max(self.settings.count, 1):
            raise ConfigValueError("batch", "Batch cannot exceed Count")

    async def run(self, emitter: Emitter, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # A real input opens its socket or files first, then reports it is ready.
        task_status.started()
        s = self.settings
        for start in range(0, s.count, s.batch):
            records = [{"seq": n, "message": s.message} for n in range(start, min(start + s.batch, s.count))]
            await emitter.emit(records)  # times default to now; the tag is the input's Tag
            if s.interval:
                await trio.sleep(s.interval)
