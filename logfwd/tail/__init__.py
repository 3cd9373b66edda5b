"""Helpers of the ``tail`` input: offsets database, file identity, discovery and inotify.

They live outside ``plugins/in_tail.py`` so that each piece (the SQLite store, the
fingerprint rule, the inotify binding) can be tested on its own.
"""
