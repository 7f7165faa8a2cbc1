/* pool.h: what the pool's files ask of each other:
 *   pool.c          the PoolChannel type; the parent's side: put, apply, slots
 *   pool_wire.h     the channel's layout and record format (no Python)
 *   pool_payload.c  what an entry holds: pickles, packed results, large
 *                   entries in segments of their own
 *   pool_collect.c  the parent's result collection: the collector thread,
 *                   the waiting threads that collect, dispatch
 *   pool_worker.c   the worker loop (in the pool's child processes)
 *   pool_result.c   ApplyResult
 * Everything here needs the GIL unless it says otherwise. */
#ifndef FASTMP_POOL_H
#define FASTMP_POOL_H

#include "fastmp.h"

/* The channel's task modes, worker-slot states and task-record kinds, in
 * shared memory; the module exports them (module.c) for fastmp.pool. */
enum fm_slot_state {
    FM_SLOT_FREE = 0,       /* no worker */
    FM_SLOT_STARTING = 1,   /* process started, not in the loop yet */
    FM_SLOT_IDLE = 2,       /* waiting for a task */
    FM_SLOT_BUSY = 3,       /* holds the batch (job, first, count) */
    FM_SLOT_INITFAIL = 4,   /* its initializer raised (and it posted why) */
    FM_SLOT_EXITED = 5,     /* left the loop on purpose (EXIT record, maxtasks) */
};

enum fm_task_kind { FM_TASK_RUN = 1, FM_TASK_EXIT = 2 };
enum fm_task_mode {
    FM_MODE_APPLY = 0,      /* entry: args tuple */
    FM_MODE_APPLY_KW = 1,   /* entry: (args, kwds) */
    FM_MODE_MAP = 2,        /* entry: a chunk; f(x) for each */
    FM_MODE_STARMAP = 3,    /* entry: a chunk; f(*x) for each */
};

/* pool.c: wait on a PoolChannel until it hands results over, the deadline,
 * or a short slice, collecting in this thread when no other thread does.
 * Returns 1 after a hand-over (to anyone), 0 when nothing came, 2 when the
 * channel cannot be waited on (closing, or not this process's): the caller
 * waits another way; -1 with an exception set. */
int fm_pool_channel_wait(PyObject *channel, int64_t deadline);

/* pool_result.c: a new ApplyResult of job number `job`, registered in
 * `cache` ({job: result}); callbacks may be None. */
PyObject *fm_apply_result_new(fm_state *st, PyObject *pool, PyObject *cache,
                              PyObject *channel, PyObject *callback,
                              PyObject *error_callback);

/* pool_result.c: is `obj` exactly an ApplyResult (not a subclass that may
 * have its own _set)? */
int fm_is_apply_result(fm_state *st, PyObject *obj);

/* pool_result.c: the outcome of an ApplyResult's task (ok: a value, else an
 * exception): run the callback, mark it ready, wake its waiters, drop it
 * from the cache.  A callback's exception is reported, never raised. */
void fm_apply_result_complete(PyObject *result, int ok, PyObject *value);

/* pool_result.c: the job number of an ApplyResult (an int; borrowed). */
PyObject *fm_apply_result_job(PyObject *result);

/* ------------------------------------------- between the channel's files */

#include <pthread.h>

#include "pool_wire.h"

/* One process's mappings of a channel's big-slot segments (pool_wire.h),
 * kept from one entry to the next; the GIL guards it. */
typedef struct {
    fm_pool_hdr *h;
    fm_segment *seg[FM_POOL_BIG_SLOTS];
    uint32_t gen[FM_POOL_BIG_SLOTS];
} fm_big_cache;

typedef struct {
    PyObject_HEAD
    fm_segment *seg;
    fm_pool_hdr *hdr;
    uint32_t owner;                 /* pid that created it (and collects) */
    PyObject *dumps, *loads, *fallback_dumps;
    fm_state *st;                   /* the module's: fm_segment_gone() for unlinked segments */
    /* collector thread */
    pthread_t thread;
    int thread_running;
    PyObject *on_results, *on_dead;
    /* Set by pool.py: the pool's {job: result}, whose exact ApplyResults
     * dispatch() completes itself; apply()'s function-pickle cache, its
     * pickler for misses, and its fallback when the ring is full. */
    PyObject *cache, *func_cache, *dump_function, *submit;
    /* Set by the dispatcher: {job: time limit per task in ns} of the jobs
     * that have one; put() writes it into their task records. */
    PyObject *timeouts;
    char lazy_wake;                 /* apply() may skip wake-ups (no maxtasksperchild) */
    int64_t spin_ns;
    int64_t task_ns;                /* measured time per task (GIL held) */
    /* A thread waiting for a result collects itself (the "leader"), so a
     * result reaches it without a hop through the collector thread; the
     * collector thread stays off the ring meanwhile.  Other waiting
     * threads sleep on disp_seq, bumped after every dispatch.  These words
     * are process-local: futexes without FUTEX_PRIVATE are fine here too. */
    _Atomic uint32_t leader;        /* 1 while some thread collects in wait() */
    _Atomic int64_t leader_seen;    /* when a thread last collected (ns) */
    _Atomic uint32_t disp_seq;
    _Atomic uint32_t disp_sleepers;
    _Atomic uint32_t in_take;       /* the collector thread sleeps on the ring */
    _Atomic uint32_t waiting;       /* threads inside wait() */
    _Atomic uint32_t putting;       /* threads inside put_record() (pool.c) */
    _Atomic uint32_t closing;
    /* channel_destroy: 0 not begun, 1 running (in one thread), 2 done */
    _Atomic uint32_t destroying;
    unsigned long destroyer;        /* the thread running it (a re-entry returns) */
    _Atomic uint32_t stopping;      /* stop_collector(): do not park, take the STOP */
    _Atomic uint32_t retired;       /* a RETIRE record came: the collector calls on_dead */
    PyObject *weakreflist;
    fm_big_cache big;               /* this process's big-slot mappings */
} PoolChannelObject;

/* pool.c: module.name, imported (a new reference), or NULL with an exception. */
PyObject *fm_pool_import_attr(const char *module, const char *name);

/* pool_payload.c: pickle.dumps(obj, HIGHEST) as new bytes; when it fails and
 * `fallback` is given, fallback(obj, exc).  NULL with the exception set. */
PyObject *fm_pool_pickle(PyObject *dumps, PyObject *fallback, PyObject *obj);

/* pool_payload.c: replace *b (a payload too large for the ring) by the
 * bytes of a reference to a segment that holds it: a big slot's
 * (*flag |= FM_ENTRY_SLOT), or one of its own (an fm_big_ref, registered
 * with the tracker, unmapped here: *flag |= FM_ENTRY_BIG).  -1 with an
 * exception, *b cleared and nothing left behind. */
int fm_pool_to_big_entry(fm_state *st, fm_big_cache *bc, PyObject **b, uint32_t *flag);

/* pool_payload.c: the same from len bytes at data; NULL with an exception. */
PyObject *fm_pool_big_entry_from(fm_state *st, fm_big_cache *bc, const void *data, size_t len,
                                 uint32_t *flag);

/* pool_payload.c: for obj that looks like a large payload (a big bytes or
 * bytearray, or a list or tuple starting with one): its entry, pickled
 * straight into a big slot when larger than `big` (*flag |= FM_ENTRY_SLOT),
 * with one copy of the large buffers instead of two.  NULL, no exception
 * set, for anything else or on any error: the caller pickles it the usual
 * way. */
PyObject *fm_pool_pickle_large(fm_state *st, fm_big_cache *bc, PyObject *obj, size_t big,
                               uint32_t *flag);

/* pool_payload.c: unlink a big entry's segment and tell the tracker. */
void fm_pool_big_unlink(fm_state *st, const fm_big_ref *ref);

/* pool_payload.c: an entry nobody will read (flags, its bytes): unlink its
 * segment of its own, or free its big slot. */
void fm_pool_drop_big(fm_state *st, fm_big_cache *bc, uint32_t flags, const void *data,
                      size_t len);

/* pool_payload.c: unmap this process's big-slot mappings; `owner` (the
 * pool's owner, at close, workers gone): also unlink every slot's segment
 * and tell the tracker. */
void fm_pool_big_cache_close(fm_state *st, fm_big_cache *bc, int owner);

/* pool_payload.c: the object an entry holds (pickled, packed, or in a
 * segment: its own, then unlinked, or a big slot's, then freed); NULL with
 * an exception. */
PyObject *fm_pool_load_entry(fm_state *st, fm_big_cache *bc, PyObject *loads,
                             const fm_entry *e);

/* pool_payload.c: an entry of packed results (FM_ENTRY_VECTOR; in the ring
 * or in a segment, consumed as fm_pool_load_entry does) unpacked straight
 * into list[start:start + count], replacing what was there, with no list
 * made for them; the count as an int, or NULL with an exception (also when
 * the entry does not hold exactly `count` results). */
PyObject *fm_pool_place_entry(fm_state *st, fm_big_cache *bc, const fm_entry *e, PyObject *list,
                              Py_ssize_t start, Py_ssize_t count);

/* pool_payload.c: a map chunk's results (an exact list) packed (see
 * FM_ENTRY_I64) with *flag set, or NULL with no exception when the list is
 * not all exact ints that fit int64 or all exact floats. */
PyObject *fm_pool_encode_vector(PyObject *list, uint32_t *flag);

/* pool_payload.c: run a map chunk a (MAP: f(x), STARMAP: f(*x) for each x
 * of it; a range's items are made one at a time), packing the results (see
 * FM_ENTRY_I64) into vec as they come while they pack, so that a large
 * chunk's results never live as objects all at once.  1: every result
 * packed, vec holds them (*flag set); 0: *list holds them (a new list); -1
 * with the first exception. */
int fm_pool_call_chunk(PyObject *f, uint32_t mode, PyObject *a, fm_buf *vec, uint32_t *flag,
                       PyObject **list);

/* pool_payload.c: unlink the big entries of one task or result record
 * (`task`: which header) that nobody will read. */
void fm_pool_unlink_big_entries(fm_state *st, fm_big_cache *bc, const fm_ring_read *rd,
                                int task);

/* pool_payload.c: the same for every record left in a ring (at close). */
void fm_pool_drain_big(fm_state *st, fm_big_cache *bc, fm_ring *r, int task);

/* pool_collect.c: post a STOP or NUDGE record to the result ring.  No GIL
 * needed; returns the claim's status. */
int fm_pool_post_control(PoolChannelObject *self, uint32_t kind, int64_t deadline);

/* pool_collect.c: wake the threads waiting for a hand-over.  No GIL needed. */
void fm_pool_bump_dispatch(PoolChannelObject *self);

/* pool_collect.c: the body of PoolChannel.wait() and of fm_pool_channel_wait. */
int fm_pool_wait(PoolChannelObject *self, int64_t deadline);

/* pool_collect.c: in apply(), hand results over from this thread when many
 * piled up while it submitted. */
void fm_pool_help_collect(PoolChannelObject *self);

/* pool_collect.c: start the collector thread (callbacks set); -1 with an
 * exception.  Stop it after what was posted before is delivered (no-op
 * when not running, or from the thread itself). */
int fm_pool_collector_start(PoolChannelObject *self);
void fm_pool_collector_stop(PoolChannelObject *self);

/* pool_collect.c: is this the channel's collector thread? */
int fm_pool_in_collector(PoolChannelObject *self);

/* pool_worker.c: PoolChannel.worker_main and worker_init_failed (their
 * docstrings in pool.c say what they do). */
PyObject *fm_pool_worker_main(fm_state *st, PyObject *name, long slot,
                              unsigned long long maxtasks, PyObject *encode_failure,
                              unsigned long long maxmem);
PyObject *fm_pool_worker_init_failed(PyObject *name, long slot, PyObject *payload);

#endif
