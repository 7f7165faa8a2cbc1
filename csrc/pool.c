/* pool.c: the Pool dispatcher -- task and result channels in shared memory,
 * the worker loop, and the parent's result collector thread.
 *
 * One segment per pool ("channel") holds, at fixed offsets:
 *   fm_pool_hdr      magic, owner pid, the slot count, the rings' offsets
 *   fm_pool_slot[n]  the worker table: one 64-byte line per worker slot
 *                    (pid, state, and the batch of tasks it holds)
 *   task ring        parent -> workers (ring.h: many consumers)
 *   result ring      workers -> parent (one consumer: the collector thread)
 *
 * A task record is a *batch*: one job's function (its pickle, so a worker
 * can cache the unpickled function by those bytes and unpickle it once per
 * job, not per task) and `count` consecutive entries of that job, each one
 * user-level task (an apply call, or one chunk of a map: the function is
 * still called once per item).  The parent makes batches of several tasks
 * only when it has many short ones at once (pool.py decides from measured
 * task times), so a chunksize keeps its meaning for the user.  A worker
 * answers each task record with one result record holding every entry's
 * result, pickled, each flagged ok or failed.
 *
 * Who holds what: before a worker releases the task record it copied out,
 * it writes the batch (job, first, count) into its slot and marks it BUSY;
 * it marks it IDLE after committing the results.  When the collector finds
 * a worker's pid gone, it first delivers every result already posted, then
 * hands the slot to Python, which fails exactly the tasks the slot still
 * holds and starts a replacement (the stdlib hangs instead: gh-66587).
 *
 * The collector is a plain pthread.  It sleeps in fm_ring_take with no
 * Python state at all, copies out every record that is ready, and only then
 * takes the GIL (PyGILState_Ensure) to unpickle the results and pass them to
 * one Python callback per batch.  It is stopped by a STOP record the parent
 * posts to the result ring itself, so stopping is immediate.
 *
 * A thread that waits for a result (get(), next(), Future.result()) collects
 * itself instead (PoolChannel.wait): one "leader" at a time takes from the
 * result ring and dispatches, other waiting threads sleep on a process-local
 * sequence word bumped after every dispatch, and the collector thread keeps
 * off the ring while waiting threads collect (and for 10 ms after), so a
 * round trip costs one wake-up in the parent instead of two, and no thread
 * wakes up for nothing.  NUDGE records (parent to itself) make whichever
 * consumer sleeps on the ring look again when the other one took a result.
 *
 * Entries larger than a quarter of a record travel in segments of their own
 * (FM_ENTRY_BIG, below); everything else is copied through the rings. */
#include "fastmp.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "pool.h"
#include "core/ring.h"
#include "structmember.h"


#define FM_POOL_MAGIC 0x4c4f4f50u           /* "POOL" */
#define FM_POOL_VERSION 2u
#define FM_POOL_MAX_SLOTS 4096u
#define FM_POOL_HDR_SPACE 256u
#define FM_POOL_DEFAULT_RING (1u << 20)
/* Records are cut at this many payload bytes when a batch grows, so that
 * one big batch cannot occupy the whole ring. */
#define FM_POOL_BATCH_BYTES (64u * 1024u)
/* How often the collector checks for dead workers while results flow. */
#define FM_POOL_CHECK_NS (50 * 1000 * 1000LL)
/* Most records (and bytes) the collector copies out per GIL acquisition. */
#define FM_POOL_DRAIN_RECORDS 512
#define FM_POOL_DRAIN_BYTES (4u << 20)
/* The collector thread keeps off the ring while waiting threads collect,
 * and for this long after one did; it looks again every FM_POOL_PARK_NS. */
#define FM_POOL_LEADER_RECENT_NS (10 * 1000 * 1000LL)
#define FM_POOL_PARK_NS (2 * 1000 * 1000LL)
/* apply() leaves a record to a busy worker only when tasks take less than
 * this on average (see put_record's `lazy`). */
#define FM_POOL_LAZY_TASK_NS (20 * 1000LL)

enum fm_result_kind {
    FM_RES_RESULT = 1,
    FM_RES_INITFAIL = 2,
    FM_RES_STOP = 3,        /* parent -> its collector thread: leave */
    FM_RES_NUDGE = 4,       /* parent -> its other consumer: look again (see wait) */
    FM_RES_RETIRE = 5,      /* worker: leaving after maxtasks (aux: the slot) */
};

typedef struct {
    _Atomic uint32_t pid;
    _Atomic uint32_t state;
    _Atomic uint64_t job;
    _Atomic uint32_t first;
    _Atomic uint32_t count;
    _Atomic uint64_t tasks_done;
    char _pad[FM_CACHE_LINE - 32];
} fm_pool_slot;

typedef struct {
    uint32_t magic;
    uint32_t version;
    uint32_t nslots;
    uint32_t owner;                 /* the parent's pid: workers exit if it dies */
    uint64_t task_off, task_bytes;
    uint64_t result_off, result_bytes;
    /* Test hook: the next worker to take a task record dies (SIGKILL)
     * before it says in its slot what it holds (see adopt_held). */
    _Atomic uint32_t debug_die_after_take;
} fm_pool_hdr;

typedef struct {
    uint32_t kind;
    uint32_t mode;
    uint64_t job;
    uint32_t first;
    uint32_t count;
    uint32_t func_len;
    uint32_t _pad;
} fm_task_hdr;                      /* then func (padded to 8), then entries */

typedef struct {
    uint32_t kind;
    uint32_t aux;                   /* RESULT: run time in ns (saturated); INITFAIL: the slot */
    uint64_t job;
    uint32_t first;
    uint32_t count;
} fm_result_hdr;                    /* then entries */

typedef struct {
    uint32_t len;
    uint32_t flags;                 /* FM_ENTRY_* */
} fm_entry_hdr;                     /* then len bytes, padded to 8 */

/* Entry flags.  OK: a value (results; without it, a pickled exception).
 * BIG: the pickle is too large for the ring (more than a quarter of a
 * record), so it travels in a segment of its own and the entry holds an
 * fm_big_ref.  The sender creates the segment, registers it with the
 * resource tracker and unmaps it; the receiver copies it out, unlinks it and
 * unregisters it (whoever unlinks unregisters). */
#define FM_ENTRY_OK 1u
#define FM_ENTRY_BIG 2u
/* A map chunk's results, all exact ints that fit int64 (I64) or all exact
 * floats (F64), travel as a packed array of 8-byte values instead of a
 * pickle: a tight loop on both sides instead of the generic pickler (for
 * ints beyond 2**31, pickle's slowest path), with the same exact types. */
#define FM_ENTRY_I64 4u
#define FM_ENTRY_F64 8u
#define FM_ENTRY_VECTOR (FM_ENTRY_I64 | FM_ENTRY_F64)
#define FM_VECTOR_MIN 16    /* shorter lists are pickled: not worth a format */

typedef struct {
    uint64_t len;
    char name[FM_SHM_NAME_MAX];
} fm_big_ref;

_Static_assert(sizeof(fm_pool_slot) == FM_CACHE_LINE, "slot is one cache line");
_Static_assert(sizeof(fm_pool_hdr) <= FM_POOL_HDR_SPACE, "header too big");
_Static_assert(sizeof(fm_task_hdr) % 8 == 0 && sizeof(fm_result_hdr) % 8 == 0 &&
               sizeof(fm_entry_hdr) % 8 == 0, "8-aligned record parts");

static inline size_t
pad8(size_t n)
{
    return (n + 7u) & ~(size_t)7u;
}

static inline fm_pool_slot *
slot_at(fm_pool_hdr *h, uint32_t i)
{
    return (fm_pool_slot *)((unsigned char *)h + FM_POOL_HDR_SPACE) + i;
}

static inline fm_ring *
task_ring(fm_pool_hdr *h)
{
    return (fm_ring *)((unsigned char *)h + h->task_off);
}

static inline fm_ring *
result_ring(fm_pool_hdr *h)
{
    return (fm_ring *)((unsigned char *)h + h->result_off);
}

/* Check a mapped channel before trusting any offset in it. */
static int
pool_check(fm_segment *seg)
{
    fm_pool_hdr *h = (fm_pool_hdr *)seg->base;
    if (seg->size < FM_POOL_HDR_SPACE || h->magic != FM_POOL_MAGIC ||
        h->version != FM_POOL_VERSION || h->nslots == 0 || h->nslots > FM_POOL_MAX_SLOTS)
        return FM_CORRUPT;
    size_t slots_end = FM_POOL_HDR_SPACE + (size_t)h->nslots * sizeof(fm_pool_slot);
    if (h->task_off < slots_end || h->task_off % FM_CACHE_LINE ||
        h->task_bytes > seg->size || h->task_off > seg->size - h->task_bytes ||
        h->result_off < h->task_off + h->task_bytes || h->result_off % FM_CACHE_LINE ||
        h->result_bytes > seg->size || h->result_off > seg->size - h->result_bytes)
        return FM_CORRUPT;
    if (fm_ring_check(task_ring(h), h->task_bytes) != FM_OK ||
        fm_ring_check(result_ring(h), h->result_bytes) != FM_OK)
        return FM_CORRUPT;
    return FM_OK;
}

/* A growable byte buffer (plain malloc: filled without the GIL too). */
typedef struct {
    unsigned char *p;
    size_t len, cap;
} fm_buf;

static int
buf_reserve(fm_buf *b, size_t more)
{
    if (b->len + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    unsigned char *p = realloc(b->p, cap);
    if (p == NULL)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

/* ------------------------------------------------------------ the object */

typedef struct {
    PyObject_HEAD
    fm_segment *seg;
    fm_pool_hdr *hdr;
    uint32_t owner;                 /* pid that created it (and collects) */
    PyObject *dumps, *loads, *fallback_dumps;
    fm_state *st;                   /* the module's: fm_segment_gone() for unlinked segments */
    /* collector thread */
    pthread_t thread;
    int thread_running;
    PyObject *on_results, *on_dead;
    /* Set by pool.py: the pool's {job: result}, whose exact ApplyResults
     * dispatch() completes itself; apply()'s function-pickle cache, its
     * pickler for misses, and its fallback when the ring is full. */
    PyObject *cache, *func_cache, *dump_function, *submit;
    char lazy_wake;                 /* apply() may skip wake-ups (no maxtasksperchild) */
    int64_t spin_ns;
    int64_t task_ns;                /* measured time per task (GIL held) */
    /* A thread waiting for a result collects itself (the "leader"), so a
     * result reaches it without a hop through the collector thread; the
     * collector thread stays off the ring meanwhile.  Other waiting
     * threads sleep on disp_seq, bumped after every dispatch.  These words
     * are process-local: futexes without FUTEX_PRIVATE are fine here too. */
    _Atomic uint32_t leader;        /* 1 while some thread collects in wait() */
    _Atomic int64_t leader_seen;    /* when a thread last collected (ns) */
    _Atomic uint32_t disp_seq;
    _Atomic uint32_t disp_sleepers;
    _Atomic uint32_t in_take;       /* the collector thread sleeps on the ring */
    _Atomic uint32_t waiting;       /* threads inside wait() */
    _Atomic uint32_t closing;
    _Atomic uint32_t stopping;      /* stop_collector(): do not park, take the STOP */
    _Atomic uint32_t retired;       /* a RETIRE record came: the collector calls on_dead */
    PyObject *weakreflist;
} PoolChannelObject;

static PyObject *
import_attr(const char *module, const char *name)
{
    PyObject *m = PyImport_ImportModule(module);
    if (m == NULL)
        return NULL;
    PyObject *a = PyObject_GetAttrString(m, name);
    Py_DECREF(m);
    return a;
}

static PyObject *
PoolChannel_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"slots", "task_capacity", "result_capacity", "fallback_dumps",
                             NULL};
    unsigned int nslots;
    Py_ssize_t tcap = FM_POOL_DEFAULT_RING, rcap = FM_POOL_DEFAULT_RING;
    PyObject *fallback = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "I|nnO:PoolChannel", kwlist, &nslots, &tcap,
                                     &rcap, &fallback))
        return NULL;
    if (nslots < 1 || nslots > FM_POOL_MAX_SLOTS) {
        PyErr_Format(PyExc_ValueError, "slots must be between 1 and %u", FM_POOL_MAX_SLOTS);
        return NULL;
    }
    if (tcap < 1 || rcap < 1 || tcap > (1 << 30) || rcap > (1 << 30)) {
        PyErr_SetString(PyExc_ValueError, "ring capacities must be between 1 and 2**30");
        return NULL;
    }
    fm_state *st = fm_state_of_type(type);
    if (st == NULL)
        return NULL;
    PoolChannelObject *self = (PoolChannelObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->dumps = import_attr("pickle", "dumps");
    self->loads = import_attr("pickle", "loads");
    if (self->dumps == NULL || self->loads == NULL)
        goto error;
    if (fallback != Py_None) {
        Py_INCREF(fallback);
        self->fallback_dumps = fallback;
    }
    self->st = st;

    size_t tsize = fm_ring_bytes(fm_ring_capacity_for((size_t)tcap));
    size_t rsize = fm_ring_bytes(fm_ring_capacity_for((size_t)rcap));
    size_t slots_end = FM_POOL_HDR_SPACE + (size_t)nslots * sizeof(fm_pool_slot);
    size_t task_off = (slots_end + 4095u) & ~(size_t)4095u;
    size_t result_off = (task_off + tsize + 4095u) & ~(size_t)4095u;
    size_t total = result_off + rsize;
    int s = fm_segment_create(total, &self->seg);
    if (s != FM_OK) {
        fm_set_error(s);
        goto error;
    }
    fm_pool_hdr *h = (fm_pool_hdr *)self->seg->base;
    h->version = FM_POOL_VERSION;
    h->nslots = nslots;
    h->owner = fm_self_pid();
    h->task_off = task_off;
    h->task_bytes = tsize;
    h->result_off = result_off;
    h->result_bytes = rsize;
    if (fm_ring_init(task_ring(h), fm_ring_capacity_for((size_t)tcap)) != FM_OK ||
        fm_ring_init(result_ring(h), fm_ring_capacity_for((size_t)rcap)) != FM_OK) {
        PyErr_SetString(PyExc_RuntimeError, "fastmp: cannot initialize the pool's rings");
        goto error;
    }
    atomic_thread_fence(REL);
    h->magic = FM_POOL_MAGIC;
    self->hdr = h;
    self->owner = fm_self_pid();
    /* The collector thread does not spin: a thread waiting for a result
     * collects (and spins) itself; spinning here would only take a CPU from
     * the workers. */
    self->spin_ns = 0;
    /* The resource tracker must hear of the segment, so that a crash of
     * this process does not leave it in /dev/shm. */
    if (st->segment_hook != NULL) {
        PyObject *name = PyUnicode_FromString(self->seg->name);
        if (name == NULL)
            goto error;
        PyObject *r = PyObject_CallOneArg(st->segment_hook, name);
        Py_DECREF(name);
        if (r == NULL)
            goto error;
        Py_DECREF(r);
    }
    return (PyObject *)self;
error:
    Py_DECREF(self);
    return NULL;
}

static int
channel_alive(PoolChannelObject *self)
{
    if (self->hdr == NULL) {
        PyErr_SetString(PyExc_ValueError, "pool channel is closed");
        return 0;
    }
    return 1;
}

static void stop_collector(PoolChannelObject *self);

static void drain_big(fm_ring *r, size_t hdr_size, int task, fm_state *st);
static int post_control(PoolChannelObject *self, uint32_t kind, int64_t deadline);
static void bump_dispatch(PoolChannelObject *self);

static void
channel_destroy(PoolChannelObject *self)
{
    if (self->hdr != NULL && self->owner == fm_self_pid()) {
        /* No thread may still be inside wait() when the mapping goes. */
        atomic_store_explicit(&self->closing, 1, memory_order_seq_cst);
        Py_BEGIN_ALLOW_THREADS
        while (atomic_load_explicit(&self->waiting, memory_order_seq_cst) > 0) {
            if (atomic_load_explicit(&self->leader, memory_order_seq_cst))
                post_control(self, FM_RES_NUDGE, 0);
            bump_dispatch(self);
            usleep(1000);
        }
        Py_END_ALLOW_THREADS
    }
    stop_collector(self);
    if (self->seg != NULL && self->owner == fm_self_pid()) {
        /* large entries nobody will read any more */
        drain_big(task_ring(self->hdr), sizeof(fm_task_hdr), 1, self->st);
        drain_big(result_ring(self->hdr), sizeof(fm_result_hdr), 0, self->st);
        char name[FM_SHM_NAME_MAX];
        snprintf(name, sizeof name, "%s", self->seg->name);
        fm_segment_destroy(self->seg, 1);
        fm_segment_gone(self->st, name);
    }
    self->seg = NULL;
    self->hdr = NULL;
}

static int
PoolChannel_traverse(PoolChannelObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->dumps);
    Py_VISIT(self->loads);
    Py_VISIT(self->fallback_dumps);
    Py_VISIT(self->on_results);
    Py_VISIT(self->on_dead);
    Py_VISIT(self->cache);
    Py_VISIT(self->func_cache);
    Py_VISIT(self->dump_function);
    Py_VISIT(self->submit);
    return 0;
}

static int
PoolChannel_clear(PoolChannelObject *self)
{
    /* a running collector holds its own reference: never cleared under it */
    Py_CLEAR(self->dumps);
    Py_CLEAR(self->loads);
    Py_CLEAR(self->fallback_dumps);
    Py_CLEAR(self->on_results);
    Py_CLEAR(self->on_dead);
    Py_CLEAR(self->cache);
    Py_CLEAR(self->func_cache);
    Py_CLEAR(self->dump_function);
    Py_CLEAR(self->submit);
    return 0;
}

static void
PoolChannel_dealloc(PoolChannelObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    channel_destroy(self);
    PoolChannel_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* --------------------------------------------------------------- pickling */

/* dumps(obj, HIGHEST) -> new bytes, or NULL with the exception set. */
static PyObject *
pickle_obj(PyObject *dumps, PyObject *fallback, PyObject *obj)
{
    PyObject *args[2] = {obj, NULL};
    PyObject *proto = PyLong_FromLong(-1);
    if (proto == NULL)
        return NULL;
    args[1] = proto;
    PyObject *b = PyObject_Vectorcall(dumps, args, 2, NULL);
    Py_DECREF(proto);
    if (b == NULL && fallback != NULL) {
        /* Lambdas, closures, objects only ForkingPickler knows: the Python
         * fallback tries the other picklers and re-raises this error if
         * none can. */
        PyObject *exc = fm_exc_take();
        b = PyObject_CallFunctionObjArgs(fallback, obj, exc, NULL);
        Py_DECREF(exc);
    }
    if (b != NULL && !PyBytes_Check(b)) {
        PyObject *c = PyBytes_FromObject(b);
        Py_DECREF(b);
        b = c;
    }
    return b;
}

/* ------------------------------------------------------------ big entries */

/* GIL held: put data in a segment of its own, registered with the tracker
 * (segment hook) and unmapped here; *ref names it.  -1 with an exception. */
static int
big_store(fm_state *st, const char *data, size_t len, fm_big_ref *ref)
{
    fm_segment *seg;
    int s = fm_segment_create(len ? len : 1, &seg);
    if (s != FM_OK) {
        fm_set_error(s);
        return -1;
    }
    memcpy(seg->base, data, len);
    memset(ref, 0, sizeof *ref);
    ref->len = len;
    memcpy(ref->name, seg->name, sizeof ref->name);
    if (st != NULL && st->segment_hook != NULL) {
        PyObject *name = PyUnicode_FromString(seg->name);
        PyObject *r = name ? PyObject_CallOneArg(st->segment_hook, name) : NULL;
        Py_XDECREF(name);
        if (r == NULL) {
            fm_segment_destroy(seg, 1);
            return -1;
        }
        Py_DECREF(r);
    }
    /* The receiver unlinks it; this process must not at its exit. */
    seg->unlinked = 1;
    fm_segment_destroy(seg, 0);
    return 0;
}

/* GIL held: unlink a big entry's segment and tell the tracker. */
static void
big_unlink(fm_state *st, const fm_big_ref *ref)
{
    char name[FM_SHM_NAME_MAX];
    memcpy(name, ref->name, sizeof name);
    name[sizeof name - 1] = 0;
    if (strncmp(name, FM_SHM_PREFIX, strlen(FM_SHM_PREFIX)) != 0)
        return;
    shm_unlink(name);
    fm_segment_gone(st, name);
}

/* The packed form of a list of results (see FM_ENTRY_I64), or NULL with no
 * exception when the list is not all exact ints (int64) or all floats. */
static PyObject *
encode_vector(PyObject *list, uint32_t *flag)
{
    Py_ssize_t n = PyList_GET_SIZE(list);
    if (n < FM_VECTOR_MIN)
        return NULL;
    PyTypeObject *t = Py_TYPE(PyList_GET_ITEM(list, 0));
    if (t != &PyLong_Type && t != &PyFloat_Type)
        return NULL;
    PyObject *b = PyBytes_FromStringAndSize(NULL, n * 8);
    if (b == NULL) {
        PyErr_Clear();          /* the pickle may still fit */
        return NULL;
    }
    char *p = PyBytes_AS_STRING(b);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = PyList_GET_ITEM(list, i);
        if (Py_TYPE(o) != t)
            goto no;
        if (t == &PyLong_Type) {
            int overflow;
            long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
            if (overflow)
                goto no;
            memcpy(p + 8 * i, &v, 8);
        }
        else {
            double d = PyFloat_AS_DOUBLE(o);
            memcpy(p + 8 * i, &d, 8);
        }
    }
    *flag = t == &PyLong_Type ? FM_ENTRY_I64 : FM_ENTRY_F64;
    return b;
no:
    Py_DECREF(b);
    return NULL;
}

static PyObject *
decode_vector(const unsigned char *p, size_t len, uint32_t flags)
{
    if (len % 8 != 0) {
        PyErr_SetString(PyExc_RuntimeError, "fastmp: bad packed results");
        return NULL;
    }
    Py_ssize_t n = (Py_ssize_t)(len / 8);
    PyObject *list = PyList_New(n);
    for (Py_ssize_t i = 0; list != NULL && i < n; i++) {
        PyObject *o;
        if (flags & FM_ENTRY_I64) {
            long long v;
            memcpy(&v, p + 8 * i, 8);
            o = PyLong_FromLongLong(v);
        }
        else {
            double d;
            memcpy(&d, p + 8 * i, 8);
            o = PyFloat_FromDouble(d);
        }
        if (o == NULL)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, i, o);
    }
    return list;
}

/* GIL held: the object an entry's payload holds (pickled or packed). */
static PyObject *
load_payload(PyObject *loads, const unsigned char *p, size_t len, uint32_t flags)
{
    if (flags & FM_ENTRY_VECTOR)
        return decode_vector(p, len, flags);
    PyObject *mv = PyMemoryView_FromMemory((char *)p, (Py_ssize_t)len, PyBUF_READ);
    if (mv == NULL)
        return NULL;
    PyObject *value = PyObject_CallOneArg(loads, mv);
    /* released before the memory goes (a big entry's mapping is unmapped);
     * an unpickling error stays the one reported */
    PyObject *exc = value == NULL ? fm_exc_take() : NULL;
    PyObject *r = PyObject_CallMethod(mv, "release", NULL);
    if (r == NULL) {
        Py_CLEAR(value);
        if (exc != NULL)
            PyErr_Clear();
    }
    Py_XDECREF(r);
    Py_DECREF(mv);
    if (exc != NULL)
        fm_exc_restore(exc);
    return value;
}

/* GIL held: unpickle a big entry straight from its segment (no copy of
 * the pickle), then unmap and unlink it.  The memoryview is released
 * before the unmap, so nothing can read the mapping after it is gone. */
static PyObject *
big_loads(fm_state *st, PyObject *loads, const unsigned char *p, uint32_t len,
          uint32_t flags)
{
    fm_big_ref ref;
    if (len != sizeof ref) {
        PyErr_SetString(PyExc_RuntimeError, "fastmp: bad large-entry reference");
        return NULL;
    }
    memcpy(&ref, p, sizeof ref);
    ref.name[sizeof ref.name - 1] = 0;
    fm_segment *seg;
    if (fm_segment_attach(ref.name, &seg) != FM_OK) {
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, ref.name);
        return NULL;
    }
    /* Unlinked (and unregistered) at once: the mapping stays readable, and a
     * process killed while it unpickles leaves no file behind.  SIGTERM (a
     * pool's terminate()) waits until the tracker has been told. */
    sigset_t term, old;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &term, &old);
    big_unlink(st, &ref);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    PyObject *value = NULL;
    if (seg->size < ref.len) {
        PyErr_SetString(PyExc_RuntimeError, "fastmp: large entry shorter than announced");
    }
    else {
        value = load_payload(loads, (const unsigned char *)seg->base, (size_t)ref.len, flags);
    }
    /* a view something kept (BufferError from its release): never unmap under it */
    if (value != NULL || !PyErr_ExceptionMatches(PyExc_BufferError))
        fm_segment_destroy(seg, 0);
    return value;
}

/* Unlink the big entries of one record nobody will read. */
static void
unlink_big_entries(const fm_ring_read *rd, size_t hdr_size, int task, fm_state *st)
{
    const unsigned char *p = rd->data;
    size_t left = rd->len, off = hdr_size;
    uint32_t count = 0;
    if (left >= hdr_size) {
        if (task) {
            fm_task_hdr th;
            memcpy(&th, p, sizeof th);
            count = th.kind == FM_TASK_RUN ? th.count : 0;
            off += pad8(th.func_len);
        }
        else {
            fm_result_hdr rh;
            memcpy(&rh, p, sizeof rh);
            count = rh.kind == FM_RES_STOP ? 0 : rh.count;
        }
    }
    for (uint32_t k = 0; k < count && off <= left && left - off >= sizeof(fm_entry_hdr); k++) {
        fm_entry_hdr eh;
        memcpy(&eh, p + off, sizeof eh);
        off += sizeof eh;
        if (left - off < eh.len)
            break;
        if ((eh.flags & FM_ENTRY_BIG) && eh.len == sizeof(fm_big_ref)) {
            fm_big_ref ref;
            memcpy(&ref, p + off, sizeof ref);
            big_unlink(st, &ref);
        }
        off += pad8(eh.len);
    }
}

/* Unlink the big entries of every record left in a ring (at close: nobody
 * will read them).  Task and result records share the entry format after
 * their headers. */
static void
drain_big(fm_ring *r, size_t hdr_size, int task, fm_state *st)
{
    uint32_t pid = fm_self_pid();
    for (;;) {
        fm_ring_read rd;
        if (fm_ring_take(r, pid, 0, 0, &rd) != FM_OK)
            return;
        unlink_big_entries(&rd, hdr_size, task, st);
        fm_ring_release(r, &rd);
    }
}

static size_t
big_threshold(fm_ring *r)
{
    return fm_ring_max_record(r) / 4;
}

/* ------------------------------------------------------------------- put */

/* Write one task record: func + entries[0..n).  The claim waits with the
 * GIL released when `block`; the copy happens with the GIL back (the bytes
 * objects are Python objects).  Returns FM_OK, FM_AGAIN (ring full and not
 * blocking), FM_OVERFLOW (too big for one record), FM_PYERR. */
/* Some worker holds a batch (and will come back to the ring for more). */
static int
any_busy(fm_pool_hdr *h)
{
    for (uint32_t i = 0; i < h->nslots; i++)
        if (atomic_load_explicit(&slot_at(h, i)->state, memory_order_seq_cst) == FM_SLOT_BUSY)
            return 1;
    return 0;
}

static int
put_record(PoolChannelObject *self, uint32_t kind, uint32_t mode, uint64_t job,
           uint32_t first, PyObject *func, PyObject **entries, const uint32_t *flags,
           uint32_t n, int block, int lazy)
{
    fm_ring *r = task_ring(self->hdr);
    size_t flen = func ? (size_t)PyBytes_GET_SIZE(func) : 0;
    size_t total = sizeof(fm_task_hdr) + pad8(flen);
    for (uint32_t i = 0; i < n; i++)
        total += sizeof(fm_entry_hdr) + pad8((size_t)PyBytes_GET_SIZE(entries[i]));
    if (total > fm_ring_max_record(r))
        return FM_OVERFLOW;
    fm_ring_claim c;
    uint32_t pid = fm_self_pid();
    int s;
    if (block) {
        FM_BLOCKING(s, fm_ring_claim_space(r, (uint32_t)total, pid, FM_FOREVER, fm_spin, &c));
    } else {
        s = fm_ring_claim_space(r, (uint32_t)total, pid, 0, 0, &c);
        if (s == FM_TIMEOUT)
            s = FM_AGAIN;
    }
    if (s != FM_OK)
        return s;
    unsigned char *p = c.data;
    fm_task_hdr th = {kind, mode, job, first, n, (uint32_t)flen, 0};
    memcpy(p, &th, sizeof th);
    p += sizeof th;
    if (flen) {
        memcpy(p, PyBytes_AS_STRING(func), flen);
        p += pad8(flen);
    }
    for (uint32_t i = 0; i < n; i++) {
        fm_entry_hdr eh = {(uint32_t)PyBytes_GET_SIZE(entries[i]), flags[i]};
        memcpy(p, &eh, sizeof eh);
        p += sizeof eh;
        memcpy(p, PyBytes_AS_STRING(entries[i]), eh.len);
        p += pad8(eh.len);
    }
    if (lazy) {
        /* `lazy`: tasks are short (measured).  When this record is the only
         * one waiting and a worker is busy, that worker takes it as soon as
         * it is done, so no sleeping worker is woken: in a burst of
         * apply_async() the wake-up (and, on few cores, the preemption of
         * this thread by the woken worker) cost more than the task.  The
         * worker's seq_cst store of its slot state after its batch comes
         * after our load of BUSY, and its take after that sees our record. */
        fm_ring_publish(r, &c);
        if (!fm_ring_is_oldest(r, &c) || !any_busy(self->hdr))
            fm_ring_wake_consumer(r);
    }
    else {
        fm_ring_commit(r, &c);
    }
    return FM_OK;
}

PyDoc_STRVAR(put_doc,
"put($self, job, mode, first, func, items, batch=1, block=True, /)\n--\n\n"
"Pickle items and post them as tasks first, first+1, ... of job, at most\n"
"batch per record.  Returns (consumed, error): error is None, or the\n"
"exception that items[consumed] raised when pickled (or that made it too\n"
"large for the channel); items before it were posted.  Without block,\n"
"stops (error None) when the ring is full.");

static PyObject *
PoolChannel_put(PoolChannelObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 5 || nargs > 7) {
        PyErr_SetString(PyExc_TypeError, "put() takes 5 to 7 arguments");
        return NULL;
    }
    if (!channel_alive(self))
        return NULL;
    unsigned long long job = PyLong_AsUnsignedLongLong(args[0]);
    long mode = PyLong_AsLong(args[1]);
    long first = PyLong_AsLong(args[2]);
    if (PyErr_Occurred())
        return NULL;
    PyObject *func = args[3];
    if (!PyBytes_Check(func)) {
        PyErr_SetString(PyExc_TypeError, "func must be bytes (a pickle)");
        return NULL;
    }
    long batch = nargs > 5 ? PyLong_AsLong(args[5]) : 1;
    int block = nargs > 6 ? PyObject_IsTrue(args[6]) : 1;
    if ((batch == -1 || block < 0) && PyErr_Occurred())
        return NULL;
    if (mode < 0 || mode > FM_MODE_STARMAP || first < 0 || batch < 1) {
        PyErr_SetString(PyExc_ValueError, "bad mode, first or batch");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(args[4], "items must be a sequence");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PyObject *pending[64];
    uint32_t pflags[64];
    uint32_t npending = 0;
    size_t big = big_threshold(task_ring(self->hdr));
    fm_state *st = fm_state_of_type(Py_TYPE(self));
    if (st == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    size_t pending_bytes = 0;
    Py_ssize_t done = 0;        /* items posted */
    PyObject *error = NULL;
    int s = FM_OK;
    if (batch > 64)
        batch = 64;

    for (Py_ssize_t i = 0; i <= n; i++) {
        PyObject *b = NULL;
        uint32_t bflag = FM_ENTRY_OK;
        if (i < n) {
            b = pickle_obj(self->dumps, self->fallback_dumps, items[i]);
            if (b == NULL)
                goto item_failed;
            if ((size_t)PyBytes_GET_SIZE(b) > big) {
                fm_big_ref ref;
                int rc = big_store(st, PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b), &ref);
                Py_DECREF(b);
                b = rc < 0 ? NULL
                           : PyBytes_FromStringAndSize((const char *)&ref, sizeof ref);
                if (b == NULL) {
                    if (rc == 0)
                        big_unlink(self->st, &ref);
                    goto item_failed;
                }
                bflag |= FM_ENTRY_BIG;
            }
        }
        int flush = npending > 0 &&
                    (i == n || npending == (uint32_t)batch ||
                     pending_bytes + (b ? (size_t)PyBytes_GET_SIZE(b) : 0) > FM_POOL_BATCH_BYTES);
        if (flush) {
            s = put_record(self, FM_TASK_RUN, (uint32_t)mode, job, (uint32_t)(first + done),
                           func, pending, pflags, npending, block, 0);
            if (s == FM_OVERFLOW && npending > 1) {
                /* a record with several tasks got too big: send them one by one */
                for (uint32_t k = 0; k < npending && s != FM_PYERR; k++) {
                    s = put_record(self, FM_TASK_RUN, (uint32_t)mode, job,
                                   (uint32_t)(first + done), func, pending + k, pflags + k, 1,
                                   block, 0);
                    if (s != FM_OK)
                        break;
                    Py_CLEAR(pending[k]);
                    done++;
                }
                if (s == FM_OK) {
                    npending = 0;
                    pending_bytes = 0;
                }
            }
            else if (s == FM_OK) {
                for (uint32_t k = 0; k < npending; k++)
                    Py_CLEAR(pending[k]);
                done += npending;
                npending = 0;
                pending_bytes = 0;
            }
            if (s != FM_OK) {
                if (b != NULL && (bflag & FM_ENTRY_BIG))
                    big_unlink(self->st, (const fm_big_ref *)PyBytes_AS_STRING(b));
                Py_XDECREF(b);
                break;
            }
        }
        if (b != NULL) {
            pflags[npending] = bflag;
            pending[npending++] = b;
            pending_bytes += (size_t)PyBytes_GET_SIZE(b);
        }
        continue;
    item_failed:
        /* flush what came before, then report this item */
        if (npending) {
            s = put_record(self, FM_TASK_RUN, (uint32_t)mode, job, (uint32_t)(first + done),
                           func, pending, pflags, npending, 1, 0);
            if (s == FM_OK) {
                for (uint32_t k = 0; k < npending; k++)
                    Py_CLEAR(pending[k]);
                done += npending;
                npending = 0;
            }
            else {
                /* keep the pickling error: the posting error replaces it */
                PyErr_Clear();
                break;
            }
        }
        error = fm_exc_take();
        s = FM_OK;
        break;
    }
    for (uint32_t k = 0; k < npending; k++) {
        /* not posted (ring full, or an error): nobody will read them */
        if (pending[k] != NULL && (pflags[k] & FM_ENTRY_BIG))
            big_unlink(self->st, (const fm_big_ref *)PyBytes_AS_STRING(pending[k]));
        Py_XDECREF(pending[k]);
    }
    Py_DECREF(seq);
    if (s == FM_OVERFLOW) {
        /* a single task too large for the channel: that task fails */
        PyErr_Format(PyExc_ValueError,
                     "task too large for the pool's channel (max %zu bytes per task)",
                     fm_ring_max_record(task_ring(self->hdr)) - sizeof(fm_task_hdr) -
                         sizeof(fm_entry_hdr) - pad8((size_t)PyBytes_GET_SIZE(func)));
        error = fm_exc_take();
        s = FM_OK;
    }
    if (s == FM_AGAIN)
        s = FM_OK;
    if (s != FM_OK) {
        Py_XDECREF(error);
        if (s == FM_BROKEN)
            PyErr_SetString(PyExc_ValueError, "pool channel is closed");
        else
            fm_set_error(s);
        return NULL;
    }
    PyObject *res = Py_BuildValue("(nO)", done, error ? error : Py_None);
    Py_XDECREF(error);
    return res;
}

static int drain(fm_ring *r, fm_buf *b, uint32_t pid, int64_t first_deadline, int64_t spin);
static int dispatch(PoolChannelObject *self, fm_buf *b);
static int has_results(const fm_buf *b);

/* GIL held, in apply(): results pile up in the result ring while this
 * thread submits, since the collector thread waits for the GIL it holds
 * (up to a switch interval, 5 ms, each time); past this many bytes, hand a
 * batch over from here instead. */
#define FM_POOL_HELP_BYTES (32u * 1024u)

static void
help_collect(PoolChannelObject *self)
{
    if (self->hdr == NULL || self->owner != fm_self_pid())
        return;
    fm_ring *r = result_ring(self->hdr);
    if (fm_ring_pending_bytes(r) < FM_POOL_HELP_BYTES)
        return;
    fm_buf b = {0};
    drain(r, &b, self->owner, 0, 0);
    if (b.len > 0) {
        int real = has_results(&b);
        /* may run callbacks, which may even close the channel */
        int stop = dispatch(self, &b);
        if (stop && self->hdr != NULL)
            post_control(self, FM_RES_STOP, FM_FOREVER);    /* the collector's */
        if (real)
            bump_dispatch(self);
    }
    free(b.p);
}

PyDoc_STRVAR(apply_doc,
"apply($self, pool, func, args, kwds, callback, error_callback, /)\n--\n\n"
"Pool.apply_async() when nothing waits in the feeder: a new ApplyResult\n"
"(registered in cache) whose task is posted at once, or handed to submit()\n"
"when the ring has no room.  A function or arguments that cannot be pickled\n"
"fail the result, as in the stdlib.");

static PyObject *
PoolChannel_apply(PoolChannelObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "apply() takes 6 arguments");
        return NULL;
    }
    if (!channel_alive(self))
        return NULL;
    if (self->cache == NULL || self->func_cache == NULL || self->dump_function == NULL ||
        self->submit == NULL || !PyDict_Check(self->func_cache)) {
        PyErr_SetString(PyExc_RuntimeError, "apply(): the channel is not set up for it");
        return NULL;
    }
    fm_state *st = fm_state_of_type(Py_TYPE(self));
    if (st == NULL)
        return NULL;
    PyObject *func = args[1], *fargs = args[2], *kwds = args[3];
    int has_kw = kwds == Py_None ? 0 : PyObject_IsTrue(kwds);
    if (has_kw < 0)
        return NULL;
    /* the entry: the args tuple, or (args, kwds) */
    uint32_t mode = has_kw ? FM_MODE_APPLY_KW : FM_MODE_APPLY;
    PyObject *entry = has_kw ? PyTuple_Pack(2, fargs, kwds)
                             : PyTuple_CheckExact(fargs) ? Py_NewRef(fargs)
                                                         : PySequence_Tuple(fargs);
    if (entry == NULL)
        return NULL;
    PyObject *result = fm_apply_result_new(st, args[0], self->cache, (PyObject *)self,
                                           args[4], args[5]);
    if (result == NULL) {
        Py_DECREF(entry);
        return NULL;
    }
    PyObject *fdata = NULL, *b = NULL;
    if (PyFunction_Check(func) || PyCFunction_Check(func)) {
        fdata = PyDict_GetItemWithError(self->func_cache, func);
        Py_XINCREF(fdata);
        if (fdata == NULL && PyErr_Occurred())
            goto failed;
    }
    if (fdata == NULL) {
        fdata = PyObject_CallOneArg(self->dump_function, func);
        if (fdata == NULL)
            goto failed;
        if (!PyBytes_Check(fdata)) {
            PyErr_SetString(PyExc_TypeError, "dump_function must return bytes");
            goto failed;
        }
    }
    b = pickle_obj(self->dumps, self->fallback_dumps, entry);
    if (b == NULL)
        goto failed;
    int s = FM_AGAIN;
    if ((size_t)PyBytes_GET_SIZE(b) <= big_threshold(task_ring(self->hdr))) {
        uint32_t flag = FM_ENTRY_OK;
        unsigned long long job = PyLong_AsUnsignedLongLong(fm_apply_result_job(result));
        if (job == (unsigned long long)-1 && PyErr_Occurred())
            goto failed;
        int lazy = self->lazy_wake && self->task_ns > 0 && self->task_ns < FM_POOL_LAZY_TASK_NS;
        s = put_record(self, FM_TASK_RUN, mode, job, 0, fdata, &b, &flag, 1, 0, lazy);
    }
    if (s == FM_AGAIN || s == FM_OVERFLOW) {
        /* no room now, or a large entry: the Python path posts it */
        PyObject *items = PyList_New(1);
        if (items == NULL)
            goto failed;
        PyList_SET_ITEM(items, 0, Py_NewRef(entry));
        PyObject *r = PyObject_CallFunction(self->submit, "OIOO", result, mode, fdata, items);
        Py_DECREF(items);
        if (r == NULL)
            goto error;
        Py_DECREF(r);
    }
    else if (s != FM_OK) {
        if (s == FM_BROKEN)
            PyErr_SetString(PyExc_ValueError, "pool channel is closed");
        else
            fm_set_error(s);
        goto error;
    }
    Py_DECREF(b);
    Py_DECREF(fdata);
    Py_DECREF(entry);
    help_collect(self);
    return result;
failed: {
        /* the task cannot be sent: its result is that exception */
        PyObject *exc = fm_exc_take();
        fm_apply_result_complete(result, 0, exc);
        Py_DECREF(exc);
        Py_XDECREF(b);
        Py_XDECREF(fdata);
        Py_DECREF(entry);
        return result;
    }
error:
    /* the pool is ending under us: no result to return, so no task either */
    {
        PyObject *exc = fm_exc_take();
        PyObject *cache = self->cache;
        if (cache != NULL && PyDict_DelItem(cache, fm_apply_result_job(result)) < 0)
            PyErr_Clear();
        fm_exc_restore(exc);
    }
    Py_XDECREF(b);
    Py_XDECREF(fdata);
    Py_DECREF(entry);
    Py_DECREF(result);
    return NULL;
}

PyDoc_STRVAR(adopt_held_doc,
"adopt_held($self, pid, /)\n--\n\n"
"A dead worker took a task record off the ring and died before saying so in\n"
"its slot: take the record over, release it, and return (kind, job, first,\n"
"count) of the tasks it held (kind 1: tasks, 2: an EXIT), or None.");

static PyObject *
PoolChannel_adopt_held(PoolChannelObject *self, PyObject *arg)
{
    if (!channel_alive(self))
        return NULL;
    unsigned long pid = PyLong_AsUnsignedLong(arg);
    if (pid == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    if (pid == 0 || pid > UINT32_MAX || fm_pid_alive((pid_t)pid)) {
        PyErr_SetString(PyExc_ValueError, "adopt_held(): pid must be a dead process's");
        return NULL;
    }
    fm_ring *r = task_ring(self->hdr);
    fm_ring_read rd;
    if (fm_ring_adopt(r, (uint32_t)pid, fm_self_pid(), &rd) != FM_OK)
        Py_RETURN_NONE;
    fm_task_hdr th = {0};
    if (rd.len >= sizeof th)
        memcpy(&th, rd.data, sizeof th);
    unlink_big_entries(&rd, sizeof th, 1, self->st);
    fm_ring_release(r, &rd);
    if (th.kind != FM_TASK_RUN && th.kind != FM_TASK_EXIT)
        Py_RETURN_NONE;
    return Py_BuildValue("(IKII)", th.kind, (unsigned long long)th.job, th.first, th.count);
}

static PyObject *
PoolChannel_debug_kill_next_taker(PoolChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    if (!channel_alive(self))
        return NULL;
    atomic_store_explicit(&self->hdr->debug_die_after_take, 1, memory_order_seq_cst);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(put_exit_doc,
"put_exit($self, n, /)\n--\n\n"
"Post n EXIT records: each makes one worker leave its loop.");

static PyObject *
PoolChannel_put_exit(PoolChannelObject *self, PyObject *arg)
{
    if (!channel_alive(self))
        return NULL;
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    for (long i = 0; i < n; i++) {
        int s = put_record(self, FM_TASK_EXIT, 0, 0, 0, NULL, NULL, NULL, 0, 1, 0);
        if (s != FM_OK)
            return fm_set_error(s);
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------ the slots */

PyDoc_STRVAR(slot_doc,
"slot($self, i, /)\n--\n\n"
"Worker slot i as (pid, state, job, first, count, tasks_done).");

static PyObject *
PoolChannel_slot(PoolChannelObject *self, PyObject *arg)
{
    if (!channel_alive(self))
        return NULL;
    long i = PyLong_AsLong(arg);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    if (i < 0 || (unsigned long)i >= self->hdr->nslots) {
        PyErr_SetString(PyExc_IndexError, "slot index out of range");
        return NULL;
    }
    fm_pool_slot *sl = slot_at(self->hdr, (uint32_t)i);
    uint32_t state = atomic_load_explicit(&sl->state, ACQ);
    return Py_BuildValue("(kkKkkK)", (unsigned long)atomic_load_explicit(&sl->pid, RLX),
                         (unsigned long)state,
                         (unsigned long long)atomic_load_explicit(&sl->job, RLX),
                         (unsigned long)atomic_load_explicit(&sl->first, RLX),
                         (unsigned long)atomic_load_explicit(&sl->count, RLX),
                         (unsigned long long)atomic_load_explicit(&sl->tasks_done, RLX));
}

PyDoc_STRVAR(set_slot_doc,
"set_slot($self, i, pid, state, /)\n--\n\n"
"Prepare slot i for a new worker (state 1), free it (pid 0, state 0), or with\n"
"state None only record the started worker's pid.");

static PyObject *
PoolChannel_set_slot(PoolChannelObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "set_slot() takes 3 arguments");
        return NULL;
    }
    if (!channel_alive(self))
        return NULL;
    long i = PyLong_AsLong(args[0]);
    long pid = PyLong_AsLong(args[1]);
    long state = args[2] == Py_None ? -1 : PyLong_AsLong(args[2]);
    if (PyErr_Occurred())
        return NULL;
    if (i < 0 || (unsigned long)i >= self->hdr->nslots || pid < 0 || state < -1 ||
        state > FM_SLOT_EXITED) {
        PyErr_SetString(PyExc_ValueError, "bad slot, pid or state");
        return NULL;
    }
    fm_pool_slot *sl = slot_at(self->hdr, (uint32_t)i);
    if (state == -1) {
        /* the worker writes the same pid when it starts: no race on it */
        atomic_store_explicit(&sl->pid, (uint32_t)pid, REL);
        Py_RETURN_NONE;
    }
    atomic_store_explicit(&sl->count, 0, RLX);
    atomic_store_explicit(&sl->tasks_done, 0, RLX);
    atomic_store_explicit(&sl->pid, (uint32_t)pid, RLX);
    atomic_store_explicit(&sl->state, (uint32_t)state, REL);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------ collector */

/* Check every worker's pid: 1 if some worker that was in use is gone. */
static int
any_dead(fm_pool_hdr *h)
{
    for (uint32_t i = 0; i < h->nslots; i++) {
        fm_pool_slot *sl = slot_at(h, i);
        uint32_t state = atomic_load_explicit(&sl->state, ACQ);
        uint32_t pid = atomic_load_explicit(&sl->pid, RLX);
        if (state != FM_SLOT_FREE && pid != 0 && !fm_pid_alive((pid_t)pid))
            return 1;
    }
    return 0;
}

/* With the GIL: unpickle the copied records; complete exact ApplyResults
 * at once, and hand everything else to on_results as a list of runs,
 * (job, first, [(ok, value), ...]) for tasks first, first+1, ...; returns
 * 1 when a STOP record was among them. */
static int
dispatch(PoolChannelObject *self, fm_buf *b)
{
    int stop = 0, completed = 0;
    uint64_t key_job = 0;
    PyObject *key = NULL;           /* key_job as an int, for cache lookups */
    fm_state *st = fm_state_of_type(Py_TYPE(self));
    PyObject *list = PyList_New(0);
    if (list == NULL || st == NULL)
        goto error;
    size_t off = 0;
    while (off < b->len) {
        uint32_t rlen;
        memcpy(&rlen, b->p + off, sizeof rlen);
        const unsigned char *rec = b->p + off + 8;
        off += 8 + pad8(rlen);
        if (rlen < sizeof(fm_result_hdr))
            continue;
        fm_result_hdr rh;
        memcpy(&rh, rec, sizeof rh);
        if (rh.kind == FM_RES_STOP) {
            stop = 1;
            continue;
        }
        if (rh.kind == FM_RES_RETIRE) {
            /* a worker left after maxtasks: the collector thread replaces it
             * (on_dead) now, not at its next check; wake it if parked */
            atomic_store_explicit(&self->retired, 1, memory_order_seq_cst);
            if (!(self->thread_running && pthread_equal(self->thread, pthread_self()))) {
                fm_futex_wake(&self->leader, 1);
                if (atomic_load_explicit(&self->in_take, memory_order_seq_cst))
                    post_control(self, FM_RES_NUDGE, 0);
            }
            continue;
        }
        if (rh.kind == FM_RES_RESULT && rh.count > 0) {
            /* a moving average of the time per task, for batching decisions */
            int64_t per = (int64_t)rh.aux / rh.count;
            int64_t avg = self->task_ns ? (self->task_ns * 7 + per) / 8 : per;
            self->task_ns = avg > 0 ? avg : 1;     /* 0 means "not measured yet" */
        }
        size_t p = sizeof rh;
        PyObject *pairs = NULL;     /* [(ok, value), ...] of tasks run_first, ... */
        uint32_t run_first = 0;
        for (uint32_t k = 0; k < rh.count; k++) {
            fm_entry_hdr eh;
            if (rlen - p < sizeof eh)
                break;
            memcpy(&eh, rec + p, sizeof eh);
            p += sizeof eh;
            if (rlen - p < eh.len)
                break;
            PyObject *value = (eh.flags & FM_ENTRY_BIG)
                                  ? big_loads(self->st, self->loads, rec + p, eh.len,
                                              eh.flags)
                                  : load_payload(self->loads, rec + p, eh.len, eh.flags);
            p += pad8(eh.len);
            int ok = (eh.flags & FM_ENTRY_OK) != 0;
            if (value == NULL) {
                /* a result the parent cannot unpickle fails its task
                 * (the stdlib's result thread dies here: gh-79492) */
                value = fm_exc_take();
                ok = 0;
            }
            if (rh.kind == FM_RES_RESULT && rh.first + k == 0 && self->cache != NULL &&
                PyDict_CheckExact(self->cache)) {
                /* an apply_async() result: completed here, no Python code
                 * in between (unless it has a callback) */
                if (key == NULL || key_job != rh.job) {
                    Py_XSETREF(key, PyLong_FromUnsignedLongLong((unsigned long long)rh.job));
                    key_job = rh.job;
                    if (key == NULL) {
                        Py_DECREF(value);
                        Py_XDECREF(pairs);
                        goto error;
                    }
                }
                PyObject *res = PyDict_GetItemWithError(self->cache, key);
                if (res != NULL && fm_is_apply_result(st, res)) {
                    Py_INCREF(res);
                    fm_apply_result_complete(res, ok, value);
                    Py_DECREF(res);
                    Py_DECREF(value);
                    completed = 1;
                    continue;
                }
                if (res == NULL && PyErr_Occurred())
                    PyErr_Clear();
            }
            if (pairs == NULL) {
                pairs = PyList_New(0);
                run_first = rh.first + k;
                if (pairs == NULL) {
                    Py_DECREF(value);
                    goto error;
                }
            }
            /* "N" consumes value, on failure too */
            PyObject *pair = Py_BuildValue("(NN)", PyBool_FromLong(ok), value);
            int rc = pair == NULL ? -1 : PyList_Append(pairs, pair);
            Py_XDECREF(pair);
            if (rc < 0) {
                Py_DECREF(pairs);
                goto error;
            }
        }
        if (pairs != NULL) {
            /* one run per record: (job, first, pairs); an initializer's
             * failure is job 0, with the worker's slot for first */
            PyObject *t = rh.kind == FM_RES_INITFAIL
                              ? Py_BuildValue("(KIN)", 0ULL, rh.aux, pairs)
                              : Py_BuildValue("(KIN)", (unsigned long long)rh.job, run_first,
                                              pairs);
            if (t == NULL)
                goto error;
            int rc = PyList_Append(list, t);
            Py_DECREF(t);
            if (rc < 0)
                goto error;
        }
    }
    /* called after completions too, even with nothing more: it finishes a
     * closed pool once its last job is done */
    if ((PyList_GET_SIZE(list) > 0 || completed) && self->on_results != NULL) {
        PyObject *r = PyObject_CallOneArg(self->on_results, list);
        if (r == NULL)
            PyErr_WriteUnraisable(self->on_results);
        Py_XDECREF(r);
    }
    Py_XDECREF(key);
    Py_DECREF(list);
    return stop;
error:
    PyErr_WriteUnraisable((PyObject *)self);
    Py_XDECREF(key);
    Py_XDECREF(list);
    return stop;
}

/* Copy out every ready record (up to the drain limits) into b: one
 * blocking take first when `wait`.  Returns the last take's status. */
static int
drain(fm_ring *r, fm_buf *b, uint32_t pid, int64_t first_deadline, int64_t spin)
{
    int s = FM_OK;
    int wait = first_deadline > 0;
    for (int n = 0; n < FM_POOL_DRAIN_RECORDS && b->len < FM_POOL_DRAIN_BYTES; n++) {
        fm_ring_read rd;
        int64_t deadline = (wait && n == 0) ? first_deadline : 0;
        s = fm_ring_take(r, pid, deadline, (wait && n == 0) ? spin : 0, &rd);
        if (s != FM_OK)
            return n > 0 ? FM_OK : s;
        if (buf_reserve(b, 8 + pad8(rd.len)) < 0) {
            /* out of memory: drop the record rather than spin on it */
            fm_ring_release(r, &rd);
            continue;
        }
        uint32_t len = rd.len;
        memcpy(b->p + b->len, &len, sizeof len);
        memcpy(b->p + b->len + 8, rd.data, rd.len);
        b->len += 8 + pad8(rd.len);
        fm_ring_release(r, &rd);
    }
    return s;
}

/* Post a STOP or NUDGE record (no GIL needed). */
static int
post_control(PoolChannelObject *self, uint32_t kind, int64_t deadline)
{
    fm_ring *r = result_ring(self->hdr);
    fm_ring_claim c;
    int s;
    for (;;) {
        s = fm_ring_claim_space(r, sizeof(fm_result_hdr), self->owner, deadline, 0, &c);
        if (s != FM_EINTR)
            break;
    }
    if (s == FM_OK) {
        fm_result_hdr rh = {kind, 0, 0, 0, 0};
        memcpy(c.data, &rh, sizeof rh);
        fm_ring_commit(r, &c);
    }
    return s;
}

static void
bump_dispatch(PoolChannelObject *self)
{
    atomic_fetch_add_explicit(&self->disp_seq, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&self->disp_sleepers, memory_order_seq_cst) > 0)
        fm_futex_wake(&self->disp_seq, INT32_MAX);
}

/* Does the copied batch hold results (not only control records)? */
static int
has_results(const fm_buf *b)
{
    size_t off = 0;
    while (off < b->len) {
        uint32_t rlen;
        fm_result_hdr rh;
        memcpy(&rlen, b->p + off, sizeof rlen);
        if (rlen >= sizeof rh) {
            memcpy(&rh, b->p + off + 8, sizeof rh);
            if (rh.kind == FM_RES_RESULT || rh.kind == FM_RES_INITFAIL)
                return 1;
        }
        off += 8 + pad8(rlen);
    }
    return 0;
}

/* Does the copied batch hold a STOP or RETIRE record (which must reach
 * dispatch())? */
static int
has_stop(const fm_buf *b)
{
    size_t off = 0;
    while (off < b->len) {
        uint32_t rlen;
        fm_result_hdr rh;
        memcpy(&rlen, b->p + off, sizeof rlen);
        if (rlen >= sizeof rh) {
            memcpy(&rh, b->p + off + 8, sizeof rh);
            if (rh.kind == FM_RES_STOP || rh.kind == FM_RES_RETIRE)
                return 1;
        }
        off += 8 + pad8(rlen);
    }
    return 0;
}

static void *
collector_main(void *arg)
{
    PoolChannelObject *self = arg;
    fm_pool_hdr *h = self->hdr;
    fm_ring *r = result_ring(h);
    uint32_t pid = fm_self_pid();
    fm_buf b = {0};
    int64_t next_check = fm_now_ns() + FM_POOL_CHECK_NS;
    int stop = 0;
    while (!stop) {
        b.len = 0;
        int s;
        if (!atomic_load_explicit(&self->stopping, ACQ) &&
            (atomic_load_explicit(&self->leader, ACQ) ||
             fm_now_ns() - atomic_load_explicit(&self->leader_seen, RLX) <
                 FM_POOL_LEADER_RECENT_NS)) {
            /* Waiting threads collect (one is at it, or was a moment ago, as
             * in a loop of apply()): stay off the ring, so that they need not
             * send us off it, and look again in a while (no wake-up is owed
             * to us when they are done). */
            fm_futex_wait(&self->leader, atomic_load_explicit(&self->leader, ACQ),
                          fm_now_ns() + FM_POOL_PARK_NS);
            s = FM_AGAIN;
        }
        else {
            atomic_store_explicit(&self->in_take, 1, memory_order_seq_cst);
            s = drain(r, &b, pid, fm_now_ns() + FM_POOL_CHECK_NS, self->spin_ns);
            atomic_store_explicit(&self->in_take, 0, memory_order_seq_cst);
        }
        int64_t now = fm_now_ns();
        int check = now >= next_check;
        int dead = 0;
        if (check) {
            next_check = now + FM_POOL_CHECK_NS;
            dead = any_dead(h);
            if (dead) {
                /* deliver what the dead worker posted before it died, so that
                 * only tasks it still held are failed */
                drain(r, &b, pid, 0, 0);
            }
        }
        if (b.len == 0 && !dead && !atomic_load_explicit(&self->retired, memory_order_seq_cst))
            continue;
        (void)s;
        int real = has_results(&b);
        PyGILState_STATE g = PyGILState_Ensure();
        if (b.len)
            stop = dispatch(self, &b);
        /* a worker retired (its RETIRE record came here or to a waiting
         * thread): replace it now */
        if (atomic_exchange_explicit(&self->retired, 0, memory_order_seq_cst))
            dead = 1;
        if (dead && !stop && self->on_dead != NULL) {
            PyObject *r2 = PyObject_CallNoArgs(self->on_dead);
            if (r2 == NULL)
                PyErr_WriteUnraisable(self->on_dead);
            Py_XDECREF(r2);
        }
        PyGILState_Release(g);
        if (real || dead) {
            bump_dispatch(self);
            /* a thread that became the collecting waiter meanwhile sleeps on
             * the ring: what we handed over may be its result */
            if (atomic_load_explicit(&self->leader, memory_order_seq_cst))
                post_control(self, FM_RES_NUDGE, 0);
        }
    }
    free(b.p);
    return NULL;
}

PyDoc_STRVAR(wait_doc,
"wait($self, timeout=None, /)\n--\n\n"
"Wait for results to be handed over, collecting them in this thread when no\n"
"other thread does.  Returns True after a hand-over (to anyone), False when\n"
"the timeout (at most a short slice) passed, None when the channel is closing\n"
"or not collecting (wait some other way).  The caller checks what it waits\n"
"for and calls again.");

#define FM_POOL_LEADER_SLICE_NS (20 * 1000 * 1000LL)

/* No GIL: a waiting thread that does not collect sleeps until disp_seq moves. */
static int
follower_wait_once(PoolChannelObject *self, uint32_t seen, int64_t deadline)
{
    int s = FM_OK;
    atomic_fetch_add_explicit(&self->disp_sleepers, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&self->disp_seq, memory_order_seq_cst) == seen &&
        !atomic_load_explicit(&self->closing, memory_order_seq_cst))
        s = fm_futex_wait(&self->disp_seq, seen, deadline);
    atomic_fetch_sub_explicit(&self->disp_sleepers, 1, memory_order_seq_cst);
    return s;
}

/* PoolChannel.wait(), and ApplyResult's waits: 1 handed over, 0 nothing,
 * 2 cannot wait here, -1 error (see pool.h). */
static int
channel_wait(PoolChannelObject *self, int64_t deadline)
{
    if (self->hdr == NULL || self->owner != fm_self_pid() || !self->thread_running)
        return 2;
    int64_t slice = fm_now_ns() + FM_POOL_LEADER_SLICE_NS;
    if (slice < deadline)
        deadline = slice;
    atomic_fetch_add_explicit(&self->waiting, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&self->closing, memory_order_seq_cst)) {
        atomic_fetch_sub_explicit(&self->waiting, 1, memory_order_seq_cst);
        return 2;
    }
    uint32_t seen = atomic_load_explicit(&self->disp_seq, memory_order_seq_cst);
    uint32_t zero = 0;
    int got = 0, s = FM_OK;
    if (atomic_compare_exchange_strong_explicit(&self->leader, &zero, 1, memory_order_seq_cst,
                                                memory_order_seq_cst)) {
        fm_buf b = {0};
        fm_ring *r = result_ring(self->hdr);
        uint32_t pid = self->owner;
        int64_t spin = atomic_load_explicit(&fm_spin_ns, RLX);
        Py_BEGIN_ALLOW_THREADS
        /* the collector thread may be asleep on the ring: send it off */
        if (atomic_load_explicit(&self->in_take, memory_order_seq_cst))
            post_control(self, FM_RES_NUDGE, 0);
        for (;;) {
            b.len = 0;
            s = drain(r, &b, pid, deadline, spin);
            spin = 0;
            /* only nudges, and nothing handed over meanwhile: keep waiting */
            if (s == FM_OK && !has_results(&b) && !has_stop(&b) &&
                atomic_load_explicit(&self->disp_seq, memory_order_seq_cst) == seen &&
                !atomic_load_explicit(&self->closing, memory_order_seq_cst))
                continue;
            break;
        }
        atomic_store_explicit(&self->leader_seen, fm_now_ns(), RLX);
        Py_END_ALLOW_THREADS
        atomic_store_explicit(&self->leader, 0, memory_order_seq_cst);
        /* Done with the ring: a callback run by dispatch() may close the
         * channel (terminate the pool), which waits for the threads in here. */
        atomic_fetch_sub_explicit(&self->waiting, 1, memory_order_seq_cst);
        if (b.len > 0) {
            int real = has_results(&b);
            int stop = dispatch(self, &b);
            if (stop && self->hdr != NULL)
                post_control(self, FM_RES_STOP, FM_FOREVER);    /* not ours */
            if (real) {
                got = 1;
                bump_dispatch(self);
            }
        }
        if (!got) {
            got = atomic_load_explicit(&self->disp_seq, memory_order_seq_cst) != seen;
            bump_dispatch(self);    /* a follower may take over the ring */
        }
        free(b.p);
        if (s == FM_EINTR && PyErr_CheckSignals() < 0)
            return -1;
        return got;
    }
    else {
        /* someone else collects: sleep until it hands something over */
        FM_BLOCKING(s, ((void)fm_spin, follower_wait_once(self, seen, deadline)));
        got = atomic_load_explicit(&self->disp_seq, memory_order_seq_cst) != seen;
    }
    atomic_fetch_sub_explicit(&self->waiting, 1, memory_order_seq_cst);
    if (s == FM_EINTR && PyErr_CheckSignals() < 0)
        return -1;
    if (s == FM_PYERR)
        return -1;
    return got;
}

int
fm_pool_channel_wait(PyObject *channel, int64_t deadline)
{
    fm_state *st = fm_state_of_type(Py_TYPE(channel));
    if (st == NULL)
        return -1;
    if (!Py_IS_TYPE(channel, st->PoolChannelType))
        return 2;
    return channel_wait((PoolChannelObject *)channel, deadline);
}

static PyObject *
PoolChannel_wait(PoolChannelObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "wait() takes at most 1 argument");
        return NULL;
    }
    int64_t deadline;
    if (fm_timeout_to_deadline(nargs ? args[0] : Py_None, &deadline) < 0)
        return NULL;
    int r = channel_wait(self, deadline);
    if (r < 0)
        return NULL;
    if (r == 2)
        Py_RETURN_NONE;
    return PyBool_FromLong(r);
}

PyDoc_STRVAR(in_collector_doc,
"in_collector($self, /)\n--\n\n"
"True when called from the channel's collector thread (its callbacks).");

static PyObject *
PoolChannel_in_collector(PoolChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->thread_running && pthread_equal(self->thread, pthread_self()));
}

PyDoc_STRVAR(notify_doc,
"notify($self, /)\n--\n\n"
"Wake the threads in wait(): a result was set outside a hand-over.");

static PyObject *
PoolChannel_notify(PoolChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->hdr == NULL || self->owner != fm_self_pid())
        Py_RETURN_NONE;
    bump_dispatch(self);
    if (atomic_load_explicit(&self->leader, memory_order_seq_cst))
        post_control(self, FM_RES_NUDGE, 0);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(start_collector_doc,
"start_collector($self, on_results, on_dead, /)\n--\n\n"
"Start the collector thread: on_results(list of (job, index, ok, value)) for\n"
"every batch of results, on_dead() when some worker's process is gone (a\n"
"job of 0 is an initializer failure: index is the slot).");

static PyObject *
PoolChannel_start_collector(PoolChannelObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "start_collector() takes 2 arguments");
        return NULL;
    }
    if (!channel_alive(self))
        return NULL;
    if (self->thread_running) {
        PyErr_SetString(PyExc_RuntimeError, "the collector is already running");
        return NULL;
    }
    if (self->owner != fm_self_pid()) {
        PyErr_SetString(PyExc_RuntimeError, "only the process that created the pool collects");
        return NULL;
    }
    Py_INCREF(args[0]);
    Py_INCREF(args[1]);
    Py_XSETREF(self->on_results, args[0]);
    Py_XSETREF(self->on_dead, args[1]);
    int err = pthread_create(&self->thread, NULL, collector_main, self);
    if (err != 0) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    self->thread_running = 1;
    Py_RETURN_NONE;
}

static void
stop_collector(PoolChannelObject *self)
{
    if (!self->thread_running || self->owner != fm_self_pid() ||
        pthread_equal(self->thread, pthread_self()))
        return;
    /* Post STOP; the collector sees it after every result before it (a
     * waiting thread that takes it posts it again). */
    Py_BEGIN_ALLOW_THREADS
    atomic_store_explicit(&self->stopping, 1, memory_order_seq_cst);
    post_control(self, FM_RES_STOP, FM_FOREVER);
    fm_futex_wake(&self->leader, 1);    /* if parked, it looks again now */
    pthread_join(self->thread, NULL);
    Py_END_ALLOW_THREADS
    self->thread_running = 0;
}

PyDoc_STRVAR(stop_collector_doc,
"stop_collector($self, /)\n--\n\n"
"Stop the collector thread after it delivered what was posted before; wait\n"
"for it.  Never call it from the collector's own callbacks.");

static PyObject *
PoolChannel_stop_collector(PoolChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->thread_running && pthread_equal(self->thread, pthread_self())) {
        PyErr_SetString(PyExc_RuntimeError, "the collector cannot stop itself");
        return NULL;
    }
    stop_collector(self);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(close_doc,
"close($self, /)\n--\n\n"
"Stop the collector, unlink and unmap the channel.  Workers must be gone.");

static PyObject *
PoolChannel_close(PoolChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->thread_running && pthread_equal(self->thread, pthread_self())) {
        PyErr_SetString(PyExc_RuntimeError, "the collector cannot close the channel");
        return NULL;
    }
    channel_destroy(self);
    Py_RETURN_NONE;
}

static PyObject *
PoolChannel_get_name(PoolChannelObject *self, void *Py_UNUSED(closure))
{
    if (!channel_alive(self))
        return NULL;
    return PyUnicode_FromString(self->seg->name);
}

static PyObject *
PoolChannel_get_slots(PoolChannelObject *self, void *Py_UNUSED(closure))
{
    if (!channel_alive(self))
        return NULL;
    return PyLong_FromUnsignedLong(self->hdr->nslots);
}

static PyObject *
PoolChannel_get_closed(PoolChannelObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->hdr == NULL);
}

static PyObject *
PoolChannel_get_task_ns(PoolChannelObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLongLong(self->task_ns);
}

static PyObject *
PoolChannel_get_max_task(PoolChannelObject *self, void *Py_UNUSED(closure))
{
    if (!channel_alive(self))
        return NULL;
    return PyLong_FromSize_t(fm_ring_max_record(task_ring(self->hdr)));
}

/* ------------------------------------------------------------ the worker */

typedef struct {
    fm_pool_hdr *h;
    fm_pool_slot *slot;
    uint32_t pid;
    PyObject *dumps, *loads, *encode_failure;
    fm_state *st;
    /* the last function, by the bytes of its pickle */
    unsigned char *fbytes;
    size_t flen;
    PyObject *func;
    PyObject *func_cache;           /* dict: pickle bytes -> function */
    int64_t next_owner_check;
    int direct;                     /* our parent process is the pool's owner */
} worker_ctx;

/* ---- the owner's death
 *
 * Nobody reads a worker's results once the pool's owner is gone, so a
 * worker leaves at its next take (no new task starts; the one running
 * finishes, as in the stdlib).  It learns of the death three ways:
 *
 *  - PR_SET_PDEATHSIG: the kernel sends FM_PARENT_DEATH_SIGNAL when the
 *    thread that forked us exits.  That thread may exit while its process
 *    lives on (a pool made in a thread, or a replacement forked by the
 *    collector thread), so the signal only raises a flag and interrupts the
 *    take's sleep; the loop then checks.  The handler is installed only
 *    where nobody else handles that signal.
 *  - the check itself: when our parent process is the owner (fork, spawn),
 *    getppid() changing means it died (a process whose forking thread ends
 *    keeps its children; reparenting to another process cannot be faked by
 *    pid reuse); otherwise (a forkserver's child) the owner's pid is probed.
 *  - the same check every FM_POOL_OWNER_CHECK_NS at a take and in wait
 *    slices, for owners whose death sends no signal (a forkserver that
 *    outlives the owner, a handler replaced by the user's code).
 *
 * Between tasks this costs one clock read (vDSO, no system call), and the
 * check itself at most once per FM_POOL_OWNER_CHECK_NS. */
#define FM_POOL_OWNER_CHECK_NS (10 * 1000 * 1000LL)
#define FM_PARENT_DEATH_SIGNAL (SIGRTMIN + 7)

/* Process-wide and not Python state: the flag the handler raises. */
static volatile sig_atomic_t fm_parent_signalled;

static void
on_parent_death_signal(int sig)
{
    (void)sig;
    fm_parent_signalled = 1;
}

/* Is the owner gone?  (A system call; see above for when it runs.) */
static int
owner_gone(worker_ctx *w)
{
    if (w->direct)
        return getppid() != (pid_t)w->h->owner;
    return !fm_pid_alive((pid_t)w->h->owner);
}

/* At a take and between wait slices: 0 when the owner is gone (leave). */
static int
owner_alive(worker_ctx *w)
{
    int64_t now = fm_now_ns();
    if (!fm_parent_signalled && now < w->next_owner_check)
        return 1;
    fm_parent_signalled = 0;
    w->next_owner_check = now + FM_POOL_OWNER_CHECK_NS;
    return !owner_gone(w);
}

/* At the worker's start: ask for a signal when our parent dies, then check
 * (the owner may have died before we asked).  0 when the owner is gone. */
static int
watch_owner(worker_ctx *w)
{
    int sig = FM_PARENT_DEATH_SIGNAL;
    struct sigaction old;
    if (sigaction(sig, NULL, &old) == 0 && !(old.sa_flags & SA_SIGINFO) &&
        (old.sa_handler == SIG_DFL || old.sa_handler == on_parent_death_signal)) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_parent_death_signal;     /* no SA_RESTART: wake the take */
        sigemptyset(&sa.sa_mask);
        if (sigaction(sig, &sa, NULL) == 0)
            (void)prctl(PR_SET_PDEATHSIG, sig);
    }
    w->direct = getppid() == (pid_t)w->h->owner;
    w->next_owner_check = fm_now_ns() + FM_POOL_OWNER_CHECK_NS;
    /* not direct: a forkserver's child, or the owner died already */
    return !owner_gone(w);
}

/* Pickled result or failure for one call: returns new bytes and *ok, or
 * NULL only if even the failure could not be encoded (exception set). */
static PyObject *
encode_outcome(worker_ctx *w, PyObject *value, int *ok)
{
    PyObject *b;
    if (value != NULL) {
        b = pickle_obj(w->dumps, NULL, value);
        if (b != NULL) {
            *ok = 1;
            return b;
        }
        /* the result cannot be pickled: MaybeEncodingError, as the stdlib */
        PyObject *exc = fm_exc_take();
        b = PyObject_CallFunction(w->encode_failure, "iOO", 1, exc, value);
        Py_DECREF(exc);
    }
    else {
        PyObject *exc = fm_exc_take();
        b = PyObject_CallFunction(w->encode_failure, "iOO", 0, exc, Py_None);
        Py_DECREF(exc);
    }
    *ok = 0;
    if (b != NULL && !PyBytes_Check(b)) {
        Py_DECREF(b);
        PyErr_SetString(PyExc_TypeError, "encode_failure must return bytes");
        return NULL;
    }
    return b;
}

static PyObject *
worker_function(worker_ctx *w, const unsigned char *fb, size_t flen)
{
    if (w->func != NULL && flen == w->flen && memcmp(fb, w->fbytes, flen) == 0)
        return w->func;
    PyObject *key = PyBytes_FromStringAndSize((const char *)fb, (Py_ssize_t)flen);
    if (key == NULL)
        return NULL;
    PyObject *f = PyDict_GetItemWithError(w->func_cache, key);
    if (f != NULL)
        Py_INCREF(f);
    else if (!PyErr_Occurred()) {
        f = PyObject_CallOneArg(w->loads, key);
        if (f != NULL) {
            if (PyDict_GET_SIZE(w->func_cache) > 256)
                PyDict_Clear(w->func_cache);
            if (PyDict_SetItem(w->func_cache, key, f) < 0) {
                Py_CLEAR(f);
            }
        }
    }
    Py_DECREF(key);
    if (f == NULL)
        return NULL;
    unsigned char *copy = malloc(flen ? flen : 1);
    if (copy == NULL) {
        Py_DECREF(f);
        return PyErr_NoMemory();
    }
    memcpy(copy, fb, flen);
    free(w->fbytes);
    w->fbytes = copy;
    w->flen = flen;
    Py_XSETREF(w->func, f);
    return f;
}

/* Run one entry; returns its outcome as a new bytes object. */
static PyObject *
run_entry(worker_ctx *w, PyObject *f, uint32_t mode, const unsigned char *data, uint32_t len,
          uint32_t flags, int *ok, uint32_t *vflag)
{
    PyObject *value = NULL, *a;
    if (flags & FM_ENTRY_BIG)
        a = big_loads(w->st, w->loads, data, len, flags);
    else
        a = load_payload(w->loads, data, len, flags);
    if (a == NULL || f == NULL)
        goto done;
    switch (mode) {
    case FM_MODE_APPLY:
        if (!PyTuple_Check(a)) {
            PyErr_SetString(PyExc_TypeError, "apply arguments must be a tuple");
            goto done;
        }
        value = PyObject_Call(f, a, NULL);
        break;
    case FM_MODE_APPLY_KW: {
        if (!PyTuple_Check(a) || PyTuple_GET_SIZE(a) != 2) {
            PyErr_SetString(PyExc_TypeError, "bad apply record");
            goto done;
        }
        PyObject *pa = PySequence_Tuple(PyTuple_GET_ITEM(a, 0));
        if (pa == NULL)
            goto done;
        PyObject *kw = PyTuple_GET_ITEM(a, 1);
        value = PyObject_Call(f, pa, kw == Py_None ? NULL : kw);
        Py_DECREF(pa);
        break;
    }
    case FM_MODE_MAP:
    case FM_MODE_STARMAP: {
        PyObject *chunk = PySequence_Fast(a, "chunk must be a sequence");
        if (chunk == NULL)
            goto done;
        Py_ssize_t n = PySequence_Fast_GET_SIZE(chunk);
        value = PyList_New(n);
        for (Py_ssize_t i = 0; value != NULL && i < n; i++) {
            PyObject *x = PySequence_Fast_GET_ITEM(chunk, i), *r;
            if (mode == FM_MODE_MAP)
                r = PyObject_CallOneArg(f, x);
            else {
                PyObject *t = PySequence_Tuple(x);
                r = t ? PyObject_Call(f, t, NULL) : NULL;
                Py_XDECREF(t);
            }
            if (r == NULL)
                Py_CLEAR(value);
            else
                PyList_SET_ITEM(value, i, r);
        }
        Py_DECREF(chunk);
        break;
    }
    default:
        PyErr_SetString(PyExc_ValueError, "bad task mode");
    }
done:
    Py_XDECREF(a);
    PyObject *b = NULL;
    if (value != NULL && (mode == FM_MODE_MAP || mode == FM_MODE_STARMAP) &&
        PyList_CheckExact(value)) {
        b = encode_vector(value, vflag);
        if (b != NULL)
            *ok = 1;
    }
    if (b == NULL)
        b = encode_outcome(w, value, ok);
    Py_XDECREF(value);
    return b;
}

/* Post a result record (blocking while the result ring is full). */
static int
post_result(worker_ctx *w, const unsigned char *rec, size_t len)
{
    fm_ring *r = result_ring(w->h);
    fm_ring_claim c;
    int s;
    int64_t spin = atomic_load_explicit(&fm_spin_ns, RLX);
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        s = fm_ring_claim_space(r, (uint32_t)len, w->pid, FM_FOREVER, spin, &c);
        Py_END_ALLOW_THREADS
        if (s != FM_EINTR)
            break;
        if (PyErr_CheckSignals() < 0)
            return FM_PYERR;
        if (!owner_alive(w))
            return FM_BROKEN;
        spin = 0;
    }
    if (s != FM_OK)
        return s;
    memcpy(c.data, rec, len);
    fm_ring_commit(r, &c);
    return FM_OK;
}

/* Build and post the result record of one task record; entries too large
 * for a record are replaced by an error saying so. */
static int
run_batch(worker_ctx *w, const fm_task_hdr *th, const unsigned char *p, size_t left,
          fm_buf *out)
{
    size_t maxrec = fm_ring_max_record(result_ring(w->h));
    PyObject *f = worker_function(w, p, th->func_len);
    PyObject *fexc = NULL;
    if (f == NULL)
        fexc = fm_exc_take();   /* every entry fails with it */
    p += pad8(th->func_len);
    left -= pad8(th->func_len);
    out->len = 0;
    int64_t t0 = fm_now_ns();
    fm_result_hdr rh = {FM_RES_RESULT, 0, th->job, th->first, 0};
    size_t rec_start = 0;
    if (buf_reserve(out, sizeof rh) < 0)
        goto nomem;
    memcpy(out->p, &rh, sizeof rh);
    out->len = sizeof rh;
    for (uint32_t k = 0; k < th->count; k++) {
        fm_entry_hdr eh;
        if (left < sizeof eh)
            break;
        memcpy(&eh, p, sizeof eh);
        p += sizeof eh;
        left -= sizeof eh;
        if (left < eh.len)
            break;
        int ok = 0;
        uint32_t vflag = 0;
        PyObject *b;
        if (fexc != NULL) {
            Py_INCREF(fexc);
            fm_exc_restore(fexc);
            b = encode_outcome(w, NULL, &ok);
        }
        else
            b = run_entry(w, f, th->mode, p, eh.len, eh.flags, &ok, &vflag);
        p += pad8(eh.len);
        left -= pad8(eh.len);
        if (b == NULL)
            goto error;
        size_t blen = (size_t)PyBytes_GET_SIZE(b);
        uint32_t oflags = ok ? FM_ENTRY_OK | vflag : 0;
        if (blen > maxrec / 4) {
            /* too large for the ring: a segment of its own */
            fm_big_ref ref;
            int rc = big_store(w->st, PyBytes_AS_STRING(b), blen, &ref);
            Py_DECREF(b);
            b = rc < 0 ? NULL : PyBytes_FromStringAndSize((const char *)&ref, sizeof ref);
            if (b == NULL) {
                if (rc == 0)
                    big_unlink(w->st, &ref);
                b = encode_outcome(w, NULL, &ok);       /* that error, for this task */
                if (b == NULL)
                    goto error;
                oflags = 0;
            }
            else
                oflags |= FM_ENTRY_BIG;
            blen = (size_t)PyBytes_GET_SIZE(b);
        }
        /* the record would overflow: post what we have, start another */
        if ((out->len - rec_start) + sizeof eh + pad8(blen) > maxrec) {
            int s = post_result(w, out->p + rec_start, out->len - rec_start);
            if (s != FM_OK) {
                Py_DECREF(b);
                Py_XDECREF(fexc);
                return s;
            }
            fm_result_hdr nh = {FM_RES_RESULT, 0, th->job, th->first + k, 0};
            out->len = 0;
            rec_start = 0;
            memcpy(out->p, &nh, sizeof nh);
            out->len = sizeof nh;
        }
        if (buf_reserve(out, sizeof eh + pad8(blen)) < 0) {
            Py_DECREF(b);
            goto nomem;
        }
        fm_entry_hdr oh = {(uint32_t)blen, oflags};
        memcpy(out->p + out->len, &oh, sizeof oh);
        memcpy(out->p + out->len + sizeof oh, PyBytes_AS_STRING(b), blen);
        out->len += sizeof oh + pad8(blen);
        Py_DECREF(b);
        ((fm_result_hdr *)(out->p + rec_start))->count++;
    }
    Py_XDECREF(fexc);
    {
        int64_t ns = fm_now_ns() - t0;
        ((fm_result_hdr *)(out->p + rec_start))->aux =
            ns > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
    }
    return post_result(w, out->p + rec_start, out->len - rec_start);
nomem:
    PyErr_NoMemory();
error:
    Py_XDECREF(fexc);
    return FM_PYERR;
}

static int
worker_attach(PyObject *name, fm_pool_hdr **hp, long slot)
{
    const char *cname = PyUnicode_AsUTF8(name);
    if (cname == NULL)
        return -1;
    fm_segment *seg;
    if (fm_segment_attach(cname, &seg) != FM_OK) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, name);
        return -1;
    }
    if (pool_check(seg) != FM_OK) {
        fm_set_error(FM_CORRUPT);
        return -1;
    }
    *hp = (fm_pool_hdr *)seg->base;
    if (slot < 0 || (unsigned long)slot >= (*hp)->nslots) {
        PyErr_SetString(PyExc_IndexError, "slot index out of range");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(worker_main_doc,
"worker_main(name, slot, maxtasks, encode_failure, /)\n--\n\n"
"The worker loop (in a pool's child process): take a task batch from the\n"
"channel named name, run it, post its results; until an EXIT record, or\n"
"maxtasks tasks (None: no limit), or the pool's owner is gone.  Returns the\n"
"number of tasks run.  encode_failure(kind, exc, value) pickles a failure:\n"
"kind 0 the call raised exc, kind 1 pickling value raised exc.");

static PyObject *
PoolChannel_worker_main(PyObject *cls, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "worker_main() takes 4 arguments");
        return NULL;
    }
    fm_state *st = fm_state_of_type((PyTypeObject *)cls);
    if (st == NULL)
        return NULL;
    long slot = PyLong_AsLong(args[1]);
    if (slot == -1 && PyErr_Occurred())
        return NULL;
    unsigned long long maxtasks = 0;
    if (args[2] != Py_None) {
        maxtasks = PyLong_AsUnsignedLongLong(args[2]);
        if (PyErr_Occurred())
            return NULL;
    }
    worker_ctx w = {0};
    if (worker_attach(args[0], &w.h, slot) < 0)
        return NULL;
    w.slot = slot_at(w.h, (uint32_t)slot);
    w.pid = fm_self_pid();
    w.encode_failure = args[3];
    w.st = st;
    w.dumps = import_attr("pickle", "dumps");
    w.loads = import_attr("pickle", "loads");
    w.func_cache = PyDict_New();
    fm_buf in = {0}, out = {0};
    unsigned long long done = 0;
    int retire = 0;
    PyObject *ret = NULL;
    if (w.dumps == NULL || w.loads == NULL || w.func_cache == NULL)
        goto finally;
    atomic_store_explicit(&w.slot->pid, w.pid, RLX);
    atomic_store_explicit(&w.slot->state, FM_SLOT_IDLE, REL);

    fm_ring *tr = task_ring(w.h);
    int orphan = !watch_owner(&w);
    for (;;) {
        fm_ring_read rd;
        int s;
        int64_t spin = atomic_load_explicit(&fm_spin_ns, RLX);
        /* the owner gone: start nothing more */
        if (orphan || !owner_alive(&w))
            break;
        for (;;) {
            Py_BEGIN_ALLOW_THREADS
            s = fm_ring_take(tr, w.pid, FM_FOREVER, spin, &rd);
            Py_END_ALLOW_THREADS
            if (s != FM_EINTR)
                break;
            if (PyErr_CheckSignals() < 0)
                goto finally;
            if (!owner_alive(&w)) {
                s = FM_BROKEN;
                break;
            }
            spin = 0;
        }
        if (s == FM_BROKEN)
            break;          /* the pool is gone: leave quietly */
        if (s != FM_OK) {
            fm_set_error(s);
            goto finally;
        }
        if (rd.len < sizeof(fm_task_hdr) || buf_reserve(&in, rd.len) < 0) {
            fm_ring_release(tr, &rd);
            continue;
        }
        in.len = 0;
        memcpy(in.p, rd.data, rd.len);
        fm_task_hdr th;
        memcpy(&th, in.p, sizeof th);
        if (atomic_load_explicit(&w.h->debug_die_after_take, RLX) &&
            atomic_exchange_explicit(&w.h->debug_die_after_take, 0, RLX))
            raise(SIGKILL);
        /* Say what we hold before the record leaves the ring, so that a
         * crash from here on fails exactly these tasks (a crash before it
         * leaves the record READING in our name: the parent adopts it). */
        atomic_store_explicit(&w.slot->job, th.job, RLX);
        atomic_store_explicit(&w.slot->first, th.first, RLX);
        atomic_store_explicit(&w.slot->count, th.count, RLX);
        atomic_store_explicit(&w.slot->state,
                              th.kind == FM_TASK_EXIT ? FM_SLOT_EXITED : FM_SLOT_BUSY, REL);
        size_t len = rd.len;
        fm_ring_release(tr, &rd);
        if (th.kind == FM_TASK_EXIT)
            break;
        if (th.func_len > len - sizeof th)
            continue;
        s = run_batch(&w, &th, in.p + sizeof th, len - sizeof th, &out);
        if (s == FM_BROKEN)
            break;
        if (s != FM_OK) {
            if (s != FM_PYERR)
                fm_set_error(s);
            goto finally;
        }
        done += th.count;
        atomic_store_explicit(&w.slot->tasks_done, done, RLX);
        if (maxtasks && done >= maxtasks) {
            retire = 1;
            break;
        }
        atomic_store_explicit(&w.slot->state, FM_SLOT_IDLE, REL);
    }
    atomic_store_explicit(&w.slot->state, FM_SLOT_EXITED, REL);
    if (retire) {
        /* Say so, so that the parent starts our replacement now rather than
         * at its next check for dead workers.  The slot is the parent's from
         * here on: it may hand it to the replacement at once. */
        fm_result_hdr rh = {FM_RES_RETIRE, (uint32_t)slot, 0, 0, 0};
        int s = post_result(&w, (const unsigned char *)&rh, sizeof rh);
        if (s == FM_PYERR)
            goto finally;
    }
    ret = PyLong_FromUnsignedLongLong(done);
finally:
    free(in.p);
    free(out.p);
    free(w.fbytes);
    Py_XDECREF(w.func);
    Py_XDECREF(w.func_cache);
    Py_XDECREF(w.dumps);
    Py_XDECREF(w.loads);
    return ret;
}

PyDoc_STRVAR(worker_init_failed_doc,
"worker_init_failed(name, slot, payload, /)\n--\n\n"
"In a worker whose initializer raised: post payload (the pickled exception)\n"
"to the parent and mark the slot, so that the pool reports it instead of\n"
"starting workers forever.");

static PyObject *
PoolChannel_worker_init_failed(PyObject *Py_UNUSED(cls), PyObject *const *args,
                               Py_ssize_t nargs)
{
    if (nargs != 3 || !PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "worker_init_failed(name, slot, payload: bytes)");
        return NULL;
    }
    long slot = PyLong_AsLong(args[1]);
    if (slot == -1 && PyErr_Occurred())
        return NULL;
    worker_ctx w = {0};
    if (worker_attach(args[0], &w.h, slot) < 0)
        return NULL;
    w.pid = fm_self_pid();
    w.slot = slot_at(w.h, (uint32_t)slot);
    size_t blen = (size_t)PyBytes_GET_SIZE(args[2]);
    size_t len = sizeof(fm_result_hdr) + sizeof(fm_entry_hdr) + pad8(blen);
    if (len > fm_ring_max_record(result_ring(w.h))) {
        PyErr_SetString(PyExc_ValueError, "initializer error too large to report");
        return NULL;
    }
    unsigned char *rec = calloc(1, len);
    if (rec == NULL)
        return PyErr_NoMemory();
    fm_result_hdr rh = {FM_RES_INITFAIL, (uint32_t)slot, 0, 0, 1};
    fm_entry_hdr eh = {(uint32_t)blen, 0};
    memcpy(rec, &rh, sizeof rh);
    memcpy(rec + sizeof rh, &eh, sizeof eh);
    memcpy(rec + sizeof rh + sizeof eh, PyBytes_AS_STRING(args[2]), blen);
    atomic_store_explicit(&w.slot->pid, w.pid, RLX);
    atomic_store_explicit(&w.slot->state, FM_SLOT_INITFAIL, REL);
    int s = post_result(&w, rec, len);
    free(rec);
    if (s != FM_OK && s != FM_BROKEN)
        return fm_set_error(s);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------ the type */

static PyMethodDef PoolChannel_methods[] = {
    {"put", (PyCFunction)(void (*)(void))PoolChannel_put, METH_FASTCALL, put_doc},
    {"apply", (PyCFunction)(void (*)(void))PoolChannel_apply, METH_FASTCALL, apply_doc},
    {"adopt_held", (PyCFunction)PoolChannel_adopt_held, METH_O, adopt_held_doc},
    {"_debug_kill_next_taker", (PyCFunction)PoolChannel_debug_kill_next_taker, METH_NOARGS,
     PyDoc_STR("_debug_kill_next_taker($self, /)\n--\n\nTest hook: the next worker to take "
               "a task record is killed before it records it in its slot.")},
    {"put_exit", (PyCFunction)PoolChannel_put_exit, METH_O, put_exit_doc},
    {"slot", (PyCFunction)PoolChannel_slot, METH_O, slot_doc},
    {"set_slot", (PyCFunction)(void (*)(void))PoolChannel_set_slot, METH_FASTCALL,
     set_slot_doc},
    {"start_collector", (PyCFunction)(void (*)(void))PoolChannel_start_collector,
     METH_FASTCALL, start_collector_doc},
    {"stop_collector", (PyCFunction)PoolChannel_stop_collector, METH_NOARGS,
     stop_collector_doc},
    {"wait", (PyCFunction)(void (*)(void))PoolChannel_wait, METH_FASTCALL, wait_doc},
    {"notify", (PyCFunction)PoolChannel_notify, METH_NOARGS, notify_doc},
    {"in_collector", (PyCFunction)PoolChannel_in_collector, METH_NOARGS, in_collector_doc},
    {"close", (PyCFunction)PoolChannel_close, METH_NOARGS, close_doc},
    {"worker_main", (PyCFunction)(void (*)(void))PoolChannel_worker_main,
     METH_FASTCALL | METH_CLASS, worker_main_doc},
    {"worker_init_failed", (PyCFunction)(void (*)(void))PoolChannel_worker_init_failed,
     METH_FASTCALL | METH_STATIC, worker_init_failed_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef PoolChannel_getset[] = {
    {"name", (getter)PoolChannel_get_name, NULL, "the channel's segment name", NULL},
    {"slots", (getter)PoolChannel_get_slots, NULL, "number of worker slots", NULL},
    {"closed", (getter)PoolChannel_get_closed, NULL, "True after close()", NULL},
    {"task_ns", (getter)PoolChannel_get_task_ns, NULL,
     "moving average of the measured run time per task, ns (0: none yet)", NULL},
    {"max_record", (getter)PoolChannel_get_max_task, NULL,
     "largest task record, in bytes", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef PoolChannel_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(PoolChannelObject, weakreflist), READONLY, NULL},
    {"cache", T_OBJECT, offsetof(PoolChannelObject, cache), 0,
     "the pool's {job: result}: exact ApplyResults in it are completed in C"},
    {"func_cache", T_OBJECT, offsetof(PoolChannelObject, func_cache), 0,
     "apply()'s {function: its pickle}, filled by dump_function"},
    {"dump_function", T_OBJECT, offsetof(PoolChannelObject, dump_function), 0,
     "apply(): pickles a function not in func_cache"},
    {"submit", T_OBJECT, offsetof(PoolChannelObject, submit), 0,
     "apply(): submit(result, mode, func, items) when the ring has no room"},
    {"lazy_wake", T_BOOL, offsetof(PoolChannelObject, lazy_wake), 0,
     "apply(): with short tasks, leave the only waiting record to a busy worker "
     "(False when workers may leave after a task: maxtasksperchild)"},
    {NULL, 0, 0, 0, NULL},
};

PyDoc_STRVAR(PoolChannel_doc,
"PoolChannel(slots, task_capacity=1048576, result_capacity=1048576,\n"
"            fallback_dumps=None)\n--\n\n"
"A pool's shared channel: the task ring, the result ring and the worker\n"
"table, in one segment.  fallback_dumps(obj, exc) pickles what pickle.dumps\n"
"cannot (or re-raises exc).  Used by fastmp.pool; not a public API.");

static PyType_Slot PoolChannel_slots[] = {
    {Py_tp_new, PoolChannel_new},
    {Py_tp_dealloc, PoolChannel_dealloc},
    {Py_tp_traverse, PoolChannel_traverse},
    {Py_tp_clear, PoolChannel_clear},
    {Py_tp_methods, PoolChannel_methods},
    {Py_tp_getset, PoolChannel_getset},
    {Py_tp_members, PoolChannel_members},
    {Py_tp_doc, (void *)PoolChannel_doc},
    {0, NULL},
};

static PyType_Spec PoolChannel_spec = {
    .name = "fastmp._core.PoolChannel",
    .basicsize = sizeof(PoolChannelObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = PoolChannel_slots,
};

int
fm_pool_add_types(PyObject *module, fm_state *st)
{
    PyObject *tp = PyType_FromModuleAndSpec(module, &PoolChannel_spec, NULL);
    if (tp == NULL)
        return -1;
    st->PoolChannelType = (PyTypeObject *)tp;
    Py_INCREF(tp);
    if (PyModule_AddObject(module, "PoolChannel", tp) < 0) {
        Py_DECREF(tp);
        return -1;
    }
    return 0;
}
