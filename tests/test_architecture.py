"""The module graph of ``logfwd`` stays a DAG, and the core never reaches into plugins.

The graph is built from the source with ``ast`` (no import runs), including
imports inside functions and under ``TYPE_CHECKING``: a circle hidden in a
function is still a circle for a reader, and ruff's PLC0415 only flags them.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "logfwd"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if ".venv" not in p.parts}


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute name a (possibly relative) ``from ... import`` refers to."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Modules of ``logfwd`` that ``module`` imports, anywhere in its source."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node)
            found.add(target)
            # ``from pkg import sub`` imports the submodule ``pkg.sub`` when there is one.
            found.update(f"{target}.{alias.name}" for alias in node.names)
    out = set()
    for name in found:
        # ``import a.b.c`` also runs a and a.b; the edge that matters is to the deepest known module.
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module and name.startswith("logfwd"):
            out.add(name)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {m: _imports(m, p, known) for m, p in mods.items()}


def _parents(module: str) -> set[str]:
    """Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first: not an edge to count."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w in _parents(v):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _plugin_of(module: str) -> str | None:
    """``logfwd.plugins.out_es.bulk`` → ``out_es``; None for the core."""
    parts = module.split(".")
    if len(parts) >= 3 and parts[:2] == ["logfwd", "plugins"]:
        return parts[2]
    return None


GRAPH = _graph()


def test_graph_is_built_from_the_whole_package() -> None:
    assert "logfwd.plugin" in GRAPH and "logfwd.engine.pipeline" in GRAPH
    assert "logfwd.options" in GRAPH["logfwd.plugin"]


def test_no_import_cycles() -> None:
    assert _cycles(GRAPH) == []


def _unit(module: str) -> str:
    """The part of the tree a module belongs to: its subpackage (``logfwd.engine``, one plugin), or itself."""
    parts = module.split(".")
    if len(parts) >= 3 and parts[1] == "plugins":
        return ".".join(parts[:3])
    path = PACKAGE.joinpath(*parts[1:2])
    return ".".join(parts[:2]) if len(parts) >= 2 and path.is_dir() else module


def test_no_cycles_between_packages() -> None:
    """Seen from afar too: the config layer, the engine and the contract (``logfwd.plugin``) form no circle."""
    units: dict[str, set[str]] = {}
    for m, targets in GRAPH.items():
        units.setdefault(_unit(m), set()).update(_unit(t) for t in targets if _unit(t) != _unit(m))
    assert _cycles(units) == []


def test_cycle_detection_finds_a_cycle() -> None:
    """The checker itself: a two-module circle and a longer one are reported."""
    g = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert sorted(_cycles(g)) == [["a", "b"], ["c", "d", "e"]]


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if _plugin_of(m) is None))
def test_core_never_imports_a_plugin(module: str) -> None:
    """The core finds plugins by name (``importlib``), it never imports one."""
    assert sorted(t for t in GRAPH[module] if _plugin_of(t)) == []


def test_plugins_do_not_import_each_other() -> None:
    """A plugin's folder holds what only it uses; another plugin's modules are private to it.

    Code that a family of plugins shares (the forward protocol of ``in_forward`` and
    ``out_forward``) lives in an underscore package beside them (``logfwd/plugins/_forward``):
    plugins may import it, the core may not (that is the test above).
    """
    bad = [
        (m, t)
        for m, targets in GRAPH.items()
        if _plugin_of(m)
        for t in targets
        if _plugin_of(t) and _plugin_of(t) != _plugin_of(m) and not _plugin_of(t).startswith("_")
    ]
    assert bad == []


_REASON = re.compile(r"#\s*noqa:\s*PLC0415\s+-\s+\S")


def _still_exempt() -> set[str]:
    """Files pyproject.toml still lists as exempt from PLC0415 (being cleaned up)."""
    lint = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]
    return {f for f, rules in lint.get("per-file-ignores", {}).items() if "PLC0415" in rules}


def _late_imports(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every import inside a function."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    out = []
    for fn in ast.walk(ast.parse(source)):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    text = " ".join(lines[node.lineno - 1 : (node.end_lineno or node.lineno)])
                    out.append((node.lineno, text))
    return out


def test_late_imports_give_their_reason() -> None:
    """A late import is for an optional or heavy module only, and says so: ``# noqa: PLC0415 - why``."""
    exempt = _still_exempt()
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in exempt:
            continue
        bad += [f"{rel}:{line}: {text.strip()}" for line, text in _late_imports(path) if not _REASON.search(text)]
    assert bad == []


def test_no_test_module_imports_another() -> None:
    """What tests share lives in ``tests/*kit.py`` (and ``tests/backends``), not in a test module.

    A test module imported by another runs its module-level code and fixtures twice and ties
    two test files together; its helpers were hard to find.
    """
    offenders = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                last = name.rsplit(".", 1)[-1]
                if last.startswith("test_") and (name.startswith("tests.") or node.__dict__.get("level", 0)
                                                 or name == last):
                    offenders.append(f"{path.name}:{node.lineno} imports {name}")
    assert not offenders, offenders


# ---------------------------------------------------------------- start-up imports

_HEAVY_AT_START = ("yaml", "prometheus_client", "crc32c", "importlib.metadata")


def test_a_classic_config_on_memory_storage_imports_no_heavy_module_it_does_not_use(tmp_path: Path) -> None:
    """Start-up CPU counts in every short-lived run and every restart: PyYAML (YAML configs),
    prometheus_client (first scrape), crc32c (chunk files) and importlib.metadata (third-party
    plugin names) were a fifth of the daemon's start-up imports, though this config uses none."""
    conf = tmp_path / "a.conf"
    conf.write_text("[SERVICE]\n    http_server on\n    http_port 0\n[INPUT]\n    name tail\n"
                    f"    path {tmp_path}/*.log\n    parser docker\n[OUTPUT]\n    name null\n    match *\n")
    code = ("import sys\nfrom logfwd.cli import main\n"
            f"rc = main(['-c', {str(conf)!r}, '--dry-run'])\n"
            f"print(rc, [m for m in {_HEAVY_AT_START!r} if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "0 []", out.stdout + out.stderr
