/* pool.h: what the pool dispatcher (pool.c) and its result objects
 * (pool_result.c) ask of each other.  Everything here needs the GIL. */
#ifndef FASTMP_POOL_H
#define FASTMP_POOL_H

#include "fastmp.h"

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
