# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Hot path: line framing, parser kernels, time parsing, serializers.

Everything here works on a whole chunk or a whole list of lines per call, so
that the per-line cost is C code and not interpreter dispatch (see the
"Performance notes" in DESIGN.md). The functions are pure (no I/O), take bytes
or str, never raise on any input content, and report a line they cannot handle
as ``None`` (the caller keeps it raw and counts it) or as ``NEED_REGEX`` (the
caller runs the exact regular expression instead, for the rare inputs a native
kernel does not model, such as a value with an embedded newline).

Native kernels (``syslog_batch``, ``syslog5424_batch``, ``cri_batch``) yield the
same named fields as Fluent Bit's regular expressions for those formats; the
test suite checks them against the regular expressions on random input.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_DelItem, PyDict_GetItem, PyDict_New, PyDict_Next, PyDict_SetItem
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.long cimport PyLong_FromLongLong
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF
from cpython.unicode cimport PyUnicode_Check, PyUnicode_CheckExact, PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memchr, memcmp, memcpy

cimport cython

from logfwd._serial cimport _as_int64, _BytesOut, _dump_record, _iso_text, _sec_nsec, _view

import orjson

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object o, Py_ssize_t* size) except NULL

cdef extern from "time.h" nogil:
    ctypedef long time_t
    struct tm:
        int tm_sec
        int tm_min
        int tm_hour
        int tm_mday
        int tm_mon
        int tm_year
        int tm_wday
        int tm_yday
        int tm_isdst
    time_t mktime(tm* t)

__all__ = [
    "LineFramer", "TimeParser", "apply_time", "json_batch", "regex_batch", "syslog_batch",
    "syslog5424_batch", "cri_batch", "logfmt_batch", "ltsv_batch", "unescape", "decode_lines",
    "NEED_REGEX", "iso_time", "out_file_lines", "json_lines",
]


class _NeedRegex:
    """Sentinel: the native kernel does not model this input; run the regular expression."""

    def __repr__(self) -> str:
        return "NEED_REGEX"


NEED_REGEX = _NeedRegex()

cdef object _orjson_loads = orjson.loads
cdef object _orjson_dumps = orjson.dumps
cdef str K_STREAM = "stream"
cdef str K_TIME = "time"
cdef str K_PRI = "pri"
cdef str K_HOST = "host"
cdef str K_IDENT = "ident"
cdef str K_PID = "pid"
cdef str K_MSGID = "msgid"
cdef str K_EXTRADATA = "extradata"
cdef str K_MESSAGE = "message"
cdef str K_LOGTAG = "logtag"
cdef str V_STDOUT = "stdout"
cdef str V_STDERR = "stderr"


# --------------------------------------------------------------------------- helpers

cdef inline str _dec(const char* p, Py_ssize_t n):
    """UTF-8 to str; invalid bytes become U+FFFD so every record stays serializable."""
    return PyUnicode_DecodeUTF8(p, n, "replace")


def decode_lines(list lines):
    """Each bytes line as str (UTF-8, invalid bytes → U+FFFD); str items pass through."""
    cdef Py_ssize_t i, n = len(lines)
    cdef list out = PyList_New(n)
    cdef object o, s
    for i in range(n):
        o = lines[i]
        if PyUnicode_CheckExact(o):
            s = o
        elif PyBytes_CheckExact(o):
            s = _dec(PyBytes_AS_STRING(o), PyBytes_GET_SIZE(o))
        else:
            s = _dec_obj(o)
        Py_INCREF(s)
        PyList_SET_ITEM(out, i, s)
    return out


cdef str _dec_obj(object o):
    if isinstance(o, str):
        return str(o)
    try:
        return bytes(o).decode("utf-8", "replace")
    except Exception:
        return str(o)


cdef class _Buf:
    """A growable scratch buffer reused across lines (unescaping)."""
    cdef char* data
    cdef Py_ssize_t cap

    def __cinit__(self):
        self.data = NULL
        self.cap = 0

    def __dealloc__(self):
        if self.data != NULL:
            free(self.data)

    cdef int reserve(self, Py_ssize_t n) except -1:
        cdef char* p
        if n <= self.cap:
            return 0
        if n < 256:
            n = 256
        p = <char*>realloc(self.data, n)
        if p == NULL:
            raise MemoryError()
        self.data = p
        self.cap = n
        return 0


# --------------------------------------------------------------------------- framing

cdef class LineFramer:
    """Split a byte stream into lines across chunk boundaries.

    ``feed`` returns the complete lines of the data seen so far (``\\n`` and a
    trailing ``\\r`` stripped) and, per line, the absolute stream offset just past
    its ``\\n``: an input checkpoints that offset once the line is delivered, so
    a restart resumes at a line boundary. A line longer than ``max_line_size``
    is dropped whole (``skip_long_lines``) or truncated to ``max_line_size``;
    either way it is counted once in ``long_lines`` and is emitted (or dropped)
    only when its ``\\n`` arrives, so its offset is still a line boundary and
    memory stays bounded by ``max_line_size`` however long the line is.
    """

    cdef public Py_ssize_t max_line_size
    cdef public bint skip_long_lines
    cdef public long long offset
    cdef public long long long_lines
    cdef bytearray _tail
    cdef bint _over
    cdef long long _tail_total

    def __init__(self, Py_ssize_t max_line_size=32768, bint skip_long_lines=True, long long offset=0):
        if max_line_size < 1:
            raise ValueError("max_line_size must be at least 1")
        self.max_line_size = max_line_size
        self.skip_long_lines = skip_long_lines
        self.offset = offset
        self.long_lines = 0
        self._tail = bytearray()
        self._over = False
        self._tail_total = 0

    @property
    def pending(self) -> int:
        """Bytes since the end of the last complete line (the unterminated tail)."""
        return self._tail_total

    def reset(self, long long offset=0) -> None:
        """Forget the held tail (after a truncation or a seek) and restart at ``offset``."""
        self.offset = offset
        self._tail = bytearray()
        self._over = False
        self._tail_total = 0

    cdef inline void _absorb(self, const char* p, Py_ssize_t k):
        """Add bytes of the unterminated line to the tail, switching to overflow past the limit."""
        if k <= 0:
            return
        self._tail_total += k
        if self._over:
            return
        self._tail.extend(p[:k])
        if len(self._tail) > self.max_line_size + 1:
            self._over = True
            self.long_lines += 1
            if self.skip_long_lines:
                self._tail = bytearray()
            else:
                del self._tail[self.max_line_size:]

    cdef inline void _emit(self, list lines, list offs, const char* p, Py_ssize_t ln, long long off):
        """One complete line (``\\n`` already excluded): strip ``\\r``, apply the limit."""
        if ln > 0 and p[ln - 1] == b'\r':
            ln -= 1
        if ln > self.max_line_size:
            self.long_lines += 1
            if self.skip_long_lines:
                return
            ln = self.max_line_size
        lines.append(PyBytes_FromStringAndSize(p, ln))
        offs.append(PyLong_FromLongLong(off))

    cdef void _finish_tail(self, list lines, list offs, long long off):
        cdef bytes t
        if self._over:
            if not self.skip_long_lines:
                lines.append(bytes(self._tail))
                offs.append(PyLong_FromLongLong(off))
        else:
            t = bytes(self._tail)
            self._emit(lines, offs, PyBytes_AS_STRING(t), PyBytes_GET_SIZE(t), off)
        self._tail = bytearray()
        self._over = False
        self._tail_total = 0

    def feed(self, data) -> tuple:
        """Complete lines in ``data`` (plus the held tail) and their end offsets."""
        cdef list lines = []
        cdef list offs = []
        cdef const char* p
        cdef const char* nl
        cdef Py_ssize_t n, pos = 0, e
        cdef long long base
        if not PyBytes_CheckExact(data):
            data = bytes(data)
        p = PyBytes_AS_STRING(data)
        n = PyBytes_GET_SIZE(data)
        base = self.offset
        self.offset += n
        if n == 0:
            return lines, offs
        if self._tail_total > 0:
            nl = <const char*>memchr(p, b'\n', n)
            if nl == NULL:
                self._absorb(p, n)
                return lines, offs
            e = nl - p
            self._absorb(p, e)
            self._finish_tail(lines, offs, base + e + 1)
            pos = e + 1
        while pos < n:
            nl = <const char*>memchr(p + pos, b'\n', n - pos)
            if nl == NULL:
                break
            e = nl - p
            self._emit(lines, offs, p + pos, e - pos, base + e + 1)
            pos = e + 1
        if pos < n:
            self._absorb(p + pos, n - pos)
        return lines, offs

    def flush(self) -> tuple:
        """Emit the unterminated tail as a line (at end of file, or before a rotation)."""
        cdef list lines = []
        cdef list offs = []
        if self._tail_total > 0:
            self._finish_tail(lines, offs, self.offset)
        return lines, offs


# --------------------------------------------------------------------------- time

cdef enum:
    _TC_MAX = 48  # longest value prefix/suffix TimeParser keeps for its last-value cache


cdef struct TmParts:
    int year
    int mon
    int mday
    int hour
    int minute
    int sec
    int yday
    long nsec
    int tzoff
    int pm
    bint hour12
    bint has_tz
    bint has_year
    bint has_mon
    bint has_mday
    bint has_yday
    bint has_epoch
    long long epoch
    int nfrac              # how many %L/%f the parse went through
    Py_ssize_t frac_at     # where the (last) fraction's digits start in the value
    Py_ssize_t frac_end    # and where they end

cdef const char* _MONTHS[12]
_MONTHS[:] = [b"january", b"february", b"march", b"april", b"may", b"june", b"july", b"august",
              b"september", b"october", b"november", b"december"]
cdef const char* _WDAYS[7]
_WDAYS[:] = [b"sunday", b"monday", b"tuesday", b"wednesday", b"thursday", b"friday", b"saturday"]


cdef inline unsigned char _lower(unsigned char c):
    if c >= b'A' and c <= b'Z':
        return c + 32
    return c


cdef inline bint _isspace(unsigned char c):
    return c == b' ' or c == b'\t' or c == b'\n' or c == b'\r' or c == b'\v' or c == b'\f'


cdef inline Py_ssize_t _num(const unsigned char* s, Py_ssize_t j, Py_ssize_t sl, int maxw, long* out):
    """Up to ``maxw`` digits after optional blanks (as glibc strptime); -1 if none."""
    cdef long v = 0
    cdef int w = 0
    while j < sl and s[j] == b' ':
        j += 1
    while j < sl and w < maxw and s[j] >= b'0' and s[j] <= b'9':
        v = v * 10 + (s[j] - 48)
        j += 1
        w += 1
    if w == 0:
        return -1
    out[0] = v
    return j


cdef inline Py_ssize_t _name(const unsigned char* s, Py_ssize_t j, Py_ssize_t sl, const char** names, int count,
                             int* idx):
    """A month or weekday name, full or abbreviated to three letters, any case."""
    cdef int k, m
    cdef const unsigned char* nm
    for k in range(count):
        nm = <const unsigned char*>names[k]
        if j + 3 <= sl and _lower(s[j]) == nm[0] and _lower(s[j + 1]) == nm[1] and _lower(s[j + 2]) == nm[2]:
            m = 3
            while nm[m] != 0 and j + m < sl and _lower(s[j + m]) == nm[m]:
                m += 1
            if nm[m] != 0:
                m = 3  # partial full name: take the abbreviation only
            idx[0] = k
            return j + m
    return -1


cdef inline Py_ssize_t _fraction(const unsigned char* s, Py_ssize_t j, Py_ssize_t sl, long* ns) noexcept:
    """``%L``: the digits from ``j`` (all of them, the first nine counted) as nanoseconds; the index reached."""
    cdef long frac = 0
    cdef int w = 0
    while j < sl and s[j] >= b'0' and s[j] <= b'9':
        if w < 9:
            frac = frac * 10 + (s[j] - 48)
            w += 1
        j += 1
    while w < 9:
        frac *= 10
        w += 1
    ns[0] = frac
    return j


cdef Py_ssize_t _strptime(const unsigned char* f, Py_ssize_t fl, const unsigned char* s, Py_ssize_t sl,
                          Py_ssize_t j, bint strict, TmParts* t):
    """Parse ``s`` from ``j`` by strptime format ``f``; the index reached, or -1.

    glibc rules: blanks in the format match any run of blanks; numbers may have
    leading blanks; trailing input is ignored. ``%L`` reads fractional seconds
    (Fluent Bit's extension). With ``strict`` off the input may end early (a
    time without the fraction the format asks for still parses).
    """
    cdef Py_ssize_t i = 0, j0
    cdef unsigned char c, d
    cdef long v
    cdef int idx, w, sign
    cdef long frac
    while i < fl:
        c = f[i]
        if _isspace(c):
            while j < sl and _isspace(s[j]):
                j += 1
            i += 1
            continue
        if c != b'%':
            if j < sl and s[j] == c:
                i += 1
                j += 1
                continue
            if not strict and j >= sl:
                return j
            if not strict and i + 2 < fl and f[i + 1] == b'%' and (f[i + 2] == b'L' or f[i + 2] == b'f'):
                i += 3  # permissive: a time without the fraction its format has
                continue
            return -1
        i += 1
        if i >= fl:
            return -1
        d = f[i]
        i += 1
        if (d == b'E' or d == b'O') and i < fl:
            d = f[i]
            i += 1
        if d == b'n' or d == b't':
            while j < sl and _isspace(s[j]):
                j += 1
            continue
        if j >= sl:
            if not strict:
                return j
            return -1
        if d == b'%':
            if s[j] != b'%':
                return -1
            j += 1
        elif d == b'Y':
            sign = 1
            if s[j] == b'-' or s[j] == b'+':
                sign = -1 if s[j] == b'-' else 1
                j += 1
            j = _num(s, j, sl, 4, &v)
            if j < 0:
                return -1
            t.year = sign * v
            t.has_year = True
        elif d == b'y':
            j = _num(s, j, sl, 2, &v)
            if j < 0:
                return -1
            t.year = (1900 + v) if v >= 69 else (2000 + v)
            t.has_year = True
        elif d == b'C':
            j = _num(s, j, sl, 2, &v)
            if j < 0:
                return -1
            t.year = v * 100 + (t.year % 100 if t.has_year else 0)
            t.has_year = True
        elif d == b'm':
            j = _num(s, j, sl, 2, &v)
            if j < 0 or v < 1 or v > 12:
                return -1
            t.mon = v
            t.has_mon = True
        elif d == b'd' or d == b'e':
            j = _num(s, j, sl, 2, &v)
            if j < 0 or v < 1 or v > 31:
                return -1
            t.mday = v
            t.has_mday = True
        elif d == b'H' or d == b'k':
            j = _num(s, j, sl, 2, &v)
            if j < 0 or v > 23:
                return -1
            t.hour = v
            t.hour12 = False
        elif d == b'I' or d == b'l':
            j = _num(s, j, sl, 2, &v)
            if j < 0 or v < 1 or v > 12:
                return -1
            t.hour = v
            t.hour12 = True
        elif d == b'M':
            j = _num(s, j, sl, 2, &v)
            if j < 0 or v > 59:
                return -1
            t.minute = v
        elif d == b'S':
            j = _num(s, j, sl, 2, &v)
            if j < 0 or v > 61:
                return -1
            t.sec = v
        elif d == b'L' or d == b'f':
            j0 = j
            j = _fraction(s, j, sl, &frac)
            if j == j0:
                if strict:
                    return -1
            t.nfrac += 1
            t.frac_at = j0
            t.frac_end = j
            t.nsec = frac
        elif d == b'j':
            j = _num(s, j, sl, 3, &v)
            if j < 0 or v < 1 or v > 366:
                return -1
            t.yday = v
            t.has_yday = True
        elif d == b'b' or d == b'B' or d == b'h':
            j = _name(s, j, sl, _MONTHS, 12, &idx)
            if j < 0:
                return -1
            t.mon = idx + 1
            t.has_mon = True
        elif d == b'a' or d == b'A':
            j = _name(s, j, sl, _WDAYS, 7, &idx)
            if j < 0:
                return -1
        elif d == b'p':
            if j + 2 <= sl and (_lower(s[j]) == b'a' or _lower(s[j]) == b'p') and _lower(s[j + 1]) == b'm':
                t.pm = 1 if _lower(s[j]) == b'p' else 0
                j += 2
            else:
                return -1
        elif d == b'z':
            if s[j] == b'Z' or s[j] == b'z':
                t.tzoff = 0
                t.has_tz = True
                j += 1
            elif s[j] == b'+' or s[j] == b'-':
                sign = -1 if s[j] == b'-' else 1
                j += 1
                if j + 2 > sl or not (b'0' <= s[j] <= b'9' and b'0' <= s[j + 1] <= b'9'):
                    return -1
                v = (s[j] - 48) * 10 + (s[j + 1] - 48)
                j += 2
                w = 0
                if j < sl and s[j] == b':':
                    j += 1
                if j + 2 <= sl and b'0' <= s[j] <= b'9' and b'0' <= s[j + 1] <= b'9':
                    w = (s[j] - 48) * 10 + (s[j + 1] - 48)
                    j += 2
                elif j > 0 and s[j - 1] == b':':
                    return -1
                if v > 24 or w > 59:
                    return -1
                t.tzoff = sign * (v * 3600 + w * 60)
                t.has_tz = True
            elif j + 3 <= sl and ((s[j] == b'U' and s[j + 1] == b'T' and s[j + 2] == b'C')
                                  or (s[j] == b'G' and s[j + 1] == b'M' and s[j + 2] == b'T')):
                t.tzoff = 0
                t.has_tz = True
                j += 3
            else:
                return -1
        elif d == b'Z':
            j0 = j
            while j < sl and ((b'A' <= s[j] <= b'Z') or (b'a' <= s[j] <= b'z')):
                j += 1
            if j == j0:
                return -1
            if (j - j0 == 3 and ((s[j0] == b'U' and s[j0 + 1] == b'T' and s[j0 + 2] == b'C')
                                 or (s[j0] == b'G' and s[j0 + 1] == b'M' and s[j0 + 2] == b'T'))) \
                    or (j - j0 == 1 and s[j0] == b'Z'):
                t.tzoff = 0
                t.has_tz = True
        elif d == b's':
            sign = 1
            if s[j] == b'-':
                sign = -1
                j += 1
            j0 = j
            t.epoch = 0
            while j < sl and s[j] >= b'0' and s[j] <= b'9' and j - j0 < 18:
                t.epoch = t.epoch * 10 + (s[j] - 48)
                j += 1
            if j == j0:
                return -1
            t.epoch *= sign
            t.has_epoch = True
        elif d == b'T':
            j = _strptime(<const unsigned char*>b"%H:%M:%S", 8, s, sl, j, strict, t)
        elif d == b'R':
            j = _strptime(<const unsigned char*>b"%H:%M", 5, s, sl, j, strict, t)
        elif d == b'r':
            j = _strptime(<const unsigned char*>b"%I:%M:%S %p", 11, s, sl, j, strict, t)
        elif d == b'D':
            j = _strptime(<const unsigned char*>b"%m/%d/%y", 8, s, sl, j, strict, t)
        elif d == b'F':
            j = _strptime(<const unsigned char*>b"%Y-%m-%d", 8, s, sl, j, strict, t)
        else:
            return -1
        if j < 0:
            return -1
    return j


cdef inline int64_t _days_from_civil(int64_t y, int m, int d):
    """Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm)."""
    cdef int64_t era, yoe, doy, doe
    if m <= 2:
        y -= 1
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


cdef inline int _year_of_days(int64_t z):
    cdef int64_t era, doe, yoe, y, doy, mp, m
    z += 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    m = mp + 3 if mp < 10 else mp - 9
    return <int>(y + (1 if m <= 2 else 0))


cdef inline bint _is_leap(int64_t y):
    return (y % 4 == 0 and y % 100 != 0) or y % 400 == 0


cdef class TimeParser:
    """A compiled ``Time_Format`` with Fluent Bit's time options.

    ``parse(value, now_ns)`` gives int nanoseconds since the epoch, or None when
    the value does not fit the format. Zone rules, in order: an offset in the
    value (``%z``); ``Time_Offset``; ``Time_System_Timezone`` (the local zone,
    ``TZ``); else UTC. A format without a year (RFC 3164's ``%b %d %H:%M:%S``)
    takes the year of ``now``, or the year before when that would put the time
    more than a day in the future (December lines read in January).
    """

    cdef bytes _fmt
    cdef public str format
    cdef public bint strict
    cdef public bint system_tz
    cdef public long offset
    cdef long long _lt_key
    cdef long long _lt_off
    # The last value parsed, minus its fraction digits, and the seconds it gave: log
    # lines come many to a second, so most values differ from the previous one only in
    # the fraction (or not at all), and the format need not be interpreted again.
    cdef bint _tc_ok
    cdef bint _tc_frac
    cdef Py_ssize_t _tc_plen
    cdef Py_ssize_t _tc_slen
    cdef int64_t _tc_secs
    cdef unsigned char _tc_pre[_TC_MAX]
    cdef unsigned char _tc_suf[_TC_MAX]

    def __init__(self, str fmt, long offset=0, bint system_tz=False, bint strict=True):
        self.format = fmt
        self._fmt = fmt.encode("utf-8")
        self.offset = offset
        self.system_tz = system_tz
        self.strict = strict
        self._lt_key = -(1 << 62)
        self._lt_off = 0
        self._tc_ok = False

    cdef inline bint _recall(self, const char* s, Py_ssize_t n, int64_t* out):
        """The time of ``s`` from the last parse, when only its fraction digits differ.

        Equivalent to a full parse: the bytes before the fraction are the same, so the
        format consumed them the same way (the field before the fraction stopped at a
        digit then as now); the fraction is read greedily to the first non-digit, as
        ``_strptime`` does; and what follows is byte for byte the same, zone included.
        """
        cdef Py_ssize_t p = self._tc_plen, j
        cdef long frac
        if n < p or memcmp(s, self._tc_pre, p) != 0:
            return False
        if not self._tc_frac:
            if n != p:
                return False
            out[0] = self._tc_secs * 1000000000
            return True
        j = _fraction(<const unsigned char*>s, p, n, &frac)
        if j == p or n - j != self._tc_slen or memcmp(s + j, self._tc_suf, self._tc_slen) != 0:
            return False
        out[0] = self._tc_secs * 1000000000 + frac
        return True

    cdef inline void _remember(self, const char* s, Py_ssize_t n, TmParts* t, int64_t secs):
        """Keep ``s`` for ``_recall`` when its time does not depend on anything but its bytes.

        Not for values without a year (the year comes from the clock) or formats with
        more than one fraction; epochs return before it is called.
        """
        self._tc_ok = False
        if not t.has_year or t.nfrac > 1:
            return
        if t.nfrac == 1:
            if t.frac_end == t.frac_at or t.frac_at > _TC_MAX or n - t.frac_end > _TC_MAX:
                return
            self._tc_plen = t.frac_at
            self._tc_slen = n - t.frac_end
            memcpy(self._tc_suf, s + t.frac_end, self._tc_slen)
        else:
            if n > _TC_MAX:
                return
            self._tc_plen = n
            self._tc_slen = 0
        memcpy(self._tc_pre, s, self._tc_plen)
        self._tc_frac = t.nfrac == 1
        self._tc_secs = secs
        self._tc_ok = True

    cdef long long _local_offset(self, int64_t local_secs):
        """UTC offset (seconds) of the system zone at a local wall-clock time, cached per hour."""
        cdef int64_t key = local_secs // 3600
        cdef tm t
        cdef int64_t days, rem, base
        cdef time_t r
        if key == self._lt_key:
            return self._lt_off
        base = key * 3600
        days = base // 86400
        rem = base - days * 86400
        t.tm_year = _year_of_days(days) - 1900
        t.tm_mon = 0
        t.tm_mday = 1 + <int>(days - _days_from_civil(t.tm_year + 1900, 1, 1))
        t.tm_hour = <int>(rem // 3600)
        t.tm_min = 0
        t.tm_sec = 0
        t.tm_isdst = -1
        r = mktime(&t)
        if r == -1:
            return 0
        self._lt_key = key
        self._lt_off = base - r
        return self._lt_off

    cdef int parse_c(self, const char* s, Py_ssize_t n, int64_t now_ns, int64_t* out):
        cdef TmParts t
        cdef Py_ssize_t r
        cdef int64_t days, secs, now_s, y
        cdef int mon, mday
        if self._tc_ok and self._recall(s, n, out):
            return 0
        t.nfrac = 0
        t.frac_at = 0
        t.frac_end = 0
        t.year = 1970
        t.mon = 1
        t.mday = 1
        t.hour = 0
        t.minute = 0
        t.sec = 0
        t.yday = 0
        t.nsec = 0
        t.tzoff = 0
        t.pm = -1
        t.hour12 = False
        t.has_tz = False
        t.has_year = False
        t.has_mon = False
        t.has_mday = False
        t.has_yday = False
        t.has_epoch = False
        t.epoch = 0
        r = _strptime(<const unsigned char*>PyBytes_AS_STRING(self._fmt), PyBytes_GET_SIZE(self._fmt),
                      <const unsigned char*>s, n, 0, self.strict, &t)
        if r < 0:
            return -1
        if t.has_epoch:
            if t.epoch > 9200000000 or t.epoch < -9200000000:
                return -1
            out[0] = t.epoch * 1000000000 + (-t.nsec if t.epoch < 0 else t.nsec)
            return 0
        if t.hour12:
            if t.pm == 1 and t.hour < 12:
                t.hour += 12
            elif t.pm == 0 and t.hour == 12:
                t.hour = 0
        elif t.pm == 1 and t.hour < 12:
            t.hour += 12
        now_s = now_ns // 1000000000
        y = t.year if t.has_year else _year_of_days(now_s // 86400)
        mon = t.mon
        mday = t.mday
        if t.has_yday and not t.has_mon and not t.has_mday:
            days = _days_from_civil(y, 1, 1) + t.yday - 1
        else:
            days = _days_from_civil(y, mon, mday)
        secs = days * 86400 + t.hour * 3600 + t.minute * 60 + t.sec
        if not t.has_year and secs - self._zone(secs, &t) > now_s + 86400:
            y -= 1
            if mon == 2 and mday == 29 and not _is_leap(y):
                return -1
            days = _days_from_civil(y, mon, mday) if not (t.has_yday and not t.has_mon) else \
                _days_from_civil(y, 1, 1) + t.yday - 1
            secs = days * 86400 + t.hour * 3600 + t.minute * 60 + t.sec
        secs -= self._zone(secs, &t)
        if secs > 9200000000 or secs < -9200000000:  # outside int64 nanoseconds (years 1678..2262)
            return -1
        out[0] = secs * 1000000000 + t.nsec
        self._remember(s, n, &t, secs)
        return 0

    cdef inline long long _zone(self, int64_t local_secs, TmParts* t):
        if t.has_tz:
            return t.tzoff
        if self.offset != 0:
            return self.offset
        if self.system_tz:
            return self._local_offset(local_secs)
        return 0

    def parse(self, value, now_ns=None):
        """Nanoseconds since the epoch for ``value`` (str or bytes), or None."""
        cdef const char* p
        cdef Py_ssize_t n
        cdef int64_t out, now
        if _view(value, &p, &n) < 0:
            return None
        if now_ns is None:
            import time
            now = time.time_ns()
        else:
            now = now_ns
        if self.parse_c(p, n, now, &out) < 0:
            return None
        return out


def apply_time(list records, str key, TimeParser tp, bint keep, now_ns, default):
    """Per record: the time under ``key`` parsed by ``tp`` (removed unless ``keep``).

    Returns the list of times; ``default`` where a record is None, lacks the key,
    or its value does not parse (the field is then left in the record: a bad
    time never loses data).
    """
    cdef Py_ssize_t i, n = len(records)
    cdef list out = PyList_New(n)
    cdef object rec, val, res
    cdef PyObject* v
    cdef const char* p
    cdef Py_ssize_t ln
    cdef int64_t t, now = now_ns
    # Parsers that share repeated values (the PCRE2 path's value cache) hand the same str
    # object for the same time text, line after line: parse it once (same ``now`` in one call).
    cdef object last_val = None, last_res = None
    for i in range(n):
        rec = records[i]
        res = default
        if type(rec) is dict:
            v = PyDict_GetItem(rec, key)
            if v != NULL:
                val = <object>v
                if val is last_val:
                    res = last_res
                    if not keep:
                        PyDict_DelItem(rec, key)
                elif PyUnicode_CheckExact(val) or PyBytes_CheckExact(val):
                    if _view(val, &p, &ln) == 0 and tp.parse_c(p, ln, now, &t) == 0:
                        res = PyLong_FromLongLong(t)
                        last_val = val
                        last_res = res
                        if not keep:
                            PyDict_DelItem(rec, key)
        Py_INCREF(res)
        PyList_SET_ITEM(out, i, res)
    return out


# --------------------------------------------------------------------------- JSON

cdef inline int _hex4(const unsigned char* p, uint32_t* out):
    cdef uint32_t v = 0
    cdef int k
    cdef unsigned char c
    for k in range(4):
        c = p[k]
        v <<= 4
        if b'0' <= c <= b'9':
            v |= c - 48
        elif b'a' <= c <= b'f':
            v |= c - 87
        elif b'A' <= c <= b'F':
            v |= c - 55
        else:
            return -1
    out[0] = v
    return 0


cdef inline Py_ssize_t _put_utf8(char* o, uint32_t cp):
    if cp < 0x80:
        o[0] = <char>cp
        return 1
    if cp < 0x800:
        o[0] = <char>(0xC0 | (cp >> 6))
        o[1] = <char>(0x80 | (cp & 0x3F))
        return 2
    if cp < 0x10000:
        o[0] = <char>(0xE0 | (cp >> 12))
        o[1] = <char>(0x80 | ((cp >> 6) & 0x3F))
        o[2] = <char>(0x80 | (cp & 0x3F))
        return 3
    o[0] = <char>(0xF0 | (cp >> 18))
    o[1] = <char>(0x80 | ((cp >> 12) & 0x3F))
    o[2] = <char>(0x80 | ((cp >> 6) & 0x3F))
    o[3] = <char>(0x80 | (cp & 0x3F))
    return 4


cdef object _lines_decoder = None  # msgspec's decode_lines, made on first use
cdef Py_ssize_t JSON_GROUP = 512  # lines decoded per call: what one malformed line costs again


cdef inline bint _object_line(object o):
    """True when a line can share one ``decode_lines`` call with its neighbours.

    ``decode_lines`` reads whitespace-separated values, not lines, so what comes back is
    only aligned with the lines when no value can span two of them or share one: each line
    starts with ``{`` (so each starts a value), its last non-blank byte is ``}`` and it holds
    no newline. A value that went on into the next line would have to continue after a
    ``}`` with that line's ``{``, which JSON never allows (inside a string, the joining
    newline is itself an error). So a successful call returning one value per line returned
    each line's own value.
    """
    cdef const char* p
    cdef Py_ssize_t n, i
    if not PyBytes_CheckExact(o):
        return False
    p = PyBytes_AS_STRING(o)
    n = PyBytes_GET_SIZE(o)
    if n < 2 or p[0] != b'{':
        return False
    i = n - 1
    while i > 0 and (p[i] == b' ' or p[i] == b'\t' or p[i] == b'\r'):
        i -= 1
    return p[i] == b'}' and memchr(p, 10, n) == NULL


cdef bint _holds_wide_int(object v, int depth):
    """True when a decoded value holds an integer outside [-2**63, 2**64): orjson reads those as
    floats, msgspec as exact ints, and downstream encoders (orjson among them) take only the
    former; such a line is decoded again by orjson."""
    cdef Py_ssize_t pos = 0
    cdef PyObject* k
    cdef PyObject* x
    cdef type t = type(v)
    if t is int:
        return v < -9223372036854775808 or v > 18446744073709551615
    if depth > 1100:
        return True
    if t is dict:
        while PyDict_Next(v, &pos, &k, &x):
            t = type(<object>x)
            if (t is int or t is dict or t is list) and _holds_wide_int(<object>x, depth + 1):
                return True
        return False
    if t is list:
        for item in <list>v:
            t = type(item)
            if (t is int or t is dict or t is list) and _holds_wide_int(item, depth + 1):
                return True
    return False


cdef inline object _orjson_object(object o):
    try:
        r = _orjson_loads(o)
    except Exception:
        return None
    return r if type(r) is dict else None


cdef void _json_group(list out, list lines, Py_ssize_t lo, Py_ssize_t hi):
    """Decode ``lines[lo:hi]`` (all ``_object_line``) with one msgspec call; per line with
    orjson when that call fails (one malformed line) or a value holds a wide integer."""
    global _lines_decoder
    cdef Py_ssize_t i
    cdef list got = None
    if _lines_decoder is None:
        import msgspec.json  # first JSON batch only: msgspec's import is not paid by daemons without one
        _lines_decoder = msgspec.json.Decoder().decode_lines
    try:
        got = _lines_decoder(b"\n".join(lines[lo:hi]))
    except Exception:
        got = None
    if got is not None and len(got) != hi - lo:
        got = None
    for i in range(lo, hi):
        r = got[i - lo] if got is not None else None
        if r is None or _holds_wide_int(r, 0):
            r = _orjson_object(lines[i])
        out[i] = r


def json_batch(list lines):
    """A dict per line (a JSON object), or None where the line is not one.

    Runs of lines that look like one object each (``_object_line``) are decoded by msgspec,
    up to ``JSON_GROUP`` lines per call (docker json-file lines: about 0.15 CPU µs less per
    line than orjson line by line, and msgspec shares key strings between records); the
    result is orjson's, which decodes every other line and every group that fails. A test
    checks the two paths give the same records on random input.
    """
    cdef Py_ssize_t i, lo = 0, n = len(lines)
    cdef list out = [None] * n
    for i in range(n):
        if not _object_line(lines[i]):
            if lo < i:
                _json_group(out, lines, lo, i)
            out[i] = _orjson_object(lines[i])
            lo = i + 1
        elif i + 1 - lo == JSON_GROUP:
            _json_group(out, lines, lo, i + 1)
            lo = i + 1
    if lo < n:
        _json_group(out, lines, lo, n)
    return out


def json_batch_orjson(list lines):
    """``json_batch`` decoded line by line with orjson only: the reference the tests compare with."""
    return [_orjson_object(o) for o in lines]


# --------------------------------------------------------------------------- regex

cdef inline object _clean_groups(dict d, bint skip_empty):
    """Drop groups that did not take part (None) and, with Skip_Empty_Values, empty ones."""
    cdef Py_ssize_t pos = 0
    cdef PyObject* k
    cdef PyObject* v
    cdef list drop = None
    while PyDict_Next(d, &pos, &k, &v):
        if <object>v is None or (skip_empty and PyUnicode_CheckExact(<object>v) and len(<object>v) == 0):
            if drop is None:
                drop = []
            drop.append(<object>k)
    if drop is not None:
        for key in drop:
            del d[key]
    return d


cdef list _findall_records(pattern, list texts, str buf):
    """Records from one ``findall`` over the joined texts, or None when it cannot be trusted.

    Used for expressions anchored ``^…$`` at top level, with Skip_Empty_Values (``findall``
    reports a group that did not take part as "", which that option drops anyway). With
    non-empty texts free of newlines, ``n`` matches can only be one per line (each starts
    at a line start, ends at a line end, and they do not overlap), and each is the match
    ``search`` finds in its line; any other count falls back to the general scan.
    """
    cdef Py_ssize_t n = len(texts), i, j, g
    cdef list found = pattern.findall(buf)
    cdef list out
    cdef object tup, v
    cdef dict d
    if len(found) != n:
        return None
    g = pattern.groups
    names = [(name, idx - 1) for name, idx in pattern.groupindex.items()]
    cdef Py_ssize_t k = len(names)
    out = PyList_New(n)
    for i in range(n):
        tup = found[i]
        d = PyDict_New()
        if g == 1:
            if len(<str>tup) > 0:
                PyDict_SetItem(d, names[0][0], tup)
        else:
            for j in range(k):
                name, idx = names[j]
                v = (<tuple>tup)[idx]
                if len(<str>v) > 0:
                    PyDict_SetItem(d, name, v)
        Py_INCREF(d)
        PyList_SET_ITEM(out, i, d)
    return out


def regex_batch(pattern, list texts, bint skip_empty, bint whole_buffer=True, bint anchored=False):
    """A dict of named groups per text (``pattern.search`` semantics), None where it fails.

    With ``whole_buffer`` the texts are joined and scanned by one ``finditer``
    (one call into the regex engine per batch instead of one per line). A match
    is taken for a line only when it lies inside that line and the scan entered
    the line from its start, so it is the leftmost match of the line; any line
    without such a match is searched on its own. Patterns whose result depends
    on what lies outside the line (lookaround, ``\\A``/``\\Z``) must pass
    ``whole_buffer=False``. ``anchored`` (the expression is ``^…$`` at top level) allows
    the cheaper ``findall`` scan (see ``_findall_records``).
    """
    cdef Py_ssize_t i, n = len(texts), s, e, prev_end, li, total
    cdef list out = PyList_New(n)
    cdef Py_ssize_t* starts = NULL
    cdef Py_ssize_t* ends = NULL
    cdef char* done = NULL
    cdef object m, r
    search = pattern.search
    for i in range(n):
        Py_INCREF(None)
        PyList_SET_ITEM(out, i, None)
    if n == 0:
        return out
    if whole_buffer and n > 1:
        starts = <Py_ssize_t*>malloc(n * sizeof(Py_ssize_t))
        ends = <Py_ssize_t*>malloc(n * sizeof(Py_ssize_t))
        done = <char*>malloc(n)
        if starts == NULL or ends == NULL or done == NULL:
            free(starts)
            free(ends)
            free(done)
            raise MemoryError()
        try:
            total = 0
            for i in range(n):
                starts[i] = total
                total += len(<str>texts[i])
                ends[i] = total
                total += 1
                done[i] = 0
            buf = "\n".join(texts)
            if anchored and skip_empty and buf.count("\n") == n - 1:
                for i in range(n):
                    if len(<str>texts[i]) == 0:
                        break
                else:
                    r = _findall_records(pattern, texts, buf)
                    if r is not None:
                        return r
            prev_end = 0
            li = 0
            for m in pattern.finditer(buf):
                s, e = m.span()
                while li < n and ends[li] < s:
                    li += 1
                if li >= n:
                    break
                if s >= starts[li] and e <= ends[li] and prev_end <= starts[li] and not done[li]:
                    done[li] = 1
                    out[li] = _clean_groups(m.groupdict(), skip_empty)
                prev_end = e
            for i in range(n):
                if not done[i]:
                    m = search(texts[i])
                    if m is not None:
                        out[i] = _clean_groups(m.groupdict(), skip_empty)
        finally:
            free(starts)
            free(ends)
            free(done)
        return out
    for i in range(n):
        m = search(texts[i])
        if m is not None:
            out[i] = _clean_groups(m.groupdict(), skip_empty)
    return out


# --------------------------------------------------------------------------- syslog, cri

cdef inline void _put(dict d, str k, const char* p, Py_ssize_t a, Py_ssize_t b, bint skip_empty):
    if b <= a:
        if not skip_empty:
            PyDict_SetItem(d, k, "")
        return
    PyDict_SetItem(d, k, _dec(p + a, b - a))


cdef inline Py_ssize_t _token_end(const char* p, Py_ssize_t i, Py_ssize_t n):
    """End of a run of non-space bytes from ``i`` (``[^ ]*``)."""
    cdef const char* q = <const char*>memchr(p + i, b' ', n - i)
    return n if q == NULL else q - p


cdef inline bint _ident_byte(unsigned char c):
    return (b'a' <= c <= b'z') or (b'A' <= c <= b'Z') or (b'0' <= c <= b'9') or c == b'_' or c == b'/' \
        or c == b'.' or c == b'-'


cdef object _syslog3164(const char* p, Py_ssize_t n, bint has_host, bint skip_empty):
    """Fluent Bit's syslog-rfc3164 (or -local without host) expression, natively.

    ``^\\<(?<pri>[0-9]+)\\>(?<time>[^ ]* {1,2}[^ ]* [^ ]*) (?<host>[^ ]*) (?<ident>[a-zA-Z0-9_\\/\\.\\-]*)
    (?:\\[(?<pid>[0-9]+)\\])?(?:[^\\:]*\\:)? *(?<message>.*)$`` — including its one backtracking
    choice (two blanks after the month, else one blank and an empty day).
    """
    cdef Py_ssize_t i, ps, pe, ts, t1, k, t3, hs, he, ids, ide, pids, pide, ms, attempt
    cdef const char* q
    cdef dict d
    if memchr(p, b'\n', n) != NULL:
        return NEED_REGEX
    if n < 3 or p[0] != b'<':
        return None
    i = 1
    while i < n and b'0' <= p[i] <= b'9':
        i += 1
    if i == 1 or i >= n or p[i] != b'>':
        return None
    ps = 1
    pe = i
    ts = i + 1
    t1 = _token_end(p, ts, n)
    for attempt in range(2):
        k = t1
        # ` {1,2}`: two blanks first (greedy), then one
        if attempt == 0:
            if not (k + 1 < n and p[k] == b' ' and p[k + 1] == b' '):
                continue
            k += 2
        else:
            if not (k < n and p[k] == b' '):
                return None
            k += 1
        k = _token_end(p, k, n)           # [^ ]* (day)
        if k >= n or p[k] != b' ':
            continue
        t3 = _token_end(p, k + 1, n)      # [^ ]* (clock)
        if t3 >= n or p[t3] != b' ':
            continue
        if has_host:
            hs = t3 + 1
            he = _token_end(p, hs, n)
            if he >= n or p[he] != b' ':
                continue
            ids = he + 1
        else:
            hs = he = 0
            ids = t3 + 1
        break
    else:
        return None
    ide = ids
    while ide < n and _ident_byte(<unsigned char>p[ide]):
        ide += 1
    i = ide
    pids = pide = -1
    if i < n and p[i] == b'[':
        k = i + 1
        while k < n and b'0' <= p[k] <= b'9':
            k += 1
        if k > i + 1 and k < n and p[k] == b']':
            pids = i + 1
            pide = k
            i = k + 1
    q = <const char*>memchr(p + i, b':', n - i)
    if q != NULL:
        i = (q - p) + 1
    while i < n and p[i] == b' ':
        i += 1
    ms = i
    d = PyDict_New()
    _put(d, K_PRI, p, ps, pe, skip_empty)
    _put(d, K_TIME, p, ts, t3, skip_empty)
    if has_host:
        _put(d, K_HOST, p, hs, he, skip_empty)
    _put(d, K_IDENT, p, ids, ide, skip_empty)
    if pids >= 0:
        _put(d, K_PID, p, pids, pide, skip_empty)
    _put(d, K_MESSAGE, p, ms, n, skip_empty)
    return d


ctypedef object (*line_kernel)(const char* p, Py_ssize_t n, bint flag, bint skip_empty)


cdef list _map_lines(list texts, line_kernel kernel, bint flag, bint skip_empty):
    """Run a native line kernel over a batch: one C loop, one list, no per-line Python call.

    A text the kernel cannot view as UTF-8 bytes gets NEED_REGEX, so the caller falls
    back to the regex for exactly that line.
    """
    cdef Py_ssize_t i, n = len(texts)
    cdef list out = PyList_New(n)
    cdef const char* p
    cdef Py_ssize_t ln
    cdef object r
    for i in range(n):
        if _view(texts[i], &p, &ln) == 0:
            r = kernel(p, ln, flag, skip_empty)
        else:
            r = NEED_REGEX
        Py_INCREF(r)
        PyList_SET_ITEM(out, i, r)
    return out


def syslog_batch(list texts, bint has_host=True, bint skip_empty=True):
    """RFC 3164 per line (see ``_syslog3164``): dict, None (no match) or NEED_REGEX."""
    return _map_lines(texts, _syslog3164, has_host, skip_empty)


cdef object _syslog5424(const char* p, Py_ssize_t n, bint skip_empty):
    """Fluent Bit's syslog-rfc5424 expression, natively:

    ``^\\<(?<pri>[0-9]{1,5})\\>1 (?<time>[^ ]+) (?<host>[^ ]+) (?<ident>[^ ]+) (?<pid>[-0-9]+)
    (?<msgid>[^ ]+) (?<extradata>(\\[(.*)\\]|-)) (?<message>.+)$`` — the structured data runs to
    the last ``] `` that still leaves a message, as the greedy ``.*`` does.
    """
    cdef Py_ssize_t i, k, j, e, ms
    cdef Py_ssize_t f[12]
    cdef int fi
    cdef dict d
    if memchr(p, b'\n', n) != NULL:
        return NEED_REGEX
    if n < 4 or p[0] != b'<':
        return None
    i = 1
    while i < n and i <= 5 and b'0' <= p[i] <= b'9':
        i += 1
    if i == 1 or i + 3 > n or p[i] != b'>' or p[i + 1] != b'1' or p[i + 2] != b' ':
        return None
    f[0] = 1
    f[1] = i
    i += 3
    # time, host, ident, pid, msgid: each [^ ]+ followed by a blank
    for fi in range(5):
        k = _token_end(p, i, n)
        if k == i or k >= n:
            return None
        if fi == 3:
            for j in range(i, k):
                if not (p[j] == b'-' or b'0' <= p[j] <= b'9'):
                    return None
        f[2 + 2 * fi] = i
        f[3 + 2 * fi] = k
        i = k + 1
    if i < n and p[i] == b'[':
        e = -1
        j = n - 3
        while j > i:
            if p[j] == b']' and p[j + 1] == b' ':
                e = j
                break
            j -= 1
        if e < 0:
            return None
        ms = e + 2
        e += 1
    elif i + 2 < n and p[i] == b'-' and p[i + 1] == b' ':
        e = i + 1
        ms = i + 2
    else:
        return None
    d = PyDict_New()
    _put(d, K_PRI, p, f[0], f[1], skip_empty)
    _put(d, K_TIME, p, f[2], f[3], skip_empty)
    _put(d, K_HOST, p, f[4], f[5], skip_empty)
    _put(d, K_IDENT, p, f[6], f[7], skip_empty)
    _put(d, K_PID, p, f[8], f[9], skip_empty)
    _put(d, K_MSGID, p, f[10], f[11], skip_empty)
    _put(d, K_EXTRADATA, p, i, e, skip_empty)
    _put(d, K_MESSAGE, p, ms, n, skip_empty)
    return d


cdef object _syslog5424_k(const char* p, Py_ssize_t n, bint flag, bint skip_empty):
    return _syslog5424(p, n, skip_empty)


def syslog5424_batch(list texts, bint skip_empty=True):
    """RFC 5424 per line (see ``_syslog5424``): dict, None (no match) or NEED_REGEX."""
    return _map_lines(texts, _syslog5424_k, False, skip_empty)


cdef object _cri(const char* p, Py_ssize_t n, bint skip_empty):
    """Fluent Bit's cri expression ``^(?<time>[^ ]+) (?<stream>stdout|stderr) (?<logtag>[^ ]*)
    (?<message>.*)$``, natively."""
    cdef Py_ssize_t te, ls, le
    cdef object stream
    cdef dict d
    if memchr(p, b'\n', n) != NULL:
        return NEED_REGEX
    te = _token_end(p, 0, n)
    if te == 0 or te + 8 > n:
        return None
    if memcmp(p + te, b" stdout ", 8) == 0:
        stream = V_STDOUT
    elif memcmp(p + te, b" stderr ", 8) == 0:
        stream = V_STDERR
    else:
        return None
    ls = te + 8
    le = _token_end(p, ls, n)
    if le >= n:
        return None
    d = PyDict_New()
    _put(d, K_TIME, p, 0, te, skip_empty)
    PyDict_SetItem(d, K_STREAM, stream)
    _put(d, K_LOGTAG, p, ls, le, skip_empty)
    _put(d, K_MESSAGE, p, le + 1, n, skip_empty)
    return d


cdef object _cri_k(const char* p, Py_ssize_t n, bint flag, bint skip_empty):
    return _cri(p, n, skip_empty)


def cri_batch(list texts, bint skip_empty=True):
    """CRI container log lines: dict, None (no match) or NEED_REGEX."""
    return _map_lines(texts, _cri_k, False, skip_empty)


# --------------------------------------------------------------------------- escapes, logfmt, ltsv

cdef Py_ssize_t _unescape_c(const unsigned char* p, Py_ssize_t n, char* o):
    """Backslash escapes (``\\n \\t \\r \\b \\f \\" \\\\ \\/ \\uXXXX``) decoded into ``o``.

    Unknown escapes and malformed ``\\u`` are kept as written: unescaping a log
    value must never lose its text.
    """
    cdef Py_ssize_t i = 0, k = 0
    cdef unsigned char c
    cdef uint32_t cp, lo
    while i < n:
        c = p[i]
        if c != b'\\' or i + 1 >= n:
            o[k] = <char>c
            k += 1
            i += 1
            continue
        c = p[i + 1]
        if c == b'n':
            o[k] = b'\n'
        elif c == b't':
            o[k] = b'\t'
        elif c == b'r':
            o[k] = b'\r'
        elif c == b'"':
            o[k] = b'"'
        elif c == b'\\':
            o[k] = b'\\'
        elif c == b'/':
            o[k] = b'/'
        elif c == b'b':
            o[k] = b'\b'
        elif c == b'f':
            o[k] = b'\f'
        elif c == b'u' and i + 6 <= n and _hex4(p + i + 2, &cp) == 0:
            i += 6
            if 0xD800 <= cp <= 0xDBFF and i + 6 <= n and p[i] == b'\\' and p[i + 1] == b'u' \
                    and _hex4(p + i + 2, &lo) == 0 and 0xDC00 <= lo <= 0xDFFF:
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00)
                i += 6
            elif 0xD800 <= cp <= 0xDFFF:
                cp = 0xFFFD
            k += _put_utf8(o + k, cp)
            continue
        else:
            o[k] = b'\\'
            o[k + 1] = <char>c
            k += 2
            i += 2
            continue
        k += 1
        i += 2
    return k


def unescape(value):
    """A string with its backslash escapes decoded (Fluent Bit's ``escaped`` decoder, Unescape_Key)."""
    cdef const char* p
    cdef Py_ssize_t n, k
    cdef _Buf buf
    if _view(value, &p, &n) < 0:
        return value
    if memchr(p, b'\\', n) == NULL:
        return value if PyUnicode_Check(value) else _dec(p, n)
    buf = _Buf()
    buf.reserve(n + 4)
    k = _unescape_c(<const unsigned char*>p, n, buf.data)
    return _dec(buf.data, k)


cdef unsigned char _LOGFMT_IDENT[256]
for _i in range(256):
    _LOGFMT_IDENT[_i] = 1 if (_i > 0x20 and _i != 0x22 and _i != 0x3d) else 0


cdef object _logfmt(const unsigned char* p, Py_ssize_t n, bint no_bare_keys, _Buf buf):
    """Fluent Bit's logfmt grammar: ``key=value``, ``key="quoted \\"value\\""``, bare ``key`` (→ True).

    The first line only; None when there is no pair (or a bare key with ``no_bare_keys``).
    """
    cdef Py_ssize_t i = 0, ks, ke, vs, ve, k
    cdef bint value_set, value_str, value_esc
    cdef dict d = PyDict_New()
    cdef object key, val
    while i < n:
        while i < n and not _LOGFMT_IDENT[p[i]]:
            if p[i] == b'\n':
                i = n
                break
            i += 1
        if i >= n:
            break
        ks = i
        while i < n and _LOGFMT_IDENT[p[i]]:
            i += 1
        ke = i
        vs = ve = i
        value_set = value_str = value_esc = False
        if i < n and p[i] == b'=':
            value_set = True
            i += 1
            if i < n:
                if p[i] == b'"':
                    i += 1
                    vs = i
                    value_str = True
                    while i < n:
                        if p[i] == b'\\':
                            value_esc = True
                            i += 2
                        elif p[i] == b'"':
                            break
                        else:
                            i += 1
                    if i > n:
                        i = n
                    ve = i
                    if i < n:
                        i += 1
                else:
                    vs = i
                    while i < n and _LOGFMT_IDENT[p[i]]:
                        i += 1
                    ve = i
        if no_bare_keys and ve == vs and not value_set:
            return None
        key = _dec(<const char*>p + ks, ke - ks)
        if ve == vs:
            val = "" if value_str else True
        elif value_esc:
            buf.reserve(ve - vs + 4)
            k = _unescape_c(p + vs, ve - vs, buf.data)
            val = _dec(buf.data, k)
        else:
            val = _dec(<const char*>p + vs, ve - vs)
        PyDict_SetItem(d, key, val)
        if i < n and (p[i] == b'\n' or p[i] == b'\r'):
            break
    if len(d) == 0:
        return None
    return d


def logfmt_batch(list texts, bint no_bare_keys=False):
    """logfmt per line: dict or None."""
    cdef Py_ssize_t i, n = len(texts)
    cdef list out = PyList_New(n)
    cdef const char* p
    cdef Py_ssize_t ln
    cdef object r
    cdef _Buf buf = _Buf()
    for i in range(n):
        r = None
        if _view(texts[i], &p, &ln) == 0:
            r = _logfmt(<const unsigned char*>p, ln, no_bare_keys, buf)
        Py_INCREF(r)
        PyList_SET_ITEM(out, i, r)
    return out


cdef inline bint _ltsv_label(unsigned char c):
    return (b'0' <= c <= b'9') or (b'A' <= c <= b'Z') or (b'a' <= c <= b'z') or c == b'_' or c == b'.' \
        or c == b'-'


cdef inline bint _ltsv_field(unsigned char c):
    return not (c == 0 or c == b'\t' or c == b'\n' or c == b'\r')


cdef object _ltsv(const unsigned char* p, Py_ssize_t n, unsigned char sep):
    """LTSV (``label:value<TAB>…``, or TSKV with ``=``): the first line; None without a field."""
    cdef Py_ssize_t i = 0, ls, le, fs, fe
    cdef dict d = PyDict_New()
    while i < n:
        ls = i
        while i < n and _ltsv_label(p[i]):
            i += 1
        le = i
        if i >= n or p[i] != sep:
            break
        i += 1
        fs = i
        while i < n and _ltsv_field(p[i]):
            i += 1
        fe = i
        if le > ls:
            PyDict_SetItem(d, _dec(<const char*>p + ls, le - ls), _dec(<const char*>p + fs, fe - fs))
        if i >= n:
            break
        if p[i] == b'\t':
            i += 1
        if i >= n or p[i] == b'\r' or p[i] == b'\n':
            break
    if len(d) == 0:
        return None
    return d


def ltsv_batch(list texts, str separator=":"):
    """LTSV per line (``separator`` "=" gives TSKV, whose optional ``tskv\\t`` prefix is skipped)."""
    cdef Py_ssize_t i, n = len(texts)
    cdef list out = PyList_New(n)
    cdef const char* p
    cdef Py_ssize_t ln
    cdef object r
    cdef unsigned char sep = ord(separator)
    for i in range(n):
        r = None
        if _view(texts[i], &p, &ln) == 0:
            if sep == b'=' and ln >= 5 and memcmp(p, b"tskv\t", 5) == 0:
                p += 5
                ln -= 5
            r = _ltsv(<const unsigned char*>p, ln, sep)
        Py_INCREF(r)
        PyList_SET_ITEM(out, i, r)
    return out


# --------------------------------------------------------------------------- serializers

# The pieces the serializers share (record → JSON, time → text, the growing bytes result)
# live in ``_serial.pxd`` / ``_serial.pyx``; the output plugins' kernels (es ``_bulk``,
# influxdb ``_lineproto``, kafka ``_kafka``) cimport them from there, beside their plugin.

def iso_time(int64_t ns, bint nanos=False):
    """``2024-01-01T00:00:00.123Z`` (or nine fraction digits with ``nanos``) of int nanoseconds."""
    cdef char o[40]
    return PyBytes_FromStringAndSize(o, _iso_text(ns, 9 if nanos else 3, o)).decode("ascii")


# --------------------------------------------------------------------------- multiline docker

cdef inline int _digits(const char* s, Py_ssize_t a, Py_ssize_t b, int64_t* out):
    """ASCII digits s[a:b] as a number; -1 if any is not one."""
    cdef int64_t v = 0
    cdef Py_ssize_t i
    cdef char c
    for i in range(a, b):
        c = s[i]
        if c < b'0' or c > b'9':
            return -1
        v = v * 10 + (c - 48)
    out[0] = v
    return 0


cdef int _rfc3339_z(const char* s, Py_ssize_t n, int64_t* out):
    """Docker's own time form ``2024-05-01T10:00:00.123456789Z`` (ASCII digits only) in ns.

    -1 for anything else: the caller then asks ``multiline.rfc3339_ns``, so both agree
    on every input. The arithmetic is ``calendar.timegm``'s (the day, hour, minute and
    second fields are added linearly; a month outside 1..12 or year 0 is refused there).
    """
    cdef int64_t y, mo, d, h, mi, sec, frac
    cdef Py_ssize_t k
    if n < 22 or s[n - 1] != b'Z' or s[19] != b'.':
        return -1
    if s[4] != b'-' or s[7] != b'-' or (s[10] != b'T' and s[10] != b't' and s[10] != b' ') \
            or s[13] != b':' or s[16] != b':':
        return -1
    if _digits(s, 0, 4, &y) < 0 or _digits(s, 5, 7, &mo) < 0 or _digits(s, 8, 10, &d) < 0 \
            or _digits(s, 11, 13, &h) < 0 or _digits(s, 14, 16, &mi) < 0 or _digits(s, 17, 19, &sec) < 0:
        return -1
    if y < 1700 or y > 2200 or mo < 1 or mo > 12:  # the rest (Python ints beyond 64 bits) is the caller's
        return -1
    k = n - 21
    if k > 9:
        # only the first nine digits count (the rest must still be digits)
        if _digits(s, 29, n - 1, &frac) < 0 or _digits(s, 20, 29, &frac) < 0:
            return -1
    else:
        if _digits(s, 20, n - 1, &frac) < 0:
            return -1
        while k < 9:
            frac *= 10
            k += 1
    out[0] = ((((_days_from_civil(y, <int>mo, 1) + d - 1) * 24 + h) * 60 + mi) * 60 + sec) * 1000000000 + frac
    return 0


cdef str K_LOG = "log"


def docker_ml_batch(list texts, list times, str key, str match, bint negate, rfc_fallback):
    """The docker multiline parser's per-batch work: decode, time, "is the line complete".

    Per text: ``orjson.loads``; a dict whose ``log`` is a str is a docker record (else
    None). Its time is its ``time`` (docker's form parsed here, any other string by
    ``rfc_fallback``, which gives int ns or None), else ``times[i]``. A line is
    complete when the record's ``key`` is a str that ends with ``match`` (``!= negate``).

    Returns ``(times, records, others)``: ``others`` lists, in order, the indices of the
    lines that are not complete docker records (the caller's state machine takes those).
    """
    cdef Py_ssize_t i, n = len(texts), mlen = len(match)
    cdef list out_t = PyList_New(n)
    cdef list out_r = PyList_New(n)
    cdef list others = []
    cdef object o, r, t, ts
    cdef PyObject* v
    cdef const char* p
    cdef const char* mp
    cdef Py_ssize_t ln, mn
    cdef int64_t ns
    cdef bint ok
    if len(times) != n:
        raise ValueError("texts and times must have the same length")
    if _view(match, &mp, &mn) < 0:
        raise ValueError("match must be UTF-8 text")
    for i in range(n):
        o = texts[i]
        t = times[i]
        r = _orjson_object(o)
        ok = False
        if r is not None:
            v = PyDict_GetItem(r, K_LOG)
            if v == NULL or not PyUnicode_CheckExact(<object>v):
                r = None
        if r is not None:
            v = PyDict_GetItem(r, K_TIME)
            if v != NULL and PyUnicode_CheckExact(<object>v):
                ts = <object>v
                if _view(ts, &p, &ln) == 0 and _rfc3339_z(p, ln, &ns) == 0:
                    t = PyLong_FromLongLong(ns)
                else:
                    ts = rfc_fallback(ts)
                    if ts is not None:
                        t = ts
            v = PyDict_GetItem(r, key)
            if v != NULL and PyUnicode_CheckExact(<object>v):
                o = <object>v
                if len(<str>o) >= mlen:
                    if _view(o, &p, &ln) == 0 and ln >= mn:
                        ok = (memcmp(p + ln - mn, mp, mn) == 0) != negate
                    else:
                        ok = (<str>o).endswith(match) != negate
        if not ok:
            others.append(i)
        Py_INCREF(t)
        PyList_SET_ITEM(out_t, i, t)
        Py_INCREF(r)
        PyList_SET_ITEM(out_r, i, r)
    return out_t, out_r, others


def out_file_lines(bytes head, list times, list records, default, int option, dumps_fallback, time_fallback):
    """The file output's ``out_file`` format for a chunk: per record ``head + sec.nsec + ", " + json + "]\\n"``.

    JSON is ``orjson.dumps(record, default=default, option=option)``; where orjson
    raises TypeError, ``dumps_fallback(record)``. A time that is not an int within
    64 bits is written as ``time_fallback(time)`` gives it. One bytes result, built
    in place by ``_BytesOut`` (see there why).
    """
    cdef Py_ssize_t i, n = len(records), hn = PyBytes_GET_SIZE(head), tl, dl
    cdef object doc, t
    cdef int64_t ns = 0
    cdef char tw[40]
    cdef const char* tp
    cdef _BytesOut out
    if len(times) != n:
        raise ValueError("times and records must have the same length")
    out = _BytesOut(n * 320 + 64)
    for i in range(n):
        doc = _dump_record(records[i], default, option, dumps_fallback)
        t = times[i]
        if _as_int64(t, &ns):
            tl = _sec_nsec(ns, tw)
            tp = tw
        else:
            t = str(time_fallback(t)).encode("utf-8", "replace")
            tp = PyBytes_AS_STRING(t)
            tl = PyBytes_GET_SIZE(t)
        dl = PyBytes_GET_SIZE(doc)
        out.reserve(hn + tl + dl + 4, n - i)
        out.put(PyBytes_AS_STRING(head), hn)
        out.put(tp, tl)
        out.put2(b',', b' ')
        out.put(PyBytes_AS_STRING(doc), dl)
        out.put2(b']', b'\n')
    return out.finish()


def json_lines(list records, default, int option, dumps_fallback):
    """Newline-terminated JSON per record, one bytes result (``out_file_lines`` without tag or time).

    JSON is ``orjson.dumps(record, default=default, option=option)``; where orjson
    raises TypeError, ``dumps_fallback(record)``.
    """
    cdef Py_ssize_t i, n = len(records), dl
    cdef object doc
    cdef _BytesOut out = _BytesOut(n * 256 + 64)
    for i in range(n):
        doc = _dump_record(records[i], default, option, dumps_fallback)
        dl = PyBytes_GET_SIZE(doc)
        out.reserve(dl + 1, n - i)
        out.put(PyBytes_AS_STRING(doc), dl)
        out.put1(b'\n')
    return out.finish()
