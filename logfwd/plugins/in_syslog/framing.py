"""Sans-I/O syslog stream framing (RFC 6587): octet counting and newline delimiting.

A syslog sender over TCP (or a Unix stream socket) frames each message either as
``MSG-LEN SP SYSLOG-MSG`` (octet counting, what rsyslog's ``omfwd`` sends with
``TCP_Framing="octet-counted"`` and ``logger --octet-count``) or as the message
followed by ``LF`` (non-transparent framing, the traditional way). A sender uses
one method for a whole connection, so ``SyslogFramer`` looks at the first byte a
connection sends: a digit means octet counting (a syslog message starts with
``<``), anything else means newline framing. The core does no I/O: feed it
whatever ``recv`` returned, in any chunking, and it returns complete messages.
That makes it easy to test exhaustively and to reuse for Unix and TLS streams.

Why octet counting matters: it keeps the stream in sync even when a message is
larger than we accept (we know how many bytes to skip) and it carries messages
with embedded newlines (multi-line stack traces) intact.

Limits and errors:

- a message longer than ``max_size`` is truncated to ``max_size`` bytes or
  dropped (``oversize="truncate"|"drop"``) and counted in ``truncated`` /
  ``dropped``; the connection carries on;
- an octet-counted stream whose length field is not a number is *malformed*:
  the framer can never find the next message again, so it sets ``error`` and
  returns no further messages; the caller closes that connection (and only that
  one) and counts it.
"""

from __future__ import annotations

__all__ = ["SyslogFramer", "FRAMINGS", "OVERSIZE"]

FRAMINGS = ("auto", "newline", "octet_counting")
OVERSIZE = ("truncate", "drop")

# A length field longer than this is not a length but garbage: 10 digits is
# already far more than any sane max_size, and bounds the bytes we buffer while
# looking for the space.
_MAX_LEN_DIGITS = 10
_DIGITS = frozenset(b"0123456789")


class SyslogFramer:
    """Turns a byte stream into syslog messages; one instance per connection.

    ``feed(data)`` returns the messages completed by ``data`` (bytes, without
    framing: the length prefix, the trailing LF and a CR before it are removed).
    ``close()`` returns what an orderly end of stream completes: the last
    newline-framed message without its LF. A partial octet-counted frame at the
    end of a stream is a truncated transfer, counted in ``incomplete``.
    """

    __slots__ = (
        "max_size",
        "oversize",
        "framing",
        "error",
        "truncated",
        "dropped",
        "incomplete",
        "_buf",
        "_need",
        "_skip",
        "_skip_after",
        "_discarding",
    )

    def __init__(self, max_size: int = 32768, oversize: str = "truncate", framing: str = "auto") -> None:
        if framing not in FRAMINGS:
            raise ValueError(f"framing must be one of {FRAMINGS}, got {framing!r}")
        if oversize not in OVERSIZE:
            raise ValueError(f"oversize must be one of {OVERSIZE}, got {oversize!r}")
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.max_size = max_size
        self.oversize = oversize
        # "auto" becomes "newline" or "octet_counting" at the first byte.
        self.framing = framing
        self.error: str | None = None
        self.truncated = 0
        self.dropped = 0
        self.incomplete = 0
        self._buf = bytearray()
        # octet counting: bytes of the current message body still expected
        # (None while reading a length field); _skip: body bytes to discard now
        # (a dropped oversize message); _skip_after: bytes to discard once the
        # kept head of a truncated oversize message is complete.
        self._need: int | None = None
        self._skip = 0
        self._skip_after = 0
        # newline framing: discarding the rest of an oversize line
        self._discarding = False

    # ------------------------------------------------------------------ public

    def feed(self, data: bytes) -> list[bytes]:
        """Messages completed by ``data``; [] once ``error`` is set."""
        if self.error is not None or not data:
            return []
        if self.framing == "auto":
            self.framing = "octet_counting" if data[0] in _DIGITS else "newline"
        if self.framing == "newline":
            return self._feed_newline(data)
        return self._feed_octets(data)

    def close(self) -> list[bytes]:
        """End of stream: the unterminated last newline-framed message, if any."""
        if self.error is not None:
            return []
        out: list[bytes] = []
        if self.framing == "newline":
            if self._buf and not self._discarding:
                msg = bytes(self._buf)
                if msg.endswith(b"\r"):
                    msg = msg[:-1]
                if msg:
                    out.append(msg)
        elif self._buf or self._need is not None:
            self.incomplete += 1
        self._buf.clear()
        self._need = None
        self._discarding = False
        return out

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete message (bounded by max_size + a length field)."""
        return len(self._buf)

    # ---------------------------------------------------------------- newline

    def _feed_newline(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        max_size = self.max_size
        start = 0
        n = len(data)
        while start < n:
            nl = data.find(b"\n", start)
            if nl < 0:
                # No terminator: hold the tail, unless it already exceeds the limit.
                if not self._discarding:
                    self._buf += data[start:]
                    if len(self._buf) > max_size:
                        self._oversize_line(out)
                break
            if self._discarding:
                self._discarding = False
            else:
                if self._buf:
                    self._buf += data[start:nl]
                    line = bytes(self._buf)
                    self._buf.clear()
                else:
                    line = data[start:nl]
                if line.endswith(b"\r"):
                    line = line[:-1]
                if len(line) > max_size:
                    if self.oversize == "truncate":
                        self.truncated += 1
                        out.append(line[:max_size])
                    else:
                        self.dropped += 1
                elif line:
                    out.append(line)
            start = nl + 1
        return out

    def _oversize_line(self, out: list[bytes]) -> None:
        """The held line is longer than max_size and still has no LF."""
        if self.oversize == "truncate":
            self.truncated += 1
            out.append(bytes(self._buf[: self.max_size]))
        else:
            self.dropped += 1
        self._buf.clear()
        self._discarding = True

    # --------------------------------------------------------- octet counting

    def _feed_octets(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        buf = self._buf
        pos = 0
        n = len(data)
        max_size = self.max_size
        while pos < n:
            if self._skip:
                take = min(self._skip, n - pos)
                self._skip -= take
                pos += take
                continue
            if self._need is None:
                if not buf:
                    # Some senders put an LF after the counted bytes: tolerate
                    # CR/LF between frames instead of calling the stream malformed.
                    while pos < n and data[pos] in (0x0A, 0x0D):
                        pos += 1
                    if pos == n:
                        break
                # Reading "LEN SP": at most _MAX_LEN_DIGITS digits, the first not 0.
                limit = pos + _MAX_LEN_DIGITS + 1 - len(buf)
                sp = data.find(b" ", pos, limit)
                if sp < 0:
                    part = data[pos:limit]
                    if not part.isdigit() or len(buf) + len(part) > _MAX_LEN_DIGITS or (
                        not buf and part[0] == 0x30
                    ):
                        return self._fail(out, f"bad octet count {(bytes(buf) + part)[:16]!r}")
                    buf += part
                    break
                field = bytes(buf) + data[pos:sp]
                buf.clear()
                if not field.isdigit() or field[0] == 0x30:
                    return self._fail(out, f"bad octet count {field[:16]!r}")
                length = int(field)
                pos = sp + 1
                if length <= max_size:
                    self._need = length
                    self._skip_after = 0
                elif self.oversize == "truncate":
                    self.truncated += 1
                    self._need = max_size
                    self._skip_after = length - max_size
                else:
                    self.dropped += 1
                    self._skip = length
                continue
            take = min(self._need, n - pos)
            if take == self._need and not buf:
                msg = data[pos : pos + take]
            else:
                buf += data[pos : pos + take]
                msg = None
            self._need -= take
            pos += take
            if self._need == 0:
                if msg is None:
                    msg = bytes(buf)
                    buf.clear()
                self._need = None
                self._skip = self._skip_after
                self._skip_after = 0
                msg = _strip_trailer(msg)
                if msg:
                    out.append(msg)
        return out

    def _fail(self, out: list[bytes], reason: str) -> list[bytes]:
        self.error = reason
        self._buf.clear()
        self._need = None
        return out


def _strip_trailer(msg: bytes) -> bytes:
    """rsyslog counts a trailing LF inside the frame; it is framing, not message."""
    if msg.endswith(b"\n"):
        msg = msg[:-1]
        if msg.endswith(b"\r"):
            msg = msg[:-1]
    return msg
