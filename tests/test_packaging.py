"""The installed package must contain every subpackage of the source tree.

A non-editable install (what ``run.sh`` does) only ships the packages listed in
pyproject.toml; a new subpackage missing there works in the editable dev install
and breaks every real install, which is how ``logfwd.tail`` was once left out.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"logfwd.plugins"}
    for init in (ROOT / "logfwd").rglob("__init__.py"):
        rel = init.parent.relative_to(ROOT)
        found.add(".".join(rel.parts))
    assert found == listed
