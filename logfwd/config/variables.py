"""``${VAR}`` substitution, with Fluent Bit's lookup order.

Variables defined in the configuration (``@SET KEY=VALUE``, YAML ``env:``) win
over the process environment; ``${HOSTNAME}`` falls back to the host name as
Fluent Bit predefines it. An unset variable becomes the empty string, as in
Fluent Bit, but the caller learns which names were unset so that a value that
ends up empty can be reported instead of silently configuring nothing.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping

__all__ = ["interpolate", "VAR_RE"]

VAR_RE = re.compile(r"\$\{([^}]*)\}")


def lookup(name: str, variables: Mapping[str, str], env: Mapping[str, str]) -> str | None:
    if name in variables:
        return variables[name]
    if name in env:
        return env[name]
    if name == "HOSTNAME":
        return socket.gethostname()
    return None


def interpolate(value: str, variables: Mapping[str, str], env: Mapping[str, str]) -> tuple[str, list[str]]:
    """``value`` with every ``${NAME}`` replaced; also the names that were not set."""
    if "${" not in value:
        return value, []
    unset: list[str] = []

    def sub(m: re.Match[str]) -> str:
        name = m.group(1).strip()
        found = lookup(name, variables, env)
        if found is None:
            unset.append(name)
            return ""
        return found

    return VAR_RE.sub(sub, value), unset
