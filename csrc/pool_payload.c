/* pool_payload.c: what a pool channel's entry holds (pool_wire.h), both
 * ways: a pickle, a packed array of a map chunk's numbers, or a reference
 * to a segment of its own for an entry too large for the ring.  The parent
 * (pool.c, pool_collect.c) and the workers (pool_worker.c) share these. */
#include "fastmp.h"

#include <errno.h>
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

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* A big entry's mapping is read or written whole, once: its page table
 * entries made in one call rather than one page fault per page (a fault
 * costs about as much as copying its page).  Best effort: a kernel without
 * it (before Linux 5.14) faults the pages in as they are touched. */
static void
populate(void *base, size_t len, int write)
{
    if (len > 0)
        (void)madvise(base, len, write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ);
}

/* GIL held: put data in a segment of its own, registered with the tracker
 * (segment hook) before its file exists, and unmapped here; *ref names it.
 * -1 with an exception. */
static int
big_store(fm_state *st, const char *data, size_t len, fm_big_ref *ref)
{
    fm_segment *seg;
    char name[FM_SHM_NAME_MAX];
    if (fm_segment_name_reserve(st, name) < 0)
        return -1;
    int s = fm_segment_create_as(name, len ? len : 1, &seg);
    if (s != FM_OK) {
        int saved = errno;
        fm_segment_name_unused(st, name);
        errno = saved;
        fm_set_error(s);
        return -1;
    }
    populate(seg->base, len, 1);
    memcpy(seg->base, data, len);
    memset(ref, 0, sizeof *ref);
    ref->len = len;
    memcpy(ref->name, seg->name, sizeof ref->name);
    /* The receiver unlinks it; this process must not at its exit. */
    seg->unlinked = 1;
    fm_segment_destroy(seg, 0);
    return 0;
}

/* ------------------------------------------------------------ big slots */

/* This process's mapping of big slot i as of generation gen (made or
 * replaced as needed), at least `need` bytes: its base, or NULL (errno). */
static unsigned char *
slot_map(fm_big_cache *bc, uint32_t i, uint32_t gen, size_t need)
{
    if (bc->seg[i] != NULL && bc->gen[i] == gen)
        return bc->seg[i]->size >= need ? bc->seg[i]->base : NULL;
    if (bc->seg[i] != NULL) {
        fm_segment_destroy(bc->seg[i], 0);
        bc->seg[i] = NULL;
    }
    fm_pool_bigslot *sl = fm_pool_bigslot_at(bc->h, i);
    char name[FM_SHM_NAME_MAX];
    memcpy(name, sl->name, sizeof name);
    name[sizeof name - 1] = 0;
    fm_segment *seg;
    if (fm_segment_attach(name, &seg) != FM_OK)
        return NULL;
    if (seg->size < need) {
        fm_segment_destroy(seg, 0);
        errno = EINVAL;
        return NULL;
    }
    populate(seg->base, seg->size, 0);
    bc->seg[i] = seg;
    bc->gen[i] = gen;
    return seg->base;
}

/* Bytes the table's segments take (a bound: read without a lock). */
static size_t
slots_bytes(fm_pool_hdr *h)
{
    size_t total = 0;
    for (uint32_t i = 0; i < FM_POOL_BIG_SLOTS; i++)
        total += (size_t)atomic_load_explicit(&fm_pool_bigslot_at(h, i)->size, RLX);
    return total;
}

/* Slot i is ours (MAKING): give it a new segment of `size` bytes in place
 * of its old one (unlinked).  0 with the slot BUSY, -1 with an exception
 * and the slot EMPTY. */
static int
slot_remake(fm_state *st, fm_big_cache *bc, uint32_t i, size_t size)
{
    fm_pool_bigslot *sl = fm_pool_bigslot_at(bc->h, i);
    if (bc->seg[i] != NULL) {
        fm_segment_destroy(bc->seg[i], 0);
        bc->seg[i] = NULL;
    }
    if (atomic_load_explicit(&sl->size, RLX) > 0) {
        fm_big_ref old;
        memset(&old, 0, sizeof old);
        memcpy(old.name, sl->name, sizeof old.name);
        fm_pool_big_unlink(st, &old);
        atomic_store_explicit(&sl->size, 0, RLX);
    }
    /* named, and told to the tracker, before the file exists */
    fm_segment *seg;
    char name[FM_SHM_NAME_MAX];
    if (fm_segment_name_reserve(st, name) < 0) {
        atomic_store_explicit(&sl->state, FM_BIGSLOT_EMPTY, REL);
        return -1;
    }
    int s = fm_segment_create_as(name, size, &seg);
    if (s != FM_OK) {
        int saved = errno;
        fm_segment_name_unused(st, name);
        errno = saved;
        atomic_store_explicit(&sl->state, FM_BIGSLOT_EMPTY, REL);
        fm_set_error(s);
        return -1;
    }
    /* the pool's owner unlinks it when the pool closes, not this process
     * when it exits (a worker that leaves) */
    fm_segment_disown(seg);
    populate(seg->base, seg->size, 1);
    memcpy(sl->name, seg->name, sizeof sl->name);
    /* the owner's close reads the name once it sees a size */
    atomic_store_explicit(&sl->size, (uint64_t)seg->size, REL);
    uint32_t gen = atomic_load_explicit(&sl->gen, RLX) + 1;
    atomic_store_explicit(&sl->gen, gen, RLX);
    atomic_store_explicit(&sl->state, FM_BIGSLOT_BUSY, REL);
    bc->seg[i] = seg;
    bc->gen[i] = gen;
    return 0;
}

/* Take a big slot for len bytes, mapped here: 1 with *ref and *base (the
 * caller fills it), 0 when no slot can take it (the caller makes a segment
 * of its own), -1 with an exception. */
static int
slot_claim(fm_state *st, fm_big_cache *bc, size_t len, fm_big_slot_ref *ref,
           unsigned char **basep)
{
    if (bc == NULL || bc->h == NULL || len > FM_POOL_BIG_CACHED_MAX)
        return 0;
    fm_pool_hdr *h = bc->h;
    uint32_t i, found = FM_POOL_BIG_SLOTS;
    /* a free slot large enough */
    for (i = 0; i < FM_POOL_BIG_SLOTS && found == FM_POOL_BIG_SLOTS; i++) {
        fm_pool_bigslot *sl = fm_pool_bigslot_at(h, i);
        uint32_t want = FM_BIGSLOT_FREE;
        if (atomic_load_explicit(&sl->state, RLX) == FM_BIGSLOT_FREE &&
            atomic_load_explicit(&sl->size, RLX) >= len &&
            atomic_compare_exchange_strong_explicit(&sl->state, &want, FM_BIGSLOT_BUSY, ACQ,
                                                    RLX)) {
            if (atomic_load_explicit(&sl->size, RLX) >= len)
                found = i;
            else
                atomic_store_explicit(&sl->state, FM_BIGSLOT_FREE, REL);
        }
    }
    if (found == FM_POOL_BIG_SLOTS) {
        /* an empty slot, else a free one too small: (re)made, within the
         * table's bound; sized with room to spare for entries a little
         * larger next time */
        size_t size = (len + len / 8 + ((size_t)1 << 20) - 1) & ~(((size_t)1 << 20) - 1);
        for (uint32_t pass = 0; pass < 2 && found == FM_POOL_BIG_SLOTS; pass++) {
            uint32_t from = pass == 0 ? FM_BIGSLOT_EMPTY : FM_BIGSLOT_FREE;
            for (i = 0; i < FM_POOL_BIG_SLOTS; i++) {
                fm_pool_bigslot *sl = fm_pool_bigslot_at(h, i);
                uint32_t want = from;
                size_t had = (size_t)atomic_load_explicit(&sl->size, RLX);
                if (slots_bytes(h) - had + size > FM_POOL_BIG_CACHE_BYTES)
                    continue;
                if (atomic_load_explicit(&sl->state, RLX) == from &&
                    atomic_compare_exchange_strong_explicit(&sl->state, &want,
                                                            FM_BIGSLOT_MAKING, ACQ, RLX)) {
                    if (slot_remake(st, bc, i, size) < 0)
                        return -1;
                    found = i;
                    break;
                }
            }
        }
        if (found == FM_POOL_BIG_SLOTS)
            return 0;
    }
    fm_pool_bigslot *sl = fm_pool_bigslot_at(h, found);
    uint32_t gen = atomic_load_explicit(&sl->gen, RLX);
    unsigned char *base = slot_map(bc, found, gen, len);
    if (base == NULL) {
        atomic_store_explicit(&sl->state, FM_BIGSLOT_FREE, REL);
        return 0;       /* cannot map it here: a segment of its own will do */
    }
    ref->len = len;
    ref->slot = found;
    ref->gen = gen;
    *basep = base;
    return 1;
}

/* Copy len bytes at data into a big slot (see slot_claim). */
static int
slot_store(fm_state *st, fm_big_cache *bc, const void *data, size_t len, fm_big_slot_ref *ref)
{
    unsigned char *base;
    int r = slot_claim(st, bc, len, ref, &base);
    if (r == 1)
        memcpy(base, data, len);
    return r;
}

/* Free the big slot a reference names (its entry read, or dropped). */
static void
slot_free(fm_big_cache *bc, const fm_big_slot_ref *ref)
{
    if (bc == NULL || bc->h == NULL || ref->slot >= FM_POOL_BIG_SLOTS)
        return;
    uint32_t want = FM_BIGSLOT_BUSY;
    atomic_compare_exchange_strong_explicit(&fm_pool_bigslot_at(bc->h, ref->slot)->state,
                                            &want, FM_BIGSLOT_FREE, REL, RLX);
}

void
fm_pool_big_cache_close(fm_state *st, fm_big_cache *bc, int owner)
{
    if (bc->h == NULL)
        return;
    for (uint32_t i = 0; i < FM_POOL_BIG_SLOTS; i++) {
        if (bc->seg[i] != NULL)
            fm_segment_destroy(bc->seg[i], 0);
        bc->seg[i] = NULL;
        fm_pool_bigslot *sl = fm_pool_bigslot_at(bc->h, i);
        if (owner && atomic_load_explicit(&sl->size, ACQ) > 0) {
            fm_big_ref ref;
            memset(&ref, 0, sizeof ref);
            memcpy(ref.name, sl->name, sizeof ref.name);
            fm_pool_big_unlink(st, &ref);
            atomic_store_explicit(&sl->size, 0, RLX);
            atomic_store_explicit(&sl->state, FM_BIGSLOT_EMPTY, REL);
        }
    }
    bc->h = NULL;
}

PyObject *
fm_pool_big_entry_from(fm_state *st, fm_big_cache *bc, const void *data, size_t len,
                       uint32_t *flag)
{
    fm_big_slot_ref sref;
    int r = slot_store(st, bc, data, len, &sref);
    if (r < 0)
        return NULL;
    if (r == 1) {
        PyObject *b = PyBytes_FromStringAndSize((const char *)&sref, sizeof sref);
        if (b == NULL)
            slot_free(bc, &sref);
        else
            *flag |= FM_ENTRY_SLOT;
        return b;
    }
    fm_big_ref ref;
    if (big_store(st, data, len, &ref) < 0)
        return NULL;
    PyObject *b = PyBytes_FromStringAndSize((const char *)&ref, sizeof ref);
    if (b == NULL)
        fm_pool_big_unlink(st, &ref);
    else
        *flag |= FM_ENTRY_BIG;
    return b;
}

int
fm_pool_to_big_entry(fm_state *st, fm_big_cache *bc, PyObject **b, uint32_t *flag)
{
    PyObject *ref = fm_pool_big_entry_from(st, bc, PyBytes_AS_STRING(*b),
                                           (size_t)PyBytes_GET_SIZE(*b), flag);
    Py_SETREF(*b, ref);
    return ref == NULL ? -1 : 0;
}

void
fm_pool_drop_big(fm_state *st, fm_big_cache *bc, uint32_t flags, const void *data, size_t len)
{
    if ((flags & FM_ENTRY_BIG) && len == sizeof(fm_big_ref)) {
        fm_big_ref ref;
        memcpy(&ref, data, sizeof ref);
        fm_pool_big_unlink(st, &ref);
    }
    else if ((flags & FM_ENTRY_SLOT) && len == sizeof(fm_big_slot_ref)) {
        fm_big_slot_ref ref;
        memcpy(&ref, data, sizeof ref);
        slot_free(bc, &ref);
    }
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

/* ----------------------------------------------- large pickles, one copy */

/* Does obj look like it pickles to a large payload: a buffer of at least
 * FM_GATHER_MIN bytes (bytes, bytearray, an array...), or a list or tuple
 * whose first item is one (a map chunk of such items, apply's arguments)? */
#define FM_GATHER_MIN ((Py_ssize_t)64 * 1024)

static int
big_buffer(PyObject *o)
{
    if (PyBytes_CheckExact(o))
        return PyBytes_GET_SIZE(o) >= FM_GATHER_MIN;
    if (PyByteArray_CheckExact(o))
        return PyByteArray_GET_SIZE(o) >= FM_GATHER_MIN;
    return 0;
}

static int
looks_big(PyObject *obj)
{
    if ((PyList_CheckExact(obj) || PyTuple_CheckExact(obj)) && Py_SIZE(obj) > 0)
        return big_buffer(PyList_CheckExact(obj) ? PyList_GET_ITEM(obj, 0)
                                                  : PyTuple_GET_ITEM(obj, 0));
    return big_buffer(obj);
}

/* Pickle obj with a pickle.Pickler writing to parts.append: the pickler
 * hands large payloads (a bytes object's data) to write() as they are, not
 * copied into its own buffer first.  The list of parts, or NULL with an
 * exception. */
static PyObject *
pickle_parts(PyObject *obj)
{
    PyObject *parts = PyList_New(0), *ns = NULL, *file = NULL, *pcls = NULL, *p = NULL;
    PyObject *kw = NULL, *args = NULL, *r = NULL;
    if (parts == NULL)
        return NULL;
    ns = fm_pool_import_attr("types", "SimpleNamespace");
    pcls = fm_pool_import_attr("pickle", "Pickler");
    if (ns == NULL || pcls == NULL)
        goto error;
    kw = Py_BuildValue("{s:N}", "write", PyObject_GetAttrString(parts, "append"));
    args = PyTuple_New(0);
    if (kw == NULL || args == NULL)
        goto error;
    file = PyObject_Call(ns, args, kw);
    if (file == NULL)
        goto error;
    p = PyObject_CallFunction(pcls, "Oi", file, -1);
    if (p == NULL)
        goto error;
    r = PyObject_CallMethod(p, "dump", "(O)", obj);
    if (r == NULL)
        goto error;
    Py_DECREF(r);
    goto done;
error:
    Py_CLEAR(parts);
done:
    Py_XDECREF(ns);
    Py_XDECREF(pcls);
    Py_XDECREF(kw);
    Py_XDECREF(args);
    Py_XDECREF(file);
    Py_XDECREF(p);
    return parts;
}

/* The bytes-like parts' total size, or -1 with an exception. */
static Py_ssize_t
parts_size(PyObject *parts)
{
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(parts); i++) {
        Py_buffer v;
        if (PyObject_GetBuffer(PyList_GET_ITEM(parts, i), &v, PyBUF_SIMPLE) < 0)
            return -1;
        total += v.len;
        PyBuffer_Release(&v);
    }
    return total;
}

/* Copy the parts one after the other to dst. */
static int
parts_copy(PyObject *parts, unsigned char *dst)
{
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(parts); i++) {
        Py_buffer v;
        if (PyObject_GetBuffer(PyList_GET_ITEM(parts, i), &v, PyBUF_SIMPLE) < 0)
            return -1;
        memcpy(dst, v.buf, (size_t)v.len);
        dst += v.len;
        PyBuffer_Release(&v);
    }
    return 0;
}

PyObject *
fm_pool_pickle_large(fm_state *st, fm_big_cache *bc, PyObject *obj, size_t big, uint32_t *flag)
{
    if (!looks_big(obj))
        return NULL;
    PyObject *parts = pickle_parts(obj);
    if (parts == NULL) {
        PyErr_Clear();          /* the caller pickles the usual way (and reports) */
        return NULL;
    }
    PyObject *b = NULL;
    Py_ssize_t total = parts_size(parts);
    if (total < 0)
        goto done;
    if ((size_t)total > big) {
        fm_big_slot_ref ref;
        unsigned char *base;
        int r = slot_claim(st, bc, (size_t)total, &ref, &base);
        if (r < 0)
            goto done;
        if (r == 1) {
            if (parts_copy(parts, base) < 0) {
                slot_free(bc, &ref);
                goto done;
            }
            b = PyBytes_FromStringAndSize((const char *)&ref, sizeof ref);
            if (b == NULL)
                slot_free(bc, &ref);
            else
                *flag |= FM_ENTRY_SLOT;
            goto done;
        }
    }
    /* small after all, or no slot: one pickle, as pickle.dumps makes it */
    b = PyBytes_FromStringAndSize(NULL, total);
    if (b != NULL && parts_copy(parts, (unsigned char *)PyBytes_AS_STRING(b)) < 0)
        Py_CLEAR(b);
    if (b != NULL && (size_t)total > big && fm_pool_to_big_entry(st, bc, &b, flag) < 0)
        b = NULL;
done:
    Py_DECREF(parts);
    if (b == NULL)
        PyErr_Clear();
    return b;
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

/* One packed result (8 bytes: an int64 with FM_ENTRY_I64, else a double)
 * as a new int or float. */
static PyObject *
packed_number(const unsigned char *p, uint32_t flags)
{
    if (flags & FM_ENTRY_I64) {
        long long v;
        memcpy(&v, p, 8);
        return PyLong_FromLongLong(v);
    }
    double d;
    memcpy(&d, p, 8);
    return PyFloat_FromDouble(d);
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
        PyObject *o = packed_number(p + 8 * i, flags);
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

/* Where fm_pool_place_entry puts packed results: list[start:start + n],
 * n being exactly `count`. */
typedef struct {
    PyObject *list;
    Py_ssize_t start, count;
} fm_place;

/* GIL held: unpack packed results into place->list (replacing what its
 * slots held); the count as an int, or NULL with an exception. */
static PyObject *
place_vector(const unsigned char *p, size_t len, uint32_t flags, const fm_place *place)
{
    Py_ssize_t n = (Py_ssize_t)(len / 8);
    if (len % 8 != 0 || n != place->count || place->start < 0 ||
        place->start > PyList_GET_SIZE(place->list) - n) {
        PyErr_SetString(PyExc_RuntimeError, "fastmp: bad packed results");
        return NULL;
    }
    PyObject **items = ((PyListObject *)place->list)->ob_item + place->start;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = packed_number(p + 8 * i, flags);
        if (o == NULL)
            return NULL;
        PyObject *old = items[i];
        items[i] = o;
        Py_XDECREF(old);
    }
    return PyLong_FromSsize_t(n);
}

/* GIL held: the object a payload holds (pickled or packed); with `place`,
 * packed results go into place's list instead (see place_vector). */
static PyObject *
load_payload(PyObject *loads, const unsigned char *p, size_t len, uint32_t flags,
             const fm_place *place)
{
    if ((flags & FM_ENTRY_VECTOR) && place != NULL)
        return place_vector(p, len, flags, place);
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
          uint32_t flags, const fm_place *place)
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
        populate(seg->base, (size_t)ref.len, 0);
        value = load_payload(loads, (const unsigned char *)seg->base, (size_t)ref.len, flags,
                             place);
    }
    /* a view something kept (BufferError from its release): never unmap under it */
    if (value != NULL || !PyErr_ExceptionMatches(PyExc_BufferError))
        fm_segment_destroy(seg, 0);
    return value;
}

/* GIL held: unpickle (or unpack) an entry in place in its big slot, then
 * free the slot.  The slot's state, generation and size are checked first:
 * shared memory is not trusted. */
static PyObject *
slot_loads(fm_big_cache *bc, PyObject *loads, const unsigned char *p, uint32_t len,
           uint32_t flags, const fm_place *place)
{
    fm_big_slot_ref ref;
    if (len != sizeof ref || bc == NULL || bc->h == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "fastmp: bad large-entry reference");
        return NULL;
    }
    memcpy(&ref, p, sizeof ref);
    if (ref.slot >= FM_POOL_BIG_SLOTS) {
        PyErr_SetString(PyExc_RuntimeError, "fastmp: bad large-entry reference");
        return NULL;
    }
    fm_pool_bigslot *sl = fm_pool_bigslot_at(bc->h, ref.slot);
    if (atomic_load_explicit(&sl->state, ACQ) != FM_BIGSLOT_BUSY ||
        atomic_load_explicit(&sl->gen, RLX) != ref.gen ||
        atomic_load_explicit(&sl->size, RLX) < ref.len) {
        PyErr_SetString(PyExc_RuntimeError, "fastmp: large entry's segment changed under it");
        return NULL;
    }
    unsigned char *base = slot_map(bc, ref.slot, ref.gen, (size_t)ref.len);
    if (base == NULL) {
        PyErr_SetFromErrno(PyExc_OSError);
        slot_free(bc, &ref);
        return NULL;
    }
    PyObject *value = load_payload(loads, base, (size_t)ref.len, flags, place);
    /* a view something kept (BufferError from its release): the slot stays
     * taken, never written under it */
    if (value != NULL || !PyErr_ExceptionMatches(PyExc_BufferError))
        slot_free(bc, &ref);
    return value;
}

PyObject *
fm_pool_load_entry(fm_state *st, fm_big_cache *bc, PyObject *loads, const fm_entry *e)
{
    if (e->flags & FM_ENTRY_SLOT)
        return slot_loads(bc, loads, e->data, e->len, e->flags, NULL);
    if (e->flags & FM_ENTRY_BIG)
        return big_loads(st, loads, e->data, e->len, e->flags, NULL);
    return load_payload(loads, e->data, e->len, e->flags, NULL);
}

PyObject *
fm_pool_place_entry(fm_state *st, fm_big_cache *bc, const fm_entry *e, PyObject *list,
                    Py_ssize_t start, Py_ssize_t count)
{
    fm_place place = {list, start, count};
    if (!(e->flags & FM_ENTRY_VECTOR) || !PyList_CheckExact(list)) {
        PyErr_SetString(PyExc_RuntimeError, "fastmp: not packed results");
        return NULL;
    }
    if (e->flags & FM_ENTRY_SLOT)
        return slot_loads(bc, NULL, e->data, e->len, e->flags, &place);
    if (e->flags & FM_ENTRY_BIG)
        return big_loads(st, NULL, e->data, e->len, e->flags, &place);
    return load_payload(NULL, e->data, e->len, e->flags, &place);
}

/* ----------------------------------------------------- records left over */

void
fm_pool_unlink_big_entries(fm_state *st, fm_big_cache *bc, const fm_ring_read *rd, int task)
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
    while (fm_entry_next(&it, &e))
        fm_pool_drop_big(st, bc, e.flags, e.data, e.len);
}

void
fm_pool_drain_big(fm_state *st, fm_big_cache *bc, fm_ring *r, int task)
{
    uint32_t pid = fm_self_pid();
    for (;;) {
        fm_ring_read rd;
        if (fm_ring_take(r, pid, 0, 0, &rd) != FM_OK)
            return;
        fm_pool_unlink_big_entries(st, bc, &rd, task);
        fm_ring_release(r, &rd);
    }
}
