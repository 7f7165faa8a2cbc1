/* pool.c: the PoolChannel type, a Pool's shared channel (its layout and
 * record format: pool_wire.h), and the parent's side of the task ring:
 * put() and apply() pickle tasks and post them, in batches when tasks are
 * short; the worker slots; the methods that start and stop the collector
 * (pool_collect.c) and run the worker loop (pool_worker.c).
 *
 * The parent makes batches of several tasks only when it has many short
 * ones at once (pool.py decides from measured task times), so a chunksize
 * keeps its meaning for the user.  A batch is cut at FM_POOL_BATCH_BYTES of
 * payload so that one big batch cannot occupy the whole ring, and a batch
 * that would still pass the ring's largest record (a large function pickle
 * repeated in every record) is posted one task per record: only a task that
 * does not fit alone fails as too large. */
#include "fastmp.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pool.h"
#include "structmember.h"

/* Records are cut at this many payload bytes when a batch grows, so that
 * one big batch cannot occupy the whole ring. */
#define FM_POOL_BATCH_BYTES (64u * 1024u)
/* apply() leaves a record to a busy worker only when tasks take less than
 * this on average (see put_record's `lazy`). */
#define FM_POOL_LAZY_TASK_NS (20 * 1000LL)

/* ------------------------------------------------------------ the object */

PyObject *
fm_pool_import_attr(const char *module, const char *name)
{
    PyObject *m = PyImport_ImportModule(module);
    if (m == NULL)
        return NULL;
    PyObject *a = PyObject_GetAttrString(m, name);
    Py_DECREF(m);
    return a;
}

/* Create and map the channel's segment (header, worker slots, the two
 * rings at page boundaries), under a name the resource tracker hears of
 * first, so that a crash of this process does not leave it in /dev/shm.
 * -1 with an exception. */
static int
channel_map(PoolChannelObject *self, unsigned int nslots, size_t tcap, size_t rcap)
{
    size_t tsize = fm_ring_bytes(fm_ring_capacity_for(tcap));
    size_t rsize = fm_ring_bytes(fm_ring_capacity_for(rcap));
    size_t slots_end = FM_POOL_HDR_SPACE + (size_t)nslots * sizeof(fm_pool_slot);
    size_t big_off = (slots_end + FM_CACHE_LINE - 1) & ~(size_t)(FM_CACHE_LINE - 1);
    size_t big_end = big_off + FM_POOL_BIG_SLOTS * sizeof(fm_pool_bigslot);
    size_t task_off = (big_end + 4095u) & ~(size_t)4095u;
    size_t result_off = (task_off + tsize + 4095u) & ~(size_t)4095u;
    size_t total = result_off + rsize;
    /* named (and told to the tracker) before the file exists */
    char name[FM_SHM_NAME_MAX];
    if (fm_segment_name_reserve(self->st, name) < 0)
        return -1;
    int s = fm_segment_create_as(name, total, &self->seg);
    if (s != FM_OK) {
        int saved = errno;
        fm_segment_name_unused(self->st, name);
        errno = saved;
        fm_set_error(s);
        return -1;
    }
    fm_pool_hdr *h = (fm_pool_hdr *)self->seg->base;
    h->version = FM_POOL_VERSION;
    h->nslots = nslots;
    h->owner = fm_self_pid();
    h->task_off = task_off;
    h->task_bytes = tsize;
    h->result_off = result_off;
    h->result_bytes = rsize;
    h->big_slots = FM_POOL_BIG_SLOTS;
    h->big_off = big_off;
    if (fm_ring_init(fm_pool_task_ring(h), fm_ring_capacity_for(tcap)) != FM_OK ||
        fm_ring_init(fm_pool_result_ring(h), fm_ring_capacity_for(rcap)) != FM_OK) {
        PyErr_SetString(PyExc_RuntimeError, "fastmp: cannot initialize the pool's rings");
        return -1;
    }
    atomic_thread_fence(REL);
    h->magic = FM_POOL_MAGIC;
    self->hdr = h;
    self->big.h = h;
    self->owner = fm_self_pid();
    return 0;
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
    self->dumps = fm_pool_import_attr("pickle", "dumps");
    self->loads = fm_pool_import_attr("pickle", "loads");
    if (self->dumps == NULL || self->loads == NULL)
        goto error;
    if (fallback != Py_None) {
        Py_INCREF(fallback);
        self->fallback_dumps = fallback;
    }
    self->st = st;
    /* The collector thread does not spin: a thread waiting for a result
     * collects (and spins) itself; spinning here would only take a CPU from
     * the workers. */
    self->spin_ns = 0;
    if (channel_map(self, nslots, (size_t)tcap, (size_t)rcap) < 0)
        goto error;
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

static void
channel_destroy(PoolChannelObject *self)
{
    /* One thread destroys; another calling close() meanwhile (a user's
     * close next to terminate()'s, say) waits until it is done: both would
     * drain and unlink the same segment, since the hooks below let threads
     * run.  Every caller holds the GIL here, and the first one returns
     * only once the channel is gone. */
    uint32_t was = 0;
    if (!atomic_compare_exchange_strong_explicit(&self->destroying, &was, 1,
                                                 memory_order_seq_cst, memory_order_seq_cst)) {
        if (was == 1 && self->destroyer != PyThread_get_thread_ident()) {
            Py_BEGIN_ALLOW_THREADS
            while (atomic_load_explicit(&self->destroying, memory_order_seq_cst) != 2)
                usleep(1000);
            Py_END_ALLOW_THREADS
        }
        return;
    }
    self->destroyer = PyThread_get_thread_ident();
    if (self->hdr != NULL && self->owner == fm_self_pid()) {
        /* No thread may still be inside wait() or put_record() when the
         * mapping goes (a putter waiting for room leaves within a slice). */
        atomic_store_explicit(&self->closing, 1, memory_order_seq_cst);
        Py_BEGIN_ALLOW_THREADS
        while (atomic_load_explicit(&self->waiting, memory_order_seq_cst) > 0 ||
               atomic_load_explicit(&self->putting, memory_order_seq_cst) > 0) {
            if (atomic_load_explicit(&self->leader, memory_order_seq_cst))
                fm_pool_post_control(self, FM_RES_NUDGE, 0);
            fm_pool_bump_dispatch(self);
            usleep(1000);
        }
        Py_END_ALLOW_THREADS
    }
    fm_pool_collector_stop(self);
    if (self->seg != NULL && self->owner == fm_self_pid()) {
        /* large entries nobody will read any more */
        fm_pool_drain_big(self->st, &self->big, fm_pool_task_ring(self->hdr), 1);
        fm_pool_drain_big(self->st, &self->big, fm_pool_result_ring(self->hdr), 0);
        fm_pool_big_cache_close(self->st, &self->big, 1);
        char name[FM_SHM_NAME_MAX];
        snprintf(name, sizeof name, "%s", self->seg->name);
        /* closed before the mapping goes: the hook below runs Python code,
         * which lets other threads run, and they must find it closed */
        fm_segment *seg = self->seg;
        self->seg = NULL;
        self->hdr = NULL;
        fm_segment_destroy(seg, 1);
        fm_segment_gone(self->st, name);
    }
    self->seg = NULL;
    self->hdr = NULL;
    atomic_store_explicit(&self->destroying, 2, memory_order_seq_cst);
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
    Py_VISIT(self->timeouts);
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
    Py_CLEAR(self->timeouts);
    return 0;
}

static void
PoolChannel_dealloc(PoolChannelObject *self)
{
    fm_dealloc_begin((PyObject *)self);
    channel_destroy(self);
    PoolChannel_clear(self);
    fm_dealloc_end((PyObject *)self);
}

/* ------------------------------------------------------------------- put */

/* Some worker holds a batch (and will come back to the ring for more). */
static int
any_busy(fm_pool_hdr *h)
{
    for (uint32_t i = 0; i < h->nslots; i++)
        if (atomic_load_explicit(&fm_pool_slot_at(h, i)->state, memory_order_seq_cst) ==
            FM_SLOT_BUSY)
            return 1;
    return 0;
}

/* Write one task record: func + entries[0..n), each task limited to
 * timeout_ns from its start (0: no limit).  The claim waits with the
 * GIL released when `block`; the copy happens with the GIL back (the bytes
 * objects are Python objects).  Returns FM_OK, FM_AGAIN (ring full and not
 * blocking), FM_OVERFLOW (too big for one record), FM_PYERR. */
static int put_record_in(PoolChannelObject *self, uint32_t kind, uint32_t mode, uint64_t job,
                         uint32_t first, PyObject *func, PyObject **entries,
                         const uint32_t *flags, uint32_t n, int block, int lazy,
                         uint64_t timeout_ns);

/* Enter the channel as a putter: -1 (ValueError) when it is closing or
 * closed.  Counted first, then checked: close() sets `closing` first, then
 * waits for the count, so one of the two sees the other. */
static int
channel_entered(PoolChannelObject *self)
{
    atomic_fetch_add_explicit(&self->putting, 1, memory_order_seq_cst);
    if (self->hdr == NULL || atomic_load_explicit(&self->closing, memory_order_seq_cst)) {
        atomic_fetch_sub_explicit(&self->putting, 1, memory_order_seq_cst);
        PyErr_SetString(PyExc_ValueError, "pool channel is closed");
        return -1;
    }
    return 0;
}

static int
put_record(PoolChannelObject *self, uint32_t kind, uint32_t mode, uint64_t job,
           uint32_t first, PyObject *func, PyObject **entries, const uint32_t *flags,
           uint32_t n, int block, int lazy, uint64_t timeout_ns)
{
    /* Counted in `putting` from here to the end: close() (channel_destroy)
     * unmaps the channel only once no thread is in here, and a thread
     * waiting for room sees `closing` within a wait slice and leaves.  (A
     * pool's feeder thread blocked here on a full ring, terminate() on the
     * main thread: the feeder woke into the unmapped ring.) */
    if (channel_entered(self) < 0)
        return FM_PYERR;
    int s = put_record_in(self, kind, mode, job, first, func, entries, flags, n, block, lazy,
                          timeout_ns);
    atomic_fetch_sub_explicit(&self->putting, 1, memory_order_seq_cst);
    return s;
}

static int
put_record_in(PoolChannelObject *self, uint32_t kind, uint32_t mode, uint64_t job,
              uint32_t first, PyObject *func, PyObject **entries, const uint32_t *flags,
              uint32_t n, int block, int lazy, uint64_t timeout_ns)
{
    fm_ring *r = fm_pool_task_ring(self->hdr);
    size_t flen = func ? (size_t)PyBytes_GET_SIZE(func) : 0;
    size_t total = sizeof(fm_task_hdr) + fm_pad8(flen);
    for (uint32_t i = 0; i < n; i++)
        total += sizeof(fm_entry_hdr) + fm_pad8((size_t)PyBytes_GET_SIZE(entries[i]));
    if (total > fm_ring_max_record(r))
        return FM_OVERFLOW;
    fm_ring_claim c;
    uint32_t pid = fm_self_pid();
    int s;
    if (block) {
        /* each wait slice looks at `closing` (see put_record) */
        FM_BLOCKING(s, atomic_load_explicit(&self->closing, memory_order_seq_cst)
                           ? FM_BROKEN
                           : fm_ring_claim_space(r, (uint32_t)total, pid, FM_FOREVER, fm_spin,
                                                 &c));
        if (s == FM_BROKEN && atomic_load_explicit(&self->closing, memory_order_seq_cst)) {
            PyErr_SetString(PyExc_ValueError, "pool channel is closed");
            return FM_PYERR;
        }
    } else {
        s = fm_ring_claim_space(r, (uint32_t)total, pid, 0, 0, &c);
        if (s == FM_TIMEOUT)
            s = FM_AGAIN;
    }
    if (s != FM_OK)
        return s;
    unsigned char *p = c.data;
    fm_task_hdr th = {kind, mode, job, first, n, (uint32_t)flen, 0, timeout_ns};
    memcpy(p, &th, sizeof th);
    p += sizeof th;
    if (flen) {
        memcpy(p, PyBytes_AS_STRING(func), flen);
        p += fm_pad8(flen);
    }
    for (uint32_t i = 0; i < n; i++) {
        fm_entry_hdr eh = {(uint32_t)PyBytes_GET_SIZE(entries[i]), flags[i]};
        memcpy(p, &eh, sizeof eh);
        p += sizeof eh;
        memcpy(p, PyBytes_AS_STRING(entries[i]), eh.len);
        p += fm_pad8(eh.len);
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

/* What put() posts: tasks first, first+1, ... of one job, and the batch
 * of pickled entries not posted yet. */
typedef struct {
    PoolChannelObject *self;
    uint32_t mode;
    uint64_t job;
    uint32_t first;
    PyObject *func;
    uint64_t timeout_ns;            /* per task (the job's, from `timeouts`) */
    Py_ssize_t done;                /* tasks posted */
    PyObject *entry[FM_POOL_BATCH_MAX];
    uint32_t flags[FM_POOL_BATCH_MAX];
    uint32_t n;                     /* entries pending */
    size_t bytes;                   /* their payload */
} put_batch;

/* Post the pending tasks: in one record, or one task per record when
 * together they pass the largest record (a task only fails as too large if
 * it does not fit alone).  Posted tasks leave the batch and count in
 * `done`; on failure the others stay.  Returns the status. */
static int
flush_batch(put_batch *pb, int block)
{
    uint32_t posted = 0;
    int s = put_record(pb->self, FM_TASK_RUN, pb->mode, pb->job,
                       (uint32_t)(pb->first + pb->done), pb->func, pb->entry, pb->flags, pb->n,
                       block, 0, pb->timeout_ns);
    if (s == FM_OK)
        posted = pb->n;
    else if (s == FM_OVERFLOW && pb->n > 1) {
        s = FM_OK;
        while (s == FM_OK && posted < pb->n) {
            s = put_record(pb->self, FM_TASK_RUN, pb->mode, pb->job,
                           (uint32_t)(pb->first + pb->done + posted), pb->func,
                           pb->entry + posted, pb->flags + posted, 1, block, 0,
                           pb->timeout_ns);
            if (s == FM_OK)
                posted++;
        }
    }
    for (uint32_t k = 0; k < posted; k++)
        Py_CLEAR(pb->entry[k]);
    pb->done += posted;
    pb->n -= posted;
    memmove(pb->entry, pb->entry + posted, pb->n * sizeof pb->entry[0]);
    memmove(pb->flags, pb->flags + posted, pb->n * sizeof pb->flags[0]);
    pb->bytes = 0;
    for (uint32_t k = 0; k < pb->n; k++)
        pb->bytes += (size_t)PyBytes_GET_SIZE(pb->entry[k]);
    return s;
}

/* Drop an entry nobody will post (unlinking its segment if it has one). */
static void
drop_entry(PoolChannelObject *self, PyObject *b, uint32_t flags)
{
    fm_pool_drop_big(self->st, &self->big, flags, PyBytes_AS_STRING(b),
                     (size_t)PyBytes_GET_SIZE(b));
    Py_DECREF(b);
}

/* An item's entry: its pickle, or, when larger than `big`, a reference to
 * a segment of its own holding it (*flag gets FM_ENTRY_BIG).  NULL with an
 * exception. */
static PyObject *
task_entry(PoolChannelObject *self, PyObject *item, size_t big, uint32_t *flag)
{
    PyObject *b = fm_pool_pickle_large(self->st, &self->big, item, big, flag);
    if (b != NULL)
        return b;
    b = fm_pool_pickle(self->dumps, self->fallback_dumps, item);
    if (b != NULL && (size_t)PyBytes_GET_SIZE(b) > big) {
        if (fm_pool_to_big_entry(self->st, &self->big, &b, flag) < 0)
            return NULL;
    }
    return b;
}

/* Pickle items[0..n) and post them, `batch` (at most FM_POOL_BATCH_MAX) per
 * record.  Returns the status; *error: the exception of the item that
 * could not be pickled (everything before it posted), or NULL. */
static int
put_items(put_batch *pb, PyObject **items, Py_ssize_t n, uint32_t batch, int block,
          PyObject **error)
{
    size_t big = fm_pool_big_threshold(fm_pool_task_ring(pb->self->hdr));
    int s = FM_OK;
    for (Py_ssize_t i = 0; i <= n; i++) {
        PyObject *b = NULL;
        uint32_t bflag = FM_ENTRY_OK;
        if (i < n) {
            b = task_entry(pb->self, items[i], big, &bflag);
            if (b == NULL) {
                /* post what came before (blocking), then report this item;
                 * a posting error replaces the pickling error */
                *error = fm_exc_take();
                s = pb->n ? flush_batch(pb, 1) : FM_OK;
                if (s != FM_OK)
                    Py_CLEAR(*error);
                return s;
            }
        }
        if (pb->n > 0 &&
            (i == n || pb->n == batch ||
             pb->bytes + (b ? (size_t)PyBytes_GET_SIZE(b) : 0) > FM_POOL_BATCH_BYTES)) {
            s = flush_batch(pb, block);
            if (s != FM_OK) {
                if (b != NULL)
                    drop_entry(pb->self, b, bflag);
                return s;
            }
        }
        if (b != NULL) {
            pb->flags[pb->n] = bflag;
            pb->entry[pb->n++] = b;
            pb->bytes += (size_t)PyBytes_GET_SIZE(b);
        }
    }
    return s;
}

/* The time limit per task of `job` (an int): timeouts[job] in ns, 0 when
 * the job has none (or nobody set timeouts).  -1 with an exception. */
static int
job_timeout(PoolChannelObject *self, PyObject *job, uint64_t *timeout_ns)
{
    *timeout_ns = 0;
    if (self->timeouts == NULL || !PyDict_Check(self->timeouts) ||
        PyDict_GET_SIZE(self->timeouts) == 0)
        return 0;
    PyObject *t = PyDict_GetItemWithError(self->timeouts, job);
    if (t == NULL)
        return PyErr_Occurred() ? -1 : 0;
    unsigned long long ns = PyLong_AsUnsignedLongLong(t);
    if (ns == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *timeout_ns = ns;
    return 0;
}

PyDoc_STRVAR(put_doc,
"put($self, job, mode, first, func, items, batch=1, block=True, /)\n--\n\n"
"Pickle items and post them as tasks first, first+1, ... of job, at most\n"
"batch per record, each limited to timeouts[job] ns from its start when\n"
"the job is in timeouts.  Returns (consumed, error): error is None, or the\n"
"exception that items[consumed] raised when pickled (or that made it too\n"
"large for the channel); items before it were posted.  Without block,\n"
"stops (error None) when the ring is full.");

static PyObject *
PoolChannel_put(PoolChannelObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (fm_check_nargs("put", nargs, 5, 7) < 0)
        return NULL;
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
    put_batch pb = {self, (uint32_t)mode, job, (uint32_t)first, func, 0, 0};
    if (job_timeout(self, args[0], &pb.timeout_ns) < 0) {
        Py_DECREF(seq);
        return NULL;
    }
    PyObject *error = NULL;
    int s = put_items(&pb, PySequence_Fast_ITEMS(seq), PySequence_Fast_GET_SIZE(seq),
                      batch > FM_POOL_BATCH_MAX ? FM_POOL_BATCH_MAX : (uint32_t)batch, block,
                      &error);
    /* not posted (ring full, or an error): nobody will read them */
    for (uint32_t k = 0; k < pb.n; k++)
        drop_entry(self, pb.entry[k], pb.flags[k]);
    Py_DECREF(seq);
    if (s == FM_OVERFLOW) {
        /* a single task too large for the channel: that task fails */
        PyErr_Format(PyExc_ValueError,
                     "task too large for the pool's channel (max %zu bytes per task)",
                     fm_ring_max_record(fm_pool_task_ring(self->hdr)) - sizeof(fm_task_hdr) -
                         sizeof(fm_entry_hdr) - fm_pad8((size_t)PyBytes_GET_SIZE(func)));
        error = fm_exc_take();
        s = FM_OK;
    }
    if (s != FM_OK && s != FM_AGAIN) {
        Py_XDECREF(error);
        if (s == FM_BROKEN)
            PyErr_SetString(PyExc_ValueError, "pool channel is closed");
        else
            fm_set_error(s);
        return NULL;
    }
    PyObject *res = Py_BuildValue("(nO)", pb.done, error ? error : Py_None);
    Py_XDECREF(error);
    return res;
}

/* ----------------------------------------------------------------- apply */

/* apply()'s entry: the args tuple, or (args, kwds); *mode says which. */
static PyObject *
apply_entry(PyObject *fargs, PyObject *kwds, uint32_t *mode)
{
    int has_kw = kwds == Py_None ? 0 : PyObject_IsTrue(kwds);
    if (has_kw < 0)
        return NULL;
    *mode = has_kw ? FM_MODE_APPLY_KW : FM_MODE_APPLY;
    if (has_kw)
        return PyTuple_Pack(2, fargs, kwds);
    return PyTuple_CheckExact(fargs) ? Py_NewRef(fargs) : PySequence_Tuple(fargs);
}

/* The function's pickle: from func_cache (plain functions), else from
 * dump_function.  NULL with an exception. */
static PyObject *
apply_function(PoolChannelObject *self, PyObject *func)
{
    PyObject *fdata = NULL;
    if (PyFunction_Check(func) || PyCFunction_Check(func)) {
        fdata = PyDict_GetItemWithError(self->func_cache, func);
        Py_XINCREF(fdata);
        if (fdata == NULL && PyErr_Occurred())
            return NULL;
    }
    if (fdata == NULL) {
        fdata = PyObject_CallOneArg(self->dump_function, func);
        if (fdata != NULL && !PyBytes_Check(fdata)) {
            Py_CLEAR(fdata);
            PyErr_SetString(PyExc_TypeError, "dump_function must return bytes");
        }
    }
    return fdata;
}

/* Post apply()'s task (entry pickled as b): straight into the ring, or, when
 * it has no room or the entry is large, through submit().  0 when posted;
 * -1 when the task cannot be sent (its result fails with the exception);
 * -2 when the pool is ending under us (exception set). */
static int
apply_post(PoolChannelObject *self, PyObject *result, uint32_t mode, PyObject *fdata,
           PyObject *b, PyObject *entry)
{
    int s = FM_AGAIN;
    if ((size_t)PyBytes_GET_SIZE(b) <= fm_pool_big_threshold(fm_pool_task_ring(self->hdr))) {
        uint32_t flag = FM_ENTRY_OK;
        unsigned long long job = PyLong_AsUnsignedLongLong(fm_apply_result_job(result));
        if (job == (unsigned long long)-1 && PyErr_Occurred())
            return -1;
        int lazy = self->lazy_wake && self->task_ns > 0 && self->task_ns < FM_POOL_LAZY_TASK_NS;
        s = put_record(self, FM_TASK_RUN, mode, job, 0, fdata, &b, &flag, 1, 0, lazy, 0);
    }
    if (s == FM_AGAIN || s == FM_OVERFLOW) {
        /* no room now, or a large entry: the Python path posts it */
        PyObject *items = PyList_New(1);
        if (items == NULL)
            return -1;
        PyList_SET_ITEM(items, 0, Py_NewRef(entry));
        PyObject *r = PyObject_CallFunction(self->submit, "OIOO", result, mode, fdata, items);
        Py_DECREF(items);
        if (r == NULL)
            return -2;
        Py_DECREF(r);
    }
    else if (s != FM_OK) {
        if (s == FM_BROKEN)
            PyErr_SetString(PyExc_ValueError, "pool channel is closed");
        else
            fm_set_error(s);
        return -2;
    }
    return 0;
}

/* The pool is ending under apply(): no result to return, so no task either
 * (the result leaves the cache; the exception stays set). */
static void
apply_abandon(PoolChannelObject *self, PyObject *result)
{
    PyObject *exc = fm_exc_take();
    PyObject *cache = self->cache;
    if (cache != NULL && PyDict_DelItem(cache, fm_apply_result_job(result)) < 0)
        PyErr_Clear();
    fm_exc_restore(exc);
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
    if (fm_check_nargs("apply", nargs, 6, 6) < 0)
        return NULL;
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
    uint32_t mode;
    PyObject *entry = apply_entry(args[2], args[3], &mode);
    if (entry == NULL)
        return NULL;
    PyObject *result = fm_apply_result_new(st, args[0], self->cache, (PyObject *)self,
                                           args[4], args[5]);
    if (result == NULL) {
        Py_DECREF(entry);
        return NULL;
    }
    int rc = -1;
    PyObject *b = NULL;
    PyObject *fdata = apply_function(self, args[1]);
    if (fdata != NULL)
        b = fm_pool_pickle(self->dumps, self->fallback_dumps, entry);
    if (b != NULL)
        rc = apply_post(self, result, mode, fdata, b, entry);
    if (rc == -1) {
        /* the task cannot be sent: its result is that exception */
        PyObject *exc = fm_exc_take();
        fm_apply_result_complete(result, 0, exc);
        Py_DECREF(exc);
    }
    else if (rc == -2) {
        apply_abandon(self, result);
        Py_CLEAR(result);
    }
    Py_XDECREF(b);
    Py_XDECREF(fdata);
    Py_DECREF(entry);
    if (rc == 0)
        fm_pool_help_collect(self);
    return result;
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
    fm_ring *r = fm_pool_task_ring(self->hdr);
    fm_ring_read rd;
    if (fm_ring_adopt(r, (uint32_t)pid, fm_self_pid(), &rd) != FM_OK)
        Py_RETURN_NONE;
    fm_task_hdr th = {0};
    if (rd.len >= sizeof th)
        memcpy(&th, rd.data, sizeof th);
    fm_pool_unlink_big_entries(self->st, &self->big, &rd, 1);
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
        int s = put_record(self, FM_TASK_EXIT, 0, 0, 0, NULL, NULL, NULL, 0, 1, 0, 0);
        if (s != FM_OK)
            return fm_set_error(s);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(big_slots_doc,
"big_slots($self, /)\n--\n\n"
"The big-slot table, for tests: a list of (state, size, segment name or\n"
"None), state 0 empty, 1 free, 2 in use, 3 being made.");

static PyObject *
PoolChannel_big_slots(PoolChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    if (!channel_alive(self))
        return NULL;
    PyObject *out = PyList_New(FM_POOL_BIG_SLOTS);
    for (uint32_t i = 0; out != NULL && i < FM_POOL_BIG_SLOTS; i++) {
        fm_pool_bigslot *sl = fm_pool_bigslot_at(self->hdr, i);
        uint32_t state = atomic_load_explicit(&sl->state, ACQ);
        unsigned long long size = atomic_load_explicit(&sl->size, RLX);
        char name[FM_SHM_NAME_MAX];
        memcpy(name, sl->name, sizeof name);
        name[sizeof name - 1] = 0;
        PyObject *t = size ? Py_BuildValue("(IKs)", state, size, name)
                           : Py_BuildValue("(IKO)", state, size, Py_None);
        if (t == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, i, t);
    }
    return out;
}

/* ------------------------------------------------------------ the slots */

/* The worker slot an index argument names; NULL with an exception (closed
 * channel, not an int, IndexError). */
static fm_pool_slot *
slot_arg(PoolChannelObject *self, PyObject *arg)
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
    return fm_pool_slot_at(self->hdr, (uint32_t)i);
}

PyDoc_STRVAR(slot_doc,
"slot($self, i, /)\n--\n\n"
"Worker slot i as (pid, state, job, first, count, tasks_done).");

static PyObject *
PoolChannel_slot(PoolChannelObject *self, PyObject *arg)
{
    fm_pool_slot *sl = slot_arg(self, arg);
    if (sl == NULL)
        return NULL;
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
    if (fm_check_nargs("set_slot", nargs, 3, 3) < 0)
        return NULL;
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
    fm_pool_slot *sl = fm_pool_slot_at(self->hdr, (uint32_t)i);
    if (state == -1) {
        /* the worker writes the same pid when it starts: no race on it */
        atomic_store_explicit(&sl->pid, (uint32_t)pid, REL);
        Py_RETURN_NONE;
    }
    atomic_store_explicit(&sl->count, 0, RLX);
    atomic_store_explicit(&sl->tasks_done, 0, RLX);
    atomic_store_explicit(&sl->running, 0, RLX);
    atomic_store_explicit(&sl->deadline, 0, RLX);
    atomic_store_explicit(&sl->pid, (uint32_t)pid, RLX);
    atomic_store_explicit(&sl->state, (uint32_t)state, REL);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(timed_out_doc,
"timed_out($self, i, /)\n--\n\n"
"When the collector killed the worker of slot i because its task ran past\n"
"the task's time limit: that task's index in its job (the slot's batch\n"
"says the rest); else None.  Read it before the slot is freed.");

static PyObject *
PoolChannel_timed_out(PoolChannelObject *self, PyObject *arg)
{
    fm_pool_slot *sl = slot_arg(self, arg);
    if (sl == NULL)
        return NULL;
    if (atomic_load_explicit(&sl->deadline, ACQ) != FM_POOL_DEADLINE_KILLED)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLong(atomic_load_explicit(&sl->running, RLX));
}

/* ------------------------------------------------------------ collecting */

int
fm_pool_channel_wait(PyObject *channel, int64_t deadline)
{
    fm_state *st = fm_state_of_type(Py_TYPE(channel));
    if (st == NULL)
        return -1;
    if (!Py_IS_TYPE(channel, st->PoolChannelType))
        return 2;
    return fm_pool_wait((PoolChannelObject *)channel, deadline);
}

PyDoc_STRVAR(wait_doc,
"wait($self, timeout=None, /)\n--\n\n"
"Wait for results to be handed over, collecting them in this thread when no\n"
"other thread does.  Returns True after a hand-over (to anyone), False when\n"
"the timeout (at most a short slice) passed, None when the channel is closing\n"
"or not collecting (wait some other way).  The caller checks what it waits\n"
"for and calls again.");

static PyObject *
PoolChannel_wait(PoolChannelObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t deadline;
    if (fm_check_nargs("wait", nargs, 0, 1) < 0 ||
        fm_timeout_to_deadline(nargs ? args[0] : NULL, &deadline) < 0)
        return NULL;
    int r = fm_pool_wait(self, deadline);
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
    return PyBool_FromLong(fm_pool_in_collector(self));
}

PyDoc_STRVAR(notify_doc,
"notify($self, /)\n--\n\n"
"Wake the threads in wait(): a result was set outside a hand-over.");

static PyObject *
PoolChannel_notify(PoolChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->hdr == NULL || self->owner != fm_self_pid())
        Py_RETURN_NONE;
    fm_pool_bump_dispatch(self);
    if (atomic_load_explicit(&self->leader, memory_order_seq_cst))
        fm_pool_post_control(self, FM_RES_NUDGE, 0);
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
    if (fm_check_nargs("start_collector", nargs, 2, 2) < 0)
        return NULL;
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
    if (fm_pool_collector_start(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(stop_collector_doc,
"stop_collector($self, /)\n--\n\n"
"Stop the collector thread after it delivered what was posted before; wait\n"
"for it.  Never call it from the collector's own callbacks.");

static PyObject *
PoolChannel_stop_collector(PoolChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    if (fm_pool_in_collector(self)) {
        PyErr_SetString(PyExc_RuntimeError, "the collector cannot stop itself");
        return NULL;
    }
    fm_pool_collector_stop(self);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(close_doc,
"close($self, /)\n--\n\n"
"Stop the collector, unlink and unmap the channel.  Workers must be gone.");

static PyObject *
PoolChannel_close(PoolChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    if (fm_pool_in_collector(self)) {
        PyErr_SetString(PyExc_RuntimeError, "the collector cannot close the channel");
        return NULL;
    }
    channel_destroy(self);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------ attributes */
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
    /* closing counts: a thread that left a put because of it sees why */
    return PyBool_FromLong(self->hdr == NULL ||
                           atomic_load_explicit(&self->closing, memory_order_seq_cst));
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
    return PyLong_FromSize_t(fm_ring_max_record(fm_pool_task_ring(self->hdr)));
}

/* ------------------------------------------------------------ the worker */

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
    if (fm_check_nargs("worker_main", nargs, 4, 5) < 0)
        return NULL;
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
    unsigned long long maxmem = 0;
    if (nargs > 4 && args[4] != Py_None) {
        maxmem = PyLong_AsUnsignedLongLong(args[4]);
        if (PyErr_Occurred())
            return NULL;
    }
    return fm_pool_worker_main(st, args[0], slot, maxtasks, args[3], maxmem);
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
    if (fm_check_nargs("worker_init_failed", nargs, 3, 3) < 0)
        return NULL;
    if (!PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "worker_init_failed(name, slot, payload: bytes)");
        return NULL;
    }
    long slot = PyLong_AsLong(args[1]);
    if (slot == -1 && PyErr_Occurred())
        return NULL;
    return fm_pool_worker_init_failed(args[0], slot, args[2]);
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
    {"big_slots", (PyCFunction)PoolChannel_big_slots, METH_NOARGS, big_slots_doc},
    {"slot", (PyCFunction)PoolChannel_slot, METH_O, slot_doc},
    {"set_slot", (PyCFunction)(void (*)(void))PoolChannel_set_slot, METH_FASTCALL,
     set_slot_doc},
    {"timed_out", (PyCFunction)PoolChannel_timed_out, METH_O, timed_out_doc},
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
    FM_WEAKREF_MEMBER(PoolChannelObject),
    {"cache", T_OBJECT, offsetof(PoolChannelObject, cache), 0,
     "the pool's {job: result}: exact ApplyResults in it are completed in C"},
    {"func_cache", T_OBJECT, offsetof(PoolChannelObject, func_cache), 0,
     "apply()'s {function: its pickle}, filled by dump_function"},
    {"dump_function", T_OBJECT, offsetof(PoolChannelObject, dump_function), 0,
     "apply(): pickles a function not in func_cache"},
    {"submit", T_OBJECT, offsetof(PoolChannelObject, submit), 0,
     "apply(): submit(result, mode, func, items) when the ring has no room"},
    {"timeouts", T_OBJECT, offsetof(PoolChannelObject, timeouts), 0,
     "{job: time limit per task in ns}: put() writes it into the job's task records"},
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
    return fm_add_type(module, &PoolChannel_spec, NULL, &st->PoolChannelType);
}
