"""The configuration model: what the engine receives, and the errors a user sees.

Both file formats (Fluent Bit classic ``.conf`` and YAML) and the command line
are first read into the same intermediate form (``RawSection`` / ``RawEntry``:
keys and string values exactly as written, each with its file and line), then
one validator turns that into ``Config``. Keeping the line of every entry until
validation is what lets every error point at the offending key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Config",
    "PluginSection",
    "ConfigIssue",
    "ConfigError",
    "RawEntry",
    "RawSection",
    "Document",
    "CLI_FILE",
]

# The "file" of issues about sections given on the command line.
CLI_FILE = "<command line>"


@dataclass
class ConfigIssue:
    """One problem found in a configuration, located as precisely as we know."""

    file: str | None
    line: int | None
    section: str  # "[OUTPUT] es.0", "output es.0", "[SERVICE]", or ""
    key: str | None  # the key as written, when the issue is about one key
    message: str
    suggestion: str | None = None

    def __str__(self) -> str:
        where = self.file or CLI_FILE
        if self.line is not None:
            where = f"{where}:{self.line}"
        hint = f" (did you mean {self.suggestion!r}?)" if self.suggestion else ""
        sect = f" {self.section}:" if self.section else ""
        msg = self.message
        if self.key and self.key not in msg:  # every line names its key, so it can be found in the file
            msg = f"{self.key}: {msg}" if self.key.startswith("@") or self.key == "includes" else \
                f"key {self.key!r}: {msg}"
        return f"{where}:{sect} {msg}{hint}"


class ConfigError(Exception):
    """Every issue found in a configuration, not just the first.

    A user fixing a config wants the whole list in one run; ``str()`` is one
    line per issue, ``file:line: [SECTION] instance: message``.
    """

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))

    def __str__(self) -> str:
        return "\n".join(str(i) for i in self.issues)


@dataclass
class PluginSection:
    """One validated [INPUT] / [FILTER] / [OUTPUT], with the plugin instance that will run it.

    The instance was built and set up while validating (``plugin.create_plugin``);
    the engine runs that instance rather than building another, so ``setup`` runs
    once. A new ``Config`` (a reload) brings new instances.
    """

    kind: str  # "input" | "filter" | "output"
    name: str  # canonical plugin name (aliases resolved)
    cls: Any  # the plugin class
    options: dict[str, Any]  # lower-case key -> converted value, defaults filled
    raw: list[tuple[str, str]]  # (lower-case key, value) as written, in order
    instance: str  # "tail.0" or the Alias
    file: str | None
    line: int | None
    plugin: Any  # the set-up logfwd.plugin.Plugin instance


@dataclass
class Config:
    """A whole validated configuration."""

    service: dict[str, Any]
    inputs: list[PluginSection]
    filters: list[PluginSection]
    outputs: list[PluginSection]
    parsers: Any  # logfwd.parsers.ParserRegistry
    files: list[str] = field(default_factory=list)  # absolute paths of every file read
    path: str | None = None
    warnings: list[str] = field(default_factory=list)


# ------------------------------------------------------------ intermediate form


@dataclass
class RawEntry:
    """One ``key value`` as written.

    ``value`` is a string, or a list of strings for a YAML sequence (expanded
    into repeated keys by the validator, which knows whether the option may
    repeat). ``rule`` carries a parsed multiline rule (state, regex, next).
    """

    key: str
    value: str | list[str]
    line: int | None
    rule: tuple[str, str, str] | None = None
    # Set when the entry was merged into a section of another file ([SERVICE] sections merge).
    file: str | None = None


@dataclass
class RawSection:
    """One section of any source: kind is service/input/filter/output/parser/multiline_parser."""

    kind: str
    file: str | None
    line: int | None
    entries: list[RawEntry] = field(default_factory=list)
    style: str = "classic"  # "classic" | "yaml" | "cli": only changes how the section is named in errors

    def label(self, instance: str | None = None) -> str:
        if self.style == "classic":
            base = f"[{self.kind.upper()}]"
        else:
            base = self.kind.replace("_", " ")
        return f"{base} {instance}" if instance else base


@dataclass
class Document:
    """Everything read from a main file and its includes, before validation."""

    sections: list[RawSection] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)  # @SET / YAML env
    files: list[str] = field(default_factory=list)
    issues: list[ConfigIssue] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
