/* A shared table of byte-string keys to byte-string values (fm_dict: the
 * Manager's dict, and its Namespace with attribute names as keys) and a
 * shared vector of byte-string values (fm_vec: the Manager's list).  Every
 * operation runs in the calling process, under one dead-holder-safe mutex.
 * No Python.h here: the Python layer encodes keys and values to bytes.
 *
 * Layout.  Each object is a control block (fm_kvctl, a few hundred bytes,
 * placed by the caller in an fm_block or a small segment) and one data
 * segment.  The control block holds the mutex, a state word (generation
 * << 2 | two flags) and two name slots; the current data segment is
 * names[gen & 1] (gen 0: no data segment yet, the object is empty).  A data
 * segment holds a header (with a redo journal and a table of free heap
 * extents), the structure's arrays and a byte heap for keys and values.
 * No pointers: offsets from the segment's start.
 *
 * Reuse: the bytes of a replaced or removed key or value go on the free
 * table (32 extents; a freed extent merges with free neighbours, lowers the
 * heap's top when it ends there, and when the table is full the smallest
 * extent is left out: garbage until the next rebuild).  A write takes the
 * best-fitting free extent (keeping the rest if it is 64 bytes or more),
 * else appends at the top; a value replaced by one of the same size trades
 * places with a free extent of exactly that size.  A dict entry's key and
 * value are one extent (a replacement writes the key again with the new
 * value).  So the same keys replaced again and again stay in the same data
 * segment, whatever the size of their values.
 *
 * Growth without limit: when an array is full, or the heap has neither a
 * free extent nor room at the top for a write, the lock holder builds a
 * larger data segment (compacting away free and garbage bytes; its free
 * table starts empty), writes its name in the spare slot, then switches
 * the state word to gen + 1 and unlinks the old segment.  Other processes
 * see the new generation under the lock and re-attach; their mapping of
 * the old one is dropped then.
 *
 * Crash consistency (a process SIGKILLed at any instruction while it holds
 * the lock; the next holder gets FM_RECOVERED from the mutex):
 *   - new bytes (keys, values, array entries past the published count, a
 *     whole new array) are written out of place, where no published word
 *     points yet: past the heap's top, or into a free extent (an operation
 *     takes the extents it needs before it frees any, so it never writes
 *     over bytes that are still published);
 *   - the free table has two copies: an operation edits the unpublished
 *     one, and the word that says which copy is current is one of its
 *     journaled words (so any number of taken and freed extents costs one);
 *     a same-size trade changes one word of the published copy instead,
 *     through the journal too;
 *   - the in-place changes of one operation (at most eight words) are first
 *     written to the data segment's journal as (offset, new value) pairs;
 *     one release store of the journal state marks it complete; then the
 *     words are written and the state cleared.  The next holder replays a
 *     complete journal (the values are absolute: replay is idempotent) and
 *     ignores an incomplete one (nothing published was touched yet);
 *   - a data segment being built is named in the spare slot with the
 *     PENDING flag *before* its file is created; a replaced one is left
 *     with the RETIRED flag until unlinked.  The next holder unlinks
 *     either.  So nothing is left in /dev/shm by a crash (fm_kvctl_destroy
 *     unlinks whatever names remain).
 * Every lock acquisition runs these checks (two loads when there is
 * nothing to do).
 *
 * Blocking: every call takes an absolute deadline (fm_deadline_after,
 * FM_FOREVER) and returns FM_EINTR when a signal or a wait slice ended the
 * lock wait: check signals and call again with the same deadline.  Other
 * statuses: FM_TIMEOUT; FM_ERRNO / FM_NOMEM when a data segment cannot be
 * made (ENOSPC: /dev/shm full; never SIGBUS: the pages are reserved at
 * creation); FM_CORRUPT when a segment does not hold what it should;
 * FM_OVERFLOW for a vector index out of range; on any error the object is
 * unchanged.  A visitor's non-zero return is handed back as the call's
 * status (and, for pops, the item stays).
 *
 * A handle (fm_kvh) is one process's view: open it on a control block in
 * each process (after fork too: a child may keep using the parent's handle
 * only if it is not used by both; a fresh one is simplest) and close it
 * when done.  Handles are not thread-safe: one per thread, or a lock. */
#ifndef FM_KV_H
#define FM_KV_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "prims.h"
#include "shm.h"
#include "status.h"

#define FM_KVCTL_MAGIC 0x4c54564bu      /* "KVTL" */
#define FM_KVSEG_MAGIC 0x4753564bu      /* "KVSG" */
#define FM_KV_DICT 1u
#define FM_KV_VEC 2u
#define FM_KV_PENDING 2u                /* state flag: spare slot names a segment being built */
#define FM_KV_RETIRED 1u                /* state flag: spare slot names a replaced segment */
#define FM_VEC_NONE INT64_MIN           /* a slice bound left out */

typedef struct {
    uint32_t magic;
    uint32_t kind;                      /* FM_KV_DICT or FM_KV_VEC */
    fm_mutex lock;
    _Atomic uint64_t state;             /* gen << 2 | FM_KV_PENDING | FM_KV_RETIRED */
    char names[2][FM_SHM_NAME_MAX];     /* current: names[gen & 1] */
} fm_kvctl;

typedef struct {
    fm_kvctl *ctl;
    fm_segment *seg;                    /* this process's mapping of the data, or NULL */
    uint64_t gen;                       /* the generation `seg` is */
    unsigned char *base;
    int held;                           /* inside fm_kv_begin/fm_kv_end */
    /* With caller_names set, a data segment this handle must make is named
     * new_name (then emptied), which the caller chose and told the resource
     * tracker of before the file exists; with new_name empty the write
     * returns FM_AGAIN, the object unchanged: name one and call again.
     * Unset (the default), segments get fresh random names. */
    int caller_names;
    char new_name[FM_SHM_NAME_MAX];
} fm_kvh;

/* Called under the lock with one item's bytes (valid only during the
 * call; copy them).  Return 0 to go on, or a status to stop with it. */
typedef int (*fm_kv_visit)(void *arg, const void *key, size_t klen, const void *val,
                           size_t vlen);

/* ---- control block and handles ---- */
void fm_kvctl_init(fm_kvctl *ctl, uint32_t kind);
/* FM_OK, or FM_CORRUPT when ctl is not an initialized control block. */
int fm_kvh_open(fm_kvh *h, fm_kvctl *ctl);
void fm_kvh_close(fm_kvh *h);
/* Unlink every segment the control block names (current, pending,
 * retired).  For the last user, once no process will use it again. */
void fm_kvctl_destroy(fm_kvctl *ctl);
/* Check the whole structure under the lock: FM_OK or FM_CORRUPT. */
int fm_kv_check(fm_kvh *h, int64_t deadline);
/* Several operations as one: fm_kv_begin takes the lock (same statuses as
 * any call), the calls on this handle until fm_kv_end run under it without
 * taking it again (their deadline is then unused).  For what the stdlib's
 * proxies do in one step and this file does not (setdefault, update,
 * list.remove by Python equality, +=, ...).  A process killed in between
 * leaves each finished call done: every call stays consistent on its own.
 * Never call the same object from inside a visitor. */
int fm_kv_begin(fm_kvh *h, int64_t deadline);
void fm_kv_end(fm_kvh *h);
/* The current generation (0: no data segment yet), read without the lock. */
uint64_t fm_kv_generation(const fm_kvctl *ctl);

/* ---- dict (FM_KV_DICT) ----
 * `found` is set to 1 when the key was there, else 0. */
int fm_dict_get(fm_kvh *h, const void *key, size_t klen, int64_t deadline,
                fm_kv_visit visit, void *arg, int *found);
int fm_dict_contains(fm_kvh *h, const void *key, size_t klen, int64_t deadline, int *found);
/* Insert (at the end of the order) or replace the value (the key keeps
 * its place, as in a dict). */
int fm_dict_set(fm_kvh *h, const void *key, size_t klen, const void *val, size_t vlen,
                int64_t deadline);
int fm_dict_delete(fm_kvh *h, const void *key, size_t klen, int64_t deadline, int *found);
int fm_dict_len(fm_kvh *h, int64_t deadline, uint64_t *n);
/* The last inserted item, visited and then removed (found 0: empty). */
int fm_dict_popitem(fm_kvh *h, int64_t deadline, fm_kv_visit visit, void *arg, int *found);
/* Visit and remove one key's item (dict.pop). */
int fm_dict_pop(fm_kvh *h, const void *key, size_t klen, int64_t deadline,
                fm_kv_visit visit, void *arg, int *found);
/* Every item in insertion order, all under one lock hold. */
int fm_dict_foreach(fm_kvh *h, int64_t deadline, fm_kv_visit visit, void *arg);
int fm_dict_clear(fm_kvh *h, int64_t deadline);

/* ---- vector (FM_KV_VEC) ----
 * Indexes are Python's: a negative one counts from the end; out of range
 * is FM_OVERFLOW.  Visitors get key NULL, klen = the item's index. */
int fm_vec_len(fm_kvh *h, int64_t deadline, uint64_t *n);
int fm_vec_get(fm_kvh *h, int64_t i, int64_t deadline, fm_kv_visit visit, void *arg);
int fm_vec_set(fm_kvh *h, int64_t i, const void *val, size_t vlen, int64_t deadline);
/* list.insert: an index past either end is clamped to it (never FM_OVERFLOW). */
int fm_vec_insert(fm_kvh *h, int64_t i, const void *val, size_t vlen, int64_t deadline);
int fm_vec_delete(fm_kvh *h, int64_t i, int64_t deadline);
/* Visit item i, then remove it (list.pop). */
int fm_vec_pop(fm_kvh *h, int64_t i, int64_t deadline, fm_kv_visit visit, void *arg);
int fm_vec_append(fm_kvh *h, const void *val, size_t vlen, int64_t deadline);
/* Append n values at once (all or none). */
int fm_vec_extend(fm_kvh *h, size_t n, const void *const *vals, const size_t *lens,
                  int64_t deadline);
/* Replace the whole contents with n values (all or none). */
int fm_vec_replace(fm_kvh *h, size_t n, const void *const *vals, const size_t *lens,
                   int64_t deadline);
/* Visit the items of the slice [start:stop:step] (Python's rules; a bound
 * may be FM_VEC_NONE; step 0 is FM_OVERFLOW), under one lock hold. */
int fm_vec_slice(fm_kvh *h, int64_t start, int64_t stop, int64_t step, int64_t deadline,
                 fm_kv_visit visit, void *arg);
int fm_vec_clear(fm_kvh *h, int64_t deadline);
int fm_vec_reverse(fm_kvh *h, int64_t deadline);

/* Test hook: when a test defines it, called at numbered points of the
 * write path with the lock held (a test dies or dawdles there). */
extern void fm_kv_test_point(int where) __attribute__((weak));

#endif
