"""Docs and shipped configs that must not drift from the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from logfwd.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def test_configuration_reference_is_current() -> None:
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--check"], capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr


def _shape(path: Path) -> list[tuple[str, str, dict[str, object]]]:
    cfg = load_config(path, env={})
    out = [("service", "", {k: v for k, v in cfg.service.items() if v is not None})]
    for sec in cfg.inputs + cfg.filters + cfg.outputs:
        out.append((sec.kind, sec.instance, {k: v for k, v in sec.options.items() if v is not None}))
    return out


def test_default_pipeline_is_the_same_in_both_formats() -> None:
    assert _shape(ROOT / "conf" / "logfwd.yaml") == _shape(ROOT / "conf" / "logfwd.conf")


def test_readme_links_stay_inside_the_repository() -> None:
    text = (ROOT / "README.md").read_text()
    assert "../shared" not in text and "/work/" not in text
    for target in ("docs/configuration.md", "conf/logfwd.service", "LICENSE"):
        assert target in text and (ROOT / target).exists(), target
