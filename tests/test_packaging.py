"""The installed package must contain every subpackage of the source tree.

A non-editable install (what ``run.sh`` does) ships only the packages setuptools finds;
a folder without ``__init__.py`` works in the editable dev install and breaks every real
install, which is how the tail helpers were once left out. Package discovery is automatic
(``[tool.setuptools.packages.find]``), so the rule to keep is: every folder with Python
code under ``logfwd/`` is a package.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_folder_with_python_code_is_a_package() -> None:
    missing = sorted(
        str(d.relative_to(ROOT))
        for d in (ROOT / "logfwd").rglob("*")
        if d.is_dir() and "__pycache__" not in d.parts and any(d.glob("*.py")) and not (d / "__init__.py").exists()
    )
    assert not missing, f"folders with Python code but no __init__.py (they would not be installed): {missing}"
