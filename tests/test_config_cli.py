"""Fluent Bit-style one-liners (``-i dummy -p rate=5 -o stdout -m '*'``) and command-line service options."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from logfwd.config import CLI_FILE, ConfigError, config_from_cli, load_config
from logfwd.config.loader import apply_service_overrides
from tests.configkit import cfg_plugins, write  # noqa: F401  (fixtures)


def test_one_liner_pipeline() -> None:
    cfg = config_from_cli(
        inputs=[("dummy", [("rate", "5"), ("tag", "t.${SUFFIX}")]), ("dummy", [("alias", "second")])],
        filters=[],
        outputs=[("stdout", [("match", "*"), ("format", "json_lines")]), ("null", [("match", "t.*")])],
        service={"flush": "0.2", "log_level": "debug"},
        parsers_files=[],
        env={"SUFFIX": "x"},
    )
    assert cfg.path is None and cfg.files == []
    assert cfg.service["flush"] == 0.2 and cfg.service["log_level"] == "debug" and cfg.service["grace"] == 5.0
    d0, d1 = cfg.inputs
    assert (d0.instance, d0.options["rate"], d0.options["tag"]) == ("dummy.0", 5, "t.x")
    assert d0.raw == [("name", "dummy"), ("rate", "5"), ("tag", "t.x")]
    assert d0.file == CLI_FILE and d0.line is None
    assert d1.instance == "second" and d1.options["tag"] == "dummy.1"
    assert [(o.instance, o.options["match"]) for o in cfg.outputs] == [("stdout.0", "*"), ("null.0", "t.*")]


def test_one_liner_with_parsers_file_relative_to_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cfg_plugins: None  # noqa: F811
) -> None:
    write(tmp_path, "p/parsers.conf", """
        [PARSER]
            Name   cli_json
            Format json
    """)
    monkeypatch.chdir(tmp_path)
    cfg = config_from_cli(
        [("cfgtest", [("parser", "cli_json")])], [("cfgtest", [("match", "*"), ("regex", "log x"),
                                                             ("regex", "log y")])],
        [("null", [("match", "*")])], {}, ["p/parsers.conf"], env={},
    )
    assert cfg.parsers.get("cli_json") is not None
    assert cfg.filters[0].options["regex"] == ["log x", "log y"]
    assert str(tmp_path / "p" / "parsers.conf") in cfg.files


def test_one_liner_errors_name_the_command_line(cfg_plugins: None) -> None:  # noqa: F811
    with pytest.raises(ConfigError) as ei:
        config_from_cli(
            [("dumy", []), ("dummy", [("rte", "5"), ("tag", "")])],
            [],
            [("cfgtest", [("match", "*")])],
            {"flush": "never"},
            ["/nonexistent/parsers.conf"],
            env={},
        )
    lines = str(ei.value).splitlines()
    assert all(line.startswith(f"{CLI_FILE}:") for line in lines), lines
    text = str(ei.value)
    assert "key 'flush': expected a duration" in text
    assert "key 'name': unknown input plugin 'dumy' (did you mean 'dummy'?)" in text
    assert "input dummy.0: unknown key 'rte' (did you mean 'Rate'?)" in text
    assert "key 'tag' has an empty value" in text
    assert "missing required key 'Index'" in text
    assert "parsers file '/nonexistent/parsers.conf' not found" in text


def test_command_line_service_options_override_the_file(tmp_path: Path) -> None:
    p = write(tmp_path, "m.conf", """
        [SERVICE]
            Flush     5
            Log_Level info
            HTTP_Port 2021
        [INPUT]
            Name dummy
    """)
    write(tmp_path, "extra.conf", """
        [PARSER]
            Name   extra_json
            Format json
    """)
    cfg = load_config(p, env={})
    cfg2 = apply_service_overrides(cfg, {"flush": "1", "log_level": "debug"}, [str(tmp_path / "extra.conf")],
                                   env={})
    assert cfg2.service["flush"] == 1.0 and cfg2.service["log_level"] == "debug"
    assert cfg2.service["http_port"] == 2021  # what the command line does not set stays
    assert cfg2.parsers.get("extra_json") is not None
    with pytest.raises(ConfigError, match=r"<command line>: \[SERVICE\]: key 'flush'"):
        load_config(p, env={}, service_overrides={"flush": "x"})


def test_dry_run_prints_every_issue_and_exits_1(tmp_path: Path) -> None:
    """What a user sees: ``logfwd --dry-run -c FILE`` lists the issues and nothing starts."""
    p = write(tmp_path, "bad.conf", """
        [INPUT]
            Name  dummy
            Rte   5
        [OUTPUT]
            Name  stdot
            Match *
    """)
    r = subprocess.run([sys.executable, "-m", "logfwd", "--dry-run", "-c", str(p)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert f"{p}:3: [INPUT] dummy.0: unknown key 'Rte' (did you mean 'Rate'?)" in r.stderr
    assert f"{p}:5: [OUTPUT]: key 'Name': unknown output plugin 'stdot' (did you mean 'stdout'?)" in r.stderr
    good = write(tmp_path, "good.conf", """
        [INPUT]
            Name  dummy
        [OUTPUT]
            Name  null
            Match *
    """)
    r = subprocess.run([sys.executable, "-m", "logfwd", "--dry-run", "-c", str(good)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
