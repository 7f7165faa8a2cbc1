/* glue.h: what every Python-facing file needs of CPython, written once
 * (glue.c): the module state of a type, status codes as exceptions, type
 * registration, argument and timeout parsing, the shared-mutex lock with the
 * GIL released, the segment hooks, attaching an object in another process.
 * Saving and restoring a pending exception is fm_exc_take / fm_exc_restore
 * (compat.h: they differ by Python version).
 *
 * Included by fastmp.h after the state and handle types.  The fast paths of
 * the helpers that run on every call (no arguments to parse, an uncontended
 * mutex) are inline here; the rest is in glue.c. */
#ifndef FASTMP_GLUE_H
#define FASTMP_GLUE_H

#include <stddef.h>
#include <structmember.h>

/* ------------------------------------------------------- module state */

extern PyModuleDef fm_module_def;

static inline fm_state *
fm_state_of_module(PyObject *module)
{
    return (fm_state *)PyModule_GetState(module);
}

/* The state of the module that defined `tp` (or one of its bases); NULL
 * with TypeError set when there is none. */
fm_state *fm_state_of_type(PyTypeObject *tp);

/* A status code from GIL-free code -> a Python exception; returns NULL.
 * FM_PYERR: the exception is set already. */
PyObject *fm_set_error(int status);

/* --------------------------------------------------- type registration */

/* Make the heap type `spec` describes for `module` (a subtype of `base`
 * when not NULL), add it to the module under the last dotted part of its
 * name, and keep a reference in *slot (a field of the module state).
 * -1 on error. */
int fm_add_type(PyObject *module, PyType_Spec *spec, PyTypeObject *base,
                PyTypeObject **slot);

/* ------------------------------------------------ instances, their ends */

/* A new instance of `type` whose handle (at handle_offset in the object)
 * holds a new shared block of `size` bytes and kind `tag`.  New reference,
 * or NULL. */
PyObject *fm_shared_new(fm_state *st, PyTypeObject *type, size_t handle_offset,
                        size_t size, uint32_t tag);

/* tp_traverse of a type whose instances hold no Python object: the
 * instance's reference to its heap type. */
int fm_traverse_type(PyObject *self, visitproc visit, void *arg);

/* The two ends of a tp_dealloc: untrack the object (GC types) and clear
 * its weak references; then free it and drop its reference to its heap
 * type.  What the object holds is let go in between. */
static inline void
fm_dealloc_begin(PyObject *self)
{
    if (PyObject_IS_GC(self))
        PyObject_GC_UnTrack(self);
    if (Py_TYPE(self)->tp_weaklistoffset)
        PyObject_ClearWeakRefs(self);
}

static inline void
fm_dealloc_end(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* The member that gives a type's instances weak references, as the
 * stdlib's classes allow (multiprocessing's own helpers and tests keep
 * weakrefs to locks and queues): T has a `weakreflist` field.  And a
 * members table holding only that one, named T_members. */
#define FM_WEAKREF_MEMBER(T)                                                  \
    {"__weaklistoffset__", T_PYSSIZET, offsetof(T, weakreflist), READONLY, NULL}
#define FM_WEAKREF_MEMBERS(T)                                                 \
    static PyMemberDef T##_members[] = {FM_WEAKREF_MEMBER(T), {NULL, 0, 0, 0, NULL}}

/* ------------------------------------------------------------ arguments */

int fm_parse_args_slow(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                       PyObject *kwnames, const char *const *names, int n, int required,
                       PyObject **slots);

/* A METH_FASTCALL | METH_KEYWORDS method's arguments, by position or by
 * keyword, into slots[0..n) named `names` (NULL where not given); the
 * first `required` must be given.  Messages in the style of CPython's own
 * parser, for "fname()".  -1 with TypeError set. */
static inline int
fm_parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
              const char *const *names, int n, int required, PyObject **slots)
{
    if (kwnames == NULL && nargs <= n && nargs >= required) {
        Py_ssize_t i = 0;
        for (; i < nargs; i++)
            slots[i] = args[i];
        for (; i < n; i++)
            slots[i] = NULL;
        return 0;
    }
    return fm_parse_args_slow(fname, args, nargs, kwnames, names, n, required, slots);
}

/* A METH_FASTCALL method that takes no argument (cheaper to call than a
 * METH_NOARGS one once bound: CPython 3.11 specializes it).  -1 with
 * TypeError set when some were given. */
int fm_no_args_error(const char *fname, Py_ssize_t nargs);

static inline int
fm_no_args(const char *fname, Py_ssize_t nargs)
{
    return nargs == 0 ? 0 : fm_no_args_error(fname, nargs);
}

int fm_nargs_error(const char *fname, Py_ssize_t nargs, Py_ssize_t lo, Py_ssize_t hi);

/* A METH_FASTCALL method's positional arguments: lo to hi of them.  -1
 * with TypeError set when not. */
static inline int
fm_check_nargs(const char *fname, Py_ssize_t nargs, Py_ssize_t lo, Py_ssize_t hi)
{
    return nargs >= lo && nargs <= hi ? 0 : fm_nargs_error(fname, nargs, lo, hi);
}

/* A timeout in seconds (NULL or None: none) -> a deadline on the monotonic
 * clock (FM_FOREVER: none).  A negative timeout is "now", as SemLock's; NaN
 * is ValueError.  -1 on error. */
int fm_timeout_to_deadline(PyObject *timeout, int64_t *deadline);

/* How `block` is read: SemLock.acquire takes an integer, queue.Queue's
 * put and get any object's truth. */
enum { FM_BLOCK_TRUTH = 0, FM_BLOCK_INT = 1 };

int fm_block_timeout_slow(PyObject *block_obj, PyObject *timeout_obj, int block_as,
                          int *block, int64_t *deadline);

/* The (block, timeout) pair of acquire/put/get, either NULL when not
 * given: *block, and the deadline (FM_FOREVER: none; 0 when not blocking;
 * the timeout is then not looked at).  -1 on error. */
static inline int
fm_block_timeout(PyObject *block_obj, PyObject *timeout_obj, int block_as, int *block,
                 int64_t *deadline)
{
    if (block_obj == NULL && timeout_obj == NULL) {
        *block = 1;
        *deadline = FM_FOREVER;
        return 0;
    }
    return fm_block_timeout_slow(block_obj, timeout_obj, block_as, block, deadline);
}

/* acquire(block=True, timeout=None) as SemLock parses it. -1 on error. */
int fm_parse_acquire_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                          int *block, int64_t *deadline);

/* The one optional `timeout` argument of a wait(): *timeout is left NULL
 * when not given.  -1 with TypeError set. */
static inline int
fm_parse_timeout_arg(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                     PyObject *kwnames, PyObject **timeout)
{
    static const char *const names[] = {"timeout"};
    if (nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0) > 1) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most 1 argument", fname);
        return -1;
    }
    return fm_parse_args(fname, args, nargs, kwnames, names, 1, 0, timeout);
}

/* ------------------------------------------------------- shared mutex */

int fm_mutex_lock_slow(fm_mutex *m);

/* Lock a mutex in shared memory that guards a short section (no waits
 * inside): with the GIL released while it waits, signal handlers run
 * (KeyboardInterrupt raises), a dead holder's lock is taken over
 * (FM_RECOVERED: the section must leave its data consistent at every
 * step).  0 locked, -1 with an exception set. */
static inline int
fm_mutex_lock_py(fm_mutex *m)
{
    if (fm_mutex_trylock(m, fm_self_pid()) == FM_OK)
        return 0;
    return fm_mutex_lock_slow(m);
}

/* Lock m whatever signals say meanwhile (a waiter must hold its lock again
 * before it returns or raises): the first exception, set on entry or
 * raised by a signal handler meanwhile, is set again on return.  Returns
 * FM_OK, FM_RECOVERED or an error status (no exception set for it). */
int fm_mutex_lock_keeping_signals(fm_mutex *m);

/* --------------------------------------------------- segment hooks */

/* A shared object was made: the module's segment hook (if set) hears the
 * name of the segment this process had to create for it, or None (name
 * NULL).  -1 when the hook raised. */
int fm_segment_made(fm_state *st, const char *name);

/* This process unlinked segment `name` before exit (whoever made it): the
 * resource tracker must forget it (through the hook fastmp's _lifecycle
 * sets).  GIL held; safe in a deallocator (keeps a pending exception, the
 * hook's own errors are unraisable); st may be NULL (nothing to tell). */
void fm_segment_gone(fm_state *st, const char *name);

/* Name a segment about to be made: a fresh name (fm_shm_new_name), told
 * to the resource tracker (fm_segment_made) before the file exists, so a
 * process killed at any instant after the link leaves nothing in
 * /dev/shm.  GIL held; -1 with an exception.  A name not used after all
 * (the creation failed, or was not needed) goes back through
 * fm_segment_name_unused. */
int fm_segment_name_reserve(fm_state *st, char *name);
void fm_segment_name_unused(fm_state *st, const char *name);

/* Report the pending exception, raised by code run on the user's behalf
 * whose caller cannot take an exception (a result callback run while a
 * thread waits for results), through sys.unraisablehook -- except a
 * KeyboardInterrupt: the SIGINT handler ran inside that code, so the
 * interrupt is re-armed (PyErr_SetInterrupt) and raises in the waiting
 * call that checks signals next, instead of being lost. */
void fm_report_unraisable(PyObject *where);

/* ---------------------------------------------- _fm_state / _fm_attach */

/* What another process needs to attach an object: its _fm_state() tuple
 * starts (segment name, offset); the docstrings of the two methods. */
#define FM_STATE_DOC                                                          \
    "_fm_state($self, /)\n--\n\n"                                             \
    "What another process needs to attach this object: (segment, offset, ...)."
#define FM_ATTACH_DOC                                                         \
    "_fm_attach($type, state, /)\n--\n\n"                                     \
    "Attach to the object another process described with _fm_state()."

/* (segment name, offset) of a handle: the start of every _fm_state(). */
PyObject *fm_handle_state(const fm_handle *h);

/* _fm_attach(state): state must be a tuple of n items (at least n unless
 * exact).  -1 with TypeError set. */
int fm_check_state(PyObject *state, Py_ssize_t n, int exact);

/* A new instance of `type` whose handle (at handle_offset in the object)
 * is attached to the block of kind `tag` that state[0:2] names.  New
 * reference, or NULL. */
PyObject *fm_attach_new(fm_state *st, PyTypeObject *type, PyObject *state,
                        size_t handle_offset, uint32_t tag);

#endif
