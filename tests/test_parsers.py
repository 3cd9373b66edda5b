"""Parsers as a user sees them: the shipped parsers file, Fluent Bit's options, records and times."""

from __future__ import annotations

import calendar
import os
import re
import time
from datetime import UTC, datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from logfwd import _fastparse as fp
from logfwd.config import default_parsers, load_config
from logfwd.parsers import NATIVE_REGEXES, PARSER_OPTIONS, Parser, ParserRegistry
from logfwd.plugin import ConfigValueError
from logfwd.plugins._es._bulk import ndjson_bulk
from logfwd.plugins._es.bulk import BulkSettings, build_bulk
from logfwd.regex import compile_onigmo

DATA = Path(__file__).parent / "data" / "parsers"
ROOT = Path(__file__).resolve().parent.parent
NOW = calendar.timegm((2026, 11, 27, 12, 0, 0)) * 10**9


def ns(*args: int, us: int = 0, tz: timezone = UTC) -> int:
    d = datetime(*args, tzinfo=tz)  # type: ignore[misc]
    return calendar.timegm(d.utctimetuple()) * 10**9 + us * 1000


def lines(name: str) -> list[bytes]:
    return (DATA / name).read_bytes().splitlines()


@pytest.fixture(scope="module")
def reg() -> ParserRegistry:
    return default_parsers()


def make(**opts: Any) -> Parser:
    """A parser from option values as the config layer passes them (defaults filled in)."""
    conv = {o.key: o.default_value() for o in PARSER_OPTIONS}
    conv.update({"name": "t"})
    for k, v in opts.items():
        o = next(o for o in PARSER_OPTIONS if o.key == k)
        conv[k] = [o.convert(x) for x in v] if o.multi else o.convert(v)
    return Parser(conv)


# ------------------------------------------------------------------ shipped file

def test_shipped_file_loads_through_the_config_layer_and_the_symlink() -> None:
    r = default_parsers()
    for name in ("docker", "cri", "json", "apache", "apache2", "apache_error", "nginx", "syslog-rfc3164",
                 "syslog-rfc3164-local", "syslog-rfc5424", "logfmt", "ltsv", "k8s-nginx-ingress", "mongodb"):
        assert r.get(name).name == name
    assert (ROOT / "conf" / "parsers.conf").resolve() == (ROOT / "logfwd" / "parsers.conf").resolve()
    # built-in multiline parsers come with the registry; unknown names are KeyError
    assert "docker" in r.multiline_names()
    with pytest.raises(KeyError):
        r.get("nope")
    with pytest.raises(KeyError):
        r.multiline("nope")


def test_native_kernels_are_chosen_only_for_the_shipped_expressions(reg: ParserRegistry) -> None:
    for name in ("syslog-rfc3164", "syslog-rfc3164-local", "syslog-rfc5424", "cri"):
        assert reg.get(name).native
    assert not reg.get("apache").native
    # same name, user's own expression: runs as written (here: captures only the priority)
    own = make(name="syslog-rfc5424", format="regex", regex=r"^<(?<pri>\d+)>")
    assert not own.native
    assert own.parse_lines([b"<13>1 2024-01-01T00:00:00Z h a 1 - - m"])[1] == [{"pri": "13"}]


# ------------------------------------------------------------------ formats

def test_apache_combined(reg: ParserRegistry) -> None:
    times, recs, failed = reg.get("apache").parse_lines(lines("apache.log"), NOW)
    assert failed == 0 and len(recs) == 20
    assert recs[0] == {"host": "172.102.186.233", "user": "-", "method": "POST", "path": "/", "code": "301",
                       "size": "32415", "referer": "https://www.google.com/",
                       "agent": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"}
    assert times[0] == ns(2026, 3, 14, 9, 26, 53)


def test_apache_line_without_referer_and_a_bad_line(reg: ParserRegistry) -> None:
    good = b'1.2.3.4 - frank [10/Oct/2000:13:55:36 -0700] "GET /a.gif HTTP/1.0" 200 2326'
    times, recs, failed = reg.get("apache").parse_lines([good, b"not an access log \xff line"], NOW)
    assert recs[0] == {"host": "1.2.3.4", "user": "frank", "method": "GET", "path": "/a.gif", "code": "200",
                       "size": "2326"}
    assert times[0] == ns(2000, 10, 10, 20, 55, 36)
    assert failed == 1
    assert recs[1] == {"log": "not an access log \ufffd line"} and times[1] == NOW


def test_docker_json_file(reg: ParserRegistry) -> None:
    times, recs, failed = reg.get("docker").parse_lines(lines("docker.log"), NOW)
    assert failed == 0
    assert recs[0]["stream"] == "stderr" and recs[0]["log"].endswith("connection refused\n")
    assert recs[0]["time"] == "2026-03-14T09:26:53.000806871Z"  # Time_Keep On
    assert times[0] == ns(2026, 3, 14, 9, 26, 53) + 806871
    out = reg.get("docker").parse_lines([b'{"log":"\\u00e9\\ttab\\n","stream":"stdout","time":"x","attrs":{"a":1}}',
                                         b'[1,2]', b'{"log":'], NOW)
    assert out[1][0] == {"log": "\u00e9\ttab\n", "stream": "stdout", "time": "x", "attrs": {"a": 1}}
    assert out[0][0] == NOW  # unparsable time: now, and the field stays
    assert out[2] == 2 and out[1][1] == {"log": "[1,2]"}


def test_json_time_key_removed_unless_kept() -> None:
    p = make(format="json", time_key="ts", time_format="%Y-%m-%dT%H:%M:%S%z")
    t, recs, _ = p.parse_lines([b'{"ts":"2024-02-03T04:05:06+01:00","a":1}', b'{"a":2}'], NOW)
    assert t == [ns(2024, 2, 3, 3, 5, 6), NOW]
    assert recs == [{"a": 1}, {"a": 2}]


def test_syslog_rfc3164(reg: ParserRegistry) -> None:
    times, recs, failed = reg.get("syslog-rfc3164").parse_lines(lines("syslog.log"), NOW)
    assert failed == 0
    assert recs[0] == {"pri": "30", "time": "Mar 14 09:26:53", "host": "api-08", "ident": "nginx", "pid": "59661",
                       "message": "GET /metrics checkout took 1120ms status=200 "
                                  "request_id=925c242ef3cee1957ee31a97ba93231a user_id=4724954"}
    assert times[0] == ns(2026, 3, 14, 9, 26, 53)
    cron = recs[20]
    assert cron == {"pri": "13", "time": "Jan  5 01:02:03", "host": "myhost", "ident": "CRON", "pid": "123",
                    "message": "(root) CMD (run-parts /etc/cron.hourly)"}
    assert recs[21]["message"] == "pam_unix(su:session): session opened"
    assert recs[23]["ident"] == "very.large.syslog.message.tag"


def test_rfc3164_year_rollover() -> None:
    p = make(format="syslog-rfc3164", time_format="%b %d %H:%M:%S", time_keep="on")
    jan2 = calendar.timegm((2027, 1, 2, 0, 0, 0)) * 10**9
    t, _, _ = p.parse_lines([b"<13>Dec 31 23:59:59 h app: bye", b"<13>Jan  1 00:00:01 h app: hi"], jan2)
    assert t == [ns(2026, 12, 31, 23, 59, 59), ns(2027, 1, 1, 0, 0, 1)]


def test_syslog_rfc5424(reg: ParserRegistry) -> None:
    times, recs, failed = reg.get("syslog-rfc5424").parse_lines(lines("rfc5424.log"), NOW)
    assert failed == 0
    assert recs[20] == {
        "pri": "165", "time": "2003-10-11T22:14:15.003Z", "host": "mymachine.example.com", "ident": "evntslog",
        "pid": "-", "msgid": "ID47",
        "extradata": '[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"]'
                     '[examplePriority@32473 class="high"]',
        "message": "An application event log entry..."}
    assert times[20] == ns(2003, 10, 11, 22, 14, 15, us=3000)
    assert recs[21]["extradata"] == "-" and times[21] == ns(2003, 10, 11, 20, 14, 15, us=3000)
    assert times[22] == ns(2003, 8, 24, 12, 14, 15, us=3)
    # structured data runs to the last "] " (Fluent Bit's greedy expression): same as the regex
    assert recs[23]["extradata"] == '[a b="c"] message with ] brackets [x]' and recs[23]["message"] == "inside"


def test_rfc5424_time_without_fraction(reg: ParserRegistry) -> None:
    t, recs, _ = reg.get("syslog-rfc5424").parse_lines([b"<13>1 2024-01-01T10:00:00+01:00 h a 1 - - m"], NOW)
    assert t == [ns(2024, 1, 1, 9, 0, 0)] and recs[0]["message"] == "m"


def test_cri(reg: ParserRegistry) -> None:
    times, recs, failed = reg.get("cri").parse_lines(lines("cri.log") + [b"2024-01-01 stdin F x"], NOW)
    # Fluent Bit's cri parser: field "message", no Time_Keep (the time moves to the record's timestamp)
    assert recs[0] == {"stream": "stdout", "logtag": "F", "message": '{"level":"info","msg":"started"}'}
    assert times[0] == ns(2024, 1, 15, 10, 20, 30) + 123456789
    assert recs[1]["message"] == "partial line " and times[1] == ns(2024, 1, 15, 9, 20, 30) + 200_000_000
    assert recs[2] == {"stream": "stdout", "logtag": "F"}  # empty message skipped (Skip_Empty_Values)
    assert failed == 1


def test_logfmt_and_ltsv(reg: ParserRegistry) -> None:
    _, recs, failed = reg.get("logfmt").parse_lines(lines("logfmt.log"), NOW)
    assert recs[0] == {"level": "info", "msg": 'hello "world"', "duration": "12ms", "ok": True}
    assert recs[1] == {"time": "2024-01-15T10:20:30Z", "user": "bob", "status": "200"}
    assert recs[2] == {"no": True, "pairs": True, "here?": True}
    assert failed == 0
    assert make(format="logfmt", logfmt_no_bare_keys="on").parse_lines([b"a=1 b"], NOW)[2] == 1
    _, recs, _ = reg.get("ltsv").parse_lines(lines("ltsv.log"), NOW)
    assert recs[0] == {"host": "127.0.0.1", "ident": "-", "time": "[10/Oct/2000:13:55:36 -0700]",
                       "req": "GET / HTTP/1.0", "status": "200"}
    assert make(format="tskv").parse_lines([b"tskv\ta=1\tb=x y"], NOW)[1] == [{"a": "1", "b": "x y"}]


# ------------------------------------------------------------------ options

def test_types_and_skip_empty_values() -> None:
    p = make(format="regex", regex=r"^(?<i>\S*) (?<f>\S*) (?<b>\S*) (?<h>\S*) (?<e>\S*)$",
             types="i:integer f:float b:bool h:hex e:integer")
    assert p.parse_lines([b"42 1.5 true ff "], NOW)[1] == [{"i": 42, "f": 1.5, "b": True, "h": 255}]
    assert p.parse_lines([b"x y z q w"], NOW)[1] == [{"i": "x", "f": "y", "b": "z", "h": "q", "e": "w"}]
    keep = make(format="regex", regex=r"^(?<a>\S*) (?<b>\S*)$", skip_empty_values="off")
    assert keep.parse_lines([b"x "], NOW)[1] == [{"a": "x", "b": ""}]


def test_time_offset_system_timezone_strict_and_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    line = [b'{"t":"2024-06-01 12:00:00"}']
    base = dict(format="json", time_key="t", time_format="%Y-%m-%d %H:%M:%S")
    assert make(**base).parse_lines(line, NOW)[0] == [ns(2024, 6, 1, 12)]
    assert make(**base, time_offset="+0200").parse_lines(line, NOW)[0] == [ns(2024, 6, 1, 10)]
    assert make(**base, time_offset="-06:00").parse_lines(line, NOW)[0] == [ns(2024, 6, 1, 18)]
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert make(**base, time_system_timezone="on").parse_lines(line, NOW)[0] == [ns(2024, 6, 1, 16)]
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    frac = dict(format="json", time_key="t", time_format="%Y-%m-%d %H:%M:%S.%L")
    assert make(**frac).parse_lines(line, NOW)[0] == [NOW]  # strict: the fraction is missing
    assert make(**frac, time_strict="off").parse_lines(line, NOW)[0] == [ns(2024, 6, 1, 12)]
    epoch = make(format="logfmt", time_key="ts", time_format="%s.%L")
    assert epoch.parse_lines([b"ts=1700000000.25 a=b"], NOW) == ([1700000000_250000000], [{"a": "b"}], 0)


def test_decoders() -> None:
    p = make(format="regex", regex=r"^(?<level>\w+) (?<log>.*)$", decode_field_as=["json log"])
    assert p.parse_lines([b'info {"a":1}', b"warn plain"], NOW)[1] == [
        {"level": "info", "log": {"a": 1}}, {"level": "warn", "log": "plain"}]
    p = make(format="regex", regex=r"^(?<level>\w+) (?<log>.*)$", decode_field=["json log"])
    assert p.parse_lines([b'info {"a":1}'], NOW)[1] == [{"level": "info", "log": '{"a":1}', "a": 1}]
    p = make(format="regex", regex=r"^(?<log>.*)$", decode_field_as=["json log try_next", "escaped log"])
    assert p.parse_lines([b"a\\tb \\u00e9"], NOW)[1] == [{"log": "a\tb \u00e9"}]


def test_invalid_definitions_name_the_key() -> None:
    cases = [
        (dict(format="regex"), "regex"),
        (dict(format="regex", regex="(?<a>x"), "regex"),
        (dict(format="regex", regex="abc"), "regex"),
        (dict(format="json", types="a:integer"), None),  # accepted; not applied to json (as Fluent Bit)
        (dict(format="regex", regex="(?<a>x)", types="a:number"), "types"),
        (dict(format="regex", regex="(?<a>x)", decode_field_as=["base64 a"]), "decode_field_as"),
        (dict(format="json", time_format="%Y", time_offset="2h"), "time_offset"),
    ]
    for opts, key in cases:
        if key is None:
            make(**opts)
            continue
        with pytest.raises(ConfigValueError) as e:
            make(**opts)
        assert e.value.key == key


def test_fluent_bit_parsers_file_loads_unchanged(tmp_path: Path) -> None:
    """A parsers file as Fluent Bit users have them (decoder lines, /regex/ delimiters, comments)."""

    (tmp_path / "parsers.conf").write_text((DATA / "fluentbit-parsers.conf").read_text())
    (tmp_path / "fluent-bit.conf").write_text(
        "[SERVICE]\n    Parsers_File parsers.conf\n[INPUT]\n    Name dummy\n[OUTPUT]\n    Name null\n    Match *\n")
    cfg = load_config(str(tmp_path / "fluent-bit.conf"))
    docker = cfg.parsers.get("docker")
    t, recs, _ = docker.parse_lines([b'{"log":"a \\"q\\"\\n","stream":"stdout","time":"2024-01-01T00:00:00.5Z"}'],
                                    NOW)
    assert recs == [{"log": 'a "q"\n', "stream": "stdout", "time": "2024-01-01T00:00:00.5Z"}]
    assert t == [ns(2024, 1, 1) + 500_000_000]
    s = cfg.parsers.get("my-syslog")
    assert s.native  # /.../-delimited shipped expression
    assert s.parse_lines([b"<13>Mar  1 10:00:00 h app[1]: m"], NOW)[1][0]["message"] == "m"
    assert cfg.parsers.get("k8s").parse_lines([b"2024-01-01T00:00:00Z stderr F x"], NOW)[1] == [
        {"stream": "stderr", "logtag": "F", "log": "x"}]


def test_parse_record_field_api(reg: ParserRegistry) -> None:
    p = reg.get("cri")
    t, rec = p.parse_record_field("2024-01-01T00:00:00.0Z stdout F hi")  # type: ignore[misc]
    assert t == ns(2024, 1, 1) and rec["message"] == "hi"
    assert p.parse_record_field("nothing") is None
    assert reg.get("logfmt").parse_record_field(b"a=1") == (None, {"a": "1"})


def test_native_kernels_equal_the_expressions_on_the_samples() -> None:
    kernels = {"syslog-rfc3164": lambda v: fp.syslog_batch(v, True, True),
               "syslog-rfc3164-local": lambda v: fp.syslog_batch(v, False, True),
               "syslog-rfc5424": lambda v: fp.syslog5424_batch(v, True),
               "cri": lambda v: fp.cri_batch(v, True)}
    sample = lines("syslog.log") + lines("rfc5424.log") + lines("cri.log")
    for name, kernel in kernels.items():
        pat = compile_onigmo(NATIVE_REGEXES[name], re.M)
        expected = fp.regex_batch(pat, fp.decode_lines(sample), True, False)
        assert kernel(sample) == expected, name


def test_regex_whole_buffer_scan_equals_line_by_line(reg: ParserRegistry) -> None:
    sample = fp.decode_lines(lines("apache.log") + lines("syslog.log") + [b"", b"x"] + lines("apache.log")[:3])
    for name in ("apache", "apache2", "nginx", "mongodb", "docker-daemon", "apache_error"):
        pat = reg.get(name)._regex
        want = fp.regex_batch(pat, sample, True, False)
        assert fp.regex_batch(pat, sample, True, True) == want, name
        assert fp.regex_batch(pat, sample, True, True, reg.get(name)._anchored) == want, name  # findall scan
        assert fp.regex_batch(pat, sample[-3:], True, True, reg.get(name)._anchored) == want[-3:], name


def test_failed_lines_are_counted_and_kept_raw(reg: ParserRegistry) -> None:
    bad = [b"", b"\xff\xfe", b"{", b"<13>", os.urandom(64).replace(b"\n", b" ")]
    for name in reg.names():
        times, recs, failed = reg.get(name).parse_lines(bad, NOW)
        assert len(times) == len(recs) == len(bad)
        assert failed == sum(1 for r in recs if set(r) == {"log"} and r["log"] in
                             [b.decode("utf-8", "replace") for b in bad])


# ------------------------------------------------------------------ serializer kernels (for outputs)

def test_ndjson_bulk_kernel_matches_the_es_bulk_builder(reg: ParserRegistry) -> None:


    times, recs, _ = reg.get("docker").parse_lines(lines("docker.log"), NOW)
    recs += [{}, {"@timestamp": "mine", "a": 1}, {"b": b"\xff bytes"}]
    times += [-1, 0, NOW]
    want = build_bulk(BulkSettings(), "tag", times, recs)
    act = orjson.dumps({"create": {"_index": "fluent-bit"}})
    body, positions, failed = ndjson_bulk(times, recs, act, "@timestamp",
                                          default=lambda o: o.decode("utf-8", "replace"))
    assert body == want.body and positions == want.positions and failed == []
    body, positions, failed = ndjson_bulk([1, 2], [{"x": object()}, "str"], [act, act], "t")
    assert body == b"" and positions == [] and [i for i, _ in failed] == [0, 1]
    assert fp.iso_time(1_700_000_000_123_456_789, True) == "2023-11-14T22:13:20.123456789Z"
