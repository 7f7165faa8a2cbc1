/* kv_encode.c: plain keys and values of the Manager's proxies, encoded in C
 * (see kv_encode.h).  A set of a small value through Python's pickle.dumps
 * and managers.py's key encoding costs three times the shared write itself;
 * these write the same kind of bytes directly. */
#include "fastmp.h"
#include "kv_encode.h"

#include <stdint.h>
#include <string.h>

/* pickle opcodes (protocol 2 and up) */
#define OP_PROTO 0x80
#define OP_STOP '.'
#define OP_NONE 'N'
#define OP_TRUE 0x88
#define OP_FALSE 0x89
#define OP_BININT1 'K'
#define OP_BININT2 'M'
#define OP_BININT 'J'
#define OP_LONG1 0x8a
#define OP_BINFLOAT 'G'
#define OP_SHORT_BINUNICODE 0x8c
#define OP_BINUNICODE 'X'
#define OP_SHORT_BINBYTES 'C'
#define OP_BINBYTES 'B'

/* Room for n bytes in b; NULL with MemoryError. */
static char *
buf_room(fm_kv_buf *b, Py_ssize_t n)
{
    if (n <= (Py_ssize_t)sizeof b->small)
        b->p = b->small;
    else if ((b->p = PyMem_Malloc((size_t)n)) == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    b->n = n;
    return b->p;
}

void
fm_kv_buf_release(fm_kv_buf *b)
{
    if (b->p != NULL && b->p != b->small)
        PyMem_Free(b->p);
    b->p = NULL;
    b->n = 0;
}

static void
put_le(unsigned char *p, uint64_t v, int nbytes)
{
    for (int i = 0; i < nbytes; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* A str's UTF-8 (cached in the str), or NULL when it has lone surrogates
 * (no exception left set: pickle encodes those its own way). */
static const char *
utf8_of(PyObject *s, Py_ssize_t *n)
{
    const char *u = PyUnicode_AsUTF8AndSize(s, n);
    if (u == NULL)
        PyErr_Clear();
    return u;
}

int
fm_kv_plain_key(PyObject *key, fm_kv_buf *out)
{
    out->p = NULL;
    if (PyUnicode_CheckExact(key)) {
        Py_ssize_t n;
        const char *u = utf8_of(key, &n);
        if (u == NULL || n >= FM_KV_PLAIN_MAX)
            return 0;
        char *p = buf_room(out, n + 1);
        if (p == NULL)
            return -1;
        p[0] = 's';
        memcpy(p + 1, u, (size_t)n);
        return 1;
    }
    if (PyLong_CheckExact(key)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(key, &overflow);
        if (overflow || (v == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return 0;
        }
        char *p = buf_room(out, 24);
        int len = snprintf(p, 24, "i%lld", v);
        out->n = len;
        return 1;
    }
    return 0;
}

/* The body of a value's pickle at p (room for 16 bytes); its length, or 0
 * when the value is not a fixed-size plain one. */
static int
fixed_body(PyObject *v, unsigned char *p)
{
    if (v == Py_None) {
        p[0] = OP_NONE;
        return 1;
    }
    if (v == Py_True || v == Py_False) {
        p[0] = v == Py_True ? OP_TRUE : OP_FALSE;
        return 1;
    }
    if (PyFloat_CheckExact(v)) {
        double d = PyFloat_AS_DOUBLE(v);
        uint64_t bits;
        memcpy(&bits, &d, sizeof bits);
        p[0] = OP_BINFLOAT;                 /* big-endian IEEE 754 */
        for (int i = 0; i < 8; i++)
            p[1 + i] = (unsigned char)(bits >> (56 - 8 * i));
        return 9;
    }
    if (PyLong_CheckExact(v)) {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow || (x == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return 0;
        }
        if (x >= 0 && x < 256) {
            p[0] = OP_BININT1;
            p[1] = (unsigned char)x;
            return 2;
        }
        if (x >= 0 && x < 65536) {
            p[0] = OP_BININT2;
            put_le(p + 1, (uint64_t)x, 2);
            return 3;
        }
        if (x >= INT32_MIN && x <= INT32_MAX) {
            p[0] = OP_BININT;
            put_le(p + 1, (uint64_t)x, 4);
            return 5;
        }
        /* LONG1: the fewest little-endian two's complement bytes */
        int n = 5;
        while (n < 8 && (x < -(1LL << (8 * n - 1)) || x >= (1LL << (8 * n - 1))))
            n++;
        p[0] = OP_LONG1;
        p[1] = (unsigned char)n;
        put_le(p + 2, (uint64_t)x, n);
        return 2 + n;
    }
    return 0;
}

int
fm_kv_plain_value(PyObject *value, fm_kv_buf *out)
{
    out->p = NULL;
    unsigned char body[16];
    int fixed = fixed_body(value, body);
    const char *data = NULL;
    Py_ssize_t n = 0;
    int op_short = 0, op_long = 0;
    if (fixed == 0) {
        if (PyUnicode_CheckExact(value)) {
            if ((data = utf8_of(value, &n)) == NULL)
                return 0;
            op_short = OP_SHORT_BINUNICODE;
            op_long = OP_BINUNICODE;
        }
        else if (PyBytes_CheckExact(value)) {
            data = PyBytes_AS_STRING(value);
            n = PyBytes_GET_SIZE(value);
            op_short = OP_SHORT_BINBYTES;
            op_long = OP_BINBYTES;
        }
        else
            return 0;
        if (n > FM_KV_PLAIN_MAX - 16)
            return 0;
    }
    /* PROTO 5, the body, STOP */
    Py_ssize_t head = fixed ? fixed : (n < 256 ? 2 : 5);
    unsigned char *p = (unsigned char *)buf_room(out, 2 + head + n + 1);
    if (p == NULL)
        return -1;
    p[0] = OP_PROTO;
    p[1] = 5;
    if (fixed)
        memcpy(p + 2, body, (size_t)fixed);
    else {
        if (n < 256) {
            p[2] = (unsigned char)op_short;
            p[3] = (unsigned char)n;
        }
        else {
            p[2] = (unsigned char)op_long;
            put_le(p + 3, (uint64_t)n, 4);
        }
        memcpy(p + 2 + head, data, (size_t)n);
    }
    p[2 + head + n] = OP_STOP;
    return 1;
}
