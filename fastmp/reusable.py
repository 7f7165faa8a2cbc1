"""get_reusable_executor(): one process pool per process, kept warm between uses (beyond the
stdlib; loky's API, on fastmp's executor).

Starting worker processes (and importing a program's modules in them) costs tens to hundreds of
milliseconds; code that runs many short parallel sections pays it each time it makes a new
executor.  get_reusable_executor() returns the same executor on every call while it is alive
and asked for with the same parameters, so its workers stay warm; once it has had no work for
``timeout`` seconds its workers exit (the memory and processes go back to the system), and the
next submit() or map() starts new ones: the executor object itself stays usable.

How it is built: a _ReusableExecutor holds a fastmp.futures.ProcessPoolExecutor (its "pool")
and hands every call to it.  After the idle timeout a monitor thread shuts that pool down and
drops it; the next call makes a new one with the same parameters.  Asking for another
max_workers shuts the current pool down once its work is done (or kills its workers, with
kill_workers=True) and makes one of the new size: the same executor object is returned,
resized.  Asking for other parameters (context, timeout, initializer, ...) gives a new
executor (with reuse="auto", the default), after the old one is shut down the same way.

loky's job_reducers, result_reducers and env are left out: fastmp pickles tasks with pickle,
then cloudpickle when installed; an initializer can set environment variables.
"""
import math
import os
import threading
import time
from concurrent.futures import Executor

__all__ = ['get_reusable_executor']

_SHUTDOWN = 'cannot schedule new futures after shutdown'
# While busy past the timeout, how often the monitor looks again (seconds).
_BUSY_POLL = 1.0


class _ReusableExecutor(Executor):
    """The executor get_reusable_executor() returns: submit(), map(), shutdown() of
    concurrent.futures, on a fastmp ProcessPoolExecutor made on demand and shut down after
    `timeout` idle seconds."""

    def __init__(self, max_workers, options, timeout):
        self._lock = threading.RLock()          # the pool, the monitor, the counters
        self._wake = threading.Condition(self._lock)
        self._max_workers = max_workers
        self._options = options                 # the pool's other keyword arguments
        self._timeout = timeout                 # idle seconds before the workers exit
        self._shut = False
        # map(buffersize=) iterators not finished (a set: an iterator's __del__ leaves it
        # without the lock, which a garbage collection in any thread may run)
        self._buffered_maps = set()
        self._last_use = time.monotonic()
        self._monitor = None                    # the monitor thread while a pool lives
        self._idle_wait = False                 # it sleeps out the timeout: wake it on a call
        self._pool = self._make_pool()          # made now: bad parameters raise here

    def _make_pool(self):
        from .futures import ProcessPoolExecutor
        return ProcessPoolExecutor(self._max_workers, **self._options)

    # ---- what callers see of the pool

    @property
    def _processes(self):
        """pid -> Process of the live workers (as ProcessPoolExecutor's)."""
        pool = self._pool
        return pool._processes if pool is not None else {}

    @property
    def _broken(self):
        pool = self._pool
        return pool._broken if pool is not None else False

    def _usable(self):
        """Alive and not broken: get_reusable_executor() may return it again."""
        return not self._shut and not self._broken

    # ---- calls

    def _current(self):
        """The pool for a new call, made if the last one timed out (lock held)."""
        if self._shut:
            raise RuntimeError(_SHUTDOWN)
        if self._pool is None:
            self._pool = self._make_pool()
        self._last_use = time.monotonic()
        return self._pool

    def _watch(self):
        """After a call was handed to the pool (so that, with the fork start method, the
        workers were forked before this thread starts): the monitor runs (lock held)."""
        if self._monitor is None and self._timeout is not None:
            self._monitor = threading.Thread(target=self._monitor_main, daemon=True,
                                             name="fastmp-reusable-monitor")
            self._monitor.start()
        elif self._idle_wait:
            # once per idle spell, not per call: the monitor then watches this work end
            self._idle_wait = False
            self._wake.notify()

    def submit(self, fn, /, *args, **kwargs):
        with self._lock:
            f = self._current().submit(fn, *args, **kwargs)
            self._watch()
        return f
    submit.__doc__ = Executor.submit.__doc__

    def map(self, fn, *iterables, timeout=None, chunksize=1, buffersize=None):
        """ProcessPoolExecutor.map() on the current pool (buffersize= on every Python
        version, as fastmp's).  A map(buffersize=) keeps the pool alive until its iterator
        ends, is closed or is dropped: it hands chunks to the pool as it goes."""
        with self._lock:
            pool = self._current()
            results = pool.map(fn, *iterables, timeout=timeout, chunksize=chunksize,
                               buffersize=buffersize)
            self._watch()
            if buffersize is None:
                # every chunk was handed over: the pool's own count of work covers it
                return results
            it = _BufferedMap(self, results)
            self._buffered_maps.add(it._token)
        return it

    def _map_ended(self, token):
        self._last_use = time.monotonic()
        self._buffered_maps.discard(token)

    def shutdown(self, wait=True, *, cancel_futures=False):
        """Shut the executor down: get_reusable_executor() makes a new one after this."""
        with self._lock:
            self._shut = True
            pool, self._pool = self._pool, None
            self._wake.notify_all()
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=cancel_futures)
    shutdown.__doc__ = Executor.shutdown.__doc__

    def _stop_pool(self, pool, kill_workers):
        if kill_workers:
            pool.kill_workers()
        pool.shutdown(wait=True)

    def _retire(self, kill_workers):
        """For get_reusable_executor(): end this executor, its work done (or killed)."""
        with self._lock:
            self._shut = True
            pool, self._pool = self._pool, None
            self._wake.notify_all()
        if pool is not None:
            self._stop_pool(pool, kill_workers)

    def _resize(self, max_workers, kill_workers):
        """Another size: the current pool is shut down once its work is done (its workers
        killed, with kill_workers) and one of the new size made."""
        with self._lock:
            if max_workers == self._max_workers:
                return
            old = self._pool
            self._max_workers = max_workers
            self._pool = self._make_pool()
        if old is not None:
            self._stop_pool(old, kill_workers)

    # ---- the idle timeout

    def _idle(self, pool):
        """No work in the pool: every call handed to it has its outcome, and no
        map(buffersize=) will hand it more (lock held)."""
        return not self._buffered_maps and not pool._cache

    def _monitor_main(self):
        """Once the pool has had no work for `timeout` seconds, shut it down (its workers
        exit) and end; the next call makes a pool and a monitor again.  While work runs, look
        again every _BUSY_POLL seconds at most: the idle time counts from the first look
        that finds the work over (so the workers exit between `timeout` and `timeout` +
        _BUSY_POLL seconds after the work ended, never earlier)."""
        busy = False
        with self._lock:
            while True:
                pool = self._pool
                if self._shut or pool is None:
                    break
                now = time.monotonic()
                if not self._idle(pool):
                    busy = True
                    self._wake.wait(min(self._timeout, _BUSY_POLL))
                    continue
                if busy:
                    # the work ended at most one look ago: idle from now on, never less
                    busy = False
                    self._last_use = max(self._last_use, now)
                left = self._last_use + self._timeout - now
                if left > 0:
                    self._idle_wait = True
                    self._wake.wait(left)
                    # a call cleared the flag: work came (it may be over already)
                    busy = busy or not self._idle_wait
                    self._idle_wait = False
                    continue
                # idle long enough.  Shut down with the lock held, so that a call coming
                # now waits for the old workers to be gone and then makes a new pool.
                self._pool = None
                pool.shutdown(wait=True)
                break
            if self._monitor is threading.current_thread():
                self._monitor = None


class _BufferedMap:
    """The iterator of a map(buffersize=) on the reusable executor: tells it when it ends."""

    def __init__(self, owner, results):
        self._owner = owner
        self._results = results
        self._token = object()

    def __iter__(self):
        return self

    def __next__(self):
        results = self._results
        if results is None:
            raise StopIteration
        try:
            return next(results)
        except BaseException:
            # the generator is finished once it raised (StopIteration, a task's exception,
            # TimeoutError)
            self._end()
            raise

    def close(self):
        results = self._results
        if results is not None:
            results.close()
        self._end()

    def _end(self):
        owner, self._owner, self._results = self._owner, None, None
        if owner is not None:
            owner._map_ended(self._token)

    def __del__(self):
        self._end()


# ------------------------------------------------------------------------- the one executor

_lock = threading.Lock()
_executor = None
_executor_options = None


def _forget_in_child():
    # a forked child does not share its parent's workers: it makes its own executor
    global _lock, _executor, _executor_options
    _lock = threading.Lock()
    _executor = _executor_options = None


os.register_at_fork(after_in_child=_forget_in_child)


def _check_timeout(timeout):
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, "
                        f"not {type(timeout).__name__}")
    if math.isnan(timeout) or timeout <= 0:
        raise ValueError(f"timeout must be > 0 (seconds) or None, not {timeout!r}")


def _check_max_workers(max_workers):
    if isinstance(max_workers, bool) or not isinstance(max_workers, int):
        raise TypeError(f"max_workers must be an integer or None, "
                        f"not {type(max_workers).__name__}")
    if max_workers <= 0:
        raise ValueError("max_workers must be greater than 0")


def _same(a, b):
    try:
        return bool(a == b)
    except Exception:       # initargs whose == raises or is ambiguous (arrays): not the same
        return False


def get_reusable_executor(max_workers=None, context=None, timeout=300, kill_workers=False,
                          reuse="auto", *, initializer=None, initargs=(),
                          max_tasks_per_child=None, max_memory_per_child=None):
    """The process's reusable executor (loky's get_reusable_executor, on fastmp's executor):
    the same object on every call while it is alive, not broken, and asked for with the
    same parameters, so that its worker processes are reused.

    max_workers: the number of workers (None: os.cpu_count(); with reuse=True, the current
    executor's).  Another number resizes the executor returned: its current workers finish
    their work and exit (kill_workers=True: they are killed), and new ones start on demand.
    context: a fastmp context or a start method's name (None: fastmp's default).
    timeout: once the executor has had no work for this many seconds, its workers exit; the
    next submit() or map() starts new ones (None: they stay).
    kill_workers: when the executor cannot be reused (other parameters) or is resized, kill
    its workers (Process.kill) instead of waiting for the work they hold.
    reuse: "auto" reuses the executor when the parameters match; True reuses it whatever
    they are (only max_workers applies); False always makes a new executor.
    initializer, initargs, max_tasks_per_child, max_memory_per_child: those of
    fastmp.futures.ProcessPoolExecutor.

    loky's job_reducers, result_reducers and env are not supported."""
    global _executor, _executor_options
    _check_timeout(timeout)
    if not isinstance(kill_workers, bool):
        raise TypeError("kill_workers must be True or False")
    if reuse is not True and reuse is not False and reuse != "auto":
        raise ValueError(f"reuse must be 'auto', True or False, not {reuse!r}")
    if isinstance(context, str):
        from .context import _default_context
        context = _default_context.get_context(context)
    options = dict(mp_context=context, initializer=initializer, initargs=initargs,
                   max_tasks_per_child=max_tasks_per_child,
                   max_memory_per_child=max_memory_per_child)
    with _lock:
        current = _executor
        if max_workers is None:
            if reuse is True and current is not None and current._usable():
                max_workers = current._max_workers
            else:
                max_workers = os.cpu_count() or 1
        _check_max_workers(max_workers)
        if current is not None and current._usable() and (
                reuse is True or (reuse == "auto" and _same(options, _executor_options)
                                  and timeout == current._timeout)):
            current._resize(max_workers, kill_workers)
            return current
        # made first: bad parameters raise here, and the current executor stays
        executor = _ReusableExecutor(max_workers, options, timeout)
        _executor, _executor_options = executor, options
        if current is not None:
            current._retire(kill_workers)
        return executor

