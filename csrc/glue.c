/* glue.c: the CPython side every Python-facing file shares (see glue.h):
 * module state, errors, type registration, argument parsing, the shared
 * mutex with the GIL released, segment hooks, attaching. */
#include "fastmp.h"

#include <errno.h>
#include <string.h>

/* ------------------------------------------------------- module state */

fm_state *
fm_state_of_type(PyTypeObject *tp)
{
    PyObject *m = fm_type_module_by_def(tp, &fm_module_def);
    if (m == NULL)
        return NULL;
    return fm_state_of_module(m);
}

PyObject *
fm_set_error(int status)
{
    switch (status) {
    case FM_ERRNO:
        return PyErr_SetFromErrno(PyExc_OSError);
    case FM_NOMEM:
        return PyErr_Format(PyExc_ValueError,
                            "shared object too large for the block allocator");
    case FM_OVERFLOW:
        PyErr_SetString(PyExc_ValueError, "semaphore or lock released too many times");
        return NULL;
    case FM_CORRUPT:
        PyErr_SetString(PyExc_RuntimeError, "fastmp: shared segment is corrupt");
        return NULL;
    case FM_PYERR:
        return NULL;
    default:
        return PyErr_Format(PyExc_SystemError, "fastmp: unexpected status %d", status);
    }
}

/* --------------------------------------------------- type registration */

int
fm_add_type(PyObject *module, PyType_Spec *spec, PyTypeObject *base, PyTypeObject **slot)
{
    PyObject *bases = NULL;     /* a tuple: Python 3.9 takes no bare type here */
    if (base != NULL && (bases = PyTuple_Pack(1, (PyObject *)base)) == NULL)
        return -1;
    PyObject *tp = PyType_FromModuleAndSpec(module, spec, bases);
    Py_XDECREF(bases);
    if (tp == NULL)
        return -1;
    *slot = (PyTypeObject *)tp;     /* the state's reference (module_clear drops it) */
    Py_INCREF(tp);
    const char *dot = strrchr(spec->name, '.');
    if (PyModule_AddObject(module, dot ? dot + 1 : spec->name, tp) < 0) {
        Py_DECREF(tp);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------ instances, their ends */

PyObject *
fm_shared_new(fm_state *st, PyTypeObject *type, size_t handle_offset, size_t size,
              uint32_t tag)
{
    PyObject *self = type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    if (fm_handle_new(st, (fm_handle *)((char *)self + handle_offset), size, tag) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return self;
}

int
fm_traverse_type(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    return 0;
}

/* ------------------------------------------------------------ arguments */

int
fm_parse_args_slow(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                   PyObject *kwnames, const char *const *names, int n, int required,
                   PyObject **slots)
{
    for (int j = 0; j < n; j++)
        slots[j] = NULL;
    if (nargs > n) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d argument%s (%zd given)", fname, n,
                     n == 1 ? "" : "s", nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        slots[i] = args[i];
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i);
        int j;
        for (j = 0; j < n; j++)
            if (PyUnicode_CompareWithASCIIString(key, names[j]) == 0)
                break;
        if (j == n) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", fname,
                         key);
            return -1;
        }
        if (slots[j] != NULL) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%U'", fname,
                         key);
            return -1;
        }
        slots[j] = args[nargs + i];
    }
    for (int j = 0; j < required; j++)
        if (slots[j] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fname,
                         names[j]);
            return -1;
        }
    return 0;
}

int
fm_no_args_error(const char *fname, Py_ssize_t nargs)
{
    PyErr_Format(PyExc_TypeError, "%s() takes no arguments (%zd given)", fname, nargs);
    return -1;
}

int
fm_nargs_error(const char *fname, Py_ssize_t nargs, Py_ssize_t lo, Py_ssize_t hi)
{
    if (lo == hi)
        PyErr_Format(PyExc_TypeError, "%s() takes exactly %zd argument%s (%zd given)",
                     fname, lo, lo == 1 ? "" : "s", nargs);
    else
        PyErr_Format(PyExc_TypeError, "%s() takes from %zd to %zd arguments (%zd given)",
                     fname, lo, hi, nargs);
    return -1;
}

int
fm_timeout_to_deadline(PyObject *timeout, int64_t *deadline)
{
    if (timeout == NULL || timeout == Py_None) {
        *deadline = FM_FOREVER;
        return 0;
    }
    double secs = PyFloat_AsDouble(timeout);
    if (secs == -1.0 && PyErr_Occurred())
        return -1;
    if (secs != secs) {
        PyErr_SetString(PyExc_ValueError, "timeout must not be NaN");
        return -1;
    }
    *deadline = fm_deadline_after(secs);    /* negative: now, as SemLock */
    return 0;
}

int
fm_block_timeout_slow(PyObject *block_obj, PyObject *timeout_obj, int block_as, int *block,
                      int64_t *deadline)
{
    *block = 1;
    *deadline = FM_FOREVER;
    if (block_obj != NULL) {
        if (block_as == FM_BLOCK_INT) {
            /* like SemLock: an integer, not any truthy object */
            long b = PyLong_AsLong(block_obj);
            if (b == -1 && PyErr_Occurred())
                return -1;
            *block = b != 0;
        }
        else {
            int b = PyObject_IsTrue(block_obj);
            if (b < 0)
                return -1;
            *block = b;
        }
    }
    if (!*block) {
        *deadline = 0;
        return 0;
    }
    return fm_timeout_to_deadline(timeout_obj, deadline);
}

int
fm_parse_acquire_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                      int *block, int64_t *deadline)
{
    static const char *const names[] = {"block", "timeout"};
    PyObject *a[2];
    if (fm_parse_args("acquire", args, nargs, kwnames, names, 2, 0, a) < 0)
        return -1;
    return fm_block_timeout(a[0], a[1], FM_BLOCK_INT, block, deadline);
}

/* ------------------------------------------------------- shared mutex */

int
fm_mutex_lock_slow(fm_mutex *m)
{
    int st;
    FM_BLOCKING(st, fm_mutex_lock(m, fm_self_pid(), FM_FOREVER, fm_spin));
    if (st == FM_OK || st == FM_RECOVERED)
        return 0;
    fm_set_error(st);
    return -1;
}

int
fm_mutex_lock_keeping_signals(fm_mutex *m)
{
    PyObject *first = fm_exc_take();    /* NULL: none yet */
    uint32_t pid = fm_self_pid();
    int st = fm_mutex_trylock(m, pid);
    while (st != FM_OK) {
        FM_BLOCKING(st, fm_mutex_lock(m, pid, FM_FOREVER, fm_spin));
        if (st != FM_PYERR)
            break;
        PyObject *exc = fm_exc_take();
        if (first == NULL)
            first = exc;
        else
            Py_XDECREF(exc);
    }
    if (first != NULL)
        fm_exc_restore(first);
    return st;
}

/* --------------------------------------------------- segment hooks */

int
fm_segment_made(fm_state *st, const char *name)
{
    if (st->segment_hook == NULL)
        return 0;
    PyObject *arg = name != NULL ? PyUnicode_FromString(name) : Py_NewRef(Py_None);
    if (arg == NULL)
        return -1;
    PyObject *r = PyObject_CallOneArg(st->segment_hook, arg);
    Py_DECREF(arg);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

int
fm_segment_name_reserve(fm_state *st, char *name)
{
    if (fm_shm_new_name(name) != FM_OK) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return fm_segment_made(st, name);
}

void
fm_segment_name_unused(fm_state *st, const char *name)
{
    if (name[0] != '\0')
        fm_segment_gone(st, name);
}

void
fm_report_unraisable(PyObject *where)
{
    if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
        PyErr_Clear();
        PyErr_SetInterrupt();
        return;
    }
    PyErr_WriteUnraisable(where);
}

void
fm_segment_gone(fm_state *st, const char *name)
{
    if (st == NULL || st->segment_gone_hook == NULL)
        return;
    /* often called from a deallocator: keep any pending exception, and
     * report the hook's own errors as unraisable */
    PyObject *pending = fm_exc_take();
    PyObject *r = PyObject_CallFunction(st->segment_gone_hook, "s", name);
    if (r == NULL)
        PyErr_WriteUnraisable(st->segment_gone_hook);
    Py_XDECREF(r);
    fm_exc_restore(pending);
}

/* ---------------------------------------------- _fm_state / _fm_attach */

PyObject *
fm_handle_state(const fm_handle *h)
{
    return Py_BuildValue("(NK)", fm_handle_name(h), (unsigned long long)h->offset);
}

int
fm_check_state(PyObject *state, Py_ssize_t n, int exact)
{
    if (PyTuple_Check(state) &&
        (exact ? PyTuple_GET_SIZE(state) == n : PyTuple_GET_SIZE(state) >= n))
        return 0;
    PyErr_SetString(PyExc_TypeError, "_fm_attach() needs the tuple _fm_state() returned");
    return -1;
}

PyObject *
fm_attach_new(fm_state *st, PyTypeObject *type, PyObject *state, size_t handle_offset,
              uint32_t tag)
{
    PyObject *self = type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    fm_handle *h = (fm_handle *)((char *)self + handle_offset);
    if (fm_handle_attach(st, h, PyTuple_GET_ITEM(state, 0), PyTuple_GET_ITEM(state, 1),
                         tag) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return self;
}
