"""Every way a config can be wrong gives an error naming file, line and key, and all are reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from logfwd.config import ConfigError, ConfigIssue
from tests.configkit import cfg_plugins, errors_of, write  # noqa: F401  (fixtures)


def find(err: ConfigError, file: Path | str, line: int | None, key: str | None = None) -> ConfigIssue:
    """The issue at file:line; its printed line names the key too."""
    hits = [i for i in err.issues if i.file == str(file) and i.line == line]
    assert hits, f"no issue at {file}:{line} in:\n{err}"
    issue = hits[0]
    text = str(issue)
    prefix = f"{file}:{line}:" if line is not None else f"{file}:"
    assert text.startswith(prefix), text
    assert text in str(err).splitlines()
    if key is not None:
        assert issue.key == key and key in text, text
    return issue


def test_unknown_key_with_suggestion_exact_format(tmp_path: Path, cfg_plugins: None) -> None:  # noqa: F811
    p = write(tmp_path, "x.conf", """
        [INPUT]
            Name dummy

        [OUTPUT]
            Name   cfgtest
            Match  *
            Index  logs
            Hots   es.local
    """)
    err = errors_of(p)
    assert str(err) == f"{p}:8: [OUTPUT] cfgtest.0: unknown key 'Hots' (did you mean 'Host'?)"
    issue = find(err, p, 8, "Hots")
    assert issue.suggestion == "Host" and issue.section == "[OUTPUT] cfgtest.0"


def test_all_issues_are_collected(tmp_path: Path, cfg_plugins: None) -> None:  # noqa: F811
    p = write(tmp_path, "many.conf", """
        [SERVICE]
            Flush  soon
            Log_Levl debug
        [INPUT]
            Name  dummy
            Rate  fast
        [INPUT]
            Name  tial
        [OUTPUT]
            Name   cfgtest
            Match  *
            Port   0
    """)
    err = errors_of(p)
    find(err, p, 2, "Flush")
    assert "duration" in str(find(err, p, 2))
    assert find(err, p, 3, "Log_Levl").suggestion == "log_level"
    assert "integer" in str(find(err, p, 6, "Rate"))
    assert find(err, p, 8, "Name").suggestion == "tail"
    assert "at least 1" in str(find(err, p, 12, "Port"))
    find(err, p, 9, "Index")  # required key missing: reported at the section header
    assert "missing required key 'Index'" in str(find(err, p, 9))
    assert len(err.issues) == 6


def test_unknown_section_with_suggestion(tmp_path: Path) -> None:
    p = write(tmp_path, "s.conf", """
        [INPTU]
            Name dummy
        [OUTPUT]
            Name null
            Match *
    """)
    err = errors_of(p)
    issue = find(err, p, 1)
    assert "unknown section [INPTU]" in str(issue) and issue.suggestion == "INPUT"
    assert len(err.issues) == 1  # the unknown section's own entries are not reported again


def test_plugins_section_and_plugins_file_are_not_supported(tmp_path: Path) -> None:
    p = write(tmp_path, "p.conf", """
        [SERVICE]
            Plugins_File plugins.conf
        [PLUGINS]
            Path /opt/out_gstdout.so
    """)
    err = errors_of(p)
    assert "not supported" in str(find(err, p, 2, "Plugins_File"))
    assert "not supported" in str(find(err, p, 3))


def test_bad_value_and_setup_error_point_at_the_key(tmp_path: Path) -> None:
    p = write(tmp_path, "v.conf", """
        [INPUT]
            Name   dummy
            Dummy  {"message": broken
        [OUTPUT]
            Name    stdout
            Match   *
            Format  json_line
    """)
    err = errors_of(p)
    # Format: a choice, with a suggestion inside the message
    assert "json_lines" in str(find(err, p, 7, "Format"))
    # Dummy: rejected by the plugin's own setup(), still located at its line
    issue = find(err, p, 3)
    assert issue.key == "dummy" and "JSON" in issue.message


def test_unknown_plugin_with_suggestion(tmp_path: Path) -> None:
    p = write(tmp_path, "u.conf", """
        [INPUT]
            Name dummy
        [OUTPUT]
            Name   stdot
            Match  *
    """)
    err = errors_of(p)
    issue = find(err, p, 4, "Name")
    assert "unknown output plugin 'stdot'" in str(issue) and issue.suggestion == "stdout"


def test_unknown_parser_and_multiline_parser(tmp_path: Path, cfg_plugins: None) -> None:  # noqa: F811
    p = write(tmp_path, "pp.conf", """
        [PARSER]
            Name   my_json
            Format json
        [INPUT]
            Name   cfgtest
            Parser my_jsn
            multiline.parser  docker, pyhton
        [FILTER]
            Name   cfgtest
            Match  *
            Parser my_json
            Parser nope
    """)
    err = errors_of(p)
    issue = find(err, p, 6, "Parser")
    assert "unknown parser 'my_jsn'" in str(issue) and issue.suggestion == "my_json"
    issue = find(err, p, 7, "multiline.parser")
    assert "unknown multiline parser 'pyhton'" in str(issue) and issue.suggestion == "python"
    assert "unknown parser 'nope'" in str(find(err, p, 12, "Parser"))
    assert len(err.issues) == 3


def test_missing_name(tmp_path: Path) -> None:
    p = write(tmp_path, "n.conf", """
        [INPUT]
            Tag  x
    """)
    err = errors_of(p)
    assert "missing 'Name'" in str(find(err, p, 1, "Name"))


@pytest.mark.parametrize(
    "text, line, key, words",
    [
        ("[INPUT]\nName dummy\n", 2, "Name", "must be indented"),
        ("[INPUT]\n    Name dummy\n  Tag x\n", 3, "Tag", "too low"),
        ("[INPUT]\n    Name dummy\n      Tag x\n", 3, "Tag", "extra indentation"),
        ("[INPUT]\n    Name dummy\n\tTag x\n", 3, "Tag", "tabs and spaces"),
        ("[INPUT]\n    Name dummy\n[OUTPUT]\n  Name null\n", 4, "Name", "too low"),  # one indent per file
        ("[INPUT]\n    Name\n", 2, "Name", "empty value"),
        ("    Name dummy\n", 1, "Name", "outside of any [SECTION]"),
        ("[INPUT]\n    Name dummy\n    @INCLUDE x.conf\n", 3, "@INCLUDE", "beginning of the line"),
        ("@INCLDUE x.conf\n", 1, "@INCLDUE", "unknown command"),
        ("@SET NOEQUALS\n", 1, "@SET", "KEY=VALUE"),
    ],
)
def test_layout_errors(tmp_path: Path, text: str, line: int, key: str, words: str) -> None:
    p = tmp_path / "layout.conf"
    p.write_text(text)
    err = errors_of(p)
    assert words in str(find(err, p, line, key))


def test_missing_include_and_cycle(tmp_path: Path) -> None:
    p = write(tmp_path, "main.conf", """
        [INPUT]
            Name dummy
        @INCLUDE missing.conf
        @INCLUDE a.conf
    """)
    a = write(tmp_path, "a.conf", """
        [OUTPUT]
            Name null
            Match *
        @INCLUDE b.conf
    """)
    write(tmp_path, "b.conf", "@INCLUDE a.conf\n")
    err = errors_of(p)
    assert "cannot include 'missing.conf': file not found" in str(find(err, p, 3, "@INCLUDE"))
    issue = find(err, tmp_path / "b.conf", 1, "@INCLUDE")
    assert "include cycle: a.conf -> b.conf -> a.conf" in str(issue)
    assert a.exists()


def test_main_file_missing(tmp_path: Path) -> None:
    err = errors_of(tmp_path / "nope.conf")
    assert str(err).startswith(f"{tmp_path / 'nope.conf'}: cannot read")


def test_bad_rule_lines(tmp_path: Path) -> None:
    p = write(tmp_path, "ml.conf", """
        [MULTILINE_PARSER]
            Name  ml
            Type  regex
            Rule  "start_state" "/^x/"
            Rule  "cont" "/(unclosed/" "cont"
            Rule  "start_state" "/^\\d/" "cont
    """)
    err = errors_of(p)
    assert "3 quoted parts" in str(find(err, p, 4, "Rule"))
    assert "invalid regular expression" in str(find(err, p, 5, "Rule"))
    assert "unterminated quote" in str(find(err, p, 6, "Rule"))


def test_parser_section_errors(tmp_path: Path) -> None:
    p = write(tmp_path, "ps.conf", """
        [PARSER]
            Name    broken
            Format  regex
        [PARSER]
            Format  json
            Tme_Key time
    """)
    err = errors_of(p)
    issue = find(err, p, 1)
    assert issue.section == "[PARSER] broken" and issue.key and issue.key.lower() == "regex"
    find(err, p, 4, "Name")
    assert find(err, p, 6, "Tme_Key").suggestion.lower() == "time_key"


def test_parsers_file_may_only_hold_parsers(tmp_path: Path) -> None:
    write(tmp_path, "parsers.conf", """
        [PARSER]
            Name p1
            Format json
        [INPUT]
            Name dummy
    """)
    p = write(tmp_path, "m.conf", """
        [SERVICE]
            Parsers_File parsers.conf
            Parsers_File nowhere.conf
    """)
    err = errors_of(p)
    assert "only [PARSER] and [MULTILINE_PARSER]" in str(find(err, tmp_path / "parsers.conf", 4))
    assert "'nowhere.conf' not found" in str(find(err, p, 3, "Parsers_File"))


def test_empty_after_substitution(tmp_path: Path) -> None:
    p = write(tmp_path, "e.conf", """
        [INPUT]
            Name dummy
            Tag  ${UNSET_TAG}
    """)
    err = errors_of(p)
    issue = find(err, p, 3, "Tag")
    assert "${UNSET_TAG} is not set" in str(issue)


def test_filesystem_storage_needs_a_path_and_aliases_are_unique(tmp_path: Path) -> None:
    p = write(tmp_path, "st.conf", """
        [INPUT]
            Name  dummy
            storage.type filesystem
            Alias a
        [INPUT]
            Name  dummy
            Alias a
    """)
    err = errors_of(p)
    assert "storage.path" in str(find(err, p, 3, "storage.type"))
    assert "already used" in str(find(err, p, 7, "Alias"))


# ------------------------------------------------------------------ YAML


def test_yaml_syntax_error_has_its_line(tmp_path: Path) -> None:
    p = write(tmp_path, "bad.yaml", """
        pipeline:
          inputs:
            - name: dummy
              tag: [unclosed
          outputs:
            - name: null
    """)
    err = errors_of(p)
    assert len(err.issues) == 1
    issue = err.issues[0]
    assert issue.file == str(p) and issue.line is not None and 4 <= issue.line <= 6
    assert str(issue).startswith(f"{p}:{issue.line}: YAML syntax error")


def test_yaml_unknown_keys_values_and_plugins(tmp_path: Path, cfg_plugins: None) -> None:  # noqa: F811
    p = write(tmp_path, "u.yaml", """
        servce:
          flush: 1
        pipeline:
          input:
            - name: dummy
          outputs:
            - name: cfgtest
              match: '*'
              index: x
              hots: es
              port: many
            - name: stdot
            - match: '*'
            - name: cfgtest
              index: [a, b]
              processors:
                logs:
                  - name: modify
    """)
    err = errors_of(p)
    assert find(err, p, 1, "servce").suggestion == "service"
    assert find(err, p, 4, "input").suggestion == "inputs"
    issue = find(err, p, 10, "hots")
    assert issue.suggestion == "Host" and issue.section == "output cfgtest.0"
    assert "integer" in str(find(err, p, 11, "port"))
    assert find(err, p, 12, "name").suggestion == "stdout"
    assert "missing 'Name'" in str(find(err, p, 13, "Name"))
    assert "single value" in str(find(err, p, 15, "index"))
    assert "processors are not supported" in str(find(err, p, 16, "processors"))


def test_yaml_bad_rules_and_includes(tmp_path: Path) -> None:
    p = write(tmp_path, "r.yaml", """
        includes:
          - missing.yaml
        multiline_parsers:
          - name: ml
            type: regex
            rules:
              - state: start_state
                regex: '/(bad/'
                next_state: cont
              - state: cont
                rgex: '/x/'
                next_state: cont
    """)
    err = errors_of(p)
    assert "cannot include 'missing.yaml'" in str(find(err, p, 2, "includes"))
    assert "invalid regular expression" in str(find(err, p, 7, "regex"))
    assert find(err, p, 11, "rgex").suggestion == "regex"


def test_yaml_include_cycle(tmp_path: Path) -> None:
    p = write(tmp_path, "a.yaml", "includes:\n  - b.yaml\n")
    write(tmp_path, "b.yaml", "includes:\n  - a.yaml\n")
    err = errors_of(p)
    assert "include cycle: a.yaml -> b.yaml -> a.yaml" in str(find(err, tmp_path / "b.yaml", 2, "includes"))
