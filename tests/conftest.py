"""Shared fixtures: real backends (tests/backends/*) are started on demand, once per session."""

pytest_plugins: list[str] = []
