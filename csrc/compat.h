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
