/* sync.c: Lock, RLock, Semaphore, Condition, Event and Barrier, living in
 * shared blocks, on the GIL-free primitives of prims.c.
 *
 * The pattern of every blocking method: try the fast path with the GIL
 * held; otherwise FM_BLOCKING() releases the GIL, waits (spin, then futex),
 * and runs signal handlers whenever the wait is interrupted, so Ctrl-C
 * raises KeyboardInterrupt at once. */
#include "fastmp.h"

#include <errno.h>
#include <stddef.h>
#include <pythread.h>


/* Every object type here begins like this: the handle, then the payload
 * pointer (typed in each struct).  The generic new, _fm_state and _fm_attach
 * rely on it; the asserts after each struct keep it true. */
typedef struct {
    PyObject_HEAD
    fm_handle h;
    void *sh;
} FmSharedObject;

#define FM_ASSERT_SHARED_LAYOUT(T)                                                \
    _Static_assert(offsetof(T, h) == offsetof(FmSharedObject, h) &&               \
                   offsetof(T, sh) == offsetof(FmSharedObject, sh), #T " layout")

/* A new instance of `type` on a new shared block. */
static PyObject *
shared_new(fm_state *st, PyTypeObject *type, size_t size, uint32_t tag)
{
    PyObject *self = fm_shared_new(st, type, offsetof(FmSharedObject, h), size, tag);
    if (self != NULL)
        ((FmSharedObject *)self)->sh = ((FmSharedObject *)self)->h.ptr;
    return self;
}

/* ================================================================ locks */

typedef struct {
    fm_mutex m;
    _Atomic uint64_t owner_tid;     /* thread that acquired it, 0 when free */
    _Atomic uint32_t count;         /* recursion level (RLock) */
    uint32_t _pad;
} fm_lock_shared;

typedef struct {
    PyObject_HEAD
    fm_handle h;
    fm_lock_shared *sh;
    int recursive;
    PyObject *weakreflist;
} FmLockObject;

static inline uint64_t
thread_id(void)
{
    return (uint64_t)PyThread_get_thread_ident();
}

static inline int
lock_is_mine(FmLockObject *self)
{
    /* the full identity: a dead holder's pid may now be this process's */
    return fm_mutex_owner_id(&self->sh->m) == fm_self_id() &&
           atomic_load_explicit(&self->sh->owner_tid, RLX) == thread_id();
}

/* 1: acquired, 0: not (timeout or non-blocking), -1: exception set. */
static int
lock_acquire_impl(FmLockObject *self, int block, int64_t deadline)
{
    fm_lock_shared *sh = self->sh;
    uint32_t pid = fm_self_pid();
    uint64_t tid = thread_id();
    if (self->recursive && fm_mutex_owner_id(&sh->m) == fm_self_id() &&
        atomic_load_explicit(&sh->owner_tid, RLX) == tid) {
        atomic_fetch_add_explicit(&sh->count, 1, RLX);
        return 1;
    }
    int st = fm_mutex_trylock(&sh->m, pid);
    if (st != FM_OK) {
        if (!block)
            return 0;
        FM_BLOCKING(st, fm_mutex_lock(&sh->m, pid, deadline, fm_spin));
        if (st == FM_TIMEOUT)
            return 0;
        if (st != FM_OK && st != FM_RECOVERED) {
            fm_set_error(st);
            return -1;
        }
    }
    atomic_store_explicit(&sh->owner_tid, tid, RLX);
    atomic_store_explicit(&sh->count, 1, RLX);
    return 1;
}

/* Release all recursion levels at once (Condition.wait); returns the level
 * to restore later. */
static uint32_t
lock_release_all(FmLockObject *self)
{
    uint32_t n = atomic_load_explicit(&self->sh->count, RLX);
    atomic_store_explicit(&self->sh->count, 0, RLX);
    atomic_store_explicit(&self->sh->owner_tid, 0, RLX);
    fm_mutex_unlock(&self->sh->m);
    return n ? n : 1;
}

static int
lock_release_impl(FmLockObject *self)
{
    fm_lock_shared *sh = self->sh;
    if (self->recursive) {
        if (!lock_is_mine(self)) {
            PyErr_SetString(PyExc_AssertionError,
                            "attempt to release recursive lock not owned by thread");
            return -1;
        }
        if (atomic_load_explicit(&sh->count, RLX) > 1) {
            atomic_fetch_sub_explicit(&sh->count, 1, RLX);
            return 0;
        }
    }
    else if (fm_mutex_owner(&sh->m) == 0) {
        fm_set_error(FM_OVERFLOW);
        return -1;
    }
    atomic_store_explicit(&sh->count, 0, RLX);
    atomic_store_explicit(&sh->owner_tid, 0, RLX);
    int st = fm_mutex_unlock(&sh->m);
    if (st != FM_OK) {
        fm_set_error(st);
        return -1;
    }
    return 0;
}

static int
check_ctx_only(const char *name, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) != 0) {
        PyErr_Format(PyExc_TypeError, "%s() takes no positional arguments", name);
        return -1;
    }
    if (kwargs != NULL) {
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (PyDict_Next(kwargs, &pos, &key, &value)) {
            if (PyUnicode_CompareWithASCIIString(key, "ctx") != 0) {
                PyErr_Format(PyExc_TypeError,
                             "%s() got an unexpected keyword argument '%U'", name, key);
                return -1;
            }
        }
    }
    return 0;
}

static PyObject *
lock_new_common(PyTypeObject *type, PyObject *args, PyObject *kwargs, int recursive)
{
    if (check_ctx_only(recursive ? "RLock" : "Lock", args, kwargs) < 0)
        return NULL;
    fm_state *st = fm_state_of_type(type);
    if (st == NULL)
        return NULL;
    FmLockObject *self = (FmLockObject *)shared_new(
        st, type, sizeof(fm_lock_shared), recursive ? FM_KIND_RLOCK : FM_KIND_LOCK);
    if (self == NULL)
        return NULL;
    self->recursive = recursive;
    fm_mutex_init(&self->sh->m);
    return (PyObject *)self;
}

static PyObject *
Lock_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    return lock_new_common(type, args, kwargs, 0);
}

static PyObject *
RLock_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    return lock_new_common(type, args, kwargs, 1);
}

/* Every type's dealloc: what the object holds (tp_clear), then its
 * reference to the shared block. */
static void
generic_dealloc(PyObject *self, fm_handle *h)
{
    fm_dealloc_begin(self);
    if (Py_TYPE(self)->tp_clear)
        Py_TYPE(self)->tp_clear(self);
    fm_handle_release(h);
    fm_dealloc_end(self);
}

static void
Lock_dealloc(PyObject *self)
{
    generic_dealloc(self, &((FmLockObject *)self)->h);
}

PyDoc_STRVAR(Lock_acquire_doc,
"acquire($self, /, block=True, timeout=None)\n--\n\n"
"Acquire the lock; return True, or False when not acquired (block=False,\n"
"or the timeout, in seconds, passed).  A lock whose holder died is taken\n"
"over: see the README, 'dead-holder recovery'.");

static PyObject *
Lock_acquire(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    int block = 1;
    int64_t deadline = FM_FOREVER;
    if ((nargs || kwnames) &&
        fm_parse_acquire_args(args, nargs, kwnames, &block, &deadline) < 0)
        return NULL;
    int r = lock_acquire_impl((FmLockObject *)self, block, deadline);
    if (r < 0)
        return NULL;
    return PyBool_FromLong(r);
}

PyDoc_STRVAR(Lock_release_doc, "release($self, /)\n--\n\nRelease the lock.");

static PyObject *
Lock_release(PyObject *self, PyObject *const *Py_UNUSED(args), Py_ssize_t nargs)
{
    if (fm_no_args("release", nargs) < 0 || lock_release_impl((FmLockObject *)self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Lock_enter(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    int r = lock_acquire_impl((FmLockObject *)self, 1, FM_FOREVER);
    if (r < 0)
        return NULL;
    return PyBool_FromLong(r);
}

static PyObject *
Lock_exit(PyObject *self, PyObject *const *Py_UNUSED(args), Py_ssize_t Py_UNUSED(nargs))
{
    if (lock_release_impl((FmLockObject *)self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Lock_is_mine(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    FmLockObject *lk = (FmLockObject *)self;
    return PyBool_FromLong(lock_is_mine(lk) && atomic_load_explicit(&lk->sh->count, RLX) > 0);
}

static PyObject *
Lock_count(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    FmLockObject *lk = (FmLockObject *)self;
    if (!lock_is_mine(lk))
        return PyLong_FromLong(0);
    return PyLong_FromUnsignedLong(atomic_load_explicit(&lk->sh->count, RLX));
}

static PyObject *
Lock_get_value(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(fm_mutex_owner(&((FmLockObject *)self)->sh->m) == 0);
}

static PyObject *
Lock_owner_pid(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromUnsignedLong(fm_mutex_owner(&((FmLockObject *)self)->sh->m));
}

FM_ASSERT_SHARED_LAYOUT(FmLockObject);

PyDoc_STRVAR(state_doc, FM_STATE_DOC);

static PyObject *
Shared_state(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return fm_handle_state(&((FmSharedObject *)self)->h);
}

/* Attach an instance of `type` to the block named by state[0:2]. */
static PyObject *
attach_common(PyTypeObject *type, PyObject *state, Py_ssize_t min_items, uint32_t tag)
{
    if (fm_check_state(state, min_items, 0) < 0)
        return NULL;
    fm_state *st = fm_state_of_type(type);
    if (st == NULL)
        return NULL;
    PyObject *self = fm_attach_new(st, type, state, offsetof(FmSharedObject, h), tag);
    if (self != NULL)
        ((FmSharedObject *)self)->sh = ((FmSharedObject *)self)->h.ptr;
    return self;
}

PyDoc_STRVAR(from_state_doc, FM_ATTACH_DOC);

/* _fm_attach for the types whose state is just (segment, offset). */
static PyObject *
Shared_attach(PyObject *type, PyObject *state)
{
    PyTypeObject *tp = (PyTypeObject *)type;
    fm_state *st = fm_state_of_type(tp);
    if (st == NULL)
        return NULL;
    uint32_t tag;
    if (PyType_IsSubtype(tp, st->RLockType))
        tag = FM_KIND_RLOCK;
    else if (PyType_IsSubtype(tp, st->LockType))
        tag = FM_KIND_LOCK;
    else if (PyType_IsSubtype(tp, st->SemaphoreType))
        tag = FM_KIND_SEMAPHORE;
    else if (PyType_IsSubtype(tp, st->EventType))
        tag = FM_KIND_EVENT;
    else {
        PyErr_Format(PyExc_TypeError, "cannot attach a %.100s", tp->tp_name);
        return NULL;
    }
    PyObject *self = attach_common(tp, state, 2, tag);
    if (self != NULL && tag == FM_KIND_RLOCK)
        ((FmLockObject *)self)->recursive = 1;
    return self;
}

#define LOCK_COMMON_METHODS                                                          \
    {"acquire", (PyCFunction)(void (*)(void))Lock_acquire,                          \
     METH_FASTCALL | METH_KEYWORDS, Lock_acquire_doc},                               \
    {"release", (PyCFunction)(void (*)(void))Lock_release, METH_FASTCALL,                \
     Lock_release_doc},                        \
    {"__enter__", Lock_enter, METH_NOARGS, NULL},                                    \
    {"__exit__", (PyCFunction)(void (*)(void))Lock_exit, METH_FASTCALL, NULL},       \
    {"_is_mine", Lock_is_mine, METH_NOARGS, NULL},                                   \
    {"_count", Lock_count, METH_NOARGS, NULL},                                       \
    {"_get_value", Lock_get_value, METH_NOARGS, NULL},                               \
    {"_owner_pid", Lock_owner_pid, METH_NOARGS, NULL},                               \
    {"_fm_state", Shared_state, METH_NOARGS, state_doc},                                \
    {"_fm_attach", Shared_attach, METH_O | METH_CLASS, from_state_doc}

static PyMethodDef Lock_methods[] = {LOCK_COMMON_METHODS, {NULL, NULL, 0, NULL}};

FM_WEAKREF_MEMBERS(FmLockObject);

static PyType_Slot Lock_slots[] = {
    {Py_tp_new, Lock_new},
    {Py_tp_dealloc, Lock_dealloc},
    {Py_tp_traverse, fm_traverse_type},
    {Py_tp_methods, Lock_methods},
    {Py_tp_doc, "Lock(*, ctx=None)\n--\n\nA non-recursive lock in shared memory."},
    {Py_tp_members, FmLockObject_members},
    {0, NULL},
};

static PyType_Spec Lock_spec = {
    .name = "fastmp.synchronize.Lock",
    .basicsize = sizeof(FmLockObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Lock_slots,
};

static PyType_Slot RLock_slots[] = {
    {Py_tp_new, RLock_new},
    {Py_tp_dealloc, Lock_dealloc},
    {Py_tp_traverse, fm_traverse_type},
    {Py_tp_methods, Lock_methods},
    {Py_tp_doc, "RLock(*, ctx=None)\n--\n\nA recursive lock in shared memory."},
    {Py_tp_members, FmLockObject_members},
    {0, NULL},
};

static PyType_Spec RLock_spec = {
    .name = "fastmp.synchronize.RLock",
    .basicsize = sizeof(FmLockObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = RLock_slots,
};

/* ============================================================ semaphore */

typedef struct {
    PyObject_HEAD
    fm_handle h;
    fm_sem *sh;
    PyObject *weakreflist;
} FmSemaphoreObject;

static PyObject *
semaphore_new_common(PyTypeObject *type, PyObject *args, PyObject *kwargs, int bounded)
{
    static char *kwlist[] = {"value", "ctx", NULL};
    PyObject *value_obj = NULL, *ctx = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs,
                                     bounded ? "|O$O:BoundedSemaphore" : "|O$O:Semaphore",
                                     kwlist, &value_obj, &ctx))
        return NULL;
    long long value = 1;
    if (value_obj != NULL) {
        value = PyLong_AsLongLong(value_obj);
        if (value == -1 && PyErr_Occurred())
            return NULL;
    }
    if (value < 0 || value > FM_SEM_VALUE_MAX) {
        /* the stdlib's sem_open() fails with EINVAL here: same type, errno */
        PyObject *exc_args = Py_BuildValue(
            "(is)", EINVAL, "semaphore initial value must be between 0 and SEM_VALUE_MAX");
        if (exc_args != NULL) {
            PyErr_SetObject(PyExc_OSError, exc_args);
            Py_DECREF(exc_args);
        }
        return NULL;
    }
    fm_state *st = fm_state_of_type(type);
    if (st == NULL)
        return NULL;
    FmSemaphoreObject *self =
        (FmSemaphoreObject *)shared_new(st, type, sizeof(fm_sem), FM_KIND_SEMAPHORE);
    if (self == NULL)
        return NULL;
    fm_sem_init(self->sh, (uint32_t)value, bounded ? (uint32_t)value : FM_SEM_VALUE_MAX);
    return (PyObject *)self;
}

static PyObject *
Semaphore_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    return semaphore_new_common(type, args, kwargs, 0);
}

static PyObject *
BoundedSemaphore_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    return semaphore_new_common(type, args, kwargs, 1);
}

static void
Semaphore_dealloc(PyObject *self)
{
    generic_dealloc(self, &((FmSemaphoreObject *)self)->h);
}

/* 1 acquired, 0 not, -1 error */
static int
sem_acquire_impl(FmSemaphoreObject *self, int block, int64_t deadline)
{
    uint32_t pid = fm_self_pid();
    if (fm_sem_trywait(self->sh, pid) == FM_OK)
        return 1;
    if (!block)
        return 0;
    int st;
    FM_BLOCKING(st, fm_sem_wait(self->sh, pid, deadline, fm_spin));
    if (st == FM_OK)
        return 1;
    if (st == FM_TIMEOUT)
        return 0;
    fm_set_error(st);
    return -1;
}

PyDoc_STRVAR(Semaphore_acquire_doc,
"acquire($self, /, block=True, timeout=None)\n--\n\n"
"Decrement the counter, waiting while it is zero; return True, or False\n"
"when not acquired (block=False, or the timeout passed).");

static PyObject *
Semaphore_acquire(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    int block;
    int64_t deadline;
    if (fm_parse_acquire_args(args, nargs, kwnames, &block, &deadline) < 0)
        return NULL;
    int r = sem_acquire_impl((FmSemaphoreObject *)self, block, deadline);
    if (r < 0)
        return NULL;
    return PyBool_FromLong(r);
}

PyDoc_STRVAR(Semaphore_release_doc,
"release($self, /)\n--\n\n"
"Increment the counter; ValueError past the maximum (BoundedSemaphore).");

static PyObject *
Semaphore_release(PyObject *self, PyObject *const *Py_UNUSED(args), Py_ssize_t nargs)
{
    if (fm_no_args("release", nargs) < 0)
        return NULL;
    int st = fm_sem_post(((FmSemaphoreObject *)self)->sh, fm_self_pid());
    if (st != FM_OK)
        return fm_set_error(st);
    Py_RETURN_NONE;
}

static PyObject *
Semaphore_enter(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    int r = sem_acquire_impl((FmSemaphoreObject *)self, 1, FM_FOREVER);
    if (r < 0)
        return NULL;
    return PyBool_FromLong(r);
}

static PyObject *
Semaphore_exit(PyObject *self, PyObject *const *Py_UNUSED(args), Py_ssize_t Py_UNUSED(nargs))
{
    return Semaphore_release(self, NULL, 0);
}

PyDoc_STRVAR(Semaphore_get_value_doc, "get_value($self, /)\n--\n\nThe counter's value.");

static PyObject *
Semaphore_get_value(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromUnsignedLong(fm_sem_value(((FmSemaphoreObject *)self)->sh));
}

static PyObject *
Semaphore_is_zero(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(fm_sem_value(((FmSemaphoreObject *)self)->sh) == 0);
}

static PyObject *
Semaphore_maxvalue(PyObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLong(((FmSemaphoreObject *)self)->sh->maxvalue);
}

FM_ASSERT_SHARED_LAYOUT(FmSemaphoreObject);

static PyMethodDef Semaphore_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))Semaphore_acquire, METH_FASTCALL | METH_KEYWORDS,
     Semaphore_acquire_doc},
    {"release", (PyCFunction)(void (*)(void))Semaphore_release, METH_FASTCALL,
     Semaphore_release_doc},
    {"__enter__", Semaphore_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))Semaphore_exit, METH_FASTCALL, NULL},
    {"get_value", Semaphore_get_value, METH_NOARGS, Semaphore_get_value_doc},
    {"_get_value", Semaphore_get_value, METH_NOARGS, NULL},
    {"_is_zero", Semaphore_is_zero, METH_NOARGS, NULL},
    {"_fm_state", Shared_state, METH_NOARGS, state_doc},
    {"_fm_attach", Shared_attach, METH_O | METH_CLASS, from_state_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Semaphore_getset[] = {
    {"maxvalue", Semaphore_maxvalue, NULL, "the largest value release() may reach", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

FM_WEAKREF_MEMBERS(FmSemaphoreObject);

static PyType_Slot Semaphore_slots[] = {
    {Py_tp_new, Semaphore_new},
    {Py_tp_dealloc, Semaphore_dealloc},
    {Py_tp_traverse, fm_traverse_type},
    {Py_tp_methods, Semaphore_methods},
    {Py_tp_getset, Semaphore_getset},
    {Py_tp_doc, "Semaphore(value=1, *, ctx=None)\n--\n\n"
                "A counting semaphore in shared memory."},
    {Py_tp_members, FmSemaphoreObject_members},
    {0, NULL},
};

static PyType_Spec Semaphore_spec = {
    .name = "fastmp.synchronize.Semaphore",
    .basicsize = sizeof(FmSemaphoreObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Semaphore_slots,
};

/* A subtype with its own method table: CPython specializes a method call
 * only when the method's type is exactly the object's type. */
static PyType_Slot BoundedSemaphore_slots[] = {
    {Py_tp_new, BoundedSemaphore_new},
    {Py_tp_dealloc, Semaphore_dealloc},
    {Py_tp_traverse, fm_traverse_type},
    {Py_tp_methods, Semaphore_methods},
    {Py_tp_doc, "BoundedSemaphore(value=1, *, ctx=None)\n--\n\n"
                "A semaphore that may not be released above its initial value."},
    {Py_tp_members, FmSemaphoreObject_members},
    {0, NULL},
};

static PyType_Spec BoundedSemaphore_spec = {
    .name = "fastmp.synchronize.BoundedSemaphore",
    .basicsize = sizeof(FmSemaphoreObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = BoundedSemaphore_slots,
};

/* ================================================================ event */

typedef struct {
    PyObject_HEAD
    fm_handle h;
    fm_event *sh;
    PyObject *weakreflist;
} FmEventObject;

static PyObject *
Event_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    if (check_ctx_only("Event", args, kwargs) < 0)
        return NULL;
    fm_state *st = fm_state_of_type(type);
    if (st == NULL)
        return NULL;
    FmEventObject *self =
        (FmEventObject *)shared_new(st, type, sizeof(fm_event), FM_KIND_EVENT);
    if (self == NULL)
        return NULL;
    fm_event_init(self->sh);
    return (PyObject *)self;
}

static void
Event_dealloc(PyObject *self)
{
    generic_dealloc(self, &((FmEventObject *)self)->h);
}

static PyObject *
Event_is_set(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(fm_event_is_set(((FmEventObject *)self)->sh));
}

static PyObject *
Event_set(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    fm_event_set(((FmEventObject *)self)->sh);
    Py_RETURN_NONE;
}

static PyObject *
Event_clear(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    fm_event_clear(((FmEventObject *)self)->sh);
    Py_RETURN_NONE;
}

/* wait()'s timeout argument as a deadline. */
static inline int
parse_wait_deadline(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                    int64_t *deadline)
{
    PyObject *timeout;
    if (fm_parse_timeout_arg("wait", args, nargs, kwnames, &timeout) < 0)
        return -1;
    return fm_timeout_to_deadline(timeout, deadline);
}

PyDoc_STRVAR(Event_wait_doc,
"wait($self, /, timeout=None)\n--\n\n"
"Wait until the flag is set; return the flag (False after a timeout).");

static PyObject *
Event_wait(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    fm_event *ev = ((FmEventObject *)self)->sh;
    int64_t deadline;
    if (parse_wait_deadline(args, nargs, kwnames, &deadline) < 0)
        return NULL;
    if (fm_event_is_set(ev))
        Py_RETURN_TRUE;
    int st;
    FM_BLOCKING(st, fm_event_wait(ev, deadline, fm_spin));
    if (st == FM_OK)
        Py_RETURN_TRUE;
    if (st == FM_TIMEOUT)
        return PyBool_FromLong(fm_event_is_set(ev));
    return fm_set_error(st);
}

FM_ASSERT_SHARED_LAYOUT(FmEventObject);

static PyMethodDef Event_methods[] = {
    {"is_set", Event_is_set, METH_NOARGS, "is_set($self, /)\n--\n\nTrue if the flag is set."},
    {"set", Event_set, METH_NOARGS, "set($self, /)\n--\n\nSet the flag; wake all waiters."},
    {"clear", Event_clear, METH_NOARGS, "clear($self, /)\n--\n\nReset the flag."},
    {"wait", (PyCFunction)(void (*)(void))Event_wait, METH_FASTCALL | METH_KEYWORDS,
     Event_wait_doc},
    {"_fm_state", Shared_state, METH_NOARGS, state_doc},
    {"_fm_attach", Shared_attach, METH_O | METH_CLASS, from_state_doc},
    {NULL, NULL, 0, NULL},
};

FM_WEAKREF_MEMBERS(FmEventObject);

static PyType_Slot Event_slots[] = {
    {Py_tp_new, Event_new},
    {Py_tp_dealloc, Event_dealloc},
    {Py_tp_traverse, fm_traverse_type},
    {Py_tp_methods, Event_methods},
    {Py_tp_doc, "Event(*, ctx=None)\n--\n\nAn event flag in shared memory."},
    {Py_tp_members, FmEventObject_members},
    {0, NULL},
};

static PyType_Spec Event_spec = {
    .name = "fastmp.synchronize.Event",
    .basicsize = sizeof(FmEventObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Event_slots,
};

/* ============================================================ condition */

typedef struct {
    PyObject_HEAD
    fm_handle h;
    fm_cond *sh;
    FmLockObject *lock;     /* a fastmp Lock or RLock */
    PyObject *weakreflist;
} FmConditionObject;

static int
check_lock(fm_state *st, PyObject *lock)
{
    if (PyObject_TypeCheck(lock, st->LockType) || PyObject_TypeCheck(lock, st->RLockType))
        return 0;
    PyErr_Format(PyExc_TypeError,
                 "Condition() needs a fastmp Lock or RLock, not %.100s",
                 Py_TYPE(lock)->tp_name);
    return -1;
}

static PyObject *
Condition_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"lock", "ctx", NULL};
    PyObject *lock = Py_None, *ctx = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O$O:Condition", kwlist, &lock, &ctx))
        return NULL;
    fm_state *st = fm_state_of_type(type);
    if (st == NULL)
        return NULL;
    if (lock == Py_None)
        lock = PyObject_CallNoArgs((PyObject *)st->RLockType);
    else {
        if (check_lock(st, lock) < 0)
            return NULL;
        Py_INCREF(lock);
    }
    if (lock == NULL)
        return NULL;
    FmConditionObject *self =
        (FmConditionObject *)shared_new(st, type, sizeof(fm_cond), FM_KIND_CONDITION);
    if (self == NULL) {
        Py_DECREF(lock);
        return NULL;
    }
    self->lock = (FmLockObject *)lock;
    fm_cond_init(self->sh);
    return (PyObject *)self;
}

static int
Condition_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(((FmConditionObject *)self)->lock);
    return 0;
}

static int
Condition_clear(PyObject *self)
{
    Py_CLEAR(((FmConditionObject *)self)->lock);
    return 0;
}

static void
Condition_dealloc(PyObject *self)
{
    generic_dealloc(self, &((FmConditionObject *)self)->h);
}

/* Take a Condition's lock back after a wait, at its recursion level.
 * -1 when an exception is set (the lock is then held, but for a real
 * error of the futex call). */
static int
relock_uninterruptibly(FmLockObject *lock, uint32_t count)
{
    int st = fm_mutex_lock_keeping_signals(&lock->sh->m);
    if (st != FM_OK && st != FM_RECOVERED) {
        if (!PyErr_Occurred())
            fm_set_error(st);
        return -1;
    }
    atomic_store_explicit(&lock->sh->owner_tid, thread_id(), RLX);
    atomic_store_explicit(&lock->sh->count, lock->recursive ? count : 1, RLX);
    return PyErr_Occurred() ? -1 : 0;
}

/* Returns 1 notified, 0 timed out, -1 exception. */
static int
cond_wait_impl(FmConditionObject *self, int64_t deadline)
{
    FmLockObject *lock = self->lock;
    if (!lock_is_mine(lock)) {
        PyErr_SetString(PyExc_AssertionError, "must acquire() condition before using wait()");
        return -1;
    }
    uint32_t seen = fm_cond_signaled(self->sh);
    uint32_t ticket = fm_cond_enter_wait(self->sh);
    uint32_t count = lock_release_all(lock);
    int st, relocked;
    for (;;) {
        FM_BLOCKING(st, fm_cond_wait(self->sh, ticket, seen, deadline, fm_spin));
        relocked = relock_uninterruptibly(lock, count);
        if (st != FM_RECOVERED)
            break;
        /* a waiter that died holds a notification: hand it on (maybe to
         * this ticket), with the lock held as notify() does */
        if (relocked == 0)
            fm_cond_repair(self->sh);
        if (relocked < 0 || fm_cond_notified(self->sh, ticket, seen)) {
            st = FM_OK;
            break;
        }
        count = lock_release_all(lock);
    }
    /* after every wait, notified or not: the ticket's slot is given up */
    int notified = fm_cond_leave_wait(self->sh, ticket, seen);
    if (relocked < 0)
        return -1;
    if (st != FM_OK && st != FM_TIMEOUT) {
        if (st != FM_PYERR)
            fm_set_error(st);
        return -1;
    }
    return notified;
}

PyDoc_STRVAR(Condition_wait_doc,
"wait($self, /, timeout=None)\n--\n\n"
"Release the lock, wait for a notify() (or the timeout), take the lock\n"
"back; return False if the timeout passed first.");

static PyObject *
Condition_wait(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    int64_t deadline;
    if (parse_wait_deadline(args, nargs, kwnames, &deadline) < 0)
        return NULL;
    int r = cond_wait_impl((FmConditionObject *)self, deadline);
    if (r < 0)
        return NULL;
    return PyBool_FromLong(r);
}

PyDoc_STRVAR(Condition_wait_for_doc,
"wait_for($self, /, predicate, timeout=None)\n--\n\n"
"Wait until predicate() is true (or the timeout); return its last result.");

static PyObject *
Condition_wait_for(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"predicate", "timeout", NULL};
    PyObject *predicate, *timeout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O:wait_for", kwlist, &predicate,
                                     &timeout))
        return NULL;
    int64_t deadline;
    if (fm_timeout_to_deadline(timeout, &deadline) < 0)
        return NULL;
    for (;;) {
        PyObject *result = PyObject_CallNoArgs(predicate);
        if (result == NULL)
            return NULL;
        int truth = PyObject_IsTrue(result);
        if (truth != 0 || (deadline != FM_FOREVER && fm_now_ns() >= deadline))
            return truth < 0 ? (Py_DECREF(result), NULL) : result;
        Py_DECREF(result);
        if (cond_wait_impl((FmConditionObject *)self, deadline) < 0)
            return NULL;
    }
}

static int
cond_check_owned(FmConditionObject *self)
{
    if (!lock_is_mine(self->lock)) {
        PyErr_SetString(PyExc_AssertionError, "lock is not owned");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(Condition_notify_doc,
"notify($self, /, n=1)\n--\n\nWake up to n threads waiting on the condition.");

static PyObject *
Condition_notify(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"n", NULL};
    Py_ssize_t n = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|n:notify", kwlist, &n))
        return NULL;
    FmConditionObject *c = (FmConditionObject *)self;
    if (cond_check_owned(c) < 0)
        return NULL;
    if (n > 0)
        fm_cond_notify(c->sh, n > (Py_ssize_t)UINT32_MAX ? UINT32_MAX : (uint32_t)n);
    Py_RETURN_NONE;
}

static PyObject *
Condition_notify_all(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    FmConditionObject *c = (FmConditionObject *)self;
    if (cond_check_owned(c) < 0)
        return NULL;
    fm_cond_notify(c->sh, UINT32_MAX);
    Py_RETURN_NONE;
}

static PyObject *
Condition_acquire(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return Lock_acquire((PyObject *)((FmConditionObject *)self)->lock, args, nargs, kwnames);
}

static PyObject *
Condition_release(PyObject *self, PyObject *const *Py_UNUSED(args), Py_ssize_t nargs)
{
    if (fm_no_args("release", nargs) < 0)
        return NULL;
    return Lock_release((PyObject *)((FmConditionObject *)self)->lock, NULL, 0);
}

static PyObject *
Condition_enter(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return Lock_enter((PyObject *)((FmConditionObject *)self)->lock, NULL);
}

static PyObject *
Condition_exit(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return Lock_exit((PyObject *)((FmConditionObject *)self)->lock, args, nargs);
}

static PyObject *
Condition_num_waiters(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromUnsignedLong(fm_cond_waiters(((FmConditionObject *)self)->sh));
}

FM_ASSERT_SHARED_LAYOUT(FmConditionObject);

static PyObject *
Condition_state(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    FmConditionObject *c = (FmConditionObject *)self;
    return Py_BuildValue("(NKO)", fm_handle_name(&c->h), (unsigned long long)c->h.offset,
                         (PyObject *)c->lock);
}

static PyObject *
Condition_from_state(PyObject *type, PyObject *state)
{
    fm_state *st = fm_state_of_type((PyTypeObject *)type);
    if (st == NULL)
        return NULL;
    if (fm_check_state(state, 3, 0) < 0)
        return NULL;
    PyObject *lock = PyTuple_GET_ITEM(state, 2);
    if (check_lock(st, lock) < 0)
        return NULL;
    PyObject *self = attach_common((PyTypeObject *)type, state, 3, FM_KIND_CONDITION);
    if (self == NULL)
        return NULL;
    Py_INCREF(lock);
    ((FmConditionObject *)self)->lock = (FmLockObject *)lock;
    return self;
}

static PyObject *
Condition_get_lock(PyObject *self, void *Py_UNUSED(closure))
{
    PyObject *lock = (PyObject *)((FmConditionObject *)self)->lock;
    Py_INCREF(lock);
    return lock;
}

static PyMethodDef Condition_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))Condition_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire($self, /, block=True, timeout=None)\n--\n\nAcquire the underlying lock."},
    {"release", (PyCFunction)(void (*)(void))Condition_release, METH_FASTCALL,
     "release($self, /)\n--\n\nRelease the underlying lock."},
    {"__enter__", Condition_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))Condition_exit, METH_FASTCALL, NULL},
    {"wait", (PyCFunction)(void (*)(void))Condition_wait, METH_FASTCALL | METH_KEYWORDS,
     Condition_wait_doc},
    {"wait_for", (PyCFunction)(void (*)(void))Condition_wait_for,
     METH_VARARGS | METH_KEYWORDS, Condition_wait_for_doc},
    {"notify", (PyCFunction)(void (*)(void))Condition_notify, METH_VARARGS | METH_KEYWORDS,
     Condition_notify_doc},
    {"notify_all", Condition_notify_all, METH_NOARGS,
     "notify_all($self, /)\n--\n\nWake every thread waiting on the condition."},
    {"_num_waiters", Condition_num_waiters, METH_NOARGS, NULL},
    {"_fm_state", Condition_state, METH_NOARGS, state_doc},
    {"_fm_attach", Condition_from_state, METH_O | METH_CLASS, from_state_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Condition_getset[] = {
    {"_lock", Condition_get_lock, NULL, "the underlying lock", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

FM_WEAKREF_MEMBERS(FmConditionObject);

static PyType_Slot Condition_slots[] = {
    {Py_tp_new, Condition_new},
    {Py_tp_dealloc, Condition_dealloc},
    {Py_tp_traverse, Condition_traverse},
    {Py_tp_clear, Condition_clear},
    {Py_tp_methods, Condition_methods},
    {Py_tp_getset, Condition_getset},
    {Py_tp_doc, "Condition(lock=None, *, ctx=None)\n--\n\n"
                "A condition variable in shared memory over a fastmp Lock or RLock."},
    {Py_tp_members, FmConditionObject_members},
    {0, NULL},
};

static PyType_Spec Condition_spec = {
    .name = "fastmp.synchronize.Condition",
    .basicsize = sizeof(FmConditionObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Condition_slots,
};

/* ============================================================== barrier */

enum { BARRIER_FILLING = 0, BARRIER_DRAINING = 1, BARRIER_RESETTING = -1,
       BARRIER_BROKEN = -2 };

typedef struct {
    fm_mutex m;
    fm_seq changed;         /* bumped (under m) whenever state changes */
    _Atomic int32_t state;
    _Atomic uint32_t count; /* threads inside wait() */
    uint32_t parties;
    uint32_t _pad;
} fm_barrier_shared;

typedef struct {
    PyObject_HEAD
    fm_handle h;
    fm_barrier_shared *sh;
    PyObject *action;
    PyObject *timeout;
    PyObject *weakreflist;
} FmBarrierObject;

static PyObject *
Barrier_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"parties", "action", "timeout", "ctx", NULL};
    Py_ssize_t parties;
    PyObject *action = Py_None, *timeout = Py_None, *ctx = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "n|OO$O:Barrier", kwlist, &parties,
                                     &action, &timeout, &ctx))
        return NULL;
    if (parties < 1 || parties > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "parties must be >= 1");
        return NULL;
    }
    if (timeout != Py_None) {
        int64_t dl;
        if (fm_timeout_to_deadline(timeout, &dl) < 0)
            return NULL;
    }
    fm_state *st = fm_state_of_type(type);
    if (st == NULL)
        return NULL;
    FmBarrierObject *self = (FmBarrierObject *)shared_new(
        st, type, sizeof(fm_barrier_shared), FM_KIND_BARRIER);
    if (self == NULL)
        return NULL;
    self->action = Py_NewRef(action);
    self->timeout = Py_NewRef(timeout);
    fm_mutex_init(&self->sh->m);
    fm_seq_init(&self->sh->changed);
    self->sh->parties = (uint32_t)parties;
    return (PyObject *)self;
}

static int
Barrier_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(((FmBarrierObject *)self)->action);
    Py_VISIT(((FmBarrierObject *)self)->timeout);
    return 0;
}

static int
Barrier_clear(PyObject *self)
{
    Py_CLEAR(((FmBarrierObject *)self)->action);
    Py_CLEAR(((FmBarrierObject *)self)->timeout);
    return 0;
}

static void
Barrier_dealloc(PyObject *self)
{
    generic_dealloc(self, &((FmBarrierObject *)self)->h);
}

/* Relock without giving up on signals (keeps the first exception). */
static void
barrier_relock(fm_barrier_shared *b)
{
    int st;
    do
        st = fm_mutex_lock_keeping_signals(&b->m);
    while (st != FM_OK && st != FM_RECOVERED);
}

static void
barrier_set_state(fm_barrier_shared *b, int32_t state)
{
    atomic_store_explicit(&b->state, state, RLX);
    fm_seq_bump_all(&b->changed);
}

/* Mutex held: wait until the state changes (or the deadline).  The mutex
 * is held again on return.  FM_OK, FM_TIMEOUT, FM_PYERR. */
static int
barrier_wait_change(fm_barrier_shared *b, int64_t deadline)
{
    uint32_t seen = fm_seq_read(&b->changed);
    fm_mutex_unlock(&b->m);
    int st;
    FM_BLOCKING(st, fm_seq_wait(&b->changed, seen, deadline, fm_spin));
    barrier_relock(b);
    if (st == FM_PYERR || PyErr_Occurred())
        return FM_PYERR;
    if (st != FM_OK && st != FM_TIMEOUT) {
        fm_set_error(st);
        return FM_PYERR;
    }
    return st;
}

PyDoc_STRVAR(Barrier_wait_doc,
"wait($self, /, timeout=None)\n--\n\n"
"Wait until `parties` threads have called wait(); return this thread's\n"
"index, 0 .. parties-1.  BrokenBarrierError if the barrier is broken or\n"
"resets, or the timeout (default: the barrier's) passes.");

static PyObject *
Barrier_wait(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    FmBarrierObject *bo = (FmBarrierObject *)self;
    fm_barrier_shared *b = bo->sh;
    fm_state *st = fm_state_of_type(Py_TYPE(self));
    if (st == NULL)
        return NULL;
    PyObject *timeout = NULL;
    if (fm_parse_timeout_arg("wait", args, nargs, kwnames, &timeout) < 0)
        return NULL;
    if (timeout == NULL || timeout == Py_None)
        timeout = bo->timeout;
    int64_t deadline;
    if (fm_timeout_to_deadline(timeout, &deadline) < 0)
        return NULL;

    if (fm_mutex_lock_py(&b->m) < 0)
        return NULL;
    /* wait while the previous round drains or a reset completes */
    int32_t s;
    while ((s = atomic_load_explicit(&b->state, RLX)) == BARRIER_DRAINING ||
           s == BARRIER_RESETTING) {
        if (barrier_wait_change(b, FM_FOREVER) != FM_OK) {
            fm_mutex_unlock(&b->m);
            return NULL;
        }
    }
    if (s == BARRIER_BROKEN) {
        fm_mutex_unlock(&b->m);
        PyErr_SetNone(st->BrokenBarrierError);
        return NULL;
    }
    uint32_t index = atomic_fetch_add_explicit(&b->count, 1, RLX);
    int failed = 0;
    if (index + 1 == b->parties) {
        if (bo->action != Py_None) {
            PyObject *r = PyObject_CallNoArgs(bo->action);
            if (r == NULL) {
                failed = 1;
                barrier_set_state(b, BARRIER_BROKEN);
            }
            Py_XDECREF(r);
        }
        if (!failed)
            barrier_set_state(b, BARRIER_DRAINING);
    }
    else {
        while (atomic_load_explicit(&b->state, RLX) == BARRIER_FILLING) {
            int w = barrier_wait_change(b, deadline);
            if (w == FM_PYERR) {
                failed = 1;
                break;
            }
            if (w == FM_TIMEOUT && atomic_load_explicit(&b->state, RLX) == BARRIER_FILLING) {
                barrier_set_state(b, BARRIER_BROKEN);
                break;
            }
        }
        if (!failed && atomic_load_explicit(&b->state, RLX) < 0) {
            failed = 1;
            PyErr_SetNone(st->BrokenBarrierError);
        }
    }
    /* leave: the last one out of a draining or resetting barrier refills it */
    if (atomic_fetch_sub_explicit(&b->count, 1, RLX) == 1) {
        s = atomic_load_explicit(&b->state, RLX);
        if (s == BARRIER_DRAINING || s == BARRIER_RESETTING)
            barrier_set_state(b, BARRIER_FILLING);
    }
    fm_mutex_unlock(&b->m);
    if (failed)
        return NULL;
    return PyLong_FromUnsignedLong(index);
}

static PyObject *
Barrier_abort(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    fm_barrier_shared *b = ((FmBarrierObject *)self)->sh;
    if (fm_mutex_lock_py(&b->m) < 0)
        return NULL;
    barrier_set_state(b, BARRIER_BROKEN);
    fm_mutex_unlock(&b->m);
    Py_RETURN_NONE;
}

static PyObject *
Barrier_reset(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    fm_barrier_shared *b = ((FmBarrierObject *)self)->sh;
    if (fm_mutex_lock_py(&b->m) < 0)
        return NULL;
    if (atomic_load_explicit(&b->count, RLX) > 0) {
        int32_t s = atomic_load_explicit(&b->state, RLX);
        if (s == BARRIER_FILLING || s == BARRIER_BROKEN)
            barrier_set_state(b, BARRIER_RESETTING);
        /* draining or already resetting: the last one out refills it */
    }
    else
        barrier_set_state(b, BARRIER_FILLING);
    fm_mutex_unlock(&b->m);
    Py_RETURN_NONE;
}

static PyObject *
Barrier_get_parties(PyObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLong(((FmBarrierObject *)self)->sh->parties);
}

static PyObject *
Barrier_get_n_waiting(PyObject *self, void *Py_UNUSED(closure))
{
    fm_barrier_shared *b = ((FmBarrierObject *)self)->sh;
    if (atomic_load_explicit(&b->state, RLX) == BARRIER_FILLING)
        return PyLong_FromUnsignedLong(atomic_load_explicit(&b->count, RLX));
    return PyLong_FromLong(0);
}

static PyObject *
Barrier_get_broken(PyObject *self, void *Py_UNUSED(closure))
{
    fm_barrier_shared *b = ((FmBarrierObject *)self)->sh;
    return PyBool_FromLong(atomic_load_explicit(&b->state, RLX) == BARRIER_BROKEN);
}

FM_ASSERT_SHARED_LAYOUT(FmBarrierObject);

static PyObject *
Barrier_state(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    FmBarrierObject *bo = (FmBarrierObject *)self;
    return Py_BuildValue("(NKOO)", fm_handle_name(&bo->h), (unsigned long long)bo->h.offset,
                         bo->action, bo->timeout);
}

static PyObject *
Barrier_from_state(PyObject *type, PyObject *state)
{
    PyObject *self = attach_common((PyTypeObject *)type, state, 4, FM_KIND_BARRIER);
    if (self == NULL)
        return NULL;
    FmBarrierObject *bo = (FmBarrierObject *)self;
    bo->action = PyTuple_GET_ITEM(state, 2);
    Py_INCREF(bo->action);
    bo->timeout = PyTuple_GET_ITEM(state, 3);
    Py_INCREF(bo->timeout);
    return self;
}

static PyMethodDef Barrier_methods[] = {
    {"wait", (PyCFunction)(void (*)(void))Barrier_wait, METH_FASTCALL | METH_KEYWORDS,
     Barrier_wait_doc},
    {"abort", Barrier_abort, METH_NOARGS,
     "abort($self, /)\n--\n\nBreak the barrier: waiters get BrokenBarrierError."},
    {"reset", Barrier_reset, METH_NOARGS,
     "reset($self, /)\n--\n\nReturn the barrier to its empty state; current "
     "waiters get BrokenBarrierError."},
    {"_fm_state", Barrier_state, METH_NOARGS, state_doc},
    {"_fm_attach", Barrier_from_state, METH_O | METH_CLASS, from_state_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Barrier_getset[] = {
    {"parties", Barrier_get_parties, NULL, "threads needed to pass the barrier", NULL},
    {"n_waiting", Barrier_get_n_waiting, NULL, "threads waiting now", NULL},
    {"broken", Barrier_get_broken, NULL, "True if the barrier is broken", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

FM_WEAKREF_MEMBERS(FmBarrierObject);

static PyType_Slot Barrier_slots[] = {
    {Py_tp_new, Barrier_new},
    {Py_tp_dealloc, Barrier_dealloc},
    {Py_tp_traverse, Barrier_traverse},
    {Py_tp_clear, Barrier_clear},
    {Py_tp_methods, Barrier_methods},
    {Py_tp_getset, Barrier_getset},
    {Py_tp_doc, "Barrier(parties, action=None, timeout=None, *, ctx=None)\n--\n\n"
                "A barrier in shared memory."},
    {Py_tp_members, FmBarrierObject_members},
    {0, NULL},
};

static PyType_Spec Barrier_spec = {
    .name = "fastmp._core.Barrier",
    .basicsize = sizeof(FmBarrierObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Barrier_slots,
};

/* ======================================================== registration */

int
fm_sync_add_types(PyObject *module, fm_state *st)
{
    if (fm_add_type(module, &Lock_spec, NULL, &st->LockType) < 0 ||
        fm_add_type(module, &RLock_spec, NULL, &st->RLockType) < 0 ||
        fm_add_type(module, &Semaphore_spec, NULL, &st->SemaphoreType) < 0 ||
        fm_add_type(module, &BoundedSemaphore_spec, st->SemaphoreType,
                    &st->BoundedSemaphoreType) < 0 ||
        fm_add_type(module, &Condition_spec, NULL, &st->ConditionType) < 0 ||
        fm_add_type(module, &Event_spec, NULL, &st->EventType) < 0 ||
        fm_add_type(module, &Barrier_spec, NULL, &st->BarrierType) < 0)
        return -1;
    return 0;
}
