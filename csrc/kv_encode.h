/* kv_encode.h: the Manager proxies' encodings of plain keys and values,
 * made in C for the common case (fastmp/managers.py makes the others).
 *
 * Keys: a str is b"s" + its UTF-8, an int b"i" + its decimal digits, the
 * very bytes managers.py's _enc_key makes for them (one key, whichever side
 * encoded it).  Values: a pickle (protocol 5) of None, a bool, an int of 64
 * bits, a float, a str or a bytes, which pickle.loads reads back equal.
 *
 * Each call returns 1 with the encoding in *out (release it with
 * fm_kv_buf_release), 0 when the object is not one of those (or too large
 * for this path, or a str with lone surrogates: managers.py encodes it),
 * with no exception set, or -1 with an exception (out of memory). */
#ifndef FM_KV_ENCODE_H
#define FM_KV_ENCODE_H

#include <Python.h>

/* Values whose encoding would pass this many bytes take managers.py's path. */
#define FM_KV_PLAIN_MAX (1 << 16)

typedef struct {
    char *p;                /* the encoding: `small`, or a PyMem block */
    Py_ssize_t n;
    char small[96];
} fm_kv_buf;

int fm_kv_plain_key(PyObject *key, fm_kv_buf *out);
int fm_kv_plain_value(PyObject *value, fm_kv_buf *out);
void fm_kv_buf_release(fm_kv_buf *b);

#endif
