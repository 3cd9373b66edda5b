# cython: language_level=3
"""Hot path: line framing, parsers, time parsing, serializers (filled in by the framer work)."""
