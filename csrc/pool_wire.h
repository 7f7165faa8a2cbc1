/* pool_wire.h: the pool channel's layout in shared memory and the format
 * of the records that cross it.  Plain C, no Python: the parent (pool.c,
 * pool_collect.c) and the workers (pool_worker.c) read and write it.
 *
 * One segment per pool ("channel") holds, at fixed offsets:
 *   fm_pool_hdr      magic, owner pid, the slot count, the rings' offsets
 *   fm_pool_slot[n]  the worker table: one 64-byte line per worker slot
 *                    (pid, state, and the batch of tasks it holds)
 *   fm_pool_bigslot[FM_POOL_BIG_SLOTS]
 *                    the big-entry segments kept for reuse (see below)
 *   task ring        parent -> workers (ring.h: many consumers)
 *   result ring      workers -> parent (one consumer at a time: the
 *                    collector thread, or a thread waiting for a result)
 *
 * A task record is a *batch*: fm_task_hdr, one job's function (its pickle,
 * padded to 8, so a worker can cache the unpickled function by those bytes
 * and unpickle it once per job, not per task), then `count` entries of
 * consecutive tasks of that job, each one user-level task (an apply call,
 * or one chunk of a map: the function is still called once per item).  A
 * worker answers each task record with result records (fm_result_hdr, then
 * one entry per task: its result, pickled, flagged ok or failed); it starts
 * another result record when one would pass the ring's largest record.
 *
 * An entry is fm_entry_hdr then `len` bytes, padded to 8.  Entries larger
 * than a quarter of a record travel in segments of their own: segments kept
 * for reuse in the big-slot table (FM_ENTRY_SLOT), or, when none is free,
 * one made for that entry alone (FM_ENTRY_BIG); everything else is copied
 * through the rings.  Nothing read from shared
 * memory is trusted: fm_entry_next() stops at an entry that overruns its
 * record.
 *
 * The task kinds and modes and the slot states are in pool.h: the Python
 * layer knows them too. */
#ifndef FASTMP_POOL_WIRE_H
#define FASTMP_POOL_WIRE_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/ring.h"
#include "core/shm.h"

#define FM_POOL_MAGIC 0x4c4f4f50u           /* "POOL" */
#define FM_POOL_VERSION 4u
#define FM_POOL_MAX_SLOTS 4096u
#define FM_POOL_HDR_SPACE 256u
#define FM_POOL_DEFAULT_RING (1u << 20)
/* Most tasks in one task record. */
#define FM_POOL_BATCH_MAX 64

enum fm_result_kind {
    FM_RES_RESULT = 1,
    FM_RES_INITFAIL = 2,
    FM_RES_STOP = 3,        /* parent -> its collector thread: leave */
    FM_RES_NUDGE = 4,       /* parent -> its other consumer: look again (see wait) */
    FM_RES_RETIRE = 5,      /* worker: leaving after maxtasks (aux: the slot) */
};

typedef struct {
    _Atomic uint32_t pid;
    _Atomic uint32_t state;
    _Atomic uint64_t job;
    _Atomic uint32_t first;
    _Atomic uint32_t count;
    _Atomic uint64_t tasks_done;
    /* Task timeouts (a record with timeout_ns): the task running and the
     * monotonic time (ns) it must end by, 0 when none runs; the parent
     * claims an overdue one by setting FM_POOL_DEADLINE_KILLED, then kills
     * the worker (pool_worker.c's timed_start says who decides). */
    _Atomic uint32_t running;
    uint32_t _rsv;
    _Atomic int64_t deadline;
    char _pad[FM_CACHE_LINE - 48];
} fm_pool_slot;

#define FM_POOL_DEADLINE_KILLED ((int64_t)-1)

typedef struct {
    uint32_t magic;
    uint32_t version;
    uint32_t nslots;
    uint32_t owner;                 /* the parent's pid: workers exit if it dies */
    uint64_t task_off, task_bytes;
    uint64_t result_off, result_bytes;
    /* Test hook: the next worker to take a task record dies (SIGKILL)
     * before it says in its slot what it holds (see adopt_held). */
    _Atomic uint32_t debug_die_after_take;
    uint32_t big_slots;             /* FM_POOL_BIG_SLOTS */
    uint64_t big_off;               /* the big-slot table */
} fm_pool_hdr;

/* The big-slot table: segments for large entries, kept mapped in every
 * process that used them and reused entry after entry, so that a large
 * entry costs its copies and nothing else (a segment of its own per entry
 * costs its creation, page faults on both sides, its unmapping and
 * unlinking: more than the copy itself).  A sender takes a FREE slot large
 * enough (FREE -> BUSY), or makes one (EMPTY or a FREE one too small ->
 * MAKING -> BUSY, the segment registered with the resource tracker and
 * disowned by its maker); the receiver reads the entry in place and frees
 * the slot (BUSY -> FREE).  `gen` changes whenever the slot's segment does,
 * so that a process's mapping of the old one is replaced.  A process that
 * dies holding a slot loses that slot to the pool; the pool's owner unlinks
 * every slot's segment when it closes.  Entries of more than
 * FM_POOL_BIG_CACHED_MAX bytes, or when the table would pass
 * FM_POOL_BIG_CACHE_BYTES, get a segment of their own. */
#define FM_POOL_BIG_SLOTS 16u
#define FM_POOL_BIG_CACHED_MAX ((size_t)32 << 20)
#define FM_POOL_BIG_CACHE_BYTES ((size_t)256 << 20)

enum fm_bigslot_state {
    FM_BIGSLOT_EMPTY = 0,           /* no segment */
    FM_BIGSLOT_FREE = 1,            /* a segment, unused */
    FM_BIGSLOT_BUSY = 2,            /* holds an entry in flight */
    FM_BIGSLOT_MAKING = 3,          /* its segment is being (re)made */
};

typedef struct {
    _Atomic uint32_t state;
    _Atomic uint32_t gen;
    _Atomic uint64_t size;
    char name[FM_SHM_NAME_MAX];
} fm_pool_bigslot;

typedef struct {
    uint32_t kind;
    uint32_t mode;
    uint64_t job;
    uint32_t first;
    uint32_t count;
    uint32_t func_len;
    uint32_t _pad;
    uint64_t timeout_ns;            /* per task, from its start; 0: no limit */
} fm_task_hdr;                      /* then func (padded to 8), then entries */

typedef struct {
    uint32_t kind;
    uint32_t aux;                   /* RESULT: run time in ns (saturated); INITFAIL: the slot */
    uint64_t job;
    uint32_t first;
    uint32_t count;
} fm_result_hdr;                    /* then entries */

typedef struct {
    uint32_t len;
    uint32_t flags;                 /* FM_ENTRY_* */
} fm_entry_hdr;                     /* then len bytes, padded to 8 */

/* Entry flags.  OK: a value (results; without it, a pickled exception).
 * BIG: the pickle is too large for the ring (more than a quarter of a
 * record), so it travels in a segment of its own and the entry holds an
 * fm_big_ref.  The sender creates the segment, registers it with the
 * resource tracker and unmaps it; the receiver copies it out, unlinks it and
 * unregisters it (whoever unlinks unregisters). */
#define FM_ENTRY_OK 1u
#define FM_ENTRY_BIG 2u
/* A map chunk's results, all exact ints that fit int64 (I64) or all exact
 * floats (F64), travel as a packed array of 8-byte values instead of a
 * pickle: a tight loop on both sides instead of the generic pickler (for
 * ints beyond 2**31, pickle's slowest path), with the same exact types. */
#define FM_ENTRY_I64 4u
#define FM_ENTRY_F64 8u
#define FM_ENTRY_VECTOR (FM_ENTRY_I64 | FM_ENTRY_F64)
/* SLOT: the payload is in a segment of the big-slot table; the entry holds
 * an fm_big_slot_ref (never with BIG). */
#define FM_ENTRY_SLOT 16u
#define FM_VECTOR_MIN 16    /* shorter lists are pickled: not worth a format */

typedef struct {
    uint64_t len;
    char name[FM_SHM_NAME_MAX];
} fm_big_ref;

typedef struct {
    uint64_t len;
    uint32_t slot;
    uint32_t gen;
} fm_big_slot_ref;

_Static_assert(sizeof(fm_pool_slot) == FM_CACHE_LINE, "slot is one cache line");
_Static_assert(sizeof(fm_pool_bigslot) == FM_CACHE_LINE, "big slot is one cache line");
_Static_assert(sizeof(fm_pool_hdr) <= FM_POOL_HDR_SPACE, "header too big");
_Static_assert(sizeof(fm_task_hdr) % 8 == 0 && sizeof(fm_result_hdr) % 8 == 0 &&
               sizeof(fm_entry_hdr) % 8 == 0, "8-aligned record parts");

static inline size_t
fm_pad8(size_t n)
{
    return (n + 7u) & ~(size_t)7u;
}

static inline fm_pool_slot *
fm_pool_slot_at(fm_pool_hdr *h, uint32_t i)
{
    return (fm_pool_slot *)((unsigned char *)h + FM_POOL_HDR_SPACE) + i;
}

static inline fm_pool_bigslot *
fm_pool_bigslot_at(fm_pool_hdr *h, uint32_t i)
{
    return (fm_pool_bigslot *)((unsigned char *)h + h->big_off) + i;
}

static inline fm_ring *
fm_pool_task_ring(fm_pool_hdr *h)
{
    return (fm_ring *)((unsigned char *)h + h->task_off);
}

static inline fm_ring *
fm_pool_result_ring(fm_pool_hdr *h)
{
    return (fm_ring *)((unsigned char *)h + h->result_off);
}

/* An entry larger than this travels in a segment of its own. */
static inline size_t
fm_pool_big_threshold(fm_ring *r)
{
    return fm_ring_max_record(r) / 4;
}

/* ------------------------------------------------------------ entries */

/* The walk over the entries of one record (task or result: the same
 * format after their headers). */
typedef struct {
    const unsigned char *rec;
    size_t len, off;
    uint32_t left;                  /* entries the header announces, not yet read */
} fm_entry_iter;

typedef struct {
    const unsigned char *data;
    uint32_t len, flags;
} fm_entry;

/* The entries of record `rec` (`len` bytes), the first at `off`, `count` of
 * them. */
static inline void
fm_entry_iter_init(fm_entry_iter *it, const unsigned char *rec, size_t len, size_t off,
                   uint32_t count)
{
    it->rec = rec;
    it->len = len;
    it->off = off;
    it->left = count;
}

/* 1 with the next entry in *e; 0 after the last one, or at an entry that
 * would overrun the record (the rest of a corrupt record is not read). */
static inline int
fm_entry_next(fm_entry_iter *it, fm_entry *e)
{
    fm_entry_hdr eh;
    if (it->left == 0 || it->off > it->len || it->len - it->off < sizeof eh)
        return 0;
    memcpy(&eh, it->rec + it->off, sizeof eh);
    if (it->len - it->off - sizeof eh < eh.len)
        return 0;
    e->data = it->rec + it->off + sizeof eh;
    e->len = eh.len;
    e->flags = eh.flags;
    it->off += sizeof eh + fm_pad8(eh.len);
    it->left--;
    return 1;
}

/* ------------------------------------------------------ copied records */

/* A growable byte buffer (plain malloc: filled without the GIL too). */
typedef struct {
    unsigned char *p;
    size_t len, cap;
} fm_buf;

static inline int
fm_buf_reserve(fm_buf *b, size_t more)
{
    if (b->len + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    unsigned char *p = realloc(b->p, cap);
    if (p == NULL)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

/* The result records a consumer copied out of the ring into an fm_buf
 * (pool_collect.c's drain): each is its length (8 bytes) then the record,
 * padded to 8.  One walk over them. */
typedef struct {
    const fm_buf *b;
    size_t off;
} fm_copied_iter;

/* 1 with the next record (*rec, *len), 0 after the last. */
static inline int
fm_copied_next(fm_copied_iter *it, const unsigned char **rec, uint32_t *len)
{
    if (it->off >= it->b->len)
        return 0;
    memcpy(len, it->b->p + it->off, sizeof *len);
    *rec = it->b->p + it->off + 8;
    it->off += 8 + fm_pad8(*len);
    return 1;
}

#endif
