"""Built-in plugins: ``in_*``, ``filter_*``, ``out_*``, a module or a folder each (see ``logfwd.plugin``)."""
