"""Entry points: a config file, a command line, and the shipped parsers."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..parsers import ParserRegistry
from .model import CLI_FILE, Config, ConfigError, ConfigIssue, Document, RawEntry, RawSection
from .reader import new_context, read_any
from .validate import PARSER_KINDS, build_config, register_parsers

__all__ = ["load_config", "config_from_cli", "default_parsers", "apply_service_overrides", "SHIPPED_PARSERS"]

# The shipped parsers, a Fluent Bit classic parsers file (conf/parsers.conf links to it).
SHIPPED_PARSERS = Path(__file__).resolve().parent.parent / "parsers.conf"


def default_parsers() -> ParserRegistry:
    """A ParserRegistry holding the built-in multiline parsers and the shipped parsers file.

    A fresh registry every call: a config adds its own parsers to it, and a
    reload must not see the parsers of the configuration it replaces.
    """
    registry = ParserRegistry()
    if SHIPPED_PARSERS.exists():
        doc = Document()
        ctx = new_context({}, str(SHIPPED_PARSERS.parent), PARSER_KINDS)
        read_any(str(SHIPPED_PARSERS), doc, ctx)
        issues = list(doc.issues)
        register_parsers(doc.sections, registry, issues)
        if issues:  # a broken shipped file is a packaging bug; say exactly where
            raise ConfigError(issues)
    return registry


def load_config(
    path: str | Path,
    env: Mapping[str, str] | None = None,
    *,
    service_overrides: Mapping[str, str] | None = None,
    parsers_files: Sequence[str] = (),
) -> Config:
    """Read, check and convert a configuration file (classic or YAML, chosen by extension or content).

    ``service_overrides`` (command-line ``-f``, ``-l``...) win over the file's
    service keys; ``parsers_files`` (``-R``) are relative to the working
    directory. Raises ConfigError listing every issue found; nothing should
    start on one.
    """
    env = os.environ if env is None else env
    p = str(path)
    doc = Document()
    ctx = new_context(env, os.path.dirname(p) or os.curdir)
    read_any(p, doc, ctx)
    if doc.issues and not doc.files:  # the main file itself could not be read
        raise ConfigError(doc.issues)
    if service_overrides:
        sect = RawSection("service", CLI_FILE, None, style="cli")
        _add_entries(sect, list(service_overrides.items()), doc)
        doc.sections.append(sect)
    return build_config(
        doc, env, default_parsers(), path=p, main_dir=ctx.main_dir, extra_parsers_files=list(parsers_files)
    )


def apply_service_overrides(
    cfg: Config, overrides: Mapping[str, str], parsers_files: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> Config:
    """``cfg`` re-read with command-line service options and parsers files on top.

    Re-reading (rather than patching ``cfg.service``) is deliberate: plugins
    see the service options in ``setup()``, and added parsers must be checked
    against the plugins that name them.
    """
    if cfg.path is None:
        raise ValueError("apply_service_overrides needs a Config loaded from a file")
    return load_config(cfg.path, env, service_overrides=overrides, parsers_files=parsers_files)


def config_from_cli(
    inputs: Sequence[tuple[str, Sequence[tuple[str, str]]]],
    filters: Sequence[tuple[str, Sequence[tuple[str, str]]]],
    outputs: Sequence[tuple[str, Sequence[tuple[str, str]]]],
    service: Mapping[str, str],
    parsers_files: Sequence[str],
    env: Mapping[str, str] | None = None,
) -> Config:
    """A Config from Fluent Bit-style one-liners (``-i dummy -p rate=5 -o stdout -m '*'``).

    The same validation as a file; issues name ``<command line>``. Parsers files
    (``-R``) are relative to the working directory.
    """
    env = os.environ if env is None else env
    doc = Document()
    if service:
        sect = RawSection("service", CLI_FILE, None, style="cli")
        _add_entries(sect, list(service.items()), doc)
        doc.sections.append(sect)
    for kind, specs in (("input", inputs), ("filter", filters), ("output", outputs)):
        for name, props in specs:
            sect = RawSection(kind, CLI_FILE, None, style="cli")
            _add_entries(sect, [("name", name), *props], doc)
            doc.sections.append(sect)
    return build_config(
        doc, env, default_parsers(), path=None, main_dir=None, extra_parsers_files=list(parsers_files)
    )


def _add_entries(sect: RawSection, props: list[tuple[str, Any]], doc: Document) -> None:
    for key, value in props:
        v = "" if value is None else str(value).strip()
        if not v:
            doc.issues.append(ConfigIssue(CLI_FILE, None, sect.label(), key, f"key {key!r} has an empty value"))
            continue
        sect.entries.append(RawEntry(str(key).strip(), v, None))
