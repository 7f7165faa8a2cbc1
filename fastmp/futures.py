"""ProcessPoolExecutor on fastmp's C dispatcher (the one under fastmp.pool.Pool).

The API is concurrent.futures.ProcessPoolExecutor's, and submit() returns
concurrent.futures.Future objects (a subclass whose result() collects results in the
waiting thread), so as_completed() and wait() work unchanged.  Semantics follow the
stdlib's: a worker that dies abruptly breaks the executor (pending futures fail with
BrokenProcessPool, later submits raise it), an initializer that raises does too, and
max_tasks_per_child cannot be used with the fork start method.

One difference: a task goes to the workers' shared queue at submit(), so the parent does not
see it start: cancel() succeeds on any future not done (shutdown(cancel_futures=True) spares
those the workers hold), and a worker may still run a cancelled call; its outcome is dropped.
"""
import os
import threading
import time
from concurrent.futures import (  # noqa: F401  (re-exported for convenience)
    ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, CancelledError, Executor, Future,
    InvalidStateError, TimeoutError, as_completed, wait,
)
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import util

from . import pool as _pool

__all__ = ['ProcessPoolExecutor', 'BrokenProcessPool']

_BROKEN_FUTURE = ("A process in the process pool was terminated abruptly while the future "
                  "was running or pending.")
_BROKEN_POOL = "A child process terminated abruptly, the process pool is not usable anymore"


class _ChannelFuture(Future):
    """A Future whose result()/exception() collect results in the waiting thread (no hop
    through the collector thread); everything else is concurrent.futures.Future's."""

    def __init__(self, channel):
        super().__init__()
        self._fm_channel = channel

    def _fm_wait(self, timeout):
        ch = self._fm_channel
        if ch is None or self.done():
            return timeout
        t0 = time.monotonic()
        if not _pool._wait_on_channel(ch, self.done, timeout):
            self._fm_channel = None
        if timeout is None:
            return None
        return max(0.0, timeout - (time.monotonic() - t0))

    def result(self, timeout=None):
        return super().result(self._fm_wait(timeout))

    def exception(self, timeout=None):
        return super().exception(self._fm_wait(timeout))


class _FutureJob(_pool._ItemwiseRuns):
    """A dispatcher job whose tasks' outcomes go to futures (one per task index)."""
    __slots__ = ("_job", "_futures", "_cache", "_left")

    def __init__(self, cache, futures):
        self._job = _pool._next_job()
        self._futures = futures
        self._cache = cache
        self._left = len(futures)
        if futures:
            cache[self._job] = self

    def _set(self, i, obj):
        f = self._futures[i]
        if f is None:
            return
        self._futures[i] = None
        self._left -= 1
        if self._left == 0:
            self._cache.pop(self._job, None)
        ok, value = obj
        try:
            if ok:
                f.set_result(value)
            else:
                f.set_exception(value)
        except InvalidStateError:   # cancelled meanwhile: the outcome is dropped
            pass

    def _fail_held(self, first, count, exc):
        for i in range(first, min(first + count, len(self._futures))):
            self._set(i, (False, exc))

    def _cancel(self):
        for f in self._futures:
            if f is not None:
                f.cancel()


class _ExecutorDispatcher(_pool._Dispatcher):
    """The Pool's dispatcher with the executor's reaction to a lost worker: the whole
    executor is broken, as the stdlib's is."""

    def worker_lost(self, p, state, job, first, count):
        self.break_executor(BrokenProcessPool(_BROKEN_FUTURE))
        return False

    def init_failed(self, slot, exc):
        err = BrokenProcessPool(_BROKEN_FUTURE)
        err.__cause__ = exc
        self.break_executor(err)

    def break_executor(self, err):
        with self.lock:
            first = self.broken is None
            if first:
                self.broken = err
                self.feeds.clear()
            for job in list(self.cache.values()):
                job._fail_held(0, len(job._futures), err)
            workers = [p for p in self.workers if p is not None]
        if first:
            # as the stdlib: the other workers are stopped too
            for p in workers:
                if p.exitcode is None:
                    try:
                        p.terminate()
                    except OSError:
                        pass
        self.maybe_finish()


def _executor_exit(dispatcher):
    """At interpreter exit (or when the executor is collected): let pending work finish, as
    the stdlib's executor does, then stop the workers."""
    if dispatcher.broken is not None or dispatcher.state == _pool.TERMINATE:
        dispatcher.terminate()
        return
    dispatcher.close()
    dispatcher.join()


class ProcessPoolExecutor(Executor):
    """concurrent.futures.ProcessPoolExecutor on fastmp's C dispatcher."""

    def __init__(self, max_workers=None, mp_context=None, initializer=None, initargs=(),
                 *, max_tasks_per_child=None):
        if max_workers is None:
            max_workers = os.cpu_count() or 1
        elif max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if mp_context is None:
            if max_tasks_per_child is not None:
                from .context import _concrete_contexts
                mp_context = _concrete_contexts["spawn"]
            else:
                from .context import _default_context
                mp_context = _default_context.get_context()
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            elif max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
            if mp_context.get_start_method(allow_none=False) == "fork":
                raise ValueError("max_tasks_per_child is incompatible with the 'fork' "
                                 "multiprocessing start method; supply a different "
                                 "mp_context.")
        self._max_workers = max_workers
        self._mp_context = mp_context
        self._initializer = initializer
        self._initargs = initargs
        self._max_tasks_per_child = max_tasks_per_child
        self._cache = {}
        self._shutdown_lock = threading.Lock()
        self._shutdown_thread = False
        d = self._dispatcher = _ExecutorDispatcher(mp_context, max_workers, initializer,
                                                   initargs, max_tasks_per_child, self._cache)
        try:
            d.start_workers()
            d.channel.start_collector(d.on_results, d.on_dead)
        except BaseException:
            d.terminate()
            raise
        self._finalizer = util.Finalize(self, _executor_exit, args=(d,), exitpriority=15)

    @property
    def _processes(self):
        """pid -> Process of the live workers (as the stdlib's attribute)."""
        return {p.pid: p for p in self._dispatcher.workers if p is not None}

    @property
    def _broken(self):
        return _BROKEN_POOL if self._dispatcher.broken is not None else False

    def _check_submit(self):
        if self._dispatcher.broken is not None:
            raise BrokenProcessPool(_BROKEN_POOL)
        if self._shutdown_thread:
            raise RuntimeError('cannot schedule new futures after shutdown')

    def submit(self, fn, /, *args, **kwargs):
        """Run fn(*args, **kwargs) in a worker; return a Future."""
        with self._shutdown_lock:
            self._check_submit()
            d = self._dispatcher
            f = _ChannelFuture(d.channel)
            job = _FutureJob(self._cache, [f])
            try:
                fdata = d.dump_function(fn)
            except Exception as exc:
                job._set(0, (False, exc))
                return f
            if kwargs:
                d.submit(job, _pool._APPLY_KW, fdata, [(args, kwargs)])
            else:
                d.submit(job, _pool._APPLY, fdata, [args])
            return f

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        """Like map(fn, *iterables), the calls made in the workers, chunksize at a time;
        results in order, each waited for until `timeout` seconds after this call."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        end_time = None if timeout is None else timeout + time.monotonic()
        args = list(zip(*iterables))
        chunks = [tuple(args[i:i + chunksize]) for i in range(0, len(args), chunksize)]
        with self._shutdown_lock:
            self._check_submit()
            d = self._dispatcher
            futures = [_ChannelFuture(d.channel) for _ in chunks]
            job = _FutureJob(self._cache, list(futures))
            if chunks:
                try:
                    fdata = d.dump_function(fn)
                except Exception as exc:
                    job._fail_held(0, len(chunks), exc)
                else:
                    d.submit(job, _pool._STARMAP, fdata, chunks)

        def result_iterator():
            try:
                futures.reverse()
                while futures:
                    f = futures.pop()
                    if end_time is None:
                        chunk = f.result()
                    else:
                        chunk = f.result(end_time - time.monotonic())
                    yield from chunk
            finally:
                for f in futures:
                    f.cancel()

        return result_iterator()

    def shutdown(self, wait=True, *, cancel_futures=False):
        """Accept no more work; with cancel_futures, cancel pending futures; with wait,
        return once the workers have exited."""
        with self._shutdown_lock:
            self._shutdown_thread = True
            d = self._dispatcher
            if cancel_futures:
                # what the workers hold is running, the rest is pending
                running = set()
                if not d.channel.closed:
                    for slot in range(d.processes):
                        _, state, job, _, _, _ = d.channel.slot(slot)
                        if state == _pool._SLOT_BUSY:
                            running.add(job)
                for job in list(self._cache.values()):
                    if job._job in running:
                        for f in job._futures:
                            if f is not None:
                                f.set_running_or_notify_cancel()
                    else:
                        job._cancel()
        if d.broken is not None:
            d.terminate()
            return
        d.close()
        if wait:
            d.join()
        else:
            threading.Thread(target=d.join, daemon=True,
                             name="fastmp-executor-shutdown").start()
