"""The pipeline engine: batches, routing, buffers, retries, acknowledgements."""
