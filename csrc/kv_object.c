/* kv_object.c: SharedKV, the Python face of the shared dict and vector of
 * byte strings (core/kv.c); fastmp.managers builds the Manager's dict, list
 * and Namespace proxies on it, encoding keys and values to bytes.
 *
 * Each object is a small shared block (an fm_handle, as the sync objects)
 * holding the kv control block, a random id, and a `closed` flag that the
 * manager's shutdown() sets (destroy()): from then on every call raises
 * BrokenPipeError, the error a stdlib proxy raises once its server is gone.
 *
 * Calls.  Every operation takes the object's lock as one hold (enter /
 * leave): first this process's thread lock (the kv handle is not
 * thread-safe), then the shared mutex, without the GIL when either
 * must wait (FM_BLOCKING: Ctrl-C works, a deadline is honoured).  Inside
 * the hold the kv calls do not wait, so they run with the GIL held and
 * their visitors copy the bytes straight into bytes objects.  begin() /
 * end() make several calls one hold (the proxies' setdefault, update, +=,
 * ...); they nest within one thread.
 *
 * Segments.  The kv layer makes a new data segment when one fills up, in
 * whichever process writes then, and unlinks the one it replaced.  After
 * each call this file compares the generation with the one it saw: the
 * new segment is registered with the resource tracker (fm_segment_made)
 * and the replaced one unregistered (fm_segment_gone), so a program whose
 * processes are all killed leaves nothing in /dev/shm; a process that
 * finds a segment another one made registers it too (its maker may have
 * been killed before it could).  When the last
 * reference of all processes goes, or at destroy(), the data segments are
 * unlinked (fm_kvctl_destroy). */
#include "fastmp.h"
#include "core/kv.h"
#include "kv_encode.h"

#include <errno.h>
#include <string.h>

#define FM_KIND_KV 0x4b560001u
#define KV_UID_BYTES 12
#define KV_TLOCK_SLICE_US (50 * 1000)
#define KV_RESERVED_MAX 4

typedef struct {
    fm_kvctl ctl;
    char uid[2 * KV_UID_BYTES + 1];
    _Atomic uint32_t closed;
    /* Changes so far, for the proxies' read caches: odd while a hold that
     * may change the object is under way (kv_mutating), a new even number
     * once it ends (kv_leave).  A holder killed in between leaves it odd,
     * and caches stand aside until the next change. */
    _Atomic uint64_t version;
} kv_shared;

typedef struct {
    PyObject_HEAD
    fm_handle h;
    kv_shared *sh;
    fm_kvh kh;
    int kh_open;
    PyThread_type_lock tlock;   /* this process's threads, one at a time */
    uint32_t tlock_pid;         /* the process tlock was made in */
    unsigned long owner;        /* thread inside enter/leave */
    int depth;                  /* nesting of enter in that thread */
    int mutating;               /* this hold made `version` odd */
    uint64_t version_before;    /* ... from this (the hold ends at (it | 1) + 3) */
    uint64_t seen_gen;          /* the data segment this process last accounted for */
    char seen_name[FM_SHM_NAME_MAX];
    /* names told to the tracker for kh.new_name during this call (a write
     * may rebuild more than once); settled by kv_settle_names */
    char reserved[KV_RESERVED_MAX][FM_SHM_NAME_MAX];
    int nreserved;
    PyObject *weakreflist;
} FmKVObject;

static fm_state *
kv_state(FmKVObject *self)
{
    return fm_state_of_type(Py_TYPE(self));
}

/* ------------------------------------------------------------- errors */

static PyObject *
kv_closed_error(void)
{
    errno = EPIPE;
    return PyErr_SetFromErrno(PyExc_BrokenPipeError);
}

static PyObject *
kv_error(int status)
{
    switch (status) {
    case FM_NOMEM:
        return PyErr_NoMemory();
    case FM_TIMEOUT:
        PyErr_SetString(PyExc_TimeoutError, "timed out waiting for the shared object's lock");
        return NULL;
    default:
        return fm_set_error(status);
    }
}

/* ------------------------------------------------- segment accounting */

static void
kv_copy_name(char *dst, const char *src)
{
    memcpy(dst, src, FM_SHM_NAME_MAX);
    dst[FM_SHM_NAME_MAX - 1] = '\0';
}

/* Lock held: the names reserved for new data segments (kv_name_next) stay
 * registered if one is the data segment now; the others were not used, or
 * made and replaced within the call (and unlinked by kv.c): the tracker
 * forgets them. */
static void
kv_settle_names(FmKVObject *self)
{
    if (self->nreserved == 0)
        return;
    fm_state *st = kv_state(self);
    const char *current = self->kh.gen != 0 ? self->sh->ctl.names[self->kh.gen & 1] : "";
    for (int i = 0; i < self->nreserved; i++)
        if (st != NULL && strcmp(self->reserved[i], current) != 0)
            fm_segment_name_unused(st, self->reserved[i]);
    self->kh.new_name[0] = '\0';
    self->nreserved = 0;
}

/* Lock held, after a call: a new data segment (made by this process in the
 * call) is registered, the one it replaced unregistered.  -1 when the
 * tracker's hook raised (the call itself is done). */
static int
kv_account(FmKVObject *self)
{
    kv_settle_names(self);
    uint64_t gen = self->kh.gen;
    if (gen == self->seen_gen)
        return 0;
    fm_state *st = kv_state(self);
    if (st == NULL)
        return -1;
    int made_here = gen > self->seen_gen;
    if (self->seen_name[0] && made_here)
        fm_segment_gone(st, self->seen_name);
    self->seen_gen = gen;
    if (gen)
        kv_copy_name(self->seen_name, self->sh->ctl.names[gen & 1]);
    else
        self->seen_name[0] = '\0';
    if (made_here && gen && fm_segment_made(st, self->seen_name) < 0)
        return -1;
    return 0;
}

/* A write that needs a new data segment returns FM_AGAIN (kv.h,
 * caller_names) until it has a name that the resource tracker knows: named
 * here, under the hold, before its file exists, so that a process killed
 * at any point of the write leaves nothing behind.  The name's fate is
 * settled by kv_account.  Returns the write's status (FM_PYERR when the
 * hook raised). */
static int
kv_name_next(FmKVObject *self)
{
    fm_state *st = kv_state(self);
    if (st == NULL)
        return FM_PYERR;
    if (self->nreserved == KV_RESERVED_MAX)
        kv_settle_names(self);
    char name[FM_SHM_NAME_MAX];
    if (fm_segment_name_reserve(st, name) < 0)
        return FM_PYERR;
    memcpy(self->reserved[self->nreserved++], name, FM_SHM_NAME_MAX);
    memcpy(self->kh.new_name, name, FM_SHM_NAME_MAX);
    return FM_OK;
}

#define kv_write(self, st, call)                                                           \
    kv_mutating(self);                                                                     \
    for (;;) {                                                                             \
        (st) = (call);                                                                     \
        if ((st) != FM_AGAIN)                                                              \
            break;                                                                         \
        if (((st) = kv_name_next(self)) != FM_OK)                                          \
            break;                                                                         \
    }

/* ------------------------------------------------------- enter / leave */

/* The thread lock, made in this process (a forked child makes its own: a
 * thread of the parent may have held the inherited one at the fork; that
 * one is left as it is).  -1 with MemoryError. */
static int
kv_tlock_fresh(FmKVObject *self)
{
    PyThread_type_lock lock = PyThread_allocate_lock();
    if (lock == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (self->tlock != NULL && self->tlock_pid == fm_self_pid())
        PyThread_free_lock(self->tlock);
    self->tlock = lock;
    self->tlock_pid = fm_self_pid();
    self->depth = 0;
    self->owner = 0;
    self->kh.held = 0;          /* a parent's hold is not this process's */
    return 0;
}

/* One slice of waiting for the thread lock, GIL released (a PyThread lock
 * is made for that: no Python object is touched): FM_OK, FM_EINTR when the
 * slice ended, FM_TIMEOUT past the deadline. */
static int
tlock_wait_once(PyThread_type_lock lock, int64_t deadline)
{
    int64_t left_us = KV_TLOCK_SLICE_US;
    if (deadline != FM_FOREVER) {
        left_us = (deadline - fm_now_ns()) / 1000;
        if (left_us < 0)
            left_us = 0;
        if (left_us > KV_TLOCK_SLICE_US)
            left_us = KV_TLOCK_SLICE_US;
    }
    if (PyThread_acquire_lock_timed(lock, left_us, 0) == PY_LOCK_ACQUIRED)
        return FM_OK;
    if (deadline != FM_FOREVER && fm_now_ns() >= deadline)
        return FM_TIMEOUT;
    return FM_EINTR;
}

static void
kv_leave(FmKVObject *self)
{
    if (--self->depth > 0)
        return;
    if (self->mutating) {
        /* even again, and new: a cache filled before the change is stale */
        atomic_fetch_add_explicit(&self->sh->version, 1, memory_order_seq_cst);
        self->mutating = 0;
    }
    self->owner = 0;
    fm_kv_end(&self->kh);
    PyThread_release_lock(self->tlock);
}

/* Inside a hold, before a call that may change the object: `version` goes
 * odd (and past every value it had) until the hold ends. */
static void
kv_mutating(FmKVObject *self)
{
    if (self->mutating)
        return;
    uint64_t v = atomic_load_explicit(&self->sh->version, memory_order_relaxed);
    atomic_store_explicit(&self->sh->version, (v | 1) + 2, memory_order_seq_cst);
    self->version_before = v;
    self->mutating = 1;
}

/* Take the object for one hold: 0, 1 on timeout (nothing held), -1 with an
 * exception.  `closed_ok`: go on when the object was destroyed. */
static int
kv_enter(FmKVObject *self, int64_t deadline, int closed_ok)
{
    if (!self->kh_open) {
        PyErr_SetString(PyExc_ValueError, "shared object released");
        return -1;
    }
    if (!closed_ok && atomic_load_explicit(&self->sh->closed, memory_order_acquire)) {
        kv_closed_error();
        return -1;
    }
    unsigned long me = PyThread_get_thread_ident();
    if (self->tlock_pid != fm_self_pid() && kv_tlock_fresh(self) < 0)
        return -1;
    if (self->depth > 0 && self->owner == me) {
        self->depth++;
        return 0;
    }
    int st;
    if (!PyThread_acquire_lock(self->tlock, NOWAIT_LOCK)) {
        FM_BLOCKING(st, ((void)fm_spin, tlock_wait_once(self->tlock, deadline)));
        if (st == FM_TIMEOUT)
            return 1;
        if (st != FM_OK) {
            kv_error(st);
            return -1;
        }
    }
    st = fm_kv_begin(&self->kh, 0);
    if (st == FM_TIMEOUT || st == FM_EINTR) {
        if (deadline == 0)
            st = FM_TIMEOUT;
        else
            FM_BLOCKING(st, ((void)fm_spin, fm_kv_begin(&self->kh, deadline)));
    }
    if (st != FM_OK) {
        PyThread_release_lock(self->tlock);
        if (st == FM_TIMEOUT)
            return 1;
        kv_error(st);
        return -1;
    }
    if (!closed_ok && atomic_load_explicit(&self->sh->closed, memory_order_acquire)) {
        fm_kv_end(&self->kh);
        PyThread_release_lock(self->tlock);
        kv_closed_error();
        return -1;
    }
    self->owner = me;
    self->depth = 1;
    /* A segment made by another process since.  Its maker registered it
     * right after making it, unless it was killed in between: registered
     * again here (the tracker keeps a set: once or twice is the same), so
     * that a crash there leaves nothing behind either. */
    if (self->kh.gen != self->seen_gen) {
        self->seen_gen = self->kh.gen;
        if (self->seen_gen) {
            kv_copy_name(self->seen_name, self->sh->ctl.names[self->seen_gen & 1]);
            fm_state *st = kv_state(self);
            if (st == NULL || fm_segment_made(st, self->seen_name) < 0) {
                kv_leave(self);
                return -1;
            }
        }
        else
            self->seen_name[0] = '\0';
    }
    return 0;
}

/* After a kv call inside a hold: account for segments, leave, and turn a
 * status into a result (NULL with an exception when not FM_OK). */
static int
kv_finish(FmKVObject *self, int status)
{
    int saved = errno;          /* the tracker's hooks must not lose the call's errno */
    int acc = kv_account(self);
    kv_leave(self);
    errno = saved;
    if (status != FM_OK) {
        if (status != FM_PYERR || !PyErr_Occurred())
            kv_error(status);
        return -1;
    }
    return acc;
}

/* Enter with no deadline; -1 with an exception. */
static inline int
kv_enter_forever(FmKVObject *self)
{
    int rc = kv_enter(self, FM_FOREVER, 0);
    return rc == 0 ? 0 : -1;
}

/* The same, for a call that may change the object (see kv_mutating). */
static inline int
kv_enter_to_change(FmKVObject *self)
{
    if (kv_enter_forever(self) < 0)
        return -1;
    kv_mutating(self);
    return 0;
}

/* ----------------------------------------------------------- visitors */

typedef struct {
    PyObject *one;              /* a single value */
    PyObject *key;              /* its key (popitem) */
    PyObject *list;             /* values, keys, or key, value, key, value ... */
    int what;                   /* VISIT_* */
} kv_out;

enum { VISIT_KEYS = 1, VISIT_VALUES = 2, VISIT_ITEMS = 3 };

static int
visit_one(void *arg, const void *key, size_t klen, const void *val, size_t vlen)
{
    kv_out *o = arg;
    o->one = PyBytes_FromStringAndSize(val, (Py_ssize_t)vlen);
    if (o->one == NULL)
        return FM_PYERR;
    if (key != NULL) {
        o->key = PyBytes_FromStringAndSize(key, (Py_ssize_t)klen);
        if (o->key == NULL)
            return FM_PYERR;
    }
    return 0;
}

static int
append_bytes(PyObject *list, const void *p, size_t n)
{
    PyObject *b = PyBytes_FromStringAndSize(p, (Py_ssize_t)n);
    if (b == NULL)
        return -1;
    int rc = PyList_Append(list, b);
    Py_DECREF(b);
    return rc;
}

static int
visit_list(void *arg, const void *key, size_t klen, const void *val, size_t vlen)
{
    kv_out *o = arg;
    if ((o->what & VISIT_KEYS) && key != NULL && append_bytes(o->list, key, klen) < 0)
        return FM_PYERR;
    if ((o->what & VISIT_VALUES) && append_bytes(o->list, val, vlen) < 0)
        return FM_PYERR;
    return 0;
}

static void
out_clear(kv_out *o)
{
    Py_CLEAR(o->one);
    Py_CLEAR(o->key);
    Py_CLEAR(o->list);
}

/* ------------------------------------------------------------ helpers */

static int
as_bytes(PyObject *o, const char **p, Py_ssize_t *n)
{
    if (!PyBytes_Check(o)) {
        PyErr_Format(PyExc_TypeError, "expected bytes, got %.100s", Py_TYPE(o)->tp_name);
        return -1;
    }
    *p = PyBytes_AS_STRING(o);
    *n = PyBytes_GET_SIZE(o);
    return 0;
}

/* A Python index -> int64 (huge ones saturate: out of range either way). */
static int
as_index(PyObject *o, int64_t *i)
{
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (overflow > 0)
        v = INT64_MAX;
    else if (overflow < 0)
        v = INT64_MIN + 1;
    *i = v;
    return 0;
}

static int
as_bound(PyObject *o, int64_t *i)
{
    if (o == NULL || o == Py_None) {
        *i = FM_VEC_NONE;
        return 0;
    }
    PyObject *ix = PyNumber_Index(o);
    if (ix == NULL)
        return -1;
    int rc = as_index(ix, i);
    Py_DECREF(ix);
    return rc;
}

static PyObject *
index_error(const char *what)
{
    PyErr_SetString(PyExc_IndexError, what);
    return NULL;
}

/* ------------------------------------------------------- life and state */

#define KV_OF(hp) ((FmKVObject *)((char *)(hp) - offsetof(FmKVObject, h)))

/* Unlink the data segments a control block names, telling the tracker of
 * the current one (the others are a dead holder's leftovers). */
static void
kv_unlink_data(fm_state *st, kv_shared *sh)
{
    uint64_t s = atomic_load_explicit(&sh->ctl.state, memory_order_acquire);
    uint64_t gen = s >> 2;
    char name[FM_SHM_NAME_MAX];
    for (int i = 0; i < 2; i++) {
        kv_copy_name(name, sh->ctl.names[i]);
        if (name[0] && shm_unlink(name) == 0 && gen && (uint64_t)i == (gen & 1))
            fm_segment_gone(st, name);
    }
    fm_kvctl_destroy(&sh->ctl);
}

static void
kv_before_last_release(fm_handle *h)
{
    FmKVObject *self = KV_OF(h);
    kv_shared *sh = h->ptr;
    PyObject *exc = fm_exc_take();
    fm_state *st = fm_state_of_type(Py_TYPE(self));
    if (st == NULL)
        PyErr_Clear();
    if (!atomic_load_explicit(&sh->closed, memory_order_acquire))
        kv_unlink_data(st, sh);
    fm_exc_restore(exc);
}

static int
kv_init_object(FmKVObject *self)
{
    self->sh = self->h.ptr;
    self->h.before_last_release = kv_before_last_release;
    if (kv_tlock_fresh(self) < 0)
        return -1;
    if (fm_kvh_open(&self->kh, &self->sh->ctl) != FM_OK) {
        fm_set_error(FM_CORRUPT);
        return -1;
    }
    self->kh.caller_names = 1;      /* named before made: see kv_write */
    self->kh_open = 1;
    return 0;
}

static PyObject *
KV_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"kind", NULL};
    int kind;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "i:SharedKV", kwlist, &kind))
        return NULL;
    if (kind != FM_KV_DICT && kind != FM_KV_VEC) {
        PyErr_SetString(PyExc_ValueError, "kind must be SharedKV.DICT or SharedKV.LIST");
        return NULL;
    }
    fm_state *st = fm_state_of_type(type);
    if (st == NULL)
        return NULL;
    FmKVObject *self = (FmKVObject *)fm_shared_new(st, type, offsetof(FmKVObject, h),
                                                    sizeof(kv_shared), FM_KIND_KV);
    if (self == NULL)
        return NULL;
    kv_shared *sh = self->h.ptr;
    fm_kvctl_init(&sh->ctl, (uint32_t)kind);
    if (fm_random_hex(sh->uid, KV_UID_BYTES) != FM_OK) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(self);
        return NULL;
    }
    atomic_store_explicit(&sh->closed, 0, memory_order_release);
    if (kv_init_object(self) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void
KV_dealloc(PyObject *op)
{
    FmKVObject *self = (FmKVObject *)op;
    fm_dealloc_begin(op);
    if (self->kh_open) {
        if (self->tlock_pid != fm_self_pid())
            self->kh.held = 0;
        fm_kvh_close(&self->kh);
        self->kh_open = 0;
    }
    fm_handle_release(&self->h);
    if (self->tlock != NULL && self->tlock_pid == fm_self_pid())
        PyThread_free_lock(self->tlock);
    self->tlock = NULL;
    fm_dealloc_end(op);
}

PyDoc_STRVAR(KV_state_doc,
"_fm_state($self, /)\n--\n\n"
"(segment, offset, id): what any process of this user needs to attach the object.");

static PyObject *
KV_state(PyObject *op, PyObject *const *Py_UNUSED(args), Py_ssize_t nargs)
{
    FmKVObject *self = (FmKVObject *)op;
    if (fm_no_args("_fm_state", nargs) < 0)
        return NULL;
    /* (a destroyed object pickles too, as a stdlib proxy whose server is
     * gone: attaching it raises) */
    return Py_BuildValue("(NKs)", fm_handle_name(&self->h),
                         (unsigned long long)self->h.offset, self->sh->uid);
}

PyDoc_STRVAR(KV_attach_doc, FM_ATTACH_DOC);

static PyObject *
KV_attach(PyObject *type, PyObject *state)
{
    PyTypeObject *tp = (PyTypeObject *)type;
    if (fm_check_state(state, 3, 1) < 0)
        return NULL;
    PyObject *uid = PyTuple_GET_ITEM(state, 2);
    if (!PyUnicode_Check(uid)) {
        PyErr_SetString(PyExc_TypeError, "_fm_attach() needs the id _fm_state() returned");
        return NULL;
    }
    fm_state *st = fm_state_of_type(tp);
    if (st == NULL)
        return NULL;
    FmKVObject *self = (FmKVObject *)fm_attach_new(st, tp, state, offsetof(FmKVObject, h),
                                                   FM_KIND_KV);
    if (self == NULL)
        return NULL;
    kv_shared *sh = self->h.ptr;
    self->sh = sh;
    const char *want = PyUnicode_AsUTF8(uid);
    if (want == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    /* a block freed since (its manager shut down) and maybe reused */
    if (strncmp(want, sh->uid, sizeof sh->uid) != 0 ||
        atomic_load_explicit(&sh->closed, memory_order_acquire)) {
        Py_DECREF(self);
        errno = ENOENT;
        return PyErr_SetFromErrno(PyExc_FileNotFoundError);
    }
    if (kv_init_object(self) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

PyDoc_STRVAR(KV_destroy_doc,
"destroy($self, /)\n--\n\n"
"Free the data now, for every process (the manager's shutdown()): from then on\n"
"every call raises BrokenPipeError, and attaching raises FileNotFoundError.");

static PyObject *
KV_destroy(PyObject *op, PyObject *const *Py_UNUSED(args), Py_ssize_t nargs)
{
    FmKVObject *self = (FmKVObject *)op;
    if (fm_no_args("destroy", nargs) < 0)
        return NULL;
    if (atomic_load_explicit(&self->sh->closed, memory_order_acquire))
        Py_RETURN_NONE;
    if (kv_enter(self, FM_FOREVER, 1) != 0)
        return NULL;
    kv_mutating(self);      /* every cache goes stale: reads raise from now on */
    fm_state *st = kv_state(self);
    if (st == NULL) {
        kv_leave(self);
        return NULL;
    }
    if (!atomic_load_explicit(&self->sh->closed, memory_order_acquire)) {
        atomic_store_explicit(&self->sh->closed, 1, memory_order_release);
        kv_unlink_data(st, self->sh);
    }
    self->seen_gen = 0;
    self->seen_name[0] = '\0';
    if (self->depth == 1) {
        /* this process's mapping of the unlinked data goes now, not with
         * the last proxy (nothing uses it again: every call raises) */
        fm_kv_end(&self->kh);
        fm_kvh_close(&self->kh);
        if (fm_kvh_open(&self->kh, &self->sh->ctl) != FM_OK)
            self->kh_open = 0;
        self->kh.caller_names = 1;
    }
    kv_leave(self);
    Py_RETURN_NONE;
}

static PyObject *
KV_get_closed(PyObject *op, void *Py_UNUSED(closure))
{
    FmKVObject *self = (FmKVObject *)op;
    return PyBool_FromLong(atomic_load_explicit(&self->sh->closed, memory_order_acquire) != 0);
}

static PyObject *
KV_get_kind(PyObject *op, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLong(((FmKVObject *)op)->sh->ctl.kind);
}

static PyObject *
KV_get_generation(PyObject *op, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(fm_kv_generation(&((FmKVObject *)op)->sh->ctl));
}

static PyObject *
KV_get_segment(PyObject *op, void *Py_UNUSED(closure))
{
    FmKVObject *self = (FmKVObject *)op;
    if (self->seen_name[0] == '\0')
        Py_RETURN_NONE;
    return PyUnicode_DecodeFSDefault(self->seen_name);
}

/* ------------------------------------------------------------ batching */

PyDoc_STRVAR(KV_begin_doc,
"begin($self, /, timeout=None)\n--\n\n"
"Hold the object's lock until end(), so that several calls act as one (they nest\n"
"within a thread).  False when the timeout passed first.");

static PyObject *
KV_begin(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *timeout;
    int64_t deadline;
    if (fm_parse_timeout_arg("begin", args, nargs, kwnames, &timeout) < 0 ||
        fm_timeout_to_deadline(timeout, &deadline) < 0)
        return NULL;
    int rc = kv_enter((FmKVObject *)op, deadline, 0);
    if (rc < 0)
        return NULL;
    return PyBool_FromLong(rc == 0);
}

PyDoc_STRVAR(KV_end_doc,
"end($self, /)\n--\n\n"
"Leave what begin() entered.");

static PyObject *
KV_end(PyObject *op, PyObject *const *Py_UNUSED(args), Py_ssize_t nargs)
{
    FmKVObject *self = (FmKVObject *)op;
    if (fm_no_args("end", nargs) < 0)
        return NULL;
    if (self->depth <= 0 || self->owner != PyThread_get_thread_ident()) {
        PyErr_SetString(PyExc_RuntimeError, "end() without begin() in this thread");
        return NULL;
    }
    int acc = kv_account(self);
    kv_leave(self);
    if (acc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------- both kinds */

PyDoc_STRVAR(KV_size_doc, "size($self, /)\n--\n\nThe number of items.");

static PyObject *
KV_size(PyObject *op, PyObject *const *Py_UNUSED(args), Py_ssize_t nargs)
{
    FmKVObject *self = (FmKVObject *)op;
    if (fm_no_args("size", nargs) < 0 || kv_enter_forever(self) < 0)
        return NULL;
    uint64_t n = 0;
    int st = self->sh->ctl.kind == FM_KV_DICT ? fm_dict_len(&self->kh, FM_FOREVER, &n)
                                              : fm_vec_len(&self->kh, FM_FOREVER, &n);
    if (kv_finish(self, st) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(n);
}

PyDoc_STRVAR(KV_clear_doc, "clear($self, /)\n--\n\nRemove every item.");

static PyObject *
KV_clear(PyObject *op, PyObject *const *Py_UNUSED(args), Py_ssize_t nargs)
{
    FmKVObject *self = (FmKVObject *)op;
    if (fm_no_args("clear", nargs) < 0 || kv_enter_to_change(self) < 0)
        return NULL;
    int st = self->sh->ctl.kind == FM_KV_DICT ? fm_dict_clear(&self->kh, FM_FOREVER)
                                              : fm_vec_clear(&self->kh, FM_FOREVER);
    if (kv_finish(self, st) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(KV_check_doc,
"check($self, /)\n--\n\nVerify the whole shared structure (RuntimeError if corrupt).");

static PyObject *
KV_check(PyObject *op, PyObject *const *Py_UNUSED(args), Py_ssize_t nargs)
{
    FmKVObject *self = (FmKVObject *)op;
    if (fm_no_args("check", nargs) < 0 || kv_enter_forever(self) < 0)
        return NULL;
    if (kv_finish(self, fm_kv_check(&self->kh, FM_FOREVER)) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------- dict */

/* (key) for the dict calls that take one */
static int
one_key(const char *fname, PyObject *const *args, Py_ssize_t nargs, const char **k,
        Py_ssize_t *kn)
{
    if (fm_check_nargs(fname, nargs, 1, 1) < 0)
        return -1;
    return as_bytes(args[0], k, kn);
}

PyDoc_STRVAR(KV_dict_get_doc,
"dict_get($self, key, /)\n--\n\nThe value's bytes, or None when the key is not there.");

/* get and pop: the value's bytes, or None when the key is not there */
typedef int (*dict_lookup_fn)(fm_kvh *, const void *, size_t, int64_t, fm_kv_visit, void *,
                              int *);

static PyObject *
dict_lookup(PyObject *op, PyObject *const *args, Py_ssize_t nargs, const char *name,
            dict_lookup_fn lookup)
{
    FmKVObject *self = (FmKVObject *)op;
    const char *k;
    Py_ssize_t kn;
    if (one_key(name, args, nargs, &k, &kn) < 0 || kv_enter_forever(self) < 0)
        return NULL;
    if (lookup == fm_dict_pop)
        kv_mutating(self);
    kv_out o = {0};
    int found = 0;
    int st = lookup(&self->kh, k, (size_t)kn, FM_FOREVER, visit_one, &o, &found);
    if (kv_finish(self, st) < 0) {
        out_clear(&o);
        return NULL;
    }
    if (!found)
        Py_RETURN_NONE;
    return o.one;
}

static PyObject *
KV_dict_get(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return dict_lookup(op, args, nargs, "dict_get", fm_dict_get);
}

PyDoc_STRVAR(KV_dict_contains_doc, "dict_contains($self, key, /)\n--\n\nWhether the key is there.");

static PyObject *
KV_dict_contains(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    FmKVObject *self = (FmKVObject *)op;
    const char *k;
    Py_ssize_t kn;
    if (one_key("dict_contains", args, nargs, &k, &kn) < 0 || kv_enter_forever(self) < 0)
        return NULL;
    int found = 0;
    if (kv_finish(self, fm_dict_contains(&self->kh, k, (size_t)kn, FM_FOREVER, &found)) < 0)
        return NULL;
    return PyBool_FromLong(found);
}

PyDoc_STRVAR(KV_dict_set_doc,
"dict_set($self, key, value, /)\n--\n\n"
"Insert or replace (the key keeps its place).  Returns the version the object had\n"
"before (it has (that | 1) + 3 after), or None inside begin()/end(), where other\n"
"changes of the same hold come after it.");

/* dict_set's body, on encoded key and value */
static PyObject *
dict_set_bytes(FmKVObject *self, const char *k, Py_ssize_t kn, const char *v, Py_ssize_t vn)
{
    if (kv_enter_forever(self) < 0)
        return NULL;
    int alone = self->depth == 1;
    int st;
    kv_write(self, st, fm_dict_set(&self->kh, k, (size_t)kn, v, (size_t)vn, FM_FOREVER));
    uint64_t before = self->version_before;
    if (kv_finish(self, st) < 0)
        return NULL;
    if (!alone)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong(before);
}

static PyObject *
KV_dict_set(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    const char *k, *v;
    Py_ssize_t kn, vn;
    if (fm_check_nargs("dict_set", nargs, 2, 2) < 0 || as_bytes(args[0], &k, &kn) < 0 ||
        as_bytes(args[1], &v, &vn) < 0)
        return NULL;
    return dict_set_bytes((FmKVObject *)op, k, kn, v, vn);
}

PyDoc_STRVAR(KV_dict_set_plain_doc,
"dict_set_plain($self, key, value, /)\n--\n\n"
"dict_set() of a str or int key and a plain value (None, bool, int, float, str,\n"
"bytes), encoded here as the proxies encode them (see csrc/kv_encode.h); the\n"
"same result, or NotImplemented when key or value is not one of those.");

static PyObject *
KV_dict_set_plain(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    if (fm_check_nargs("dict_set_plain", nargs, 2, 2) < 0)
        return NULL;
    fm_kv_buf kb, vb;
    int r = fm_kv_plain_key(args[0], &kb);
    if (r > 0) {
        r = fm_kv_plain_value(args[1], &vb);
        if (r <= 0)
            fm_kv_buf_release(&kb);
    }
    if (r <= 0) {
        if (r < 0)
            return NULL;
        Py_RETURN_NOTIMPLEMENTED;
    }
    PyObject *res = dict_set_bytes((FmKVObject *)op, kb.p, kb.n, vb.p, vb.n);
    fm_kv_buf_release(&kb);
    fm_kv_buf_release(&vb);
    return res;
}

PyDoc_STRVAR(KV_encode_plain_doc,
"encode_plain(obj, key=False)\n--\n\n"
"What dict_set_plain stores for obj as a value (or, with key=True, as a key): bytes,\n"
"or None when obj is not plain.");

static PyObject *
KV_encode_plain(PyObject *Py_UNUSED(cls), PyObject *const *args, Py_ssize_t nargs,
                PyObject *kwnames)
{
    static const char *const names[] = {"obj", "key"};
    PyObject *argv[2];
    if (fm_parse_args("encode_plain", args, nargs, kwnames, names, 2, 1, argv) < 0)
        return NULL;
    PyObject *obj = argv[0];
    int key = argv[1] != NULL ? PyObject_IsTrue(argv[1]) : 0;
    if (key < 0)
        return NULL;
    fm_kv_buf b;
    int r = key ? fm_kv_plain_key(obj, &b) : fm_kv_plain_value(obj, &b);
    if (r <= 0) {
        if (r < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    PyObject *out = PyBytes_FromStringAndSize(b.p, b.n);
    fm_kv_buf_release(&b);
    return out;
}

PyDoc_STRVAR(KV_pickle_bytes_doc,
"pickle_bytes(data, /)\n--\n\n"
"pickle.dumps(data, 5) of a bytes object (the same bytes from 64 KiB on, where pickle\n"
"writes no frame; a valid pickle of it below), made in one allocation of its exact size.\n"
"pickle.dumps grows its buffer while it copies, and the C library maps each big buffer\n"
"afresh: every page of a 1 MiB value faults, each time.");

static PyObject *
KV_pickle_bytes(PyObject *Py_UNUSED(cls), PyObject *data)
{
    if (!PyBytes_CheckExact(data)) {
        PyErr_Format(PyExc_TypeError, "expected bytes, got %.100s", Py_TYPE(data)->tp_name);
        return NULL;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    int wide = (uint64_t)n > 0xffffffffu;   /* BINBYTES8 past 4 GiB, as pickle does */
    Py_ssize_t head = 3 + (wide ? 8 : 4);
    if (n > PY_SSIZE_T_MAX - head - 2)
        return PyErr_NoMemory();
    PyObject *out = PyBytes_FromStringAndSize(NULL, head + n + 2);
    if (out == NULL)
        return NULL;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(out);
    p[0] = 0x80;                            /* PROTO 5 */
    p[1] = 5;
    p[2] = wide ? 0x8e : 'B';               /* BINBYTES8 / BINBYTES, little-endian length */
    for (Py_ssize_t i = 0; i < head - 3; i++)
        p[3 + i] = (unsigned char)((uint64_t)n >> (8 * i));
    memcpy(p + head, PyBytes_AS_STRING(data), (size_t)n);
    p[head + n] = 0x94;                     /* MEMOIZE, as pickle.dumps writes it */
    p[head + n + 1] = '.';                  /* STOP */
    return out;
}

PyDoc_STRVAR(KV_dict_delete_doc,
"dict_delete($self, key, /)\n--\n\nRemove the key; whether it was there.");

static PyObject *
KV_dict_delete(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    FmKVObject *self = (FmKVObject *)op;
    const char *k;
    Py_ssize_t kn;
    if (one_key("dict_delete", args, nargs, &k, &kn) < 0 || kv_enter_to_change(self) < 0)
        return NULL;
    int found = 0;
    if (kv_finish(self, fm_dict_delete(&self->kh, k, (size_t)kn, FM_FOREVER, &found)) < 0)
        return NULL;
    return PyBool_FromLong(found);
}

PyDoc_STRVAR(KV_dict_pop_doc,
"dict_pop($self, key, /)\n--\n\nRemove the key and return its value's bytes (None: not there).");

static PyObject *
KV_dict_pop(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return dict_lookup(op, args, nargs, "dict_pop", fm_dict_pop);
}

PyDoc_STRVAR(KV_dict_popitem_doc,
"dict_popitem($self, /)\n--\n\nRemove the last inserted item: (key, value) bytes, or None.");

static PyObject *
KV_dict_popitem(PyObject *op, PyObject *const *Py_UNUSED(args), Py_ssize_t nargs)
{
    FmKVObject *self = (FmKVObject *)op;
    if (fm_no_args("dict_popitem", nargs) < 0 || kv_enter_to_change(self) < 0)
        return NULL;
    kv_out o = {0};
    int found = 0;
    int st = fm_dict_popitem(&self->kh, FM_FOREVER, visit_one, &o, &found);
    if (kv_finish(self, st) < 0) {
        out_clear(&o);
        return NULL;
    }
    if (!found)
        Py_RETURN_NONE;
    return Py_BuildValue("(NN)", o.key, o.one);
}

static PyObject *
dict_walk(FmKVObject *self, const char *fname, Py_ssize_t nargs, int what)
{
    if (fm_no_args(fname, nargs) < 0)
        return NULL;
    kv_out o = {0};
    o.what = what;
    if ((o.list = PyList_New(0)) == NULL)
        return NULL;
    if (kv_enter_forever(self) < 0) {
        out_clear(&o);
        return NULL;
    }
    if (kv_finish(self, fm_dict_foreach(&self->kh, FM_FOREVER, visit_list, &o)) < 0) {
        out_clear(&o);
        return NULL;
    }
    return o.list;
}

PyDoc_STRVAR(KV_dict_keys_doc, "dict_keys($self, /)\n--\n\nThe keys' bytes in order.");

static PyObject *
KV_dict_keys(PyObject *op, PyObject *const *Py_UNUSED(args), Py_ssize_t nargs)
{
    return dict_walk((FmKVObject *)op, "dict_keys", nargs, VISIT_KEYS);
}

PyDoc_STRVAR(KV_dict_values_doc, "dict_values($self, /)\n--\n\nThe values' bytes in order.");

static PyObject *
KV_dict_values(PyObject *op, PyObject *const *Py_UNUSED(args), Py_ssize_t nargs)
{
    return dict_walk((FmKVObject *)op, "dict_values", nargs, VISIT_VALUES);
}

PyDoc_STRVAR(KV_dict_items_doc,
"dict_items($self, /)\n--\n\nkey, value, key, value, ... bytes in order (one flat list).");

static PyObject *
KV_dict_items(PyObject *op, PyObject *const *Py_UNUSED(args), Py_ssize_t nargs)
{
    return dict_walk((FmKVObject *)op, "dict_items", nargs, VISIT_ITEMS);
}

/* -------------------------------------------------------------- vector */

PyDoc_STRVAR(KV_list_get_doc, "list_get($self, index, /)\n--\n\nItem `index`'s bytes.");

static PyObject *
KV_list_get(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    FmKVObject *self = (FmKVObject *)op;
    int64_t i;
    if (fm_check_nargs("list_get", nargs, 1, 1) < 0 || as_index(args[0], &i) < 0 ||
        kv_enter_forever(self) < 0)
        return NULL;
    kv_out o = {0};
    int st = fm_vec_get(&self->kh, i, FM_FOREVER, visit_one, &o);
    if (st == FM_OVERFLOW) {
        kv_finish(self, FM_OK);
        return index_error("list index out of range");
    }
    if (kv_finish(self, st) < 0) {
        out_clear(&o);
        return NULL;
    }
    return o.one;
}

PyDoc_STRVAR(KV_list_set_doc, "list_set($self, index, value, /)\n--\n\nReplace item `index`.");

static PyObject *
KV_list_set(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    FmKVObject *self = (FmKVObject *)op;
    int64_t i;
    const char *v;
    Py_ssize_t vn;
    if (fm_check_nargs("list_set", nargs, 2, 2) < 0 || as_index(args[0], &i) < 0 ||
        as_bytes(args[1], &v, &vn) < 0 || kv_enter_forever(self) < 0)
        return NULL;
    int st;
    kv_write(self, st, fm_vec_set(&self->kh, i, v, (size_t)vn, FM_FOREVER));
    if (st == FM_OVERFLOW) {
        kv_finish(self, FM_OK);
        return index_error("list assignment index out of range");
    }
    if (kv_finish(self, st) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(KV_list_insert_doc,
"list_insert($self, index, value, /)\n--\n\nInsert before `index` (clamped, as list.insert).");

static PyObject *
KV_list_insert(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    FmKVObject *self = (FmKVObject *)op;
    int64_t i;
    const char *v;
    Py_ssize_t vn;
    if (fm_check_nargs("list_insert", nargs, 2, 2) < 0 || as_index(args[0], &i) < 0 ||
        as_bytes(args[1], &v, &vn) < 0 || kv_enter_forever(self) < 0)
        return NULL;
    int st;
    kv_write(self, st, fm_vec_insert(&self->kh, i, v, (size_t)vn, FM_FOREVER));
    if (kv_finish(self, st) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(KV_list_delete_doc, "list_delete($self, index, /)\n--\n\nRemove item `index`.");

static PyObject *
KV_list_delete(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    FmKVObject *self = (FmKVObject *)op;
    int64_t i;
    if (fm_check_nargs("list_delete", nargs, 1, 1) < 0 || as_index(args[0], &i) < 0 ||
        kv_enter_to_change(self) < 0)
        return NULL;
    int st = fm_vec_delete(&self->kh, i, FM_FOREVER);
    if (st == FM_OVERFLOW) {
        kv_finish(self, FM_OK);
        return index_error("list assignment index out of range");
    }
    if (kv_finish(self, st) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(KV_list_pop_doc,
"list_pop($self, index=-1, /)\n--\n\nRemove item `index` and return its bytes.");

static PyObject *
KV_list_pop(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    FmKVObject *self = (FmKVObject *)op;
    int64_t i = -1;
    if (fm_check_nargs("list_pop", nargs, 0, 1) < 0 || (nargs && as_index(args[0], &i) < 0) ||
        kv_enter_to_change(self) < 0)
        return NULL;
    kv_out o = {0};
    uint64_t n = 0;
    int st = fm_vec_len(&self->kh, FM_FOREVER, &n);
    if (st == FM_OK && n == 0) {
        kv_finish(self, FM_OK);
        return index_error("pop from empty list");
    }
    if (st == FM_OK)
        st = fm_vec_pop(&self->kh, i, FM_FOREVER, visit_one, &o);
    if (st == FM_OVERFLOW) {
        kv_finish(self, FM_OK);
        return index_error("pop index out of range");
    }
    if (kv_finish(self, st) < 0) {
        out_clear(&o);
        return NULL;
    }
    return o.one;
}

PyDoc_STRVAR(KV_list_append_doc, "list_append($self, value, /)\n--\n\nAdd at the end.");

static PyObject *
KV_list_append(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    FmKVObject *self = (FmKVObject *)op;
    const char *v;
    Py_ssize_t vn;
    if (fm_check_nargs("list_append", nargs, 1, 1) < 0 || as_bytes(args[0], &v, &vn) < 0 ||
        kv_enter_forever(self) < 0)
        return NULL;
    int st;
    kv_write(self, st, fm_vec_append(&self->kh, v, (size_t)vn, FM_FOREVER));
    if (kv_finish(self, st) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* extend / replace: a list or tuple of bytes, all or none */
static PyObject *
list_many(FmKVObject *self, const char *fname, PyObject *const *args, Py_ssize_t nargs,
          int replace)
{
    if (fm_check_nargs(fname, nargs, 1, 1) < 0)
        return NULL;
    PyObject *seq = PySequence_Fast(args[0], "expected a sequence of bytes");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    const void **vals = PyMem_Malloc(sizeof(void *) * (size_t)(n ? n : 1));
    size_t *lens = PyMem_Malloc(sizeof(size_t) * (size_t)(n ? n : 1));
    PyObject *res = NULL;
    if (vals == NULL || lens == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *p;
        Py_ssize_t len;
        if (as_bytes(PySequence_Fast_GET_ITEM(seq, i), &p, &len) < 0)
            goto done;
        vals[i] = p;
        lens[i] = (size_t)len;
    }
    if (kv_enter_forever(self) < 0)
        goto done;
    int st;
    kv_write(self, st,
             replace ? fm_vec_replace(&self->kh, (size_t)n, vals, lens, FM_FOREVER)
                     : fm_vec_extend(&self->kh, (size_t)n, vals, lens, FM_FOREVER));
    if (kv_finish(self, st) < 0)
        goto done;
    res = Py_NewRef(Py_None);
done:
    PyMem_Free(vals);
    PyMem_Free(lens);
    Py_DECREF(seq);
    return res;
}

PyDoc_STRVAR(KV_list_extend_doc,
"list_extend($self, values, /)\n--\n\nAppend a sequence of bytes (all or none).");

static PyObject *
KV_list_extend(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return list_many((FmKVObject *)op, "list_extend", args, nargs, 0);
}

PyDoc_STRVAR(KV_list_replace_doc,
"list_replace($self, values, /)\n--\n\nReplace the whole contents (all or none).");

static PyObject *
KV_list_replace(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return list_many((FmKVObject *)op, "list_replace", args, nargs, 1);
}

PyDoc_STRVAR(KV_list_slice_doc,
"list_slice($self, start=None, stop=None, step=None, /)\n--\n\n"
"The bytes of the items of [start:stop:step], in one hold.");

static PyObject *
KV_list_slice(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    FmKVObject *self = (FmKVObject *)op;
    int64_t b[3] = {FM_VEC_NONE, FM_VEC_NONE, FM_VEC_NONE};
    if (fm_check_nargs("list_slice", nargs, 0, 3) < 0)
        return NULL;
    for (Py_ssize_t i = 0; i < nargs; i++)
        if (as_bound(args[i], &b[i]) < 0)
            return NULL;
    int64_t step = b[2] == FM_VEC_NONE ? 1 : b[2];
    if (step == 0) {
        PyErr_SetString(PyExc_ValueError, "slice step cannot be zero");
        return NULL;
    }
    kv_out o = {0};
    o.what = VISIT_VALUES;
    if ((o.list = PyList_New(0)) == NULL)
        return NULL;
    if (kv_enter_forever(self) < 0) {
        out_clear(&o);
        return NULL;
    }
    int st = fm_vec_slice(&self->kh, b[0], b[1], step, FM_FOREVER, visit_list, &o);
    if (kv_finish(self, st) < 0) {
        out_clear(&o);
        return NULL;
    }
    return o.list;
}

PyDoc_STRVAR(KV_list_reverse_doc, "list_reverse($self, /)\n--\n\nReverse in place.");

static PyObject *
KV_list_reverse(PyObject *op, PyObject *const *Py_UNUSED(args), Py_ssize_t nargs)
{
    FmKVObject *self = (FmKVObject *)op;
    if (fm_no_args("list_reverse", nargs) < 0 || kv_enter_to_change(self) < 0)
        return NULL;
    if (kv_finish(self, fm_vec_reverse(&self->kh, FM_FOREVER)) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* -------------------------------------------------------- registration */

#define KV_METH(name, flags) {#name, (PyCFunction)(void (*)(void))KV_##name, flags, KV_##name##_doc}

static PyMethodDef KV_methods[] = {
    KV_METH(size, METH_FASTCALL),
    KV_METH(clear, METH_FASTCALL),
    KV_METH(check, METH_FASTCALL),
    KV_METH(begin, METH_FASTCALL | METH_KEYWORDS),
    KV_METH(end, METH_FASTCALL),
    KV_METH(destroy, METH_FASTCALL),
    KV_METH(dict_get, METH_FASTCALL),
    KV_METH(dict_contains, METH_FASTCALL),
    KV_METH(dict_set, METH_FASTCALL),
    KV_METH(dict_set_plain, METH_FASTCALL),
    KV_METH(encode_plain, METH_FASTCALL | METH_KEYWORDS | METH_STATIC),
    KV_METH(pickle_bytes, METH_O | METH_STATIC),
    KV_METH(dict_delete, METH_FASTCALL),
    KV_METH(dict_pop, METH_FASTCALL),
    KV_METH(dict_popitem, METH_FASTCALL),
    KV_METH(dict_keys, METH_FASTCALL),
    KV_METH(dict_values, METH_FASTCALL),
    KV_METH(dict_items, METH_FASTCALL),
    KV_METH(list_get, METH_FASTCALL),
    KV_METH(list_set, METH_FASTCALL),
    KV_METH(list_insert, METH_FASTCALL),
    KV_METH(list_delete, METH_FASTCALL),
    KV_METH(list_pop, METH_FASTCALL),
    KV_METH(list_append, METH_FASTCALL),
    KV_METH(list_extend, METH_FASTCALL),
    KV_METH(list_replace, METH_FASTCALL),
    KV_METH(list_slice, METH_FASTCALL),
    KV_METH(list_reverse, METH_FASTCALL),
    {"_fm_state", (PyCFunction)(void (*)(void))KV_state, METH_FASTCALL, KV_state_doc},
    {"_fm_attach", KV_attach, METH_O | METH_CLASS, KV_attach_doc},
    {NULL, NULL, 0, NULL},
};

static PyObject *
KV_get_version(PyObject *op, void *Py_UNUSED(closure))
{
    FmKVObject *self = (FmKVObject *)op;
    return PyLong_FromUnsignedLongLong(
        atomic_load_explicit(&self->sh->version, memory_order_seq_cst));
}

static PyGetSetDef KV_getset[] = {
    {"closed", KV_get_closed, NULL, "Whether destroy() ran (in any process).", NULL},
    {"kind", KV_get_kind, NULL, "SharedKV.DICT or SharedKV.LIST.", NULL},
    {"version", KV_get_version, NULL,
     "Changes so far (any process): odd while one may be under way, a new even number\n"
     "after each.  A value read while it stays the same even number is still current.", NULL},
    {"generation", KV_get_generation, NULL,
     "The data segment's generation (0: none yet); it grows as the data does.", NULL},
    {"segment", KV_get_segment, NULL,
     "The name of the data segment as of this process's last call (None: none yet).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

FM_WEAKREF_MEMBERS(FmKVObject);

static PyType_Slot KV_slots[] = {
    {Py_tp_new, KV_new},
    {Py_tp_dealloc, KV_dealloc},
    {Py_tp_methods, KV_methods},
    {Py_tp_getset, KV_getset},
    {Py_tp_members, FmKVObject_members},
    {Py_tp_doc, "SharedKV(kind)\n--\n\n"
                "A shared dict (kind SharedKV.DICT) or list (SharedKV.LIST) of byte strings,\n"
                "every operation run in the calling process; any process of this user can\n"
                "attach it (_fm_state / _fm_attach).  The Manager's proxies encode keys and\n"
                "values."},
    {0, NULL},
};

static PyType_Spec KV_spec = {
    .name = "fastmp._core.SharedKV",
    .basicsize = sizeof(FmKVObject),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = KV_slots,
};

int
fm_kv_add_types(PyObject *module, fm_state *st)
{
    if (fm_add_type(module, &KV_spec, NULL, &st->SharedKVType) < 0)
        return -1;
    PyObject *tp = (PyObject *)st->SharedKVType;
    PyObject *dict_kind = PyLong_FromLong(FM_KV_DICT), *list_kind = PyLong_FromLong(FM_KV_VEC);
    int rc = -1;
    if (dict_kind != NULL && list_kind != NULL &&
        PyObject_SetAttrString(tp, "DICT", dict_kind) == 0 &&
        PyObject_SetAttrString(tp, "LIST", list_kind) == 0)
        rc = 0;
    Py_XDECREF(dict_kind);
    Py_XDECREF(list_kind);
    return rc;
}
