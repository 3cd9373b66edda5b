# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The serializers' shared record → JSON step and growing bytes result (declared in ``_serial.pxd``)."""

from cpython.bytes cimport PyBytes_CheckExact

import orjson

cdef object _orjson_dumps = orjson.dumps


cdef bytes _dump_record(object rec, object default, int option, object fallback):
    """``orjson.dumps(rec, default=default, option=option)`` as exact bytes.

    Where orjson raises TypeError (a type neither it nor ``default`` knows), the
    output's own Python encoder ``fallback(rec)`` writes it instead, so one odd value
    does not cost the record; with no ``fallback`` (None) the TypeError propagates.
    """
    cdef object doc
    try:
        return _orjson_dumps(rec, default=default, option=option)
    except TypeError:
        if fallback is None:
            raise
        doc = fallback(rec)
        if not PyBytes_CheckExact(doc):
            doc = bytes(doc)
        return doc


cdef class _BytesOut:
    """A chunk's serialized output, written straight into one bytes object that grows
    and is finally shrunk in place (``_PyBytes_Resize``).

    Not ``_Buf``: building in a scratch buffer and copying it out, or keeping a chunk's
    documents alive to join them, made the worker thread's malloc arena grow and trim
    per chunk (up to a million page faults per million records). Callers ``reserve``
    the bytes of one record, then ``put`` them; each document is dropped once copied.
    """

    def __cinit__(self, Py_ssize_t cap):
        self.raw = _lf_bytes_new(NULL, cap)
        if self.raw == NULL:
            raise MemoryError()
        self.w = _lf_bytes_str(self.raw)
        self.k = 0
        self.cap = cap

    def __dealloc__(self):
        _lf_xdecref(self.raw)

    cdef object finish(self):
        """The bytes written, as one bytes object (this buffer is empty afterwards)."""
        cdef object result
        if _lf_bytes_resize(&self.raw, self.k) < 0:
            self.raw = NULL
            raise MemoryError()
        result = <object>self.raw
        _lf_xdecref(self.raw)
        self.raw = NULL
        return result
