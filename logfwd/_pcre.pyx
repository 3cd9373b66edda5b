# cython: language_level=3
"""Regex parsers over a whole batch in C: PCRE2 with its JIT.

``Pcre2Parser.batch`` takes the lines of a batch (bytes from the tail input, or
str field values from the parser filter) and returns one record dict per line
(None where the expression does not match), with ``search`` semantics per line
like ``re``: for each line, one JIT match, the named groups read from the
ovector, ``Types`` (integer, float, bool, hex) applied, the dict built -- no
Python call or match object per line.

It gives the same records as the ``re`` path (``_fastparse.regex_batch`` on the
translated expression); the expression is compiled in UTF mode with Unicode
properties (``PCRE2_UCP``) so that ``\\w``, ``\\d``, ``\\s`` and case folding
follow ``re``'s str semantics. Invalid UTF-8 in a bytes line is replaced with
U+FFFD first, as the ``re`` path decodes it. A line PCRE2 cannot finish (JIT
stack or match limit) is handed to the ``fallback`` callable, one line at a
time, so that nothing is lost.

Known difference from ``re``: ``\\s`` does not take the control characters
U+001C..U+001F (``str.isspace()`` does; PCRE2 and Onigmo do not).

Repeated values: each named group keeps a small cache of its recent ASCII values
(hosts, methods, agents, the time of one second...), so a repeated value is the
same str object, not a new one; ``_fastparse.apply_time`` then parses a repeated
time once. The cache is touched only with the GIL held and no Python code runs
while a slot changes, so the object stays consistent if threads share it.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_New, PyDict_SetItem
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.long cimport PyLong_FromLongLong
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF
from cpython.unicode cimport PyUnicode_Check, PyUnicode_CheckExact, PyUnicode_DecodeUTF8
from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memcmp

from logfwd._pcre cimport *

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object o, Py_ssize_t* size) except NULL
    object PyFloat_FromString(object s)
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void* PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    bint PyUnicode_IS_ASCII(object o)
    object _PyDict_NewPresized(Py_ssize_t minused)
    void Py_XDECREF(PyObject* o)
    void Py_INCREF_P "Py_INCREF"(PyObject* o)

# Value cache: per named group, CACHE_SLOTS recent ASCII values up to CACHE_MAX bytes. Log
# fields repeat (hosts, methods, protocols, agents, the time of one second, idents), so a hit
# returns the same str object instead of allocating, copying and later freeing a new one.
# A group whose values seldom repeat (messages, ids) stops looking for CACHE_PAUSE lookups.
cdef enum:
    CACHE_SLOTS = 64
    CACHE_MAX = 256
    CACHE_WINDOW = 4096
    CACHE_PAUSE = 65536

__all__ = ["Pcre2Parser", "Pcre2Search", "Pcre2Error"]

# Types codes (per named group)
cdef enum:
    T_STRING = 0
    T_INTEGER = 1
    T_FLOAT = 2
    T_BOOL = 3
    T_HEX = 4

_TYPE_CODES = {"string": T_STRING, "integer": T_INTEGER, "float": T_FLOAT, "bool": T_BOOL, "hex": T_HEX}

# re flags (re.I, re.S, re.X, re.M) -> PCRE2 options
_RE_I = 2
_RE_M = 8
_RE_S = 16
_RE_X = 64


class Pcre2Error(ValueError):
    """PCRE2 could not compile the expression (the caller falls back to ``re``)."""


cdef inline uint64_t _hash(const unsigned char* p, Py_ssize_t n):
    """A cheap hash of a short value: its length, first and last 8 bytes."""
    cdef uint64_t a = 0, b = 0
    if n >= 8:
        memcpy(&a, p, 8)
        memcpy(&b, p + n - 8, 8)
    else:
        memcpy(&a, p, n)
    return ((a ^ (b * 0x9E3779B97F4A7C15ULL) ^ <uint64_t>n) * 0xFF51AFD7ED558CCDULL) >> 58


cdef inline object _ascii_str(const unsigned char* p, Py_ssize_t n):
    cdef object o = PyUnicode_New(n, 127)
    memcpy(PyUnicode_DATA(o), p, n)
    return o


cdef inline bint _ascii(const unsigned char* p, Py_ssize_t n):
    """True when no byte has its high bit set (8 bytes at a time)."""
    cdef Py_ssize_t i = 0
    cdef uint64_t w
    while i + 8 <= n:
        memcpy(&w, p + i, 8)
        if w & 0x8080808080808080ULL:
            return False
        i += 8
    while i < n:
        if p[i] & 0x80:
            return False
        i += 1
    return True


cdef pcre2_code_8* _compile(str pattern, int re_flags) except NULL:
    """Compile a (translated) expression as ``re`` would read it: UTF, Unicode properties, Ruby's
    line anchors, and ``re``'s I/S/X flags; ``Pcre2Error`` with PCRE2's message when it cannot."""
    cdef int err = 0
    cdef PCRE2_SIZE erroff = 0
    cdef unsigned char msg[256]
    cdef uint32_t opts = PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE | PCRE2_NEVER_BACKSLASH_C
    cdef bytes pat = pattern.encode("utf-8", "surrogatepass")
    cdef pcre2_code_8* code
    if re_flags & _RE_I:
        opts |= PCRE2_CASELESS
    if re_flags & _RE_S:
        opts |= PCRE2_DOTALL
    if re_flags & _RE_X:
        opts |= PCRE2_EXTENDED
    code = pcre2_compile_8(<PCRE2_SPTR8>PyBytes_AS_STRING(pat), <PCRE2_SIZE>len(pat), opts, &err, &erroff, NULL)
    if code == NULL:
        pcre2_get_error_message_8(err, msg, sizeof(msg))
        raise Pcre2Error(f"{(<bytes>msg).decode('utf-8', 'replace')} at offset {erroff}")
    return code


cdef class Pcre2Parser:
    """One compiled expression with its named groups (in ``re``'s group order) and their Types."""

    cdef pcre2_code_8* code
    cdef bint jit
    cdef Py_ssize_t nnames
    cdef int* groups          # group number of each named entry, ascending
    cdef int* kinds           # T_* per entry
    cdef list keys            # str key per entry
    cdef object fallback      # callable(str) -> dict | None, for lines PCRE2 cannot finish
    cdef object cast          # callable(value, kind) -> value, Types the C fast paths do not cover
    cdef PyObject** cache     # nnames * CACHE_SLOTS owned references or NULL
    cdef Py_ssize_t* lookups  # per group: lookups in the current window (or pause countdown, < 0)
    cdef Py_ssize_t* hits     # per group: hits in the current window
    cdef readonly str pattern

    def __cinit__(self):
        self.code = NULL
        self.groups = NULL
        self.kinds = NULL
        self.cache = NULL
        self.lookups = NULL
        self.hits = NULL

    def __init__(self, str pattern, int re_flags, dict types, fallback, cast):
        """Compile ``pattern`` (already Onigmo → PCRE2 translated); Pcre2Error when PCRE2 cannot."""
        self.pattern = pattern
        self.fallback = fallback
        self.cast = cast
        self.code = _compile(pattern, re_flags)
        self.jit = pcre2_jit_compile_8(self.code, PCRE2_JIT_COMPLETE) == 0
        self._names(types)

    cdef _names(self, dict types):
        cdef uint32_t count = 0, size = 0
        cdef const unsigned char* table = NULL
        cdef const unsigned char* e
        cdef Py_ssize_t i
        pcre2_pattern_info_8(self.code, PCRE2_INFO_NAMECOUNT, &count)
        pcre2_pattern_info_8(self.code, PCRE2_INFO_NAMEENTRYSIZE, &size)
        pcre2_pattern_info_8(self.code, PCRE2_INFO_NAMETABLE, &table)
        entries = []
        for i in range(count):
            e = table + i * size
            name = (<bytes>(e + 2)).decode("utf-8")
            entries.append(((e[0] << 8) | e[1], name))
        entries.sort()  # the table is sorted by name; re's groupdict() is in group order
        self.nnames = len(entries)
        self.groups = <int*>malloc(max(1, self.nnames) * sizeof(int))
        self.kinds = <int*>malloc(max(1, self.nnames) * sizeof(int))
        self.cache = <PyObject**>calloc(max(1, self.nnames) * CACHE_SLOTS, sizeof(PyObject*))
        self.lookups = <Py_ssize_t*>calloc(max(1, self.nnames), sizeof(Py_ssize_t))
        self.hits = <Py_ssize_t*>calloc(max(1, self.nnames), sizeof(Py_ssize_t))
        if self.groups == NULL or self.kinds == NULL or self.cache == NULL or self.lookups == NULL or self.hits == NULL:
            raise MemoryError()
        self.keys = []
        for i, (g, name) in enumerate(entries):
            self.groups[i] = g
            self.kinds[i] = _TYPE_CODES.get(types.get(name, "string"), T_STRING)
            self.keys.append(name)

    def __dealloc__(self):
        if self.code != NULL:
            pcre2_code_free_8(self.code)
        cdef Py_ssize_t i
        if self.cache != NULL:
            for i in range(self.nnames * CACHE_SLOTS):
                Py_XDECREF(self.cache[i])
        free(self.cache)
        free(self.lookups)
        free(self.hits)
        free(self.groups)
        free(self.kinds)

    @property
    def names(self):
        """The named groups, in group order."""
        return list(self.keys)

    @property
    def jit_compiled(self):
        return self.jit

    cdef inline object _value(self, Py_ssize_t j, const unsigned char* p, Py_ssize_t n, bint ascii):
        """The str of one captured value (valid UTF-8), from the group's cache when it repeats."""
        cdef PyObject** slot
        cdef PyObject* o
        cdef object v
        if not ascii:
            return PyUnicode_DecodeUTF8(<const char*>p, n, NULL)
        if n > CACHE_MAX or self.lookups[j] < 0:
            if self.lookups[j] < 0:
                self.lookups[j] += 1
            return _ascii_str(p, n)
        self.lookups[j] += 1
        if self.lookups[j] >= CACHE_WINDOW:  # end of a window: pause a group that seldom repeats
            self.lookups[j] = -CACHE_PAUSE if self.hits[j] * 8 < CACHE_WINDOW else 0
            self.hits[j] = 0
        slot = self.cache + j * CACHE_SLOTS + _hash(p, n)
        o = slot[0]
        if o != NULL and PyUnicode_GET_LENGTH(<object>o) == n and memcmp(PyUnicode_DATA(<object>o), p, n) == 0:
            self.hits[j] += 1
            return <object>o
        v = _ascii_str(p, n)
        Py_XDECREF(o)
        Py_INCREF(v)
        slot[0] = <PyObject*>v
        return v

    cdef object _typed(self, int kind, const unsigned char* p, Py_ssize_t n, str s):
        """``Types`` for one captured value: C fast paths, ``cast`` (Python) for the rest."""
        cdef Py_ssize_t i = 0
        cdef long long v = 0
        cdef bint neg = False
        if kind == T_INTEGER:
            if n > 0 and (p[0] == 45 or p[0] == 43):  # - +
                neg = p[0] == 45
                i = 1
            if n - i >= 1 and n - i <= 18:
                while i < n and 48 <= p[i] <= 57:  # 0-9
                    v = v * 10 + (p[i] - 48)
                    i += 1
                if i == n:
                    return PyLong_FromLongLong(-v if neg else v)
        elif kind == T_FLOAT:
            try:
                return PyFloat_FromString(s)
            except ValueError:
                return s
        elif kind == T_BOOL:
            if n == 4 and memcmp(p, b"true", 4) == 0:
                return True
            if n == 5 and memcmp(p, b"false", 5) == 0:
                return False
        return self.cast(s, ("string", "integer", "float", "bool", "hex")[kind])

    def batch(self, list values, bint skip_empty):
        """A record dict per value (bytes or str), None where the expression does not match."""
        cdef Py_ssize_t i, j, n = len(values), ln
        cdef list out = PyList_New(n)
        cdef pcre2_match_data_8* md = pcre2_match_data_create_from_pattern_8(self.code, NULL)
        cdef PCRE2_SIZE* ov
        cdef const unsigned char* p
        cdef object o, text, r, v
        cdef dict d
        cdef int rc, g
        cdef bint ascii
        cdef PCRE2_SIZE a, b
        if md == NULL:
            raise MemoryError()
        ov = pcre2_get_ovector_pointer_8(md)
        try:
            for i in range(n):
                o = values[i]
                text = None
                ascii = True
                if PyBytes_CheckExact(o):
                    p = <const unsigned char*>PyBytes_AS_STRING(o)
                    ln = PyBytes_GET_SIZE(o)
                    if not _ascii(p, ln):  # as the re path: invalid UTF-8 becomes U+FFFD
                        ascii = False
                        text = PyUnicode_DecodeUTF8(<const char*>p, ln, "replace")
                        p = <const unsigned char*>PyUnicode_AsUTF8AndSize(text, &ln)
                elif PyUnicode_Check(o):
                    text = o
                    ascii = PyUnicode_IS_ASCII(o)
                    try:
                        p = <const unsigned char*>PyUnicode_AsUTF8AndSize(o, &ln)
                    except UnicodeEncodeError:  # lone surrogates: no UTF-8 form
                        r = self.fallback(o)
                        Py_INCREF(r)
                        PyList_SET_ITEM(out, i, r)
                        continue
                else:
                    r = self.fallback(o)
                    Py_INCREF(r)
                    PyList_SET_ITEM(out, i, r)
                    continue
                if self.jit:
                    rc = pcre2_jit_match_8(self.code, p, <PCRE2_SIZE>ln, 0, 0, md, NULL)
                else:
                    rc = pcre2_match_8(self.code, p, <PCRE2_SIZE>ln, 0, PCRE2_NO_UTF_CHECK, md, NULL)
                if rc == PCRE2_ERROR_NOMATCH:
                    Py_INCREF(None)
                    PyList_SET_ITEM(out, i, None)
                    continue
                if rc < 0:  # match or JIT stack limit: let re decide this line
                    if text is None:
                        text = PyUnicode_DecodeUTF8(<const char*>p, ln, NULL)
                    r = self.fallback(text)
                    Py_INCREF(r)
                    PyList_SET_ITEM(out, i, r)
                    continue
                d = _PyDict_NewPresized(self.nnames)
                for j in range(self.nnames):
                    g = self.groups[j]
                    if g >= rc:  # groups past the last one set are unset
                        continue
                    a = ov[2 * g]
                    b = ov[2 * g + 1]
                    if a == PCRE2_UNSET:
                        continue
                    if b <= a:
                        if skip_empty:
                            continue
                        v = ""
                    else:
                        v = self._value(j, p + a, <Py_ssize_t>(b - a), ascii)
                    if self.kinds[j] != T_STRING:
                        v = self._typed(self.kinds[j], p + a, <Py_ssize_t>(b - a), v)
                    PyDict_SetItem(d, self.keys[j], v)
                Py_INCREF(d)
                PyList_SET_ITEM(out, i, d)
        finally:
            pcre2_match_data_free_8(md)
        return out


cdef class Pcre2Search:
    """``search`` of one expression (grep rules, multiline start/continue rules): True on a
    match, None otherwise, like ``re``'s ``search(...) is not None`` without a match object.

    ``fallback`` (``re.Pattern.search`` of the same expression) answers for values PCRE2
    cannot take: lone surrogates, a line over the JIT stack or match limit.
    """

    cdef pcre2_code_8* code
    cdef pcre2_match_data_8* md
    cdef bint jit
    cdef object fallback
    cdef readonly str pattern

    def __cinit__(self):
        self.code = NULL
        self.md = NULL

    def __init__(self, str pattern, int re_flags, fallback):
        self.pattern = pattern
        self.fallback = fallback
        self.code = _compile(pattern, re_flags)
        self.jit = pcre2_jit_compile_8(self.code, PCRE2_JIT_COMPLETE) == 0
        # one match block for this expression: the daemon matches from one thread (trio)
        self.md = pcre2_match_data_create_from_pattern_8(self.code, NULL)
        if self.md == NULL:
            raise MemoryError()

    def __dealloc__(self):
        if self.md != NULL:
            pcre2_match_data_free_8(self.md)
        if self.code != NULL:
            pcre2_code_free_8(self.code)

    def search(self, value):
        """True when the expression matches somewhere in ``value`` (str), else None."""
        cdef const unsigned char* p
        cdef Py_ssize_t ln
        cdef int rc
        if not PyUnicode_Check(value):
            return True if self.fallback(value) is not None else None
        try:
            p = <const unsigned char*>PyUnicode_AsUTF8AndSize(value, &ln)
        except UnicodeEncodeError:  # lone surrogates: no UTF-8 form
            return True if self.fallback(value) is not None else None
        if self.jit:
            rc = pcre2_jit_match_8(self.code, p, <PCRE2_SIZE>ln, 0, 0, self.md, NULL)
        else:
            rc = pcre2_match_8(self.code, p, <PCRE2_SIZE>ln, 0, PCRE2_NO_UTF_CHECK, self.md, NULL)
        if rc >= 0:
            return True
        if rc == PCRE2_ERROR_NOMATCH:
            return None
        return True if self.fallback(value) is not None else None
