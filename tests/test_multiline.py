"""Multiline engine: built-in and custom parsers, docker/cri joining, offsets, splits."""

from __future__ import annotations

import time as _time

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logfwd.batch import AckHandle, Batch
from logfwd.multiline import MultilineParser, builtin_multiline, group, rfc3339_ns
from logfwd.plugin import ConfigValueError
from tests.pluginkit import make_filter as make

BUILTIN = builtin_multiline()

# The example from Fluent Bit's multiline filter documentation: plain lines, a Java
# trace matched by a custom parser, and a Go panic matched by the built-in.
DOC_LOG = """single line...
Dec 14 06:41:08 Exception in thread "main" java.lang.RuntimeException: Something has gone wrong, aborting!
    at com.myproject.module.MyProject.badMethod(MyProject.java:22)
    at com.myproject.module.MyProject.oneMoreMethod(MyProject.java:18)
    at com.myproject.module.MyProject.main(MyProject.java:6)
another line...
panic: my panic

goroutine 4 [running]:
panic(0x45cb40, 0x47ad70)
  /usr/local/go/src/runtime/panic.go:542 +0x46c fp=0xc42003f7b8 sp=0xc42003f710 pc=0x422f7c
main.main.func1(0xc420024120)
  foo.go:6 +0x39 fp=0xc42003f7d8 sp=0xc42003f7b8 pc=0x451339
runtime.goexit()
  /usr/local/go/src/runtime/asm_amd64.s:2337 +0x1 fp=0xc42003f7e0 sp=0xc42003f7d8 pc=0x44b4d1
created by main.main
  foo.go:5 +0x58

goroutine 1 [chan receive]:
runtime.gopark(0x4739b8, 0xc420024178, 0x46fcd7, 0xc, 0xc420028e17, 0x3)
  /usr/local/go/src/runtime/proc.go:280 +0x12c fp=0xc420053e30 sp=0xc420053e00 pc=0x42503c
one more line, no multiline""".split("\n")

CUSTOM = {
    "name": "multiline-regex-test",
    "type": "regex",
    "flush_timeout": 1000,
    "rule": [
        '"start_state"   "/([a-zA-Z]+ \\d+ \\d+\\:\\d+\\:\\d+)(.*)/"  "cont"',
        '"cont"          "/^\\s+at.*/"                     "cont"',
    ],
}


def run(parser: MultilineParser, lines: list[str], flush: bool = True) -> list[str]:
    s = parser.stream()
    _, recs, _ = s.feed(list(range(len(lines))), [{"log": x} for x in lines])
    if flush:
        recs += s.flush()[1]
    return [r["log"] for r in recs]


def test_custom_parser_from_docs_and_go_builtin_in_one_group() -> None:
    custom = MultilineParser.from_config(CUSTOM)
    assert custom.flush_timeout == 1.0
    out = run(group([BUILTIN["go"], custom]), DOC_LOG)
    assert out[0] == "single line..."
    assert out[1] == "\n".join(DOC_LOG[1:5])
    assert out[2] == "another line..."
    assert out[3] == "\n".join(DOC_LOG[6:-1])
    assert out[4] == "one more line, no multiline"
    assert len(out) == 5


def test_raw_lines_end_with_newline_like_fluent_bit_tail() -> None:
    """Tail's raw lines through parsers without key_content: every record ends with "\\n".

    Fluent Bit's own output for its documentation example (fluent-bit issue #8914):
    'single line...\\n', the Java trace "\\n"-joined plus a final "\\n", and so on.
    """
    g = group([BUILTIN["go"], MultilineParser.from_config(CUSTOM)])
    s = g.stream()
    _, recs, _ = s.feed_lines([0] * len(DOC_LOG), [x.encode() for x in DOC_LOG])
    out = [r["log"] for r in recs + s.flush()[1]]
    assert out == ["single line...\n", "\n".join(DOC_LOG[1:5]) + "\n", "another line...\n",
                   "\n".join(DOC_LOG[6:-1]) + "\n", "one more line, no multiline\n"]
    # The same lines as records (the multiline filter) are joined but not terminated.
    assert run(g, DOC_LOG)[0] == "single line..."


def test_raw_lines_with_key_content_configured_are_not_terminated() -> None:
    ml = MultilineParser.from_config({**CUSTOM, "key_content": "log"})
    s = ml.stream()
    lines = DOC_LOG[1:6]
    _, recs, _ = s.feed_lines([0] * len(lines), [x.encode() for x in lines])
    assert [r["log"] for r in recs + s.flush()[1]] == ["\n".join(DOC_LOG[1:5]), "another line..."]


def test_endswith_raw_lines_join_with_newline() -> None:
    ml = MultilineParser.from_config({"name": "bs", "type": "endswith", "match_string": "\\", "negate": True})
    s = ml.stream()
    _, recs, _ = s.feed_lines([0] * 3, [b"a \\", b"b", b"c"])
    assert [r["log"] for r in recs] == ["a \\\nb\n", "c\n"]


def test_group_keeps_a_held_docker_piece_while_cri_lines_pass() -> None:
    """Fluent Bit 4+: a parser that does not take a line keeps what it holds."""
    s = group([BUILTIN["docker"], BUILTIN["cri"]]).stream()
    lines = [docker_line("bb"), b"2024-05-01T10:00:00Z stdout F x", docker_line("cc\n")]
    _, r, _ = s.feed_lines([0] * 3, lines)
    assert [x["log"] for x in r] == ["x", "bbcc\n"]


def test_from_config_accepts_tuples_and_yaml_maps() -> None:
    a = MultilineParser.from_config({"name": "a", "rule": [("start_state", r"/^\d/", "cont"), ("cont", "/^ /", "cont")]})
    b = MultilineParser.from_config(
        {"name": "b", "rule": [{"state": "start_state", "regex": r"/^\d/", "next_state": "cont"},
                               {"state": "cont", "regex": "/^ /", "next_state": "cont"}]}
    )
    lines = ["1 x", " y", " z", "2 w", "free"]
    assert run(a, lines) == run(b, lines) == ["1 x\n y\n z", "2 w", "free"]


def test_python_traceback_interleaved() -> None:
    lines = [
        "starting",
        "Traceback (most recent call last):",
        '  File "app.py", line 3, in <module>',
        "    main()",
        '  File "app.py", line 2, in main',
        "    raise ValueError('bad')",
        "ValueError: bad",
        "next request",
        "Traceback (most recent call last):",
        '  File "b.py", line 1, in <module>',
        "    x",
        "NameError: name 'x' is not defined",
    ]
    s = BUILTIN["python"].stream()
    _, recs, _ = s.feed([0] * len(lines), [{"log": x} for x in lines])
    # The exception line completes a traceback at once: nothing waits for a timeout.
    assert [r["log"] for r in recs] == ["starting", "\n".join(lines[1:7]), "next request", "\n".join(lines[8:])]
    assert s.pending_since is None


def test_java_builtin_with_caused_by() -> None:
    lines = [
        "INFO started",
        "Exception in thread \"main\" java.lang.IllegalStateException: boom",
        "\tat com.example.A.run(A.java:10)",
        "\tat com.example.Main.main(Main.java:5)",
        "Caused by: java.io.IOException: disk",
        "\tat com.example.B.io(B.java:3)",
        "\t... 2 more",
        "INFO recovered",
    ]
    assert run(BUILTIN["java"], lines) == ["INFO started", "\n".join(lines[1:7]), "INFO recovered"]


def test_ruby_builtin() -> None:
    lines = [
        "hello",
        "app.rb:3:in `divide': divided by 0 (ZeroDivisionError)",
        "\tfrom app.rb:3:in `/'",
        "\tfrom app.rb:7:in `<main>'",
        "bye",
    ]
    assert run(BUILTIN["ruby"], lines) == ["hello", "\n".join(lines[1:4]), "bye"]


def test_merged_record_keeps_first_line_fields_and_time() -> None:
    s = BUILTIN["python"].stream()
    recs = [
        {"log": "Traceback (most recent call last):", "pod": "a"},
        {"log": '  File "x", line 1, in y', "pod": "b"},
        {"log": "    z()", "pod": "c"},
    ]
    t, r, _ = s.feed([100, 200, 300], recs)
    assert r == []
    t, r, _ = s.flush()
    assert t == [100]
    assert r == [{"log": "Traceback (most recent call last):\n  File \"x\", line 1, in y\n    z()", "pod": "a"}]


def docker_line(log: str, stream: str = "stdout", ts: str = "2024-05-01T10:00:00.123456789Z") -> bytes:
    return orjson.dumps({"log": log, "stream": stream, "time": ts})


def test_docker_16k_partials_merge_per_stream() -> None:
    big = "".join(chr(ord("a") + i % 26) for i in range(40000)) + "\n"
    pieces = [big[i : i + 16384] for i in range(0, len(big), 16384)]
    assert len(pieces) == 3 and not pieces[0].endswith("\n")
    err = "error: " + "x" * 20000 + "\n"
    lines = [
        docker_line(pieces[0]),
        docker_line(err[:16384], "stderr"),
        docker_line(pieces[1]),
        docker_line("short line\n"),  # a complete stdout line in the middle: Docker never does
        docker_line(err[16384:], "stderr", "2024-05-01T10:00:01Z"),
        docker_line(pieces[2][:-1]),  # the end of the line has not been written yet
    ]
    s = BUILTIN["docker"].stream()
    t, r, _ = s.feed_lines([0] * len(lines), lines)
    by_stream = {(x["stream"], x["log"][:5]) for x in r}
    logs = [x["log"] for x in r]
    assert err in logs
    assert r[0]["time"] == "2024-05-01T10:00:00.123456789Z"  # time is kept, as Fluent Bit's docker parser
    assert t[0] == rfc3339_ns("2024-05-01T10:00:00.123456789Z")
    assert ("stderr", "error") in by_stream
    # stdout: the pieces before "short line" join with it; the last piece waits for its end.
    assert pieces[0] + pieces[1] + "short line\n" in logs
    assert s.pending_since is not None
    _, rest, _ = s.flush()
    assert [x["log"] for x in rest] == [pieces[2][:-1]]


def test_docker_clean_split() -> None:
    big = "y" * 50000 + "\n"
    pieces = [big[i : i + 16384] for i in range(0, len(big), 16384)]
    s = BUILTIN["docker"].stream()
    t, r, o = s.feed_lines([0] * len(pieces), [docker_line(p) for p in pieces], [10, 20, 30, 40])
    assert [x["log"] for x in r] == [big]
    assert o == [40]


def test_docker_accepts_records_and_keeps_garbage() -> None:
    s = BUILTIN["docker"].stream()
    _, r, _ = s.feed([1, 2], [{"log": docker_line("ok\n").decode()}, {"log": "not json"}])
    assert r[0]["log"] == "ok\n" and r[1] == {"log": "not json"}
    assert s.unparsed == 1


def test_cri_partial_partial_final() -> None:
    lines = [
        "2024-05-01T10:00:00.000000001Z stdout P hello ",
        "2024-05-01T10:00:00.000000002Z stderr F err line",
        "2024-05-01T10:00:00.000000003Z stdout P big ",
        "2024-05-01T10:00:00.000000004Z stdout F world",
        "2024-05-01T10:00:01+02:00 stdout F tz",
    ]
    s = BUILTIN["cri"].stream()
    t, r, o = s.feed_lines([0] * 5, lines, [1, 2, 3, 4, 5])
    assert [x["log"] for x in r] == ["err line", "hello big world", "tz"]
    assert r[1]["stream"] == "stdout" and r[1]["time"] == "2024-05-01T10:00:00.000000001Z"
    assert t[1] == rfc3339_ns("2024-05-01T10:00:00.000000001Z")
    assert t[2] == rfc3339_ns("2024-05-01T08:00:01Z")
    # The stderr line completed while a stdout piece (which started at offset 0) was held.
    assert o == [0, 4, 5]


def test_group_docker_cri_detects_per_line_and_keeps_unknown() -> None:
    g = group([BUILTIN["docker"], BUILTIN["cri"]])
    s = g.stream()
    lines = [
        "2024-05-01T10:00:00Z stdout P a",
        "2024-05-01T10:00:00Z stdout F b",
        docker_line("c\n").decode(),
        "plain text",
    ]
    _, r, _ = s.feed_lines([0] * 4, lines)
    assert [x["log"] for x in r] == ["ab", "c\n", "plain text"]
    assert r[1]["stream"] == "stdout" and r[2] == {"log": "plain text"}


def test_offsets_never_skip_held_lines_and_never_decrease() -> None:
    s = BUILTIN["docker"].stream(start_offset=1000)
    lines = [
        docker_line("part-a", "stdout"),  # held, starts at 1000
        docker_line("err\n", "stderr"),  # complete, but the checkpoint must stay at 1000
        docker_line("part-b\n", "stdout"),
        docker_line("more\n", "stderr"),
    ]
    _, r, o = s.feed_lines([0] * 4, lines, [1100, 1200, 1300, 1400])
    assert [x["log"] for x in r] == ["err\n", "part-apart-b\n", "more\n"]
    assert o == [1000, 1300, 1400]
    assert s.safe_offset == 1400


def test_pending_since_and_flush_expired() -> None:
    p = MultilineParser.from_config(CUSTOM)
    s = p.stream()
    assert s.pending_since is None
    _, r, _ = s.feed([5], [{"log": "Dec 14 06:41:08 Exception: x"}], [10])
    assert r == [] and s.pending_since is not None and s.pending == 1
    assert s.flush_expired(now=s.pending_since + 0.5) == ([], [], [])
    t, r, o = s.flush_expired(now=s.pending_since + 1.0)
    assert (t, [x["log"] for x in r], o) == ([5], ["Dec 14 06:41:08 Exception: x"], [10])
    assert s.pending_since is None
    # A continuation arriving after the timeout flush is not lost: it becomes its own record.
    _, r, _ = s.feed([6], [{"log": "    at a.b(C.java:1)"}], [20])
    assert r == []
    assert [x["log"] for x in s.flush()[1]] == ["    at a.b(C.java:1)"]


def test_records_without_content_pass_through_in_order() -> None:
    s = BUILTIN["java"].stream()
    _, r, _ = s.feed([1, 2, 3], [{"log": "java.lang.Error: x"}, {"msg": "no log key"}, {"log": 5}])
    assert r == [{"log": "java.lang.Error: x"}, {"msg": "no log key"}, {"log": 5}]


def test_max_lines_and_buffer_limit_emit_instead_of_dropping() -> None:
    s = MultilineParser.from_config(CUSTOM).stream(max_lines=3)
    lines = ["Dec 14 06:41:08 E"] + [f"    at f{i}" for i in range(5)]
    _, r, _ = s.feed([0] * 6, [{"log": x} for x in lines])
    r += s.flush()[1]
    assert "\n".join(x["log"] for x in r) == "\n".join(lines)
    assert len(r) == 2


@pytest.mark.parametrize(
    "options, key",
    [
        ({"name": "x", "type": "regex"}, "rule"),
        ({"name": "x", "rule": ['"cont" "/a/" "cont"']}, "rule"),
        ({"name": "x", "rule": ['"start_state" "/a/"']}, "rule"),
        ({"name": "x", "rule": ['"start_state" "/(unclosed/" "x"']}, "rule"),
        ({"name": "x", "type": "endswith"}, "match_string"),
        ({"name": "x", "parser": "nope", "rule": ['"start_state" "/a/" "x"']}, "parser"),
    ],
)
def test_invalid_definitions_name_the_key(options: dict, key: str) -> None:
    with pytest.raises(ConfigValueError) as e:
        MultilineParser.from_config(options)
    assert e.value.key == key


# A mixed stream: Java traces, Python tracebacks, docker partials are covered above;
# here: any way of cutting the input into feed() calls gives the same records and offsets.
MIXED = (
    ["boot"]
    + DOC_LOG
    + ["Traceback (most recent call last):", '  File "a", line 1, in b', "    c()", "KeyError: 'k'"]
    + ["tail line"]
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(MIXED)), max_size=8))
def test_any_split_gives_the_same_records(cuts: list[int]) -> None:
    parser = group([BUILTIN["go"], BUILTIN["python"], MultilineParser.from_config(CUSTOM)])
    offsets = [10 * (i + 1) for i in range(len(MIXED))]

    def whole() -> tuple[list, list]:
        s = parser.stream()
        _, r, o = s.feed(list(range(len(MIXED))), [{"log": x} for x in MIXED], offsets)
        _, r2, o2 = s.flush()
        return r + r2, o + o2

    s = parser.stream()
    recs: list = []
    offs: list = []
    bounds = sorted(set([0, len(MIXED), *cuts]))
    for a, b in zip(bounds, bounds[1:], strict=False):
        _, r, o = s.feed(list(range(a, b)), [{"log": x} for x in MIXED[a:b]], offsets[a:b])
        recs += r
        offs += o
    _, r, o = s.flush()
    assert (recs + r, offs + o) == whole()
    assert offs + o == sorted(offs + o)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=12), max_size=6), st.integers(min_value=1, max_value=7))
def test_any_split_of_docker_partials(cuts: list[int], seed: int) -> None:
    logs = []
    for i in range(12):
        stream = "stderr" if (i * seed) % 3 == 0 else "stdout"
        logs.append(docker_line(f"{i}-" + ("\n" if (i + seed) % 4 == 0 else ""), stream))
    offsets = list(range(100, 100 + 12 * 7, 7))

    def feed_all(parts: list[tuple[int, int]]) -> tuple[list, list]:
        s = BUILTIN["docker"].stream(start_offset=93)
        r_all: list = []
        o_all: list = []
        for a, b in parts:
            _, r, o = s.feed_lines([0] * (b - a), logs[a:b], offsets[a:b])
            r_all += r
            o_all += o
        _, r, o = s.flush()
        return r_all + r, o_all + o

    bounds = sorted(set([0, 12, *cuts]))
    split = feed_all(list(zip(bounds, bounds[1:], strict=False)))
    assert split == feed_all([(0, 12)])
    joined = "".join(x["log"] for x in split[0])
    assert sorted(joined.replace("\n", "").split("-")[:-1]) == sorted(str(i) for i in range(12))
    assert split[1] == sorted(split[1])


# ------------------------------------------------------------------ the multiline filter


JAVA = [
    "Exception in thread \"main\" java.lang.IllegalStateException: boom",
    "\tat com.example.A.run(A.java:10)",
    "\tat com.example.Main.main(Main.java:5)",
]


def fbatch(tag: str, lines: list[str], first_key: int = 0) -> Batch:
    return Batch(tag, list(range(len(lines))), [{"log": x, "n": i} for i, x in enumerate(lines)], AckHandle(),
                 keys=[f"k{first_key + i}" for i in range(len(lines))])


def test_filter_joins_across_batches_and_holds_the_ack() -> None:
    f = make("multiline", [("multiline.parser", "java, python"), ("multiline.key_content", "log")])
    b1 = fbatch("app", ["hello"] + JAVA[:2])
    h1 = b1.ack
    out1 = f.filter(b1)
    assert out1 is not None and [r["log"] for r in out1.records] == ["hello"] and out1.keys == ["k0"]
    h1.done()  # the emitter's reference after routing
    assert not h1.completed  # two lines of b1 are held here
    b2 = fbatch("app", [JAVA[2], "bye"], first_key=3)
    h2 = b2.ack
    out2 = f.filter(b2)
    assert out2 is not None and out2.ack is h2
    assert [r["log"] for r in out2.records] == ["\n".join(JAVA), "bye"]
    assert out2.records[0]["n"] == 1  # first line's other fields
    assert out2.keys == ["k3", "k4"]
    h2.add()  # an output takes the batch
    h2.done()  # emitter
    assert not h1.completed and not h2.completed
    h2.done()  # the output delivered it: now b1's input may be acknowledged too
    assert h2.completed and h1.completed


def test_filter_streams_are_per_tag() -> None:
    f = make("multiline", [("multiline.parser", "java")])
    f.filter(fbatch("a", JAVA[:1]))
    f.filter(fbatch("b", ["unrelated"]))
    out = f.filter(fbatch("a", JAVA[1:]))
    assert out is None  # still open: the trace may go on
    flushed = f.flush_pending(force=True)
    assert [(b.tag, [r["log"] for r in b.records]) for b in flushed] == [("a", ["\n".join(JAVA)])]


def test_flush_pending_after_flush_ms_releases_held_input() -> None:
    f = make("multiline", [("multiline.parser", "java"), ("flush_ms", "20")])
    b = fbatch("app", JAVA)
    h = b.ack
    assert f.filter(b) is None
    h.done()
    assert f.flush_pending() == []  # not old enough yet
    _time.sleep(0.03)
    out = f.flush_pending()
    assert len(out) == 1 and [r["log"] for r in out[0].records] == ["\n".join(JAVA)]
    assert out[0].keys == ["k2"]
    assert not h.completed
    out[0].ack.done()  # routed (no output matched): the held input completes with it
    assert h.completed
    assert f.flush_pending(force=True) == []


def test_buffer_off_works_per_batch() -> None:
    f = make("multiline", [("multiline.parser", "java"), ("buffer", "off")])
    out = f.filter(fbatch("app", JAVA[:2]))
    assert out is not None and [r["log"] for r in out.records] == ["\n".join(JAVA[:2])]
    out = f.filter(fbatch("app", JAVA[2:]))
    assert out is not None and [r["log"] for r in out.records] == [JAVA[2]]
    assert f.metrics["drop_records"] == 1


def test_partial_message_mode() -> None:
    f = make("multiline", [("mode", "partial_message"), ("multiline.key_content", "log")])
    recs = [
        {"log": "one ", "partial_message": "true", "partial_id": "p1", "partial_ordinal": "1", "container": "c"},
        {"log": "solo", "container": "c"},
        {"log": "two ", "partial_message": "true", "partial_id": "p1", "partial_ordinal": "2", "container": "c"},
    ]
    out = f.filter(Batch("t", [1, 2, 3], recs, AckHandle()))
    assert out is not None and out.records == [{"log": "solo", "container": "c"}]
    last = {"log": "three", "partial_message": "true", "partial_id": "p1", "partial_last": "true", "container": "c"}
    out = f.filter(Batch("t", [4], [last], AckHandle()))
    assert out is not None and out.records == [{"container": "c", "log": "one two three"}]
    assert out.times == [1]


def test_custom_parser_from_registry_like_object() -> None:
    custom = MultilineParser.from_config(CUSTOM)

    class Registry:
        def multiline(self, name: str) -> MultilineParser:
            return {"multiline-regex-test": custom, **BUILTIN}[name]

        def multiline_names(self) -> list[str]:
            return ["multiline-regex-test", *BUILTIN]

    f = make("multiline", [("multiline.parser", "go, multiline-regex-test"), ("multiline.key_content", "msg")],
             parsers=Registry())
    recs = [{"msg": x} for x in DOC_LOG]
    out = f.filter(Batch("t", list(range(len(recs))), recs, AckHandle()))
    assert out is not None
    assert [r["msg"] for r in out.records][:3] == ["single line...", "\n".join(DOC_LOG[1:5]), "another line..."]


@pytest.mark.parametrize(
    "entries, key",
    [
        ([("multiline.parser", "nope")], "multiline.parser"),
        ([], "multiline.parser"),
        ([("mode", "partial_message")], "multiline.key_content"),
    ],
)
def test_filter_config_errors(entries: list[tuple[str, str]], key: str) -> None:
    with pytest.raises(ConfigValueError) as e:
        make("multiline", entries)
    assert e.value.key == key
