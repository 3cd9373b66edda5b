"""Fuzzing: no parser raises on any input, and native kernels agree with Fluent Bit's expressions."""

from __future__ import annotations

import calendar
import datetime
import json
import re

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from logfwd import _fastparse as fp
from logfwd.config import default_parsers
from logfwd.parsers import NATIVE_REGEXES, PARSER_OPTIONS, Parser, _anchored
from logfwd.plugins.out_influxdb import _lineproto, lineproto
from logfwd.regex import compile_onigmo

REG = default_parsers()
NOW = 1_800_000_000 * 10**9
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# bytes biased towards the delimiters the parsers look at
ALPHABET = b"<>[]:= \t\"\\-.0123456789TZ+abcMarJnDecstdoutrF\r\n{}/,\xc3\xa9\xff\x00"
delimited = st.lists(st.sampled_from([bytes([c]) for c in ALPHABET]), max_size=80).map(b"".join)
any_line = st.one_of(st.binary(max_size=200), delimited)


def extra_parsers() -> list[Parser]:
    base = {o.key: o.default_value() for o in PARSER_OPTIONS}
    variants = [
        dict(format="logfmt", time_key="ts", time_format="%s.%L", types="a:integer b:float c:bool d:hex"),
        dict(format="ltsv", time_format="%d/%b/%Y:%H:%M:%S %z", time_offset="+0100"),
        dict(format="json", time_format="%Y-%m-%dT%H:%M:%S.%L%z", time_strict=False, time_system_timezone=True,
             decode_field_as=["json log try_next", "mysql_quoted log"], decode_field=["json msg"]),
        dict(format="regex", regex=r"(?<a>[^ ]*) (?<log>.*)", decode_field_as=["escaped log"], types="a:hex"),
        dict(format="tskv", time_key="t", time_format="%Y%m%d %H%M%S %p %j %a %Z"),
    ]
    return [Parser({**base, "name": f"v{i}", **v}) for i, v in enumerate(variants)]


PARSERS = [REG.get(n) for n in REG.names()] + extra_parsers()


@FAST
@given(batch=st.lists(any_line, max_size=8))
@example(batch=[b"", b"\n", b"<1>", b"{}", b'{"time":1}', b"\\", b"\xed\xa0\x80"])
def test_no_parser_raises_and_every_line_yields_a_record(batch: list[bytes]) -> None:
    for p in PARSERS:
        times, recs, failed = p.parse_lines(batch, NOW)
        assert len(times) == len(recs) == len(batch)
        assert 0 <= failed <= len(batch)
        assert all(type(t) is int for t in times)
        assert all(type(r) is dict for r in recs)
        # and the parser filter's entry point accepts the same values as str
        for v in batch[:2]:
            p.parse_record_field(v.decode("utf-8", "replace"))


@FAST
@given(value=any_line, fmt=st.text(alphabet="%YmdHMSLzbjsepITDFRZ :.-/aAnt", max_size=16))
def test_time_parser_never_raises(value: bytes, fmt: str) -> None:
    for strict in (True, False):
        r = fp.TimeParser(fmt, 3600, False, strict).parse(value, NOW)
        assert r is None or type(r) is int


_TIME_FORMATS = ["%Y-%m-%dT%H:%M:%S.%L%z", "%d/%b/%Y:%H:%M:%S %z", "%Y-%m-%d %H:%M:%S.%L", "%s.%L",
                 "%b %d %H:%M:%S", "%Y%m%d%H%M%S%L", "%H:%M:%S.%L %Y.%L", "%Y-%m-%dT%H:%M:%S%z"]
_TIME_VALUES = [b"2026-12-04T10:11:12.123456789Z", b"04/Dec/2026:10:11:12 +0100", b"2026-12-04 10:11:12.5",
                b"1700000000.25", b"Dec  4 10:11:12", b"20261204101112123", b"10:11:12.5 2026.25",
                b"2026-12-04T10:11:12+01:00", b"2026-12-04T10:11:12.000000000000123-0130 tail"]


@st.composite
def _similar_values(draw: st.DrawFn) -> list[bytes]:
    """Values as a log holds them: one shape, a few bytes changed from line to line."""
    base = draw(st.one_of(st.sampled_from(_TIME_VALUES), any_line))
    out = []
    for _ in range(draw(st.integers(min_value=1, max_value=8))):
        v = bytearray(base)
        for _ in range(draw(st.integers(min_value=0, max_value=3))):
            i = draw(st.integers(min_value=0, max_value=len(v)))
            c = draw(st.sampled_from(b"0123456789 .:Z+-x"))
            op = draw(st.sampled_from(["set", "insert", "delete"]))
            if op == "insert" or i == len(v):
                v.insert(i, c)
            elif op == "set":
                v[i] = c
            else:
                del v[i]
        out.append(bytes(v))
    return out


@FAST
@given(fmt=st.one_of(st.sampled_from(_TIME_FORMATS), st.text(alphabet="%YmdHMSLzbjsepITDFRZ :.-/aAnt", max_size=16)),
       values=_similar_values(), offset=st.sampled_from([0, 3600]), strict=st.booleans())
@example(fmt="%Y-%m-%dT%H:%M:%S.%L%z", values=[b"2026-12-04T10:11:12.1Z", b"2026-12-04T10:11:12.123456789012Z",
                                               b"2026-12-04T10:11:12.Z", b"2026-12-04T10:11:12.5+01:00"],
         offset=0, strict=True)
@example(fmt="%S%L", values=[b"1234", b"1256789", b"12"], offset=0, strict=False)
def test_time_parser_last_value_cache_changes_no_result(fmt: str, values: list[bytes], offset: int,
                                                        strict: bool) -> None:
    """One parser over a run of similar values gives what a fresh parser gives each value."""
    p = fp.TimeParser(fmt, offset, False, strict)
    for v in values:
        assert p.parse(v, NOW) == fp.TimeParser(fmt, offset, False, strict).parse(v, NOW), v


KERNELS = {
    "syslog-rfc3164": lambda v: fp.syslog_batch(v, True, True),
    "syslog-rfc3164-local": lambda v: fp.syslog_batch(v, False, True),
    "syslog-rfc5424": lambda v: fp.syslog5424_batch(v, True),
    "cri": lambda v: fp.cri_batch(v, True),
}
PATTERNS = {name: compile_onigmo(rx, re.M) for name, rx in NATIVE_REGEXES.items()}

# lines shaped like the formats, with random fields, so that matches (not only failures) are compared
tok = st.lists(st.sampled_from([b"a", b"1", b"-", b" ", b"  ", b"[", b"]", b":", b"x]", b"] ", b"\xc3\xa9", b"\xff",
                                b"stdout", b"stderr", b"\r"]), max_size=12).map(b"".join)
word = st.lists(st.sampled_from([b"a", b"1", b"-", b"]", b"[", b"\xc3\xa9", b"T", b":"]), min_size=1, max_size=4).map(
    b"".join)
rfc5424 = st.tuples(st.sampled_from([b"<13>1", b"<165>1", b"<1234567>1", b"<13>2"]), word, word, word,
                    st.sampled_from([b"-", b"123", b"1a", b""]), word,
                    st.sampled_from([b"-", b'[a b="c"]', b"[x]y", b"[", b"[]", b"[a] [b]"]), tok).map(b" ".join)
shaped = st.one_of(
    rfc5424,
    st.tuples(st.sampled_from([b"<13>", b"<1", b"<123456>", b"<>", b"<13>1 "]), tok, tok, tok).map(b" ".join),
    st.tuples(tok, st.sampled_from([b"stdout", b"stderr", b"stdin"]), tok, tok).map(b" ".join),
    any_line,
)


@settings(max_examples=400, deadline=None)
@given(batch=st.lists(shaped, min_size=1, max_size=6))
@example(batch=[b"<1>a  b c d", b"<1>a  b c", b"<13>1 t h i - m [x] y] z", b"<13>1 t h i 1 m - ",
                b"t stdout  ", b"<13>Jan  5 01:02:03 h su[x]: m"])
def test_native_kernels_agree_with_the_expressions(batch: list[bytes]) -> None:
    texts = fp.decode_lines(batch)
    for name, kernel in KERNELS.items():
        got = kernel(batch)
        want = fp.regex_batch(PATTERNS[name], texts, True, False)
        for g, w, line in zip(got, want, batch, strict=True):
            if g is fp.NEED_REGEX:
                assert b"\n" in line
                continue
            assert g == w, (name, line)


@settings(max_examples=200, deadline=None)
@example(batch=[b'1.2.3.4 - - [x] "GET" 200 2', b"", b'1.2.3.4 - - [x] "GET" 200 2'])
@example(batch=[b'1.2.3.4 - - [x', b'] "GET" 200 2'])
@given(batch=st.lists(st.one_of(shaped, st.sampled_from([
    b'1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" 200 2 "-" "ua"',
    b'1.2.3.4 - - [x] "GET" 200 2', b"2024-01-01T00:00:00.000+0000 I NETWORK [conn1] end 12ms"])),
    min_size=1, max_size=8))
def test_whole_buffer_regex_scan_equals_line_by_line(batch: list[bytes]) -> None:
    texts = fp.decode_lines(batch)
    pats = [REG.get(n)._regex for n in ("apache", "apache2", "nginx", "mongodb", "docker-daemon", "apache_error",
                                         "kube-custom")]
    pats += [PATTERNS[n] for n in ("syslog-rfc3164", "syslog-rfc5424", "cri")]
    for pat in pats:
        for skip in (True, False):
            want = fp.regex_batch(pat, texts, skip, False)
            assert fp.regex_batch(pat, texts, skip, True) == want, pat.pattern
            assert fp.regex_batch(pat, texts, skip, True, _anchored(pat)) == want, pat.pattern


@FAST
@given(ns=st.integers(min_value=-(10**18), max_value=2**63 - 1))
def test_iso_time_matches_datetime(ns: int) -> None:
    d = datetime.datetime(1970, 1, 1) + datetime.timedelta(microseconds=ns // 1000)
    assert fp.iso_time(ns) == d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


names = st.text(alphabet=st.sampled_from(list("ab \\,=\n\r\"é") + ["\ud800", "x"]), max_size=20)


@settings(max_examples=300, deadline=None)
@given(name=names)
@example(name="a\\")
@example(name="a\\\\ b\\,c")
def test_influx_escaping_kernels_match_lineproto(name: str) -> None:
    assert _lineproto.influx_escape(name, True) == lineproto.escape_measurement(name)
    assert _lineproto.influx_escape(name) == lineproto.escape_tag_value(name)
    assert _lineproto.influx_string(name) == lineproto.escape_string(name)


@settings(max_examples=200, deadline=None)
@given(y=st.integers(min_value=1, max_value=9999), mo=st.integers(min_value=1, max_value=12),
       d=st.integers(min_value=1, max_value=28), s=st.integers(min_value=0, max_value=86399),
       frac=st.integers(min_value=0, max_value=999_999_999))
def test_rfc3339_times_match_datetime_or_are_refused(y: int, mo: int, d: int, s: int, frac: int) -> None:
    text = f"{y:04d}-{mo:02d}-{d:02d}T{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}.{frac:09d}Z"
    got = fp.TimeParser("%Y-%m-%dT%H:%M:%S.%L%z").parse(text, NOW)
    want = (calendar.timegm((y, mo, d, 0, 0, 0)) + s) * 10**9 + frac
    assert got == (want if -9_200_000_000 <= want // 10**9 <= 9_200_000_000 else None)  # int64 ns, or refused


# JSON documents as users' lines hold them: nested values, wide and edge integers, floats in
# every notation, escapes and lone surrogates, duplicate keys, and spacing in odd places.
_json_int = st.one_of(st.integers(), st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1,
                                                      10**30, -(10**30)]))
_json_scalar = st.one_of(st.none(), st.booleans(), _json_int, st.floats(allow_nan=False, allow_infinity=False),
                         st.text(max_size=12))
_json_value = st.recursive(_json_scalar, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                 st.dictionaries(st.text(max_size=6), inner,
                                                                                 max_size=4)), max_leaves=12)


def _json_text(draw: st.DrawFn, v: object) -> str:
    """One JSON text for ``v`` with optional spacing, float notations and string escapes."""
    if isinstance(v, dict):
        sep = draw(st.sampled_from([",", ", ", " ,\t"]))
        items = [f"{_json_text(draw, k)}{draw(st.sampled_from([':', ' : ']))}{_json_text(draw, x)}"
                 for k, x in v.items()]
        dup = [f'{_json_text(draw, k)}:1' for k in list(v)[:1]] if draw(st.booleans()) else []
        return "{" + sep.join(dup + items) + "}"
    if isinstance(v, list):
        return "[" + ",".join(_json_text(draw, x) for x in v) + "]"
    if isinstance(v, float):
        return draw(st.sampled_from([repr(v), f"{v:e}", f"{v:.17E}", f"{v:.3f}"]))
    if isinstance(v, str):  # as written, or with \\uXXXX escapes for every non-ASCII character
        return json.dumps(v, ensure_ascii=draw(st.booleans()))
    return json.dumps(v)


@st.composite
def _json_line(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(any_line)  # not JSON, or not an object, or broken
    doc = draw(st.dictionaries(st.text(max_size=6), _json_value, max_size=5))
    text = _json_text(draw, doc)
    if kind == 1:  # broken or padded in ways that change which path takes the line
        text = draw(st.sampled_from([text[:-1], " " + text, text + " \r", text + text, text + " " + text,
                                     text.replace(",", ",\n", 1), '"\\ud800"'.join([text[:1], text[1:]]),
                                     text[:1] + '"\\ud800":1,' + text[1:] if len(text) > 2 else text]))
    return text.encode("utf-8", "surrogatepass")


@FAST
@given(lines=st.lists(_json_line(), max_size=12))
@example(lines=[b'{"a":1}', b'{"a":1', b'{"b":2} {"c":3}', b"", b'{"w":18446744073709551616}',
                b'{"n":[1,{"x":-9223372036854775809}]}', b'{"a":1}\r', b'{"s":"\\ud800"}', b'{"a":1}'])
def test_json_batch_gives_what_orjson_gives_line_by_line(lines: list[bytes]) -> None:
    """msgspec decodes runs of object lines together; every record must be orjson's for its line."""
    got, want = fp.json_batch(lines), fp.json_batch_orjson(lines)
    assert [repr(r) for r in got] == [repr(r) for r in want]  # repr: -0.0 and 0, 1.0 and 1 differ
