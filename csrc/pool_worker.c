/* pool_worker.c: the worker loop, in a pool's child processes.
 *
 * A worker takes a task record off the task ring, copies it out, says in
 * its slot which tasks it now holds (job, first, count: BUSY) before it
 * releases the record, runs them, posts their results (pool_wire.h), and
 * marks the slot IDLE again.  So a worker that dies fails exactly the tasks
 * its slot names (a worker that dies between the take and its slot's update
 * leaves the record in its name in the ring: the parent adopts it).  The
 * worker leaves on an EXIT record, after maxtasks tasks or once its resident
 * memory is above maxmem after a task record (posting RETIRE, so that the
 * parent replaces it at once), or when the pool's owner is gone. */
#include "fastmp.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "pool.h"

/* A map chunk's packed results are built in a buffer the worker keeps for
 * the next chunk, unless it grew past this (1M results). */
#define FM_WORKER_VEC_KEEP ((size_t)8 << 20)

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
    int statm_fd;                   /* /proc/self/statm, for the memory limit (-1: none) */
    fm_buf vec;                     /* a map chunk's packed results (fm_pool_call_chunk) */
    fm_big_cache big;               /* our big-slot mappings */
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

/* ---- the memory limit
 *
 * max_memory_per_child: after each task record (one apply call, one map
 * chunk: the parent sends one task per record when a limit is set), the
 * worker reads its resident set size and leaves, as after maxtasks, when it
 * is above the limit.  /proc/self/statm is opened once and read with pread:
 * one system call per task record (procfs answers at once: no wait, so an
 * EINTR is retried at once, with no signal check).  Where it cannot be read,
 * the peak resident size (getrusage) stands in: never below the current one,
 * so a worker above the limit still leaves. */

/* Open /proc/self/statm for the memory limit, if any (-1 otherwise). */
static int
open_statm(unsigned long long maxmem)
{
    if (maxmem == 0)
        return -1;
    int fd;
    do
        fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    return fd;
}

/* The resident set size in bytes, or 0 if unknown.  No Python object. */
static unsigned long long
resident_bytes(int statm_fd)
{
    if (statm_fd >= 0) {
        char buf[128];
        ssize_t n;
        do
            n = pread(statm_fd, buf, sizeof buf - 1, 0);
        while (n < 0 && errno == EINTR);
        if (n > 0) {
            buf[n] = '\0';
            /* "size resident shared ...", in pages */
            char *end;
            (void)strtoull(buf, &end, 10);
            unsigned long long pages = strtoull(end, NULL, 10);
            long page = sysconf(_SC_PAGESIZE);
            return pages * (unsigned long long)(page > 0 ? page : 4096);
        }
    }
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0 && ru.ru_maxrss > 0)
        return (unsigned long long)ru.ru_maxrss * 1024u;       /* KiB on Linux */
    return 0;
}

/* Above the limit (0: none) after a task record: the worker leaves. */
static int
over_memory_limit(worker_ctx *w, unsigned long long maxmem)
{
    return maxmem != 0 && resident_bytes(w->statm_fd) > maxmem;
}

/* ------------------------------------------------------------ running */

/* Pickled result or failure for one call: returns new bytes and *ok, or
 * NULL only if even the failure could not be encoded (exception set). */
static PyObject *
encode_outcome(worker_ctx *w, PyObject *value, int *ok)
{
    PyObject *b;
    if (value != NULL) {
        b = fm_pool_pickle(w->dumps, NULL, value);
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

/* f(x) (MAP) or f(*x) (STARMAP) for each x of a chunk: the list of results,
 * or NULL with the first exception. */
static PyObject *
call_chunk(PyObject *f, uint32_t mode, PyObject *a)
{
    PyObject *chunk = PySequence_Fast(a, "chunk must be a sequence");
    if (chunk == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(chunk);
    PyObject *value = PyList_New(n);
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
    return value;
}

/* The call one entry asks for (its arguments a, unpickled): the value, or
 * NULL with an exception. */
static PyObject *
call_entry(PyObject *f, uint32_t mode, PyObject *a)
{
    switch (mode) {
    case FM_MODE_APPLY:
        if (!PyTuple_Check(a)) {
            PyErr_SetString(PyExc_TypeError, "apply arguments must be a tuple");
            return NULL;
        }
        return PyObject_Call(f, a, NULL);
    case FM_MODE_APPLY_KW: {
        if (!PyTuple_Check(a) || PyTuple_GET_SIZE(a) != 2) {
            PyErr_SetString(PyExc_TypeError, "bad apply record");
            return NULL;
        }
        PyObject *pa = PySequence_Tuple(PyTuple_GET_ITEM(a, 0));
        if (pa == NULL)
            return NULL;
        PyObject *kw = PyTuple_GET_ITEM(a, 1);
        PyObject *value = PyObject_Call(f, pa, kw == Py_None ? NULL : kw);
        Py_DECREF(pa);
        return value;
    }
    case FM_MODE_MAP:
    case FM_MODE_STARMAP:
        return call_chunk(f, mode, a);
    default:
        PyErr_SetString(PyExc_ValueError, "bad task mode");
        return NULL;
    }
}

/* Run one entry; returns its outcome as a new bytes object. */
static PyObject *
run_entry(worker_ctx *w, PyObject *f, uint32_t mode, const fm_entry *e, int *ok,
          uint32_t *vflag)
{
    PyObject *value = NULL;
    PyObject *a = fm_pool_load_entry(w->st, &w->big, w->loads, e);
    PyObject *b = NULL;
    if (a != NULL && f != NULL && (mode == FM_MODE_MAP || mode == FM_MODE_STARMAP)) {
        /* a chunk: its results packed as they come, when they pack */
        int packed = fm_pool_call_chunk(f, mode, a, &w->vec, vflag, &value);
        if (packed == 1) {
            /* too large for the ring: straight into a segment (vflag gets
             * which kind), not through a bytes object first */
            if (w->vec.len > fm_pool_big_threshold(fm_pool_result_ring(w->h)))
                b = fm_pool_big_entry_from(w->st, &w->big, w->vec.p, w->vec.len, vflag);
            else
                b = PyBytes_FromStringAndSize((const char *)w->vec.p, (Py_ssize_t)w->vec.len);
            *ok = b != NULL;
        }
        Py_DECREF(a);
        if (w->vec.cap > FM_WORKER_VEC_KEEP) {
            /* kept for the next chunk only up to a size (a worker's memory) */
            free(w->vec.p);
            w->vec = (fm_buf){0};
        }
        if (packed == 1)
            return b != NULL ? b : encode_outcome(w, NULL, ok);
    }
    else {
        if (a != NULL && f != NULL)
            value = call_entry(f, mode, a);
        Py_XDECREF(a);
    }
    if (value != NULL && (mode == FM_MODE_MAP || mode == FM_MODE_STARMAP) &&
        PyList_CheckExact(value)) {
        b = fm_pool_encode_vector(value, vflag);
        if (b != NULL)
            *ok = 1;
    }
    if (b == NULL && value != NULL) {
        /* a large result (1 MiB of bytes...): pickled into a big slot */
        b = fm_pool_pickle_large(w->st, &w->big, value,
                                 fm_pool_big_threshold(fm_pool_result_ring(w->h)), vflag);
        if (b != NULL)
            *ok = 1;
    }
    if (b == NULL)
        b = encode_outcome(w, value, ok);
    Py_XDECREF(value);
    return b;
}

/* ------------------------------------------------------------ results */

/* Post a result record (blocking while the result ring is full). */
static int
post_result(worker_ctx *w, const unsigned char *rec, size_t len)
{
    fm_ring *r = fm_pool_result_ring(w->h);
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

/* The outcome of one entry of a batch, as the bytes of a result entry and
 * *oflags: its result or failure (every entry fails with fexc when the
 * function could not be loaded); in a segment of its own when too large for
 * the ring, or the error that prevented it.  NULL with an exception. */
static PyObject *
entry_outcome(worker_ctx *w, PyObject *f, PyObject *fexc, uint32_t mode, const fm_entry *e,
              uint32_t *oflags)
{
    int ok = 0;
    uint32_t vflag = 0;
    PyObject *b;
    if (fexc != NULL) {
        Py_INCREF(fexc);
        fm_exc_restore(fexc);
        b = encode_outcome(w, NULL, &ok);
    }
    else
        b = run_entry(w, f, mode, e, &ok, &vflag);
    if (b == NULL)
        return NULL;
    *oflags = ok ? FM_ENTRY_OK | vflag : 0;
    if ((size_t)PyBytes_GET_SIZE(b) > fm_pool_big_threshold(fm_pool_result_ring(w->h))) {
        if (fm_pool_to_big_entry(w->st, &w->big, &b, oflags) < 0) {
            b = encode_outcome(w, NULL, &ok);       /* that error, for this task */
            *oflags = 0;
        }
    }
    return b;
}

/* The result records being built for one task record, in `out`: the one
 * being filled starts at `start`. */
typedef struct {
    fm_buf *out;
    size_t start;
} result_records;

static fm_result_hdr *
current_record(result_records *rr)
{
    return (fm_result_hdr *)(rr->out->p + rr->start);
}

/* Append an entry (bytes b, flags) for task `task` of job; when the record
 * would pass the largest record, post it first and start another.  Returns
 * a status (FM_PYERR with an exception). */
static int
append_outcome(worker_ctx *w, result_records *rr, uint64_t job, uint32_t task, PyObject *b,
               uint32_t oflags)
{
    fm_buf *out = rr->out;
    size_t blen = (size_t)PyBytes_GET_SIZE(b);
    size_t maxrec = fm_ring_max_record(fm_pool_result_ring(w->h));
    if ((out->len - rr->start) + sizeof(fm_entry_hdr) + fm_pad8(blen) > maxrec) {
        int s = post_result(w, out->p + rr->start, out->len - rr->start);
        if (s != FM_OK)
            return s;
        fm_result_hdr nh = {FM_RES_RESULT, 0, job, task, 0};
        out->len = 0;
        rr->start = 0;
        memcpy(out->p, &nh, sizeof nh);
        out->len = sizeof nh;
    }
    if (fm_buf_reserve(out, sizeof(fm_entry_hdr) + fm_pad8(blen)) < 0) {
        PyErr_NoMemory();
        return FM_PYERR;
    }
    fm_entry_hdr oh = {(uint32_t)blen, oflags};
    memcpy(out->p + out->len, &oh, sizeof oh);
    memcpy(out->p + out->len + sizeof oh, PyBytes_AS_STRING(b), blen);
    out->len += sizeof oh + fm_pad8(blen);
    current_record(rr)->count++;
    return FM_OK;
}

/* ------------------------------------------------------ task timeouts
 *
 * A record with a time limit per task (th->timeout_ns): before each task,
 * the worker writes into its slot which task runs and its deadline (from
 * now); the parent's collector kills the worker once the deadline passed
 * (pool_collect.c's kill_overdue).  Both claim the deadline with a
 * compare-and-swap: the worker, when the task is done, from its value to 0;
 * the parent, from its value to FM_POOL_DEADLINE_KILLED.  Exactly one wins:
 * a task done in time keeps its result, and a worker that lost posts
 * nothing more and waits for its end (the slot then says which task timed
 * out).  Each task's result is posted as soon as it is done, so the tasks
 * of the record done before a timeout keep their results; the parent runs
 * the ones after it again elsewhere. */

static void
timed_start(worker_ctx *w, uint32_t task, uint64_t timeout_ns)
{
    int64_t limit = timeout_ns > (uint64_t)INT64_MAX / 2 ? INT64_MAX / 2 : (int64_t)timeout_ns;
    atomic_store_explicit(&w->slot->running, task, RLX);
    atomic_store_explicit(&w->slot->deadline, fm_now_ns() + limit, SEQ);
}

/* The task is done: FM_OK when it was in time (the deadline is cleared),
 * else wait for the parent's SIGKILL: FM_BROKEN if the owner died
 * meanwhile, FM_PYERR from a signal handler. */
static int
timed_finish(worker_ctx *w)
{
    int64_t d = atomic_load_explicit(&w->slot->deadline, ACQ);
    if (d != FM_POOL_DEADLINE_KILLED &&
        atomic_compare_exchange_strong_explicit(&w->slot->deadline, &d, 0, SEQ, SEQ))
        return FM_OK;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        usleep(10000);
        Py_END_ALLOW_THREADS
        if (PyErr_CheckSignals() < 0)
            return FM_PYERR;
        if (!owner_alive(w))
            return FM_BROKEN;
    }
}

/* Post the result record being built (the tasks done so far) and start the
 * next one at task `next` of job.  A status. */
static int
flush_results(worker_ctx *w, fm_buf *out, size_t *start, uint64_t job, uint32_t next,
              int64_t t0)
{
    fm_result_hdr *rh = (fm_result_hdr *)(out->p + *start);
    int64_t ns = fm_now_ns() - t0;
    rh->aux = ns > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
    int s = post_result(w, out->p + *start, out->len - *start);
    if (s != FM_OK)
        return s;
    fm_result_hdr nh = {FM_RES_RESULT, 0, job, next, 0};
    *start = 0;
    memcpy(out->p, &nh, sizeof nh);
    out->len = sizeof nh;
    return FM_OK;
}

/* Run the tasks of one task record (its header th, then p: the function
 * and the entries, `left` bytes) and post their results; entries too large
 * for a record travel in segments of their own. */
static int
run_batch(worker_ctx *w, const fm_task_hdr *th, const unsigned char *p, size_t left,
          fm_buf *out)
{
    PyObject *f = worker_function(w, p, th->func_len);
    PyObject *fexc = NULL;
    if (f == NULL)
        fexc = fm_exc_take();   /* every entry fails with it */
    int64_t t0 = fm_now_ns();
    fm_result_hdr rh = {FM_RES_RESULT, 0, th->job, th->first, 0};
    result_records rr = {out, 0};
    int s = FM_OK;
    out->len = 0;
    if (fm_buf_reserve(out, sizeof rh) < 0) {
        PyErr_NoMemory();
        s = FM_PYERR;
        goto done;
    }
    memcpy(out->p, &rh, sizeof rh);
    out->len = sizeof rh;
    fm_entry_iter it;
    fm_entry e;
    fm_entry_iter_init(&it, p, left, fm_pad8(th->func_len), th->count);
    for (uint32_t k = 0; fm_entry_next(&it, &e); k++) {
        uint32_t oflags = 0;
        if (th->timeout_ns)
            timed_start(w, th->first + k, th->timeout_ns);
        PyObject *b = entry_outcome(w, f, fexc, th->mode, &e, &oflags);
        if (b == NULL) {
            s = FM_PYERR;
            goto done;
        }
        if (th->timeout_ns && (s = timed_finish(w)) != FM_OK) {
            Py_DECREF(b);
            goto done;
        }
        s = append_outcome(w, &rr, th->job, th->first + k, b, oflags);
        Py_DECREF(b);
        if (s == FM_OK && th->timeout_ns && k + 1 < th->count) {
            /* timed: this task's result goes now (see above) */
            s = flush_results(w, out, &rr.start, th->job, th->first + k + 1, t0);
            t0 = fm_now_ns();
        }
        if (s != FM_OK)
            goto done;
    }
    int64_t ns = fm_now_ns() - t0;
    current_record(&rr)->aux = ns > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
    s = post_result(w, out->p + rr.start, out->len - rr.start);
done:
    Py_XDECREF(fexc);
    return s;
}

/* ------------------------------------------------------------ the loop */

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
    if (h->big_slots != FM_POOL_BIG_SLOTS || h->big_off < slots_end ||
        h->big_off % FM_CACHE_LINE ||
        h->big_off + (uint64_t)FM_POOL_BIG_SLOTS * sizeof(fm_pool_bigslot) > h->task_off)
        return FM_CORRUPT;
    if (fm_ring_check(fm_pool_task_ring(h), h->task_bytes) != FM_OK ||
        fm_ring_check(fm_pool_result_ring(h), h->result_bytes) != FM_OK)
        return FM_CORRUPT;
    return FM_OK;
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

/* Take the next task record (GIL released while waiting; signals run in
 * between).  FM_OK with *rd, FM_BROKEN when the pool or its owner is gone,
 * FM_PYERR from a signal handler, or another status. */
static int
worker_take(worker_ctx *w, fm_ring *tr, fm_ring_read *rd)
{
    int64_t spin = atomic_load_explicit(&fm_spin_ns, RLX);
    for (;;) {
        int s;
        Py_BEGIN_ALLOW_THREADS
        s = fm_ring_take(tr, w->pid, FM_FOREVER, spin, rd);
        Py_END_ALLOW_THREADS
        if (s != FM_EINTR)
            return s;
        if (PyErr_CheckSignals() < 0)
            return FM_PYERR;
        if (!owner_alive(w))
            return FM_BROKEN;
        spin = 0;
    }
}

/* Copy the record out into `in` and say in our slot what we hold before it
 * leaves the ring, so that a crash from here on fails exactly these tasks
 * (a crash before it leaves the record READING in our name: the parent
 * adopts it).  0 with *th, -1 when the record is unusable (released). */
static int
worker_hold(worker_ctx *w, fm_ring *tr, fm_ring_read *rd, fm_buf *in, fm_task_hdr *th)
{
    in->len = 0;
    if (rd->len < sizeof *th || fm_buf_reserve(in, rd->len) < 0) {
        fm_ring_release(tr, rd);
        return -1;
    }
    in->len = rd->len;
    memcpy(in->p, rd->data, rd->len);
    memcpy(th, in->p, sizeof *th);
    if (atomic_load_explicit(&w->h->debug_die_after_take, RLX) &&
        atomic_exchange_explicit(&w->h->debug_die_after_take, 0, RLX))
        raise(SIGKILL);
    atomic_store_explicit(&w->slot->job, th->job, RLX);
    atomic_store_explicit(&w->slot->first, th->first, RLX);
    atomic_store_explicit(&w->slot->count, th->count, RLX);
    atomic_store_explicit(&w->slot->state,
                          th->kind == FM_TASK_EXIT ? FM_SLOT_EXITED : FM_SLOT_BUSY, REL);
    fm_ring_release(tr, rd);
    return 0;
}

/* The loop: take, hold, run, until an EXIT record, maxtasks, the memory
 * limit (maxmem bytes, 0: none), or the owner's death.  Returns a status
 * (FM_PYERR with an exception); *done: tasks run; *retire: left after
 * maxtasks or over maxmem. */
static int
worker_loop(worker_ctx *w, unsigned long long maxtasks, unsigned long long maxmem,
            unsigned long long *done, int *retire)
{
    fm_ring *tr = fm_pool_task_ring(w->h);
    fm_buf in = {0}, out = {0};
    int s = FM_OK;
    int orphan = !watch_owner(w);
    /* the owner gone: start nothing more */
    while (!orphan && owner_alive(w)) {
        fm_ring_read rd;
        fm_task_hdr th;
        s = worker_take(w, tr, &rd);
        if (s != FM_OK)
            break;
        if (worker_hold(w, tr, &rd, &in, &th) < 0)
            continue;
        if (th.kind == FM_TASK_EXIT)
            break;
        if (th.func_len > in.len - sizeof th)
            continue;
        s = run_batch(w, &th, in.p + sizeof th, in.len - sizeof th, &out);
        if (s != FM_OK)
            break;
        *done += th.count;
        atomic_store_explicit(&w->slot->tasks_done, *done, RLX);
        if ((maxtasks && *done >= maxtasks) || over_memory_limit(w, maxmem)) {
            *retire = 1;
            break;
        }
        atomic_store_explicit(&w->slot->state, FM_SLOT_IDLE, REL);
    }
    free(in.p);
    free(out.p);
    return s == FM_BROKEN ? FM_OK : s;      /* the pool is gone: leave quietly */
}

PyObject *
fm_pool_worker_main(fm_state *st, PyObject *name, long slot, unsigned long long maxtasks,
                    PyObject *encode_failure, unsigned long long maxmem)
{
    worker_ctx w = {0};
    w.statm_fd = -1;
    if (worker_attach(name, &w.h, slot) < 0)
        return NULL;
    w.slot = fm_pool_slot_at(w.h, (uint32_t)slot);
    w.big.h = w.h;
    w.pid = fm_self_pid();
    w.encode_failure = encode_failure;
    w.st = st;
    w.dumps = fm_pool_import_attr("pickle", "dumps");
    w.loads = fm_pool_import_attr("pickle", "loads");
    w.func_cache = PyDict_New();
    w.statm_fd = open_statm(maxmem);
    unsigned long long done = 0;
    int retire = 0;
    PyObject *ret = NULL;
    if (w.dumps == NULL || w.loads == NULL || w.func_cache == NULL)
        goto finally;
    atomic_store_explicit(&w.slot->pid, w.pid, RLX);
    atomic_store_explicit(&w.slot->state, FM_SLOT_IDLE, REL);
    int s = worker_loop(&w, maxtasks, maxmem, &done, &retire);
    if (s != FM_OK) {
        if (s != FM_PYERR)
            fm_set_error(s);
        goto finally;
    }
    atomic_store_explicit(&w.slot->state, FM_SLOT_EXITED, REL);
    if (retire) {
        /* Say so, so that the parent starts our replacement now rather than
         * at its next check for dead workers.  The slot is the parent's from
         * here on: it may hand it to the replacement at once. */
        fm_result_hdr rh = {FM_RES_RETIRE, (uint32_t)slot, 0, 0, 0};
        if (post_result(&w, (const unsigned char *)&rh, sizeof rh) == FM_PYERR)
            goto finally;
    }
    ret = PyLong_FromUnsignedLongLong(done);
finally:
    if (w.statm_fd >= 0)
        close(w.statm_fd);
    fm_pool_big_cache_close(st, &w.big, 0);
    free(w.vec.p);
    free(w.fbytes);
    Py_XDECREF(w.func);
    Py_XDECREF(w.func_cache);
    Py_XDECREF(w.dumps);
    Py_XDECREF(w.loads);
    return ret;
}

PyObject *
fm_pool_worker_init_failed(PyObject *name, long slot, PyObject *payload)
{
    worker_ctx w = {0};
    if (worker_attach(name, &w.h, slot) < 0)
        return NULL;
    w.pid = fm_self_pid();
    w.slot = fm_pool_slot_at(w.h, (uint32_t)slot);
    size_t blen = (size_t)PyBytes_GET_SIZE(payload);
    size_t len = sizeof(fm_result_hdr) + sizeof(fm_entry_hdr) + fm_pad8(blen);
    if (len > fm_ring_max_record(fm_pool_result_ring(w.h))) {
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
    memcpy(rec + sizeof rh + sizeof eh, PyBytes_AS_STRING(payload), blen);
    atomic_store_explicit(&w.slot->pid, w.pid, RLX);
    atomic_store_explicit(&w.slot->state, FM_SLOT_INITFAIL, REL);
    int s = post_result(&w, rec, len);
    free(rec);
    if (s != FM_OK && s != FM_BROKEN)
        return fm_set_error(s);
    Py_RETURN_NONE;
}
