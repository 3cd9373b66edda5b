"""Fluent Bit's multiline engine: join records that belong together.

Three kinds of multiline parser exist, as in Fluent Bit:

- ``regex``: a state machine over rules ``(from_states, regex, next_state)``. A line
  matching a rule of ``start_state`` begins a record (emitting any record still being
  built); while a record is open, a line matching one of the rules reachable from the
  last matched rule's ``next_state`` is appended ("\\n"-joined); a line matching
  nothing ends the open record and is emitted on its own. When the matched rule leads
  back to ``start_state`` the record is complete at once (Python's ``ValueError: ...``
  line). Built-ins ``go``, ``python``, ``java``, ``ruby`` are rule sets.
- ``endswith``: a record is complete when its content ends with ``match_string``
  (``docker``: a json-file ``log`` without a trailing "\\n" is a 16 KiB piece of a
  longer line); pieces are concatenated as-is, except in raw text mode (below).
- ``equal``: complete when a field equals ``match_string`` (``cri``: ``P`` partial,
  ``F`` final).

Raw text mode (Fluent Bit's parser instance without ``key_content``): a parser with
no ``key_content`` and no ``parser`` fed raw lines (the tail input) ends every record
it emits with "\\n" (unless it already ends so) and joins endswith/equal pieces with
"\\n"; a line no parser takes gets the "\\n" too when the first parser is in that mode.
So ``multiline.parser go`` on a plain file gives ``"...last frame\\n"`` and a single
line ``"text\\n"``, as Fluent Bit does. Records fed as records (the multiline filter,
``multiline.key_content``) and docker/cri are never changed this way.

Records are kept apart per ``key_group`` value (docker/cri: ``stream``, so stdout and
stderr pieces never mix). A merged record is the first line's record with the content
key replaced by the joined text, timestamped with the first line's time.

``group([...])`` (``multiline.parser docker, cri``) tries the parser that handled the
stream's previous line first, then the others in order; a parser that does not take a
line keeps what it holds (Fluent Bit 4+: a docker piece still held when CRI lines come
in is completed by a later docker line of its stream); a line no parser takes flushes
everything held, oldest first, and is then emitted unchanged (for docker/cri: kept
raw under ``log`` and counted in ``MultilineStream.unparsed``).

Offsets (for tail checkpoints): ``feed`` takes, per line, the stream offset just past
it, and reports per emitted record an offset that is safe to checkpoint once that
record is delivered: the end of its last line, lowered to the start of the oldest line
still held (a stderr record completing while a stdout piece is held must not let the
checkpoint skip the held piece). Held lines are never reported. Reported offsets never
decrease.

Timeouts are the caller's: ``pending_since`` says since when something is held,
``flush_expired()`` emits what has been held longer than its parser's
``flush_timeout``, ``flush()`` emits everything (shutdown, file rotation).
"""

from __future__ import annotations

import calendar
import copy
import re
import time
from collections.abc import Iterable
from typing import Any, Protocol

import orjson

from ._fastparse import docker_ml_batch as _docker_ml_batch
from .options import ConfigValueError, Option
from .regex import compile_fluent_regex, fluent_searcher

__all__ = [
    "MULTILINE_OPTIONS",
    "MultilineParser",
    "MultilineStream",
    "builtin_multiline",
    "group",
    "DEFAULT_FLUSH_TIMEOUT_MS",
    "DEFAULT_BUFFER_LIMIT",
    "rfc3339_ns",
]

DEFAULT_FLUSH_TIMEOUT_MS = 4000  # Fluent Bit's FLB_ML_FLUSH_TIMEOUT
# Fluent Bit's multiline_buffer_limit default (2MB). Past it Fluent Bit truncates; we
# emit the record built so far and go on (no data is dropped).
DEFAULT_BUFFER_LIMIT = 2 * 1024 * 1024

MULTILINE_OPTIONS: tuple[Option, ...] = (
    Option("Name", "str", None, "unique name of the multiline parser", required=True),
    Option("Type", "str", "regex", "regex (rules), endswith or equal (match_string)",
           choices=("regex", "endswith", "equal", "eq")),
    Option("Parser", "str", None, "parser applied to each line before the rules (its key_content is matched)"),
    Option("Key_Content", "str", None, "key holding the text to match and concatenate (default log)"),
    Option("Key_Group", "str", None, "key whose value separates independent streams (e.g. stream)"),
    Option("Key_Pattern", "str", None, "key matched by type equal (default: key_content)"),
    Option("Match_String", "str", None, "string for type endswith / equal"),
    Option("Negate", "bool", "false", "invert the endswith / equal match"),
    Option("Flush_Timeout", "int", str(DEFAULT_FLUSH_TIMEOUT_MS),
           "milliseconds before an unterminated record is emitted anyway", minimum=1),
    Option("Rule", "str", None, 'rule "state_name" "/regex/" "next_state" (repeatable)', multi=True),
)

# Built-in rule sets: (from_states, regex, next_state), in Fluent Bit's order.
_BUILTIN_RULES: dict[str, list[tuple[str, str, str]]] = {
    "go": [
        ("start_state", r"/\bpanic: /", "go_after_panic"),
        ("start_state", r"/http: panic serving/", "go_goroutine"),
        ("go_after_panic", r"/^$/", "go_goroutine"),
        ("go_after_panic, go_after_signal, go_frame_1", r"/^$/", "go_goroutine"),
        ("go_after_panic", r"/^\[signal /", "go_after_signal"),
        ("go_goroutine", r"/^goroutine \d+ \[[^\]]+\]:$/", "go_frame_1"),
        ("go_frame_1", r"/^(?:[^\s.:]+\.)*[^\s.():]+\(|^created by /", "go_frame_2"),
        ("go_frame_2", r"/^\s/", "go_frame_1"),
    ],
    "python": [
        ("start_state", r"/^Traceback \(most recent call last\):$/", "python"),
        ("python", r"/^[\t ]+File /", "python_code"),
        ("python_code", r"/[^\t ]/", "python"),
        ("python", r"/^(?:[^\s.():]+\.)*[^\s.():]+:/", "start_state"),
    ],
    "java": [
        ("start_state, java_start_exception",
         r"/(.)(?:Exception|Error|Throwable|V8 errors stack trace)[:\r\n]/", "java_after_exception"),
        ("java_after_exception", r"/^[\t ]*nested exception is:[\t ]*/", "java_start_exception"),
        ("java_after_exception", r"/^[\r\n]*$/", "java_after_exception"),
        ("java_after_exception, java", r"/^[\t ]+(?:eval )?at /", "java"),
        ("java_after_exception, java", r"/^[\t ]+--- End of inner exception stack trace ---$/", "java"),
        ("java_after_exception, java",
         r"/^--- End of stack trace from previous location where exception was thrown ---$/", "java"),
        ("java_after_exception, java", r"/^[\t ]*(?:Caused by|Suppressed):/", "java_after_exception"),
        ("java_after_exception, java", r"/^[\t ]*... \d+ (?:more|common frames omitted)/", "java"),
    ],
    "ruby": [
        ("start_state, ruby_start_exception", r"/^.+:\d+:in\s+.*/", "ruby_after_exception"),
        ("ruby_after_exception, ruby", r"/^\s+from\s+.*:\d+:in\s+.*/", "ruby"),
    ],
}


class ParserLookup(Protocol):
    """The parsers a multiline parser's ``parser`` option may name (``logfwd.parsers.ParserRegistry``).

    A protocol, not an import: the registry holds multiline parsers, so it sits above this module.
    """

    def get(self, name: str) -> Any: ...

    def names(self) -> list[str]: ...


# ------------------------------------------------------------------ rules


class _Rule:
    __slots__ = ("index", "from_states", "regex", "to_state", "start", "pattern", "search")

    def __init__(self, index: int, from_states: str, regex: str, to_state: str) -> None:
        self.index = index
        self.from_states = frozenset(s.strip() for s in from_states.split(",") if s.strip())
        self.pattern = regex
        self.regex = compile_fluent_regex(regex)
        self.search = fluent_searcher(regex)  # what the state machine calls: PCRE2 where it compiles
        self.to_state = to_state.strip()
        self.start = "start_state" in self.from_states


_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|(\S+)')


def _parse_rule(value: Any) -> tuple[str, str, str]:
    """A ``rule`` value: the classic ``"state" "/regex/" "next"`` line, a 3-tuple, or a YAML map."""
    if isinstance(value, dict):
        lower = {str(k).lower(): v for k, v in value.items()}
        try:
            return str(lower["state"]), str(lower["regex"]), str(lower["next_state"])
        except KeyError as e:
            raise ConfigValueError("rule", f"rule map needs state, regex and next_state (missing {e})") from None
    if isinstance(value, (list, tuple)):
        if len(value) != 3:
            raise ConfigValueError("rule", f"a rule has 3 parts (state, regex, next state), got {len(value)}")
        return str(value[0]), str(value[1]), str(value[2])
    tokens = []
    for m in _TOKEN.finditer(str(value)):
        tokens.append(m.group(1).replace('\\"', '"') if m.group(1) is not None else m.group(2))
    if len(tokens) != 3:
        raise ConfigValueError(
            "rule", f'expected: rule "state_name" "/regex/" "next_state", got {len(tokens)} part(s) in {value!r}'
        )
    return tokens[0], tokens[1], tokens[2]


# ------------------------------------------------------------------ line formats (docker / cri)

_TS_TAIL = re.compile(r"(?:\.(\d+))?(?:([Zz])|([+-])(\d\d):?(\d\d))?$")
_sec_cache: dict[str, int] = {}
_POW10 = [10**i for i in range(10)]


def rfc3339_ns(s: str) -> int | None:
    """Nanoseconds since the epoch of an RFC 3339 time (docker/CRI ``time``), or None.

    The seconds part is cached: consecutive log lines share it, which makes this cheap.
    """
    if len(s) < 19:
        return None
    head = s[:19]
    base = _sec_cache.get(head)
    if base is None:
        if head[4] != "-" or head[7] != "-" or head[10] not in "Tt " or head[13] != ":" or head[16] != ":":
            return None
        try:
            base = calendar.timegm(
                (int(head[0:4]), int(head[5:7]), int(head[8:10]), int(head[11:13]), int(head[14:16]), int(head[17:19]))
            )
        except ValueError:
            return None
        if len(_sec_cache) > 4096:
            _sec_cache.clear()
        _sec_cache[head] = base
    if s[-1] == "Z" and len(s) > 21 and s[19] == ".":
        # Docker's and containerd's own form, 2024-05-01T10:00:00.123456789Z: no regex.
        frac = s[20:-1]
        if frac.isdigit():
            k = len(frac)
            ns = int(frac) * _POW10[9 - k] if k <= 9 else int(frac[:9])
            return base * 1_000_000_000 + ns
    m = _TS_TAIL.match(s, 19)
    if m is None:
        return None
    frac, _z, sign, hh, mm = m.groups()
    ns = int(frac[:9].ljust(9, "0")) if frac else 0
    if sign is not None:
        delta = int(hh) * 3600 + int(mm) * 60
        base = base - delta if sign == "+" else base + delta
    return base * 1_000_000_000 + ns


class _Format:
    """Turns a line's raw text into a record; ``None`` for a line it does not recognise."""

    name = ""

    def parse_one(self, text: Any) -> tuple[int | None, dict[str, Any]] | None:
        raise NotImplementedError

    def parse_batch(self, texts: list[Any]) -> list[tuple[int | None, dict[str, Any]] | None]:
        parse = self.parse_one
        return [parse(x) for x in texts]

    def scan(self, texts: list[Any], times: list[int], m: MultilineParser
             ) -> tuple[list[int], list[dict[str, Any] | None], list[int]]:
        """A batch decoded for member ``m`` (type endswith/equal) in one pass.

        Returns each line's time (its own, else ``times[i]``), its record (None where the
        format does not recognise the line) and the indices of the lines that are *not*
        a recognised, complete record: only those need the state machine while nothing
        is held. A subclass may do this in C (docker); this is the reference.
        """
        parsed = self.parse_batch(texts)
        key, ms, neg, kpat = m.key_content, m.match_string, m.negate, m.key_pattern
        ends = m.type == "endswith"
        out_t: list[int] = []
        out_r: list[dict[str, Any] | None] = []
        others: list[int] = []
        for i, p in enumerate(parsed):
            if p is None:
                out_t.append(times[i])
                out_r.append(None)
                others.append(i)
                continue
            pt, rec = p
            out_t.append(times[i] if pt is None else pt)
            out_r.append(rec)
            content = rec.get(key)
            if type(content) is not str:
                others.append(i)
                continue
            if ends:
                done = len(content) >= len(ms) and content.endswith(ms) != neg
            else:
                pv = rec.get(kpat) if kpat is not None else content
                done = ((pv if type(pv) is str else content) == ms) != neg
            if not done:
                others.append(i)
        return out_t, out_r, others


class _DockerFormat(_Format):
    """Docker json-file lines ``{"log": ..., "stream": ..., "time": ...}``; ``time`` is kept.

    Built in (orjson) until/unless the parser registry supplies a faster ``docker`` parser.
    """

    name = "docker"

    def parse_one(self, text: Any) -> tuple[int | None, dict[str, Any]] | None:
        if text is None:
            return None
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        if type(obj) is not dict or type(obj.get("log")) is not str:
            return None
        ts = obj.get("time")
        return (rfc3339_ns(ts) if type(ts) is str else None), obj

    def parse_batch(self, texts: list[Any]) -> list[tuple[int | None, dict[str, Any]] | None]:
        loads = orjson.loads
        err = orjson.JSONDecodeError
        ts_ns = rfc3339_ns
        out: list[tuple[int | None, dict[str, Any]] | None] = []
        append = out.append
        for text in texts:
            try:
                obj = loads(text)
            except (err, TypeError):
                append(None)
                continue
            if type(obj) is not dict or type(obj.get("log")) is not str:
                append(None)
                continue
            ts = obj.get("time")
            append(((ts_ns(ts) if type(ts) is str else None), obj))
        return out

    def scan(self, texts: list[Any], times: list[int], m: MultilineParser
             ) -> tuple[list[int], list[dict[str, Any] | None], list[int]]:
        """``_Format.scan`` in one Cython call (decode, docker time, completeness per line)."""
        if m.type != "endswith":
            return super().scan(texts, times, m)
        return _docker_ml_batch(texts, times, m.key_content, m.match_string, m.negate, rfc3339_ns)


class _CriFormat(_Format):
    """CRI lines ``<time> <stdout|stderr> <P|F> <log>`` → ``{time, stream, _p, log}`` (Fluent Bit's keys)."""

    name = "cri"

    def parse_one(self, text: Any) -> tuple[int | None, dict[str, Any]] | None:
        if text is None:
            return None
        if type(text) is not str:
            text = bytes(text).decode("utf-8", "replace")
        parts = text.split(" ", 3)
        if len(parts) != 4:
            return None
        ts, stream, tag, log = parts
        if (stream != "stdout" and stream != "stderr") or (tag != "F" and tag != "P"):
            return None
        return rfc3339_ns(ts), {"time": ts, "stream": stream, "_p": tag, "log": log}


class _ParserFormat(_Format):
    """A registry parser (``[PARSER]``) used as a multiline parser's ``parser``."""

    def __init__(self, parser: Any) -> None:
        self.parser = parser
        self.name = getattr(parser, "name", "parser")

    def parse_one(self, text: Any) -> tuple[int | None, dict[str, Any]] | None:
        if text is None:
            return None
        try:
            res = self.parser.parse_record_field(text)
        except Exception:
            return None
        if res is None:
            return None
        return res[0], res[1]


# ------------------------------------------------------------------ parser definitions


class MultilineParser:
    """One multiline parser definition (or, from ``group``, an ordered set of them)."""

    def __init__(
        self,
        name: str,
        type: str = "regex",
        rules: Iterable[tuple[str, str, str]] = (),
        key_content: str | None = None,
        flush_timeout_ms: int = DEFAULT_FLUSH_TIMEOUT_MS,
        match_string: str | None = None,
        negate: bool = False,
        key_group: str | None = None,
        key_pattern: str | None = None,
        line_format: _Format | None = None,
    ) -> None:
        self.name = name
        self.type = "equal" if type == "eq" else type
        self.key_content = key_content or "log"
        # Fluent Bit's "raw text" mode: no key_content configured and no line parser,
        # fed raw lines (tail). Records then end with "\n" and endswith/equal pieces are
        # joined with "\n" (flb_ml.c breakline_prepare, which runs when the parser
        # instance has no key_content).
        self.raw_text = key_content is None and line_format is None
        self.flush_timeout = flush_timeout_ms / 1000.0
        self.match_string = match_string or ""
        self.negate = negate
        self.key_group = key_group
        self.key_pattern = key_pattern
        self.format = line_format
        self.members: list[MultilineParser] = [self]
        self.rules = [_Rule(i, s, r, n) for i, (s, r, n) in enumerate(rules)]
        self.starts = [r for r in self.rules if r.start]
        # For each rule: the non-start rules reachable from its next_state, and whether
        # its next_state leads back to a start rule (the record is complete at once).
        self.cont: list[list[_Rule]] = []
        self.next_is_start: list[bool] = []
        for r in self.rules:
            reach = [x for x in self.rules if r.to_state in x.from_states]
            self.cont.append([x for x in reach if not x.start])
            self.next_is_start.append(any(x.start for x in reach))
        if self.type == "regex" and self.rules and not self.starts:
            raise ConfigValueError("rule", f"multiline parser {name!r}: no rule starts from 'start_state'")

    def __repr__(self) -> str:
        return f"MultilineParser({self.name!r}, type={self.type!r})"

    @classmethod
    def from_config(cls, options: dict[str, Any], parsers: ParserLookup | None = None) -> MultilineParser:
        """A ``[MULTILINE_PARSER]`` section, converted per ``MULTILINE_OPTIONS``."""
        name = options.get("name")
        if not name:
            raise ConfigValueError("name", "a multiline parser needs a Name")
        mtype = str(options.get("type") or "regex").lower()
        if mtype not in ("regex", "endswith", "equal", "eq"):
            raise ConfigValueError("type", f"type must be regex, endswith or equal, got {mtype!r}")
        raw_rules = options.get("rule") or []
        if isinstance(raw_rules, (str, dict)):
            raw_rules = [raw_rules]
        rules = [_parse_rule(r) for r in raw_rules]
        if mtype == "regex" and not rules:
            raise ConfigValueError("rule", f"multiline parser {name!r} of type regex needs at least one rule")
        if mtype in ("endswith", "equal", "eq") and not options.get("match_string"):
            raise ConfigValueError("match_string", f"type {mtype} needs match_string")
        fmt: _Format | None = None
        pname = options.get("parser")
        if pname:
            if parsers is None:
                raise ConfigValueError("parser", f"parser {pname!r} is unknown (no parsers loaded)")
            try:
                fmt = _ParserFormat(parsers.get(pname))
            except KeyError:
                known = ", ".join(sorted(parsers.names()))
                raise ConfigValueError("parser", f"parser {pname!r} is not defined; known: {known}") from None
        timeout = options.get("flush_timeout")
        timeout_ms = DEFAULT_FLUSH_TIMEOUT_MS if timeout in (None, "") else int(timeout)
        for i, (_s, rx, _n) in enumerate(rules):
            try:
                compile_fluent_regex(rx)
            except re.error as e:
                raise ConfigValueError("rule", f"rule {i + 1} of {name!r}: invalid regular expression {rx!r}: {e}") from None
        negate = options.get("negate")
        return cls(
            name=str(name),
            type=mtype,
            rules=rules,
            key_content=options.get("key_content"),
            flush_timeout_ms=timeout_ms,
            match_string=options.get("match_string"),
            negate=bool(negate) if negate is not None else False,
            key_group=options.get("key_group"),
            key_pattern=options.get("key_pattern"),
            line_format=fmt,
        )

    def with_key_content(self, key: str | None) -> MultilineParser:
        """A copy reading/writing ``key`` (the multiline filter's ``multiline.key_content``)."""
        if not key:
            return self
        if len(self.members) > 1 or self.members[0] is not self:
            return group([m.with_key_content(key) for m in self.members])
        clone = copy.copy(self)
        clone.key_content = key
        clone.raw_text = False
        clone.members = [clone]
        return clone

    def with_flush_timeout(self, seconds: float) -> MultilineParser:
        """A copy whose held records are emitted after ``seconds`` (tail's ``Docker_Mode_Flush``)."""
        if len(self.members) > 1 or self.members[0] is not self:
            return group([m.with_flush_timeout(seconds) for m in self.members])
        clone = copy.copy(self)
        clone.flush_timeout = float(seconds)
        clone.members = [clone]
        return clone

    def stream(
        self,
        start_offset: int = 0,
        safe_offsets: bool = True,
        max_lines: int = 0,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
    ) -> MultilineStream:
        """A fresh stream state (one per tailed file, one per tag in the filter).

        ``start_offset`` is where the caller starts reading (the offset before the first
        line fed); ``safe_offsets=False`` reports each record's own last-line offset.
        """
        return MultilineStream(self.members, start_offset, safe_offsets, max_lines, buffer_limit)


def group(parsers: list[MultilineParser]) -> MultilineParser:
    """``multiline.parser docker, cri``: one parser trying each member in turn per line."""
    members: list[MultilineParser] = []
    for p in parsers:
        members.extend(p.members)
    if len(members) == 1:
        return members[0]
    g = MultilineParser.__new__(MultilineParser)
    g.name = ",".join(m.name for m in members)
    g.type = "group"
    g.key_content = members[0].key_content
    g.raw_text = members[0].raw_text
    g.flush_timeout = min(m.flush_timeout for m in members)
    g.format = None
    g.rules = []
    g.members = members
    return g


def builtin_multiline(parsers: ParserLookup | None = None) -> dict[str, MultilineParser]:
    """Fresh instances of the built-ins: docker, cri, go, python, java, ruby.

    With a registry that defines a ``docker`` parser, docker lines are decoded by it
    (the fast path); otherwise by the built-in orjson decoder.
    """
    docker_fmt: _Format = _DockerFormat()
    if parsers is not None:
        try:
            docker_fmt = _RegistryDockerFormat(parsers.get("docker"))
        except (KeyError, AttributeError):
            pass
    out = {
        "docker": MultilineParser(
            "docker", "endswith", key_content="log", match_string="\n", key_group="stream", line_format=docker_fmt
        ),
        "cri": MultilineParser(
            "cri", "equal", key_content="log", match_string="F", key_group="stream", key_pattern="_p",
            line_format=_CriFormat(),
        ),
    }
    for name, rules in _BUILTIN_RULES.items():
        out[name] = MultilineParser(name, "regex", rules=rules)
    return out


class _RegistryDockerFormat(_DockerFormat):
    """Docker lines through the registry's ``docker`` parser (batch ``parse_lines``)."""

    def __init__(self, parser: Any) -> None:
        self.parser = parser

    scan = _Format.scan  # the registry parser decodes, not the docker kernel

    def parse_batch(self, texts: list[Any]) -> list[tuple[int | None, dict[str, Any]] | None]:
        if any(t is None for t in texts):
            return super().parse_batch(texts)
        lines = [t.encode() if type(t) is str else t for t in texts]
        try:
            times, records, nfailed = self.parser.parse_lines(lines)
        except Exception:
            return super().parse_batch(texts)
        out: list[tuple[int | None, dict[str, Any]] | None] = []
        for i, rec in enumerate(records):
            if type(rec.get("log")) is not str or (nfailed and len(rec) == 1):
                # A failed line comes back raw as {"log": text}: let the next parser try it.
                out.append(super().parse_one(texts[i]))
            else:
                out.append((times[i], rec))
        return out


# ------------------------------------------------------------------ streams


class _Buf:
    """A record being assembled (Fluent Bit's stream group buffer)."""

    __slots__ = ("parts", "time", "record", "floor", "last_off", "since", "nlines", "nbytes", "last_nl",
                 "member", "gkey", "raw")

    def __init__(self, member: int, gkey: Any, t: int, record: dict[str, Any], text: str,
                 floor: Any, off: Any, now: float, raw: bool = False) -> None:
        self.raw = raw
        self.member = member
        self.gkey = gkey
        self.time = t
        self.record = record
        self.parts = [text]
        self.floor = floor
        self.last_off = off
        self.since = now
        self.nlines = 1
        self.nbytes = len(text)
        self.last_nl = text.endswith("\n")


class MultilineStream:
    """Multiline state of one source stream; see the module docstring for the contract."""

    def __init__(self, members: list[MultilineParser], start_offset: int = 0, safe_offsets: bool = True,
                 max_lines: int = 0, buffer_limit: int = DEFAULT_BUFFER_LIMIT) -> None:
        self._members = members
        self._groups: list[dict[Any, _Buf]] = [{} for _ in members]
        self._rstate: list[dict[Any, int]] = [{} for _ in members]
        self._pending: dict[_Buf, None] = {}  # insertion-ordered set, oldest first
        self._lru = 0
        # Try order per "last parser that took a line": that one first, then the rest.
        self._orders = [[k] + [x for x in range(len(members)) if x != k] for k in range(len(members))]
        self._prev_off: Any = start_offset
        self._safe = safe_offsets
        self._max_lines = max_lines
        self._limit = buffer_limit
        self._out_t: list[int] = []
        self._out_r: list[dict[str, Any]] = []
        self._out_o: list[Any] = []
        self._track = False
        self._now = 0.0
        self.unparsed = 0  # lines no member's format recognised (emitted raw)

    # -------------------------------------------------------------- public

    @property
    def pending_since(self) -> float | None:
        """``time.monotonic()`` when the oldest held line arrived; None when nothing is held."""
        if not self._pending:
            return None
        return min(b.since for b in self._pending)

    @property
    def pending(self) -> int:
        """Lines currently held."""
        return sum(b.nlines for b in self._pending)

    @property
    def safe_offset(self) -> Any:
        """Offset up to which every line fed has been emitted (start of the oldest held line)."""
        if not self._pending:
            return self._prev_off
        return min(b.floor for b in self._pending)

    def feed(self, times: list[int], records: list[dict[str, Any]], offsets: list[int] | None = None
             ) -> tuple[list[int], list[dict[str, Any]], list[int]]:
        """Process records in order; return the completed ones (see module docstring)."""
        return self._run(times, records, None, offsets)

    def feed_lines(self, times: list[int], lines: list[bytes | str], offsets: list[int] | None = None
                   ) -> tuple[list[int], list[dict[str, Any]], list[int]]:
        """Like ``feed`` for raw lines (tail's hot path): no ``{"log": line}`` dict is built
        for lines a format parser (docker/cri) decodes."""
        return self._run(times, None, lines, offsets)

    def flush(self) -> tuple[list[int], list[dict[str, Any]], list[int]]:
        """Emit everything held, oldest first."""
        self._begin(self._track)
        for buf in list(self._pending):
            self._flush_buf(buf)
        return self._end()

    def flush_expired(self, now: float | None = None) -> tuple[list[int], list[dict[str, Any]], list[int]]:
        """Emit records held longer than their parser's ``flush_timeout``."""
        now = time.monotonic() if now is None else now
        self._begin(self._track)
        for buf in list(self._pending):
            if now - buf.since >= self._members[buf.member].flush_timeout:
                self._flush_buf(buf)
        return self._end()

    # -------------------------------------------------------------- internals

    def _begin(self, track: bool) -> None:
        self._out_t, self._out_r, self._out_o = [], [], []
        self._track = track

    def _end(self) -> tuple[list[int], list[dict[str, Any]], list[int]]:
        out = (self._out_t, self._out_r, self._out_o)
        self._out_t, self._out_r, self._out_o = [], [], []
        return out

    def _emit(self, t: int, rec: dict[str, Any], off: Any) -> None:
        self._out_t.append(t)
        self._out_r.append(rec)
        if self._track:
            if self._safe and self._pending:
                floor = min(b.floor for b in self._pending)
                if floor < off:
                    off = floor
            self._out_o.append(off)

    def _flush_buf(self, buf: _Buf) -> None:
        del self._pending[buf]
        groups = self._groups[buf.member]
        if groups.get(buf.gkey) is buf:
            del groups[buf.gkey]
        if buf.raw:
            text = "".join(buf.parts)
            if text and not buf.last_nl:
                text += "\n"  # raw text records end with a newline, as in Fluent Bit
            rec = {self._members[buf.member].key_content: text}
        elif buf.nlines == 1:
            rec = buf.record
        else:
            rec = dict(buf.record)
            rec[self._members[buf.member].key_content] = "".join(buf.parts)
        self._emit(buf.time, rec, buf.last_off)

    def _open(self, j: int, gkey: Any, t: int, rec: dict[str, Any], text: str, off: Any, raw: bool = False) -> _Buf:
        buf = _Buf(j, gkey, t, rec, text, self._prev_off, off, self._now, raw)
        self._groups[j][gkey] = buf
        self._pending[buf] = None
        return buf

    def _append(self, buf: _Buf, text: str, off: Any, newline: bool) -> None:
        if newline:
            # Fluent Bit's joining: a "\n" between lines unless the text so far ends with
            # one; an empty line adds a "\n" of its own.
            if not buf.last_nl:
                buf.parts.append("\n")
                buf.nbytes += 1
            if not text:
                text = "\n"
        buf.parts.append(text)
        buf.nbytes += len(text)
        buf.nlines += 1
        buf.last_off = off
        buf.last_nl = text.endswith("\n") if text else buf.last_nl
        if (self._max_lines and buf.nlines >= self._max_lines) or buf.nbytes >= self._limit:
            self._flush_buf(buf)

    def _process(self, j: int, t: int, rec: dict[str, Any], off: Any, raw: bool = False) -> bool:
        """Offer one record to member ``j``; False (and no side effect) if it does not take it.

        ``raw``: ``rec`` is ``{key_content: line}`` built from a raw line for a member in
        Fluent Bit's raw text mode (see ``MultilineParser.raw_text``).
        """
        m = self._members[j]
        content = rec.get(m.key_content)
        if type(content) is not str:
            return False
        gkey = None
        if m.key_group is not None:
            gkey = rec.get(m.key_group)
            if type(gkey) is not str:
                gkey = None
        mtype = m.type
        if mtype == "regex":
            return self._process_regex(j, m, t, rec, content, gkey, off, raw)
        if mtype == "endswith":
            ms = m.match_string
            if len(ms) > len(content):
                return False
            complete = content.endswith(ms) != m.negate
        else:  # equal
            pat = content
            if m.key_pattern is not None:
                pv = rec.get(m.key_pattern)
                if type(pv) is str:
                    pat = pv
            complete = (pat == m.match_string) != m.negate
        buf = self._groups[j].get(gkey)
        if buf is None:
            if complete and not raw:
                self._emit(t, rec, off)
            else:
                buf = self._open(j, gkey, t, rec, content, off, raw)
                if complete:
                    self._flush_buf(buf)
            return True
        if raw and not buf.last_nl:
            buf.parts.append("\n")  # raw text pieces are joined with a newline
            buf.nbytes += 1
        buf.parts.append(content)
        buf.nbytes += len(content)
        buf.nlines += 1
        buf.last_off = off
        if content:
            buf.last_nl = content.endswith("\n")
        elif raw:
            buf.last_nl = True
        if complete or (self._max_lines and buf.nlines >= self._max_lines) or buf.nbytes >= self._limit:
            self._flush_buf(buf)
        return True

    def _process_regex(self, j: int, m: MultilineParser, t: int, rec: dict[str, Any], content: str,
                       gkey: Any, off: Any, raw: bool = False) -> bool:
        text = content[:-1] if content.endswith("\n") else content  # match the line, not its terminator
        states = self._rstate[j]
        cur = states.get(gkey)
        buf = self._groups[j].get(gkey)
        rule = None
        if cur is not None:
            for r in m.cont[cur]:
                if r.search(text):
                    rule = r
                    if buf is None:
                        # Continuation after a timeout flush: it starts a record of its own.
                        buf = self._open(j, gkey, t, rec, content, off, raw)
                    else:
                        self._append(buf, content, off, True)
                    break
        if rule is None:
            for r in m.starts:
                if r.search(text):
                    rule = r
                    if buf is not None:
                        self._flush_buf(buf)
                    buf = self._open(j, gkey, t, rec, content, off, raw)
                    break
        if rule is None:
            return False
        states[gkey] = rule.index
        if m.next_is_start[rule.index]:
            buf = self._groups[j].get(gkey)
            if buf is not None:
                self._flush_buf(buf)
            del states[gkey]
        return True


    def _line(self, i: int, t: int, off: Any, records: list[dict[str, Any]] | None, lines: list[Any] | None,
              pre_t: list[int] | None, pre_r: list[Any] | None, pre_j: int) -> None:
        """One line through the general path: offer it to the parsers, or emit it as it is.

        ``pre_t``/``pre_r``: member ``pre_j``'s decoding of the whole batch (time resolved,
        record or None), so that member does not decode the line again.
        """
        members = self._members
        raw_rec = records[i] if records is not None else None
        taken = False
        lru = self._lru
        for j in self._orders[lru]:
            m = members[j]
            if m.format is not None:
                if pre_r is not None and j == pre_j:
                    rec = pre_r[i]
                    parsed = None if rec is None else (pre_t[i], rec)  # type: ignore[index]
                else:
                    src = lines[i] if lines is not None else raw_rec.get(m.key_content)  # type: ignore[union-attr]
                    parsed = m.format.parse_one(src)
                if parsed is not None:
                    pt, rec = parsed
                    taken = self._process(j, t if pt is None else pt, rec, off)
            elif raw_rec is not None:
                taken = self._process(j, t, raw_rec, off)
            else:
                taken = self._process(j, t, {m.key_content: _text(lines[i])}, off,  # type: ignore[index]
                                      m.raw_text)
            if taken:
                break
            # A member that does not take the line keeps what it holds (Fluent Bit 4+:
            # flb_ml_append_text tries the next parser without flushing the last one's
            # buffers); only a line that no member takes flushes everything below.
        if taken:
            self._lru = j
        else:
            if any(mm.format is not None for mm in members):
                self.unparsed += 1
            for buf in list(self._pending):
                self._flush_buf(buf)
            if raw_rec is None:
                text = _text(lines[i])  # type: ignore[index]
                if members[0].raw_text and text and not text.endswith("\n"):
                    text += "\n"  # emitted through the first parser's (raw text) group: newline added
                raw_rec = {members[0].key_content: text}
            self._emit(t, raw_rec, off)

    def _run(self, times: list[int], records: list[dict[str, Any]] | None, lines: list[Any] | None,
             offsets: list[int] | None) -> tuple[list[int], list[dict[str, Any]], list[int]]:
        self._begin(offsets is not None)
        self._now = time.monotonic()
        members = self._members
        n = len(times)
        track = offsets is not None
        pre_j = self._lru
        fm = members[pre_j]
        fmt = fm.format
        if fmt is None or not n:
            for i in range(n):
                off = offsets[i] if track else None  # type: ignore[index]
                self._line(i, times[i], off, records, lines, None, None, pre_j)
                if track:
                    self._prev_off = off
            return self._end()
        # Decode the whole batch with the stream's current parser (docker/cri): one tight
        # loop (for docker one Cython call) instead of per-line dispatch.
        key = fm.key_content
        texts = lines if lines is not None else [r.get(key) for r in records]  # type: ignore[union-attr]
        if fm.type not in ("endswith", "equal"):
            pre = fmt.parse_batch(texts)
            pre_r: list[Any] = [None if p is None else p[1] for p in pre]
            pre_t = [times[i] if p is None or p[0] is None else p[0] for i, p in enumerate(pre)]
            for i in range(n):
                off = offsets[i] if track else None  # type: ignore[index]
                self._line(i, times[i], off, records, lines, pre_t, pre_r, pre_j)
                if track:
                    self._prev_off = off
            return self._end()
        # Fast path (docker/cri, the common case): a run of decoded, complete lines while
        # nothing is held and the stream's parser is unchanged is emitted in bulk, as it
        # is; only the other lines (and lines arriving while something is held) take the
        # general path, one by one.
        pre_t, pre_r, others = fmt.scan(texts, times, fm)
        out_t, out_r, out_o = self._out_t, self._out_r, self._out_o
        i = 0
        others.append(n)
        for stop in others:
            while i < stop:
                if not self._pending and self._lru == pre_j:
                    if i == 0 and stop == n:
                        out_t.extend(pre_t)
                        out_r.extend(pre_r)
                        if track:
                            out_o.extend(offsets)  # type: ignore[arg-type]
                    else:
                        out_t.extend(pre_t[i:stop])
                        out_r.extend(pre_r[i:stop])
                        if track:
                            out_o.extend(offsets[i:stop])  # type: ignore[index]
                    if track:
                        self._prev_off = offsets[stop - 1]  # type: ignore[index]
                    i = stop
                    break
                off = offsets[i] if track else None  # type: ignore[index]
                self._line(i, times[i], off, records, lines, pre_t, pre_r, pre_j)
                if track:
                    self._prev_off = off
                i += 1
            if stop < n:
                off = offsets[stop] if track else None  # type: ignore[index]
                self._line(stop, times[stop], off, records, lines, pre_t, pre_r, pre_j)
                if track:
                    self._prev_off = off
                i = stop + 1
        return self._end()


def _text(x: Any) -> str:
    if type(x) is str:
        return x
    if x is None:
        return ""
    return bytes(x).decode("utf-8", "replace")
