"""Fluent Bit classic-format configs: sections, indentation, comments, includes, @SET and ${ENV}.

The small ``cfgtest`` plugins (``tests/configkit.py``) exercise option kinds no
single built-in plugin has all of; built-in plugins (dummy, stdout, ...) are used
where they fit.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from logfwd.config import SHIPPED_PARSERS, Config, default_parsers, load_config
from logfwd.config.classic import parse_rule
from tests.configkit import CfgFilter, CfgIn, CfgOut, cfg_plugins, errors_of, write  # noqa: F401 (fixture)


def section(cfg: Config, instance: str) -> Any:
    for s in cfg.inputs + cfg.filters + cfg.outputs:
        if s.instance == instance:
            return s
    raise AssertionError(f"no instance {instance}: {[s.instance for s in cfg.inputs + cfg.filters + cfg.outputs]}")


# ------------------------------------------------------------------ tests


def test_sections_values_instances_and_raw_order(tmp_path: Path, cfg_plugins: None) -> None:  # noqa: F811
    p = write(tmp_path, "main.conf", """
        # a comment at column 0
        [SERVICE]
            Flush        0.5
            log_level    debug
            HTTP_Port    2021

        [INPUT]
            Name   dummy
            # an indented comment
            Dummy  {"message": "two words  inside"}
            Tag    app.*

        [INPUT]
            name   DUMMY
            rate   5

        [input]
            Name  cfgtest
            Path  /var/log/with space/*.log
            Buf_Size 1M
            Skip_Long_Lines On

        [FILTER]
            Name   cfgtest
            Match  app.*
            Add    b 2
            Regex  log aa
            Add    a 1

        [OUTPUT]
            Name   stdout
            Match  *
            Format json_lines
    """)
    cfg = load_config(p, env={})
    assert cfg.service["flush"] == 0.5
    assert cfg.service["log_level"] == "debug"
    assert cfg.service["http_port"] == 2021
    assert cfg.path == str(p)
    assert cfg.files == [str(p)]

    assert [s.instance for s in cfg.inputs] == ["dummy.0", "dummy.1", "cfgtest.0"]
    d0, d1, t0 = cfg.inputs
    assert d0.name == "dummy" and d0.kind == "input" and d0.line == 7 and d0.file == str(p)
    # the value keeps its inner spaces; the key/value split is the first run of blanks
    assert d0.options["dummy"] == '{"message": "two words  inside"}'
    assert d0.options["tag"] == "app.*"
    assert d1.options["rate"] == 5
    assert d1.options["tag"] == "dummy.1"  # an untagged input is tagged with its instance name, as Fluent Bit does
    assert d1.name == "dummy"  # the canonical name, whatever the case written
    assert t0.options["path"] == "/var/log/with space/*.log"
    assert t0.options["buffer_size"] == 1024 * 1024  # via the option's alias
    assert t0.options["skip_long_lines"] is True
    assert t0.options["refresh_interval"] == 60.0  # default filled in, converted

    (flt,) = cfg.filters
    assert flt.raw == [("name", "cfgtest"), ("match", "app.*"), ("add", "b 2"), ("regex", "log aa"), ("add", "a 1")]
    assert flt.options["add"] == ["b 2", "a 1"]
    assert flt.options["exclude"] == []

    (out,) = cfg.outputs
    assert out.instance == "stdout.0" and out.options["format"] == "json_lines" and out.options["match"] == "*"
    assert cfg.warnings == []


def test_service_defaults_follow_fluent_bit(tmp_path: Path) -> None:
    p = write(tmp_path, "m.conf", """
        [INPUT]
            Name dummy
    """)
    svc = load_config(p, env={}).service
    assert svc["flush"] == 1.0 and svc["grace"] == 5.0
    assert svc["daemon"] is False and svc["log_level"] == "info"
    assert svc["http_server"] is False and svc["http_listen"] == "0.0.0.0" and svc["http_port"] == 2020
    assert svc["health_check"] is False and svc["hc_errors_count"] == 5 and svc["hc_period"] == 60
    assert svc["storage.path"] is None and svc["storage.sync"] == "normal"
    assert svc["storage.max_chunks_up"] == 128 and svc["storage.backlog.mem_limit"] == 5 * 1024 * 1024
    assert svc["scheduler.base"] == 5 and svc["scheduler.cap"] == 2000
    assert svc["hot_reload"] is False and svc["parsers_file"] == []


def test_repeated_key_last_wins_multi_accumulates_prefix_collects(tmp_path: Path, cfg_plugins: None) -> None:  # noqa: F811
    p = write(tmp_path, "m.conf", """
        [OUTPUT]
            Name  cfgtest
            Match *
            Index a
            Index b
            Port  1
            Port  2
            rdkafka.queue.buffering.max.ms  50
            rdkafka.Client.Id   logfwd
            Brokers  k1:9092, k2:9092
    """)
    out = load_config(p, env={}).outputs[0]
    assert out.options["index"] == "b" and out.options["port"] == 2
    assert out.options["rdkafka."] == {"queue.buffering.max.ms": "50", "Client.Id": "logfwd"}
    assert out.options["brokers"] == ["k1:9092", "k2:9092"]
    assert ("rdkafka.client.id", "logfwd") in out.raw


def test_alias_names_the_instance(tmp_path: Path) -> None:
    p = write(tmp_path, "m.conf", """
        [INPUT]
            Name  dummy
            Alias heartbeat
        [INPUT]
            Name  dummy
        [OUTPUT]
            Name  null
            Match *
    """)
    cfg = load_config(p, env={})
    assert [s.instance for s in cfg.inputs] == ["heartbeat", "dummy.1"]  # an alias still counts an index
    assert cfg.inputs[0].options["alias"] == "heartbeat"
    assert cfg.outputs[0].instance == "null.0"


def test_plugin_name_aliases_resolve_to_the_canonical_name(tmp_path: Path) -> None:
    p = write(tmp_path, "m.conf", """
        [OUTPUT]
            Name  elasticsearch
            Match *
        [OUTPUT]
            Name  ES
            Match *
    """)
    outs = load_config(p, env={}).outputs
    assert [(o.name, o.instance) for o in outs] == [("es", "es.0"), ("es", "es.1")]


def test_tabs_are_fine_when_consistent(tmp_path: Path) -> None:
    p = tmp_path / "tabs.conf"
    p.write_text("[INPUT]\n\tName\tdummy\n\tRate\t3\n\n[OUTPUT]\n\tName null\n\tMatch *\n")
    cfg = load_config(p, env={})
    assert cfg.inputs[0].options["rate"] == 3


def test_crlf_bom_and_trailing_blanks(tmp_path: Path) -> None:
    p = tmp_path / "win.conf"
    p.write_bytes(b"\xef\xbb\xbf[INPUT]\r\n    Name dummy   \r\n    Tag  t1\t \r\n")
    cfg = load_config(p, env={})
    assert cfg.inputs[0].options["tag"] == "t1"


def test_includes_globs_relative_paths_and_order(tmp_path: Path) -> None:
    conf = tmp_path / "etc"
    main = write(conf, "main.conf", """
        [SERVICE]
            Flush 2
        @INCLUDE inputs/*.conf
        @INCLUDE outputs.conf
    """)
    write(conf, "inputs/b.conf", """
        [INPUT]
            Name dummy
            Tag  b
    """)
    write(conf, "inputs/a.conf", """
        [INPUT]
            Name dummy
            Tag  a
        @INCLUDE nested/c.conf
    """)
    # relative to the including file's directory (inputs/), not the main file's
    write(conf, "inputs/nested/c.conf", """
        [INPUT]
            Name dummy
            Tag  c
    """)
    write(conf, "outputs.conf", """
        [OUTPUT]
            Name  null
            Match *
    """)
    cfg = load_config(main, env={})
    assert [s.options["tag"] for s in cfg.inputs] == ["a", "c", "b"]  # globs sorted, includes in place
    assert cfg.inputs[0].file == str(conf / "inputs" / "a.conf")
    assert cfg.inputs[0].line == 1
    assert cfg.files == [str(conf / f) for f in ("main.conf", "inputs/a.conf", "inputs/nested/c.conf",
                                                  "inputs/b.conf", "outputs.conf")]


def test_glob_include_matching_nothing_is_a_warning(tmp_path: Path) -> None:
    p = write(tmp_path, "m.conf", """
        @INCLUDE conf.d/*.conf
        [INPUT]
            Name dummy
    """)
    cfg = load_config(p, env={})
    assert any("conf.d/*.conf" in w and "no file matches" in w for w in cfg.warnings)


def test_set_and_environment_variables(tmp_path: Path) -> None:
    write(tmp_path, "in-prod.conf", """
        [INPUT]
            Name dummy
            Tag  from-include
    """)
    p = write(tmp_path, "m.conf", """
        @SET STAGE=prod
        @SET RATE = 7
        @INCLUDE in-${STAGE}.conf
        [INPUT]
            Name  dummy
            Rate  ${RATE}
            Tag   ${STAGE}.${HOST_TAG}.x
            Dummy {"host": "${MISSING}h"}
        [OUTPUT]
            Name  null
            Match ${STAGE}.*
    """)
    cfg = load_config(p, env={"HOST_TAG": "node1", "STAGE": "env-loses"})
    assert cfg.inputs[0].options["tag"] == "from-include"
    d = cfg.inputs[1]
    assert d.options["rate"] == 7
    assert d.options["tag"] == "prod.node1.x"  # @SET wins over the environment
    assert d.options["dummy"] == '{"host": "h"}'  # unset → empty, as in Fluent Bit ...
    assert any("${MISSING}" in w and "m.conf:8" in w for w in cfg.warnings)  # ... but not silently
    assert ("tag", "prod.node1.x") in d.raw
    assert cfg.outputs[0].options["match"] == "prod.*"


def test_set_after_use_still_applies(tmp_path: Path) -> None:
    # Fluent Bit processes @SET before the sections, wherever it is written
    p = write(tmp_path, "m.conf", """
        [INPUT]
            Name dummy
            Tag  ${T}
        @SET T=late
    """)
    assert load_config(p, env={}).inputs[0].options["tag"] == "late"


def test_parsers_file_relative_to_config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             cfg_plugins: None) -> None:  # noqa: F811
    conf = tmp_path / "conf"
    write(conf, "my_parsers.conf", """
        [PARSER]
            Name   my_json
            Format json

        [MULTILINE_PARSER]
            name          my_ml
            type          regex
            flush_timeout 1000
            rule      "start_state"   "/(Dec \\d+ \\d+\\:\\d+\\:\\d+)(.*)/"  "cont"
            rule      "cont"          "/^\\s+at.*/"                     "cont"
    """)
    main = write(conf, "main.conf", """
        [SERVICE]
            Parsers_File my_parsers.conf
        [PARSER]
            Name   inline_json
            Format json
        [INPUT]
            Name   cfgtest
            Parser my_json
            multiline.parser my_ml, inline_ml
        [MULTILINE_PARSER]
            Name   inline_ml
            Type   regex
            Rule   "start_state" "/^\\d+/" "cont"
            Rule   "cont" "/^\\s/" "cont"
    """)
    monkeypatch.chdir(tmp_path)  # the working directory is not the config's directory
    cfg = load_config("conf/main.conf", env={})
    assert cfg.service["parsers_file"] == ["my_parsers.conf"]
    assert cfg.parsers.get("my_json") is not None
    assert cfg.parsers.get("inline_json") is not None
    assert "my_ml" in cfg.parsers.multiline_names() and "inline_ml" in cfg.parsers.multiline_names()
    assert cfg.inputs[0].options["multiline.parser"] == ["my_ml", "inline_ml"]
    assert str(conf / "my_parsers.conf") in cfg.files and str(main) in cfg.files


def test_rule_lines_become_tuples() -> None:
    # the regex keeps Fluent Bit's /slashes/ (and flags): the multiline parser interprets them
    rule, err = parse_rule(r'"start_state"   "/(Dec \d+ \d+\:\d+\:\d+)(.*)/"  "cont"')
    assert err is None and rule == ("start_state", r"/(Dec \d+ \d+\:\d+\:\d+)(.*)/", "cont")
    rule, err = parse_rule(r'"cont" "/^\s+at .* \"quoted\"/i" "cont"')
    assert rule == ("cont", r'/^\s+at .* "quoted"/i', "cont")
    rule, err = parse_rule('"a, b" /^x/ cont')  # unquoted tokens are accepted too
    assert rule == ("a, b", "/^x/", "cont")
    assert parse_rule('"a" "/x/"')[1] is not None
    assert parse_rule('"a" "/(x/" "b"')[1] is not None


def test_content_decides_format_when_extension_does_not(tmp_path: Path) -> None:
    p = write(tmp_path, "fluent-bit.conf", """
        # YAML in a .conf file
        pipeline:
          inputs:
            - name: dummy
              tag: y
    """)
    assert load_config(p, env={}).inputs[0].options["tag"] == "y"


def test_shipped_parsers_are_loaded() -> None:
    reg = default_parsers()
    assert SHIPPED_PARSERS.exists()
    text = SHIPPED_PARSERS.read_text()

    names = re.findall(r"(?im)^\s+name\s+(\S+)", text.split("[MULTILINE_PARSER]")[0])
    assert names, "the shipped parsers file defines parsers"
    for n in names:
        assert reg.get(n) is not None


def test_output_without_match_is_accepted_with_a_warning(tmp_path: Path) -> None:
    p = write(tmp_path, "m.conf", """
        [INPUT]
            Name dummy
        [OUTPUT]
            Name null
        [OUTPUT]
            Name        stdout
            Match_Regex ^dummy\\.
    """)
    cfg = load_config(p, env={})
    assert len(cfg.outputs) == 2 and cfg.outputs[0].options["match"] is None
    rx = cfg.outputs[1].options["match_regex"]
    assert rx.fullmatch("dummy.") and not rx.fullmatch("xdummy."), "Match_Regex alone is a match"
    assert cfg.warnings == [f"{p}:3: [OUTPUT] null.0: no Match or Match_Regex: this output receives no records"]


def test_fluent_bit_keys_without_effect_load_with_a_warning(tmp_path: Path) -> None:
    """Never silently ignored: each says it has no effect here, and why."""
    p = write(tmp_path, "main.conf", """
        [SERVICE]
            dns.mode        TCP
            json.escape_unicode on
        [INPUT]
            Name      dummy
            Threaded  on
        [FILTER]
            Name      multiline
            Match     *
            multiline.parser go
            emitter_name  ml_emitter
        [OUTPUT]
            Name  null
            Match *
    """)
    cfg = load_config(p, env={})
    noted = [w for w in cfg.warnings if "has no effect in logfwd" in w]
    assert [w.split("key ")[1].split(" ")[0] for w in noted] == [
        "'dns.mode'", "'json.escape_unicode'", "'Threaded'", "'emitter_name'"
    ]
    assert "inputs share one event loop" in noted[2] and "main.conf:6:" in noted[2]
