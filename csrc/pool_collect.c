/* pool_collect.c: the parent's side of the result ring -- taking results
 * off it and handing them over (dispatch).
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
 * Who holds what: before a worker releases the task record it copied out,
 * it writes the batch (job, first, count) into its slot and marks it BUSY;
 * it marks it IDLE after committing the results.  When the collector finds
 * a worker's pid gone, it first delivers every result already posted, then
 * hands the slot to Python (on_dead), which fails exactly the tasks the slot
 * still holds and starts a replacement (the stdlib hangs instead: gh-66587). */
#include "fastmp.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pool.h"

/* How often the collector checks for dead workers while results flow. */
#define FM_POOL_CHECK_NS (50 * 1000 * 1000LL)
/* After killing a worker for a task timeout, look for its death this soon. */
#define FM_POOL_KILLED_CHECK_NS (2 * 1000 * 1000LL)
/* Most records (and bytes) the collector copies out per GIL acquisition. */
#define FM_POOL_DRAIN_RECORDS 512
#define FM_POOL_DRAIN_BYTES (4u << 20)
/* The collector thread keeps off the ring while waiting threads collect,
 * and for this long after one did; it looks again every FM_POOL_PARK_NS. */
#define FM_POOL_LEADER_RECENT_NS (10 * 1000 * 1000LL)
#define FM_POOL_PARK_NS (2 * 1000 * 1000LL)
/* A waiting thread collects for at most this long per wait() call. */
#define FM_POOL_LEADER_SLICE_NS (20 * 1000 * 1000LL)
/* GIL held, in apply(): results pile up in the result ring while this
 * thread submits, since the collector thread waits for the GIL it holds
 * (up to a switch interval, 5 ms, each time); past this many bytes, hand a
 * batch over from here instead. */
#define FM_POOL_HELP_BYTES (32u * 1024u)

/* ------------------------------------------------------ the result ring */

/* Copy out every ready record (up to the drain limits) into b: one
 * blocking take first when `first_deadline`.  Returns the last take's
 * status.  No GIL needed. */
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
        if (fm_buf_reserve(b, 8 + fm_pad8(rd.len)) < 0) {
            /* out of memory: drop the record rather than spin on it */
            fm_ring_release(r, &rd);
            continue;
        }
        uint32_t len = rd.len;
        memcpy(b->p + b->len, &len, sizeof len);
        memcpy(b->p + b->len + 8, rd.data, rd.len);
        b->len += 8 + fm_pad8(rd.len);
        fm_ring_release(r, &rd);
    }
    return s;
}

int
fm_pool_post_control(PoolChannelObject *self, uint32_t kind, int64_t deadline)
{
    fm_ring *r = fm_pool_result_ring(self->hdr);
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

void
fm_pool_bump_dispatch(PoolChannelObject *self)
{
    atomic_fetch_add_explicit(&self->disp_seq, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&self->disp_sleepers, memory_order_seq_cst) > 0)
        fm_futex_wake(&self->disp_seq, INT32_MAX);
}

/* The next copied record long enough for a result header: 1 with *rh and
 * the record (*rec, *rlen), 0 after the last. */
static int
next_result(fm_copied_iter *it, fm_result_hdr *rh, const unsigned char **rec, uint32_t *rlen)
{
    while (fm_copied_next(it, rec, rlen)) {
        if (*rlen < sizeof *rh)
            continue;
        memcpy(rh, *rec, sizeof *rh);
        return 1;
    }
    return 0;
}

/* Does the copied batch hold a record of one of these kinds (a bit mask of
 * 1 << kind)? */
static int
has_kind(const fm_buf *b, unsigned kinds)
{
    fm_copied_iter it = {b, 0};
    fm_result_hdr rh;
    const unsigned char *rec;
    uint32_t rlen;
    while (next_result(&it, &rh, &rec, &rlen))
        if (rh.kind < 32 && (kinds >> rh.kind) & 1u)
            return 1;
    return 0;
}

/* Results (not only control records)? */
static int
has_results(const fm_buf *b)
{
    return has_kind(b, 1u << FM_RES_RESULT | 1u << FM_RES_INITFAIL);
}

/* A STOP or RETIRE record (which must reach dispatch())? */
static int
has_stop(const fm_buf *b)
{
    return has_kind(b, 1u << FM_RES_STOP | 1u << FM_RES_RETIRE);
}

/* ------------------------------------------------------------- dispatch */

/* What dispatch() carries from record to record. */
typedef struct {
    fm_state *st;
    PyObject *runs;                 /* [(job, first, [(ok, value), ...]), ...] for on_results */
    PyObject *key;                  /* key_job as an int, for cache lookups */
    uint64_t key_job;
    int completed;                  /* some ApplyResult was completed here */
} dispatch_ctx;

/* A worker left after maxtasks: the collector thread replaces it (on_dead)
 * now, not at its next check; wake it if parked. */
static void
note_retired(PoolChannelObject *self)
{
    atomic_store_explicit(&self->retired, 1, memory_order_seq_cst);
    if (!fm_pool_in_collector(self)) {
        fm_futex_wake(&self->leader, 1);
        if (atomic_load_explicit(&self->in_take, memory_order_seq_cst))
            fm_pool_post_control(self, FM_RES_NUDGE, 0);
    }
}

/* A moving average of the time per task, for batching decisions. */
static void
note_task_time(PoolChannelObject *self, const fm_result_hdr *rh)
{
    int64_t per = (int64_t)rh->aux / rh->count;
    int64_t avg = self->task_ns ? (self->task_ns * 7 + per) / 8 : per;
    self->task_ns = avg > 0 ? avg : 1;     /* 0 means "not measured yet" */
}

/* An apply_async() result (task 0 of its job) whose ApplyResult is in the
 * cache: complete it here, no Python code in between (unless it has a
 * callback).  1 when done (value consumed), 0 when not such a result, -1
 * with an exception (value consumed). */
static int
complete_apply(PoolChannelObject *self, dispatch_ctx *d, uint64_t job, int ok,
               PyObject *value)
{
    if (d->key == NULL || d->key_job != job) {
        Py_XSETREF(d->key, PyLong_FromUnsignedLongLong((unsigned long long)job));
        d->key_job = job;
        if (d->key == NULL) {
            Py_DECREF(value);
            return -1;
        }
    }
    PyObject *res = PyDict_GetItemWithError(self->cache, d->key);
    if (res != NULL && fm_is_apply_result(d->st, res)) {
        Py_INCREF(res);
        fm_apply_result_complete(res, ok, value);
        Py_DECREF(res);
        Py_DECREF(value);
        d->completed = 1;
        return 1;
    }
    if (res == NULL && PyErr_Occurred())
        PyErr_Clear();
    return 0;
}

/* An attribute of obj as a new reference, or NULL with no exception. */
static PyObject *
attr_or_null(PyObject *obj, const char *name)
{
    PyObject *v = PyObject_GetAttrString(obj, name);
    if (v == NULL)
        PyErr_Clear();
    return v;
}

/* Packed results of task `task` of job go straight into their place in the
 * result's list when the result is a MapResult (its class sets _fm_place)
 * still collecting and that task is not done yet: its _value list (a new
 * reference), and where the task's results go in it.  1 when so, else 0
 * (no exception: the results travel as a list, as any other). */
static int
place_target(PoolChannelObject *self, dispatch_ctx *d, uint64_t job, uint32_t task,
             PyObject **list, Py_ssize_t *start, Py_ssize_t *count)
{
    if (d->key == NULL || d->key_job != job) {
        Py_XSETREF(d->key, PyLong_FromUnsignedLongLong((unsigned long long)job));
        d->key_job = job;
        if (d->key == NULL) {
            PyErr_Clear();
            return 0;
        }
    }
    PyObject *res = PyDict_GetItemWithError(self->cache, d->key);     /* borrowed */
    if (res == NULL) {
        PyErr_Clear();
        return 0;
    }
    int found = 0;
    Py_INCREF(res);
    PyObject *flag = attr_or_null(res, "_fm_place");
    PyObject *ok = attr_or_null(res, "_success");
    PyObject *value = attr_or_null(res, "_value");
    PyObject *cs = attr_or_null(res, "_chunksize");
    PyObject *done = attr_or_null(res, "_done");
    if (flag == Py_True && ok == Py_True && value != NULL && PyList_CheckExact(value) &&
        cs != NULL && PyLong_CheckExact(cs) && done != NULL && PyByteArray_CheckExact(done) &&
        (Py_ssize_t)task < PyByteArray_GET_SIZE(done) &&
        PyByteArray_AS_STRING(done)[task] == 0) {
        Py_ssize_t size = PyLong_AsSsize_t(cs);
        Py_ssize_t n = PyList_GET_SIZE(value);
        if (size > 0 && (Py_ssize_t)task <= (n - 1) / size) {
            *start = (Py_ssize_t)task * size;
            *count = n - *start < size ? n - *start : size;
            *list = Py_NewRef(value);
            found = 1;
        }
        PyErr_Clear();
    }
    Py_XDECREF(flag);
    Py_XDECREF(ok);
    Py_XDECREF(value);
    Py_XDECREF(cs);
    Py_XDECREF(done);
    Py_DECREF(res);
    return found;
}

/* Append (ok, value) to *pairs, made on first use; value consumed.  -1 with
 * an exception. */
static int
append_pair(PyObject **pairs, int ok, PyObject *value)
{
    if (*pairs == NULL) {
        *pairs = PyList_New(0);
        if (*pairs == NULL) {
            Py_DECREF(value);
            return -1;
        }
    }
    /* "N" consumes value, on failure too */
    PyObject *pair = Py_BuildValue("(NN)", PyBool_FromLong(ok), value);
    int rc = pair == NULL ? -1 : PyList_Append(*pairs, pair);
    Py_XDECREF(pair);
    return rc;
}

/* One RESULT or INITFAIL record: its entries unpickled; exact ApplyResults
 * completed, the rest appended to d->runs as one run.  -1 with an
 * exception. */
static int
dispatch_record(PoolChannelObject *self, dispatch_ctx *d, const fm_result_hdr *rh,
                const unsigned char *rec, uint32_t rlen)
{
    PyObject *pairs = NULL;         /* [(ok, value), ...] of tasks run_first, ... */
    uint32_t run_first = 0;
    fm_entry_iter it;
    fm_entry e;
    fm_entry_iter_init(&it, rec, rlen, sizeof *rh, rh->count);
    for (uint32_t k = 0; fm_entry_next(&it, &e); k++) {
        PyObject *value = NULL, *list;
        Py_ssize_t start, count;
        int ok = (e.flags & FM_ENTRY_OK) != 0;
        if (ok && (e.flags & FM_ENTRY_VECTOR) && rh->kind == FM_RES_RESULT &&
            self->cache != NULL && PyDict_CheckExact(self->cache) &&
            place_target(self, d, rh->job, rh->first + k, &list, &start, &count)) {
            /* a map chunk's numbers, unpacked into the MapResult's list: the
             * value handed over is their count (see MapResult._set) */
            value = fm_pool_place_entry(self->st, &self->big, &e, list, start, count);
            Py_DECREF(list);
            if (value == NULL) {
                value = fm_exc_take();
                ok = 0;
            }
        }
        if (value == NULL)
            value = fm_pool_load_entry(self->st, &self->big, self->loads, &e);
        if (value == NULL) {
            /* a result the parent cannot unpickle fails its task
             * (the stdlib's result thread dies here: gh-79492) */
            value = fm_exc_take();
            ok = 0;
        }
        if (rh->kind == FM_RES_RESULT && rh->first + k == 0 && self->cache != NULL &&
            PyDict_CheckExact(self->cache)) {
            int done = complete_apply(self, d, rh->job, ok, value);
            if (done < 0)
                goto error;
            if (done)
                continue;
        }
        if (pairs == NULL)
            run_first = rh->first + k;
        if (append_pair(&pairs, ok, value) < 0)
            goto error;
    }
    if (pairs == NULL)
        return 0;
    /* one run per record: (job, first, pairs); an initializer's failure is
     * job 0, with the worker's slot for first */
    PyObject *t = rh->kind == FM_RES_INITFAIL
                      ? Py_BuildValue("(KIN)", 0ULL, rh->aux, pairs)
                      : Py_BuildValue("(KIN)", (unsigned long long)rh->job, run_first, pairs);
    if (t == NULL)
        return -1;
    int rc = PyList_Append(d->runs, t);
    Py_DECREF(t);
    return rc;
error:
    Py_XDECREF(pairs);
    return -1;
}

/* With the GIL: unpickle the copied records; complete exact ApplyResults
 * at once, and hand everything else to on_results as a list of runs,
 * (job, first, [(ok, value), ...]) for tasks first, first+1, ...; returns
 * 1 when a STOP record was among them. */
static int
dispatch(PoolChannelObject *self, fm_buf *b)
{
    int stop = 0;
    dispatch_ctx d = {fm_state_of_type(Py_TYPE(self)), PyList_New(0), NULL, 0, 0};
    if (d.runs == NULL || d.st == NULL)
        goto error;
    fm_copied_iter it = {b, 0};
    fm_result_hdr rh;
    const unsigned char *rec;
    uint32_t rlen;
    while (next_result(&it, &rh, &rec, &rlen)) {
        if (rh.kind == FM_RES_STOP) {
            stop = 1;
            continue;
        }
        if (rh.kind == FM_RES_RETIRE) {
            note_retired(self);
            continue;
        }
        if (rh.kind == FM_RES_RESULT && rh.count > 0)
            note_task_time(self, &rh);
        if (dispatch_record(self, &d, &rh, rec, rlen) < 0)
            goto error;
    }
    /* called after completions too, even with nothing more: it finishes a
     * closed pool once its last job is done */
    if ((PyList_GET_SIZE(d.runs) > 0 || d.completed) && self->on_results != NULL) {
        PyObject *r = PyObject_CallOneArg(self->on_results, d.runs);
        if (r == NULL)
            fm_report_unraisable(self->on_results);
        Py_XDECREF(r);
    }
    Py_XDECREF(d.key);
    Py_DECREF(d.runs);
    return stop;
error:
    fm_report_unraisable((PyObject *)self);
    Py_XDECREF(d.key);
    Py_XDECREF(d.runs);
    return stop;
}

/* GIL held: dispatch what a thread other than the collector copied out;
 * a STOP it took is posted again for the collector.  1 when it held
 * results. */
static int
dispatch_here(PoolChannelObject *self, fm_buf *b)
{
    int real = has_results(b);
    /* may run callbacks, which may even close the channel */
    int stop = dispatch(self, b);
    if (stop && self->hdr != NULL)
        fm_pool_post_control(self, FM_RES_STOP, FM_FOREVER);    /* the collector's */
    if (real)
        fm_pool_bump_dispatch(self);
    return real;
}

void
fm_pool_help_collect(PoolChannelObject *self)
{
    if (self->hdr == NULL || self->owner != fm_self_pid())
        return;
    fm_ring *r = fm_pool_result_ring(self->hdr);
    if (fm_ring_pending_bytes(r) < FM_POOL_HELP_BYTES)
        return;
    fm_buf b = {0};
    drain(r, &b, self->owner, 0, 0);
    if (b.len > 0)
        dispatch_here(self, &b);
    free(b.p);
}

/* --------------------------------------------------- the collector thread */

/* Check every worker's pid: 1 if some worker that was in use is gone. */
static int
any_dead(fm_pool_hdr *h)
{
    for (uint32_t i = 0; i < h->nslots; i++) {
        fm_pool_slot *sl = fm_pool_slot_at(h, i);
        uint32_t state = atomic_load_explicit(&sl->state, ACQ);
        uint32_t pid = atomic_load_explicit(&sl->pid, RLX);
        if (state != FM_SLOT_FREE && pid != 0 && !fm_pid_alive((pid_t)pid))
            return 1;
    }
    return 0;
}

/* Task timeouts: kill every worker whose task ran past its deadline (its
 * slot's, see pool_worker.c).  The deadline is claimed first, so a worker
 * that finished its task in time is never killed: of the two, the one
 * whose compare-and-swap succeeds decides.  The worker's death is then
 * found like any other (any_dead), and the slot says which task timed out
 * (PoolChannel.timed_out).  1 if some worker was killed.  No GIL needed. */
static int
kill_overdue(fm_pool_hdr *h, int64_t now)
{
    int killed = 0;
    for (uint32_t i = 0; i < h->nslots; i++) {
        fm_pool_slot *sl = fm_pool_slot_at(h, i);
        int64_t d = atomic_load_explicit(&sl->deadline, ACQ);
        if (d <= 0 || now <= d)
            continue;
        uint32_t pid = atomic_load_explicit(&sl->pid, RLX);
        if (pid == 0 ||
            !atomic_compare_exchange_strong_explicit(&sl->deadline, &d, FM_POOL_DEADLINE_KILLED,
                                                     SEQ, SEQ))
            continue;
        (void)kill((pid_t)pid, SIGKILL);
        killed = 1;
    }
    return killed;
}

/* The collector thread, without the GIL: wait for records (or park while
 * waiting threads collect) and copy them into b; wait no later than
 * `until` (the next check for dead workers). */
static void
collector_take(PoolChannelObject *self, fm_buf *b, uint32_t pid, int64_t until)
{
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
        return;
    }
    atomic_store_explicit(&self->in_take, 1, memory_order_seq_cst);
    drain(fm_pool_result_ring(self->hdr), b, pid, until, self->spin_ns);
    atomic_store_explicit(&self->in_take, 0, memory_order_seq_cst);
}

/* The collector thread, with the GIL: dispatch b, and call on_dead when a
 * worker died or retired.  Returns 1 on a STOP record. */
static int
collector_deliver(PoolChannelObject *self, fm_buf *b, int dead)
{
    int stop = 0;
    PyGILState_STATE g = PyGILState_Ensure();
    if (b->len)
        stop = dispatch(self, b);
    /* a worker retired (its RETIRE record came here or to a waiting
     * thread): replace it now */
    if (atomic_exchange_explicit(&self->retired, 0, memory_order_seq_cst))
        dead = 1;
    if (dead && !stop && self->on_dead != NULL) {
        PyObject *r = PyObject_CallNoArgs(self->on_dead);
        if (r == NULL)
            fm_report_unraisable(self->on_dead);
        Py_XDECREF(r);
    }
    PyGILState_Release(g);
    return stop;
}

static void *
collector_main(void *arg)
{
    PoolChannelObject *self = arg;
    fm_pool_hdr *h = self->hdr;
    uint32_t pid = fm_self_pid();
    fm_buf b = {0};
    int64_t next_check = fm_now_ns() + FM_POOL_CHECK_NS;
    int stop = 0;
    while (!stop) {
        b.len = 0;
        collector_take(self, &b, pid, next_check);
        int64_t now = fm_now_ns();
        int dead = 0;
        if (now >= next_check) {
            next_check = now + FM_POOL_CHECK_NS;
            if (kill_overdue(h, now))
                next_check = now + FM_POOL_KILLED_CHECK_NS;     /* reap it soon */
            dead = any_dead(h);
            if (dead) {
                /* deliver what the dead worker posted before it died, so that
                 * only tasks it still held are failed */
                drain(fm_pool_result_ring(h), &b, pid, 0, 0);
            }
        }
        if (b.len == 0 && !dead && !atomic_load_explicit(&self->retired, memory_order_seq_cst))
            continue;
        int real = has_results(&b);
        stop = collector_deliver(self, &b, dead);
        if (real || dead) {
            fm_pool_bump_dispatch(self);
            /* a thread that became the collecting waiter meanwhile sleeps on
             * the ring: what we handed over may be its result */
            if (atomic_load_explicit(&self->leader, memory_order_seq_cst))
                fm_pool_post_control(self, FM_RES_NUDGE, 0);
        }
    }
    free(b.p);
    return NULL;
}

int
fm_pool_collector_start(PoolChannelObject *self)
{
    int err = pthread_create(&self->thread, NULL, collector_main, self);
    if (err != 0) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->thread_running = 1;
    return 0;
}

void
fm_pool_collector_stop(PoolChannelObject *self)
{
    if (!self->thread_running || self->owner != fm_self_pid() || fm_pool_in_collector(self))
        return;
    /* Post STOP; the collector sees it after every result before it (a
     * waiting thread that takes it posts it again). */
    Py_BEGIN_ALLOW_THREADS
    atomic_store_explicit(&self->stopping, 1, memory_order_seq_cst);
    fm_pool_post_control(self, FM_RES_STOP, FM_FOREVER);
    fm_futex_wake(&self->leader, 1);    /* if parked, it looks again now */
    pthread_join(self->thread, NULL);
    Py_END_ALLOW_THREADS
    self->thread_running = 0;
}

int
fm_pool_in_collector(PoolChannelObject *self)
{
    return self->thread_running && pthread_equal(self->thread, pthread_self());
}

/* ------------------------------------------------------ waiting threads */

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

/* The waiting thread that collects (it holds `leader`): take from the ring
 * until results, a STOP, a hand-over by another thread, or the deadline;
 * then dispatch.  Leaves `waiting`.  Returns what fm_pool_wait does. */
static int
lead_collect(PoolChannelObject *self, uint32_t seen, int64_t deadline)
{
    fm_buf b = {0};
    fm_ring *r = fm_pool_result_ring(self->hdr);
    uint32_t pid = self->owner;
    int64_t spin = atomic_load_explicit(&fm_spin_ns, RLX);
    int got = 0, s;
    Py_BEGIN_ALLOW_THREADS
    /* the collector thread may be asleep on the ring: send it off */
    if (atomic_load_explicit(&self->in_take, memory_order_seq_cst))
        fm_pool_post_control(self, FM_RES_NUDGE, 0);
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
    if (b.len > 0)
        got = dispatch_here(self, &b);
    if (!got) {
        got = atomic_load_explicit(&self->disp_seq, memory_order_seq_cst) != seen;
        fm_pool_bump_dispatch(self);    /* a follower may take over the ring */
    }
    free(b.p);
    (void)s;
    /* every slice, not only when the wait was interrupted: a signal that
     * another thread handled (the kernel picks any thread) or that came
     * while this one held the GIL interrupts no wait of this thread */
    if (PyErr_CheckSignals() < 0)
        return -1;
    return got;
}

int
fm_pool_wait(PoolChannelObject *self, int64_t deadline)
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
    if (atomic_compare_exchange_strong_explicit(&self->leader, &zero, 1, memory_order_seq_cst,
                                                memory_order_seq_cst))
        return lead_collect(self, seen, deadline);
    /* someone else collects: sleep until it hands something over */
    int s;
    FM_BLOCKING(s, ((void)fm_spin, follower_wait_once(self, seen, deadline)));
    int got = atomic_load_explicit(&self->disp_seq, memory_order_seq_cst) != seen;
    atomic_fetch_sub_explicit(&self->waiting, 1, memory_order_seq_cst);
    if (s == FM_PYERR)
        return -1;
    if (PyErr_CheckSignals() < 0)      /* every slice: see lead_collect */
        return -1;
    return got;
}
