"""What every network plugin needs, written once: TLS options and contexts, HTTP status classes.

Fluent Bit handles TLS and network options in its core for every plugin; so do we, so that
``tls.vhost`` or ``tls.ca_path`` cannot be missing from one plugin and present in another.
"""
