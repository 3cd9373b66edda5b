"""The tail test helpers themselves (``tests/tailkit.py``): a counter that cannot miss a gap."""

from __future__ import annotations

from pathlib import Path

from tests.tailkit import NumberedWriter, assert_exactly


def test_numbered_writer_and_counter(tmp_path: Path) -> None:
    w = NumberedWriter(tmp_path / "a.log", name="A")
    w.write(3)
    w.write(2)
    recs = [{"log": ln} for ln in (tmp_path / "a.log").read_text().splitlines()]
    assert_exactly(recs, {"A": 5})
    try:
        assert_exactly(recs[:-1], {"A": 5})
    except AssertionError:
        pass
    else:
        raise AssertionError("a missing line was not detected")
