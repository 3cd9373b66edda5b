"""The stdout, file and null outputs print what Fluent Bit prints, and fail safely."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from logfwd.batch import Chunk, Result
from logfwd.options import OptionError
from logfwd.plugin import ConfigValueError, find_plugin

from .pluginkit import flush_all, make_chunk, make_plugin

T0 = 1700000000_123456789  # 2023-11-14T22:13:20.123456789Z
T1 = 1700000001_000000000


def make(name: str, **raw: str) -> Any:
    return make_plugin(find_plugin("output", name), parsers=None, **raw)


def chunk(records: list[dict[str, Any]], tag: str = "app.log", times: list[int] | None = None) -> Chunk:
    return make_chunk(records, times, tag, t0=T0, step=1_000_000_000)


def flush(p: Any, c: Chunk) -> Result:
    return flush_all(p, c)[0]


RECORD = {"message": "hi \"you\"\n", "n": 1, "f": 0.5, "ok": True, "none": None, "nested": {"a": [1, "b"]}}

# ----------------------------------------------------------------- stdout


def test_stdout_default_is_fluent_bits_print(capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    p = make("stdout")
    res = flush(p, chunk([RECORD, {"message": "second"}]))
    assert res.delivered_all
    out = capfdbinary.readouterr().out.decode()
    assert out == (
        '[0] app.log: [[1700000000.123456789, {}], {"message"=>"hi \\"you\\"\\n", "n"=>1, "f"=>0.500000, '
        '"ok"=>true, "none"=>nil, "nested"=>{"a"=>[1, "b"]}}]\n'
        '[1] app.log: [[1700000001.123456789, {}], {"message"=>"second"}]\n'
    )


def test_stdout_json_lines_goes_to_the_real_stdout() -> None:
    """In a child process, so that the bytes are exactly what a pipe reader gets."""
    script = (
        "import trio\n"
        "from logfwd.batch import Chunk\n"
        "from logfwd.plugin import find_plugin\n"
        "from tests.pluginkit import make_plugin\n"
        "p = make_plugin(find_plugin('output', 'stdout'), parsers=None, Format='json_lines')\n"
        "print('before', flush=False)\n"
        "c = Chunk('t', times=[1700000000123456789, 1700000001000000000], records=[{'a': 1}, {'b': 'x'}])\n"
        "assert trio.run(p.flush, c).delivered_all\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60, check=True,
                         cwd=Path(__file__).resolve().parent.parent).stdout  # where tests.pluginkit imports from
    lines = out.decode().splitlines()
    assert lines[0] == "before"
    assert [json.loads(x) for x in lines[1:]] == [{"date": 1700000000.1234568, "a": 1},
                                                  {"date": 1700000001.0, "b": "x"}]


@pytest.mark.parametrize(
    "fmt,expected",
    [
        ("double", 1700000000.123456789),
        ("epoch", 1700000000),
        ("epoch_ms", 1700000000123),
        ("iso8601", "2023-11-14T22:13:20.123456Z"),
        ("java_sql_timestamp", "2023-11-14 22:13:20.123456"),
    ],
)
def test_stdout_json_date_formats(capfdbinary: pytest.CaptureFixture[bytes], fmt: str, expected: Any) -> None:
    p = make("stdout", Format="json_lines", json_date_key="ts", json_date_format=fmt)
    flush(p, chunk([{"a": 1}]))
    line = capfdbinary.readouterr().out.decode()
    assert line.endswith("\n") and line.count("\n") == 1
    obj = json.loads(line)
    assert list(obj) == ["ts", "a"]  # the date key comes first
    assert obj["ts"] == expected


def test_stdout_date_key_false_and_json_stream(capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    flush(make("stdout", Format="json_stream", json_date_key="false"), chunk([{"a": 1}, {"b": 2}]))
    assert capfdbinary.readouterr().out == b'{"a":1}{"b":2}'
    flush(make("stdout", Format="json"), chunk([{"a": 1}, {"b": b"raw"}]))
    out = json.loads(capfdbinary.readouterr().out)
    assert [{k: v for k, v in r.items() if k != "date"} for r in out] == [{"a": 1}, {"b": "raw"}]
    assert all("date" in r for r in out)


def test_stdout_rejects_unknown_format() -> None:
    with pytest.raises(OptionError, match="did you mean 'json_lines'"):
        make("stdout", Format="json_line")


def test_stdout_write_failure_retries() -> None:
    p = make("stdout", Format="json_lines")
    closed = io.BytesIO()
    closed.close()
    p.stream = closed
    res = flush(p, chunk([{"a": 1}]))
    assert res.retry_all


# ----------------------------------------------------------------- file


def test_file_default_format_is_out_file(tmp_path: Path) -> None:
    p = make("file", Path=str(tmp_path))
    assert flush(p, chunk([{"a": 1, "s": "x"}, {"b": [1, 2]}], tag="kube.var.log")).delivered_all
    # Appends: a second chunk adds to the same file.
    assert flush(p, chunk([{"c": None}], tag="kube.var.log", times=[T1])).delivered_all
    text = (tmp_path / "kube.var.log").read_text()
    assert text == (
        'kube.var.log: [1700000000.123456789, {"a":1,"s":"x"}]\n'
        'kube.var.log: [1700000001.123456789, {"b":[1,2]}]\n'
        'kube.var.log: [1700000001.000000000, {"c":null}]\n'
    )


def test_file_plain_and_file_option(tmp_path: Path) -> None:
    p = make("file", Path=str(tmp_path), File="out.json", Format="plain")
    flush(p, chunk([{"a": 1}, {"msg": "é"}], tag="ignored"))
    lines = (tmp_path / "out.json").read_text(encoding="utf-8").splitlines()
    assert [json.loads(x) for x in lines] == [{"a": 1}, {"msg": "é"}]
    assert not (tmp_path / "ignored").exists()


def test_file_csv_with_header_and_tab(tmp_path: Path) -> None:
    p = make("file", Path=str(tmp_path), File="x.csv", Format="csv", csv_column_names="on")
    flush(p, chunk([{"host": "a", "code": 200}, {"host": "b,c", "code": 500}]))
    flush(p, chunk([{"host": "d", "code": 404}]))  # no second header: the file is not empty
    rows = list(csv.reader((tmp_path / "x.csv").read_text().splitlines()))
    assert rows == [
        ["timestamp", "host", "code"],
        ["1700000000.123456789", "a", "200"],
        ["1700000001.123456789", "b,c", "500"],
        ["1700000000.123456789", "d", "404"],
    ]
    p = make("file", Path=str(tmp_path), File="y.tsv", Format="csv", Delimiter="tab")
    flush(p, chunk([{"host": "a", "code": 200}]))
    assert (tmp_path / "y.tsv").read_text() == '1700000000.123456789\t"a"\t200\n'


def test_file_ltsv(tmp_path: Path) -> None:
    p = make("file", Path=str(tmp_path), File="x.ltsv", Format="ltsv")
    flush(p, chunk([{"host": "a", "code": 200}]))
    assert (tmp_path / "x.ltsv").read_text() == '"time":1700000000.123457\t"host":"a"\t"code":200\n'
    p = make("file", Path=str(tmp_path), File="y.ltsv", Format="ltsv", Delimiter="space", Label_Delimiter="=")
    flush(p, chunk([{"k": "v"}]))
    assert (tmp_path / "y.ltsv").read_text() == '"time"=1700000000.123457 "k"="v"\n'


def test_file_template(tmp_path: Path) -> None:
    p = make("file", Path=str(tmp_path), File="t.txt", Format="template",
             Template="{time} used={Mem.used} host={host} {missing} {a{b} {unclosed")
    flush(p, chunk([{"Mem.used": 1045448, "host": "web-1", "b": "B"}]))
    assert (tmp_path / "t.txt").read_text() == "1700000000.123457 used=1045448 host=web-1 {missing} {aB {unclosed\n"
    # The default template is "{time} {message}".
    p = make("file", Path=str(tmp_path), File="d.txt", Format="template")
    flush(p, chunk([{"message": "hello"}]))
    assert (tmp_path / "d.txt").read_text() == "1700000000.123457 hello\n"


def test_file_mkdir(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    p = make("file", Path=str(target))
    res = flush(p, chunk([{"a": 1}]))
    assert res.retry_all and "No such file" in res.reason  # no Mkdir: retried, not lost
    p = make("file", Path=str(target), Mkdir="on")
    assert flush(p, chunk([{"a": 1}])).delivered_all
    assert (target / "app.log").exists()
    assert oct((target).stat().st_mode & 0o777) == oct(0o755 & ~_umask())


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_file_tag_cannot_escape_path(tmp_path: Path) -> None:
    inner = tmp_path / "inner"
    inner.mkdir()
    p = make("file", Path=str(inner))
    flush(p, chunk([{"a": 1}], tag="../../etc/evil"))
    assert os.listdir(inner) == [".._.._etc_evil"]
    assert not (tmp_path / "etc").exists()


def test_file_write_error_retries_and_leaves_no_partial_line(tmp_path: Path) -> None:
    # /dev/full fails every write with ENOSPC, as a full disk does.
    p = make("file", Path="/dev", File="full")
    res = flush(p, chunk([{"a": 1}]))
    assert res.retry_all and "space" in res.reason.lower()


def test_file_concurrent_workers_never_interleave(tmp_path: Path) -> None:
    p = make("file", Path=str(tmp_path), File="c.log", Format="plain")
    big = "x" * 5000

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for w in range(4):
                recs = [{"w": w, "i": i, "pad": big} for i in range(300)]
                nursery.start_soon(p.flush, chunk(recs))

    trio.run(main)
    lines = (tmp_path / "c.log").read_text().splitlines()
    assert len(lines) == 1200
    parsed = [json.loads(x) for x in lines]
    for w in range(4):  # each chunk is contiguous and in order
        idx = [k for k, r in enumerate(parsed) if r["w"] == w]
        assert idx == list(range(idx[0], idx[0] + 300))
        assert [parsed[k]["i"] for k in idx] == list(range(300))


def test_file_loop_stays_responsive_during_a_large_write(tmp_path: Path) -> None:
    p = make("file", Path=str(tmp_path), File="big.log", Format="plain")
    recs = [{"i": i, "msg": "m" * 200} for i in range(100_000)]
    gaps: list[float] = []

    async def ticker(done: trio.Event) -> None:
        last = time.monotonic()
        while not done.is_set():
            await trio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    async def main() -> None:
        done = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker, done)
            await p.flush(chunk(recs))
            done.set()

    trio.run(main)
    assert len(gaps) >= 3  # the loop ran while the thread formatted and wrote
    assert (tmp_path / "big.log").read_text().count("\n") == 100_000


def test_file_bad_delimiter_is_a_config_error() -> None:
    with pytest.raises(ConfigValueError) as e:
        make("file", Format="csv", Delimiter="pipe")
    assert e.value.key == "delimiter"
    assert make("file", Format="csv", Delimiter=";").delimiter == ";"


# ----------------------------------------------------------------- null


def test_null_accepts_everything() -> None:
    p = make("null")
    assert flush(p, chunk([{"a": 1}] * 1000)).delivered_all
