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
* lambdas and closures work when cloudpickle is installed (pickle is tried first).

ThreadPool stays the stdlib's: threads share the parent's memory, so a shared-memory channel
has nothing to offer them (it is made a subclass of this Pool, as the stdlib's is of its Pool).

Pool, ApplyResult, MapResult and the imap iterators pass isinstance checks against the stdlib's
classes (multiprocessing.pool.Pool, ...), which code outside fastmp makes; the stdlib's code
behind those classes does not run.
"""
import collections
import functools
import itertools
import os
import pickle
import signal
import sys
import threading
import time
import traceback
import types
import warnings
import multiprocessing.pool as _std
from multiprocessing import util
from multiprocessing.context import ProcessError, TimeoutError
from multiprocessing.pool import MaybeEncodingError, RemoteTraceback

from . import _core
from . import _lifecycle  # noqa: F401  (segment tracking, fork and exit hooks)
from ._stdlib import forward as _forward

__all__ = ['Pool', 'ThreadPool']

# Pool states, as the stdlib names them.
INIT = "INIT"
RUN = "RUN"
CLOSE = "CLOSE"
TERMINATE = "TERMINATE"

# The channel's task modes and worker-slot states (csrc/pool.c).
_APPLY, _APPLY_KW, _MAP, _STARMAP = 0, 1, 2, 3
_SLOT_FREE, _SLOT_STARTING, _SLOT_IDLE, _SLOT_BUSY, _SLOT_INITFAIL, _SLOT_EXITED = range(6)
_TASK_RUN = 1       # adopt_held(): a record of tasks (2: an EXIT)

# Transport batching: tasks measured shorter than this are sent several per record.
_BATCH_TARGET_NS = 200_000
_BATCH_MAX = 64

_next_job = _core.pool_next_job     # job numbers start at 1: 0 is "initializer failed"


class WorkerLostError(ProcessError):
    """A pool worker process died while it held this task (beyond the stdlib, which hangs)."""


class InitializerError(ProcessError):
    """The pool's initializer raised in a worker: the pool cannot run tasks any more."""


# --------------------------------------------------------------------------- pickling

def _cloudpickle():
    try:
        import cloudpickle
    except ImportError:
        return None
    return cloudpickle


def _fallback_dumps(obj, exc):
    """What pickle.dumps could not do: multiprocessing's reducers, then cloudpickle (lambdas,
    closures, functions defined interactively); else the original error."""
    from multiprocessing.reduction import ForkingPickler
    try:
        return bytes(ForkingPickler.dumps(obj, pickle.HIGHEST_PROTOCOL))
    except Exception:
        pass
    cp = _cloudpickle()
    if cp is not None:
        try:
            return cp.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            pass
    raise exc


def _dump_function(func):
    try:
        return pickle.dumps(func, pickle.HIGHEST_PROTOCOL), True
    except Exception as exc:
        return _fallback_dumps(func, exc), False


def _rebuild_exc(exc, tb_text):
    exc.__cause__ = RemoteTraceback(tb_text)
    return exc


class _WithTraceback:
    """Pickles as the exception itself, whose __cause__ then carries the worker's traceback
    as text (what the stdlib's ExceptionWithTraceback gives the caller)."""

    def __init__(self, exc):
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.exc = exc
        self.tb_text = '\n"""\n' + text + '"""'

    def __reduce__(self):
        return _rebuild_exc, (self.exc, self.tb_text)


def _encode_failure(kind, exc, value):
    """Called by the C worker loop: pickle a failed call (kind 0: it raised exc) or a result
    that could not be pickled (kind 1: pickling value raised exc)."""
    err = MaybeEncodingError(exc, value) if kind == 1 else _WithTraceback(exc)
    try:
        return pickle.dumps(err, pickle.HIGHEST_PROTOCOL)
    except Exception as e:
        return pickle.dumps(MaybeEncodingError(e, exc), pickle.HIGHEST_PROTOCOL)


# --------------------------------------------------------------------------- the worker

def _worker_bootstrap(name, slot, initializer, initargs, maxtasks):
    """The target of every pool worker process."""
    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException as exc:
            _core.PoolChannel.worker_init_failed(name, slot, _encode_failure(0, exc, None))
            sys.exit(1)
    _core.PoolChannel.worker_main(name, slot, maxtasks, _encode_failure)


# --------------------------------------------------------------------------- results

def _channel_of(pool):
    d = getattr(pool, "_dispatcher", None)
    return d.channel if d is not None else None


def _wait_on_channel(channel, done, timeout):
    """Wait until done() or the timeout, collecting results in this thread when no other
    thread does (see PoolChannel.wait).  Returns False if the channel cannot be waited on
    any more (the pool is ending): the caller waits its own way then."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not done():
        if deadline is None:
            remaining = None
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
        if channel.wait(remaining) is None:
            return False
    return True


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


class _ItemwiseRuns:
    """_set_run() for results that take their tasks' outcomes one _set() at a time."""
    __slots__ = ()

    def _set_run(self, first, pairs):
        for k, pair in enumerate(pairs):
            self._set(first + k, pair)


class MapResult(_ItemwiseRuns, ApplyResult, _std.MapResult):
    """The result of map_async()/starmap_async(): the list of every result."""

    _bar = None     # a progress bar (beyond the stdlib: progress=True)

    def __init__(self, pool, chunksize, length, callback, error_callback):
        _CApplyResult.__init__(self, pool, callback, error_callback)
        self._success = True
        self._value = [None] * length
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
        bar = self._bar
        if bar is not None:
            bar.update(len(result) if success else 0)
            if self._number_left == 0:
                bar.close()
        if success and self._success:
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
_READ_AHEAD_GROUP = 256     # items read from the input per step of the feeder


def _check_buffersize(buffersize):
    if buffersize is None:
        return
    if not isinstance(buffersize, int):
        raise TypeError(f"buffersize must be an integer or None, not "
                        f"{type(buffersize).__name__}")
    if buffersize < 1:
        raise ValueError(f"buffersize must be None or >= 1, not {buffersize!r}")


class _ReadAhead:
    """The bound on a lazy feed (see _Dispatcher.next_feed): the feeder posts a group of
    tasks only while _room() >= _refill, and sleeps on the dispatcher's condition otherwise,
    with _waiting set; the consumer, after taking a result, calls _credit() when _waiting
    is set.  A subclass says how many tasks were taken (_outstanding)."""

    def _init_read_ahead(self, dispatcher, limit):
        self._wake = dispatcher.lock_cond() if dispatcher is not None else None
        self._limit = limit         # tasks posted and not yet taken, at most
        self._refill = max(1, min(limit // 2, _READ_AHEAD_GROUP))
        self._posted = 0            # tasks posted by the feeder
        self._waiting = False       # the feeder sleeps until the consumer makes room
        self._cancelled = False     # the consumer is gone: the feeder drops the input

    def _outstanding(self):
        raise NotImplementedError

    def _room(self):
        return self._limit - self._outstanding()

    def _credit(self):
        """Consumer, after taking a result while the feeder waits: wake it once there is
        room for a group (not for every result)."""
        cond = self._wake
        with cond:
            if self._waiting and (self._room() >= self._refill or self._cancelled):
                self._waiting = False
                cond.notify_all()


class _IMapSink(_ReadAhead):
    """The pool's side of an imap iterator: what the pool's cache holds and the collector and
    feeder fill.  The user holds the IMapIterator, which this does not reference, so that
    dropping the iterator ends the job (IMapIterator.__del__ -> cancel)."""

    def __init__(self, pool, limit):
        self._pool = pool
        self._cond = threading.Condition(threading.Lock())
        self._job = _next_job()
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
            if not _wait_on_channel(ch, self._has_news, timeout):
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

class _Feed:
    """Tasks of one call that did not fit in the task ring at once (or come from a lazy
    iterable): the feeder thread posts them, waiting for room with the GIL released."""
    __slots__ = ("result", "mode", "func", "items", "first", "lazy", "chunksize", "batch")

    def __init__(self, result, mode, func, items, first, lazy=False, chunksize=1, batch=1):
        self.result, self.mode, self.func, self.items = result, mode, func, items
        self.first, self.lazy, self.chunksize, self.batch = first, lazy, chunksize, batch


class _Dispatcher:
    """Everything the collector thread and the finalizer touch, kept apart from the Pool so
    that an abandoned Pool can be garbage-collected (and its finalizer terminate it)."""

    def __init__(self, ctx, processes, initializer, initargs, maxtasks, cache):
        self.ctx = ctx
        self.processes = processes
        self.initializer = initializer
        self.initargs = initargs
        self.maxtasks = maxtasks
        self.cache = cache
        self.state = RUN
        self.broken = None              # InitializerError once an initializer failed
        self.lock = threading.RLock()   # state changes, worker table, feeder
        self.workers = [None] * processes
        self.pool = []                  # live Process objects (Pool._pool)
        self.retiring = []              # workers out of their loop, not yet reaped
        self.feeds = collections.deque()
        self.feeder = None
        self.feeding = False
        self.unbounded = False          # join() lifts the imap read-ahead bound
        self.exits_sent = False
        self.finished = threading.Event()   # EXIT records posted (or terminated)
        self.func_cache = {}
        self.make_process = ctx.Process     # Pool.Process for Pools (see Pool.__init__)
        self.channel = _core.PoolChannel(processes, fallback_dumps=_fallback_dumps)
        self.name = self.channel.name
        # what PoolChannel.apply() and its C hand-over of apply_async() results use
        self.channel.cache = cache
        self.channel.func_cache = self.func_cache
        self.channel.dump_function = self.dump_function
        self.channel.submit = self.submit
        # a busy worker comes back for the next short task by itself, unless it may leave
        self.channel.lazy_wake = maxtasks is None

    # ---- workers

    def start_workers(self):
        for slot in range(self.processes):
            self.start_worker(slot)

    def start_worker(self, slot):
        ch = self.channel
        ch.set_slot(slot, 0, _SLOT_STARTING)
        p = self.make_process(target=_worker_bootstrap,
                              args=(self.name, slot, self.initializer, self.initargs,
                                    self.maxtasks))
        p.name = p.name.replace("Process", "PoolWorker")
        p.daemon = True
        p.start()
        ch.set_slot(slot, getattr(p, "pid", None) or 0, None)
        self.workers[slot] = p
        self.pool.append(p)

    def on_dead(self):
        """Collector thread, GIL held: some worker's process is gone, or some worker left
        its loop (after maxtasksperchild tasks, it says so on the result ring): replace it
        now, without waiting for its process to end (it is reaped later)."""
        with self.lock:
            if self.channel.closed:
                return
            if self.retiring:
                self.retiring = [p for p in self.retiring if p.is_alive()]
            for slot, p in enumerate(self.workers):
                if p is None:
                    continue
                pid, state, job, first, count, _ = self.channel.slot(slot)
                if state == _SLOT_FREE:
                    continue
                alive = p.is_alive()
                if alive:
                    if state != _SLOT_EXITED:
                        continue
                    # out of its loop for good: the slot is ours again
                    self.retiring.append(p)
                else:
                    p.join()
                self.channel.set_slot(slot, 0, _SLOT_FREE)
                self.workers[slot] = None
                try:
                    self.pool.remove(p)
                except ValueError:
                    pass
                if state != _SLOT_BUSY and not alive and p.pid:
                    # it may have died between taking a task record and saying so in its
                    # slot: the record is still in the ring, in its name
                    held = self.channel.adopt_held(p.pid)
                    if held is not None:
                        kind, job, first, count = held
                        state = _SLOT_BUSY if kind == _TASK_RUN else _SLOT_EXITED
                if state not in (_SLOT_EXITED, _SLOT_INITFAIL):
                    if not self.worker_lost(p, state, job, first, count):
                        continue
                if self.broken is None and state != _SLOT_INITFAIL and (
                        self.state == RUN or (self.state == CLOSE and self.cache)):
                    self.start_worker(slot)
            self.maybe_finish()

    def worker_lost(self, p, state, job, first, count):
        """A worker died on its own (not after an EXIT record or maxtasks): fail the tasks it
        held.  Returns whether to start a replacement."""
        if state == _SLOT_BUSY:
            result = self.cache.get(job)
            if result is not None:
                result._fail_held(first, count, WorkerLostError(
                    f"pool worker process {p.pid} {_how_it_ended(p.exitcode)} "
                    f"while running this task"))
        return True

    # ---- results

    def on_results(self, batch):
        """Collector (or a waiting thread), GIL held: a list of runs (job, first, pairs),
        pairs being the (ok, value) of tasks first, first+1, ... of that job (exact
        ApplyResults were completed in C before)."""
        cache = self.cache
        for job, first, pairs in batch:
            if job == 0:
                self.init_failed(first, pairs[0][1])
                continue
            result = cache.get(job)
            if result is not None:
                result._set_run(first, pairs)
        if self.state != RUN and not cache:
            self.maybe_finish()

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

    # ---- posting tasks

    def batch_size(self, ntasks):
        """Tasks per record: several only for short tasks (measured), so a slow task never
        waits behind another in the same record."""
        if self.maxtasks is not None:
            return 1
        task_ns = self.channel.task_ns
        if task_ns <= 0 or task_ns >= _BATCH_TARGET_NS // 2:
            return 1
        per_worker = max(1, ntasks // (2 * self.processes))
        return max(1, min(_BATCH_MAX, _BATCH_TARGET_NS // task_ns, per_worker))

    def submit(self, result, mode, func, items, first=0, chunksize=1):
        """Post items as tasks first, first+1, ... of result's job: at once what fits, the
        rest through the feeder thread."""
        if self.broken is not None:
            _fail_everything(result, self.broken)
            return
        if not self.feeds and not self.feeding:
            batch = self.batch_size(len(items))
            while first < len(items):
                done, error = self.channel.put(result._job, mode, first, func,
                                               items[first:] if first else items,
                                               batch, False)
                first += done
                if error is None:
                    break
                result._set(first, (False, error))
                first += 1
            if first >= len(items):
                return
        self.feed(_Feed(result, mode, func, items, first))

    def feed(self, f):
        with self.lock:
            self.feeds.append(f)
            self.feeding = True
            if self.feeder is None:
                self.feeder = threading.Thread(target=self.feeder_main, daemon=True,
                                               name="fastmp-pool-feeder")
                self.feeder.start()
            self.lock_cond().notify()

    def lock_cond(self):
        cond = getattr(self, "_cond", None)
        if cond is None:
            cond = self._cond = threading.Condition(self.lock)
        return cond

    def feeder_main(self):
        """The feeder thread: posts the tasks of the feeds in turn.  A list feed is posted to
        its end; an imap feed a group at a time, while its iterator has room (see
        _IMapSink): one whose consumer has not made room waits aside, so that the feeds
        behind it still run (zip(pool.imap(...), pool.imap(...)) does not deadlock)."""
        cond = self.lock_cond()
        while True:
            with self.lock:
                while True:
                    if self.state == TERMINATE or self.exits_sent:
                        # terminated, or closed with every task posted: nothing more to do
                        self.feeding = False
                        self.feeder = None
                        return
                    f = self.next_feed()
                    if f is not None:
                        break
                    if not self.feeds:
                        self.feeding = False
                        self.maybe_finish()
                        if self.exits_sent:
                            continue
                    cond.wait()
            try:
                if f.lazy:
                    if not self.feed_lazy(f):
                        with self.lock:
                            self.feeds.appendleft(f)
                        continue
                else:
                    self.feed_list(f)
            except Exception:
                if self.state == TERMINATE or self.channel.closed:
                    return
                raise
            f.items = None      # the input goes now (an imap's generator is closed)

    def next_feed(self):
        """Lock held: take the first feed that can make progress, or None; every imap feed
        left waiting for room is marked so (its consumer wakes this thread)."""
        parked = []
        chosen = None
        for f in self.feeds:
            sink = f.result
            if (not f.lazy or self.unbounded or sink._cancelled or self.broken is not None
                    or sink._room() >= sink._refill):
                chosen = f
                break
            parked.append(sink)
        for sink in parked:
            # set before the next look at its room (the consumer reads it after a take)
            sink._waiting = True
        if chosen is None:
            # a result taken between the room check above and the flag: look again
            for f in self.feeds:
                if f.lazy and f.result._room() >= f.result._refill:
                    chosen = f
                    break
        if chosen is not None:
            self.feeds.remove(chosen)
            if chosen.lazy:
                chosen.result._waiting = False
        return chosen

    def unbound(self):
        """join() was called: the imap feeds read the rest of their input, as the stdlib
        does (join waits for every task, consumed or not)."""
        with self.lock:
            self.unbounded = True
            self.lock_cond().notify_all()

    def feed_list(self, f):
        items, first = f.items, f.first
        batch = self.batch_size(len(items) - first)
        while first < len(items) and self.state != TERMINATE and self.broken is None:
            done, error = self.channel.put(f.result._job, f.mode, first, f.func,
                                           items[first:first + 1024], batch, True)
            first += done
            if error is not None:
                f.result._set(first, (False, error))
                self.channel.notify()
                first += 1

    def feed_lazy(self, f):
        """imap/imap_unordered over any iterable: one group of items read and posted, as
        many as the iterator has room for (at most _READ_AHEAD_GROUP).  Returns True once
        the feed is over (input exhausted or raised, iterator dropped, pool ending).  An
        exception from the input fails that index and ends the input, as in the stdlib."""
        sink, it, index, size = f.result, f.items, f.first, f.chunksize
        if self.state == TERMINATE or self.broken is not None or sink._cancelled:
            return True
        n = _READ_AHEAD_GROUP if self.unbounded else max(1, min(_READ_AHEAD_GROUP,
                                                                sink._room()))
        group = []
        try:
            for _ in range(n):
                if size == 1:
                    group.append((next(it),))
                else:
                    chunk = tuple(itertools.islice(it, size))
                    if not chunk:
                        raise StopIteration
                    group.append(chunk)
        except StopIteration:
            self.post_group(f, index, group)
            sink._set_length(index + len(group))
            self.channel.notify()
            return True
        except Exception as exc:
            self.post_group(f, index, group)
            index += len(group)
            sink._set(index, (False, exc))
            sink._set_length(index + 1)
            self.channel.notify()
            return True
        self.post_group(f, index, group)
        f.first = index + len(group)
        return False

    def post_group(self, f, index, group):
        if not group:
            return
        f.result._posted += len(group)
        # several tasks per record only for short tasks, as measured (batch_size)
        batch, f.batch = f.batch, self.batch_size(len(group) * 4)
        pos = 0
        while pos < len(group):
            done, error = self.channel.put(f.result._job, f.mode, index + pos, f.func,
                                           group[pos:], batch, True)
            pos += done
            if error is not None:
                f.result._set(index + pos, (False, error))
                self.channel.notify()
                pos += 1

    def dump_function(self, func):
        """The function's pickle; remembered for plain functions (pickled by reference, so
        the same object always gives the same bytes)."""
        cacheable = isinstance(func, (types.FunctionType, types.BuiltinFunctionType))
        if cacheable:
            try:
                return self.func_cache[func]
            except (KeyError, TypeError):
                pass
        data, by_pickle = _dump_function(func)
        if cacheable and by_pickle:
            if len(self.func_cache) > 256:
                self.func_cache.clear()
            self.func_cache[func] = data
        return data

    # ---- ending

    def maybe_finish(self):
        """After close(): once every job is done and every task posted, post one EXIT per
        worker (workers replaced after a crash meanwhile get theirs too)."""
        with self.lock:
            if self.state != CLOSE or self.exits_sent or self.channel.closed:
                return
            if self.cache and self.broken is None:
                return
            if self.feeds or self.feeding:
                return
            self.exits_sent = True
            self.channel.put_exit(self.processes)
            self.finished.set()

    def close(self):
        with self.lock:
            if self.state == RUN:
                self.state = CLOSE
        self.maybe_finish()

    def join(self):
        self.unbound()
        self.finished.wait()
        if not self.channel.in_collector():
            self.channel.stop_collector()
        for p in list(self.workers) + self.retiring:
            if p is not None:
                p.join()
        with self.lock:
            self.workers = [None] * self.processes
            self.retiring = []
            del self.pool[:]
            feeder = self.feeder
            self.stop_feeder()
        if feeder is not None and feeder is not threading.current_thread():
            feeder.join(5.0)    # it leaves at once: every task was posted
        self.close_channel()

    def close_channel(self):
        if not self.channel.closed:
            self.channel.close()        # unlinks the segment and tells the tracker

    def stop_feeder(self):
        if self.feeder is not None:
            self.lock_cond().notify_all()

    def terminate(self):
        with self.lock:
            if self.state == TERMINATE and self.channel.closed:
                return
            self.state = TERMINATE
            self.feeds.clear()
            self.stop_feeder()
            workers = [p for p in self.workers if p is not None] + self.retiring
            self.retiring = []
        for p in workers:
            if p.exitcode is None:
                try:
                    p.terminate()
                except OSError:
                    pass
        if not self.channel.in_collector():
            self.channel.stop_collector()
        for p in workers:
            try:
                p.join(2.0)
            except TypeError:   # a Process-like object without join(timeout)
                p.join()
            if p.exitcode is None and hasattr(p, "kill"):
                p.kill()
                p.join()
        with self.lock:
            self.workers = [None] * self.processes
            del self.pool[:]
        # Results left pending never complete now: drop what they hold of the pool, so the
        # pool -> cache -> result -> pool cycle goes (ApplyResult is not tracked by the GC).
        for result in list(self.cache.values()):
            if type(result) is _CApplyResult and not result.ready():
                result._pool = result._channel = None
        self.finished.set()
        if not self.channel.in_collector():
            self.close_channel()


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
    kept."""
    _wrap_exception = True

    @staticmethod
    def Process(ctx, *args, **kwds):
        return ctx.Process(*args, **kwds)

    def __init__(self, processes=None, initializer=None, initargs=(),
                 maxtasksperchild=None, context=None):
        self._state = INIT
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
        if initializer is not None and not callable(initializer):
            raise TypeError('initializer must be a callable')
        self._processes = processes
        self._initializer = initializer
        self._initargs = initargs
        self._maxtasksperchild = maxtasksperchild
        d = self._dispatcher = _Dispatcher(context, processes, initializer, initargs,
                                           maxtasksperchild, self._cache)
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

    def apply(self, func, args=(), kwds={}):
        """Call func(*args, **kwds) in a worker and return its result."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(self, func, args=(), kwds={}, callback=None, error_callback=None):
        """Call func(*args, **kwds) in a worker; return an AsyncResult."""
        if self._state != RUN:
            self._check_running()
        d = self._dispatcher
        if not d.feeds and not d.feeding and d.broken is None:
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
            mode, items = _APPLY_KW, [(args, kwds)]
        else:
            mode, items = _APPLY, [args if type(args) is tuple else tuple(args)]
        d.submit(result, mode, fdata, items)
        return result

    # ---- map

    def map(self, func, iterable, chunksize=None, *, progress=False):
        """Apply func to every item; return the list of results, in order.
        progress=True (beyond the stdlib) shows a tqdm progress bar."""
        return self._map_async(func, iterable, _MAP, chunksize, progress=progress).get()

    def starmap(self, func, iterable, chunksize=None, *, progress=False):
        """Like map(), but each item is unpacked into arguments: func(*item)."""
        return self._map_async(func, iterable, _STARMAP, chunksize, progress=progress).get()

    def map_async(self, func, iterable, chunksize=None, callback=None, error_callback=None,
                  *, progress=False):
        """map() returning a MapResult."""
        return self._map_async(func, iterable, _MAP, chunksize, callback, error_callback,
                               progress)

    def starmap_async(self, func, iterable, chunksize=None, callback=None,
                      error_callback=None, *, progress=False):
        """starmap() returning a MapResult."""
        return self._map_async(func, iterable, _STARMAP, chunksize, callback, error_callback,
                               progress)

    def _map_async(self, func, iterable, mode, chunksize=None, callback=None,
                   error_callback=None, progress=False):
        self._check_running()
        if not hasattr(iterable, '__len__'):
            iterable = list(iterable)
        if chunksize is None:
            chunksize, extra = divmod(len(iterable), self._processes * 4)
            if extra:
                chunksize += 1
        if len(iterable) == 0:
            chunksize = 0
        bar = _progress_bar(len(iterable), progress) if progress else None
        result = MapResult(self, chunksize, len(iterable), callback, error_callback)
        if chunksize == 0:
            if bar is not None:
                bar.close()
            return result
        result._bar = bar
        d = self._dispatcher
        try:
            fdata = d.dump_function(func)
        except Exception as exc:
            _fail_everything(result, exc)
            return result
        chunks = _chunks(iterable, chunksize)
        d.submit(result, mode, fdata, chunks, chunksize=chunksize)
        return result

    # ---- imap

    def imap(self, func, iterable, chunksize=1, *, progress=False, buffersize=None):
        """Like map(), lazily: an iterator over the results, in order.
        The input is read ahead by at most buffersize tasks (of chunksize items each) not
        yet taken from the iterator; the default is 128 per worker.
        progress=True (beyond the stdlib) shows a tqdm progress bar."""
        return self._with_bar(self._imap(IMapIterator, func, iterable, chunksize, buffersize),
                              iterable, progress)

    def imap_unordered(self, func, iterable, chunksize=1, *, progress=False,
                       buffersize=None):
        """Like imap(), but results come in the order they finish."""
        return self._with_bar(self._imap(IMapUnorderedIterator, func, iterable, chunksize,
                                         buffersize),
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

    def _imap(self, cls, func, iterable, chunksize, buffersize=None):
        self._check_running()
        if chunksize < 1:
            raise ValueError("Chunksize must be 1+, not {0!r}".format(chunksize))
        _check_buffersize(buffersize)
        d = self._dispatcher
        result = cls(self, buffersize)
        sink = result._sink
        # one item per task: an apply of f(x); larger chunks: a map over the chunk
        mode = _APPLY if chunksize == 1 else _MAP
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
            if items:
                d.submit(sink, mode, fdata, items, chunksize=chunksize)
        else:
            # read by the feeder thread, buffersize tasks ahead of the consumer
            d.feed(_Feed(sink, mode, fdata, iter(iterable), 0, lazy=True,
                         chunksize=chunksize))
        return result if chunksize == 1 else _flatten(result)

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
