/* value.c: shared ctypes objects -- the memory behind RawValue/RawArray,
 * and the synchronized wrappers behind Value/Array.
 *
 * BufferWrapper owns one shared block (fm_handle) and exports it through
 * the buffer protocol; fastmp.sharedctypes builds the ctypes object over it
 * with `ctype.from_buffer(wrapper)`, so a Raw* object is a real ctypes
 * object, kept alive... and keeping the block alive, as ctypes holds the
 * exporter.  Blocks above the allocator's largest class are huge blocks,
 * one segment each; the creator reclaims such a segment as soon as the
 * last reference anywhere is gone (see fm_block_reclaim_huge).
 *
 * Synchronized, SynchronizedArray and SynchronizedString wrap any ctypes
 * object with a lock, as the stdlib's classes do.  When the element type is
 * one of ctypes' primitive types (integers, c_float, c_double, c_bool,
 * c_char, c_wchar), the wrapper keeps the object's address and reads or
 * writes one element with one atomic access of the element's width: that
 * is indivisible, so it takes no lock (issue 4, item 3).  Everything else
 * (slices, Structures, c_longdouble, c_char_p, ...) takes the lock.  Integer
 * elements also get lock-free read-modify-write operations (fetch_add,
 * compare_exchange, ...), an extension beyond the stdlib.
 *
 * Memory order: every single-element access and atomic operation here is
 * sequentially consistent, so a program that relied on the stdlib's lock
 * around each access (which orders everything) keeps that ordering.  On
 * x86 a load costs what a plain load does. */
#include "fastmp.h"

#include <limits.h>
#include <stddef.h>
#include <string.h>
#include <wchar.h>


/* Copies at least this large run with the GIL released. */
#define FM_COPY_NOGIL_MIN (256 * 1024)

#define FM_WEAKREF_DICT_MEMBERS(T)                                                   \
    FM_WEAKREF_MEMBER(T),                                                            \
    {"__dictoffset__", T_PYSSIZET, offsetof(T, dict), READONLY, NULL}

/* ====================================================== BufferWrapper */

typedef struct {
    PyObject_HEAD
    fm_handle h;
    unsigned char *sh;      /* the payload, in this process's mapping */
    Py_ssize_t size;        /* bytes the user asked for */
    PyObject *weakreflist;
} FmBufferObject;

/* A segment was unlinked here: the resource tracker must forget it.  Runs
 * in dealloc. */
static void
notify_gone(PyTypeObject *tp, const char *name)
{
    PyObject *pending = fm_exc_take();
    fm_state *st = fm_state_of_type(tp);
    PyErr_Clear();      /* no state: the module is going away, nothing to tell */
    fm_exc_restore(pending);
    fm_segment_gone(st, name);
}

static void
buffer_release(FmBufferObject *self)
{
    fm_handle *h = &self->h;
    fm_segment *seg = h->seg;
    uint64_t off = h->offset;
    /* only a live reference of this process can be the last one here; after
     * _release_all (pid 0) other objects may still point into the segment */
    int mine = seg != NULL && h->pid != 0 && h->pid == fm_self_pid();
    fm_handle_release(h);
    self->sh = NULL;
    if (mine) {
        char name[FM_SHM_NAME_MAX];
        if (fm_block_reclaim_huge(seg, off, name))
            notify_gone(Py_TYPE(self), name);
    }
}

static PyObject *
Buffer_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"size", NULL};
    Py_ssize_t size;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "n:BufferWrapper", kwlist, &size))
        return NULL;
    if (size < 0) {
        PyErr_Format(PyExc_ValueError, "Size %zd out of range", size);
        return NULL;
    }
    fm_state *st = fm_state_of_type(type);
    if (st == NULL)
        return NULL;
    FmBufferObject *self = (FmBufferObject *)fm_shared_new(
        st, type, offsetof(FmBufferObject, h), (size_t)size, FM_KIND_VALUE);
    if (self == NULL)
        return NULL;
    self->sh = self->h.ptr;
    self->size = size;
    return (PyObject *)self;
}

static void
Buffer_dealloc(PyObject *op)
{
    fm_dealloc_begin(op);
    buffer_release((FmBufferObject *)op);
    fm_dealloc_end(op);
}

static int
Buffer_getbuffer(PyObject *op, Py_buffer *view, int flags)
{
    FmBufferObject *self = (FmBufferObject *)op;
    if (self->sh == NULL) {
        PyErr_SetString(PyExc_ValueError, "shared buffer released");
        view->obj = NULL;
        return -1;
    }
    return PyBuffer_FillInfo(view, op, self->sh, self->size, 0, flags);
}

PyDoc_STRVAR(Buffer_create_memoryview_doc,
"create_memoryview($self, /)\n--\n\n"
"A writable memoryview of the shared bytes (as multiprocessing.heap.BufferWrapper).");

static PyObject *
Buffer_create_memoryview(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyMemoryView_FromObject(self);
}

PyDoc_STRVAR(Buffer_state_doc,
"_fm_state($self, /)\n--\n\n"
"(segment, offset, size): what another process needs to attach the block.");

static PyObject *
Buffer_state(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    FmBufferObject *self = (FmBufferObject *)op;
    if (self->sh == NULL) {
        PyErr_SetString(PyExc_ValueError, "shared buffer released");
        return NULL;
    }
    return Py_BuildValue("(NKn)", fm_handle_name(&self->h),
                         (unsigned long long)self->h.offset, self->size);
}

PyDoc_STRVAR(Buffer_attach_doc, FM_ATTACH_DOC);

static PyObject *
Buffer_attach(PyObject *type, PyObject *state)
{
    PyTypeObject *tp = (PyTypeObject *)type;
    if (fm_check_state(state, 3, 1) < 0)
        return NULL;
    Py_ssize_t size = PyLong_AsSsize_t(PyTuple_GET_ITEM(state, 2));
    if (size == -1 && PyErr_Occurred())
        return NULL;
    if (size < 0) {
        PyErr_Format(PyExc_ValueError, "Size %zd out of range", size);
        return NULL;
    }
    fm_state *st = fm_state_of_type(tp);
    if (st == NULL)
        return NULL;
    FmBufferObject *self = (FmBufferObject *)fm_attach_new(
        st, tp, state, offsetof(FmBufferObject, h), FM_KIND_VALUE);
    if (self == NULL)
        return NULL;
    /* a forged or stale state must not give a view past the block */
    if (fm_block_capacity(self->h.seg, self->h.offset, FM_KIND_VALUE) < (size_t)size) {
        PyErr_Format(PyExc_ValueError, "the shared block at offset %llu holds fewer than %zd bytes",
                     (unsigned long long)self->h.offset, size);
        Py_DECREF(self);
        return NULL;
    }
    self->sh = self->h.ptr;
    self->size = size;
    return (PyObject *)self;
}

static PyObject *
Buffer_get_size(PyObject *op, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(((FmBufferObject *)op)->size);
}

static PyMethodDef Buffer_methods[] = {
    {"create_memoryview", Buffer_create_memoryview, METH_NOARGS, Buffer_create_memoryview_doc},
    {"_fm_state", Buffer_state, METH_NOARGS, Buffer_state_doc},
    {"_fm_attach", Buffer_attach, METH_O | METH_CLASS, Buffer_attach_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Buffer_getset[] = {
    {"size", Buffer_get_size, NULL, "Bytes of shared memory the buffer exposes.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

FM_WEAKREF_MEMBERS(FmBufferObject);

static PyType_Slot Buffer_slots[] = {
    {Py_tp_new, Buffer_new},
    {Py_tp_dealloc, Buffer_dealloc},
    {Py_tp_methods, Buffer_methods},
    {Py_tp_getset, Buffer_getset},
    {Py_tp_members, FmBufferObject_members},
    {Py_bf_getbuffer, Buffer_getbuffer},
    {Py_tp_doc, "BufferWrapper(size)\n--\n\n"
                "`size` zeroed bytes of shared memory, exported through the buffer protocol;\n"
                "the memory behind fastmp's RawValue and RawArray."},
    {0, NULL},
};

static PyType_Spec Buffer_spec = {
    .name = "fastmp.sharedctypes.BufferWrapper",
    .basicsize = sizeof(FmBufferObject),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = Buffer_slots,
};

/* ================================================ element access */

/* How a wrapper reaches its elements. */
enum el_kind {
    EL_OBJECT = 0,      /* through the ctypes object, under the lock */
    EL_CHAR,            /* c_char: bytes of length 1 */
    EL_WCHAR,           /* c_wchar: str of length 1 */
    EL_BOOL,            /* c_bool */
    EL_INT,             /* signed integers of 1, 2, 4, 8 bytes */
    EL_UINT,            /* unsigned integers */
    EL_FLOAT,           /* c_float */
    EL_DOUBLE,          /* c_double */
};

typedef struct {
    PyObject_HEAD
    char *data;             /* the elements (address inside view) */
    Py_ssize_t length;      /* elements: 1 for a value */
    int kind;               /* enum el_kind */
    int width;              /* bytes per element (primitive kinds) */
    char code;              /* ctypes' _type_ letter (primitive kinds) */
    int has_view;
    Py_buffer view;         /* held on obj while kind != EL_OBJECT */
    PyObject *obj;          /* the ctypes object: get_obj() */
    PyObject *lock;         /* get_lock() */
    PyObject *acquire;      /* lock.acquire and lock.release, attributes as the stdlib's */
    PyObject *release;
    PyObject *enter;        /* lock.__enter__ / __exit__, looked up at first use */
    PyObject *exit;
    PyObject *dict;
    PyObject *weakreflist;
} FmSyncObject;

/* The element type behind a ctypes _type_ letter: kind and width, or
 * EL_OBJECT for letters handled only through ctypes. */
static int
kind_of_code(char code, int *width)
{
    switch (code) {
    case 'c': *width = 1; return EL_CHAR;
    case 'u': *width = (int)sizeof(wchar_t); return EL_WCHAR;
    case '?': *width = 1; return EL_BOOL;
    case 'b': *width = 1; return EL_INT;
    case 'B': *width = 1; return EL_UINT;
    case 'h': *width = 2; return EL_INT;
    case 'H': *width = 2; return EL_UINT;
    case 'i': *width = 4; return EL_INT;
    case 'I': *width = 4; return EL_UINT;
    case 'l': *width = (int)sizeof(long); return EL_INT;
    case 'L': *width = (int)sizeof(long); return EL_UINT;
    case 'q': *width = 8; return EL_INT;
    case 'Q': *width = 8; return EL_UINT;
    case 'f': *width = 4; return EL_FLOAT;
    case 'd': *width = 8; return EL_DOUBLE;
    default: *width = 0; return EL_OBJECT;
    }
}

/* One atomic load or store of `width` bytes.  The ctypes memory is not
 * declared _Atomic, but these widths are lock-free and the address is
 * aligned (checked when the wrapper is made), so the access is one
 * indivisible instruction. */
static inline uint64_t
load_bits(const char *p, int width)
{
    switch (width) {
    case 1: return atomic_load_explicit((_Atomic uint8_t *)p, SEQ);
    case 2: return atomic_load_explicit((_Atomic uint16_t *)p, SEQ);
    case 4: return atomic_load_explicit((_Atomic uint32_t *)p, SEQ);
    default: return atomic_load_explicit((_Atomic uint64_t *)p, SEQ);
    }
}

static inline void
store_bits(char *p, int width, uint64_t v)
{
    switch (width) {
    case 1: atomic_store_explicit((_Atomic uint8_t *)p, (uint8_t)v, SEQ); break;
    case 2: atomic_store_explicit((_Atomic uint16_t *)p, (uint16_t)v, SEQ); break;
    case 4: atomic_store_explicit((_Atomic uint32_t *)p, (uint32_t)v, SEQ); break;
    default: atomic_store_explicit((_Atomic uint64_t *)p, v, SEQ); break;
    }
}

/* Relaxed copies for slices (done under the lock; relaxed per element only
 * so that a concurrent lock-free element write is never torn). */
static void
copy_out(char *dst, const char *src, Py_ssize_t n, Py_ssize_t step, int width)
{
    for (Py_ssize_t i = 0; i < n; i++, src += step * width, dst += width) {
        switch (width) {
        case 1: *(uint8_t *)dst = atomic_load_explicit((_Atomic uint8_t *)src, RLX); break;
        case 2: { uint16_t v = atomic_load_explicit((_Atomic uint16_t *)src, RLX);
                  memcpy(dst, &v, 2); break; }
        case 4: { uint32_t v = atomic_load_explicit((_Atomic uint32_t *)src, RLX);
                  memcpy(dst, &v, 4); break; }
        default: { uint64_t v = atomic_load_explicit((_Atomic uint64_t *)src, RLX);
                   memcpy(dst, &v, 8); break; }
        }
    }
}

static void
copy_in(char *dst, const char *src, Py_ssize_t n, Py_ssize_t step, int width)
{
    for (Py_ssize_t i = 0; i < n; i++, dst += step * width, src += width) {
        switch (width) {
        case 1: atomic_store_explicit((_Atomic uint8_t *)dst, *(const uint8_t *)src, RLX); break;
        case 2: { uint16_t v; memcpy(&v, src, 2);
                  atomic_store_explicit((_Atomic uint16_t *)dst, v, RLX); break; }
        case 4: { uint32_t v; memcpy(&v, src, 4);
                  atomic_store_explicit((_Atomic uint32_t *)dst, v, RLX); break; }
        default: { uint64_t v; memcpy(&v, src, 8);
                   atomic_store_explicit((_Atomic uint64_t *)dst, v, RLX); break; }
        }
    }
}

static inline int64_t
sign_extend(uint64_t bits, int width)
{
    switch (width) {
    case 1: return (int8_t)bits;
    case 2: return (int16_t)bits;
    case 4: return (int32_t)bits;
    default: return (int64_t)bits;
    }
}

/* The element's bits as a Python object, as ctypes' getters give it. */
static PyObject *
bits_to_py(const FmSyncObject *self, uint64_t bits)
{
    switch (self->kind) {
    case EL_CHAR: {
        char c = (char)bits;
        return PyBytes_FromStringAndSize(&c, 1);
    }
    case EL_WCHAR: {
        wchar_t w = (wchar_t)bits;
        return PyUnicode_FromWideChar(&w, 1);
    }
    case EL_BOOL:
        return PyBool_FromLong(bits != 0);
    case EL_INT:
        return PyLong_FromLongLong(sign_extend(bits, self->width));
    case EL_UINT:
        return PyLong_FromUnsignedLongLong(bits);
    case EL_FLOAT: {
        float f;
        uint32_t b = (uint32_t)bits;
        memcpy(&f, &b, sizeof f);
        return PyFloat_FromDouble(f);
    }
    default: {
        double d;
        memcpy(&d, &bits, sizeof d);
        return PyFloat_FromDouble(d);
    }
    }
}

/* A Python object as the element's bits, with ctypes' setters' rules:
 * integers are truncated to the width (as ctypes silently does), floats
 * are refused for integer types, and so on.  The exceptions are ctypes'. */
static int
py_to_bits(const FmSyncObject *self, PyObject *v, uint64_t *bits)
{
    switch (self->kind) {
    case EL_INT:
    case EL_UINT: {
        unsigned long long x = PyLong_AsUnsignedLongLongMask(v);
        if (x == (unsigned long long)-1 && PyErr_Occurred())
            return -1;
        *bits = x;
        return 0;
    }
    case EL_DOUBLE:
    case EL_FLOAT: {
        double d = PyFloat_CheckExact(v) ? PyFloat_AS_DOUBLE(v) : PyFloat_AsDouble(v);
        if (d == -1.0 && PyErr_Occurred())
            return -1;
        if (self->kind == EL_FLOAT) {
            float f = (float)d;
            uint32_t b;
            memcpy(&b, &f, sizeof b);
            *bits = b;
        }
        else
            memcpy(bits, &d, sizeof d);
        return 0;
    }
    case EL_BOOL: {
        int t = PyObject_IsTrue(v);
        if (t < 0)
            return -1;
        *bits = (uint64_t)t;
        return 0;
    }
    case EL_CHAR: {
        if (PyBytes_Check(v) && PyBytes_GET_SIZE(v) == 1) {
            *bits = (unsigned char)PyBytes_AS_STRING(v)[0];
            return 0;
        }
        if (PyByteArray_Check(v) && PyByteArray_GET_SIZE(v) == 1) {
            *bits = (unsigned char)PyByteArray_AS_STRING(v)[0];
            return 0;
        }
        if (PyLong_Check(v)) {
            int overflow;
            long x = PyLong_AsLongAndOverflow(v, &overflow);
            if (!overflow && x >= 0 && x < 256) {
                *bits = (uint64_t)x;
                return 0;
            }
        }
        PyErr_SetString(PyExc_TypeError, "one character bytes, bytearray or integer expected");
        return -1;
    }
    case EL_WCHAR: {
        if (!PyUnicode_Check(v)) {
            PyErr_Format(PyExc_TypeError, "unicode string expected instead of %s instance",
                         Py_TYPE(v)->tp_name);
            return -1;
        }
        wchar_t w[2];
        Py_ssize_t n = PyUnicode_AsWideChar(v, w, 2);
        if (n < 0)
            return -1;
        if (n != 1) {
            PyErr_SetString(PyExc_TypeError, "one character unicode string expected");
            return -1;
        }
        *bits = (uint64_t)(uint32_t)w[0];
        return 0;
    }
    default:
        PyErr_SetString(PyExc_SystemError, "fastmp: no element conversion for this type");
        return -1;
    }
}

/* ===================================================== the lock */

static int
check_alive(FmSyncObject *self)
{
    if (self->obj == NULL || self->acquire == NULL || self->release == NULL) {
        PyErr_SetString(PyExc_ValueError, "synchronized wrapper has been cleared");
        return -1;
    }
    return 0;
}

static int
lock_acquire(FmSyncObject *self)
{
    if (check_alive(self) < 0)
        return -1;
    PyObject *r = PyObject_CallNoArgs(self->acquire);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* Release the lock after an operation that returned `ok` (0 or -1): like
 * try/finally, a failed release raises with the operation's error as its
 * context.  Returns 0 when both succeeded. */
static int
lock_release(FmSyncObject *self, int ok)
{
    PyObject *failed = ok < 0 ? fm_exc_take() : NULL;
    PyObject *r = PyObject_CallNoArgs(self->release);
    if (r != NULL) {
        Py_DECREF(r);
        if (failed != NULL)
            fm_exc_restore(failed);
        return ok;
    }
    if (failed != NULL) {
        PyObject *exc = fm_exc_take();
        PyException_SetContext(exc, failed);    /* steals failed */
        fm_exc_restore(exc);
    }
    return -1;
}

static PyObject *
locked_getattr(FmSyncObject *self, const char *name)
{
    if (lock_acquire(self) < 0)
        return NULL;
    PyObject *r = PyObject_GetAttrString(self->obj, name);
    if (lock_release(self, r ? 0 : -1) < 0) {
        Py_XDECREF(r);
        return NULL;
    }
    return r;
}

static int
locked_setattr(FmSyncObject *self, const char *name, PyObject *v)
{
    if (lock_acquire(self) < 0)
        return -1;
    return lock_release(self, PyObject_SetAttrString(self->obj, name, v));
}

/* Copy `n` bytes with the GIL released when that is worth it; the caller
 * holds buffer exports on both sides, so neither can go away. */
static void
copy_bytes(char *dst, const char *src, size_t n)
{
    if (n < FM_COPY_NOGIL_MIN) {
        memmove(dst, src, n);
        return;
    }
    Py_BEGIN_ALLOW_THREADS
    memmove(dst, src, n);
    Py_END_ALLOW_THREADS
}

/* ================================================== construction */

static int
set_kind(FmSyncObject *self, fm_state *st, PyObject *elem_type, Py_ssize_t length)
{
    self->kind = EL_OBJECT;
    self->length = length;
    if (st->ctypes_kinds == NULL || length < 0)
        return 0;
    PyObject *code = PyDict_GetItemWithError(st->ctypes_kinds, elem_type);
    if (code == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (!PyUnicode_Check(code) || PyUnicode_GET_LENGTH(code) != 1)
        return 0;
    Py_UCS4 c = PyUnicode_READ_CHAR(code, 0);
    int width;
    int kind = kind_of_code((char)c, &width);
    if (c > 127 || kind == EL_OBJECT)
        return 0;
    if (PyObject_GetBuffer(self->obj, &self->view, PyBUF_WRITABLE) < 0) {
        PyErr_Clear();          /* not ours to read directly: the lock path */
        return 0;
    }
    /* the memory must be what the type says, and aligned for one access */
    if (self->view.len != length * (Py_ssize_t)width ||
        ((uintptr_t)self->view.buf % (uintptr_t)width) != 0) {
        PyBuffer_Release(&self->view);
        return 0;
    }
    self->has_view = 1;
    self->data = self->view.buf;
    self->kind = kind;
    self->width = width;
    self->code = (char)c;
    return 0;
}

static PyObject *
Sync_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"obj", "lock", "ctx", NULL};
    PyObject *obj, *lock = Py_None, *ctx = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OO:SynchronizedBase", kwlist,
                                     &obj, &lock, &ctx))
        return NULL;
    fm_state *st = fm_state_of_type(type);
    if (st == NULL)
        return NULL;
    FmSyncObject *self = (FmSyncObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    Py_INCREF(obj);
    self->obj = obj;
    int truthy = PyObject_IsTrue(lock);
    if (truthy < 0)
        goto error;
    if (truthy) {
        Py_INCREF(lock);
        self->lock = lock;
    }
    else if (ctx != Py_None) {
        /* as the stdlib: the context's RLock */
        self->lock = PyObject_CallMethod(ctx, "RLock", NULL);
    }
    else
        self->lock = PyObject_CallNoArgs((PyObject *)st->RLockType);
    if (self->lock == NULL)
        goto error;
    self->acquire = PyObject_GetAttrString(self->lock, "acquire");
    if (self->acquire == NULL)
        goto error;
    self->release = PyObject_GetAttrString(self->lock, "release");
    if (self->release == NULL)
        goto error;

    self->kind = EL_OBJECT;
    self->length = 1;
    if (PyType_IsSubtype(type, st->SyncArrayType)) {
        PyObject *elem = PyObject_GetAttrString((PyObject *)Py_TYPE(obj), "_type_");
        if (elem == NULL)
            PyErr_Clear();
        else {
            Py_ssize_t n = PyObject_Length(obj);
            if (n < 0)
                PyErr_Clear();
            else if (set_kind(self, st, elem, n) < 0) {
                Py_DECREF(elem);
                goto error;
            }
            Py_DECREF(elem);
        }
    }
    else if (PyType_IsSubtype(type, st->SynchronizedType)) {
        if (set_kind(self, st, (PyObject *)Py_TYPE(obj), 1) < 0)
            goto error;
    }
    return (PyObject *)self;
error:
    Py_DECREF(self);
    return NULL;
}

static int
Sync_traverse(PyObject *op, visitproc visit, void *arg)
{
    FmSyncObject *self = (FmSyncObject *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->obj);
    Py_VISIT(self->lock);
    Py_VISIT(self->acquire);
    Py_VISIT(self->release);
    Py_VISIT(self->enter);
    Py_VISIT(self->exit);
    Py_VISIT(self->dict);
    return 0;
}

static int
Sync_clear(PyObject *op)
{
    FmSyncObject *self = (FmSyncObject *)op;
    self->kind = EL_OBJECT;     /* no direct access past this point */
    self->data = NULL;
    if (self->has_view) {
        self->has_view = 0;
        PyBuffer_Release(&self->view);
    }
    Py_CLEAR(self->obj);
    Py_CLEAR(self->lock);
    Py_CLEAR(self->acquire);
    Py_CLEAR(self->release);
    Py_CLEAR(self->enter);
    Py_CLEAR(self->exit);
    Py_CLEAR(self->dict);
    return 0;
}

static void
Sync_dealloc(PyObject *op)
{
    fm_dealloc_begin(op);
    Sync_clear(op);
    fm_dealloc_end(op);
}

/* ============================================ SynchronizedBase */

static PyObject *
Sync_get_obj(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    FmSyncObject *self = (FmSyncObject *)op;
    if (check_alive(self) < 0)
        return NULL;
    Py_INCREF(self->obj);
    return self->obj;
}

static PyObject *
Sync_get_lock(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    FmSyncObject *self = (FmSyncObject *)op;
    if (check_alive(self) < 0)
        return NULL;
    Py_INCREF(self->lock);
    return self->lock;
}

static PyObject *
Sync_enter(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    FmSyncObject *self = (FmSyncObject *)op;
    if (check_alive(self) < 0)
        return NULL;
    if (self->enter == NULL && (self->enter = PyObject_GetAttrString(self->lock, "__enter__")) == NULL)
        return NULL;
    return PyObject_CallNoArgs(self->enter);
}

static PyObject *
Sync_exit(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    FmSyncObject *self = (FmSyncObject *)op;
    if (check_alive(self) < 0)
        return NULL;
    if (self->exit == NULL && (self->exit = PyObject_GetAttrString(self->lock, "__exit__")) == NULL)
        return NULL;
    return PyObject_Vectorcall(self->exit, args, (size_t)nargs, NULL);
}

static PyObject *
Sync_repr(PyObject *op)
{
    FmSyncObject *self = (FmSyncObject *)op;
    PyObject *name = PyObject_GetAttrString((PyObject *)Py_TYPE(op), "__name__");
    if (name == NULL)
        return NULL;
    PyObject *r = PyUnicode_FromFormat("<%U wrapper for %S>", name,
                                       self->obj ? self->obj : Py_None);
    Py_DECREF(name);
    return r;
}

/* The wrapped object's buffer, so memoryview(wrapper) is a zero-copy view
 * with ctypes' format and shape. */
static int
Sync_getbuffer(PyObject *op, Py_buffer *view, int flags)
{
    FmSyncObject *self = (FmSyncObject *)op;
    if (check_alive(self) < 0) {
        view->obj = NULL;
        return -1;
    }
    return PyObject_GetBuffer(self->obj, view, flags);
}

PyDoc_STRVAR(Sync_set_kinds_doc,
"_fm_set_kinds($type, kinds, /)\n--\n\n"
"{ctypes type: _type_ letter}: the element types wrappers may access\n"
"directly (set by fastmp.sharedctypes; without it every access locks).");

static PyObject *
Sync_set_kinds(PyObject *type, PyObject *kinds)
{
    fm_state *st = fm_state_of_type((PyTypeObject *)type);
    if (st == NULL)
        return NULL;
    if (!PyDict_Check(kinds)) {
        PyErr_SetString(PyExc_TypeError, "kinds must be a dict");
        return NULL;
    }
    Py_INCREF(kinds);
    Py_XSETREF(st->ctypes_kinds, kinds);
    Py_RETURN_NONE;
}

static PyObject *
Sync_direct(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    FmSyncObject *self = (FmSyncObject *)op;
    if (self->kind == EL_OBJECT)
        Py_RETURN_NONE;
    return PyUnicode_FromOrdinal((unsigned char)self->code);
}

PyDoc_STRVAR(get_obj_doc, "get_obj($self, /)\n--\n\nThe wrapped ctypes object.");
PyDoc_STRVAR(get_lock_doc, "get_lock($self, /)\n--\n\nThe lock that guards compound operations.");
PyDoc_STRVAR(direct_doc,
"_fm_direct($self, /)\n--\n\n"
"The ctypes letter of the element type when elements are read and written\n"
"directly (one atomic access, no lock), else None.");

#define SYNC_BASE_METHODS                                                           \
    {"get_obj", Sync_get_obj, METH_NOARGS, get_obj_doc},                            \
    {"get_lock", Sync_get_lock, METH_NOARGS, get_lock_doc},                         \
    {"__enter__", Sync_enter, METH_NOARGS, NULL},                                   \
    {"__exit__", (PyCFunction)(void (*)(void))Sync_exit, METH_FASTCALL, NULL},      \
    {"_fm_direct", Sync_direct, METH_NOARGS, direct_doc},                           \
    {"_fm_set_kinds", Sync_set_kinds, METH_O | METH_CLASS, Sync_set_kinds_doc}

static PyMethodDef SyncBase_methods[] = {SYNC_BASE_METHODS, {NULL, NULL, 0, NULL}};

static PyMemberDef Sync_members[] = {
    {"_obj", T_OBJECT, offsetof(FmSyncObject, obj), READONLY, NULL},
    {"_lock", T_OBJECT, offsetof(FmSyncObject, lock), READONLY, NULL},
    {"acquire", T_OBJECT, offsetof(FmSyncObject, acquire), READONLY,
     "The lock's acquire method."},
    {"release", T_OBJECT, offsetof(FmSyncObject, release), READONLY,
     "The lock's release method."},
    FM_WEAKREF_DICT_MEMBERS(FmSyncObject),
    {NULL, 0, 0, 0, NULL},
};

/* Each subtype repeats these: a type with Py_TPFLAGS_HAVE_GC must name its
 * traverse function in its own spec. */
#define SYNC_GC_SLOTS                                                               \
    {Py_tp_dealloc, Sync_dealloc},                                                  \
    {Py_tp_traverse, Sync_traverse},                                                \
    {Py_tp_clear, Sync_clear}

#define SYNC_COMMON_SLOTS                                                           \
    {Py_tp_new, Sync_new},                                                          \
    {Py_tp_dealloc, Sync_dealloc},                                                  \
    {Py_tp_traverse, Sync_traverse},                                                \
    {Py_tp_clear, Sync_clear},                                                      \
    {Py_tp_repr, Sync_repr},                                                        \
    {Py_tp_members, Sync_members},                                                  \
    {Py_bf_getbuffer, Sync_getbuffer}

static PyType_Slot SyncBase_slots[] = {
    SYNC_COMMON_SLOTS,
    {Py_tp_methods, SyncBase_methods},
    {Py_tp_doc, "SynchronizedBase(obj, lock=None, ctx=None)\n--\n\n"
                "A ctypes object with a lock (a new RLock when lock is None)."},
    {0, NULL},
};

#define SYNC_FLAGS (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC)

static PyType_Spec SyncBase_spec = {
    .name = "fastmp.sharedctypes.SynchronizedBase",
    .basicsize = sizeof(FmSyncObject),
    .flags = SYNC_FLAGS,
    .slots = SyncBase_slots,
};

/* ================================================ atomic operations */

enum rmw_op { OP_ADD, OP_SUB, OP_AND, OP_OR, OP_XOR, OP_XCHG };

static uint64_t
rmw(char *p, int width, int op, uint64_t arg)
{
#define FM_RMW(T)                                                                   \
    do {                                                                            \
        _Atomic T *a = (_Atomic T *)p;                                              \
        T x = (T)arg;                                                               \
        switch (op) {                                                               \
        case OP_ADD: return atomic_fetch_add_explicit(a, x, SEQ);                    \
        case OP_SUB: return atomic_fetch_sub_explicit(a, x, SEQ);                    \
        case OP_AND: return atomic_fetch_and_explicit(a, x, SEQ);                    \
        case OP_OR: return atomic_fetch_or_explicit(a, x, SEQ);                      \
        case OP_XOR: return atomic_fetch_xor_explicit(a, x, SEQ);                    \
        default: return atomic_exchange_explicit(a, x, SEQ);                         \
        }                                                                           \
    } while (0)
    switch (width) {
    case 1: FM_RMW(uint8_t);
    case 2: FM_RMW(uint16_t);
    case 4: FM_RMW(uint32_t);
    default: FM_RMW(uint64_t);
    }
#undef FM_RMW
}

static int
cas(char *p, int width, uint64_t *expected, uint64_t desired)
{
#define FM_CAS(T)                                                                   \
    do {                                                                            \
        T e = (T)*expected;                                                         \
        int ok = atomic_compare_exchange_strong_explicit((_Atomic T *)p, &e,       \
                                                         (T)desired, SEQ, SEQ);       \
        *expected = e;                                                              \
        return ok;                                                                  \
    } while (0)
    switch (width) {
    case 1: FM_CAS(uint8_t);
    case 2: FM_CAS(uint16_t);
    case 4: FM_CAS(uint32_t);
    default: FM_CAS(uint64_t);
    }
#undef FM_CAS
}

static int
check_integer(FmSyncObject *self, const char *fname)
{
    if (self->kind == EL_INT || self->kind == EL_UINT)
        return 0;
    if (self->kind == EL_OBJECT)
        PyErr_Format(PyExc_TypeError,
                     "%s() needs an integer element type (b B h H i I l L q Q) "
                     "in memory it can address directly", fname);
    else
        PyErr_Format(PyExc_TypeError, "%s() needs an integer element type, not '%c'",
                     fname, self->code);
    return -1;
}

/* An operand of an atomic operation: an integer (or __index__) that fits
 * the element type exactly; OverflowError otherwise (no silent truncation
 * here, unlike .value, which keeps ctypes' behaviour). */
static int
operand(FmSyncObject *self, const char *fname, PyObject *v, uint64_t *bits)
{
    PyObject *idx = PyNumber_Index(v);
    if (idx == NULL)
        return -1;
    int bitsn = self->width * 8;
    if (self->kind == EL_INT) {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(idx, &overflow);
        if (x == -1 && PyErr_Occurred())
            goto error;
        long long lo = bitsn == 64 ? LLONG_MIN : -(1LL << (bitsn - 1));
        long long hi = bitsn == 64 ? LLONG_MAX : (1LL << (bitsn - 1)) - 1;
        if (overflow || x < lo || x > hi) {
            PyErr_Format(PyExc_OverflowError,
                         "%s(): %R does not fit typecode '%c' (%lld..%lld)",
                         fname, idx, self->code, lo, hi);
            goto error;
        }
        *bits = (uint64_t)x;
    }
    else {
        unsigned long long hi = bitsn == 64 ? ULLONG_MAX : (1ULL << bitsn) - 1;
        int overflow;
        long long sx = PyLong_AsLongLongAndOverflow(idx, &overflow);
        if (sx == -1 && PyErr_Occurred())
            goto error;
        unsigned long long x = (unsigned long long)sx;
        int bad = overflow < 0 || (overflow == 0 && sx < 0);
        if (overflow > 0) {         /* above LLONG_MAX: may still fit 64 bits */
            x = PyLong_AsUnsignedLongLong(idx);
            if (x == (unsigned long long)-1 && PyErr_Occurred()) {
                if (!PyErr_ExceptionMatches(PyExc_OverflowError))
                    goto error;
                PyErr_Clear();
                bad = 1;
            }
        }
        if (bad || x > hi) {
            PyErr_Format(PyExc_OverflowError, "%s(): %R does not fit typecode '%c' (0..%llu)",
                         fname, idx, self->code, hi);
            goto error;
        }
        *bits = x;
    }
    Py_DECREF(idx);
    return 0;
error:
    Py_DECREF(idx);
    return -1;
}

/* An element index as ctypes takes it: negative counts from the end;
 * IndexError outside. */
static int
element_index(FmSyncObject *self, PyObject *key, Py_ssize_t *out)
{
    Py_ssize_t i = PyNumber_AsSsize_t(key, PyExc_IndexError);
    if (i == -1 && PyErr_Occurred())
        return -1;
    if (i < 0)
        i += self->length;
    if (i < 0 || i >= self->length) {
        PyErr_SetString(PyExc_IndexError, "invalid index");
        return -1;
    }
    *out = i;
    return 0;
}

/* Where an atomic method acts: the value itself (Synchronized), or the
 * element named by args[0] (SynchronizedArray).  Returns the number of
 * leading arguments used up, -1 on error. */
static int
atomic_target(FmSyncObject *self, const char *fname, PyObject *const *args,
              Py_ssize_t nargs, int is_array, char **p)
{
    if (check_integer(self, fname) < 0)
        return -1;
    if (!is_array) {
        *p = self->data;
        return 0;
    }
    if (nargs < 1) {
        PyErr_Format(PyExc_TypeError, "%s() missing required argument 'index'", fname);
        return -1;
    }
    Py_ssize_t i;
    if (element_index(self, args[0], &i) < 0)
        return -1;
    *p = self->data + i * self->width;
    return 1;
}

static PyObject *
atomic_rmw_common(PyObject *op, PyObject *const *args, Py_ssize_t nargs, int is_array,
                  const char *fname, int rop, int has_default)
{
    FmSyncObject *self = (FmSyncObject *)op;
    char *p;
    int used = atomic_target(self, fname, args, nargs, is_array, &p);
    if (used < 0)
        return NULL;
    if (fm_check_nargs(fname, nargs, used + (has_default ? 0 : 1), used + 1) < 0)
        return NULL;
    uint64_t arg = 1;
    if (nargs > used && operand(self, fname, args[used], &arg) < 0)
        return NULL;
    return bits_to_py(self, rmw(p, self->width, rop, arg));
}

static PyObject *
atomic_load_common(PyObject *op, PyObject *const *args, Py_ssize_t nargs, int is_array)
{
    FmSyncObject *self = (FmSyncObject *)op;
    char *p;
    int used = atomic_target(self, "load", args, nargs, is_array, &p);
    if (used < 0 || fm_check_nargs("load", nargs, used, used) < 0)
        return NULL;
    return bits_to_py(self, load_bits(p, self->width));
}

static PyObject *
atomic_store_common(PyObject *op, PyObject *const *args, Py_ssize_t nargs, int is_array)
{
    FmSyncObject *self = (FmSyncObject *)op;
    char *p;
    int used = atomic_target(self, "store", args, nargs, is_array, &p);
    if (used < 0 || fm_check_nargs("store", nargs, used + 1, used + 1) < 0)
        return NULL;
    uint64_t v;
    if (operand(self, "store", args[used], &v) < 0)
        return NULL;
    store_bits(p, self->width, v);
    Py_RETURN_NONE;
}

static PyObject *
atomic_cas_common(PyObject *op, PyObject *const *args, Py_ssize_t nargs, int is_array)
{
    FmSyncObject *self = (FmSyncObject *)op;
    const char *fname = "compare_exchange";
    char *p;
    int used = atomic_target(self, fname, args, nargs, is_array, &p);
    if (used < 0 || fm_check_nargs(fname, nargs, used + 2, used + 2) < 0)
        return NULL;
    uint64_t expected, desired;
    if (operand(self, fname, args[used], &expected) < 0 ||
        operand(self, fname, args[used + 1], &desired) < 0)
        return NULL;
    int ok = cas(p, self->width, &expected, desired);
    PyObject *cur = bits_to_py(self, expected);
    if (cur == NULL)
        return NULL;
    return Py_BuildValue("(ON)", ok ? Py_True : Py_False, cur);
}

/* One C function per (method, value-or-array): the method tables want them. */
#define FM_ATOMIC_METHODS(PFX, IS_ARRAY)                                            \
    static PyObject *PFX##_load(PyObject *op, PyObject *const *a, Py_ssize_t n)    \
    { return atomic_load_common(op, a, n, IS_ARRAY); }                              \
    static PyObject *PFX##_store(PyObject *op, PyObject *const *a, Py_ssize_t n)   \
    { return atomic_store_common(op, a, n, IS_ARRAY); }                             \
    static PyObject *PFX##_compare_exchange(PyObject *op, PyObject *const *a,      \
                                            Py_ssize_t n)                           \
    { return atomic_cas_common(op, a, n, IS_ARRAY); }                               \
    static PyObject *PFX##_exchange(PyObject *op, PyObject *const *a, Py_ssize_t n)\
    { return atomic_rmw_common(op, a, n, IS_ARRAY, "exchange", OP_XCHG, 0); }       \
    static PyObject *PFX##_fetch_add(PyObject *op, PyObject *const *a, Py_ssize_t n)\
    { return atomic_rmw_common(op, a, n, IS_ARRAY, "fetch_add", OP_ADD, 1); }       \
    static PyObject *PFX##_fetch_sub(PyObject *op, PyObject *const *a, Py_ssize_t n)\
    { return atomic_rmw_common(op, a, n, IS_ARRAY, "fetch_sub", OP_SUB, 1); }       \
    static PyObject *PFX##_fetch_and(PyObject *op, PyObject *const *a, Py_ssize_t n)\
    { return atomic_rmw_common(op, a, n, IS_ARRAY, "fetch_and", OP_AND, 0); }       \
    static PyObject *PFX##_fetch_or(PyObject *op, PyObject *const *a, Py_ssize_t n)\
    { return atomic_rmw_common(op, a, n, IS_ARRAY, "fetch_or", OP_OR, 0); }         \
    static PyObject *PFX##_fetch_xor(PyObject *op, PyObject *const *a, Py_ssize_t n)\
    { return atomic_rmw_common(op, a, n, IS_ARRAY, "fetch_xor", OP_XOR, 0); }

FM_ATOMIC_METHODS(Value, 0)
FM_ATOMIC_METHODS(Array, 1)

#define FM_FASTCALL(f) (PyCFunction)(void (*)(void))(f), METH_FASTCALL

#define FM_ATOMIC_TABLE(PFX, IDX)                                              \
    {"load", FM_FASTCALL(PFX##_load),                                               \
     "load($self, " IDX "/)\n--\n\nRead the integer with one atomic load."},       \
    {"store", FM_FASTCALL(PFX##_store),                                             \
     "store($self, " IDX "value, /)\n--\n\nWrite the integer with one atomic store;\n" \
     "OverflowError if value does not fit the type."},                             \
    {"exchange", FM_FASTCALL(PFX##_exchange),                                       \
     "exchange($self, " IDX "value, /)\n--\n\nStore value and return the previous value,\n" \
     "atomically."},                                                                \
    {"compare_exchange", FM_FASTCALL(PFX##_compare_exchange),                       \
     "compare_exchange($self, " IDX "expected, desired, /)\n--\n\n"                 \
     "Atomically: if the integer equals expected, store desired.  Returns\n"        \
     "(True, expected) when it did, else (False, current value)."},                 \
    {"fetch_add", FM_FASTCALL(PFX##_fetch_add),                                     \
     "fetch_add($self, " IDX "delta=1, /)\n--\n\nAtomically add delta (wrapping around\n" \
     "as C does) and return the previous value."},                                  \
    {"fetch_sub", FM_FASTCALL(PFX##_fetch_sub),                                     \
     "fetch_sub($self, " IDX "delta=1, /)\n--\n\nAtomically subtract delta (wrapping)\n" \
     "and return the previous value."},                                             \
    {"fetch_and", FM_FASTCALL(PFX##_fetch_and),                                     \
     "fetch_and($self, " IDX "mask, /)\n--\n\nAtomically AND with mask; return the\n" \
     "previous value."},                                                            \
    {"fetch_or", FM_FASTCALL(PFX##_fetch_or),                                       \
     "fetch_or($self, " IDX "mask, /)\n--\n\nAtomically OR with mask; return the\n" \
     "previous value."},                                                            \
    {"fetch_xor", FM_FASTCALL(PFX##_fetch_xor),                                     \
     "fetch_xor($self, " IDX "mask, /)\n--\n\nAtomically XOR with mask; return the\n" \
     "previous value."}

/* ================================================== Synchronized */

static int no_delete(PyObject *op, const char *what);

static PyObject *
Value_get_value(PyObject *op, void *Py_UNUSED(closure))
{
    FmSyncObject *self = (FmSyncObject *)op;
    if (self->kind == EL_OBJECT)
        return locked_getattr(self, "value");
    return bits_to_py(self, load_bits(self->data, self->width));
}

static int
Value_set_value(PyObject *op, PyObject *v, void *Py_UNUSED(closure))
{
    FmSyncObject *self = (FmSyncObject *)op;
    if (v == NULL)
        return no_delete(op, "'value'");
    if (self->kind == EL_OBJECT)
        return locked_setattr(self, "value", v);
    uint64_t bits;
    if (py_to_bits(self, v, &bits) < 0)
        return -1;
    store_bits(self->data, self->width, bits);
    return 0;
}

static PyGetSetDef Value_getset[] = {
    {"value", Value_get_value, Value_set_value,
     "The value: for primitive types read and written with one atomic access,\n"
     "otherwise under the lock.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Value_methods[] = {
    FM_ATOMIC_TABLE(Value, ""),
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Value_slots[] = {
    SYNC_GC_SLOTS,
    {Py_tp_getset, Value_getset},
    {Py_tp_methods, Value_methods},
    {Py_tp_doc, "Synchronized(obj, lock=None, ctx=None)\n--\n\n"
                "A ctypes simple value with a lock.  .value of a primitive type is one\n"
                "atomic access; integer values also have lock-free atomic operations."},
    {0, NULL},
};

static PyType_Spec Value_spec = {
    .name = "fastmp.sharedctypes.Synchronized",
    .basicsize = sizeof(FmSyncObject),
    .flags = SYNC_FLAGS,
    .slots = Value_slots,
};

/* ============================================== SynchronizedArray */

static Py_ssize_t
Array_length(PyObject *op)
{
    FmSyncObject *self = (FmSyncObject *)op;
    if (self->kind != EL_OBJECT)
        return self->length;
    if (check_alive(self) < 0)
        return -1;
    return PyObject_Length(self->obj);
}

static PyObject *
Array_item(PyObject *op, Py_ssize_t i)
{
    FmSyncObject *self = (FmSyncObject *)op;
    if (self->kind == EL_OBJECT) {
        if (lock_acquire(self) < 0)
            return NULL;
        PyObject *r = PySequence_GetItem(self->obj, i);
        if (lock_release(self, r ? 0 : -1) < 0) {
            Py_XDECREF(r);
            return NULL;
        }
        return r;
    }
    if (i < 0 || i >= self->length) {
        PyErr_SetString(PyExc_IndexError, "invalid index");
        return NULL;
    }
    return bits_to_py(self, load_bits(self->data + i * self->width, self->width));
}

/* Elements start, start+step, ... (n of them) copied under the lock into
 * dst (n * width bytes). */
static int
gather_locked(FmSyncObject *self, char *dst, Py_ssize_t start, Py_ssize_t step, Py_ssize_t n)
{
    if (lock_acquire(self) < 0)
        return -1;
    const char *src = self->data + start * self->width;
    if (step == 1 && (size_t)n * (size_t)self->width >= FM_COPY_NOGIL_MIN)
        copy_bytes(dst, src, (size_t)n * (size_t)self->width);
    else
        copy_out(dst, src, n, step, self->width);
    return lock_release(self, 0);
}

static PyObject *
Array_get_slice(FmSyncObject *self, PyObject *key)
{
    Py_ssize_t start, stop, step;
    if (PySlice_Unpack(key, &start, &stop, &step) < 0)
        return NULL;
    Py_ssize_t n = PySlice_AdjustIndices(self->length, &start, &stop, step);
    if (self->kind == EL_CHAR) {
        /* as ctypes: a c_char array's slice is bytes */
        PyObject *b = PyBytes_FromStringAndSize(NULL, n);
        if (b == NULL)
            return NULL;
        if (gather_locked(self, PyBytes_AS_STRING(b), start, step, n) < 0) {
            Py_DECREF(b);
            return NULL;
        }
        return b;
    }
    char *tmp = PyMem_Malloc(n > 0 ? (size_t)n * (size_t)self->width : 1);
    if (tmp == NULL)
        return PyErr_NoMemory();
    PyObject *r = NULL;
    if (gather_locked(self, tmp, start, step, n) < 0)
        goto done;
    if (self->kind == EL_WCHAR) {     /* ... and a c_wchar array's is str */
        r = PyUnicode_FromWideChar((wchar_t *)tmp, n);
        goto done;
    }
    r = PyList_New(n);
    if (r == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t bits = 0;
        switch (self->width) {
        case 1: bits = ((uint8_t *)tmp)[i]; break;
        case 2: { uint16_t v; memcpy(&v, tmp + 2 * i, 2); bits = v; break; }
        case 4: { uint32_t v; memcpy(&v, tmp + 4 * i, 4); bits = v; break; }
        default: memcpy(&bits, tmp + 8 * i, 8); break;
        }
        PyObject *x = bits_to_py(self, bits);
        if (x == NULL) {
            Py_CLEAR(r);
            goto done;
        }
        PyList_SET_ITEM(r, i, x);
    }
done:
    PyMem_Free(tmp);
    return r;
}

static PyObject *
Array_subscript(PyObject *op, PyObject *key)
{
    FmSyncObject *self = (FmSyncObject *)op;
    if (self->kind == EL_OBJECT) {
        if (lock_acquire(self) < 0)
            return NULL;
        PyObject *r = PyObject_GetItem(self->obj, key);
        if (lock_release(self, r ? 0 : -1) < 0) {
            Py_XDECREF(r);
            return NULL;
        }
        return r;
    }
    if (PyIndex_Check(key)) {
        Py_ssize_t i;
        if (element_index(self, key, &i) < 0)
            return NULL;
        return bits_to_py(self, load_bits(self->data + i * self->width, self->width));
    }
    if (PySlice_Check(key))
        return Array_get_slice(self, key);
    PyErr_SetString(PyExc_TypeError, "indices must be integers");
    return NULL;
}

/* Whether a buffer of this format holds, byte for byte, what converting
 * its items one by one into our element type would store. */
static int
format_matches(const FmSyncObject *self, const Py_buffer *v)
{
    if (v->itemsize != self->width)
        return 0;
    const char *f = v->format ? v->format : "B";
    if (*f == '@' || *f == '=')
        f++;
    else if (*f == '<' || *f == '>' || *f == '!') {
        const uint16_t one = 1;
        int little = *(const unsigned char *)&one == 1;
        if (self->width > 1 && (*f == '<') != little)
            return 0;
        f++;
    }
    if (f[0] == '\0' || f[1] != '\0')
        return 0;
    switch (self->kind) {
    case EL_INT:
    case EL_UINT:
        /* ctypes truncates to the width: any integer of this width copies */
        return strchr("bBhHiIlLqQnN", f[0]) != NULL;
    case EL_FLOAT: return f[0] == 'f';
    case EL_DOUBLE: return f[0] == 'd';
    case EL_BOOL: return f[0] == '?';
    case EL_CHAR: return f[0] == 'c' || f[0] == 'B';
    case EL_WCHAR: return f[0] == 'u' || f[0] == 'w';
    default: return 0;
    }
}

/* Elements written from src under the lock. */
static int
scatter_locked(FmSyncObject *self, const char *src, Py_ssize_t start, Py_ssize_t step,
               Py_ssize_t n)
{
    if (lock_acquire(self) < 0)
        return -1;
    char *dst = self->data + start * self->width;
    if (step == 1 && (size_t)n * (size_t)self->width >= FM_COPY_NOGIL_MIN)
        copy_bytes(dst, src, (size_t)n * (size_t)self->width);
    else
        copy_in(dst, src, n, step, self->width);
    return lock_release(self, 0);
}

static int
Array_set_slice(FmSyncObject *self, PyObject *key, PyObject *value)
{
    Py_ssize_t start, stop, step;
    if (PySlice_Unpack(key, &start, &stop, &step) < 0)
        return -1;
    Py_ssize_t n = PySlice_AdjustIndices(self->length, &start, &stop, step);

    /* A buffer of the same element type: copied as it is, in one go. */
    if (PyObject_CheckBuffer(value)) {
        Py_buffer v;
        if (PyObject_GetBuffer(value, &v, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) == 0) {
            if (v.len == n * self->width && format_matches(self, &v)) {
                int r = scatter_locked(self, v.buf, start, step, n);
                PyBuffer_Release(&v);
                return r;
            }
            PyBuffer_Release(&v);
        }
        else
            PyErr_Clear();
    }

    /* Any other sequence: converted item by item first, so that a bad item
     * leaves the array untouched, then copied under the lock. */
    Py_ssize_t len = PySequence_Check(value) ? PySequence_Size(value) : -1;
    if (len != n) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "Can only assign sequence of same size");
        return -1;
    }
    char *tmp = PyMem_Malloc(n > 0 ? (size_t)n * (size_t)self->width : 1);
    if (tmp == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    int r = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_GetItem(value, i);
        if (item == NULL)
            goto done;
        uint64_t bits;
        int bad = py_to_bits(self, item, &bits);
        Py_DECREF(item);
        if (bad)
            goto done;
        switch (self->width) {
        case 1: ((uint8_t *)tmp)[i] = (uint8_t)bits; break;
        case 2: { uint16_t x = (uint16_t)bits; memcpy(tmp + 2 * i, &x, 2); break; }
        case 4: { uint32_t x = (uint32_t)bits; memcpy(tmp + 4 * i, &x, 4); break; }
        default: memcpy(tmp + 8 * i, &bits, 8); break;
        }
    }
    r = scatter_locked(self, tmp, start, step, n);
done:
    PyMem_Free(tmp);
    return r;
}

/* `del wrapper[...]` / `del wrapper.value`: AttributeError, the stdlib's
 * exception (its classes define no __delitem__ and no deleter). */
static int
no_delete(PyObject *op, const char *what)
{
    PyErr_Format(PyExc_AttributeError, "%s of '%s' objects cannot be deleted",
                 what, Py_TYPE(op)->tp_name);
    return -1;
}

static int
Array_ass_subscript(PyObject *op, PyObject *key, PyObject *value)
{
    FmSyncObject *self = (FmSyncObject *)op;
    if (value == NULL)
        return no_delete(op, "items");
    if (self->kind == EL_OBJECT) {
        if (lock_acquire(self) < 0)
            return -1;
        return lock_release(self, PyObject_SetItem(self->obj, key, value));
    }
    if (PyIndex_Check(key)) {
        Py_ssize_t i;
        uint64_t bits;
        if (element_index(self, key, &i) < 0 || py_to_bits(self, value, &bits) < 0)
            return -1;
        store_bits(self->data + i * self->width, self->width, bits);
        return 0;
    }
    if (PySlice_Check(key))
        return Array_set_slice(self, key, value);
    PyErr_SetString(PyExc_TypeError, "indices must be integers");
    return -1;
}

static int
Array_ass_item(PyObject *op, Py_ssize_t i, PyObject *value)
{
    PyObject *key = PyLong_FromSsize_t(i);
    if (key == NULL)
        return -1;
    int r = Array_ass_subscript(op, key, value);
    Py_DECREF(key);
    return r;
}

static PyMethodDef Array_methods[] = {
    FM_ATOMIC_TABLE(Array, "index, "),
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Array_slots[] = {
    SYNC_GC_SLOTS,
    {Py_mp_length, Array_length},
    {Py_mp_subscript, Array_subscript},
    {Py_mp_ass_subscript, Array_ass_subscript},
    {Py_sq_length, Array_length},
    {Py_sq_item, Array_item},
    {Py_sq_ass_item, Array_ass_item},
    {Py_tp_methods, Array_methods},
    {Py_tp_doc, "SynchronizedArray(obj, lock=None, ctx=None)\n--\n\n"
                "A ctypes array with a lock.  An element of a primitive type is read or\n"
                "written with one atomic access; slices are copied under the lock;\n"
                "integer elements also have lock-free atomic operations."},
    {0, NULL},
};

static PyType_Spec Array_spec = {
    .name = "fastmp.sharedctypes.SynchronizedArray",
    .basicsize = sizeof(FmSyncObject),
    .flags = SYNC_FLAGS,
    .slots = Array_slots,
};

/* ============================================= SynchronizedString */

static PyObject *
String_get_value(PyObject *op, void *Py_UNUSED(closure))
{
    return locked_getattr((FmSyncObject *)op, "value");
}

static int
String_set_value(PyObject *op, PyObject *v, void *Py_UNUSED(closure))
{
    if (v == NULL)
        return no_delete(op, "'value'");
    return locked_setattr((FmSyncObject *)op, "value", v);
}

static PyObject *
String_get_raw(PyObject *op, void *Py_UNUSED(closure))
{
    return locked_getattr((FmSyncObject *)op, "raw");
}

static int
String_set_raw(PyObject *op, PyObject *v, void *Py_UNUSED(closure))
{
    if (v == NULL)
        return no_delete(op, "'raw'");
    return locked_setattr((FmSyncObject *)op, "raw", v);
}

static PyGetSetDef String_getset[] = {
    {"value", String_get_value, String_set_value,
     "The bytes up to the first NUL (under the lock).", NULL},
    {"raw", String_get_raw, String_set_raw, "All the bytes (under the lock).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot String_slots[] = {
    SYNC_GC_SLOTS,
    {Py_tp_getset, String_getset},
    {Py_tp_doc, "SynchronizedString(obj, lock=None, ctx=None)\n--\n\n"
                "A c_char array with a lock, and its .value and .raw."},
    {0, NULL},
};

static PyType_Spec String_spec = {
    .name = "fastmp.sharedctypes.SynchronizedString",
    .basicsize = sizeof(FmSyncObject),
    .flags = SYNC_FLAGS,
    .slots = String_slots,
};

/* ======================================================== registration */

int
fm_value_add_types(PyObject *module, fm_state *st)
{
    if (fm_add_type(module, &Buffer_spec, NULL, &st->BufferWrapperType) < 0 ||
        fm_add_type(module, &SyncBase_spec, NULL, &st->SyncBaseType) < 0 ||
        fm_add_type(module, &Value_spec, st->SyncBaseType, &st->SynchronizedType) < 0 ||
        fm_add_type(module, &Array_spec, st->SyncBaseType, &st->SyncArrayType) < 0 ||
        fm_add_type(module, &String_spec, st->SyncArrayType, &st->SyncStringType) < 0)
        return -1;
    return 0;
}
