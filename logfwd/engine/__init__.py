"""The pipeline engine: routing, output buffers, retries, dead letters (batches are in ``logfwd.batch``)."""
