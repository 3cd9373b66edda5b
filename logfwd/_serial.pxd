# cython: language_level=3
"""What the serializers share, declared once for every module that ``cimport``s it.

``logfwd._fastparse`` (the file and stdout outputs' ``out_file_lines`` / ``json_lines``) and
the output plugins' own kernels (``plugins/_es/_bulk``, ``plugins/out_influxdb/_lineproto``,
``plugins/out_kafka/_kafka``) write records as JSON, times as text and results into one
growing bytes object the same way: one definition keeps their outputs byte-identical to each
other's Python reference paths when one of them changes. The small helpers are ``inline``
here, so each module gets its own copy (no call across modules in the per-record loops);
``_dump_record`` and ``_BytesOut`` are implemented in ``_serial.pyx``.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_Check
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy

cimport cython


cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object o, Py_ssize_t* size) except NULL
    PyObject* _lf_bytes_new "PyBytes_FromStringAndSize"(const char* v, Py_ssize_t n)
    int _lf_bytes_resize "_PyBytes_Resize"(PyObject** b, Py_ssize_t n)
    char* _lf_bytes_str "PyBytes_AS_STRING"(PyObject* b)
    void _lf_xdecref "Py_XDECREF"(PyObject* o)
    # The same call without Cython's exception handling around it (``_view`` clears the error)
    const char* _lf_utf8 "PyUnicode_AsUTF8AndSize"(object o, Py_ssize_t* size)
    bint _lf_compact_ascii "PyUnicode_IS_COMPACT_ASCII"(object o)
    void* _lf_unicode_data "PyUnicode_DATA"(object o)
    Py_ssize_t _lf_unicode_length "PyUnicode_GET_LENGTH"(object o)
    void _lf_err_clear "PyErr_Clear"()


cdef bytes _dump_record(object rec, object default, int option, object fallback)


@cython.final
cdef class _BytesOut:
    cdef PyObject* raw
    cdef char* w
    cdef Py_ssize_t k
    cdef Py_ssize_t cap

    # Inline here, so that the per-record calls of every module are plain C, not a vtable call.
    cdef inline int reserve(self, Py_ssize_t extra, Py_ssize_t remaining) except -1:
        """Room for ``extra`` more bytes; when it must grow, room for ``remaining``
        more records of this size as well, plus a quarter of slack (few resizes)."""
        cdef Py_ssize_t need = self.k + extra
        if need > self.cap:
            self.cap = need + extra * remaining + self.cap // 4
            if _lf_bytes_resize(&self.raw, self.cap) < 0:
                self.raw = NULL
                raise MemoryError()
            self.w = _lf_bytes_str(self.raw)
        return 0

    cdef inline void put(self, const char* p, Py_ssize_t n):
        """Append ``n`` bytes (reserved beforehand)."""
        memcpy(self.w + self.k, p, n)
        self.k += n

    cdef inline void put1(self, char c):
        """Append one byte (reserved beforehand)."""
        self.w[self.k] = c
        self.k += 1

    cdef inline void put2(self, char a, char b):
        """Append two bytes (reserved beforehand)."""
        self.w[self.k] = a
        self.w[self.k + 1] = b
        self.k += 2

    cdef object finish(self)


cdef inline int _view(object o, const char** p, Py_ssize_t* n):
    """Pointer and length of a bytes or str (UTF-8) object; -1 if it has none."""
    if PyBytes_CheckExact(o):
        p[0] = PyBytes_AS_STRING(o)
        n[0] = PyBytes_GET_SIZE(o)
        return 0
    if PyUnicode_Check(o):
        # Most values are ASCII: their characters are their UTF-8 bytes. This is called per
        # value in every kernel, so no try/except either (Cython saves and restores the
        # exception state around one): a failed conversion's error is cleared here.
        if _lf_compact_ascii(o):
            p[0] = <const char*>_lf_unicode_data(o)
            n[0] = _lf_unicode_length(o)
            return 0
        p[0] = _lf_utf8(o, n)
        if p[0] == NULL:  # lone surrogates: no UTF-8 form
            _lf_err_clear()
            return -1
        return 0
    return -1


cdef inline bint _as_int64(object t, int64_t* ns):
    """``t`` as int nanoseconds when it is an int within 64 bits (else the caller's fallback)."""
    if type(t) is not int:
        return False
    try:
        ns[0] = t
    except OverflowError:
        return False
    return True


@cython.cdivision(True)
cdef inline int64_t _split_ns(int64_t ns, int64_t* frac):
    """Whole seconds (floor) of int nanoseconds; ``frac`` gets the 0..999999999 rest."""
    cdef int64_t sec = ns // 1000000000  # cdivision: truncates, fixed up below
    frac[0] = ns - sec * 1000000000
    if frac[0] < 0:
        sec -= 1
        frac[0] += 1000000000
    return sec


@cython.cdivision(True)
cdef inline Py_ssize_t _put_frac(int64_t frac, int digits, char* o):
    """``.`` and the first ``digits`` (1..9) of a nine-digit fraction, truncated, into ``o``."""
    cdef int j
    for j in range(9 - digits):
        frac //= 10
    o[0] = b'.'
    for j in range(digits, 0, -1):
        o[j] = <char>(48 + frac % 10)
        frac //= 10
    return digits + 1


@cython.cdivision(True)
cdef inline void _put2d(int v, char* o):
    """Two decimal digits of 0 <= v < 100 into ``o``."""
    o[0] = <char>(48 + v // 10)
    o[1] = <char>(48 + v % 10)


@cython.cdivision(True)
cdef inline Py_ssize_t _iso_seconds(int64_t sec, char* o):
    """``YYYY-MM-DDTHH:MM:SS`` of a Unix time (UTC) into ``o`` (19 bytes)."""
    cdef int64_t days = sec // 86400
    cdef int64_t rem = sec - days * 86400
    if rem < 0:  # C division truncates; we want the floor
        days -= 1
        rem += 86400
    cdef int64_t z = days + 719468
    cdef int64_t era = (z if z >= 0 else z - 146096) // 146097
    cdef int64_t doe = z - era * 146097
    cdef int64_t yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    cdef int64_t y = yoe + era * 400
    cdef int64_t doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    cdef int64_t mp = (5 * doy + 2) // 153
    cdef int d = <int>(doy - (153 * mp + 2) // 5 + 1)
    cdef int m = <int>(mp + 3 if mp < 10 else mp - 9)
    cdef int hh = <int>(rem // 3600), mm = <int>((rem // 60) % 60), ss = <int>(rem % 60)
    if m <= 2:
        y += 1
    if y < 0 or y > 9999:
        y = 0
    _put2d(<int>(y // 100), o)
    _put2d(<int>(y % 100), o + 2)
    o[4] = b'-'
    _put2d(m, o + 5)
    o[7] = b'-'
    _put2d(d, o + 8)
    o[10] = b'T'
    _put2d(hh, o + 11)
    o[13] = b':'
    _put2d(mm, o + 14)
    o[16] = b':'
    _put2d(ss, o + 17)
    return 19


cdef inline Py_ssize_t _iso_text(int64_t ns, int digits, char* o):
    """``YYYY-MM-DDTHH:MM:SS.fffZ`` (``digits`` fraction digits) of int nanoseconds; 21 + digits bytes."""
    cdef int64_t frac
    cdef Py_ssize_t k = _iso_seconds(_split_ns(ns, &frac), o)
    k += _put_frac(frac, digits, o + k)
    o[k] = b'Z'
    return k + 1


cdef inline Py_ssize_t _iso_quoted(int64_t ns, int digits, char* o):
    """``_iso_text`` as a JSON string (in double quotes); 23 + digits bytes."""
    o[0] = b'"'
    cdef Py_ssize_t k = 1 + _iso_text(ns, digits, o + 1)
    o[k] = b'"'
    return k + 1


cdef extern from *:
    """
    /* Two decimal digits per division: timestamps are 19 digits, written once per record. */
    static const char lf_digits2[201] =
        "0001020304050607080910111213141516171819202122232425262728293031323334353637383940414243444546474849"
        "5051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";
    static inline Py_ssize_t lf_put_u64(uint64_t v, char *o) {
        int n = 1;
        uint64_t t = v;
        char *p;
        while (t >= 10000) { t /= 10000; n += 4; }
        while (t >= 10) { t /= 10; n += 1; }
        p = o + n;
        while (v >= 100) {
            unsigned i = (unsigned)(v % 100) * 2;
            v /= 100;
            *--p = lf_digits2[i + 1];
            *--p = lf_digits2[i];
        }
        if (v >= 10) {
            unsigned i = (unsigned)v * 2;
            *--p = lf_digits2[i + 1];
            *--p = lf_digits2[i];
        } else {
            *--p = (char)('0' + v);
        }
        return n;
    }
    """
    Py_ssize_t _put_u64 "lf_put_u64"(uint64_t v, char* o) noexcept nogil


cdef inline Py_ssize_t _put_i64(int64_t v, char* o) noexcept:
    """Decimal digits of ``v``, with its sign, into ``o`` (at most 21 bytes; INT64_MIN too)."""
    if v < 0:
        o[0] = b'-'
        return 1 + _put_u64(<uint64_t>(-(v + 1)) + 1, o + 1)
    return _put_u64(<uint64_t>v, o)


cdef inline Py_ssize_t _sec_nsec(int64_t ns, char* o):
    """``sec.nnnnnnnnn`` (seconds floored, so ``-1.5s`` is ``-2.500000000``) into ``o`` (≤ 31 bytes)."""
    cdef int64_t frac
    cdef Py_ssize_t k = _put_i64(_split_ns(ns, &frac), o)
    return k + _put_frac(frac, 9, o + k)


cdef inline Py_ssize_t _first_field_size(Py_ssize_t kl, Py_ssize_t tl, Py_ssize_t dl):
    """Length of what ``_put_first_field`` writes."""
    return 1 + kl + 1 + tl + (1 if dl > 2 else 0) + (dl - 1 if dl > 0 else 0)


cdef inline Py_ssize_t _put_first_field(char* w, const char* kp, Py_ssize_t kl, const char* tp, Py_ssize_t tl,
                                        const char* dp, Py_ssize_t dl):
    """A JSON object with one field put first: ``{`` key ``:`` value, ``,`` unless the
    record is ``{}``, then the record's JSON without its ``{``. Splicing the bytes saves
    building a merged dict per record (the record is known not to hold the key)."""
    cdef Py_ssize_t p = 2 + kl + tl
    w[0] = b'{'
    memcpy(w + 1, kp, kl)
    w[1 + kl] = b':'
    memcpy(w + 2 + kl, tp, tl)
    if dl > 2:
        w[p] = b','
        p += 1
    if dl > 0:
        memcpy(w + p, dp + 1, dl - 1)
        p += dl - 1
    return p
