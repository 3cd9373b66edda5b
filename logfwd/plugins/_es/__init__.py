"""What the ``es`` and ``opensearch`` outputs share: the whole bulk client.

``plugin`` (``EsOutput``: setup, server detection, bulk requests and their verdicts),
``settings`` (the option table and what derives from it), ``client`` (the transport),
``reply`` (reading bulk answers), ``bulk`` (NDJSON bodies and their Cython kernel).
"""
