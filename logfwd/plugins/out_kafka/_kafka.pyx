# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The kafka output's Cython kernel: JSON message values (see ``messages.py``); the producer
itself is ``_rdkafka.pyx``."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF
from libc.stdint cimport int64_t

from logfwd._serial cimport _as_int64, _dump_record, _first_field_size, _iso_quoted, _put_first_field

import orjson

cdef object _orjson_dumps = orjson.dumps

__all__ = ["kafka_json_values"]


def kafka_json_values(list times, list records, bytes ts_key_json, int ts_format, default, int option,
                      dumps_fallback, ts_fallback):
    """The kafka output's JSON messages: per record ``{<ts_key_json>:<time>,`` + the record's JSON.

    ``ts_format``: 0 ``double`` (``time / 1e9`` as orjson prints the float), 1 ``iso8601``
    (microseconds), 2 ``iso8601_ns``, both as quoted ``YYYY-MM-DDTHH:MM:SS.fffZ`` strings;
    a time outside years 1970-9999 or not an int within 64 bits is written as
    ``ts_fallback(time)`` (JSON bytes) gives it. Record JSON is
    ``orjson.dumps(record, default=default, option=option)``, or ``dumps_fallback(record)``
    where orjson raises TypeError. One bytes object per record.
    """
    cdef Py_ssize_t i, n = len(records), kl = PyBytes_GET_SIZE(ts_key_json), tl, dl
    cdef list out
    cdef object doc, t, tsobj, v
    cdef int64_t ns = 0
    cdef char tw[48]
    cdef const char* tp
    cdef int digits = 6 if ts_format == 1 else 9
    if len(times) != n:
        raise ValueError("times and records must have the same length")
    if ts_format < 0 or ts_format > 2:
        raise ValueError("ts_format must be 0, 1 or 2")
    out = PyList_New(n)
    for i in range(n):
        doc = _dump_record(records[i], default, option, dumps_fallback)
        t = times[i]
        if ts_format != 0 and _as_int64(t, &ns) and ns >= 0:
            tl = _iso_quoted(ns, digits, tw)
            tp = tw
        else:
            if ts_format == 0 and type(t) is int:
                tsobj = _orjson_dumps(t / 1000000000)
            else:
                tsobj = ts_fallback(t)
                if not PyBytes_CheckExact(tsobj):
                    tsobj = bytes(tsobj)
            tp = PyBytes_AS_STRING(tsobj)
            tl = PyBytes_GET_SIZE(tsobj)
        dl = PyBytes_GET_SIZE(doc)
        v = PyBytes_FromStringAndSize(NULL, _first_field_size(kl, tl, dl))
        _put_first_field(PyBytes_AS_STRING(v), PyBytes_AS_STRING(ts_key_json), kl, tp, tl, PyBytes_AS_STRING(doc), dl)
        Py_INCREF(v)
        PyList_SET_ITEM(out, i, v)
    return out
