# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The influxdb output's Cython kernels: line-protocol escaping (see ``lineproto.py``)."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdlib cimport free, malloc
from libc.string cimport memchr, memcpy

from logfwd._serial cimport _view

__all__ = ["influx_escape", "influx_string"]


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
        return _escape_into(buf, p, n, measurement, has_bs)
    finally:
        free(buf)


cdef str _escape_into(char* out, const char* p, Py_ssize_t n, bint measurement, bint has_bs):
    """The escaping loop of ``influx_escape``, into ``out`` (3n + 2 bytes)."""
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
    return PyUnicode_DecodeUTF8(out, k, "surrogatepass")


def influx_string(str value):
    """A line-protocol string field value with its quotes: ``"`` and ``\\`` backslash-escaped."""
    cdef const char* p
    cdef Py_ssize_t n, i, k
    cdef unsigned char c
    cdef char* buf
    if _view(value, &p, &n) < 0:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if memchr(p, b'"', n) == NULL and memchr(p, b'\\', n) == NULL:
        return '"' + value + '"'
    buf = <char*>malloc(2 * n + 2)
    if buf == NULL:
        raise MemoryError()
    try:
        buf[0] = b'"'
        k = 1
        for i in range(n):
            c = <unsigned char>p[i]
            if c == b'"' or c == b'\\':
                buf[k] = b'\\'
                k += 1
            buf[k] = <char>c
            k += 1
        buf[k] = b'"'
        return PyUnicode_DecodeUTF8(buf, k + 1, NULL)
    finally:
        free(buf)
