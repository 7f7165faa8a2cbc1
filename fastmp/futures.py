"""ProcessPoolExecutor on fastmp's C dispatcher (the one under fastmp.pool.Pool).

The API and the semantics are concurrent.futures.ProcessPoolExecutor's; submit() returns
concurrent.futures.Future objects (a subclass whose result() collects results in the
waiting thread), so as_completed() and wait() work unchanged.

What the stdlib's executor does, this one does too:

* A future is RUNNING once its call is handed to the workers, and at most max_workers + 1
  calls are handed over at a time (the stdlib's call queue); the others wait in the parent,
  where cancel() still works.  A cancelled future is never handed over, so its call never
  runs; shutdown(cancel_futures=True) cancels exactly the futures still waiting.
* Workers start on demand: at submit(), when no worker is idle, one more starts (up to
  max_workers).  With the fork start method all of them start at the first submit(), before
  any thread of the executor (forking while threads run is unsafe).
* A worker that dies, a task that cannot be unpickled in the worker, a result that cannot be
  unpickled in the parent, and an initializer that raises (logged to the
  "concurrent.futures" logger in the worker) all break the executor: pending futures fail
  with BrokenProcessPool, later submits raise it.  A call that raises (SystemExit included),
  or a result that cannot be pickled, fails its own future; the worker's traceback is the
  __cause__, a concurrent.futures.process._RemoteTraceback.
* submit() after shutdown(), or once the interpreter is shutting down, raises RuntimeError;
  max_tasks_per_child cannot be used with the fork start method.
* map() goes through submit() when submit is overridden (a subclass, or a patched
  instance, as progress bars do); otherwise it posts its chunks to the workers at once (one
  job, fastmp's fast path) and, like the stdlib's, keeps no reference to results it yielded.
  map(..., buffersize=n) is Python 3.14's on every version: the input is read lazily, at
  most n chunks ahead of the consumer, each chunk posted as a job of its own.

Beyond the stdlib: ProcessPoolExecutor(task_timeout=seconds) limits every call from the moment
a worker starts it: a call that runs longer fails its future with
fastmp.futures.TaskTimeoutError (a concurrent.futures.TimeoutError, and a
multiprocessing.TimeoutError), its worker is killed and replaced, and the executor carries on
(it is not broken).  map() then runs each item as a task of its own, so the limit is per item
(chunksize of them travel together); with buffersize, or when submit is overridden, the limit
is per chunk.  fastmp._timeouts says how it works.

Where fastmp differs on purpose: a task whose arguments cannot be pickled fails its own
future with the pickling error at submit() (the stdlib's does too, through its feeder
thread, later); the chunks of a map() are all handed to the workers at once, so they are
RUNNING (cancel() returns False for them) rather than waiting in the parent; a map()
argument a worker cannot unpickle fails that map() and leaves the executor usable (the
stdlib's worker dies, which breaks it).  docs/reliability.md has the details.
"""
import collections
import itertools
import logging
import os
import pickle
import sys
import threading
import time
import weakref
from concurrent.futures import (  # noqa: F401  (re-exported for convenience)
    ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, CancelledError, Executor, Future,
    InvalidStateError, TimeoutError, as_completed, wait,
)
from concurrent.futures import process as _cf_process
from concurrent.futures._base import RUNNING as _RUNNING
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import util

from . import _core
from . import _dispatcher as _disp
from ._pickling import dump_cached
from ._timeouts import TaskTimeoutError  # noqa: F401  (public here)
from ._timeouts import TimedJob as _TimedJob, check_timeout as _check_timeout

__all__ = ['ProcessPoolExecutor', 'BrokenProcessPool', 'get_reusable_executor']

_BROKEN_FUTURE = ("A process in the process pool was terminated abruptly while the future "
                  "was running or pending.")
_BROKEN_POOL = "A child process terminated abruptly, the process pool is not usable anymore"
_LOGGER = logging.getLogger("concurrent.futures")
# calls handed to the workers beyond one per worker (the stdlib's call queue holds as many)
_EXTRA_QUEUED_CALLS = 1
_END = object()     # ends the results of a map() chunk


# --------------------------------------------------------------------------- in the worker

class _Call:
    """The function of a submitted call, as the worker runs it: it notes the exception the
    call raised, so that a failure before the call (the task's arguments or the function
    could not be unpickled) is told apart from one of the call."""
    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn

    def __reduce__(self):
        return _Call, (self.fn,)

    def __call__(self, /, *args, **kwargs):
        try:
            return self.fn(*args, **kwargs)
        except BaseException as exc:
            _worker_state.call_error = exc
            raise


class _WorkerState:
    call_error = None


_worker_state = _WorkerState()


def _task_lost(exc):
    err = BrokenProcessPool(_BROKEN_FUTURE)
    err.__cause__ = exc
    return err


class _TaskLost:
    """A failure outside a submitted call (its function or arguments could not be loaded;
    or any failure of a map() chunk, whose function the worker calls directly): pickles as
    a BrokenProcessPool whose __cause__ is the exception, with the worker's traceback as its
    own __cause__.  The parent breaks the executor for a submitted call (the stdlib's worker
    dies there) and fails the chunk with the exception for a map()."""

    def __init__(self, exc):
        self.exc = _cf_process._ExceptionWithTraceback(exc, exc.__traceback__)

    def __reduce__(self):
        return _task_lost, (self.exc,)


def _encode_failure(kind, exc, value):
    """Called by the C worker loop: pickle a failed call (kind 0: it, or loading it, raised
    exc) or a result that could not be pickled (kind 1: pickling value raised exc)."""
    in_call = exc is _worker_state.call_error
    _worker_state.call_error = None
    if kind == 0 and not in_call:
        obj = _TaskLost(exc)
    else:
        obj = _cf_process._ExceptionWithTraceback(exc, exc.__traceback__)
    try:
        return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
    except BaseException as e:
        # the exception itself cannot be pickled: that error instead, as the stdlib's worker
        try:
            return pickle.dumps(_cf_process._ExceptionWithTraceback(e, e.__traceback__),
                                pickle.HIGHEST_PROTOCOL)
        except BaseException:
            err = pickle.PicklingError("the exception of a call could not be pickled: %s"
                                       % type(exc).__name__)
            return pickle.dumps(_cf_process._ExceptionWithTraceback(err, None),
                                pickle.HIGHEST_PROTOCOL)


def _worker_bootstrap(name, slot, initializer, initargs, maxtasks, max_memory=None):
    """The target of every executor worker process."""
    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException:
            # As the stdlib's worker: log it and exit.  The parent sees a worker die, which
            # breaks the executor, only once this process has ended, so what it logged
            # through a multiprocessing queue has been flushed by then.
            _LOGGER.critical('Exception in initializer:', exc_info=True)
            sys.exit(1)
    _core.PoolChannel.worker_main(name, slot, maxtasks, _encode_failure, max_memory)


# --------------------------------------------------------------------------- in the parent

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
        if not _disp.wait_on_channel(ch, self.done, timeout):
            self._fm_channel = None
        if timeout is None:
            return None
        return max(0.0, timeout - (time.monotonic() - t0))

    def result(self, timeout=None):
        return super().result(self._fm_wait(timeout))

    def exception(self, timeout=None):
        return super().exception(self._fm_wait(timeout))


def _from_worker(exc):
    """Whether a failure was encoded by a worker (_encode_failure), rather than raised in the
    parent while unpickling a result."""
    cause = exc.__cause__
    if isinstance(cause, _cf_process._RemoteTraceback):
        return True
    return (isinstance(exc, BrokenProcessPool) and isinstance(cause, BaseException)
            and isinstance(cause.__cause__, _cf_process._RemoteTraceback))


class _FutureJob(_disp.ItemwiseRuns):
    """A dispatcher job whose tasks' outcomes go to futures (one per task index)."""
    __slots__ = ("_job", "_futures", "_cache", "_left", "_dispatcher", "_windowed", "_posted")

    def __init__(self, dispatcher, futures, windowed):
        self._job = _disp.next_job()
        self._futures = futures
        self._dispatcher = dispatcher
        self._cache = dispatcher.cache
        self._left = len(futures)
        self._windowed = windowed
        self._posted = False            # handed to the workers (counted in the window)
        if futures:
            self._cache[self._job] = self

    def _set(self, i, obj):
        """An outcome decided in the parent (the call could not be posted, or the executor
        broke): the call leaves the window without a worker's help."""
        d = self._dispatcher
        if self._deliver(i, obj) and self._posted and self._windowed and d.broken is None:
            d.tasks_done(1, True, False)

    def _deliver(self, i, obj):
        f = self._futures[i]
        if f is None:
            return False
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
        return True

    def _set_run(self, first, pairs):
        """Outcomes from the workers.  A failure that did not come from a worker's call (no
        remote traceback: the parent could not unpickle the result) or that says the task
        could not be loaded (BrokenProcessPool) breaks the executor, as the stdlib's."""
        d = self._dispatcher
        broken = None
        for k, (ok, value) in enumerate(pairs):
            if not ok and not _from_worker(value):
                if broken is None:
                    broken = BrokenProcessPool(_BROKEN_FUTURE)
                    broken.__cause__ = value
            elif not ok and isinstance(value, BrokenProcessPool):
                if self._windowed:
                    broken = broken or value
                else:
                    # map(): the chunk's call raised, or its arguments could not be loaded
                    self._deliver(first + k, (False, value.__cause__))
            else:
                self._deliver(first + k, (ok, value))
        d.tasks_done(len(pairs), self._windowed, True)
        if broken is not None:
            d.break_executor(broken)

    def _fail_held(self, first, count, exc):
        for i in range(first, min(first + count, len(self._futures))):
            self._set(i, (False, exc))


class _ExecutorDispatcher(_disp.Dispatcher):
    """The channel dispatcher with the executor's window of handed-over calls, its workers
    started on demand, and its reaction to a lost worker: the whole executor is broken, as
    the stdlib's is.

    Locks: xlock (the executor's _shutdown_lock) guards the window (inflight, pending, idle);
    when both are taken, xlock comes first, then self.lock."""

    worker_target = staticmethod(_worker_bootstrap)

    def __init__(self, *args, shutdown_lock, maxmem=None):
        super().__init__(*args, maxmem=maxmem)
        self.xlock = shutdown_lock      # the executor's: guards what follows
        self.limit = self.processes + _EXTRA_QUEUED_CALLS
        self.inflight = 0               # windowed calls handed to the workers, not done
        self.pending = collections.deque()      # (future, job, mode, fdata, items)
        self.idle = 0                   # results received minus tasks given (the stdlib's
        #                                 _idle_worker_semaphore)

    def start_one(self):
        """Start a worker in a free slot, if any (xlock held)."""
        with self.lock:
            if self.broken is not None or self.state != _disp.RUN:
                return
            for slot, p in enumerate(self.workers):
                if p is None:
                    self.start_worker(slot)
                    return

    def adjust(self, ntasks):
        """New tasks: start workers for those no idle worker takes (xlock held)."""
        for _ in range(min(ntasks, self.processes)):
            if self.idle > 0:
                self.idle -= 1
            elif len(self.pool) < self.processes:
                self.start_one()

    def enqueue(self, f, job, mode, fdata, items):
        """Hand one call over if the window has room, else keep it waiting (xlock held)."""
        if self.inflight < self.limit and not self.pending:
            f._state = _RUNNING         # a fresh future, not yet seen by anyone
            self.inflight += 1
            job._posted = True
            self.submit(job, mode, fdata, items)
        else:
            self.pending.append((f, job, mode, fdata, items))

    def tasks_done(self, n, windowed, by_worker):
        """n tasks left the workers' hands (by_worker: a worker answered them, so it is
        idle now) or the window (windowed): hand over waiting calls."""
        with self.xlock:
            if by_worker:
                self.idle += n
            if not windowed:
                return
            self.inflight -= n
            while self.pending and self.inflight < self.limit and self.broken is None:
                try:
                    f, job, mode, fdata, items = self.pending.popleft()
                except IndexError:
                    break
                if not f.set_running_or_notify_cancel():
                    self.cache.pop(job._job, None)      # cancelled: never runs
                    continue
                self.inflight += 1
                job._posted = True
                self.submit(job, mode, fdata, items)

    def drop_cancelled(self, cancel_all=False):
        """Forget waiting calls whose futures are cancelled (with cancel_all, cancel them
        all first); xlock held."""
        keep = collections.deque()
        for entry in self.pending:
            f, job = entry[0], entry[1]
            if (cancel_all and f.cancel()) or f.cancelled():
                f.set_running_or_notify_cancel()
                self.cache.pop(job._job, None)
            else:
                keep.append(entry)
        self.pending = keep

    def worker_lost(self, p, state, job, first, count):
        self.break_executor(BrokenProcessPool(_BROKEN_FUTURE))
        return False

    def fail_everything(self, job, exc):
        job._fail_held(0, len(job._futures), exc)

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
            jobs = list(self.cache.values())
            workers = [p for p in self.workers if p is not None]
        # not under xlock: this may run under self.lock (on_dead), and the lock order is
        # xlock, then self.lock.  Nothing is handed over once self.broken is set.
        self.pending = collections.deque()
        for job in jobs:
            job._fail_held(0, len(job._futures), err)
        if first:
            # as the stdlib: the other workers are stopped too
            for p in workers:
                if p.exitcode is None:
                    try:
                        p.terminate()
                    except OSError:
                        pass
        self.maybe_finish()


class _Manager:
    """What the stdlib's executor manager thread is to its users: join() returns once the
    executor has shut down (its workers exited), is_alive() until then.  One thread per
    executor, started at the first submit(), waits for shutdown() (or for the executor to be
    collected, or the interpreter to exit), lets the remaining calls finish, and stops the
    workers."""

    def __init__(self, dispatcher):
        self._d = dispatcher
        self._go = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True,
                                        name="fastmp-executor-manager")
        self._thread.start()

    def _main(self):
        self._go.wait()
        _executor_exit(self._d)

    def wakeup(self):
        self._go.set()

    def join(self, timeout=None):
        self._thread.join(timeout)

    def is_alive(self):
        return self._thread.is_alive()

    join_thread = join      # as _call_queue.join_thread()

    def close(self):
        pass

    def cancel_join_thread(self):
        pass


def _executor_exit(dispatcher):
    """Let pending work finish, as the stdlib's executor does, then stop the workers."""
    if dispatcher.broken is not None or dispatcher.state == _disp.TERMINATE:
        dispatcher.terminate()
        return
    dispatcher.close()
    dispatcher.join()


def _executor_finalize(dispatcher, holder):
    """The executor was collected, or the interpreter exits: shut down as the stdlib's does
    (wait for the work handed over)."""
    with dispatcher.xlock:
        manager = holder[0]
        if manager is None:
            holder[0] = False
    if manager:
        manager.wakeup()
        # at interpreter exit, wait (the manager thread is a daemon); when the executor is
        # collected, the manager shuts down by itself, as the stdlib's
        if util.is_exiting() and threading.current_thread() is not manager._thread:
            manager.join()
    else:
        _executor_exit(dispatcher)


class _PendingItem:
    __slots__ = ("future",)

    def __init__(self, future):
        self.future = future


class ProcessPoolExecutor(Executor):
    """concurrent.futures.ProcessPoolExecutor on fastmp's C dispatcher.

    Beyond the stdlib: max_memory_per_child=N (bytes): a worker whose resident memory is
    above N after a task leaves and is replaced, as after max_tasks_per_child tasks (and, as
    with that one, the default context is then spawn, and fork is refused)."""

    def __init__(self, max_workers=None, mp_context=None, initializer=None, initargs=(),
                 *, max_tasks_per_child=None, max_memory_per_child=None, task_timeout=None):
        # beyond the stdlib: the limit per call, in seconds (None: no limit)
        self._task_timeout = _check_timeout(task_timeout)
        if max_workers is None:
            max_workers = os.cpu_count() or 1
        elif max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        max_memory_per_child = _disp.check_memory_limit(max_memory_per_child,
                                                        "max_memory_per_child")
        if mp_context is None:
            if max_tasks_per_child is not None or max_memory_per_child is not None:
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
        if (max_memory_per_child is not None
                and mp_context.get_start_method(allow_none=False) == "fork"):
            # as for max_tasks_per_child: a replacement would be forked from a thread
            raise ValueError("max_memory_per_child is incompatible with the 'fork' "
                             "multiprocessing start method; supply a different "
                             "mp_context.")
        self._max_workers = max_workers
        self._mp_context = mp_context
        self._initializer = initializer
        self._initargs = initargs
        self._max_tasks_per_child = max_tasks_per_child
        self._max_memory_per_child = max_memory_per_child
        self._safe_to_dynamically_spawn_children = (
            mp_context.get_start_method(allow_none=False) != "fork")
        self._cache = {}
        self._fn_cache = {}         # fn -> pickle of _Call(fn)
        self._raw_fn_cache = {}     # fn -> pickle of fn (map)
        # reentrant: a future's done-callbacks, run while it is held, may submit
        self._shutdown_lock = threading.RLock()
        self._shutdown_thread = False
        self._cancel_pending_futures = False
        self._dispatcher = _ExecutorDispatcher(
            mp_context, max_workers, initializer, initargs, max_tasks_per_child, self._cache,
            shutdown_lock=self._shutdown_lock, maxmem=max_memory_per_child)
        # [the _Manager once started; False once the executor is finalized]
        self._manager_holder = [None]
        self._finalizer = util.Finalize(self, _executor_finalize,
                                        args=(self._dispatcher, self._manager_holder),
                                        exitpriority=15)

    # ---- the stdlib's private attributes, with their meaning

    @property
    def _executor_manager_thread(self):
        return self._manager_holder[0] or None

    @property
    def _call_queue(self):
        return self._manager_holder[0] or None

    @property
    def _processes(self):
        """pid -> Process of the live workers (as the stdlib's attribute)."""
        return {p.pid: p for p in self._dispatcher.workers if p is not None}

    @property
    def _broken(self):
        return _BROKEN_POOL if self._dispatcher.broken is not None else False

    @property
    def _pending_work_items(self):
        """Futures not yet handed to the workers, by submission order (as the stdlib's
        dict of work items; each has .future)."""
        return {i: _PendingItem(e[0]) for i, e in enumerate(self._dispatcher.pending)}

    # ---- submitting

    def _check_submit(self):
        if self._dispatcher.broken is not None:
            raise BrokenProcessPool(_BROKEN_POOL)
        if self._shutdown_thread:
            raise RuntimeError('cannot schedule new futures after shutdown')
        if _cf_process._global_shutdown or self._manager_holder[0] is False:
            raise RuntimeError('cannot schedule new futures after interpreter shutdown')

    def _start(self, ntasks):
        """Workers for ntasks new tasks, and the manager at the first submit (xlock held)."""
        d = self._dispatcher
        if self._manager_holder[0] is None:
            try:
                if not self._safe_to_dynamically_spawn_children:
                    # fork: every worker before any thread of ours
                    for slot in range(d.processes):
                        if d.workers[slot] is None:
                            d.start_worker(slot)
                    d.idle = d.processes
                else:
                    d.adjust(ntasks)
                d.channel.start_collector(d.on_results, d.on_dead)
                self._manager_holder[0] = _Manager(d)
            except BaseException:
                d.terminate()
                raise
        elif self._safe_to_dynamically_spawn_children:
            d.adjust(ntasks)

    def _dump(self, fn, wrapper=_Call):
        """The pickle of wrapper(fn) (of fn, wrapper None); remembered for plain
        functions."""
        cache = self._fn_cache if wrapper is not None else self._raw_fn_cache
        return dump_cached(cache, fn, wrapper)

    def submit(self, fn, /, *args, **kwargs):
        """Run fn(*args, **kwargs) in a worker; return a Future."""
        with self._shutdown_lock:
            self._check_submit()
            d = self._dispatcher
            f = _ChannelFuture(d.channel)
            job = _FutureJob(d, [f], True)
            self._start(1)
            try:
                fdata = self._dump(fn)
            except Exception as exc:
                job._set(0, (False, exc))
                return f
            if kwargs:
                mode, items = _disp.APPLY_KW, [(args, kwargs)]
            else:
                mode, items = _disp.APPLY, [args]
            if self._task_timeout is not None:
                d.timed.add(job._job, _TimedJob(self._task_timeout, mode, fdata, items, fn,
                                                "submit"))
            d.enqueue(f, job, mode, fdata, items)
            return f
    submit.__doc__ = Executor.submit.__doc__

    def _submit_overridden(self):
        return (type(self).submit is not ProcessPoolExecutor.submit
                or "submit" in self.__dict__)

    def map(self, fn, *iterables, timeout=None, chunksize=1, buffersize=None):
        """Like map(fn, *iterables), the calls made in the workers, chunksize at a time;
        results in order, each waited for until `timeout` seconds after this call.

        buffersize (Python 3.14's, on every version): None reads the whole input at once;
        an int n >= 1 reads it lazily, keeping at most n chunks handed to the workers whose
        results the returned iterator has not yet yielded (n + 1 while it waits for one).
        The first n chunks are read and handed over here, one more at each chunk the
        iterator moves to; an exception raised by the input comes out of this call or of
        the iterator's next(), where the input was read.  Dropping the iterator reads no
        more input."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        _disp.check_buffersize(buffersize)
        if buffersize is not None:
            return self._map_buffered(fn, iterables, timeout, chunksize, buffersize)
        if self._submit_overridden():
            # through submit(), one call per chunk, as the stdlib's
            results = super().map(_cf_process.partial(_cf_process._process_chunk, fn),
                                  _chunks(zip(*iterables), chunksize), timeout=timeout)
            return _cf_process._chain_from_iterable_of_lists(results)
        end_time = None if timeout is None else timeout + time.monotonic()
        args = list(zip(*iterables))
        batch = None
        if self._task_timeout is not None:
            # the limit is per item: each item a task of its own, chunksize per record
            batch, chunksize = min(chunksize, _disp.BATCH_MAX), 1
        chunks = [tuple(args[i:i + chunksize]) for i in range(0, len(args), chunksize)]
        del args
        with self._shutdown_lock:
            self._check_submit()
            d = self._dispatcher
            futures = [_ChannelFuture(d.channel) for _ in chunks]
            job = _FutureJob(d, list(futures), False)
            if chunks:
                self._start(len(chunks))
                try:
                    fdata = self._dump(fn, None)
                except Exception as exc:
                    job._fail_held(0, len(chunks), exc)
                else:
                    for f in futures:
                        f._state = _RUNNING
                    if self._task_timeout is not None:
                        d.timed.add(job._job, _TimedJob(self._task_timeout, _disp.STARMAP,
                                                        fdata, chunks, fn, "map"))
                    d.submit(job, _disp.STARMAP, fdata, chunks, batch=batch)
        del chunks

        def result_iterator():
            try:
                futures.reverse()
                while futures:
                    f = futures.pop()
                    if end_time is None:
                        chunk = f.result()
                    else:
                        chunk = f.result(end_time - time.monotonic())
                    del f
                    # pop the results as they are yielded (no reference kept), at C speed
                    chunk.reverse()
                    chunk.insert(0, _END)
                    yield from iter(chunk.pop, _END)
            finally:
                for f in futures:
                    f.cancel()

        return result_iterator()

    def _map_buffered(self, fn, iterables, timeout, chunksize, buffersize):
        """map() with a buffersize: each chunk a job of its own, handed to the workers as
        the consumer goes (through submit() when it is overridden)."""
        if self._submit_overridden():
            call = _cf_process.partial(_cf_process._process_chunk, fn)

            def post(executor, chunk):
                return executor.submit(call, chunk)
        else:
            try:
                fdata = self._dump(fn, None)
            except Exception as exc:
                fdata, error = None, exc
            else:
                error = None

            def post(executor, chunk):
                return executor._post_chunk(fdata, error, chunk, fn)
        end_time = None if timeout is None else timeout + time.monotonic()
        chunks = _chunks(zip(*iterables), chunksize)
        futures = collections.deque(post(self, chunk)
                                    for chunk in itertools.islice(chunks, buffersize))
        return _buffered_results(weakref.ref(self), post, chunks, futures, end_time)

    def _post_chunk(self, fdata, error, chunk, fn=None):
        """One chunk of a map() handed to the workers as a job of its own (fdata: the
        function's pickle, or error: why it could not be pickled); its future."""
        with self._shutdown_lock:
            self._check_submit()
            d = self._dispatcher
            f = _ChannelFuture(d.channel)
            job = _FutureJob(d, [f], False)
            if error is not None:
                job._fail_held(0, 1, error)
                return f
            self._start(1)
            f._state = _RUNNING
            if self._task_timeout is not None:
                d.timed.add(job._job, _TimedJob(self._task_timeout, _disp.STARMAP, fdata,
                                                [chunk], fn, "map"))
            d.submit(job, _disp.STARMAP, fdata, [chunk])
        return f

    def shutdown(self, wait=True, *, cancel_futures=False):
        """Accept no more work; with cancel_futures, cancel the futures not yet handed to
        the workers; with wait, return once the workers have exited."""
        d = self._dispatcher
        with self._shutdown_lock:
            self._cancel_pending_futures = cancel_futures
            self._shutdown_thread = True
            d.drop_cancelled(cancel_all=cancel_futures)
            manager = self._manager_holder[0]
        if manager:
            manager.wakeup()
            if wait:
                manager.join()
        elif manager is None:
            # never used: nothing runs
            if wait:
                _executor_exit(d)
            else:
                d.terminate()
    shutdown.__doc__ = Executor.shutdown.__doc__

    def terminate_workers(self):
        """Stop every live worker at once with Process.terminate() (SIGTERM), after
        shutdown(wait=False, cancel_futures=True): the futures not yet handed over are
        cancelled, the calls running fail with BrokenProcessPool, and the executor takes no
        more work.  Python 3.14's method, on every version."""
        self._stop_workers("terminate")

    def kill_workers(self):
        """terminate_workers() with Process.kill() (SIGKILL): for workers that ignore
        SIGTERM.  Python 3.14's method, on every version."""
        self._stop_workers("kill")

    def _stop_workers(self, how):
        # the workers are taken before shutdown(), which forgets them as they exit
        workers = list(self._processes.values())
        self.shutdown(wait=False, cancel_futures=True)
        for p in workers:
            try:
                if p.exitcode is None:
                    getattr(p, how)()
            except (OSError, ValueError):
                pass        # exited meanwhile, or closed


def _buffered_results(executor_ref, post, chunks, futures, end_time):
    """The results of a map() with a buffersize, in order: before waiting for the oldest
    chunk's results, the next chunk of the input is read and posted (while the executor
    lives), so that the chunks handed over stay within the buffer.  The futures left when
    the iterator ends or is dropped are cancelled (those handed to the workers run)."""
    try:
        while futures:
            executor = executor_ref()
            if executor is not None:
                chunk = next(chunks, None)
                if chunk is not None:
                    futures.append(post(executor, chunk))
                del executor, chunk
            f = futures.popleft()
            try:
                if end_time is None:
                    results = f.result()
                else:
                    results = f.result(end_time - time.monotonic())
            finally:
                f.cancel()
                del f
            # pop the results as they are yielded (no reference kept)
            results.reverse()
            results.insert(0, _END)
            yield from iter(results.pop, _END)
    finally:
        for f in futures:
            f.cancel()


def _chunks(it, size):
    """Tuples of size items of it (the last one shorter)."""
    it = iter(it)
    while True:
        chunk = tuple(itertools.islice(it, size))
        if not chunk:
            return
        yield chunk


# beyond the stdlib: loky's reusable executor, on this module's executor (fastmp/reusable.py)
from .reusable import get_reusable_executor  # noqa: E402
