"""One validator for every source: Document (classic, YAML or command line) → Config.

It collects every issue instead of stopping at the first, because a user
fixing a config wants the whole list in one run. The order mirrors Fluent
Bit's start-up: variables are substituted, the service section is read,
parsers (shipped, then parsers files, then sections in the config) are
registered, and then each plugin section is checked key by key, converted,
and finally instantiated once with its real ``setup()`` so that cross-option
rules a plugin enforces are reported with a line number too, before anything
starts.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..multiline import MULTILINE_OPTIONS
from ..options import Option, OptionError, closest
from ..parsers import PARSER_OPTIONS
from ..plugin import ConfigValueError, PluginNotFound, PluginUnavailable, all_options, create_plugin, find_plugin
from .model import Config, ConfigError, ConfigIssue, Document, PluginSection, RawEntry, RawSection
from .reader import new_context, read_any
from .service import SERVICE_OPTIONS, UNSUPPORTED_SERVICE_KEYS
from .variables import interpolate

__all__ = ["build_config", "register_parsers", "convert_entries", "Converted"]

PLUGIN_KINDS = ("input", "filter", "output")
PARSER_KINDS = frozenset({"parser", "multiline_parser"})


class Occ(NamedTuple):
    """One occurrence of an option in a section: where it is and what was written."""

    file: str | None
    line: int | None
    value: str
    key: str  # as written


@dataclass
class Converted:
    """A section's entries checked against declared options."""

    values: dict[str, Any]
    raw: list[tuple[str, str]]
    where: dict[str, list[Occ]] = field(default_factory=dict)  # option key -> occurrences in order


def _prefix_of(o: Option) -> str:
    k = o.key
    return k if k.endswith((".", "_", "-")) else k + "."


def convert_entries(
    sect: RawSection,
    options: Iterable[Option],
    label: str,
    issues: list[ConfigIssue],
    *,
    skip_keys: frozenset[str] = frozenset(),
    warnings: list[str] | None = None,
) -> Converted:
    """Check each entry's key against ``options`` and convert its value; defaults fill the rest.

    Keys are case-insensitive and may use an option's aliases; a prefix option
    (``rdkafka.``) takes any key under it. A repeated key of a non-multi option:
    the last one wins, as in Fluent Bit. A YAML list on a non-multi list-type
    option is joined with commas; on any other single-value option it is an error.
    """
    opts = list(options)
    lookup: dict[str, Option] = {}
    prefixes: list[tuple[str, Option]] = []
    for o in opts:
        if o.prefix:
            prefixes.append((_prefix_of(o), o))
            continue
        lookup[o.key] = o
        for a in o.aliases:
            lookup.setdefault(a.lower(), o)
    names = [o.name for o in opts] + [a for o in opts for a in o.aliases]

    def issue(line: int | None, key: str | None, msg: str, suggestion: str | None = None,
              file: str | None = None) -> None:
        issues.append(ConfigIssue(file or sect.file, line, label, key, msg, suggestion))

    values: dict[str, Any] = {}
    for o in opts:
        try:
            values[o.key] = o.default_value()
        except OptionError as e:  # a plugin's own declaration is wrong: say so rather than crash
            issue(sect.line, o.name, f"default of {o.name!r} is invalid ({e}); this is a bug in the plugin")
            values[o.key] = None
    out = Converted(values, [])
    given: set[str] = set()

    for e in sect.entries:
        lk = e.key.lower()
        efile = e.file or sect.file
        if lk in skip_keys:
            for v in e.value if isinstance(e.value, list) else [e.value]:
                out.raw.append((lk, v))
            continue
        o = lookup.get(lk)
        suffix: str | None = None
        if o is None:
            for p, po in prefixes:
                if lk.startswith(p) and len(lk) > len(p):
                    o, suffix = po, e.key[len(p):]
                    break
        if o is None:
            issue(e.line, e.key, f"unknown key {e.key!r}", closest(lk, names), efile)
            continue
        vals = e.value if isinstance(e.value, list) else [e.value]
        if isinstance(e.value, list) and not o.multi and not o.prefix and len(vals) > 1:
            if o.type in ("list", "csv"):
                vals = [",".join(vals)]
            else:
                issue(e.line, e.key, f"key {e.key!r} takes a single value, not a list of {len(vals)}",
                      file=efile)
                continue
        if o.unsupported and warnings is not None:
            warnings.append(f"{efile}:{e.line}: {label}: key {e.key!r} has no effect in logfwd ({o.unsupported}); "
                            "it is accepted so that a Fluent Bit config loads unchanged")
        if o.multi and o.key not in given:
            values[o.key] = []
        given.add(o.key)
        for v in vals:
            out.raw.append((lk, v))
            out.where.setdefault(o.key, []).append(Occ(efile, e.line, v, e.key))
            if o.prefix:
                values[o.key][suffix] = v
                continue
            if e.rule is not None:
                conv: Any = e.rule
            else:
                try:
                    conv = o.convert(v)
                except OptionError as err:
                    issue(e.line, e.key, f"key {e.key!r}: {err}", file=efile)
                    continue
            if o.multi:
                values[o.key].append(conv)
            else:
                values[o.key] = conv
    for o in opts:
        if o.required and o.key not in given:
            issue(sect.line, o.name, f"missing required key {o.name!r}")
    return out


def _interpolate_doc(doc: Document, env: Mapping[str, str]) -> None:
    """Substitute ${VARS} in every value; a value that becomes empty is an issue (it configures nothing)."""
    for sect in doc.sections:
        kept: list[RawEntry] = []
        for e in sect.entries:
            if e.rule is not None:
                kept.append(e)
                continue
            items = e.value if isinstance(e.value, list) else [e.value]
            new: list[str] = []
            for item in items:
                v, unset = interpolate(item, doc.variables, env)
                if unset:
                    names = ", ".join("${" + u + "}" for u in unset)
                    if not v.strip():
                        doc.issues.append(ConfigIssue(sect.file, e.line, sect.label(), e.key,
                                                      f"key {e.key!r} is empty: {names} is not set"))
                        continue
                    doc.warnings.append(f"{sect.file}:{e.line}: {sect.label()}: {names} is not set; "
                                        f"substituted an empty string in {e.key!r}")
                new.append(v.strip())
            if not new:
                continue
            e.value = new if isinstance(e.value, list) else new[0]
            kept.append(e)
        sect.entries = kept


def _resolve_parsers_file(name: str, main_dir: str | None) -> str | None:
    """Fluent Bit resolves parsers_file against the main config's directory; then the working directory."""
    if os.path.isabs(name):
        return name if os.path.exists(name) else None
    for base in ([main_dir] if main_dir else []) + [os.curdir]:
        p = os.path.normpath(os.path.join(base, name))
        if os.path.exists(p):
            return p
    return None


def register_parsers(sections: list[RawSection], registry: Any, issues: list[ConfigIssue]) -> None:
    """Check [PARSER]/[MULTILINE_PARSER] sections and add them: all parsers first (multiline parsers
    refer to them by name), then multiline parsers."""
    for kind, opts, add in (
        ("parser", PARSER_OPTIONS, registry.add_parser),
        ("multiline_parser", MULTILINE_OPTIONS, registry.add_multiline),
    ):
        for sect in sections:
            if sect.kind != kind:
                continue
            name = next((e.value for e in reversed(sect.entries) if e.key.lower() == "name"), None)
            label = sect.label(name if isinstance(name, str) else None)
            n_before = len(issues)
            conv = convert_entries(sect, opts, label, issues)
            if not conv.values.get("name"):
                if not any(i.key and i.key.lower() == "name" for i in issues[n_before:]):
                    issues.append(ConfigIssue(sect.file, sect.line, label, "Name", "missing required key 'Name'"))
                continue
            if kind == "multiline_parser":
                for occ in conv.where.get("parser", []):
                    _check_parser_names(registry, [occ.value], False, label, occ, issues)
            if len(issues) > n_before:
                continue
            try:
                add(conv.values)
            except ConfigValueError as e:
                issues.append(ConfigIssue(sect.file, _line_of(conv, e.key, sect.line), label, e.key, e.message))
            except Exception as e:  # a parser that cannot be built must not crash config loading
                issues.append(ConfigIssue(sect.file, sect.line, label, None, f"cannot add {kind}: {e}"))


def _line_of(conv: Converted, key: str | None, default: int | None) -> int | None:
    if key:
        occ = conv.where.get(key.lower())
        if occ:
            return occ[-1].line
    return default


def _check_parser_names(
    registry: Any,
    names: list[str],
    multiline: bool,
    label: str,
    occ: Occ,
    issues: list[ConfigIssue],
) -> None:
    for n in names:
        n = n.strip()
        if not n:
            continue
        try:
            registry.multiline(n) if multiline else registry.get(n)
        except KeyError:
            known = registry.multiline_names() if multiline else registry.names()
            what = "multiline parser" if multiline else "parser"
            issues.append(ConfigIssue(occ.file, occ.line, label, occ.key, f"unknown {what} {n!r}",
                                      closest(n, known)))


def _plugin_sections(
    doc: Document, service: dict[str, Any], registry: Any, issues: list[ConfigIssue], warnings: list[str]
) -> dict[str, list[PluginSection]]:
    result: dict[str, list[PluginSection]] = {k: [] for k in PLUGIN_KINDS}
    counts: dict[tuple[str, str], int] = {}
    instances: dict[str, str] = {}  # instance name -> where, to refuse duplicates
    for sect in doc.sections:
        if sect.kind not in PLUGIN_KINDS:
            continue
        kind = sect.kind
        name_e = next((e for e in reversed(sect.entries) if e.key.lower() == "name"), None)
        if name_e is None or not isinstance(name_e.value, str):
            issues.append(ConfigIssue(sect.file, sect.line, sect.label(), "Name",
                                      f"missing 'Name': every {kind} section names its plugin"))
            continue
        try:
            cls = find_plugin(kind, name_e.value)
        except PluginNotFound as e:
            issues.append(ConfigIssue(sect.file, name_e.line, sect.label(), name_e.key,
                                      f"unknown {kind} plugin {name_e.value!r}", e.suggestion))
            continue
        except PluginUnavailable as e:
            issues.append(ConfigIssue(sect.file, name_e.line, sect.label(), name_e.key, str(e)))
            continue
        canonical = getattr(cls, "name", "") or name_e.value.strip().lower()
        n = counts.get((kind, canonical), 0)
        counts[(kind, canonical)] = n + 1
        alias_e = next((e for e in reversed(sect.entries) if e.key.lower() == "alias"), None)
        alias = alias_e.value if alias_e is not None and isinstance(alias_e.value, str) else None
        instance = alias or f"{canonical}.{n}"
        label = sect.label(instance)
        where = f"{sect.file}:{sect.line}" if sect.line is not None else str(sect.file)
        key = f"{kind}:{instance}"
        if key in instances:
            issues.append(ConfigIssue(sect.file, alias_e.line if alias_e else sect.line, label, "Alias",
                                      f"{kind} instance name {instance!r} is already used at {instances[key]}"))
        instances[key] = where

        n_before = len(issues)
        conv = convert_entries(sect, all_options(cls), label, issues, skip_keys=frozenset({"name"}),
                               warnings=warnings)
        opts = conv.values
        for occ in conv.where.get("parser", []):
            _check_parser_names(registry, [occ.value], False, label, occ, issues)
        for occ in conv.where.get("multiline.parser", []):
            _check_parser_names(registry, occ.value.split(","), True, label, occ, issues)

        if kind == "input":
            if not opts.get("tag"):
                opts["tag"] = f"{canonical}.{n}"  # Fluent Bit tags untagged inputs with the instance name
            if _filesystem_storage(opts, conv, service) and not service.get("storage.path"):
                issues.append(ConfigIssue(sect.file, _line_of(conv, "storage.type", sect.line), label,
                                          "storage.type", "storage.type filesystem needs storage.path in the "
                                          "service section (the directory for chunk files)"))
        elif not opts.get("match") and opts.get("match_regex") is None:
            warnings.append(f"{where}: {label}: no Match or Match_Regex: this {kind} receives no records")

        if len(issues) > n_before:
            continue
        try:
            plugin = create_plugin(cls, opts, instance=instance, service=service, parsers=registry, raw=conv.raw)
        except ConfigValueError as e:
            issues.append(ConfigIssue(sect.file, _line_of(conv, e.key, sect.line), label, e.key, e.message))
            continue
        except Exception as e:  # a plugin bug must show as a config issue, not a traceback
            issues.append(ConfigIssue(sect.file, sect.line, label, None,
                                      f"plugin setup failed: {type(e).__name__}: {e}"))
            continue
        result[kind].append(
            PluginSection(kind, canonical, cls, opts, list(conv.raw), instance, sect.file, sect.line, plugin)
        )
    return result


def build_config(
    doc: Document,
    env: Mapping[str, str],
    registry: Any,
    *,
    path: str | None,
    main_dir: str | None,
    extra_parsers_files: Sequence[str] = (),
) -> Config:
    """Validate ``doc`` and return a Config, or raise ConfigError with every issue found."""
    issues = doc.issues
    warnings = doc.warnings
    _interpolate_doc(doc, env)

    # ---- service: several sections (includes, a YAML file and its includes) merge; later keys win
    svc_sections = [s for s in doc.sections if s.kind == "service"]
    first = svc_sections[0] if svc_sections else RawSection("service", path, None)
    merged = RawSection("service", first.file, first.line, style=first.style)
    for s in svc_sections:
        for e in s.entries:
            e.file = e.file or s.file
            merged.entries.append(e)
    svc = convert_entries(merged, SERVICE_OPTIONS, merged.label(), issues, warnings=warnings)
    service = svc.values
    if not service.get("storage.path") and env.get("STATE_DIRECTORY"):
        # Under systemd's StateDirectory= (conf/logfwd.service) the state directory is the default storage.
        service["storage.path"] = env["STATE_DIRECTORY"].split(":")[0]
    for key, (level, msg) in UNSUPPORTED_SERVICE_KEYS.items():
        for occ in svc.where.get(key, []):
            if level == "error":
                issues.append(ConfigIssue(occ.file, occ.line, merged.label(), occ.key, msg))
            else:
                warnings.append(f"{occ.file}:{occ.line}: {msg}")

    # ---- parsers: files named in the service section and on the command line, then the config's own
    pdoc = Document(variables=doc.variables)
    pctx = new_context(env, main_dir or os.curdir, PARSER_KINDS)
    wanted = list(svc.where.get("parsers_file", []))
    wanted += [Occ(None, None, p, "parsers_file") for p in extra_parsers_files]
    for occ in wanted:
        found = _resolve_parsers_file(occ.value, main_dir if occ.file is not None else None)
        if found is None:
            issues.append(ConfigIssue(occ.file, occ.line, merged.label(), occ.key,
                                      f"parsers file {occ.value!r} not found"))
            continue
        if os.path.realpath(found) in pctx.seen:
            continue  # named twice (the file and -R, say): loading it once is what was meant
        read_any(found, pdoc, pctx, from_file=occ.file, from_line=occ.line, from_key=occ.key)
    _interpolate_doc(pdoc, env)
    issues.extend(pdoc.issues)
    warnings.extend(pdoc.warnings)
    files = list(doc.files) + [f for f in pdoc.files if f not in doc.files]
    parser_sections = [s for s in pdoc.sections + doc.sections if s.kind in PARSER_KINDS]
    if registry is not None:
        register_parsers(parser_sections, registry, issues)

    # ---- plugins
    plugins = _plugin_sections(doc, service, registry, issues, warnings)
    if not any(s.kind == "input" for s in doc.sections) and not issues:
        warnings.append(f"{path or '<command line>'}: no input is configured")
    if issues:
        raise ConfigError(issues)
    return Config(
        service=service,
        inputs=plugins["input"],
        filters=plugins["filter"],
        outputs=plugins["output"],
        parsers=registry,
        files=files,
        path=path,
        warnings=warnings,
    )


def _filesystem_storage(opts: dict[str, Any], conv: Any, service: dict[str, Any]) -> bool:
    """``storage.type filesystem`` on the input, or inherited from the service (``storage.inherit on``)."""
    if "storage.type" in conv.where:
        return opts.get("storage.type") == "filesystem"
    return bool(service.get("storage.inherit")) and service.get("storage.type") == "filesystem"
