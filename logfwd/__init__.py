"""logfwd: a log forwarder daemon in the Fluent Bit mould."""

__version__ = "0.1.0"
