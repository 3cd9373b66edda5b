"""Fluent Bit YAML configs: env, includes, service, pipeline, parsers, and equality with classic."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from logfwd.config import load_config
from tests.configkit import cfg_plugins, write  # noqa: F401  (fixtures)

DATA = Path(__file__).parent / "data" / "config"


def test_same_pipeline_in_classic_and_yaml_gives_equal_sections(cfg_plugins: None) -> None:  # noqa: F811
    env = {"ES_HOST": "es.local"}
    classic = load_config(DATA / "pipeline.conf", env=env)
    yaml_ = load_config(DATA / "pipeline.yaml", env=env)

    def shape(cfg):  # type: ignore[no-untyped-def]
        return [(s.kind, s.name, s.cls, s.instance, s.options, s.raw) for s in cfg.inputs + cfg.filters + cfg.outputs]

    assert shape(classic) == shape(yaml_)
    assert classic.service == yaml_.service
    # and the content is what was written
    tail, dummy = classic.inputs
    assert tail.instance == "tail.0" and tail.options["path"] == ["/var/log/app/*.log", "/var/log/app/*.txt"]
    assert tail.options["multiline.parser"] == ["docker", "cri"] and tail.options["refresh_interval"] == 10.0
    assert dummy.options["rate"] == 2
    grep, modify, recmod, _ = classic.filters
    assert grep.options["regex"] == ["level ^(error|warn)$"] and grep.options["exclude"] == ["msg ^healthcheck"]
    # rule order survives in raw (modify applies its rules in the order written)
    assert modify.raw == [("name", "modify"), ("match", "app.*"), ("add", "env prod"), ("rename", "msg message"),
                          ("add", "team core")]
    assert modify.options["add"] == ["env prod", "team core"]

    assert recmod.options["record"] == [f"hostname {socket.gethostname()}", "pipeline classic-or-yaml"]
    es, out = classic.outputs
    assert es.options["host"] == "es.local" and es.options["port"] == 9201 and es.options["logstash_format"] is False
    assert out.instance == "debug_out"
    assert classic.service["http_server"] is True and classic.service["flush"] == 0.5
    for cfg in (classic, yaml_):
        assert "java_trace" in cfg.parsers.multiline_names()
        assert cfg.parsers.get("kv") is not None and cfg.parsers.get("app_line") is not None
    assert str(DATA / "parsers-extra.conf") in yaml_.files
    assert str(DATA / "yaml.d" / "inputs.yaml") in yaml_.files
    assert str(DATA / "conf.d" / "10-inputs.conf") in classic.files


def test_yaml_keeps_scalars_as_written(tmp_path: Path, cfg_plugins: None) -> None:  # noqa: F811
    p = write(tmp_path, "c.yaml", """
        service:
          log_level: 'info'
          daemon: no
        pipeline:
          inputs:
            - name: cfgtest
              path: 0755          # YAML 1.1 would read this as the integer 493
              skip_long_lines: on # and this as True; both reach the option as text
              tag: 1.10
              buffer_size: 2M
          outputs:
            - name: cfgtest
              match: '*'
              index: no           # a string option keeps 'no', not False
              port: 0x10
    """)
    cfg = load_config(p, env={})
    i = cfg.inputs[0]
    assert i.options["path"] == "0755" and i.options["tag"] == "1.10"
    assert i.options["skip_long_lines"] is True and i.options["buffer_size"] == 2 * 1024 * 1024
    assert ("path", "0755") in i.raw
    o = cfg.outputs[0]
    assert o.options["index"] == "no" and o.options["port"] == 16
    assert cfg.service["daemon"] is False
    assert i.line == 6 and o.line == 12


def test_yaml_env_overrides_process_environment_and_hostname(tmp_path: Path) -> None:
    p = write(tmp_path, "c.yaml", """
        env:
          TAG_PREFIX: fromfile
        pipeline:
          inputs:
            - name: dummy
              tag: ${TAG_PREFIX}.${HOSTNAME}.${FROM_ENV}
    """)

    cfg = load_config(p, env={"TAG_PREFIX": "fromenv", "FROM_ENV": "e"})
    assert cfg.inputs[0].options["tag"] == f"fromfile.{socket.gethostname()}.e"


def test_yaml_includes_relative_to_including_file(tmp_path: Path) -> None:
    main = write(tmp_path, "etc/main.yaml", """
        includes:
          - sub/outputs.yaml
        env:
          RATE: 3
        pipeline:
          inputs:
            - name: dummy
              rate: ${RATE}
    """)
    write(tmp_path, "etc/sub/outputs.yaml", """
        includes:
          - more.yaml
        pipeline:
          outputs:
            - name: null
              match: '*'
    """)
    write(tmp_path, "etc/sub/more.yaml", """
        service:
          grace: 2
        pipeline:
          outputs:
            - name: stdout
              match: '*'
    """)
    cfg = load_config(main, env={})
    assert cfg.inputs[0].options["rate"] == 3
    assert [o.name for o in cfg.outputs] == ["stdout", "null"]  # an include is read where it is listed
    assert cfg.service["grace"] == 2.0
    assert cfg.outputs[1].file == str(tmp_path / "etc/sub/outputs.yaml") and cfg.outputs[1].line == 5


def test_yaml_parsers_multiline_rules_and_nested_maps(tmp_path: Path, cfg_plugins: None) -> None:  # noqa: F811
    p = write(tmp_path, "c.yaml", """
        service:
          storage:
            path: /tmp/logfwd-storage
            sync: full
        parsers:
          - name: my_json
            format: json
        multiline_parsers:
          - name: my_ml
            type: regex
            flush_timeout: 1000
            rules:
              - state: start_state
                regex: '/([a-zA-Z]+ \\d+ \\d+:\\d+:\\d+)(.*)/'
                next_state: cont
              - state: cont
                regex: '/^\\s+at.*/'
                next_state: cont
        pipeline:
          inputs:
            - name: cfgtest
              parser: my_json
              multiline.parser: [my_ml, go]
              storage.type: filesystem
    """)
    cfg = load_config(p, env={})
    assert cfg.service["storage.path"] == "/tmp/logfwd-storage" and cfg.service["storage.sync"] == "full"
    assert cfg.parsers.multiline("my_ml") is not None
    i = cfg.inputs[0]
    assert i.options["multiline.parser"] == ["my_ml", "go"]  # a YAML list on a list option is joined
    assert i.options["storage.type"] == "filesystem"


def test_yaml_anchors_merge_keys_and_duplicate_keys(tmp_path: Path, cfg_plugins: None) -> None:  # noqa: F811
    p = write(tmp_path, "c.yaml", """
        pipeline:
          inputs:
            - &in
              name: dummy
              tag: one
            - <<: *in
              tag: two
          filters:
            - name: cfgtest
              match: 'app.*'
              add: a 1
              add: b 2
    """)
    cfg = load_config(p, env={})
    assert [s.options["tag"] for s in cfg.inputs] == ["one", "two"]  # merged, then overridden (last wins)
    assert [s.instance for s in cfg.inputs] == ["dummy.0", "dummy.1"]
    f = cfg.filters[0]
    assert f.options["add"] == ["a 1", "b 2"]  # a repeated YAML key repeats, as in classic
    assert f.raw[-2:] == [("add", "a 1"), ("add", "b 2")]


def test_empty_yaml_loads_with_a_warning(tmp_path: Path) -> None:
    p = write(tmp_path, "empty.yaml", "# nothing yet\n")
    cfg = load_config(p, env={})
    assert cfg.inputs == [] and any("no input" in w for w in cfg.warnings)


@pytest.mark.parametrize("ext", ["yaml", "yml"])
def test_extension_picks_yaml(tmp_path: Path, ext: str) -> None:
    p = write(tmp_path, f"c.{ext}", "pipeline:\n  inputs:\n    - name: dummy\n")
    assert load_config(p, env={}).inputs[0].name == "dummy"
