"""Minimal logfwd plugins, one of each kind, to copy from (see docs/DESIGN.md for the contract)."""
