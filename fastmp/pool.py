"""Pool on fastmp's C dispatcher (``fastmp._core.PoolChannel``); ThreadPool is the stdlib's.

The stdlib's Pool runs three Python threads in the parent and sends every task, function
included, through a pipe under a lock.  Here tasks and results travel through two rings in one
shared segment; each worker runs a loop in C (take a batch, unpickle, call, pickle, post); the
function is pickled once per call of map/imap/starmap (and once per function for apply), and a
worker unpickles it once per job; the parent collects results in a C thread that holds the GIL
only to hand them over.  The API and semantics are the stdlib's, with these differences:

* a worker that dies (killed, ``os._exit``, segfault) fails the tasks it held with
  :class:`WorkerLostError`, naming the exit code or signal, and is replaced (the stdlib hangs);
* a result that cannot be pickled in the worker fails its task with ``MaybeEncodingError`` as
  in the stdlib, and one that cannot be *unpickled* in the parent fails its task with the
  unpickling error (the stdlib's result thread dies and the pool hangs);
* an initializer that raises breaks the pool: pending and later tasks fail with
  :class:`InitializerError` (its ``__cause__`` is the worker's exception) instead of an endless
  restart of workers;
* lambdas and closures work when cloudpickle is installed (pickle is tried first);
* ``task_timeout=`` (beyond the stdlib; on the Pool as the default, on each call to override
  it): a task that runs longer fails with :class:`TaskTimeoutError` and its worker is killed
  and replaced (fastmp._timeouts says how).

ThreadPool stays the stdlib's: threads share the parent's memory, so a shared-memory channel
has nothing to offer them (it is made a subclass of this Pool, as the stdlib's is of its Pool).

Pool, ApplyResult, MapResult and the imap iterators pass isinstance checks against the stdlib's
classes (multiprocessing.pool.Pool, ...), which code outside fastmp makes; the stdlib's code
behind those classes does not run.
"""
import collections
import functools
import os
import pickle
import signal
import sys
import threading
import time
import warnings
import multiprocessing.pool as _std
from multiprocessing import util
from multiprocessing.context import ProcessError, TimeoutError
from multiprocessing.pool import (
    CLOSE, INIT, RUN, TERMINATE, ExceptionWithTraceback, MaybeEncodingError,
)

from . import _core
from . import _dispatcher as _disp
from . import _lifecycle  # noqa: F401  (segment tracking, fork and exit hooks)
from ._stdlib import forward as _forward
from ._timeouts import TaskTimeoutError  # noqa: F401  (public here)
from ._timeouts import TimedJob as _TimedJob, check_timeout as _check_timeout

__all__ = ['Pool', 'ThreadPool']


class WorkerLostError(ProcessError):
    """A pool worker process died while it held this task (beyond the stdlib, which hangs)."""


class InitializerError(ProcessError):
    """The pool's initializer raised in a worker: the pool cannot run tasks any more."""


# --------------------------------------------------------------------------- the worker

# A failed call goes to the parent as the stdlib's pool sends it: ExceptionWithTraceback
# pickles as the exception itself, with the worker's traceback as text in its __cause__.

def _encode_failure(kind, exc, value):
    """Called by the C worker loop: pickle a failed call (kind 0: it raised exc) or a result
    that could not be pickled (kind 1: pickling value raised exc)."""
    if kind == 1:
        err = MaybeEncodingError(exc, value)
    else:
        err = ExceptionWithTraceback(exc, exc.__traceback__)
    try:
        return pickle.dumps(err, pickle.HIGHEST_PROTOCOL)
    except Exception as e:
        return pickle.dumps(MaybeEncodingError(e, exc), pickle.HIGHEST_PROTOCOL)


def _worker_bootstrap(name, slot, initializer, initargs, maxtasks, max_memory=None):
    """The target of every pool worker process."""
    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException as exc:
            _core.PoolChannel.worker_init_failed(name, slot, _encode_failure(0, exc, None))
            sys.exit(1)
    _core.PoolChannel.worker_main(name, slot, maxtasks, _encode_failure, max_memory)


# --------------------------------------------------------------------------- results

def _channel_of(pool):
    d = getattr(pool, "_dispatcher", None)
    return d.channel if d is not None else None


def _report_callback_error(callback, exc):
    """A callback raised: report it through sys.unraisablehook (ApplyResult's C hand-over
    does the same) and carry on; the stdlib's result thread dies instead."""
    _core.pool_report_callback_error(callback, exc)


# The result of apply_async() is a C type (csrc/pool_result.c), so that the collector hands
# results over without running Python code: get(timeout), wait(timeout), ready(), successful(),
# as the stdlib's.  _CApplyResult is what the pool makes; ApplyResult, the name this module
# exports, is that type with the stdlib's ApplyResult as a second base: the C type's __class__
# gives it, so that isinstance(r, multiprocessing.pool.ApplyResult) holds for a result (and
# for a MapResult, which subclasses it).  Its instances would carry a __dict__ and be tracked
# by the GC: the pool never makes them.
_CApplyResult = _core.ApplyResult


class ApplyResult(_CApplyResult, _std.ApplyResult):
    """The result of apply_async(): get(), wait(), ready(), successful() (the stdlib's API)."""


_CApplyResult._fm_public_class = ApplyResult
AsyncResult = ApplyResult


def _progress_bar(total, progress):
    """A tqdm progress bar for progress=True (or the arguments of tqdm, as a dict)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise ImportError("progress=... needs tqdm: pip install 'fastmp[progress]'") from None
    kwargs = dict(progress) if isinstance(progress, dict) else {}
    kwargs.setdefault("total", total)
    return tqdm(**kwargs)


class MapResult(_disp.ItemwiseRuns, ApplyResult, _std.MapResult):
    """The result of map_async()/starmap_async(): the list of every result."""

    _bar = None     # a progress bar (beyond the stdlib: progress=True)
    # The collector unpacks a chunk's packed numbers straight into _value (at the chunk's
    # place, while _success holds and _done says the chunk is not done) and hands over
    # their count, an int, instead of a list (csrc/pool_collect.c, place_target).
    _fm_place = True

    def __init__(self, pool, chunksize, length, callback, error_callback):
        _CApplyResult.__init__(self, pool, callback, error_callback)
        self._success = True
        # the list is made when the first chunk comes (see _set), not here: for a large map
        # that is time the workers would spend idle, their tasks not posted yet
        self._value = [] if chunksize <= 0 else None
        self._length = length
        self._chunksize = chunksize
        if chunksize <= 0:
            self._number_left = 0
            self._done = bytearray()
            self._finish()
        else:
            self._number_left = length // chunksize + bool(length % chunksize)
            self._done = bytearray(self._number_left)

    def _set(self, i, success_result):
        if self._done[i]:
            return
        self._done[i] = 1
        self._number_left -= 1
        success, result = success_result
        placed = success and result.__class__ is int    # already in _value (see _fm_place)
        bar = self._bar
        if bar is not None:
            bar.update((result if placed else len(result)) if success else 0)
            if self._number_left == 0:
                bar.close()
        if success and self._success and not placed:
            if self._value is None:
                self._value = [None] * self._length
            self._value[i * self._chunksize:(i + 1) * self._chunksize] = result
        elif not success and self._success:
            self._success = False       # the first failure is the one reported
            self._value = result
        if self._number_left == 0:
            cb = self._callback if self._success else self._error_callback
            if cb:
                try:
                    cb(self._value)
                except Exception as exc:
                    _report_callback_error(cb, exc)
            self._finish()

    def _fail_held(self, first, count, exc):
        for i in range(first, min(first + count, len(self._done))):
            self._set(i, (False, exc))


# Read-ahead of imap/imap_unordered: the tasks posted but not yet taken by the consumer (in
# flight, or done and waiting in the iterator) stay within buffersize tasks (each one chunk of
# chunksize items).  The default scales with the pool: enough for every worker to get records
# of several short tasks while the consumer drains the rest.
_READ_AHEAD_PER_WORKER = 128


class _IMapSink(_disp.ReadAhead):
    """The pool's side of an imap iterator: what the pool's cache holds and the collector and
    feeder fill.  The user holds the IMapIterator, which this does not reference, so that
    dropping the iterator ends the job (IMapIterator.__del__ -> cancel)."""

    def __init__(self, pool, limit):
        self._pool = pool
        self._cond = threading.Condition(threading.Lock())
        self._job = _disp.next_job()
        self._cache = pool._cache
        self._items = collections.deque()
        self._index = 0             # results moved to _items so far (in order, for imap)
        self._length = None
        self._unsorted = {}
        self._channel = _channel_of(pool)
        self._init_read_ahead(getattr(pool, "_dispatcher", None), limit)
        self._cache[self._job] = self

    def _outstanding(self):
        # posted, minus taken (taken = moved to _items minus still in _items)
        return self._posted - self._index + len(self._items)

    def _cancel(self):
        """The iterator was dropped before its end: read no more input, forget the job
        (results of tasks already posted are dropped when they come)."""
        with self._cond:
            if self._index == self._length:
                return
            self._cancelled = True
            self._cache.pop(self._job, None)
            self._pool = None
        if self._wake is not None:
            with self._wake:
                self._waiting = False
                self._wake.notify_all()

    def _has_news(self):
        return bool(self._items) or self._index == self._length

    def _next_slow(self, timeout):
        ch = self._channel
        if ch is not None and not self._items:
            t0 = time.monotonic()
            if not _disp.wait_on_channel(ch, self._has_news, timeout):
                self._channel = None
            if timeout is not None:
                timeout = max(0.0, timeout - (time.monotonic() - t0))
        with self._cond:
            if not self._items and self._index != self._length:
                self._cond.wait(timeout)
            try:
                item = self._items.popleft()
            except IndexError:
                if self._index == self._length:
                    self._pool = None
                    raise StopIteration from None
                raise TimeoutError from None
        if self._waiting:
            self._credit()
        success, value = item
        if success:
            return value
        try:
            raise value
        finally:
            del value, item     # no cycle exception -> traceback -> this frame -> exception

    def _is_done(self, i):
        return i < self._index or i in self._unsorted

    def _set(self, i, obj):
        self._set_run(i, [obj])

    def _set_run(self, first, pairs):
        """Tasks first, first+1, ... are done: pairs holds their (success, value).  Runs
        that arrive early wait in _unsorted, keyed by their first index; a run seen before
        (a task failed for a lost worker, then its result after all) is dropped."""
        with self._cond:
            if self._is_done(first):
                return
            if first != self._index:
                self._unsorted[first] = pairs
                return
            self._items.extend(pairs)
            self._index += len(pairs)
            unsorted = self._unsorted
            while self._index in unsorted:
                run = unsorted.pop(self._index)
                self._items.extend(run)
                self._index += len(run)
            self._cond.notify()
            if self._index == self._length:
                self._cache.pop(self._job, None)
                self._pool = None

    def _set_length(self, length):
        with self._cond:
            self._length = length
            if self._index == self._length:
                self._cond.notify()
                self._cache.pop(self._job, None)
                self._pool = None

    def _fail_held(self, first, count, exc):
        for i in range(first, first + count):
            self._set(i, (False, exc))


class _IMapUnorderedSink(_IMapSink):
    def __init__(self, pool, limit):
        _IMapSink.__init__(self, pool, limit)
        self._seen = set()

    def _is_done(self, i):
        return i in self._seen

    def _set_run(self, first, pairs):
        with self._cond:
            if first in self._seen:
                return
            self._seen.add(first)
            self._items.extend(pairs)
            self._index += len(pairs)
            self._cond.notify()
            if self._index == self._length:
                self._cache.pop(self._job, None)
                self._pool = None


class IMapIterator(_std.IMapIterator):
    """The iterator imap() returns: results in the order of the input.  (A subclass of the
    stdlib's for isinstance; none of its code runs.)  Dropping it before its end stops the
    job: no more of the input is read."""

    _sink_class = _IMapSink

    def __init__(self, pool, buffersize=None):
        if buffersize is None:
            buffersize = _READ_AHEAD_PER_WORKER * getattr(pool, "_processes", 1)
        sink = self._sink = self._sink_class(pool, buffersize)
        self._items = sink._items
        self._job = sink._job
        self._cond = sink._cond
        self._cache = sink._cache

    def __getattr__(self, name):
        # the stdlib's attributes that change (_index, _length, _pool, ...) live in the sink
        if name == "_sink":
            raise AttributeError(name)
        return getattr(self._sink, name)

    def __del__(self):
        sink = self.__dict__.get("_sink")
        if sink is not None:
            sink._cancel()

    def __iter__(self):
        return self

    def next(self, timeout=None):
        try:
            # deque.popleft is atomic: no lock needed while results are waiting
            success, value = self._items.popleft()
        except IndexError:
            return self._sink._next_slow(timeout)
        sink = self._sink
        if sink._waiting:
            sink._credit()
        if success:
            return value
        try:
            raise value
        finally:
            del value           # no cycle exception -> traceback -> this frame -> exception

    __next__ = next

    # what the pool calls (it holds the sink; these are for code that holds the iterator)
    def _set(self, i, obj):
        self._sink._set(i, obj)

    def _set_length(self, length):
        self._sink._set_length(length)


class IMapUnorderedIterator(IMapIterator, _std.IMapUnorderedIterator):
    """The iterator imap_unordered() returns: results as they come."""

    _sink_class = _IMapUnorderedSink


# --------------------------------------------------------------------------- the dispatcher

class _PoolDispatcher(_disp.Dispatcher):
    """The dispatcher of a Pool: a worker that dies fails the tasks it held and is replaced;
    an initializer that raises breaks the pool (every task fails with InitializerError)."""

    worker_label = "PoolWorker"
    worker_target = staticmethod(_worker_bootstrap)

    def worker_lost(self, p, state, job, first, count):
        if state == _disp.SLOT_BUSY:
            result = self.cache.get(job)
            if result is not None:
                result._fail_held(first, count, WorkerLostError(
                    f"pool worker process {p.pid} {_how_it_ended(p.exitcode)} "
                    f"while running this task"))
        return True

    def init_failed(self, slot, exc):
        with self.lock:
            if self.broken is None:
                p = self.workers[slot]
                pid = p.pid if p is not None else "?"
                err = InitializerError(
                    f"the pool's initializer raised {exc!r} in worker process {pid}; "
                    f"the pool cannot run tasks")
                err.__cause__ = exc
                self.broken = err
                self.feeds.clear()
            for result in list(self.cache.values()):
                _fail_everything(result, self.broken)
            self.maybe_finish()

    def fail_everything(self, result, exc):
        _fail_everything(result, exc)


def _how_it_ended(exitcode):
    if exitcode is None:
        return "ended"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"was killed by {name}"
    return f"exited with exit code {exitcode}"


def _dumped_for(d, func, result):
    """func's pickle for the tasks of result, or None when it does not pickle: then every task
    of result has failed with that error."""
    try:
        return d.dump_function(func)
    except Exception as exc:
        _fail_everything(result, exc)
        return None


def _fail_everything(result, exc):
    if isinstance(result, MapResult):
        result._fail_held(0, len(result._done), exc)
    elif isinstance(result, _IMapSink):
        with result._cond:
            n = result._length
            end = n if n is not None else result._index + 1
        result._fail_held(0, end, exc)      # indices already done are skipped
        if n is None:
            result._set_length(end)
    else:
        result._fail_held(0, 1, exc)


def _terminate_dispatcher(dispatcher):
    dispatcher.terminate()


# --------------------------------------------------------------------------- Pool

class _TaskQueueView:
    """Pool._taskqueue: the stdlib's holds the tasks its task thread has not yet passed to
    the workers; here, the tasks waiting for the feeder thread (the task ring is full or the
    input is a lazy iterable).  qsize() and empty() only: nothing is put through it."""
    __slots__ = ("_dispatcher",)

    def __init__(self, dispatcher):
        self._dispatcher = dispatcher

    def qsize(self):
        n = 0
        for f in list(self._dispatcher.feeds):
            n += len(f.items) - f.first if not f.lazy else 1
        return n

    def empty(self):
        return not self._dispatcher.feeds


class Pool(_std.Pool):
    """A pool of worker processes (the stdlib's API) on fastmp's C dispatcher.

    A subclass of multiprocessing.pool.Pool, so that code checking isinstance against the
    stdlib's class (dask's scheduler, for one) takes it for one; none of the stdlib's
    machinery (its __init__, threads and queues) runs: every method it has is overridden here,
    and the attributes code reads (_processes, _pool, _state, _cache, _ctx, _taskqueue) are
    kept.

    Beyond the stdlib: max_memory_per_child=N (bytes; billiard's and loky's memory limit): a
    worker whose resident memory is above N after a task (an apply call, a map chunk) leaves
    and is replaced, as after maxtasksperchild tasks."""
    _wrap_exception = True

    @staticmethod
    def Process(ctx, *args, **kwds):
        return ctx.Process(*args, **kwds)

    def __init__(self, processes=None, initializer=None, initargs=(),
                 maxtasksperchild=None, context=None, *,
                 max_memory_per_child=None, task_timeout=None):
        self._state = INIT
        # beyond the stdlib: the default limit per task, in seconds (None: no limit)
        self._task_timeout = _check_timeout(task_timeout)
        self._pool = []
        self._cache = {}
        if context is None:
            from .context import _default_context
            context = _default_context.get_context()
        self._ctx = context
        if processes is None:
            processes = os.cpu_count() or 1
        if processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if maxtasksperchild is not None:
            if not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0:
                raise ValueError("maxtasksperchild must be a positive int or None")
        max_memory_per_child = _disp.check_memory_limit(max_memory_per_child,
                                                        "max_memory_per_child")
        if initializer is not None and not callable(initializer):
            raise TypeError('initializer must be a callable')
        self._processes = processes
        self._initializer = initializer
        self._initargs = initargs
        self._maxtasksperchild = maxtasksperchild
        d = self._dispatcher = _PoolDispatcher(context, processes, initializer, initargs,
                                           maxtasksperchild, self._cache,
                                           maxmem=max_memory_per_child)
        # workers are made by Pool.Process, as in the stdlib (a subclass may override it);
        # bound to the class, not to self, so that the dispatcher does not keep self alive
        d.make_process = functools.partial(type(self).Process, context)
        self._pool = d.pool
        self._taskqueue = _TaskQueueView(d)
        try:
            d.start_workers()
            d.channel.start_collector(d.on_results, d.on_dead)
        except BaseException:
            d.terminate()
            raise
        self._state = RUN
        self._terminate = util.Finalize(self, _terminate_dispatcher, args=(d,),
                                        exitpriority=15)

    def __del__(self, _warn=warnings.warn, RUN=RUN):
        if self._state == RUN:
            _warn(f"unclosed running multiprocessing pool {self!r}", ResourceWarning,
                  source=self)

    def __repr__(self):
        cls = self.__class__
        return (f'<{cls.__module__}.{cls.__qualname__} state={self._state} '
                f'pool_size={len(self._pool)}>')

    def __reduce__(self):
        raise NotImplementedError(
            'pool objects cannot be passed between processes or pickled')

    def _repopulate_pool(self):
        """Replace the workers that have exited (the collector does it on its own: at once
        for a worker that leaves after maxtasksperchild tasks, within 50 ms for one that dies;
        this does it now)."""
        self._dispatcher.on_dead()

    def _check_running(self):
        if self._state != RUN:
            raise ValueError("Pool not running")

    # ---- apply

    def apply(self, func, args=(), kwds={}, *, task_timeout=None):
        """Call func(*args, **kwds) in a worker and return its result.
        task_timeout (beyond the stdlib): see apply_async()."""
        if task_timeout is None:
            return self.apply_async(func, args, kwds).get()
        return self.apply_async(func, args, kwds, task_timeout=task_timeout).get()

    def apply_async(self, func, args=(), kwds={}, callback=None, error_callback=None, *,
                    task_timeout=None):
        """Call func(*args, **kwds) in a worker; return an AsyncResult.
        task_timeout (beyond the stdlib): seconds the call may run once a worker starts it,
        else it fails with TaskTimeoutError and its worker is replaced; None: the pool's
        task_timeout (math.inf: no limit)."""
        if self._state != RUN:
            self._check_running()
        d = self._dispatcher
        if task_timeout is None:
            task_timeout = self._task_timeout
        else:
            task_timeout = _check_timeout(task_timeout)
        if not d.feeds and not d.feeding and d.broken is None and task_timeout is None:
            # the common case, in C: the result object, the function's pickle (cached), the
            # arguments' pickle, the task record (or d.submit when the ring is full)
            return d.channel.apply(self, func, args, kwds, callback, error_callback)
        result = _CApplyResult(self, callback, error_callback)
        try:
            fdata = d.dump_function(func)
        except Exception as exc:
            result._set(0, (False, exc))
            return result
        if kwds:
            mode, items = _disp.APPLY_KW, [(args, kwds)]
        else:
            mode, items = _disp.APPLY, [args if type(args) is tuple else tuple(args)]
        if task_timeout is not None:
            d.timed.add(result._job, _TimedJob(task_timeout, mode, fdata, items, func,
                                               "apply_async"))
        d.submit(result, mode, fdata, items)
        return result

    # ---- map

    def map(self, func, iterable, chunksize=None, *, progress=False, task_timeout=None):
        """Apply func to every item; return the list of results, in order.
        progress=True (beyond the stdlib) shows a tqdm progress bar.
        task_timeout (beyond the stdlib): seconds each item's call may run, else the map
        raises TaskTimeoutError (see apply_async())."""
        return self._map_async(func, iterable, _disp.MAP, chunksize, progress=progress,
                               task_timeout=task_timeout, call="map").get()

    def starmap(self, func, iterable, chunksize=None, *, progress=False, task_timeout=None):
        """Like map(), but each item is unpacked into arguments: func(*item)."""
        return self._map_async(func, iterable, _disp.STARMAP, chunksize,
                               progress=progress, task_timeout=task_timeout,
                               call="starmap").get()

    def map_async(self, func, iterable, chunksize=None, callback=None, error_callback=None,
                  *, progress=False, task_timeout=None):
        """map() returning a MapResult."""
        return self._map_async(func, iterable, _disp.MAP, chunksize, callback, error_callback,
                               progress, task_timeout, "map_async")

    def starmap_async(self, func, iterable, chunksize=None, callback=None,
                      error_callback=None, *, progress=False, task_timeout=None):
        """starmap() returning a MapResult."""
        return self._map_async(func, iterable, _disp.STARMAP, chunksize, callback,
                               error_callback, progress, task_timeout, "starmap_async")

    def _map_async(self, func, iterable, mode, chunksize=None, callback=None,
                   error_callback=None, progress=False, task_timeout=None, call="map"):
        self._check_running()
        task_timeout = self._call_timeout(task_timeout)
        if not hasattr(iterable, '__len__'):
            iterable = list(iterable)
        if chunksize is None:
            chunksize, extra = divmod(len(iterable), self._processes * 4)
            if extra:
                chunksize += 1
        if len(iterable) == 0:
            chunksize = 0
        bar = _progress_bar(len(iterable), progress) if progress else None
        if task_timeout is not None and chunksize:
            return self._map_timed(func, iterable, mode, chunksize, callback, error_callback,
                                   bar, task_timeout, call)
        result = MapResult(self, chunksize, len(iterable), callback, error_callback)
        if chunksize == 0:
            if bar is not None:
                bar.close()
            return result
        result._bar = bar
        d = self._dispatcher
        fdata = _dumped_for(d, func, result)
        if fdata is None:
            return result
        chunks = _chunks(iterable, chunksize)
        d.submit(result, mode, fdata, chunks, chunksize=chunksize)
        return result

    def _call_timeout(self, task_timeout):
        """A call's task_timeout= (None: the pool's), checked."""
        if task_timeout is None:
            return self._task_timeout
        return _check_timeout(task_timeout)

    def _map_timed(self, func, iterable, mode, chunksize, callback, error_callback, bar,
                   task_timeout, call):
        """map with a task timeout: the limit is per item, so each item is a task of its
        own (a chunk of one), chunksize of them per task record."""
        result = MapResult(self, 1, len(iterable), callback, error_callback)
        result._bar = bar
        d = self._dispatcher
        fdata = _dumped_for(d, func, result)
        if fdata is None:
            return result
        items = _chunks(iterable, 1)
        d.timed.add(result._job, _TimedJob(task_timeout, mode, fdata, items, func, call))
        d.submit(result, mode, fdata, items, batch=min(chunksize, _disp.BATCH_MAX))
        return result

    # ---- imap

    def imap(self, func, iterable, chunksize=1, *, progress=False, buffersize=None,
             task_timeout=None):
        """Like map(), lazily: an iterator over the results, in order.
        The input is read ahead by at most buffersize tasks (of chunksize items each) not
        yet taken from the iterator; the default is 128 per worker.
        progress=True (beyond the stdlib) shows a tqdm progress bar.
        task_timeout (beyond the stdlib): seconds each item's call may run; an item that
        runs longer comes out of the iterator as TaskTimeoutError (see apply_async())."""
        return self._with_bar(self._imap(IMapIterator, func, iterable, chunksize, buffersize,
                                         task_timeout, "imap"),
                              iterable, progress)

    def imap_unordered(self, func, iterable, chunksize=1, *, progress=False,
                       buffersize=None, task_timeout=None):
        """Like imap(), but results come in the order they finish."""
        return self._with_bar(self._imap(IMapUnorderedIterator, func, iterable, chunksize,
                                         buffersize, task_timeout, "imap_unordered"),
                              iterable, progress)

    @staticmethod
    def _with_bar(it, iterable, progress):
        if not progress:
            return it
        bar = _progress_bar(len(iterable) if hasattr(iterable, "__len__") else None, progress)

        def counted():
            try:
                for x in it:
                    bar.update(1)
                    yield x
            finally:
                bar.close()
        return counted()

    def _imap(self, cls, func, iterable, chunksize, buffersize=None, task_timeout=None,
              call="imap"):
        self._check_running()
        if chunksize < 1:
            raise ValueError("Chunksize must be 1+, not {0!r}".format(chunksize))
        _disp.check_buffersize(buffersize)
        task_timeout = self._call_timeout(task_timeout)
        if task_timeout is not None and chunksize > 1:
            # the limit is per item: each item a task (a chunk of one), chunksize of them
            # per record, and the read-ahead counted in items
            if buffersize is None:
                buffersize = _READ_AHEAD_PER_WORKER * getattr(self, "_processes", 1)
            return self._imap_timed(cls, func, iterable, chunksize, buffersize * chunksize,
                                    task_timeout, call)
        d = self._dispatcher
        result = cls(self, buffersize)
        sink = result._sink
        # one item per task: an apply of f(x); larger chunks: a map over the chunk
        mode = _disp.APPLY if chunksize == 1 else _disp.MAP
        try:
            fdata = d.dump_function(func)
        except Exception as exc:
            sink._set(0, (False, exc))
            sink._set_length(1)
            return result if chunksize == 1 else _flatten(result)
        if (isinstance(iterable, (list, tuple, range))
                and len(iterable) <= sink._limit * chunksize):
            # known length, within the read-ahead: post from here what fits at once
            if chunksize == 1:
                items = [(x,) for x in iterable]
            else:
                items = _chunks(iterable, chunksize)
            sink._set_length(len(items))
            if task_timeout is not None:
                d.timed.add(sink._job, _TimedJob(task_timeout, mode, fdata, items, func, call))
            if items:
                d.submit(sink, mode, fdata, items, chunksize=chunksize)
        else:
            if task_timeout is not None:
                d.timed.add(sink._job, _TimedJob(task_timeout, mode, fdata, {}, func, call))
            # read by the feeder thread, buffersize tasks ahead of the consumer
            d.feed(_disp.Feed(sink, mode, fdata, iter(iterable), 0, lazy=True,
                         chunksize=chunksize))
        return result if chunksize == 1 else _flatten(result)

    def _imap_timed(self, cls, func, iterable, chunksize, buffersize, task_timeout, call):
        """imap/imap_unordered with a task timeout and chunks: each item a task of its own
        (MAP over a chunk of one: its result is a list of one), in records of chunksize."""
        d = self._dispatcher
        result = cls(self, buffersize)
        sink = result._sink
        mode = _disp.MAP
        try:
            fdata = d.dump_function(func)
        except Exception as exc:
            sink._set(0, (False, exc))
            sink._set_length(1)
            return _flatten(result)
        batch = min(chunksize, _disp.BATCH_MAX)
        if (isinstance(iterable, (list, tuple, range))
                and len(iterable) <= sink._limit):
            items = _chunks(iterable, 1)
            sink._set_length(len(items))
            d.timed.add(sink._job, _TimedJob(task_timeout, mode, fdata, items, func, call))
            if items:
                d.submit(sink, mode, fdata, items, batch=batch)
        else:
            d.timed.add(sink._job, _TimedJob(task_timeout, mode, fdata, {}, func, call))
            d.feed(_disp.Feed(sink, mode, fdata, iter(iterable), 0, lazy=True, chunksize=1,
                              batch=batch))
        return _flatten(result)

    # ---- ending

    def close(self):
        """Accept no more tasks; workers leave once every task is done."""
        util.debug('closing pool')
        if self._state == RUN:
            self._state = CLOSE
            self._dispatcher.close()

    def terminate(self):
        """Stop the workers at once (pending results stay unset, as in the stdlib)."""
        util.debug('terminating pool')
        self._state = TERMINATE
        self._terminate()

    def join(self):
        """Wait for the workers to exit; close() or terminate() first."""
        util.debug('joining pool')
        if self._state == RUN:
            raise ValueError("Pool is still running")
        elif self._state not in (CLOSE, TERMINATE):
            raise ValueError("In unknown state")
        if self._state == CLOSE:
            self._dispatcher.join()
        else:
            self._dispatcher.terminate()

    def __enter__(self):
        self._check_running()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.terminate()


class ThreadPool(_std.ThreadPool, Pool):
    """The stdlib's ThreadPool, made a subclass of this module's Pool as the stdlib's is of
    its Pool (isinstance(ThreadPool(), fastmp.pool.Pool) holds).  Threads share the parent's
    memory, so a shared-memory channel has nothing to offer them: every method is the
    stdlib's (see below), none of fastmp's Pool runs."""


# The stdlib's methods over this module's Pool's, for ThreadPool (its MRO puts fastmp's Pool
# before the stdlib's): every name that fastmp's Pool defines and the stdlib's Pool has.
for _name, _value in vars(Pool).items():
    if _name in ("__module__", "__qualname__", "__doc__", "__dict__", "__weakref__") or (
            _name in vars(_std.ThreadPool)):
        continue
    for _klass in _std.Pool.__mro__:
        if _name in vars(_klass):
            setattr(ThreadPool, _name, vars(_klass)[_name])
            break
del _name, _value, _klass


def _chunks(seq, size):
    """seq cut into chunks of size items (the last may be shorter).  A range is cut into
    ranges: a chunk then pickles to a few bytes, and the worker makes its items."""
    if size == 1:
        return [(x,) for x in seq]
    if not isinstance(seq, (list, tuple, range)):
        seq = list(seq)
    return [seq[i:i + size] for i in range(0, len(seq), size)]


def _flatten(result):
    for chunk in result:
        yield from chunk


# The stdlib module's other public names (its helpers: worker, mapstar, ExceptionWithTraceback,
# ...), for code that reaches them through this module; the dispatcher does not use them.
__getattr__, __dir__ = _forward(globals(), _std)
