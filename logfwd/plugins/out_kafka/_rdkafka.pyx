# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""A producer on librdkafka's C API, for the kafka output's hot path.

Why not confluent-kafka's ``Producer``: it turns every message into a dict it parses back
(``produce_batch``), and librdkafka's report for *every* delivered message takes the GIL in
the polling thread before confluent-kafka decides to skip it (it implements
``delivery.report.only.error`` above librdkafka). Measured on 1M docker records to a local
broker: its ``produce_batch`` cost 1.8 CPU s plus 0.3 s of message dicts, librdkafka's own
``rd_kafka_produce_batch`` 0.4 s, and the per-message GIL hand-offs showed as a second busy
thread. Here a batch goes from a list of ``bytes`` straight into librdkafka, and delivery
reports are counted in C: each message's opaque points at a slot holding its flush and its
record index, so the report callback decrements the flush's outstanding count and notes a
failure with the record it belongs to, without the GIL. The output learns which flushes
settled from ``Producer.settled`` after each ``poll``.

The library is the librdkafka that confluent-kafka already loaded (the kafka input and the
configuration checks use it), found among the process's mappings and bound with ``dlsym``:
nothing to build against, and one librdkafka in the process. ``librdkafka.so.1`` from the
system is the fallback.

Threads: ``produce`` runs in the event loop's thread with the GIL; report, error and log
callbacks run in the thread that calls ``poll`` (librdkafka's logs go to its main queue,
``log.queue``), which must be one thread at a time.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport abort, calloc, free, malloc, realloc

import confluent_kafka.cimpl  # its librdkafka is the one bound here (see load())
import trio

cdef extern from "<dlfcn.h>" nogil:
    void* dlopen(const char* filename, int flags)
    void* dlsym(void* handle, const char* symbol)
    char* dlerror()
    int RTLD_NOW
    int RTLD_NOLOAD

cdef extern from *:
    """
    /* librdkafka's public rd_kafka_message_t (rdkafka.h), declared here: no headers needed. */
    typedef struct lf_rkmessage {
        int err;
        void *rkt;
        int32_t partition;
        void *payload;
        size_t len;
        void *key;
        size_t key_len;
        int64_t offset;
        void *_private;
    } lf_rkmessage;
    static inline long lf_add(long *p, long v) { return __atomic_add_fetch(p, v, __ATOMIC_SEQ_CST); }
    static inline long lf_load(long *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
    """
    ctypedef struct lf_rkmessage:
        int err
        void* rkt
        int32_t partition
        void* payload
        size_t len
        void* key
        size_t key_len
        int64_t offset
        void* _private
    long lf_add(long* p, long v) nogil
    long lf_load(long* p) nogil

ctypedef void (*dr_cb_t)(void* rk, const lf_rkmessage* m, void* opaque) noexcept nogil
ctypedef void (*error_cb_t)(void* rk, int err, const char* reason, void* opaque) noexcept nogil
ctypedef void (*log_cb_t)(const void* rk, int level, const char* fac, const char* buf) noexcept nogil

cdef struct Api:
    void* (*conf_new)() noexcept nogil
    int (*conf_set)(void* conf, const char* name, const char* value, char* errstr, size_t size) noexcept nogil
    void (*conf_destroy)(void* conf) noexcept nogil
    void (*conf_set_dr_msg_cb)(void* conf, dr_cb_t cb) noexcept nogil
    void (*conf_set_error_cb)(void* conf, error_cb_t cb) noexcept nogil
    void (*conf_set_log_cb)(void* conf, log_cb_t cb) noexcept nogil
    void (*conf_set_opaque)(void* conf, void* opaque) noexcept nogil
    void* (*new)(int type, void* conf, char* errstr, size_t size) noexcept nogil
    void (*destroy)(void* rk) noexcept nogil
    void* (*opaque)(const void* rk) noexcept nogil
    int (*set_log_queue)(void* rk, void* rkqu) noexcept nogil
    void* (*topic_new)(void* rk, const char* topic, void* conf) noexcept nogil
    void (*topic_destroy)(void* rkt) noexcept nogil
    int (*produce_batch)(void* rkt, int32_t partition, int msgflags, lf_rkmessage* msgs, int cnt) noexcept nogil
    int (*poll)(void* rk, int timeout_ms) noexcept nogil
    int (*outq_len)(void* rk) noexcept nogil
    int (*purge)(void* rk, int flags) noexcept nogil
    const char* (*err2str)(int err) noexcept nogil
    const char* (*err2name)(int err) noexcept nogil
    int (*last_error)() noexcept nogil

cdef Api api
cdef bint loaded = False
loaded_path = None

cdef int RD_KAFKA_PRODUCER = 0
cdef int32_t PARTITION_UA = -1  # the configured partitioner picks, per message
cdef int MSG_F_COPY = 0x2
cdef int PURGE_QUEUE_AND_INFLIGHT = 0x1 | 0x2

_SYMBOLS = (
    "conf_new", "conf_set", "conf_destroy", "conf_set_dr_msg_cb", "conf_set_error_cb", "conf_set_log_cb",
    "conf_set_opaque", "new", "destroy", "opaque", "set_log_queue", "topic_new", "topic_destroy",
    "produce_batch", "poll", "outq_len", "purge", "err2str", "err2name", "last_error",
)


def _loaded_librdkafka() -> str | None:
    """The path of the librdkafka mapped into this process (confluent-kafka's), if any."""
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
        for line in maps:
            path = line.rstrip("\n").rpartition(" ")[2]  # (wraparound is off: no [-1] here)
            if "/librdkafka" in path and ".so" in path:
                return path
    return None


cdef void* _sym(void* handle, str name) except NULL:
    cdef bytes full = ("rd_kafka_" + name).encode()
    cdef void* p = dlsym(handle, full)
    if p == NULL:
        raise ImportError(f"librdkafka has no {full.decode()}")
    return p


def load() -> str:
    """Bind librdkafka's functions (once); returns the library's path. ImportError if there is none."""
    global loaded, loaded_path
    cdef void* h = NULL
    if loaded:
        return loaded_path
    path = _loaded_librdkafka()
    if path is not None:
        h = dlopen(path.encode(), RTLD_NOW | RTLD_NOLOAD)
    if h == NULL:
        path = "librdkafka.so.1"
        h = dlopen(b"librdkafka.so.1", RTLD_NOW)
    if h == NULL:
        raise ImportError("librdkafka not found (it comes with confluent-kafka)")
    cdef void** slots = <void**>&api
    for i, name in enumerate(_SYMBOLS):
        slots[i] = _sym(h, name)
    loaded = True
    loaded_path = path
    return path


def err_name(int code) -> str:
    """librdkafka's name of an error code, e.g. ``MSG_SIZE_TOO_LARGE``."""
    return api.err2name(code).decode("utf-8", "replace")


def err_text(int code) -> str:
    """librdkafka's description of an error code."""
    return api.err2str(code).decode("utf-8", "replace")


# ---------------------------------------------------------------- flushes

cdef struct FlushC:
    long pending          # messages queued and not yet reported (atomic: produce vs. the polling thread)
    Py_ssize_t nfail, capfail
    int64_t* fail_index   # written by the polling thread only; read once settled
    int* fail_code
    Slot** blocks         # one block of slots per produce call
    Py_ssize_t nblocks

cdef struct Slot:
    FlushC* flush
    int64_t index


cdef class Flush:
    """The messages of one output flush: how many are outstanding, and which failed (record, code).

    ``done`` is set (through ``token``) once the flush is closed and its last report is in.
    """

    cdef FlushC* c
    cdef public bint closed
    cdef public object done
    cdef public object token

    def __cinit__(self) -> None:
        self.c = <FlushC*>calloc(1, sizeof(FlushC))
        if self.c == NULL:
            raise MemoryError()

    def __init__(self, done, token) -> None:
        self.done = done
        self.token = token
        self.closed = False

    def __dealloc__(self) -> None:
        # Only reached once no message of it is left in librdkafka (the producer keeps
        # unsettled flushes until it is destroyed).
        cdef Py_ssize_t i
        if self.c == NULL:
            return
        for i in range(self.c.nblocks):
            free(self.c.blocks[i])
        free(self.c.blocks)
        free(self.c.fail_index)
        free(self.c.fail_code)
        free(self.c)

    @property
    def pending(self) -> int:
        return lf_load(&self.c.pending)

    def failures(self) -> list:
        """``[(record index, error code), ...]`` of the messages librdkafka reported failed."""
        cdef Py_ssize_t i
        return [(self.c.fail_index[i], self.c.fail_code[i]) for i in range(self.c.nfail)]

    def settle(self) -> None:
        """Wake the flush's task (from any thread)."""
        try:
            self.token.run_sync_soon(self.done.set)
        except trio.RunFinishedError:  # nobody is waiting any more
            pass


cdef void _on_delivery(void* rk, const lf_rkmessage* m, void* opaque) noexcept nogil:
    cdef Slot* slot = <Slot*>m._private
    cdef FlushC* f
    cdef Py_ssize_t cap
    if slot == NULL:
        return
    f = slot.flush
    if m.err != 0:
        if f.nfail == f.capfail:
            cap = f.capfail * 2 if f.capfail else 16
            f.fail_index = <int64_t*>realloc(f.fail_index, cap * sizeof(int64_t))
            f.fail_code = <int*>realloc(f.fail_code, cap * sizeof(int))
            if f.fail_index == NULL or f.fail_code == NULL:
                abort()  # a failure that cannot be recorded must not pass as delivered
            f.capfail = cap
        f.fail_index[f.nfail] = slot.index
        f.fail_code[f.nfail] = m.err
        f.nfail += 1
    lf_add(&f.pending, -1)


cdef void _on_error(void* rk, int err, const char* reason, void* opaque) noexcept nogil:
    with gil:
        try:
            (<Producer>opaque).log.warning("kafka: %s", reason.decode("utf-8", "replace"))
        except BaseException:
            pass


cdef void _on_log(const void* rk, int level, const char* fac, const char* buf) noexcept nogil:
    cdef void* opaque = api.opaque(rk)
    if opaque == NULL:
        return
    with gil:
        try:
            # syslog levels: 0-3 error, 4 warning, 5-6 info, 7 debug
            py_level = 40 if level <= 3 else 30 if level == 4 else 20 if level <= 6 else 10
            (<Producer>opaque).log.log(py_level, "librdkafka %s: %s", fac.decode("utf-8", "replace"),
                                        buf.decode("utf-8", "replace"))
        except BaseException:
            pass


# ---------------------------------------------------------------- the producer


class ConfigError(ValueError):
    """librdkafka refused a property; ``key`` names it (None: the producer could not be created)."""

    def __init__(self, key, text) -> None:
        super().__init__(text)
        self.key = key


cdef class Producer:
    """One ``rd_kafka_t`` producer. ``conf``: librdkafka properties, all strings."""

    cdef void* rk
    cdef dict topics       # name -> topic handle (as int)
    cdef set waiting       # Flush objects with messages not yet reported
    cdef public object log

    def __cinit__(self) -> None:
        self.rk = NULL
        self.topics = {}
        self.waiting = set()

    def __init__(self, dict conf, log) -> None:
        cdef char errstr[512]
        cdef void* c
        load()
        self.log = log
        c = api.conf_new()
        props = dict(conf)
        props["log.queue"] = "true"  # logs are served by poll(), in the polling thread
        for key, value in props.items():
            if api.conf_set(c, str(key).encode(), str(value).encode(), errstr, sizeof(errstr)) != 0:
                api.conf_destroy(c)
                raise ConfigError(key, errstr.decode("utf-8", "replace"))
        api.conf_set_dr_msg_cb(c, _on_delivery)
        api.conf_set_error_cb(c, _on_error)
        api.conf_set_log_cb(c, _on_log)
        api.conf_set_opaque(c, <void*>self)
        self.rk = api.new(RD_KAFKA_PRODUCER, c, errstr, sizeof(errstr))
        if self.rk == NULL:
            api.conf_destroy(c)
            raise ConfigError(None, errstr.decode("utf-8", "replace"))
        api.set_log_queue(self.rk, NULL)

    def __dealloc__(self) -> None:
        if self.rk != NULL:
            self._destroy()

    def __len__(self) -> int:
        """Messages queued or in flight, and reports not yet served."""
        if self.rk == NULL:
            return 0
        return api.outq_len(self.rk)

    cdef void* _topic(self, str name) except NULL:
        cdef void* rkt
        handle = self.topics.get(name)
        if handle is not None:
            return <void*><size_t>handle
        rkt = api.topic_new(self.rk, name.encode("utf-8", "surrogatepass"), NULL)
        if rkt == NULL:
            raise ConfigError(None, f"topic {name!r}: {err_text(api.last_error())}")
        self.topics[name] = <size_t>rkt
        return rkt

    def produce(self, Flush flush, str topic, list values, keys, Py_ssize_t base, indices=None) -> list:
        """Queue ``values`` (bytes; None entries are skipped) to ``topic`` for ``flush``.

        Record index of ``values[i]``: ``indices[i]`` when given, else ``base + i``.
        ``keys``: None or a list parallel to ``values`` (None entries: no key).
        Returns ``[(record index, error code), ...]`` of the messages librdkafka did not take.
        """
        cdef Py_ssize_t n = len(values), i, j = 0, k
        cdef lf_rkmessage* msgs
        cdef Slot* slots
        cdef Slot** blocks
        cdef FlushC* f = flush.c
        cdef int good
        cdef object v, key
        cdef list idx = indices
        if self.rk == NULL:
            raise RuntimeError("producer closed")
        if keys is not None and len(keys) != n or idx is not None and len(idx) != n:
            raise ValueError("keys and indices must be parallel to values")
        rkt = self._topic(topic)
        if n == 0:
            return []
        msgs = <lf_rkmessage*>calloc(n, sizeof(lf_rkmessage))
        slots = <Slot*>malloc(n * sizeof(Slot))
        blocks = <Slot**>realloc(f.blocks, (f.nblocks + 1) * sizeof(Slot*))
        if msgs == NULL or slots == NULL or blocks == NULL:
            free(msgs)
            free(slots)
            if blocks != NULL:
                f.blocks = blocks
            raise MemoryError()
        f.blocks = blocks
        f.blocks[f.nblocks] = slots
        f.nblocks += 1
        for i in range(n):
            v = values[i]
            if v is None:
                continue
            msgs[j].payload = PyBytes_AS_STRING(v)
            msgs[j].len = PyBytes_GET_SIZE(v)
            if keys is not None:
                key = keys[i]
                if key is not None:
                    msgs[j].key = PyBytes_AS_STRING(key)
                    msgs[j].key_len = PyBytes_GET_SIZE(key)
            slots[j].flush = f
            slots[j].index = idx[i] if idx is not None else base + i
            msgs[j]._private = &slots[j]
            j += 1
        self.waiting.add(flush)
        lf_add(&f.pending, j)  # before librdkafka can report any of them
        good = api.produce_batch(rkt, PARTITION_UA, MSG_F_COPY, msgs, <int>j)
        refused = []
        if good < j:
            for k in range(j):
                if msgs[k].err != 0:
                    refused.append((slots[k].index, msgs[k].err))
            lf_add(&f.pending, -(j - good))  # never queued: no report will come
        free(msgs)
        return refused

    def poll(self, int timeout_ms) -> int:
        """Serve reports, errors and logs (waits up to ``timeout_ms`` for the first); one thread at a time."""
        cdef int n
        if self.rk == NULL:
            return 0
        with nogil:
            n = api.poll(self.rk, timeout_ms)
        return n

    def settled(self) -> list:
        """The closed flushes whose every message is reported; they stop being tracked."""
        done = [fl for fl in list(self.waiting) if (<Flush>fl).closed and lf_load(&(<Flush>fl).c.pending) == 0]
        for fl in done:
            self.waiting.discard(fl)
        return done

    def forget(self, Flush flush) -> bool:
        """Stop tracking a flush if all its messages are reported (True); else it stays until settled or close."""
        if lf_load(&flush.c.pending) == 0:
            self.waiting.discard(flush)
            return True
        return False

    @property
    def awaiting(self) -> int:
        """Messages produced whose report has not come in. ``len()`` counts more: librdkafka's
        out-queue length includes error and log events waiting for ``poll``."""
        cdef long n = 0
        for fl in self.waiting:
            n += lf_load(&(<Flush>fl).c.pending)
        return n

    def close(self) -> int:
        """Purge what is left, serve the last reports and destroy the producer; returns the
        number of messages purged (reported failed to their flushes, which then retry)."""
        cdef long left
        if self.rk == NULL:
            return 0
        left = self.awaiting
        with nogil:
            api.purge(self.rk, PURGE_QUEUE_AND_INFLIGHT)
            api.poll(self.rk, 0)
        self._destroy()
        return left

    cdef void _destroy(self):
        cdef void* rk = self.rk
        # (from __dealloc__ the containers may already be cleared by the garbage collector)
        if self.topics is not None:
            for handle in self.topics.values():
                api.topic_destroy(<void*><size_t>handle)
            self.topics.clear()
        with nogil:
            api.destroy(rk)
        self.rk = NULL
        # librdkafka holds no message now: the flushes' slots can go with them
        if self.waiting is not None:
            self.waiting.clear()
