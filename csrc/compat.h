/* compat.h: the C API fastmp uses, on every Python it supports (3.9+).
 *
 * fastmp is written against the newest API it needs; what an older
 * interpreter lacks is supplied here, once, so no other file tests
 * PY_VERSION_HEX.  Included by fastmp.h after Python.h.  Each shim keeps the
 * reference semantics of the API it stands for. */
#ifndef FASTMP_COMPAT_H
#define FASTMP_COMPAT_H

#include <Python.h>

/* 3.10: Py_NewRef / Py_XNewRef, a new strong reference to o, returned. */
#if PY_VERSION_HEX < 0x030A0000
static inline PyObject *
fm_compat_new_ref(PyObject *o)
{
    Py_INCREF(o);
    return o;
}

static inline PyObject *
fm_compat_xnew_ref(PyObject *o)
{
    Py_XINCREF(o);
    return o;
}
#define Py_NewRef(o) fm_compat_new_ref((PyObject *)(o))
#define Py_XNewRef(o) fm_compat_xnew_ref((PyObject *)(o))
#endif

/* 3.10: the PyLong_As* conversions take an object's __index__ only.  3.9's
 * fell back on __int__ (a float was truncated, with a DeprecationWarning);
 * here they take __index__ on every version, so a float given for an integer
 * is a TypeError everywhere, as ctypes and the stdlib make it. */
#if PY_VERSION_HEX < 0x030A0000
#define FM_COMPAT_AS(ret, name, call, fail)                                    \
    static inline ret                                                         \
    fm_compat_##name(PyObject *o)                                             \
    {                                                                         \
        if (o != NULL && !PyLong_Check(o)) {                                  \
            PyObject *i = PyNumber_Index(o);                                  \
            if (i == NULL)                                                    \
                return (fail);                                                \
            ret r = call(i);                                                  \
            Py_DECREF(i);                                                     \
            return r;                                                         \
        }                                                                     \
        return call(o);                                                       \
    }
FM_COMPAT_AS(long, as_long, PyLong_AsLong, -1)
FM_COMPAT_AS(long long, as_long_long, PyLong_AsLongLong, -1)
FM_COMPAT_AS(unsigned long long, as_ull_mask, PyLong_AsUnsignedLongLongMask,
             (unsigned long long)-1)
#undef FM_COMPAT_AS

static inline long
fm_compat_as_long_and_overflow(PyObject *o, int *overflow)
{
    *overflow = 0;
    if (o != NULL && !PyLong_Check(o)) {
        PyObject *i = PyNumber_Index(o);
        if (i == NULL)
            return -1;
        long r = PyLong_AsLongAndOverflow(i, overflow);
        Py_DECREF(i);
        return r;
    }
    return PyLong_AsLongAndOverflow(o, overflow);
}

static inline long long
fm_compat_as_long_long_and_overflow(PyObject *o, int *overflow)
{
    *overflow = 0;
    if (o != NULL && !PyLong_Check(o)) {
        PyObject *i = PyNumber_Index(o);
        if (i == NULL)
            return -1;
        long long r = PyLong_AsLongLongAndOverflow(i, overflow);
        Py_DECREF(i);
        return r;
    }
    return PyLong_AsLongLongAndOverflow(o, overflow);
}

#define PyLong_AsLong(o) fm_compat_as_long(o)
#define PyLong_AsLongLong(o) fm_compat_as_long_long(o)
#define PyLong_AsUnsignedLongLongMask(o) fm_compat_as_ull_mask(o)
#define PyLong_AsLongAndOverflow(o, ov) fm_compat_as_long_and_overflow((o), (ov))
#define PyLong_AsLongLongAndOverflow(o, ov) fm_compat_as_long_long_and_overflow((o), (ov))
#endif

/* The raised exception as one object, and raising one again: 3.12's
 * PyErr_GetRaisedException / PyErr_SetRaisedException.  Before 3.12 the
 * (type, value, traceback) triple is normalized and the traceback kept on the
 * value, so nothing is lost in the round trip. */
static inline PyObject *
fm_exc_take(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    if (t == NULL)
        return NULL;
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb != NULL && v != NULL)
        PyException_SetTraceback(v, tb);
    Py_XDECREF(t);
    Py_XDECREF(tb);
    return v;
#endif
}

/* Raise exc again, stealing the reference; NULL clears the error indicator. */
static inline void
fm_exc_restore(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    if (exc == NULL) {
        PyErr_Restore(NULL, NULL, NULL);
        return;
    }
    PyObject *tb = PyException_GetTraceback(exc);
    PyObject *t = (PyObject *)Py_TYPE(exc);
    Py_INCREF(t);
    PyErr_Restore(t, exc, tb);
#endif
}

/* The module (borrowed) whose definition is `def` and that made `tp` or one
 * of its heap-type bases: 3.11's PyType_GetModuleByDef.  NULL with TypeError
 * set when there is none. */
static inline PyObject *
fm_type_module_by_def(PyTypeObject *tp, PyModuleDef *def)
{
#if PY_VERSION_HEX >= 0x030B0000
    return PyType_GetModuleByDef(tp, def);
#else
    PyObject *mro = tp->tp_mro;
    for (Py_ssize_t i = 0; mro != NULL && i < PyTuple_GET_SIZE(mro); i++) {
        PyTypeObject *base = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
        if (!PyType_HasFeature(base, Py_TPFLAGS_HEAPTYPE))
            continue;
        /* Only heap types made from a spec with a module have one; reading
         * the field directly avoids the TypeError PyType_GetModule sets. */
        PyObject *m = ((PyHeapTypeObject *)base)->ht_module;
        if (m != NULL && PyModule_GetDef(m) == def)
            return m;
    }
    PyErr_Format(PyExc_TypeError, "'%s' is not a type of module %s",
                 tp->tp_name, def->m_name);
    return NULL;
#endif
}

#endif
