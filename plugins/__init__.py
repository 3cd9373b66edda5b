"""Built-in plugins, one module each (``in_*``, ``filter_*``, ``out_*``), installed as ``logfwd.plugins``."""
