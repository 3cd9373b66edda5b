# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The influxdb output's Cython kernels: line-protocol escaping and a chunk's points in one
pass (see ``lineproto.py``, whose Python encoder is the reference they must match)."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_AsSsize_t, PyLong_FromSsize_t
from cpython.mem cimport PyMem_Free
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport INT64_MIN, int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memchr, memcpy, strlen

from logfwd._serial cimport _as_int64, _BytesOut, _put_i64, _view

__all__ = ["influx_escape", "influx_string", "encode_points", "Sequencer"]


cdef extern from "Python.h":
    char* PyOS_double_to_string(double val, char format_code, int precision, int flags, int* ptype) except NULL
    int Py_DTSF_ADD_DOT_0


cdef inline bint _influx_special(unsigned char c, bint measurement):
    return c == b',' or c == b' ' or (c == b'=' and not measurement)


def influx_escape(str name, bint measurement=False):
    """InfluxDB line-protocol escaping of a measurement (``measurement``) or of a tag key,
    tag value or field key — the rules of ``logfwd.lineproto`` (which see), in C.

    ``,`` and blank (and ``=`` outside measurements) get a backslash; newline and carriage
    return become ``\\n``/``\\r``; an odd backslash run right before an escaped character
    gets one more backslash; a result ending in a backslash gets ``_``. A name with
    nothing to escape is returned as is (no copy). The ``time`` → ``time_`` key rule is
    the caller's.
    """
    cdef const char* p
    cdef Py_ssize_t n, i
    cdef unsigned char c
    cdef bint has_bs = False, need = False
    cdef char* buf
    cdef bytes raw
    if _view(name, &p, &n) < 0:  # lone surrogates: work on their surrogatepass bytes
        raw = name.encode("utf-8", "surrogatepass")
        p = PyBytes_AS_STRING(raw)
        n = PyBytes_GET_SIZE(raw)
    for i in range(n):
        c = <unsigned char>p[i]
        if c == b'\\':
            has_bs = True
            need = True
        elif c == b'\n' or c == b'\r' or _influx_special(c, measurement):
            need = True
    if not need:
        return name
    buf = <char*>malloc(3 * n + 2)
    if buf == NULL:
        raise MemoryError()
    try:
        return PyUnicode_DecodeUTF8(buf, _escape_into(buf, p, n, measurement, has_bs), "surrogatepass")
    finally:
        free(buf)


cdef Py_ssize_t _escape_into(char* out, const char* p, Py_ssize_t n, bint measurement, bint has_bs) noexcept:
    """The escaping loop of ``influx_escape``, into ``out`` (3n + 2 bytes); the length written."""
    cdef Py_ssize_t i = 0, k = 0, j, run
    cdef unsigned char c
    while i < n:
        c = <unsigned char>p[i]
        if c == b'\\':
            j = i
            while j < n and p[j] == b'\\':
                j += 1
            run = j - i
            memcpy(out + k, p + i, run)
            k += run
            if run % 2 == 1 and j < n and _influx_special(<unsigned char>p[j], measurement):
                out[k] = b'\\'
                k += 1
            i = j
            continue
        if _influx_special(c, measurement):
            out[k] = b'\\'
            out[k + 1] = <char>c
            k += 2
        elif c == b'\n':
            out[k] = b'\\'
            out[k + 1] = b'n'
            k += 2
        elif c == b'\r':
            out[k] = b'\\'
            out[k + 1] = b'r'
            k += 2
        else:
            out[k] = <char>c
            k += 1
        i += 1
    if has_bs and k > 0 and out[k - 1] == b'\\':
        out[k] = b'_'
        k += 1
    return k


cdef Py_ssize_t _string_into(char* out, const char* p, Py_ssize_t n) noexcept:
    """A string field value into ``out`` (2n + 2 bytes): quoted, ``"`` and ``\\``
    backslash-escaped; the length written.

    The spans between the characters to escape are copied whole: each is found by
    ``memchr`` (vectorised), not byte by byte, since a log line holds few of them.
    """
    cdef Py_ssize_t i = 0, k = 1, span
    cdef const char* q = <const char*>memchr(p, b'"', n)
    cdef const char* b = <const char*>memchr(p, b'\\', n)
    cdef const char* nxt
    out[0] = b'"'
    while q != NULL or b != NULL:
        nxt = q if b == NULL or (q != NULL and q < b) else b
        span = nxt - (p + i)
        memcpy(out + k, p + i, span)
        k += span
        out[k] = b'\\'
        out[k + 1] = nxt[0]
        k += 2
        i += span + 1
        if nxt == q:
            q = <const char*>memchr(p + i, b'"', n - i)
        else:
            b = <const char*>memchr(p + i, b'\\', n - i)
    memcpy(out + k, p + i, n - i)
    k += n - i
    out[k] = b'"'
    return k + 1


def influx_string(str value):
    """A line-protocol string field value with its quotes: ``"`` and ``\\`` backslash-escaped."""
    cdef const char* p
    cdef Py_ssize_t n
    cdef char* buf
    if _view(value, &p, &n) < 0:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if memchr(p, b'"', n) == NULL and memchr(p, b'\\', n) == NULL:
        return '"' + value + '"'
    buf = <char*>malloc(2 * n + 2)
    if buf == NULL:
        raise MemoryError()
    try:
        return PyUnicode_DecodeUTF8(buf, _string_into(buf, p, n), NULL)
    finally:
        free(buf)


cdef inline int64_t _floor_div(int64_t ns, int64_t divisor) noexcept:
    """``ns // divisor`` as Python floors it (C division truncates toward zero)."""
    cdef int64_t q = ns // divisor
    if q * divisor > ns:
        q -= 1
    return q


cdef class _Points:
    """One chunk's points written into one growing body (see ``encode_points``).

    A record the kernel does not take (see there) is written by the Python encoder's
    line for it instead, in its place, so the body is in chunk order either way.
    """

    cdef _BytesOut out
    cdef bytes head
    cdef bytes seq_head
    cdef frozenset tag_keys
    cdef bint auto_tags, tagging, suffix
    cdef int64_t divisor
    cdef dict prefixes
    cdef object make_prefix
    cdef list ends
    cdef Py_ssize_t remaining
    cdef Py_ssize_t lost

    cdef bytes _prefix(self, object key):
        """``escaped key=`` as bytes, from the encoder's cache (filled by ``make_prefix``)."""
        cdef PyObject* hit = PyDict_GetItem(self.prefixes, key)
        if hit != NULL:
            return <bytes>hit
        return self.make_prefix(key)

    cdef bint _is_tag(self, object key, object v):
        return self.tagging and (key in self.tag_keys or (self.auto_tags and type(v) is str))

    cdef int _tags(self, dict rec) except -1:
        """``,key=value`` for each tag of the record; 0 when it holds a key or tag value
        the kernel leaves to Python (anything but a str), else 1."""
        cdef const char* p
        cdef Py_ssize_t n
        cdef bytes prefix
        for key, v in rec.items():
            if type(key) is not str:
                return 0  # the Python encoder turns it into text first
            if not key or not self._is_tag(key, v):
                continue  # an empty key is never written, as a tag or a field
            if type(v) is not str or _view(v, &p, &n) < 0:
                return 0
            if n == 0:
                continue  # tags cannot be empty: none is written
            prefix = self._prefix(key)
            self.out.reserve(1 + PyBytes_GET_SIZE(prefix) + 3 * n + 2, self.remaining)
            self.out.put1(b',')
            self.out.put(PyBytes_AS_STRING(prefix), PyBytes_GET_SIZE(prefix))
            self.out.k += _escape_into(self.out.w + self.out.k, p, n, False, memchr(p, b'\\', n) != NULL)
        return 1

    cdef int _field(self, bytes prefix, object v) except -2:
        """One ``key=value`` (after a ``,`` when not the first): 1 written, 0 nothing to
        write (None, NaN, infinities: these count as lost), -1 a value left to Python."""
        cdef const char* p
        cdef Py_ssize_t n, pl = PyBytes_GET_SIZE(prefix)
        cdef long long iv
        cdef int overflow
        cdef double d
        cdef char* text
        cdef object t = type(v)
        if t is str:
            if _view(v, &p, &n) < 0:
                return -1
            self.out.reserve(pl + 2 * n + 2, self.remaining)
            self.out.put(PyBytes_AS_STRING(prefix), pl)
            self.out.k += _string_into(self.out.w + self.out.k, p, n)
            return 1
        if t is bool:
            self.out.reserve(pl + 5, self.remaining)
            self.out.put(PyBytes_AS_STRING(prefix), pl)
            if v:
                self.out.put(b"true", 4)
            else:
                self.out.put(b"false", 5)
            return 1
        if t is int:
            iv = PyLong_AsLongLongAndOverflow(v, &overflow)
            if overflow:
                return -1
            self.out.reserve(pl + 22, self.remaining)
            self.out.put(PyBytes_AS_STRING(prefix), pl)
            self.out.k += _put_i64(iv, self.out.w + self.out.k)
            if self.suffix:
                self.out.put1(b'i')
            return 1
        if t is float:
            d = PyFloat_AS_DOUBLE(v)
            if not (d - d == 0.0):  # NaN and infinities have no line-protocol form
                self.lost += 1
                return 0
            text = PyOS_double_to_string(d, b'r', 0, Py_DTSF_ADD_DOT_0, NULL)  # repr(float)
            try:
                n = <Py_ssize_t>strlen(text)
                self.out.reserve(pl + n, self.remaining)
                self.out.put(PyBytes_AS_STRING(prefix), pl)
                self.out.put(text, n)
            finally:
                PyMem_Free(text)
            return 1
        if v is None:
            return 0
        return -1

    cdef int _fields(self, dict rec) except -2:
        """The record's fields after the blank; the number written, -1 when a key or value
        is left to Python."""
        cdef int nf = 0, r
        for key, v in rec.items():
            if type(key) is not str:
                return -1
            if not key:
                if isinstance(v, dict):
                    return -1  # flattened without a prefix: its keys are the record's
                continue
            if self._is_tag(key, v):
                continue
            if nf:
                self.out.reserve(1, self.remaining)
                self.out.put1(b',')
            r = self._field(self._prefix(key), v)
            if r < 0:
                return -1
            if r == 0 and nf:
                self.out.k -= 1  # the ',' written for a field that has nothing to write
            nf += r
        return nf

    cdef int point(self, dict rec, object t, object seq) except -2:
        """The record's point (after a newline unless it is the first): 1 written, 0 the
        record has no field (nothing written), -1 left to Python (nothing written)."""
        cdef Py_ssize_t start = self.out.k, lost0 = self.lost
        cdef int64_t ns, q
        cdef int nf
        if not _as_int64(t, &ns):
            return -1
        if self.ends:
            self.out.reserve(1, self.remaining)
            self.out.put1(b'\n')
        self.out.reserve(PyBytes_GET_SIZE(self.head) + 1, self.remaining)
        self.out.put(PyBytes_AS_STRING(self.head), PyBytes_GET_SIZE(self.head))
        if self.seq_head is not None:
            self.out.reserve(PyBytes_GET_SIZE(self.seq_head) + 22, self.remaining)
            self.out.put1(b',')
            self.out.put(PyBytes_AS_STRING(self.seq_head), PyBytes_GET_SIZE(self.seq_head))
            self.out.k += _put_i64(<int64_t>seq, self.out.w + self.out.k)
        if self.tagging and self._tags(rec) == 0:
            self.out.k = start
            return -1
        self.out.reserve(1, self.remaining)
        self.out.put1(b' ')
        nf = self._fields(rec)
        if nf <= 0:
            self.out.k = start
            if nf < 0:
                self.lost = lost0
            return nf
        q = _floor_div(ns, self.divisor)
        self.out.reserve(22, self.remaining)
        self.out.put1(b' ')
        self.out.k += _put_i64(q, self.out.w + self.out.k)
        return 1

    cdef void put_line(self, bytes line):
        """A line the Python encoder wrote (after a newline unless it is the first)."""
        cdef Py_ssize_t n = PyBytes_GET_SIZE(line)
        self.out.reserve(n + 1, self.remaining)
        if self.ends:
            self.out.put1(b'\n')
        self.out.put(PyBytes_AS_STRING(line), n)


def encode_points(bytes head, bytes seq_head, list times, list records, list seqs, int64_t divisor,
                  bint suffix, frozenset tag_keys, bint auto_tags, dict prefixes, make_prefix, slow):
    """A chunk's points as one line-protocol body, as ``LineEncoder.encode_py`` writes them.

    ``head`` is the escaped measurement; ``seq_head`` the escaped sequence tag and ``=``
    (None: no sequence tag; ``seqs[i]`` is then not read). ``prefixes`` caches
    ``escaped key=`` per key (``make_prefix(key)`` fills it). Records with a dict value,
    a key that is not a str, a value of another type (bytes, list...), an int beyond 64
    bits, a tag value that is not a str, or text with lone surrogates are written by
    ``slow(i)`` instead: ``(line bytes or None, values lost)``, the Python encoder's line.

    Returns ``(body, ends, index, skipped, lost)``: ``ends[j]`` is the offset just past
    line j (lines are joined by ``\\n``), ``index[j]`` its record, ``skipped`` the records
    with no field to write, ``lost`` the values left out (NaN, infinities).
    """
    cdef Py_ssize_t i, n = len(records)
    cdef list index = [], skipped = []
    cdef object rec, line
    cdef int r
    cdef _Points pts = _Points.__new__(_Points)
    if len(times) != n or (seq_head is not None and len(seqs) != n):
        raise ValueError("times, records (and seqs) must have the same length")
    pts.out = _BytesOut(n * 200 + 64)
    pts.head, pts.seq_head, pts.tag_keys, pts.auto_tags = head, seq_head, tag_keys, auto_tags
    pts.tagging = auto_tags or bool(tag_keys)
    pts.suffix, pts.divisor, pts.prefixes, pts.make_prefix = suffix, divisor, prefixes, make_prefix
    pts.ends = []
    pts.lost = 0
    for i in range(n):
        pts.remaining = n - i
        rec = records[i]
        r = pts.point(rec, times[i], seqs[i] if seq_head is not None else None) if type(rec) is dict else -1
        if r < 0:
            line, lost = slow(i)
            pts.lost += lost
            if line is None:
                skipped.append(i)
                continue
            pts.put_line(line)
        elif r == 0:
            skipped.append(i)
            continue
        pts.ends.append(pts.out.k)
        index.append(i)
    return pts.out.finish(), pts.ends, index, skipped, pts.lost


cdef class Sequencer:
    """Sequence-tag values: for each point, how many earlier points had its timestamp.

    Fluent Bit documents ``Sequence_Tag`` as "incremented for the consecutive simultaneous
    events": its purpose is that points with equal timestamps stay apart. Numbering every
    point instead (a counter over all points, as Fluent Bit's code does up to 100000) makes
    each point a new series in InfluxDB: series cardinality in the hundred thousands, and
    InfluxDB 1.x ingesting at a third of its speed with one series per timestamp value
    (bench/README.md). Here a point whose timestamp was not seen gets 0, the next one
    with that timestamp 1, and so on, so a log with distinct timestamps is one series.

    The timestamps seen are remembered in two generations of ``window`` entries each (a
    full one becomes the old one, the one before is dropped): a timestamp is recognised
    for at least ``window`` distinct timestamps after it was last given. Timestamps are
    compared as written (after the precision's division), not as received.
    """

    cdef dict cur
    cdef dict old
    cdef Py_ssize_t window
    cdef int64_t hi  # the highest timestamp given so far (a higher one was not seen: no lookup)

    def __init__(self, Py_ssize_t window=16_384):
        self.cur = {}
        self.old = {}
        self.window = max(1, window)
        self.hi = INT64_MIN  # (a stamp of exactly INT64_MIN takes the lookup: still right)

    def take(self, list times, int64_t divisor=1):
        """The values for points with these nanosecond ``times``, in order; remembered."""
        cdef Py_ssize_t i, n = len(times), seq
        cdef list out = PyList_New(n)
        cdef object key, value
        cdef PyObject* hit
        cdef int64_t ns
        cdef bint exact
        for i in range(n):
            key = times[i]
            exact = _as_int64(key, &ns)
            if exact and divisor != 1:
                ns = _floor_div(ns, divisor)
                key = ns
            elif divisor != 1:
                key = key // divisor  # beyond 64 bits: the Python encoder writes these
                exact = _as_int64(key, &ns)  # its stamp may fit (and be above ``hi``) after all
            if exact and ns > self.hi:
                seq = 0  # log times mostly rise: above every timestamp given, it is new
                self.hi = ns
            else:
                hit = PyDict_GetItem(self.cur, key)
                if hit == NULL:
                    hit = PyDict_GetItem(self.old, key)
                seq = 0 if hit == NULL else PyLong_AsSsize_t(<object>hit)
            value = PyLong_FromSsize_t(seq)
            Py_INCREF(value)
            PyList_SET_ITEM(out, i, value)
            PyDict_SetItem(self.cur, key, seq + 1)
            if len(self.cur) >= self.window:
                self.old = self.cur
                self.cur = {}
        return out
