/* pool.h: what the pool dispatcher (pool.c) and its result objects
 * (pool_result.c) ask of each other.  Everything here needs the GIL. */
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

#endif
