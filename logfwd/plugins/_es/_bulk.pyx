# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The es output's Cython kernel: a chunk's ``_bulk`` NDJSON body in one pass (see ``bulk.py``)."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE

from logfwd._serial cimport _BytesOut, _dump_record, _first_field_size, _iso_quoted, _put_first_field

import orjson

cdef object _orjson_dumps = orjson.dumps

__all__ = ["ndjson_bulk"]


def ndjson_bulk(list times, list records, action, str time_key, bint nanos=False, default=None, int option=0):
    """An Elasticsearch ``_bulk`` body: per record ``action`` line, then the record with
    ``time_key`` (ISO 8601 UTC, milliseconds or ``nanos``) first.

    ``action`` is one bytes line for every record or a list of bytes (one per record;
    None skips the record). A record that already has ``time_key`` keeps its own
    value, as a dict update would. Returns ``(body, positions, failed)``: the chunk
    index of each action written, and ``(index, reason)`` of records that could not
    be encoded (not dicts, or orjson refused them); those are left out.
    """
    cdef Py_ssize_t i, n = len(records), al, dl, kl, tl, size
    cdef list positions = []
    cdef list failed = []
    cdef bytes key = _orjson_dumps(time_key)
    cdef object act, rec, doc
    cdef bint per_record = isinstance(action, list), has_key
    cdef char tbuf[40]
    cdef int digits = 9 if nanos else 3
    cdef _BytesOut out
    if len(times) != n or (per_record and len(action) != n):
        raise ValueError("times, records (and per-record actions) must have the same length")
    kl = PyBytes_GET_SIZE(key)
    out = _BytesOut(n * 256 + 64)
    for i in range(n):
        act = action[i] if per_record else action
        if act is None:
            continue
        rec = records[i]
        if type(rec) is not dict:
            failed.append((i, f"record is a {type(rec).__name__}, not a map"))
            continue
        tl = _iso_quoted(times[i], digits, tbuf)
        has_key = time_key in <dict>rec
        try:
            if has_key:  # the record's own value wins, where a dict update puts it
                doc = _orjson_dumps({time_key: PyBytes_FromStringAndSize(tbuf + 1, tl - 2).decode("ascii"), **rec},
                                    default=default, option=option)
            else:
                doc = _dump_record(rec, default, option, None)
        except Exception as e:
            failed.append((i, f"cannot encode record as JSON: {e}"))
            continue
        if not PyBytes_CheckExact(act):  # checked once written, as b"\n".join did: any bytes-like, else TypeError
            act = bytes(memoryview(act))
        al = PyBytes_GET_SIZE(act)
        dl = PyBytes_GET_SIZE(doc)
        size = dl if has_key else _first_field_size(kl, tl, dl)
        out.reserve(al + size + 2, n - i)
        out.put(PyBytes_AS_STRING(act), al)
        out.put1(b'\n')
        if has_key:
            out.put(PyBytes_AS_STRING(doc), dl)
        else:
            out.k += _put_first_field(out.w + out.k, PyBytes_AS_STRING(key), kl, tbuf, tl,
                                      PyBytes_AS_STRING(doc), dl)
        out.put1(b'\n')
        positions.append(i)
    return out.finish(), positions, failed
