"""multiline: join stack traces and split messages after the fact (Fluent Bit's ``multiline`` filter).

``mode parser`` (default) runs the ``multiline.parser`` list (built-ins such as
``go, java, python`` and ``[MULTILINE_PARSER]`` definitions) over the content key
(``multiline.key_content``), one stream per tag. ``mode partial_message`` joins
records split by the Docker fluentd log driver (``partial_message``, ``partial_id``,
``partial_last``), per tag and ``partial_id``.

With ``buffer on`` (Fluent Bit's default) a record that is still being assembled at
the end of a batch is held for the next batch of the same tag. A filter cannot emit
on its own, so held records whose first line is older than ``flush_ms`` are handed
out by ``flush_pending()``, which the engine's flush tick calls; each batch it returns
owns a fresh ``AckHandle`` whose initial reference the caller releases after routing
(as ``Emitter.emit`` does), and must continue through the filters after this one.

At-least-once: while a batch has lines held here its ``AckHandle`` gets an extra
reference, so its input cannot checkpoint past them. Every batch that leaves this
filter while such lines are held (the current one, or a ``flush_pending`` batch)
takes one more reference on each holding handle and gives it back when it completes;
the holding reference itself is dropped once all of that batch's lines have been
emitted. A held line's input is therefore acknowledged only after the batch carrying
its merged record is delivered.

With ``buffer off`` everything pending is emitted at the end of each batch (Fluent
Bit's unbuffered mode: a record split across two batches is not joined).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from logfwd.multiline import MultilineParser, builtin_multiline, group
from logfwd.plugin import AckHandle, Batch, ConfigValueError, Filter, Option, estimate_bytes

Triple = tuple[list[int], list[dict[str, Any]], list[Any]]


def _is_true(v: Any) -> bool:
    if v is True:
        return True
    if type(v) is bytes:
        v = v.decode("ascii", "replace")
    return type(v) is str and v[:4].lower() == "true"


class _PartialStream:
    """Docker fluentd-driver partial messages: same surface as ``MultilineStream``."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._bufs: dict[Any, list[Any]] = {}  # partial_id → [time, base record, parts, floor, last_off, since]
        self._prev: Any = 0

    @property
    def pending_since(self) -> float | None:
        return min((b[5] for b in self._bufs.values()), default=None)

    @property
    def safe_offset(self) -> Any:
        return min((b[3] for b in self._bufs.values()), default=self._prev)

    def _complete(self, b: list[Any]) -> dict[str, Any]:
        rec = b[1]
        parts = b[2]
        rec[self.key] = "".join(p if type(p) is str else p.decode("utf-8", "replace") for p in parts)
        return rec

    def feed(self, times: list[int], records: list[dict[str, Any]], offsets: list[Any]) -> Triple:
        out_t: list[int] = []
        out_r: list[dict[str, Any]] = []
        out_o: list[Any] = []
        now = time.monotonic()
        key = self.key
        for t, rec, off in zip(times, records, offsets, strict=True):
            content = rec.get(key)
            pid = rec.get("partial_id")
            if _is_true(rec.get("partial_message")) and pid is not None and type(content) in (str, bytes):
                pid = pid if type(pid) is str else str(pid)
                b = self._bufs.get(pid)
                if b is None:
                    base = {k: v for k, v in rec.items() if k != key and not str(k).startswith("partial_")}
                    b = [t, base, [], self._prev, off, now]
                    self._bufs[pid] = b
                b[2].append(content)
                b[4] = off
                if _is_true(rec.get("partial_last")):
                    del self._bufs[pid]
                    out_t.append(b[0])
                    out_r.append(self._complete(b))
                    out_o.append(off)
            else:
                out_t.append(t)
                out_r.append(rec)
                out_o.append(off)
            self._prev = off
        return out_t, out_r, out_o

    def flush(self) -> Triple:
        out: Triple = ([], [], [])
        for pid in list(self._bufs):
            b = self._bufs.pop(pid)
            out[0].append(b[0])
            out[1].append(self._complete(b))
            out[2].append(b[4])
        return out


@dataclass
class _Held:
    handle: AckHandle
    first: int
    last: int
    keys: list[str] | None


@dataclass
class _TagState:
    stream: Any
    held: deque[_Held] = field(default_factory=deque)


# Fluent Bit re-emits joined records through an internal input; here they stay in the batch.
_NO_EMITTER = "joined records continue in the same batch; there is no re-emitting input"


class MultilineFilter(Filter):
    name = "multiline"
    description = "concatenate multiline messages (stack traces) and split Docker messages"
    holds_records = True  # a record is complete only when a later line (or flush_ms) says so
    options = (
        Option("multiline.parser", "csv", None, "multiline parsers to apply, comma separated (go, java, ...)",
               multi=True),
        Option("multiline.key_content", "str", None, "key holding the text to process (default: the parser's)"),
        Option("mode", "str", "parser", "parser (regex concatenation) or partial_message (split Docker logs)",
               choices=("parser", "partial_message")),
        Option("buffer", "bool", "on", "hold incomplete records across batches (off: per batch only)"),
        Option("flush_ms", "int", "2000", "milliseconds before a held record is emitted anyway", minimum=1),
        Option("multiline.max_lines", "int", "0", "emit a record once it has this many lines (0: no limit)",
               minimum=0),
        Option("debug_flush", "bool", "off", "log each emitted record at debug level"),
        Option("emitter_name", "str", None, "name of Fluent Bit's re-emitting input",
               unsupported=_NO_EMITTER),
        Option("emitter_storage.type", "str", "memory", "buffering of Fluent Bit's re-emitting input",
               choices=("memory", "filesystem"), unsupported=_NO_EMITTER),
        Option("emitter_mem_buf_limit", "size", "10M", "memory limit of Fluent Bit's re-emitting input",
               unsupported=_NO_EMITTER),
    )

    def setup(self) -> None:
        self.mode = str(self.config.get("mode") or "parser").lower()
        self.buffer = bool(self.config.get("buffer", True))
        self.flush_s = int(self.config.get("flush_ms") or 2000) / 1000.0
        self.max_lines = int(self.config.get("multiline.max_lines") or 0)
        # the service's multiline_buffer_limit, as in Fluent Bit: the largest record built
        self.buffer_limit = int(self.ctx.service.get("multiline_buffer_limit") or 2 * 1024 * 1024)
        self.key_content: str | None = self.config.get("multiline.key_content") or None
        self.debug_flush = bool(self.config.get("debug_flush"))
        self._tags: dict[str, _TagState] = {}
        self._seq = 0
        if self.mode == "partial_message":
            if not self.key_content:
                raise ConfigValueError("multiline.key_content", "mode partial_message needs multiline.key_content")
            if not self.buffer:
                raise ConfigValueError("buffer", "mode partial_message needs buffer on")
            self.parser: MultilineParser | None = None
            return
        names: list[str] = []
        for entry in self.config.get("multiline.parser") or []:
            names.extend(entry if isinstance(entry, list) else [p.strip() for p in str(entry).split(",")])
        names = [n.strip() for n in names if n and n.strip()]
        if not names:
            raise ConfigValueError("multiline.parser", "mode parser needs at least one multiline.parser")
        found = [self._lookup(n) for n in names]
        self.parser = group(found).with_key_content(self.key_content)

    def _lookup(self, name: str) -> MultilineParser:
        reg = self.ctx.parsers
        if reg is not None and hasattr(reg, "multiline"):
            try:
                return reg.multiline(name)  # type: ignore[no-any-return]
            except KeyError:
                known = reg.multiline_names() if hasattr(reg, "multiline_names") else []
                raise ConfigValueError(
                    "multiline.parser", f"unknown multiline parser {name!r}; known: {', '.join(known)}"
                ) from None
        builtins = builtin_multiline(reg)
        if name.lower() not in builtins:
            raise ConfigValueError(
                "multiline.parser", f"unknown multiline parser {name!r}; built-ins: {', '.join(builtins)}"
            )
        return builtins[name.lower()]

    def _state(self, tag: str) -> _TagState:
        st = self._tags.get(tag)
        if st is None:
            if self.parser is None:
                stream: Any = _PartialStream(self.key_content or "log")
            else:
                stream = self.parser.stream(safe_offsets=False, max_lines=self.max_lines,
                                            buffer_limit=self.buffer_limit)
            st = _TagState(stream)
            self._tags[tag] = st
        return st

    @staticmethod
    def _key_of(seq: int, st: _TagState, first: int, keys: list[str] | None) -> str | None:
        if seq >= first:
            return keys[seq - first] if keys is not None else None
        for h in st.held:
            if h.first <= seq <= h.last:
                return h.keys[seq - h.first] if h.keys is not None else None
        return None

    def _link(self, st: _TagState, out: AckHandle) -> None:
        """``out`` carries records of held batches: each of them stays pending until it completes."""
        for h in st.held:
            if h.handle is out:
                continue
            h.handle.add()
            out.on_complete(lambda _o, held=h.handle: held.done())

    def _release(self, st: _TagState) -> None:
        """Drop the holding reference of batches whose lines have all been emitted."""
        safe = st.stream.safe_offset
        while st.held and st.held[0].last <= safe:
            st.held.popleft().handle.done()

    def _keys(self, seqs: list[Any], st: _TagState, first: int, keys: list[str] | None) -> list[str] | None:
        if keys is None and not any(h.keys is not None for h in st.held):
            return None
        return [self._key_of(s, st, first, keys) for s in seqs]  # type: ignore[misc]

    def filter(self, batch: Batch) -> Batch | None:
        n = len(batch.records)
        if n == 0:
            return batch
        st = self._state(batch.tag)
        first = self._seq + 1
        self._seq += n
        seqs = list(range(first, first + n))
        t, r, o = st.stream.feed(batch.times, batch.records, seqs)
        if not self.buffer:
            t2, r2, o2 = st.stream.flush()
            t += t2
            r += r2
            o += o2
        out_keys = self._keys(o, st, first, batch.keys)
        if r:
            self._link(st, batch.ack)
        self._release(st)
        if st.stream.safe_offset < first + n - 1:
            # Some of this batch's lines are held: its input must not be acknowledged yet.
            batch.ack.add()
            st.held.append(_Held(batch.ack, first, first + n - 1, batch.keys))
        if len(r) < n:
            self.metrics.inc("drop_records", n - len(r))
        elif len(r) > n:
            self.metrics.inc("add_records", len(r) - n)
        if self.debug_flush:
            for rec in r:
                self.log.debug("multiline flush: %r", rec)
        if not r:
            return None
        batch.times, batch.records, batch.keys = t, r, out_keys
        return batch

    def flush_pending(self, force: bool = False) -> list[Batch]:
        """Held records whose first line is older than ``flush_ms`` (all of them with ``force``).

        Each returned batch has its own ``AckHandle`` with one initial reference that the
        caller must ``done()`` after routing it to the filters after this one and the outputs.
        """
        now = time.monotonic()
        out: list[Batch] = []
        for tag, st in self._tags.items():
            since = st.stream.pending_since
            if since is None or (not force and now - since < self.flush_s):
                continue
            t, r, o = st.stream.flush()
            if not r:
                continue
            keys = self._keys(o, st, self._seq + 1, None)
            handle = AckHandle()
            self._link(st, handle)
            self._release(st)
            handle.nbytes = estimate_bytes(r)
            self.metrics.inc("add_records", len(r))
            out.append(Batch(tag, t, r, handle, handle.nbytes, keys))
        return out

    async def close(self) -> None:
        """Nothing to release; the engine drains held records with ``flush_pending(force=True)``."""


PLUGIN = MultilineFilter
