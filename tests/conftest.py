"""Shared fixtures. Every module in tests/backends/ (except _-prefixed helpers) is a pytest
plugin that defines session fixtures starting one real backend on demand."""

import pkgutil
from pathlib import Path

pytest_plugins = [
    f"tests.backends.{m.name}"
    for m in pkgutil.iter_modules([str(Path(__file__).parent / "backends")])
    if not m.name.startswith("_")
] + ["tests.e2ekit"]  # its ``logfwds`` fixture stops every daemon a test started
