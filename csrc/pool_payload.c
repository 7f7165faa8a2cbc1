/* pool_payload.c: what a pool channel's entry holds (pool_wire.h), both
 * ways: a pickle, a packed array of a map chunk's numbers, or a reference
 * to a segment of its own for an entry too large for the ring.  The parent
 * (pool.c, pool_collect.c) and the workers (pool_worker.c) share these. */
#include "fastmp.h"

#include <signal.h>
#include <string.h>
#include <sys/mman.h>

#include "pool.h"

/* --------------------------------------------------------------- pickling */

PyObject *
fm_pool_pickle(PyObject *dumps, PyObject *fallback, PyObject *obj)
{
    PyObject *args[2] = {obj, NULL};
    PyObject *proto = PyLong_FromLong(-1);
    if (proto == NULL)
        return NULL;
    args[1] = proto;
    PyObject *b = PyObject_Vectorcall(dumps, args, 2, NULL);
    Py_DECREF(proto);
    if (b == NULL && fallback != NULL) {
        /* Lambdas, closures, objects only ForkingPickler knows: the Python
         * fallback tries the other picklers and re-raises this error if
         * none can. */
        PyObject *exc = fm_exc_take();
        b = PyObject_CallFunctionObjArgs(fallback, obj, exc, NULL);
        Py_DECREF(exc);
    }
    if (b != NULL && !PyBytes_Check(b)) {
        PyObject *c = PyBytes_FromObject(b);
        Py_DECREF(b);
        b = c;
    }
    return b;
}

/* ------------------------------------------------------------ big entries */

/* GIL held: put data in a segment of its own, registered with the tracker
 * (segment hook) and unmapped here; *ref names it.  -1 with an exception. */
static int
big_store(fm_state *st, const char *data, size_t len, fm_big_ref *ref)
{
    fm_segment *seg;
    int s = fm_segment_create(len ? len : 1, &seg);
    if (s != FM_OK) {
        fm_set_error(s);
        return -1;
    }
    memcpy(seg->base, data, len);
    memset(ref, 0, sizeof *ref);
    ref->len = len;
    memcpy(ref->name, seg->name, sizeof ref->name);
    if (fm_segment_made(st, seg->name) < 0) {
        fm_segment_destroy(seg, 1);
        return -1;
    }
    /* The receiver unlinks it; this process must not at its exit. */
    seg->unlinked = 1;
    fm_segment_destroy(seg, 0);
    return 0;
}

int
fm_pool_to_big_entry(fm_state *st, PyObject **b)
{
    fm_big_ref ref;
    int rc = big_store(st, PyBytes_AS_STRING(*b), (size_t)PyBytes_GET_SIZE(*b), &ref);
    Py_CLEAR(*b);
    if (rc < 0)
        return -1;
    *b = PyBytes_FromStringAndSize((const char *)&ref, sizeof ref);
    if (*b == NULL) {
        fm_pool_big_unlink(st, &ref);
        return -1;
    }
    return 0;
}

void
fm_pool_big_unlink(fm_state *st, const fm_big_ref *ref)
{
    char name[FM_SHM_NAME_MAX];
    memcpy(name, ref->name, sizeof name);
    name[sizeof name - 1] = 0;
    if (strncmp(name, FM_SHM_PREFIX, strlen(FM_SHM_PREFIX)) != 0)
        return;
    shm_unlink(name);
    fm_segment_gone(st, name);
}

/* ------------------------------------------------------- packed results */

PyObject *
fm_pool_encode_vector(PyObject *list, uint32_t *flag)
{
    Py_ssize_t n = PyList_GET_SIZE(list);
    if (n < FM_VECTOR_MIN)
        return NULL;
    PyTypeObject *t = Py_TYPE(PyList_GET_ITEM(list, 0));
    if (t != &PyLong_Type && t != &PyFloat_Type)
        return NULL;
    PyObject *b = PyBytes_FromStringAndSize(NULL, n * 8);
    if (b == NULL) {
        PyErr_Clear();          /* the pickle may still fit */
        return NULL;
    }
    char *p = PyBytes_AS_STRING(b);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = PyList_GET_ITEM(list, i);
        if (Py_TYPE(o) != t)
            goto no;
        if (t == &PyLong_Type) {
            int overflow;
            long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
            if (overflow)
                goto no;
            memcpy(p + 8 * i, &v, 8);
        }
        else {
            double d = PyFloat_AS_DOUBLE(o);
            memcpy(p + 8 * i, &d, 8);
        }
    }
    *flag = t == &PyLong_Type ? FM_ENTRY_I64 : FM_ENTRY_F64;
    return b;
no:
    Py_DECREF(b);
    return NULL;
}

static PyObject *
decode_vector(const unsigned char *p, size_t len, uint32_t flags)
{
    if (len % 8 != 0) {
        PyErr_SetString(PyExc_RuntimeError, "fastmp: bad packed results");
        return NULL;
    }
    Py_ssize_t n = (Py_ssize_t)(len / 8);
    PyObject *list = PyList_New(n);
    for (Py_ssize_t i = 0; list != NULL && i < n; i++) {
        PyObject *o;
        if (flags & FM_ENTRY_I64) {
            long long v;
            memcpy(&v, p + 8 * i, 8);
            o = PyLong_FromLongLong(v);
        }
        else {
            double d;
            memcpy(&d, p + 8 * i, 8);
            o = PyFloat_FromDouble(d);
        }
        if (o == NULL)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, i, o);
    }
    return list;
}

/* ------------------------------------------------------- running a chunk */

/* The next item of a chunk: lists and tuples by index, anything else (a
 * range: its items are made one at a time, never as a list) by its
 * iterator.  A new reference, or NULL at the end or with an exception. */
typedef struct {
    PyObject *seq, *it;
    Py_ssize_t i;
} chunk_iter;

static int
chunk_iter_init(chunk_iter *ci, PyObject *a)
{
    ci->seq = NULL;
    ci->it = NULL;
    ci->i = 0;
    if (PyList_CheckExact(a) || PyTuple_CheckExact(a)) {
        ci->seq = a;
        return 0;
    }
    ci->it = PyObject_GetIter(a);
    return ci->it == NULL ? -1 : 0;
}

static PyObject *
chunk_iter_next(chunk_iter *ci)
{
    if (ci->it != NULL)
        return PyIter_Next(ci->it);
    PyObject *x = NULL;
    if (PyList_CheckExact(ci->seq)) {
        if (ci->i < PyList_GET_SIZE(ci->seq))
            x = PyList_GET_ITEM(ci->seq, ci->i);
    }
    else if (ci->i < PyTuple_GET_SIZE(ci->seq)) {
        x = PyTuple_GET_ITEM(ci->seq, ci->i);
    }
    ci->i++;
    Py_XINCREF(x);
    return x;
}

/* Append result r (borrowed) to the packed values in vec if it packs
 * (*flag: 0 before the first, then FM_ENTRY_I64 or FM_ENTRY_F64): 1 when
 * packed, 0 when it does not pack, -1 out of memory. */
static int
pack_value(fm_buf *vec, uint32_t *flag, PyObject *r)
{
    PyTypeObject *t = Py_TYPE(r);
    uint32_t want = t == &PyLong_Type ? FM_ENTRY_I64 : t == &PyFloat_Type ? FM_ENTRY_F64 : 0;
    if (want == 0 || (*flag != 0 && *flag != want))
        return 0;
    unsigned char v[8];
    if (want == FM_ENTRY_I64) {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(r, &overflow);
        if (overflow)
            return 0;
        memcpy(v, &x, 8);
    }
    else {
        double d = PyFloat_AS_DOUBLE(r);
        memcpy(v, &d, 8);
    }
    if (fm_buf_reserve(vec, 8) < 0)
        return -1;
    memcpy(vec->p + vec->len, v, 8);
    vec->len += 8;
    *flag = want;
    return 1;
}

static PyObject *decode_vector(const unsigned char *p, size_t len, uint32_t flags);

int
fm_pool_call_chunk(PyObject *f, uint32_t mode, PyObject *a, fm_buf *vec, uint32_t *flag,
                   PyObject **list)
{
    chunk_iter ci;
    PyObject *x, *out = NULL;
    uint32_t vflag = 0;
    vec->len = 0;
    *list = NULL;
    if (chunk_iter_init(&ci, a) < 0)
        return -1;
    while ((x = chunk_iter_next(&ci)) != NULL) {
        PyObject *r;
        if (mode == FM_MODE_STARMAP) {
            PyObject *t = PySequence_Tuple(x);
            r = t ? PyObject_Call(f, t, NULL) : NULL;
            Py_XDECREF(t);
        }
        else {
            r = PyObject_CallOneArg(f, x);
        }
        Py_DECREF(x);
        if (r == NULL)
            goto error;
        if (out == NULL) {
            int packed = pack_value(vec, &vflag, r);
            if (packed < 0) {
                Py_DECREF(r);
                PyErr_NoMemory();
                goto error;
            }
            if (packed) {
                Py_DECREF(r);       /* freed at once: the chunk's results never pile up */
                continue;
            }
            /* a result that does not pack: the results so far as objects */
            out = vec->len ? decode_vector(vec->p, vec->len, vflag) : PyList_New(0);
            if (out == NULL) {
                Py_DECREF(r);
                goto error;
            }
        }
        int rc = PyList_Append(out, r);
        Py_DECREF(r);
        if (rc < 0)
            goto error;
    }
    if (PyErr_Occurred())
        goto error;
    Py_XDECREF(ci.it);
    if (out == NULL && vec->len / 8 >= FM_VECTOR_MIN) {
        *flag = vflag;
        return 1;
    }
    if (out == NULL) {
        out = decode_vector(vec->p, vec->len, vflag ? vflag : FM_ENTRY_I64);
        if (out == NULL)
            return -1;
    }
    *list = out;
    return 0;
error:
    Py_XDECREF(ci.it);
    Py_XDECREF(out);
    return -1;
}

/* ---------------------------------------------------------------- loading */

/* GIL held: the object a payload holds (pickled or packed). */
static PyObject *
load_payload(PyObject *loads, const unsigned char *p, size_t len, uint32_t flags)
{
    if (flags & FM_ENTRY_VECTOR)
        return decode_vector(p, len, flags);
    PyObject *mv = PyMemoryView_FromMemory((char *)p, (Py_ssize_t)len, PyBUF_READ);
    if (mv == NULL)
        return NULL;
    PyObject *value = PyObject_CallOneArg(loads, mv);
    /* released before the memory goes (a big entry's mapping is unmapped);
     * an unpickling error stays the one reported */
    PyObject *exc = value == NULL ? fm_exc_take() : NULL;
    PyObject *r = PyObject_CallMethod(mv, "release", NULL);
    if (r == NULL) {
        Py_CLEAR(value);
        if (exc != NULL)
            PyErr_Clear();
    }
    Py_XDECREF(r);
    Py_DECREF(mv);
    if (exc != NULL)
        fm_exc_restore(exc);
    return value;
}

/* GIL held: unpickle a big entry straight from its segment (no copy of
 * the pickle), then unmap and unlink it.  The memoryview is released
 * before the unmap, so nothing can read the mapping after it is gone. */
static PyObject *
big_loads(fm_state *st, PyObject *loads, const unsigned char *p, uint32_t len,
          uint32_t flags)
{
    fm_big_ref ref;
    if (len != sizeof ref) {
        PyErr_SetString(PyExc_RuntimeError, "fastmp: bad large-entry reference");
        return NULL;
    }
    memcpy(&ref, p, sizeof ref);
    ref.name[sizeof ref.name - 1] = 0;
    fm_segment *seg;
    if (fm_segment_attach(ref.name, &seg) != FM_OK) {
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, ref.name);
        return NULL;
    }
    /* Unlinked (and unregistered) at once: the mapping stays readable, and a
     * process killed while it unpickles leaves no file behind.  SIGTERM (a
     * pool's terminate()) waits until the tracker has been told. */
    sigset_t term, old;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &term, &old);
    fm_pool_big_unlink(st, &ref);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    PyObject *value = NULL;
    if (seg->size < ref.len) {
        PyErr_SetString(PyExc_RuntimeError, "fastmp: large entry shorter than announced");
    }
    else {
        value = load_payload(loads, (const unsigned char *)seg->base, (size_t)ref.len, flags);
    }
    /* a view something kept (BufferError from its release): never unmap under it */
    if (value != NULL || !PyErr_ExceptionMatches(PyExc_BufferError))
        fm_segment_destroy(seg, 0);
    return value;
}

PyObject *
fm_pool_load_entry(fm_state *st, PyObject *loads, const fm_entry *e)
{
    if (e->flags & FM_ENTRY_BIG)
        return big_loads(st, loads, e->data, e->len, e->flags);
    return load_payload(loads, e->data, e->len, e->flags);
}

/* ----------------------------------------------------- records left over */

void
fm_pool_unlink_big_entries(fm_state *st, const fm_ring_read *rd, int task)
{
    size_t hdr_size = task ? sizeof(fm_task_hdr) : sizeof(fm_result_hdr);
    size_t off = hdr_size;
    uint32_t count = 0;
    if (rd->len >= hdr_size) {
        if (task) {
            fm_task_hdr th;
            memcpy(&th, rd->data, sizeof th);
            count = th.kind == FM_TASK_RUN ? th.count : 0;
            off += fm_pad8(th.func_len);
        }
        else {
            fm_result_hdr rh;
            memcpy(&rh, rd->data, sizeof rh);
            count = rh.kind == FM_RES_STOP ? 0 : rh.count;
        }
    }
    fm_entry_iter it;
    fm_entry e;
    fm_entry_iter_init(&it, rd->data, rd->len, off, count);
    while (fm_entry_next(&it, &e)) {
        if ((e.flags & FM_ENTRY_BIG) && e.len == sizeof(fm_big_ref)) {
            fm_big_ref ref;
            memcpy(&ref, e.data, sizeof ref);
            fm_pool_big_unlink(st, &ref);
        }
    }
}

void
fm_pool_drain_big(fm_state *st, fm_ring *r, int task)
{
    uint32_t pid = fm_self_pid();
    for (;;) {
        fm_ring_read rd;
        if (fm_ring_take(r, pid, 0, 0, &rd) != FM_OK)
            return;
        fm_pool_unlink_big_entries(st, &rd, task);
        fm_ring_release(r, &rd);
    }
}
