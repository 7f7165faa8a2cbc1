/* pool_result.c: ApplyResult, what Pool.apply_async() returns.
 *
 * It is a C type so that the pool's collector (dispatch() in
 * pool_collect.c) can hand a result over without running any Python code:
 * a burst of apply_async() calls makes one result object per task, and a
 * Python class with a __dict__, a Python-level _set() and _finish() per
 * result cost more than the whole trip through shared memory.  MapResult
 * (fastmp/pool.py) subclasses it in Python and keeps its own _set(); the
 * collector's fast path takes only exact ApplyResults.
 *
 * Waiting: get()/wait() collect results in the waiting thread through the
 * channel (fm_pool_channel_wait); only when the channel cannot be waited on
 * (the pool is ending) does a waiter fall back to a threading.Event, made
 * on demand.  Everything runs with the GIL held: ready is set before the
 * event is read, and a waiter stores the event before reading ready, so one
 * of the two always sees the other. */
#include "fastmp.h"

#include <stddef.h>
#include <structmember.h>

#include "pool.h"

typedef struct {
    PyObject_HEAD
    PyObject *job;              /* job number: the key in cache */
    PyObject *cache;            /* the pool's {job: result} */
    PyObject *pool;             /* kept alive until ready, as the stdlib does */
    PyObject *channel;          /* PoolChannel to collect on, or NULL */
    PyObject *callback, *error_callback;
    PyObject *event;            /* threading.Event, made only when needed */
    PyObject *value;            /* the result, or the exception */
    char ready, success;
    PyObject *weakreflist;
} ApplyResultObject;

static PyObject *
next_job(fm_state *st)
{
    return PyLong_FromUnsignedLongLong(++st->pool_last_job);
}

/* ----------------------------------------------------------- completion */

static void
result_finish(ApplyResultObject *self)
{
    self->ready = 1;
    if (self->event != NULL) {
        PyObject *r = PyObject_CallMethod(self->event, "set", NULL);
        if (r == NULL)
            PyErr_WriteUnraisable(self->event);
        Py_XDECREF(r);
    }
    if (self->cache != NULL && self->job != NULL && PyDict_Check(self->cache)) {
        if (PyDict_DelItem(self->cache, self->job) < 0) {
            if (PyErr_ExceptionMatches(PyExc_KeyError))
                PyErr_Clear();
            else
                PyErr_WriteUnraisable((PyObject *)self);
        }
    }
    /* the pool may go now (and run its finalizer): do it last; a callback
     * that refers to this result would otherwise keep a cycle alive */
    Py_CLEAR(self->callback);
    Py_CLEAR(self->error_callback);
    Py_CLEAR(self->channel);
    Py_CLEAR(self->pool);
}

void
fm_apply_result_complete(PyObject *result, int ok, PyObject *value)
{
    ApplyResultObject *self = (ApplyResultObject *)result;
    Py_INCREF(value);
    Py_XSETREF(self->value, value);
    self->success = (char)(ok != 0);
    /* as in the stdlib, the callback has run when get() returns */
    PyObject *cb = ok ? self->callback : self->error_callback;
    if (cb != NULL && cb != Py_None) {
        Py_INCREF(cb);
        PyObject *r = PyObject_CallOneArg(cb, value);
        if (r == NULL)
            fm_report_unraisable(cb);
        Py_XDECREF(r);
        Py_DECREF(cb);
    }
    result_finish(self);
}

int
fm_is_apply_result(fm_state *st, PyObject *obj)
{
    return st->ApplyResultType != NULL && Py_IS_TYPE(obj, st->ApplyResultType);
}

PyObject *
fm_apply_result_job(PyObject *result)
{
    return ((ApplyResultObject *)result)->job;
}

/* ------------------------------------------------------------- creation */

static int
result_setup(fm_state *st, ApplyResultObject *self, PyObject *pool, PyObject *cache,
             PyObject *channel, PyObject *callback, PyObject *error_callback)
{
    PyObject *job = next_job(st);
    if (job == NULL)
        return -1;
    Py_XSETREF(self->job, job);
    Py_XSETREF(self->cache, Py_NewRef(cache));
    Py_XSETREF(self->pool, Py_NewRef(pool));
    Py_XSETREF(self->channel, channel == Py_None ? NULL : Py_NewRef(channel));
    Py_XSETREF(self->callback, callback == Py_None ? NULL : Py_NewRef(callback));
    Py_XSETREF(self->error_callback,
               error_callback == Py_None ? NULL : Py_NewRef(error_callback));
    Py_CLEAR(self->event);
    Py_CLEAR(self->value);
    self->ready = 0;
    self->success = 0;
    return PyObject_SetItem(cache, job, (PyObject *)self);
}

PyObject *
fm_apply_result_new(fm_state *st, PyObject *pool, PyObject *cache, PyObject *channel,
                    PyObject *callback, PyObject *error_callback)
{
    PyTypeObject *tp = st->ApplyResultType;
    ApplyResultObject *self = (ApplyResultObject *)tp->tp_alloc(tp, 0);
    if (self == NULL)
        return NULL;
    if (result_setup(st, self, pool, cache, channel, callback, error_callback) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* ApplyResult(pool, callback, error_callback): as the stdlib's, for
 * subclasses (MapResult) and code that builds one itself. */
static int
ApplyResult_init(ApplyResultObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"pool", "callback", "error_callback", NULL};
    PyObject *pool, *callback = Py_None, *error_callback = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO:ApplyResult", kwlist, &pool, &callback,
                                     &error_callback))
        return -1;
    fm_state *st = fm_state_of_type(Py_TYPE(self));
    if (st == NULL)
        return -1;
    PyObject *cache = PyObject_GetAttrString(pool, "_cache");
    if (cache == NULL)
        return -1;
    /* the pool's channel, if it has one (fastmp's Pool: _dispatcher.channel) */
    PyObject *channel = NULL;
    PyObject *d = PyObject_GetAttrString(pool, "_dispatcher");
    if (d == NULL && PyErr_ExceptionMatches(PyExc_AttributeError))
        PyErr_Clear();
    else if (d == NULL) {
        Py_DECREF(cache);
        return -1;
    }
    if (d != NULL && d != Py_None) {
        channel = PyObject_GetAttrString(d, "channel");
        if (channel == NULL) {
            Py_DECREF(d);
            Py_DECREF(cache);
            return -1;
        }
    }
    Py_XDECREF(d);
    int rc = result_setup(st, self, pool, cache, channel ? channel : Py_None, callback,
                          error_callback);
    Py_XDECREF(channel);
    Py_DECREF(cache);
    return rc;
}

/* -------------------------------------------------------------- waiting */

/* Wait until ready or the deadline: 0, or -1 with an exception set. */
static int
result_wait(ApplyResultObject *self, int64_t deadline)
{
    while (!self->ready && self->channel != NULL) {
        if (deadline != FM_FOREVER && fm_now_ns() >= deadline)
            return 0;
        PyObject *ch = Py_NewRef(self->channel);
        int r = fm_pool_channel_wait(ch, deadline);
        Py_DECREF(ch);
        if (r < 0)
            return -1;
        if (r == 2)
            break;          /* the pool is ending: the event's way */
    }
    if (self->ready)
        return 0;
    if (self->event == NULL) {
        fm_state *st = fm_state_of_type(Py_TYPE(self));
        if (st == NULL)
            return -1;
        if (st->ThreadingEvent == NULL &&
            (st->ThreadingEvent = fm_pool_import_attr("threading", "Event")) == NULL)
            return -1;
        PyObject *ev = PyObject_CallNoArgs(st->ThreadingEvent);
        if (ev == NULL)
            return -1;
        /* making it ran Python code: another waiter may have made one */
        if (self->event == NULL)
            self->event = ev;
        else
            Py_DECREF(ev);
        if (self->ready)
            return 0;
    }
    PyObject *timeout;
    if (deadline == FM_FOREVER) {
        timeout = Py_NewRef(Py_None);
    }
    else {
        int64_t left = deadline - fm_now_ns();
        timeout = PyFloat_FromDouble(left > 0 ? (double)left / 1e9 : 0.0);
        if (timeout == NULL)
            return -1;
    }
    PyObject *ev = Py_NewRef(self->event);
    PyObject *r = PyObject_CallMethod(ev, "wait", "O", timeout);
    Py_DECREF(ev);
    Py_DECREF(timeout);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

PyDoc_STRVAR(wait_doc,
"wait($self, /, timeout=None)\n--\n\n"
"Wait until the result is ready, or timeout seconds.");

static PyObject *
ApplyResult_wait(ApplyResultObject *self, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames)
{
    int64_t deadline;
    PyObject *timeout;
    if (fm_parse_timeout_arg("wait", args, nargs, kwnames, &timeout) < 0 ||
        fm_timeout_to_deadline(timeout, &deadline) < 0)
        return NULL;
    if (!self->ready && result_wait(self, deadline) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(get_doc,
"get($self, /, timeout=None)\n--\n\n"
"The result, once ready; raises the task's exception if it raised, and\n"
"multiprocessing.TimeoutError if not ready within timeout seconds.");

static PyObject *
ApplyResult_get(ApplyResultObject *self, PyObject *const *args, Py_ssize_t nargs,
                PyObject *kwnames)
{
    if (!self->ready) {
        int64_t deadline;
        PyObject *timeout;
        if (fm_parse_timeout_arg("get", args, nargs, kwnames, &timeout) < 0 ||
            fm_timeout_to_deadline(timeout, &deadline) < 0)
            return NULL;
        /* a subclass's own wait() is honoured */
        fm_state *st = fm_state_of_type(Py_TYPE(self));
        if (st == NULL)
            return NULL;
        if (Py_IS_TYPE(self, st->ApplyResultType)) {
            if (result_wait(self, deadline) < 0)
                return NULL;
        }
        else {
            PyObject *r = PyObject_CallMethod((PyObject *)self, "wait", "O",
                                              timeout ? timeout : Py_None);
            if (r == NULL)
                return NULL;
            Py_DECREF(r);
        }
        if (!self->ready) {
            if (st->PoolTimeoutError == NULL &&
                (st->PoolTimeoutError =
                     fm_pool_import_attr("multiprocessing.context", "TimeoutError")) == NULL)
                return NULL;
            PyErr_SetNone(st->PoolTimeoutError);
            return NULL;
        }
    }
    if (self->value == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "ApplyResult is ready without a value");
        return NULL;
    }
    if (self->success)
        return Py_NewRef(self->value);
    if (PyExceptionInstance_Check(self->value)) {
        PyErr_SetObject((PyObject *)Py_TYPE(self->value), self->value);
    }
    else {
        PyErr_Format(PyExc_TypeError, "exceptions must derive from BaseException, not %.200s",
                     Py_TYPE(self->value)->tp_name);
    }
    return NULL;
}

static PyObject *
ApplyResult_ready(ApplyResultObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->ready);
}

static PyObject *
ApplyResult_successful(ApplyResultObject *self, PyObject *Py_UNUSED(ignored))
{
    if (!self->ready) {
        PyErr_Format(PyExc_ValueError, "%R not ready", (PyObject *)self);
        return NULL;
    }
    return PyBool_FromLong(self->success);
}

/* _set(i, (success, value)): the hand-over, as the stdlib's method. */
static PyObject *
ApplyResult_set(ApplyResultObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (fm_check_nargs("_set", nargs, 2, 2) < 0)
        return NULL;
    if (!PyTuple_Check(args[1]) || PyTuple_GET_SIZE(args[1]) != 2) {
        PyErr_SetString(PyExc_TypeError, "_set(i, (success, value))");
        return NULL;
    }
    int ok = PyObject_IsTrue(PyTuple_GET_ITEM(args[1], 0));
    if (ok < 0)
        return NULL;
    fm_apply_result_complete((PyObject *)self, ok, PyTuple_GET_ITEM(args[1], 1));
    Py_RETURN_NONE;
}

/* _set_run(first, pairs): the dispatcher's hand-over of a run of tasks; an
 * ApplyResult has one task (first 0). */
static PyObject *
ApplyResult_set_run(ApplyResultObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (fm_check_nargs("_set_run", nargs, 2, 2) < 0)
        return NULL;
    if (!PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "_set_run(first, pairs: list)");
        return NULL;
    }
    if (PyList_GET_SIZE(args[1]) == 0)
        Py_RETURN_NONE;
    PyObject *pair = PyList_GET_ITEM(args[1], 0);
    PyObject *call[3] = {(PyObject *)self, args[0], pair};
    /* through _set, which a subclass may have replaced */
    PyObject *name = PyUnicode_InternFromString("_set");
    if (name == NULL)
        return NULL;
    PyObject *r = PyObject_VectorcallMethod(name, call, 3, NULL);
    Py_DECREF(name);
    return r;
}

/* _fail_held(first, count, exc): a lost worker held this task. */
static PyObject *
ApplyResult_fail_held(ApplyResultObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (fm_check_nargs("_fail_held", nargs, 3, 3) < 0)
        return NULL;
    if (!self->ready)
        fm_apply_result_complete((PyObject *)self, 0, args[2]);
    Py_RETURN_NONE;
}

static PyObject *
ApplyResult_finish(ApplyResultObject *self, PyObject *Py_UNUSED(ignored))
{
    result_finish(self);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------- the type */

static PyObject *
get_ready(ApplyResultObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->ready);
}

static int
set_ready(ApplyResultObject *self, PyObject *v, void *Py_UNUSED(closure))
{
    int b = v == NULL ? 0 : PyObject_IsTrue(v);
    if (b < 0)
        return -1;
    self->ready = (char)b;
    return 0;
}

static PyObject *
get_success(ApplyResultObject *self, void *Py_UNUSED(closure))
{
    if (!self->ready && self->value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "_success");
        return NULL;
    }
    return PyBool_FromLong(self->success);
}

static int
set_success(ApplyResultObject *self, PyObject *v, void *Py_UNUSED(closure))
{
    int b = v == NULL ? 0 : PyObject_IsTrue(v);
    if (b < 0)
        return -1;
    self->success = (char)b;
    return 0;
}

/* __class__ of an exact ApplyResult: the class fastmp.pool names
 * ApplyResult, a Python subclass of this type and of the stdlib's
 * multiprocessing.pool.ApplyResult, which pool.py stores in this type's
 * dict as _fm_public_class.  isinstance() looks at __class__ when the
 * type itself does not match, so isinstance(r, multiprocessing.pool.
 * ApplyResult) holds, while results stay of this type: untracked by the GC,
 * without a __dict__, completed by the collector without Python code (a
 * C type cannot take a Python class as its base without both).
 * Subclasses' instances (MapResult) have their own type. */
static PyObject *
get_class(ApplyResultObject *self, void *Py_UNUSED(closure))
{
    PyTypeObject *tp = Py_TYPE(self);
    fm_state *st = fm_state_of_type(tp);
    if (st == NULL)
        PyErr_Clear();
    else if (tp == st->ApplyResultType && tp->tp_dict != NULL) {
        PyObject *cls = PyDict_GetItemString(tp->tp_dict, "_fm_public_class");
        if (cls != NULL && PyType_Check(cls) &&
            PyType_IsSubtype((PyTypeObject *)cls, tp))
            return Py_NewRef(cls);
    }
    return Py_NewRef((PyObject *)tp);
}

static PyGetSetDef ApplyResult_getset[] = {
    {"_ready", (getter)get_ready, (setter)set_ready, NULL, NULL},
    {"_success", (getter)get_success, (setter)set_success, NULL, NULL},
    {"__class__", (getter)get_class, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef ApplyResult_members[] = {
    {"_job", T_OBJECT, offsetof(ApplyResultObject, job), READONLY, NULL},
    {"_cache", T_OBJECT, offsetof(ApplyResultObject, cache), 0, NULL},
    {"_pool", T_OBJECT, offsetof(ApplyResultObject, pool), 0, NULL},
    {"_channel", T_OBJECT, offsetof(ApplyResultObject, channel), 0, NULL},
    {"_callback", T_OBJECT, offsetof(ApplyResultObject, callback), 0, NULL},
    {"_error_callback", T_OBJECT, offsetof(ApplyResultObject, error_callback), 0, NULL},
    {"_event", T_OBJECT, offsetof(ApplyResultObject, event), 0, NULL},
    {"_value", T_OBJECT_EX, offsetof(ApplyResultObject, value), 0, NULL},
    FM_WEAKREF_MEMBER(ApplyResultObject),
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef ApplyResult_methods[] = {
    {"ready", (PyCFunction)ApplyResult_ready, METH_NOARGS,
     PyDoc_STR("ready($self, /)\n--\n\nWhether the task has finished.")},
    {"successful", (PyCFunction)ApplyResult_successful, METH_NOARGS,
     PyDoc_STR("successful($self, /)\n--\n\nWhether the task returned without raising; "
               "ValueError if not ready.")},
    {"wait", (PyCFunction)(void (*)(void))ApplyResult_wait, METH_FASTCALL | METH_KEYWORDS,
     wait_doc},
    {"get", (PyCFunction)(void (*)(void))ApplyResult_get, METH_FASTCALL | METH_KEYWORDS,
     get_doc},
    {"_set", (PyCFunction)(void (*)(void))ApplyResult_set, METH_FASTCALL, NULL},
    {"_set_run", (PyCFunction)(void (*)(void))ApplyResult_set_run, METH_FASTCALL, NULL},
    {"_fail_held", (PyCFunction)(void (*)(void))ApplyResult_fail_held, METH_FASTCALL, NULL},
    {"_finish", (PyCFunction)ApplyResult_finish, METH_NOARGS, NULL},
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS,
     PyDoc_STR("See PEP 585")},
    {NULL, NULL, 0, NULL},
};

static void
result_drop_refs(ApplyResultObject *self)
{
    Py_CLEAR(self->cache);
    Py_CLEAR(self->pool);
    Py_CLEAR(self->channel);
    Py_CLEAR(self->callback);
    Py_CLEAR(self->error_callback);
    Py_CLEAR(self->event);
    Py_CLEAR(self->value);
}

static void
ApplyResult_dealloc(ApplyResultObject *self)
{
    fm_dealloc_begin((PyObject *)self);
    result_drop_refs(self);
    Py_CLEAR(self->job);
    fm_dealloc_end((PyObject *)self);
}

static PyType_Slot ApplyResult_slots[] = {
    {Py_tp_doc, "The result of Pool.apply_async(): get(), wait(), ready(), successful()."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, ApplyResult_init},
    {Py_tp_dealloc, ApplyResult_dealloc},
    {Py_tp_methods, ApplyResult_methods},
    {Py_tp_members, ApplyResult_members},
    {Py_tp_getset, ApplyResult_getset},
    {0, NULL},
};

static PyType_Spec ApplyResult_spec = {
    .name = "fastmp._core.ApplyResult",
    .basicsize = sizeof(ApplyResultObject),
    /* Not tracked by the garbage collector: a burst of apply_async() keeps
     * tens of thousands of them alive at once, and each collection of the
     * young generation would walk them all.  The cycles one is part of
     * (result -> pool -> its cache -> result; result -> callback -> result)
     * are broken when it completes (result_finish), and a pool's workers
     * complete every result unless the pool is terminated, which drops the
     * pool from the results left pending (fastmp/pool.py). */
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = ApplyResult_slots,
};

PyDoc_STRVAR(pool_next_job_doc,
"pool_next_job($module, /)\n--\n\n"
"A new job number for the pool dispatcher (every kind of job shares them).");

static PyObject *
pool_next_job(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return next_job(fm_state_of_module(module));
}

PyDoc_STRVAR(pool_report_callback_error_doc,
"pool_report_callback_error($module, callback, exc, /)\n--\n\n"
"Report exc, raised by a result's callback, through sys.unraisablehook (as\n"
"the C hand-over does): the pool carries on.");

static PyObject *
pool_report_callback_error(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (fm_check_nargs("pool_report_callback_error", nargs, 2, 2) < 0)
        return NULL;
    if (!PyExceptionInstance_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "pool_report_callback_error(callback, exc)");
        return NULL;
    }
    PyErr_SetObject((PyObject *)Py_TYPE(args[1]), args[1]);
    PyErr_WriteUnraisable(args[0]);
    Py_RETURN_NONE;
}

PyMethodDef fm_pool_result_module_methods[] = {
    {"pool_next_job", pool_next_job, METH_NOARGS, pool_next_job_doc},
    {"pool_report_callback_error", (PyCFunction)(void (*)(void))pool_report_callback_error,
     METH_FASTCALL, pool_report_callback_error_doc},
    {NULL, NULL, 0, NULL},
};

int
fm_pool_result_add_types(PyObject *module, fm_state *st)
{
    return fm_add_type(module, &ApplyResult_spec, NULL, &st->ApplyResultType);
}
