"""The Fluentd Forward Protocol v1, sans I/O: bytes in, events and bytes out.

Both ends of the protocol live here because both plugins need both halves: the
``forward`` input decodes events and answers the handshake and acks, the ``forward``
output encodes events and checks the handshake and acks, and each side's tests drive
the other side's state machine. Nothing here touches a socket or a clock, so every
rule is unit-tested by feeding bytes (in any chunking) and reading what comes out.

Wire format (msgpack, one top-level value after another on a stream):

- Message:          ``[tag, time, record]`` or ``[tag, time, record, option]``
- Forward:          ``[tag, [[time, record], ...], option?]``
- PackedForward:    ``[tag, bin(concatenated [time, record] entries), option?]``
- CompressedPackedForward: the same with ``option.compressed == "gzip"`` and the bin gzipped
  (possibly several gzip members one after another).
- ``nil`` is a heartbeat and carries nothing.

A time is an integer or float (seconds) or the EventTime ext type 0: 8 bytes, big-endian
uint32 seconds and uint32 nanoseconds. Fluent Bit 2+ may send ``[[time, metadata], record]``
entries; the metadata map is dropped (logfwd records carry none).

The option map may carry ``size`` (entry count), ``chunk`` (an id the server answers with
``{"ack": id}`` once it has the events) and ``compressed``. The handshake, when the server
has a shared key: server ``["HELO", {nonce, auth, keepalive}]``, client ``["PING",
hostname, salt, sha512_hex(salt + hostname + nonce + shared_key), username,
sha512_hex(auth + username + password)]``, server ``["PONG", ok, reason, hostname,
sha512_hex(salt + server_hostname + nonce + shared_key)]``.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

__all__ = [
    "ProtocolError",
    "Entries",
    "Reply",
    "AuthFailed",
    "Authenticated",
    "Ack",
    "ServerProtocol",
    "ClientProtocol",
    "EventTime",
    "encode_event_time",
    "encode_entries",
    "encode_message",
    "shared_key_digest",
    "password_digest",
]

_EVENT_TIME = 0
_NS = 1_000_000_000


class ProtocolError(Exception):
    """The peer sent something the protocol does not allow; the connection must be closed."""


class EventTime(int):
    """Nanoseconds since the epoch decoded from an EventTime ext value (an int, to stay cheap)."""

    __slots__ = ()


_unpack_event_time = struct.Struct(">II").unpack


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _EVENT_TIME and len(data) == 8:
        s, ns = _unpack_event_time(data)
        return EventTime(s * _NS + ns)
    return msgpack.ExtType(code, data)


def encode_event_time(ns: int) -> msgpack.ExtType:
    """An EventTime ext value for ``ns`` nanoseconds since the epoch."""
    s, frac = divmod(ns, _NS)
    return msgpack.ExtType(_EVENT_TIME, struct.pack(">II", s & 0xFFFFFFFF, frac))


def _to_ns(t: Any) -> int:
    """A decoded time (EventTime, int or float seconds, or ``[time, metadata]``) in nanoseconds."""
    if type(t) is EventTime:
        return int(t)
    if isinstance(t, list) and t:  # Fluent Bit 2+: [time, metadata]
        return _to_ns(t[0])
    if isinstance(t, bool):
        raise ProtocolError(f"a time must be a number or EventTime, got {t!r}")
    if isinstance(t, int):
        return t * _NS
    if isinstance(t, float):
        return int(round(t * _NS))
    if isinstance(t, msgpack.Timestamp):
        return int(t.to_unix_nano())
    raise ProtocolError(f"a time must be a number or EventTime, got {type(t).__name__}")


def shared_key_digest(salt: bytes | str, hostname: bytes | str, nonce: bytes | str, shared_key: str) -> str:
    return hashlib.sha512(_b(salt) + _b(hostname) + _b(nonce) + _b(shared_key)).hexdigest()


def password_digest(auth_salt: bytes | str, username: str, password: str) -> str:
    return hashlib.sha512(_b(auth_salt) + _b(username) + _b(password)).hexdigest()


def _b(v: bytes | str) -> bytes:
    return v if isinstance(v, bytes) else str(v).encode()


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


# ------------------------------------------------------------------ events


@dataclass(slots=True)
class Entries:
    """Events of one tag from one message; ``chunk`` is the id to ack, if the client asked."""

    tag: str
    times: list[int]
    records: list[dict[str, Any]]
    chunk: str | None = None
    nbytes: int = 0
    signal: int = 0  # Fluent Bit's fluent_signal: 0 logs, 1 metrics, 2 traces


@dataclass(slots=True)
class Reply:
    """Bytes the protocol wants sent to the peer (HELO, PONG, PING)."""

    data: bytes


@dataclass(slots=True)
class AuthFailed:
    reason: str
    reply: bytes = b""  # the PONG saying so (server side), to send before closing


@dataclass(slots=True)
class Authenticated:
    """The handshake passed: the peer's host name, and (server side) the PONG to send."""

    hostname: str
    reply: bytes = b""


@dataclass(slots=True)
class Ack:
    chunk: str


Event = Entries | Reply | AuthFailed | Authenticated | Ack


def _unpacker(max_size: int, raw: bool = False) -> msgpack.Unpacker:
    return msgpack.Unpacker(
        max_buffer_size=max_size, raw=raw, strict_map_key=False, ext_hook=_ext_hook,
        unicode_errors="replace", use_list=True,
    )


class _Stream:
    """A bounded streaming msgpack decoder: ``feed`` bytes, get whole top-level values.

    ``Unpacker.tell()`` also counts the bytes of a value still incomplete, so message
    sizes are measured from where the last whole value ended (``_start``).
    """

    def __init__(self, max_size: int, raw: bool = False) -> None:
        self.max_size = max_size
        self._u = _unpacker(max_size, raw)
        self._fed = 0
        self._start = 0
        self.error: ProtocolError | None = None

    @property
    def pending(self) -> int:
        """Bytes fed and not yet part of a whole value."""
        return self._fed - self._start

    def feed(self, data: bytes) -> list[tuple[Any, int]]:
        """Whole values completed by ``data``, each with its encoded size."""
        if self.error is not None:
            raise self.error
        try:
            self._u.feed(data)
        except msgpack.BufferFull:
            raise ProtocolError(f"a message is larger than Buffer_Max_Size ({self.max_size} bytes)") from None
        self._fed += len(data)
        out = []
        while True:
            try:
                obj = self._u.unpack()
            except msgpack.OutOfData:
                break
            except (msgpack.FormatError, msgpack.StackError, ValueError, TypeError) as e:
                self.error = ProtocolError(f"invalid msgpack ({_why(e)})")
                if not out:
                    raise self.error from None
                break  # the whole values before the bad bytes first; the next feed raises
            end = self._u.tell()
            out.append((obj, end - self._start))
            self._start = end
        return out


# ------------------------------------------------------------------ server


class ServerProtocol:
    """The receiving side of one connection.

    ``start()`` returns the HELO to send first (empty without a shared key); then every
    ``receive_data`` returns events: ``Entries`` to emit, ``Reply`` bytes to send,
    ``Authenticated``, or ``AuthFailed`` (send its reply, then close). A ``ProtocolError``
    means close the connection; when bad bytes follow good messages in one read, the good
    ones are returned first and ``error`` is set (check it after handling them).
    ``ack(chunk)`` is the reply for a delivered chunk.
    """

    def __init__(
        self,
        *,
        max_size: int,
        shared_key: str | None = None,
        self_hostname: str = "localhost",
        users: Mapping[str, str] | None = None,
        nonce: bytes | None = None,
        auth_salt: bytes | None = None,
    ) -> None:
        self._stream = _Stream(max_size)
        # The handshake is decoded raw: senders put random bytes (salt, nonce) in msgpack str
        # values, which UTF-8 decoding would mangle. Bytes fed before the PING is whole are
        # kept so that whatever follows it is decoded as data.
        self._hs_stream = _Stream(max_size, raw=True)
        self._hs_buf = b""
        self.max_size = max_size
        self.shared_key = shared_key
        self.self_hostname = self_hostname
        self.users = dict(users or {})
        self.nonce = nonce if nonce is not None else os.urandom(16)
        self.auth_salt = (auth_salt if auth_salt is not None else os.urandom(16)) if self.users else b""
        self.authenticated = shared_key is None
        self.error: ProtocolError | None = None

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message held (non-zero at EOF means the peer cut a message off)."""
        return self._stream.pending

    def start(self) -> bytes:
        if self.shared_key is None:
            return b""
        return msgpack.packb(["HELO", {"nonce": self.nonce, "auth": self.auth_salt, "keepalive": True}],
                             use_bin_type=True)

    @staticmethod
    def ack(chunk: str) -> bytes:
        return msgpack.packb({"ack": chunk})

    def receive_data(self, data: bytes) -> list[Event]:
        if self.error is not None:
            raise self.error
        if not self.authenticated:
            return self._handshake(data)
        events: list[Event] = []
        try:
            for obj, size in self._stream.feed(data):
                if obj is not None:  # nil is a heartbeat
                    events.append(decode_message(obj, size, self.max_size))
        except ProtocolError as e:
            if not events:
                raise
            self.error = e  # hand over the good messages first; the next call raises
        if self.error is None and self._stream.error is not None:
            self.error = self._stream.error
        return events

    def _handshake(self, data: bytes) -> list[Event]:
        self._hs_buf += data
        objs = self._hs_stream.feed(data)
        if not objs:
            return []
        obj, size = objs[0]
        ev = self._ping(obj)
        if isinstance(ev, AuthFailed):
            return [ev]
        rest, self._hs_buf = self._hs_buf[size:], b""
        return [ev, *self.receive_data(rest)] if rest else [ev]

    def _ping(self, obj: Any) -> AuthFailed | Authenticated:
        if not (isinstance(obj, list) and len(obj) == 6 and obj[0] == b"PING"):
            return self._fail("expected PING (this server requires the shared-key handshake)")
        _, hostname, salt, digest, username, pw_digest = (_b(v) if isinstance(v, (bytes, str)) else b"" for v in obj)
        if digest.decode("ascii", "replace") != shared_key_digest(salt, hostname, self.nonce, self.shared_key or ""):
            return self._fail("shared key mismatch")
        user = username.decode("utf-8", "replace")
        if self.users:
            pw = self.users.get(user)
            if pw is None or pw_digest.decode("ascii", "replace") != password_digest(self.auth_salt, user, pw):
                return self._fail("username/password mismatch")
        self.authenticated = True
        pong = ["PONG", True, "", self.self_hostname,
                shared_key_digest(salt, self.self_hostname, self.nonce, self.shared_key or "")]
        return Authenticated(hostname.decode("utf-8", "replace"), msgpack.packb(pong, use_bin_type=True))

    def _fail(self, reason: str) -> AuthFailed:
        return AuthFailed(reason, msgpack.packb(["PONG", False, reason, "", ""]))


def decode_message(obj: Any, size: int, max_size: int) -> Entries:
    """One top-level forward message (any mode) as ``Entries``; ProtocolError if malformed."""
    if not isinstance(obj, list) or len(obj) < 2 or not isinstance(obj[0], str):
        raise ProtocolError(f"expected [tag, ...] array, got {_describe(obj)}")
    tag, second = obj[0], obj[1]
    if isinstance(second, list):  # Forward
        option = _option(obj, 2)
        times, records = _entries(second)
    elif isinstance(second, (bytes, str)):  # PackedForward (str from old clients)
        option = _option(obj, 2)
        payload = second if isinstance(second, bytes) else second.encode("utf-8", "surrogateescape")
        if option.get("compressed") == "gzip":
            payload = gunzip(payload, max_size)
        elif option.get("compressed") not in (None, "text"):
            raise ProtocolError(f"unknown compression {option.get('compressed')!r}")
        times, records = _packed(payload, max_size)
    else:  # Message
        if len(obj) < 3:
            raise ProtocolError("a Message-mode array needs [tag, time, record]")
        option = _option(obj, 3)
        times, records = [_to_ns(second)], [_record(obj[2])]
    chunk = option.get("chunk")
    signal = option.get("fluent_signal", 0)
    return Entries(tag, times, records, None if chunk is None else str(chunk), size,
                   signal if isinstance(signal, int) else 0)


def _why(e: Exception) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _describe(obj: Any) -> str:
    return type(obj).__name__ if not isinstance(obj, list) else f"array of {len(obj)}"


def _option(obj: list[Any], i: int) -> dict[str, Any]:
    if len(obj) <= i or obj[i] is None:
        return {}
    if not isinstance(obj[i], dict):
        raise ProtocolError(f"the option must be a map, got {_describe(obj[i])}")
    return obj[i]


def _record(r: Any) -> dict[str, Any]:
    if not isinstance(r, dict):
        raise ProtocolError(f"a record must be a map, got {_describe(r)}")
    return r


def _entries(items: list[Any]) -> tuple[list[int], list[dict[str, Any]]]:
    times: list[int] = []
    records: list[dict[str, Any]] = []
    add_time, add_record = times.append, records.append
    for e in items:
        if type(e) is not list or len(e) != 2:
            raise ProtocolError(f"an entry must be [time, record], got {_describe(e)}")
        t, r = e
        add_time(t if type(t) is EventTime else _to_ns(t))  # EventTime: already nanoseconds
        if type(r) is not dict:
            raise ProtocolError(f"a record must be a map, got {_describe(r)}")
        add_record(r)
    return times, records


def _packed(payload: bytes, max_size: int) -> tuple[list[int], list[dict[str, Any]]]:
    u = _unpacker(max(max_size, len(payload)))
    try:
        u.feed(payload)
        items = list(u)
    except (msgpack.FormatError, msgpack.StackError, msgpack.BufferFull, ValueError, TypeError) as e:
        raise ProtocolError(f"invalid msgpack in PackedForward entries ({_why(e)})") from None
    try:
        # msgpack refuses to switch to raw reads while a value is incomplete: a cut-off entry.
        u.read_bytes(1)
    except ValueError:
        raise ProtocolError("truncated PackedForward entries") from None
    return _entries(items)


def gunzip(data: bytes, max_size: int) -> bytes:
    """Every gzip member of ``data``, decompressed; ProtocolError past ``max_size`` bytes (a zip bomb)."""
    out: list[bytes] = []
    total = 0
    while data:
        d = zlib.decompressobj(wbits=31)
        try:
            part = d.decompress(data, max_size - total + 1)
        except zlib.error as e:
            raise ProtocolError(f"invalid gzip data: {e}") from None
        total += len(part)
        if total > max_size or d.unconsumed_tail:
            raise ProtocolError(f"gzip payload inflates past Buffer_Max_Size ({max_size} bytes)")
        if not d.eof:
            raise ProtocolError("truncated gzip data")
        out.append(part)
        data = d.unused_data
    return b"".join(out)


# ------------------------------------------------------------------ client


def encode_entries(times: list[int], records: list[dict[str, Any]], *, time_as_integer: bool = False) -> bytes:
    """The PackedForward payload: ``[time, record]`` entries, concatenated."""
    packer = msgpack.Packer(autoreset=False, default=str)
    if time_as_integer:
        for t, r in zip(times, records, strict=True):
            packer.pack([t // _NS, r])
    else:
        for t, r in zip(times, records, strict=True):
            packer.pack([encode_event_time(t), r])
    return packer.bytes()


def encode_message(
    tag: str,
    times: list[int],
    records: list[dict[str, Any]],
    *,
    chunk: str | None = None,
    compress: bool = False,
    send_options: bool = False,
    time_as_integer: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> bytes:
    """One PackedForward (or CompressedPackedForward) message carrying every record."""
    payload = encode_entries(times, records, time_as_integer=time_as_integer)
    option: dict[str, Any] = dict(extra or {})
    if compress:
        payload = zlib.compress(payload, 6, wbits=31)
        option["compressed"] = "gzip"
    if chunk is not None:
        option["chunk"] = chunk
    if option or send_options:
        option["size"] = len(records)
        return msgpack.packb([tag, payload, option], use_bin_type=True)
    return msgpack.packb([tag, payload], use_bin_type=True)


@dataclass
class ClientProtocol:
    """The sending side: answers HELO with PING, checks PONG, and reports acks.

    With no shared key the connection is ready at once (``ready``). With one, the
    client waits for HELO; ``receive_data`` then returns a ``Reply`` (the PING), and
    later ``Authenticated`` or ``AuthFailed``. ``Ack`` events follow for sent chunks.
    """

    shared_key: str | None = None
    self_hostname: str = "localhost"
    username: str = ""
    password: str = ""
    max_size: int = 1 << 20
    salt: bytes = field(default_factory=lambda: os.urandom(16))
    ready: bool = False
    _nonce: bytes = b""

    def __post_init__(self) -> None:
        self._stream = _Stream(self.max_size, raw=True)  # raw: nonce and salt may be random bytes in str values
        self.ready = self.shared_key is None

    def receive_data(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        for obj, _size in self._stream.feed(data):
            if isinstance(obj, dict) and b"ack" in obj:
                events.append(Ack(_text(obj[b"ack"])))
            elif isinstance(obj, list) and obj and obj[0] == b"HELO":
                events.append(self._helo(obj))
            elif isinstance(obj, list) and obj and obj[0] == b"PONG":
                events.append(self._pong(obj))
            else:
                raise ProtocolError(f"unexpected message from the server: {_describe(obj)}")
        return events

    def _helo(self, obj: list[Any]) -> Reply:
        opts = obj[1] if len(obj) > 1 and isinstance(obj[1], dict) else {}
        if self.shared_key is None:
            raise ProtocolError("the server requires a shared key (HELO); set Shared_Key")
        self._nonce = _b(opts.get(b"nonce", b""))
        auth = _b(opts.get(b"auth", b""))
        pw = password_digest(auth, self.username, self.password) if auth else ""
        ping = ["PING", self.self_hostname, self.salt,
                shared_key_digest(self.salt, self.self_hostname, self._nonce, self.shared_key),
                self.username if auth else "", pw]
        # The salt goes as a msgpack str, not bin: Fluent Bit's server refuses a bin salt
        # ("Invalid shared_key_salt type"), and Fluentd reads either.
        return Reply(msgpack.packb(ping, use_bin_type=False))

    def _pong(self, obj: list[Any]) -> AuthFailed | Authenticated:
        if len(obj) != 5:
            raise ProtocolError("malformed PONG")
        _, ok, reason, hostname, digest = obj
        if not ok:
            return AuthFailed(f"the server refused the handshake: {_text(reason)}")
        want = shared_key_digest(self.salt, _b(hostname), self._nonce, self.shared_key or "")
        if _text(digest) != want:
            return AuthFailed("the server's shared key digest does not match (wrong Shared_Key on one side)")
        self.ready = True
        return Authenticated(_text(hostname))
