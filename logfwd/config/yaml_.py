"""Fluent Bit's YAML configuration schema, read from PyYAML's node tree.

The file is composed (``yaml.compose``, safe loader), not loaded: nodes keep
their line, so every issue points at the offending key, and a scalar keeps the
text the user wrote. That matters because YAML 1.1 would otherwise turn ``on``
into ``True``, ``0755`` into 493 and ``1.10`` into 1.1 before the option types
(which follow Fluent Bit's string rules) ever see them. Repeated keys in one
mapping are kept as repeated entries, like repeated keys in a classic section.
"""

from __future__ import annotations

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..options import closest
from .classic import check_rule_regex
from .include import ReadContext, resolve_include
from .model import ConfigIssue, Document, RawEntry, RawSection

__all__ = ["read_yaml_text", "TOP_LEVEL_KEYS"]

TOP_LEVEL_KEYS = ("env", "includes", "service", "pipeline", "parsers", "multiline_parsers")
PIPELINE_KEYS = {"inputs": "input", "filters": "filter", "outputs": "output"}
UNSUPPORTED_TOP = {
    "plugins": "external Fluent Bit plugins (.so) are not supported; logfwd plugins are Python packages "
    "registered in the 'logfwd.plugins' entry-point group",
    "upstream_servers": "upstream_servers (load-balanced upstream servers) is not supported",
    "customs": "custom plugins are not supported",
    "stream_processor": "the stream processor is not supported",
}
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _kind_name(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return "a value"


class _YamlReader:
    def __init__(self, path: str, doc: Document, ctx: ReadContext) -> None:
        self.path, self.doc, self.ctx = path, doc, ctx

    def issue(self, node: Node | None, msg: str, key: str | None = None, section: str = "",
              suggestion: str | None = None, line: int | None = None) -> None:
        if line is None and node is not None:
            line = _line(node)
        self.doc.issues.append(ConfigIssue(self.path, line, section, key, msg, suggestion))

    # ------------------------------------------------------------ helpers

    def items(self, node: MappingNode) -> list[tuple[ScalarNode, Node]]:
        """Key/value node pairs, with ``<<`` merge keys expanded; non-scalar keys are reported."""
        out: list[tuple[ScalarNode, Node]] = []
        for k, v in node.value:
            if k.tag == _MERGE:
                sources = v.value if isinstance(v, SequenceNode) else [v]
                for s in sources:
                    if isinstance(s, MappingNode):
                        out.extend(self.items(s))
                    else:
                        self.issue(k, "'<<' merges a mapping (or a list of mappings)", key="<<")
                continue
            if not isinstance(k, ScalarNode):
                self.issue(k, f"a key must be a plain name, not {_kind_name(k)}")
                continue
            out.append((k, v))
        return out

    @staticmethod
    def scalar(node: ScalarNode) -> str:
        """The text as written. Fluent Bit's YAML reader does not type scalars either: ``name: null``
        is the null output plugin, and only ``key:`` with nothing after it is empty."""
        return str(node.value)

    def entries(self, node: MappingNode, section: RawSection, prefix: str = "") -> None:
        """A plugin/service/parser mapping's entries; nested mappings become dotted keys."""
        for k, v in self.items(node):
            key = prefix + k.value
            lk = key.lower()
            if lk == "processors":
                self.issue(k, "processors are not supported; use [FILTER] sections (pipeline.filters)",
                           key=key, section=section.label())
                continue
            if isinstance(v, ScalarNode):
                value = self.scalar(v)
                if not value:
                    self.issue(k, f"key {key!r} has an empty value", key=key, section=section.label())
                    continue
                section.entries.append(RawEntry(key, value, _line(k)))
            elif isinstance(v, SequenceNode):
                if section.kind == "multiline_parser" and lk in ("rules", "rule"):
                    self.rules(v, section)
                    continue
                values: list[str] = []
                ok = True
                for item in v.value:
                    if not isinstance(item, ScalarNode):
                        self.issue(item, f"items of {key!r} must be values, not {_kind_name(item)}",
                                   key=key, section=section.label())
                        ok = False
                        break
                    values.append(self.scalar(item))
                if ok and not values:
                    self.issue(k, f"key {key!r} has an empty list", key=key, section=section.label())
                    ok = False
                if ok:
                    section.entries.append(RawEntry(key, values, _line(k)))
            else:
                assert isinstance(v, MappingNode)
                self.entries(v, section, prefix=key + ".")

    def rules(self, node: SequenceNode, section: RawSection) -> None:
        """``rules: [{state, regex, next_state}]`` → rule entries carrying (state, regex, next)."""
        for item in node.value:
            if not isinstance(item, MappingNode):
                self.issue(item, "each rule is a mapping with state, regex and next_state",
                           key="rules", section=section.label())
                continue
            parts: dict[str, str] = {}
            for k, v in self.items(item):
                lk = k.value.lower()
                if lk not in ("state", "regex", "next_state"):
                    self.issue(k, f"unknown key {k.value!r} in a rule", key=k.value, section=section.label(),
                               suggestion=closest(lk, ["state", "regex", "next_state"]))
                    continue
                if not isinstance(v, ScalarNode) or not self.scalar(v):
                    self.issue(k, f"rule key {k.value!r} needs a value", key=k.value, section=section.label())
                    continue
                parts[lk] = self.scalar(v)
            missing = [p for p in ("state", "regex", "next_state") if p not in parts]
            if missing:
                self.issue(item, f"rule is missing {', '.join(missing)}", key="rules", section=section.label())
                continue
            err = check_rule_regex(parts["regex"])
            if err:
                self.issue(item, err, key="regex", section=section.label())
                continue
            rule = (parts["state"], parts["regex"], parts["next_state"])
            section.entries.append(RawEntry("rule", f'"{rule[0]}" "{rule[1]}" "{rule[2]}"', _line(item), rule=rule))

    def section_list(self, node: Node, kind: str, where: str) -> None:
        if not isinstance(node, SequenceNode):
            self.issue(node, f"{where} must be a list (each item starts with '- name: ...'), "
                       f"not {_kind_name(node)}", key=where)
            return
        for item in node.value:
            if not isinstance(item, MappingNode):
                self.issue(item, f"each item of {where} must be a mapping of keys, not {_kind_name(item)}",
                           key=where)
                continue
            sect = RawSection(kind, self.path, _line(item), style="yaml")
            self.entries(item, sect)
            self.doc.sections.append(sect)

    # ------------------------------------------------------------ top level

    def read(self, text: str) -> None:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            ctx = f" ({e.context})" if e.context else ""
            self.issue(None, f"YAML syntax error: {e.problem}{ctx}", line=(mark.line + 1) if mark else None)
            return
        except yaml.YAMLError as e:
            self.issue(None, f"YAML error: {e}")
            return
        if root is None:
            return
        if not isinstance(root, MappingNode):
            self.issue(root, "the top level must be a mapping of sections (service, pipeline, ...), "
                       f"not {_kind_name(root)}")
            return
        pairs = self.items(root)
        allowed = TOP_LEVEL_KEYS
        if self.ctx.allowed is not None:
            allowed = ("parsers", "multiline_parsers")
        # env first: variables apply to the whole file, wherever env is written.
        for k, v in pairs:
            if k.value.lower() == "env" and "env" in allowed:
                self.env(v)
        for k, v in pairs:
            name = k.value.lower()
            if name not in allowed:
                if name in UNSUPPORTED_TOP:
                    self.issue(k, UNSUPPORTED_TOP[name], key=k.value)
                elif self.ctx.allowed is not None and name in TOP_LEVEL_KEYS:
                    self.issue(k, "only 'parsers' and 'multiline_parsers' are allowed in a parsers file",
                               key=k.value)
                else:
                    self.issue(k, f"unknown top-level key {k.value!r} (expected one of {', '.join(allowed)})",
                               key=k.value, suggestion=closest(name, allowed))
                continue
            if name == "env":
                continue
            if name == "includes":
                self.includes(v)
            elif name == "service":
                if not isinstance(v, MappingNode):
                    if not (isinstance(v, ScalarNode) and v.tag == _NULL):
                        self.issue(v, f"service must be a mapping of keys, not {_kind_name(v)}", key="service")
                    continue
                sect = RawSection("service", self.path, _line(k), style="yaml")
                self.entries(v, sect)
                self.doc.sections.append(sect)
            elif name == "pipeline":
                self.pipeline(v)
            elif name == "parsers":
                self.section_list(v, "parser", "parsers")
            elif name == "multiline_parsers":
                self.section_list(v, "multiline_parser", "multiline_parsers")

    def env(self, node: Node) -> None:
        if not isinstance(node, MappingNode):
            if not (isinstance(node, ScalarNode) and node.tag == _NULL):
                self.issue(node, f"env must be a mapping of NAME: value, not {_kind_name(node)}", key="env")
            return
        for k, v in self.items(node):
            if not isinstance(v, ScalarNode):
                self.issue(k, f"env {k.value!r} must be a single value, not {_kind_name(v)}", key=k.value)
                continue
            self.doc.variables[k.value] = self.scalar(v)

    def includes(self, node: Node) -> None:
        items = node.value if isinstance(node, SequenceNode) else [node]
        for item in items:
            if not isinstance(item, ScalarNode) or not self.scalar(item):
                self.issue(item, "includes must be a list of file names", key="includes")
                continue
            pattern = self.scalar(item)
            hits, bases = resolve_include(pattern, self.path, self.ctx)
            if not hits:
                if any(c in pattern for c in "*?["):
                    self.doc.warnings.append(f"{self.path}:{_line(item)}: includes: no file matches {pattern!r}")
                else:
                    self.issue(item, f"cannot include {pattern!r}: file not found", key="includes")
                continue
            for hit in hits:
                self.ctx.include(hit, self.doc, from_file=self.path, from_line=_line(item), from_key="includes")

    def pipeline(self, node: Node) -> None:
        if not isinstance(node, MappingNode):
            if not (isinstance(node, ScalarNode) and node.tag == _NULL):
                self.issue(node, f"pipeline must be a mapping with inputs, filters and outputs, "
                           f"not {_kind_name(node)}", key="pipeline")
            return
        for k, v in self.items(node):
            name = k.value.lower()
            kind = PIPELINE_KEYS.get(name)
            if kind is None:
                self.issue(k, f"unknown pipeline key {k.value!r} (expected inputs, filters, outputs)",
                           key=k.value, suggestion=closest(name, PIPELINE_KEYS))
                continue
            if isinstance(v, ScalarNode) and v.tag == _NULL:
                continue
            self.section_list(v, kind, f"pipeline.{name}")


def read_yaml_text(text: str, path: str, doc: Document, ctx: ReadContext) -> None:
    """Read one YAML file into ``doc``."""
    _YamlReader(path, doc, ctx).read(text)
