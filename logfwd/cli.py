"""The ``logfwd`` command.

Accepts a config file (``-c``, Fluent Bit classic or YAML) or Fluent Bit-style
one-liners (``-i dummy -p rate=10 -o stdout -m '*'``), validates everything
before anything starts, and runs the pipeline under trio with Fluent Bit's
signal semantics: the first SIGTERM/SIGINT drains within ``grace`` seconds and
exits 0, a second one exits at once.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from . import __version__
from .config import ConfigError, config_from_cli, load_config
from .daemon import Daemon
from .engine.pipeline import describe_error
from .log import setup_logging
from .plugin import ALIASES, KINDS, PluginNotFound, all_options, find_plugin, list_plugins

__all__ = ["main"]

# gen0 threshold while running (CPython's default is 700): see _tune_gc.
GC_GEN0_THRESHOLD = 10_000

# With no -c: the system's config, else the one shipped with the package (installed
# under <prefix>/share/logfwd, or conf/ of a source checkout).
DEFAULT_CONFIGS = (
    Path("/etc/logfwd/logfwd.yaml"),
    Path("/etc/logfwd/logfwd.conf"),
    Path(sys.prefix) / "share" / "logfwd" / "logfwd.yaml",
    Path(__file__).resolve().parent.parent / "conf" / "logfwd.yaml",
)


def default_config() -> Path:
    for p in DEFAULT_CONFIGS:
        if p.is_file():
            return p
    return DEFAULT_CONFIGS[-1]
_PIPELINE_FLAGS = {"-i", "--input", "-F", "--filter", "-o", "--output", "-p", "--prop", "-m", "--match", "-t", "--tag"}


def _split_pipeline_args(argv: list[str]) -> tuple[list[str], list[tuple[str, str, list[tuple[str, str]]]]]:
    """Pull ``-i/-F/-o NAME`` with their following ``-p k=v``, ``-m``, ``-t`` out of argv, keeping order."""
    rest: list[str] = []
    plugins: list[tuple[str, str, list[tuple[str, str]]]] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        flag, eq, inline = a.partition("=") if a.startswith("--") else (a, "", "")
        if flag in _PIPELINE_FLAGS:
            if eq:
                value = inline
                i += 1
            else:
                if i + 1 >= len(argv):
                    raise SystemExit(f"logfwd: {a} needs a value")
                value = argv[i + 1]
                i += 2
            if flag in ("-i", "--input"):
                plugins.append(("input", value, []))
            elif flag in ("-F", "--filter"):
                plugins.append(("filter", value, []))
            elif flag in ("-o", "--output"):
                plugins.append(("output", value, []))
            else:
                if not plugins:
                    raise SystemExit(f"logfwd: {flag} must follow -i, -F or -o")
                if flag in ("-m", "--match"):
                    plugins[-1][2].append(("match", value))
                elif flag in ("-t", "--tag"):
                    plugins[-1][2].append(("tag", value))
                else:
                    key, sep, val = value.partition("=")
                    if not sep:
                        raise SystemExit(f"logfwd: -p expects key=value, got {value!r}")
                    plugins[-1][2].append((key.strip(), val))
            continue
        rest.append(a)
        i += 1
    return rest, plugins


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="logfwd",
        description="Log forwarder: tail, journald, syslog → Elasticsearch, Kafka, InfluxDB. "
        "Pipeline one-liners as Fluent Bit: -i NAME [-p key=value]... [-t TAG]  -F NAME -m PATTERN [-p ...]  "
        "-o NAME -m PATTERN [-p ...]",
    )
    p.add_argument("-c", "--config", help="config file (Fluent Bit classic .conf or YAML); default: "
                   "/etc/logfwd/logfwd.yaml, else the shipped conf/logfwd.yaml")
    p.add_argument("-R", "--parser", action="append", default=[], help="parsers file (repeatable)")
    p.add_argument("-f", "--flush", help="flush interval (seconds)")
    p.add_argument("-H", "--http", action="store_true", help="enable the HTTP monitoring server")
    p.add_argument("-P", "--port", help="HTTP monitoring port (default 2020)")
    p.add_argument("-s", "--storage-path", dest="storage_path", help="storage path (DBs, chunks, dead letters)")
    p.add_argument("-l", "--log-file", dest="log_file", help="write the daemon's log to this file")
    p.add_argument("--log-level", choices=["off", "error", "warn", "info", "debug", "trace"], help="log level")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v debug, -vv trace)")
    p.add_argument("-q", "--quiet", action="store_true", help="log errors only")
    p.add_argument("-D", "--dry-run", action="store_true", help="validate the configuration and exit 0 or 1")
    p.add_argument("-V", "--version", action="store_true", help="print the version and exit")
    p.add_argument("--help-plugin", metavar="NAME", help="print a plugin's options (kind:name to disambiguate)")
    p.add_argument("--list-plugins", action="store_true", help="list the available plugins")
    return p


def _service_overrides(args: argparse.Namespace) -> dict[str, str]:
    svc: dict[str, str] = {}
    if args.flush:
        svc["flush"] = args.flush
    if args.http:
        svc["http_server"] = "on"
    if args.port:
        svc["http_port"] = args.port
    if args.storage_path:
        svc["storage.path"] = args.storage_path
    if args.log_file:
        svc["log_file"] = args.log_file
    level = args.log_level
    if args.verbose:
        level = "debug" if args.verbose == 1 else "trace"
    elif args.quiet:
        level = "error"
    if level:
        svc["log_level"] = level
    return svc


def _list_plugins() -> str:
    out = []
    for kind in KINDS:
        out.append(f"{kind}s:")
        for name in list_plugins(kind):
            try:
                desc = find_plugin(kind, name).description
            except Exception as e:  # a plugin whose client library is missing still lists
                desc = f"(unavailable: {e})"
            aliases = [a for a, t in ALIASES.get(kind, {}).items() if t == name]
            alias = f" (alias: {', '.join(aliases)})" if aliases else ""
            out.append(f"  {name:<18} {desc}{alias}")
    return "\n".join(out)


def help_plugin(spec: str) -> str:
    """Every option of the plugin(s) named ``spec`` (``name`` or ``kind:name``): type, help, default, and
    whether the engine handles it for every plugin of that kind (``[common]``) or it has no effect."""
    kind_hint, _, name = spec.rpartition(":")
    kinds = [kind_hint] if kind_hint in KINDS else list(KINDS)
    found = []
    for kind in kinds:
        try:
            found.append(find_plugin(kind, name))
        except PluginNotFound:
            continue
    if not found:
        raise SystemExit(f"logfwd: no plugin named {name!r} (see --list-plugins)")
    out = []
    for cls in found:
        out.append(f"{cls.kind} plugin {cls.name}: {cls.description}\n")
        own = {o.key for o in cls.options}
        for opt in all_options(cls):
            default = "" if opt.default is None else f" (default: {opt.default})"
            common = "" if opt.key in own else " [common]"
            ignored = f" [no effect: {opt.unsupported}]" if opt.unsupported else ""
            out.append(f"  {opt.name:<28} {opt.type_label():<16} {opt.help}{default}{common}{ignored}")
        out.append("")
    return "\n".join(out)


def _loader(args: argparse.Namespace,
            plugins: list[tuple[str, str, list[tuple[str, str]]]]) -> tuple[Any, Callable[[], Any] | None]:
    """The config now, and for a config file a function that reads it again (hot reload)."""
    overrides = _service_overrides(args)
    if plugins:
        ins = [(n, props) for k, n, props in plugins if k == "input"]
        fls = [(n, props) for k, n, props in plugins if k == "filter"]
        outs = [(n, props) for k, n, props in plugins if k == "output"]
        return config_from_cli(ins, fls, outs, overrides, list(args.parser)), None
    path = args.config or str(default_config())

    def load() -> Any:
        # Command-line service options win over the file, as in Fluent Bit.
        return load_config(path, service_overrides=overrides, parsers_files=list(args.parser))

    return load(), load


def _daemonize() -> None:
    """Fluent Bit's ``daemon on``: detach from the terminal (double fork, new session, stdio to /dev/null).

    Not for systemd or Kubernetes, which want the process in the foreground.
    """
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def _tune_gc() -> None:
    """Make CPython's cyclic GC cheap for a forwarder's allocation pattern.

    Every batch allocates many short-lived dicts and lists (one per record) that are
    freed by reference counting, never by the cyclic collector; yet each 700
    container allocations trigger a gen0 collection, and with many live objects those
    collections (and the gen1/gen2 ones they cascade into) cost a measurable share of
    the CPU per record. So, once the modules and the configuration are loaded:
    ``gc.freeze()`` moves everything alive now (modules, plugins, parsers) to a
    permanent generation the collector never walks again, and a gen0 threshold of
    ``GC_GEN0_THRESHOLD`` makes collections ~14x rarer. Cycles are still collected
    (the collector stays enabled). 50,000 was measured too: no faster, and the es output
    (whose requests leave cyclic garbage) then peaked at twice the RSS (bench/README.md).
    """
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest, plugins = _split_pipeline_args(argv)
    args = _parser().parse_args(rest)
    if args.version:
        print(f"logfwd {__version__}")
        return 0
    if args.list_plugins:
        print(_list_plugins())
        return 0
    if args.help_plugin:
        print(help_plugin(args.help_plugin))
        return 0
    try:
        cfg, reload = _loader(args, plugins)
    except ConfigError as e:
        print(f"logfwd: configuration error\n{e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"logfwd: cannot read configuration: {e}", file=sys.stderr)
        return 1
    if args.dry_run:
        for w in getattr(cfg, "warnings", []):
            print(f"warning: {w}", file=sys.stderr)
        print("configuration test is successful")
        return 0
    level = str(cfg.service.get("log_level") or "info")
    tracebacks = args.verbose >= 2 or level == "trace"
    setup_logging(level, cfg.service.get("log_file"), tracebacks=tracebacks)
    log = logging.getLogger("logfwd")
    for w in getattr(cfg, "warnings", []):
        log.warning("%s", w)
    if cfg.service.get("daemon"):
        _daemonize()
    log.info("logfwd %s starting (%d input(s), %d filter(s), %d output(s))",
             __version__, len(cfg.inputs), len(cfg.filters), len(cfg.outputs))
    _tune_gc()
    try:
        return trio.run(Daemon(cfg, reload).run)
    except KeyboardInterrupt:  # pragma: no cover - signals are handled by the daemon
        return 1
    except Exception as e:  # a bug: one line for the supervisor's log, the traceback with -vv
        log.critical("stopped by an internal error: %s", describe_error(e), exc_info=tracebacks)
        return 1
