"""The package imports and its option types convert as Fluent Bit's do."""

import pytest

from logfwd.options import Option, OptionError, parse_bool, parse_duration, parse_size


def test_units() -> None:
    assert parse_size("5M") == 5 * 1024 * 1024
    assert parse_size("32k") == 32 * 1024
    assert parse_size("1G") == 1024**3
    assert parse_duration("5s") == 5.0
    assert parse_duration("500ms") == 0.5
    assert parse_duration("1m") == 60.0
    assert parse_bool("On") is True and parse_bool("off") is False
    with pytest.raises(OptionError):
        parse_size("five")


def test_choices_suggest() -> None:
    o = Option("format", choices=("json_lines", "plain"))
    with pytest.raises(OptionError, match="did you mean 'json_lines'"):
        o.convert("json_line")
