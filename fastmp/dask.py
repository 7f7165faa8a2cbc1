"""The Pool and ProcessPoolExecutor APIs on a Dask ``distributed`` cluster.

``from fastmp.dask import Pool`` in place of ``from fastmp import Pool`` moves a program's pool
from this machine's cores to a cluster; the rest of the program stays as it is::

    Pool(address="tcp://scheduler:8786")   # a running scheduler
    Pool(client=client)                    # the caller's distributed.Client
    Pool(4)                                # a LocalCluster on loopback that the pool owns

Needs ``pip install 'fastmp[dask]'`` (distributed and dask); ``import fastmp`` never imports
them.  Every worker of the cluster must be able to import fastmp.

What the pool does on a cluster:

* every task goes to Dask with ``pure=False`` (identical calls are not merged); a call of
  map/starmap/imap sends its function once, pickled with cloudpickle (lambdas, closures and
  functions of ``__main__`` work), and a function (or ``functools.partial``) that pickles to
  more than 64 KiB is scattered to the cluster once rather than sent with every task;
* items travel in chunks: ``chunksize`` is honoured; without it map/starmap cut the input
  as the stdlib does (4 chunks per worker thread), and imap/imap_unordered cut it into chunks
  of growing size whose run time is aimed at 50 ms, since Dask spends hundreds of
  microseconds on each task;
* imap/imap_unordered stream: at most ``buffersize`` chunks (default 4 per worker thread)
  are submitted and not yet taken by the consumer, so an endless iterator works; a future is
  released as soon as its result is fetched;
* the tasks of a map go to the scheduler in one message, and one thread per pool fetches
  results in batches (one gather for the tasks that finished meanwhile) and runs callbacks;
* an exception is re-raised in the caller with the worker's traceback as its ``__cause__``
  (``multiprocessing.pool.RemoteTraceback``), as fastmp's local Pool does;
* a worker that dies fails its tasks with :class:`fastmp.pool.WorkerLostError` once Dask's
  own retries are spent (``distributed.scheduler.allowed-failures``), never a hang;
* the initializer runs once in every worker process, also in workers that join later (a
  Dask worker plugin); one that raises where the pool starts raises
  :class:`fastmp.pool.InitializerError` from the constructor;
* ``maxtasksperchild`` has no equivalent on a cluster (Dask's workers are long-lived and
  shared): a value other than None raises ValueError.

Inside a Dask task, ``Pool()`` without ``client`` or ``address`` raises RuntimeError (a
cluster cannot be started from a worker); use ``with distributed.worker_client() as c:
Pool(client=c)``, which frees the task's thread while it waits.
"""
import concurrent.futures
import functools
import itertools
import os
import pickle
import queue
import threading
import time
import uuid
import weakref
import warnings
import multiprocessing.pool as _std
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import TimeoutError
from multiprocessing.pool import ExceptionWithTraceback, RemoteTraceback

try:
    import cloudpickle
    import distributed
    from distributed.diagnostics.plugin import WorkerPlugin
    from distributed.scheduler import KilledWorker
except ImportError as exc:   # pragma: no cover  (the extra is not installed)
    raise ImportError(
        f"fastmp.dask needs Dask's distributed scheduler: pip install 'fastmp[dask]' ({exc})"
    ) from exc

from ._dispatcher import ReadAhead as _ReadAhead, check_buffersize as _check_buffersize
from .pool import InitializerError, WorkerLostError, _chunks, _progress_bar, \
    _report_callback_error
from .pool import Pool as _LocalPool

__all__ = ['Pool', 'ProcessPoolExecutor', 'ApplyResult', 'AsyncResult', 'MapResult',
           'IMapIterator', 'IMapUnorderedIterator', 'WorkerLostError', 'InitializerError']

# Pool states, as the stdlib names them.
RUN = "RUN"
CLOSE = "CLOSE"
TERMINATE = "TERMINATE"

_APPLY, _MAP, _STARMAP = 0, 1, 2
_SCATTER_ABOVE = 64 * 1024          # a function pickled larger than this is scattered once
_BUFFER_PER_THREAD = 4              # imap's default buffersize, per worker thread
_IMAP_CHUNK_TARGET = 0.05           # imap's automatic chunks aim at this run time (s)
_IMAP_CHUNK_MAX = 4096


# --------------------------------------------------------------------------- the worker side

class _RemoteFailure(Exception):
    """What a task raises for the exception exc of a call: it unpickles in the caller as exc
    itself, with the worker's traceback as text in its __cause__ (fastmp.pool's convention)."""

    def __init__(self, exc):
        Exception.__init__(self, type(exc).__name__)
        self.carried = ExceptionWithTraceback(exc, exc.__traceback__)

    def __reduce__(self):
        return self.carried.__reduce__()


def _run(fdata, mode, payload):
    """A task on a worker: payload is the pickled call (mode _APPLY: (args, kwds)) or chunk
    of items (_MAP: items, _STARMAP: argument tuples); returns the result, or the list of
    results and the seconds the chunk took."""
    func = pickle.loads(fdata)
    data = pickle.loads(payload)
    try:
        if mode == _APPLY:
            args, kwds = data
            return func(*args, **kwds)
        t0 = time.perf_counter()
        if mode == _MAP:
            out = [func(x) for x in data]
        else:
            out = [func(*a) for a in data]
        return out, time.perf_counter() - t0
    except Exception as exc:
        failure = _RemoteFailure(exc)
    # Dask pickles a task's exception with its __cause__ (tblib), in place of __reduce__'s:
    # the cause is set here to what _rebuild_exc sets in the caller.
    raise failure from RemoteTraceback(failure.carried.tb)


class _Initializer(WorkerPlugin):
    """Runs the pool's initializer once in every worker, including workers that join later."""

    idempotent = False

    def __init__(self, name, initializer, initargs):
        self.name = name
        self.initializer = initializer
        self.initargs = tuple(initargs)

    def setup(self, worker):
        self.initializer(*self.initargs)


# --------------------------------------------------------------------------- the client side

def _dumps(obj):
    return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _key(func):
    """A unique task key that names the function, as Dask's own keys do (the dashboard shows
    it): pure=False alone would name every task "_run"."""
    name = getattr(func, "__name__", None) or type(func).__name__
    return f"{name}-{uuid.uuid4().hex}"


def _outcome(future):
    """(success, value) of a finished Dask future: a lost worker becomes WorkerLostError."""
    try:
        return True, future.result()
    except KilledWorker as exc:
        err = WorkerLostError(f"a Dask worker died while it ran this task, and Dask's retries "
                              f"are spent: {exc}")
        err.__cause__ = exc
        return False, err
    except BaseException as exc:
        return False, exc


class _Collector:
    """Fetches the results of finished futures in batches, in one thread per pool: one
    client.gather() for every future that finished while the last one ran (a result() per
    future would cost a round trip to a worker each), then each future's handler is called
    with (success, value), in this thread (the stdlib's result handler thread runs callbacks
    the same way)."""

    def __init__(self, client):
        self._client = client
        self._queue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread = None

    def watch(self, fut, handler):
        """Call handler(fut, (success, value)) once fut is done."""
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, daemon=True,
                                                    name="fastmp.dask results")
                    self._thread.start()
        fut.add_done_callback(functools.partial(self._finished, handler))

    def _finished(self, handler, fut):      # Dask's callback thread: hand over, at once
        self._queue.put((fut, handler))

    def stop(self):
        self._queue.put(None)

    def _run(self):
        q = self._queue
        while True:
            batch = [q.get()]
            while True:
                try:
                    batch.append(q.get_nowait())
                except queue.Empty:
                    break
            stop = None in batch
            batch = [item for item in batch if item is not None]
            finished = [item for item in batch if item[0].status == "finished"]
            values = None
            if len(finished) > 1:
                try:
                    values = self._client.gather([fut for fut, _ in finished])
                except BaseException:
                    values = None       # each on its own below
            if values is None:
                finished = []
            for (fut, handler), value in zip(finished, values or ()):
                self._call(handler, fut, (True, value))
            for fut, handler in batch:
                if values is None or fut.status != "finished":
                    self._call(handler, fut, _outcome(fut))
            # hold no future while waiting for the next batch (a held future stays on the
            # cluster)
            batch = finished = values = fut = handler = value = None
            if stop:
                return

    @staticmethod
    def _call(handler, fut, outcome):
        try:
            handler(fut, outcome)
        except Exception as exc:
            _report_callback_error(handler, exc)


def _in_dask_task():
    try:
        distributed.get_worker()
    except ValueError:
        return False
    return True


class _Cluster:
    """The client a pool or executor runs on, and what it owns: the client, and the
    LocalCluster it started (closed with the pool), or neither (client= given)."""

    def __init__(self, workers, initializer, initargs, address, client, what):
        if client is not None and address is not None:
            raise ValueError(f"{what}: give client= or address=, not both")
        if initializer is not None and not callable(initializer):
            raise TypeError('initializer must be a callable')
        self.cluster = None
        self.owns_client = client is None
        self.plugin = None
        if client is None:
            if address is None:
                if _in_dask_task():
                    raise RuntimeError(
                        f"{what}() without client= or address= inside a Dask task cannot start "
                        f"a cluster: use `with distributed.worker_client() as c: "
                        f"{what}(client=c)`")
                if workers is None:
                    workers = len(os.sched_getaffinity(0)) if hasattr(
                        os, "sched_getaffinity") else (os.cpu_count() or 1)
                self.cluster = distributed.LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True,
                    host="127.0.0.1", dashboard_address="127.0.0.1:0")
                address = self.cluster
            try:
                client = distributed.Client(address, set_as_default=False)
            except BaseException:
                self._close_cluster()
                raise
        self.client = client
        self.collector = _Collector(client)
        if initializer is not None:
            name = f"fastmp-initializer-{uuid.uuid4().hex}"
            plugin = _Initializer(name, initializer, initargs)
            self.plugin = name      # close() unregisters it, also after a failure
            try:
                if hasattr(client, "register_plugin"):
                    client.register_plugin(plugin, name=name)
                else:   # pragma: no cover  (older distributed)
                    client.register_worker_plugin(plugin, name=name)
            except BaseException as exc:
                self.close()
                raise InitializerError(f"the initializer raised in a Dask worker: "
                                       f"{exc!r}") from exc

    def threads(self):
        try:
            n = sum(self.client.nthreads().values())
        except Exception:
            n = 0
        return max(1, n)

    def _close_cluster(self):
        if self.cluster is not None:
            cluster, self.cluster = self.cluster, None
            cluster.close()

    def close(self):
        """Release what this pool made: its plugin on a caller's client, else its client and
        cluster."""
        if self.client is None:
            return
        client, self.client = self.client, None
        self.collector.stop()
        if self.owns_client:
            try:
                client.close()
            finally:
                self._close_cluster()
        elif self.plugin is not None:
            try:
                client.unregister_worker_plugin(self.plugin)
            except Exception:
                pass


class _Function:
    """A function as the tasks of one call take it: its cloudpickle, or for a large one a
    future of it, scattered to the cluster once (it then lives as long as this object)."""

    def __init__(self, client, func):
        self.func = func
        data = _dumps(func)
        if len(data) > _SCATTER_ABOVE:
            data = client.scatter(data, hash=False, broadcast=False)
        self.data = data


class ApplyResult(_std.ApplyResult):
    """The result of apply_async(): get(timeout), wait(timeout), ready(), successful(), as the
    stdlib's (a subclass of it).  A callback that raises is reported through
    sys.unraisablehook and the result is set all the same."""

    def _set(self, i, obj):
        self._success, self._value = obj
        callback = self._callback if self._success else self._error_callback
        if callback:
            try:
                callback(self._value)
            except Exception as exc:
                _report_callback_error(callback, exc)
        self._event.set()
        self._cache.pop(self._job, None)
        self._pool = None


AsyncResult = ApplyResult


class MapResult(ApplyResult, _std.MapResult):
    """The result of map_async()/starmap_async() (the stdlib's semantics: the first error is
    raised, once every chunk is done)."""

    _bar = None     # a progress bar (progress=True)

    def __init__(self, pool, chunksize, length, callback, error_callback):
        self._lock = threading.Lock()   # chunks may finish in several threads at once
        _std.MapResult.__init__(self, pool, chunksize, length, callback, error_callback)

    def _set(self, i, success_result):
        success, result = success_result
        with self._lock:
            self._number_left -= 1
            last = self._number_left == 0
            if success and self._success:
                self._value[i * self._chunksize:(i + 1) * self._chunksize] = result
            elif not success and self._success:
                self._success = False
                self._value = result
        bar = self._bar
        if bar is not None:
            bar.update(len(result) if success else 0)
            if last:
                bar.close()
        if last:
            ApplyResult._set(self, i, (self._success, self._value))


class _Stream(_ReadAhead):
    """The pool's side of an imap iterator: a feeder thread reads the input and submits
    chunks while fewer than buffersize are submitted and not yet taken; the pool's collector
    fetches each result (and the stream drops the chunk's future then), and the consumer
    takes them."""

    def __init__(self, pool, function, mode, iterable, chunksize, limit, ordered):
        self._cond = threading.Condition(threading.Lock())
        self._init_read_ahead(self, limit)
        self._pool = pool
        self._client = pool._cluster.client
        self._collector = pool._cluster.collector
        self._function = function
        self._mode = mode
        self._iterable = iterable
        self._chunksize = chunksize             # None: grows with measured run times
        self._ordered = ordered
        self._futures = {}                      # chunk index -> Dask future, until fetched
        self._done = {}                         # chunk index -> (success, list of values)
        self._order = []                        # chunk indexes as they finished (unordered)
        self._next = 0                          # the next chunk the consumer takes
        self._taken = 0
        self._length = None                     # chunks in all, once the input ended
        self._per_item = None                   # measured seconds per item
        self._job = next(_std.job_counter)
        pool._cache[self._job] = self
        self._feeder = threading.Thread(target=self._feed, daemon=True,
                                        name="fastmp.dask imap feeder")

    def lock_cond(self):        # _ReadAhead's hook: the condition the feeder sleeps on
        return self._cond

    def _outstanding(self):
        return self._posted - self._taken

    def _next_size(self):
        if self._chunksize is not None:
            return self._chunksize
        if self._per_item is None:
            return 1
        return max(1, min(_IMAP_CHUNK_MAX, int(_IMAP_CHUNK_TARGET / max(self._per_item, 1e-7))))

    def _feed(self):
        it = iter(self._iterable)
        index = 0
        try:
            while True:
                with self._cond:
                    while not self._cancelled and self._room() < self._refill:
                        self._waiting = True
                        self._cond.wait()
                    if self._cancelled:
                        return
                    room = self._room()
                for _ in range(room):
                    try:
                        chunk = list(itertools.islice(it, self._next_size()))
                    except Exception as exc:
                        self._finish(index, (False, exc))
                        return
                    if not chunk:
                        self._finish(index, None)
                        return
                    try:
                        fut = self._client.submit(_run, self._function.data, self._mode,
                                                  _dumps(chunk), pure=False,
                                                  key=_key(self._function.func))
                    except Exception as exc:
                        self._finish(index, (False, exc))
                        return
                    with self._cond:
                        if self._cancelled:
                            fut.cancel()
                            return
                        self._futures[index] = fut
                        self._posted += 1
                    self._collector.watch(fut, functools.partial(self._on_done, index))
                    del fut     # the stream's table holds it, until its result is fetched
                    index += 1
        finally:
            close = getattr(it, "close", None)
            if close is not None and self._cancelled:
                try:
                    close()
                except Exception:
                    pass

    def _finish(self, index, last):
        """The input ended after index chunks (and last, a failure of reading it, if any)."""
        with self._cond:
            if last is not None:
                self._done[index] = (last[0], [last[1]])
                self._order.append(index)
                self._posted += 1
                index += 1
            self._length = index
            self._cond.notify_all()
            self._check_end()

    def _on_done(self, index, fut, outcome):
        with self._cond:
            if self._futures.pop(index, None) is None:
                return          # cancelled
        success, value = outcome
        if success:
            value, seconds = value
            n = len(value)
            if n:
                per_item = seconds / n
                self._per_item = per_item if self._per_item is None else (
                    0.5 * self._per_item + 0.5 * per_item)
        else:
            value = [value]
        with self._cond:
            if self._cancelled:
                return
            self._done[index] = (success, value)
            self._order.append(index)
            self._cond.notify_all()

    def _check_end(self):
        if self._length is not None and self._next >= self._length:
            if self._pool is not None:
                self._pool._cache.pop(self._job, None)
                self._pool = None

    def take(self, timeout):
        """The next chunk's (success, values); StopIteration at the end."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._ordered:
                    key = self._next if self._next in self._done else None
                else:
                    key = self._order[0] if self._order else None
                if key is not None:
                    break
                if self._length is not None and self._next >= self._length:
                    raise StopIteration
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError
                self._cond.wait(remaining)
            if self._ordered:
                if self._order:
                    self._order.remove(key)
            else:
                self._order.pop(0)
            item = self._done.pop(key)
            self._next += 1
            self._taken += 1
            self._check_end()
        if self._waiting:
            self._credit()
        return item

    def start(self):
        self._feeder.start()

    def _quiet(self):
        """Nothing in flight, and the feeder is done or waits for the consumer (join())."""
        with self._cond:
            return self._cancelled or (not self._futures and (
                self._length is not None or self._waiting))

    def cancel(self):
        """The consumer is gone: read no more input, cancel the chunks still in flight."""
        with self._cond:
            if self._cancelled:
                return
            self._cancelled = True
            self._waiting = False
            futures = list(self._futures.values())
            self._futures.clear()
            self._done.clear()
            if self._pool is not None:
                self._pool._cache.pop(self._job, None)
                self._pool = None
            self._cond.notify_all()
        if futures:
            try:
                self._client.cancel(futures)
            except Exception:
                pass


class IMapIterator(_std.IMapIterator):
    """The iterator imap() returns: results in the order of the input; next(timeout) raises
    multiprocessing.TimeoutError.  (A subclass of the stdlib's for isinstance; none of its
    code runs.)  Dropping it before its end stops the feed and cancels what is in flight."""

    _ordered = True

    def __init__(self, stream):
        self._stream = stream
        self._values = []
        self._job = stream._job

    def __iter__(self):
        return self

    def next(self, timeout=None):
        while not self._values:
            success, values = self._stream.take(timeout)
            if not success:
                raise values[0]
            self._values = values
            self._values.reverse()
        return self._values.pop()

    __next__ = next

    def __del__(self):
        stream = self.__dict__.get("_stream")
        if stream is not None:
            stream.cancel()


class IMapUnorderedIterator(IMapIterator, _std.IMapUnorderedIterator):
    """The iterator imap_unordered() returns: results as they come."""

    _ordered = False


class Pool(_std.Pool):
    """The stdlib's Pool API on a Dask cluster (see the module's docstring).

    ``processes``: the workers of the LocalCluster the pool starts when neither ``client`` nor
    ``address`` is given (default: the usable CPUs); with a cluster given, it only sizes the
    default chunks (default: the cluster's worker threads when the pool starts)."""

    def __init__(self, processes=None, initializer=None, initargs=(),
                 maxtasksperchild=None, *, address=None, client=None):
        self._state = None
        self._cache = {}
        self._pool = []
        if processes is not None and processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if maxtasksperchild is not None:
            raise ValueError(
                "maxtasksperchild has no equivalent on a Dask cluster (its workers are "
                "long-lived and shared by every client): pass None, or restart workers "
                "with distributed.Client.restart_workers()")
        self._cluster = _Cluster(processes, initializer, initargs, address, client, "Pool")
        self._processes = processes if processes is not None else self._cluster.threads()
        self._initializer = initializer
        self._initargs = initargs
        self._maxtasksperchild = None
        self._lock = threading.Lock()
        self._futures = set()       # submitted by apply/map and not yet finished
        self._idle = threading.Condition(self._lock)
        self._state = RUN
        self._finalizer = weakref.finalize(self, _Cluster.close, self._cluster)

    @property
    def client(self):
        """The distributed.Client the pool submits to (None once the pool has ended)."""
        return self._cluster.client

    def __del__(self, _warn=warnings.warn):
        if getattr(self, "_state", None) == RUN:
            _warn(f"unclosed running multiprocessing pool {self!r}", ResourceWarning,
                  source=self)

    def __repr__(self):
        cls = self.__class__
        return (f'<{cls.__module__}.{cls.__qualname__} state={self._state} '
                f'pool_size={self._processes}>')

    def __reduce__(self):
        raise NotImplementedError(
            'pool objects cannot be passed between processes or pickled')

    def _check_running(self):
        if self._state != RUN:
            raise ValueError("Pool not running")

    def _repopulate_pool(self):
        pass    # Dask's nannies replace workers

    # ---- submitting

    def _submit(self, result, indexes, func, function_data, mode, payloads):
        """Submit one task per payload, in one message to the scheduler; result._set(i, ...)
        gets the outcome of indexes[i]'s (an ApplyResult: indexes is [None])."""
        n = len(payloads)
        futs = self._cluster.client.map(_run, [function_data] * n, [mode] * n, payloads,
                                        key=[_key(func) for _ in range(n)], pure=False)
        with self._lock:
            self._futures.update(futs)
        collector = self._cluster.collector
        for index, fut in zip(indexes, futs):
            collector.watch(fut, functools.partial(self._on_done, result, index))

    def _on_done(self, result, index, fut, outcome):
        try:
            if self._state == TERMINATE:
                return      # the stdlib leaves pending results unset on terminate()
            success, value = outcome
            if success and index is not None:
                value = value[0]
            result._set(index or 0, (success, value))
        finally:
            with self._lock:    # after the result is set: join() waits for this
                self._futures.discard(fut)
                if not self._futures:
                    self._idle.notify_all()

    # ---- apply

    def apply(self, func, args=(), kwds={}):
        """Call func(*args, **kwds) in a worker and return its result."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(self, func, args=(), kwds={}, callback=None, error_callback=None):
        """Call func(*args, **kwds) in a worker; return an AsyncResult."""
        self._check_running()
        result = ApplyResult(self, callback, error_callback)
        try:
            fdata = _dumps(func)
            payload = _dumps((tuple(args), dict(kwds)))
        except Exception as exc:
            result._set(0, (False, exc))
            return result
        self._submit(result, [None], func, fdata, _APPLY, [payload])
        return result

    # ---- map

    def map(self, func, iterable, chunksize=None, *, progress=False):
        """Apply func to every item; return the list of results, in order.
        progress=True (as fastmp.Pool's) shows a tqdm progress bar."""
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
        elif chunksize < 1:
            raise ValueError("Chunksize must be 1+, not {0!r}".format(chunksize))
        if len(iterable) == 0:
            chunksize = 0
        bar = _progress_bar(len(iterable), progress) if progress else None
        result = MapResult(self, chunksize, len(iterable), callback, error_callback)
        if chunksize == 0:
            if bar is not None:
                bar.close()
            return result
        result._bar = bar
        chunks = _chunks(iterable, chunksize)
        if chunksize == 1:
            chunks = [[x] for (x,) in chunks]
        try:
            function = _Function(self._cluster.client, func)
            payloads = [_dumps(c) for c in chunks]
        except Exception as exc:
            for i in range(len(chunks)):
                result._set(i, (False, exc))
            return result
        self._submit(result, range(len(payloads)), func, function.data, mode, payloads)
        return result

    # ---- imap

    def imap(self, func, iterable, chunksize=None, *, buffersize=None, progress=False):
        """Like map(), lazily: an iterator over the results, in order.  At most buffersize
        chunks (default: 4 per worker thread) are in flight or waiting to be taken.
        chunksize=None (the default here) grows chunks to about 50 ms of work each."""
        return _LocalPool._with_bar(
            self._imap(IMapIterator, func, iterable, chunksize, buffersize), iterable, progress)

    def imap_unordered(self, func, iterable, chunksize=None, *, buffersize=None,
                       progress=False):
        """Like imap(), but results come in the order they finish."""
        return _LocalPool._with_bar(
            self._imap(IMapUnorderedIterator, func, iterable, chunksize, buffersize),
            iterable, progress)

    def _imap(self, cls, func, iterable, chunksize, buffersize):
        self._check_running()
        if chunksize is not None and chunksize < 1:
            raise ValueError("Chunksize must be 1+, not {0!r}".format(chunksize))
        _check_buffersize(buffersize)
        if buffersize is None:
            buffersize = _BUFFER_PER_THREAD * self._processes
        try:
            function = _Function(self._cluster.client, func)
        except Exception as exc:    # raised by next(), as the stdlib's imap does
            stream = _Stream(self, None, _MAP, (), chunksize, buffersize, cls._ordered)
            stream._finish(0, (False, exc))
            return cls(stream)
        stream = _Stream(self, function, _MAP, iterable, chunksize, buffersize, cls._ordered)
        it = cls(stream)
        stream.start()
        return it

    # ---- ending

    def close(self):
        """Accept no more tasks; join() then waits for those submitted."""
        if self._state == RUN:
            self._state = CLOSE

    def terminate(self):
        """Cancel what is still running (its results stay unset, as in the stdlib) and release
        the cluster: a LocalCluster the pool started is shut down."""
        if self._state == TERMINATE:
            return
        self._state = TERMINATE
        for job in list(self._cache.values()):
            if isinstance(job, _Stream):
                job.cancel()
        with self._lock:
            futures = list(self._futures)
            self._futures.clear()
        client = self._cluster.client
        if futures and client is not None:
            try:
                client.cancel(futures)
            except Exception:
                pass
        self._finalizer()

    def join(self):
        """Wait for every task to end; close() or terminate() first.  Then release the
        cluster, as terminate() does."""
        if self._state == RUN:
            raise ValueError("Pool is still running")
        elif self._state not in (CLOSE, TERMINATE):
            raise ValueError("In unknown state")
        if self._state == CLOSE:
            while True:
                with self._lock:
                    if not self._futures and all(
                            s._quiet() for s in list(self._cache.values())
                            if isinstance(s, _Stream)):
                        break
                    self._idle.wait(0.05)
        self._finalizer()

    def __enter__(self):
        self._check_running()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.terminate()


# --------------------------------------------------------------------------- executor

class _Future(concurrent.futures.Future):
    """A concurrent.futures.Future whose cancel() also cancels its Dask task."""

    _task = None

    def cancel(self):
        if not concurrent.futures.Future.cancel(self):
            return False
        task, self._task = self._task, None
        if task is not None:
            try:
                task.cancel()
            except Exception:
                pass
        return True


class ProcessPoolExecutor(concurrent.futures.Executor):
    """concurrent.futures' ProcessPoolExecutor API on a Dask cluster: submit() returns
    concurrent.futures.Future objects (as_completed() and wait() work).  A future stays
    PENDING, and cancel() works, until its task ends on the cluster.  A call that raises
    fails its own future with the worker's traceback as __cause__; a worker that dies fails
    its tasks with fastmp.pool.WorkerLostError and the executor carries on (Dask replaces
    workers).  max_workers, address, client: as Pool's processes, address, client."""

    def __init__(self, max_workers=None, initializer=None, initargs=(), *, address=None,
                 client=None):
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        self._shutdown = True
        try:
            self._cluster = _Cluster(max_workers, initializer, initargs, address, client,
                                     "ProcessPoolExecutor")
        except InitializerError as exc:
            raise BrokenProcessPool(str(exc)) from exc.__cause__
        self._max_workers = max_workers if max_workers is not None else self._cluster.threads()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = set()
        self._shutdown = False
        self._finalizer = weakref.finalize(self, _Cluster.close, self._cluster)

    @property
    def client(self):
        """The distributed.Client the executor submits to (None after shutdown)."""
        return self._cluster.client

    def _start(self, func, fdata, mode, payloads, unpack):
        """One task per payload, in one message to the scheduler: their Futures."""
        n = len(payloads)
        futures = [_Future() for _ in range(n)]
        with self._lock:
            if self._shutdown:
                raise RuntimeError('cannot schedule new futures after shutdown')
            self._pending.update(futures)
        try:
            tasks = self._cluster.client.map(_run, [fdata] * n, [mode] * n, payloads,
                                             key=[_key(func) for _ in range(n)], pure=False)
        except BaseException:
            with self._lock:
                self._pending.difference_update(futures)
                if not self._pending:
                    self._idle.notify_all()
            raise
        collector = self._cluster.collector
        for future, task in zip(futures, tasks):
            future._task = task
            collector.watch(task, functools.partial(self._on_done, future, unpack))
        return futures

    def _on_done(self, future, unpack, task, outcome):
        future._task = None
        try:
            if future.cancelled():
                return
            success, value = outcome
            if future.set_running_or_notify_cancel():
                if success:
                    future.set_result(value[0] if unpack else value)
                else:
                    future.set_exception(value)
        finally:
            with self._lock:
                self._pending.discard(future)
                if not self._pending:
                    self._idle.notify_all()

    def submit(self, fn, /, *args, **kwargs):
        """Schedule fn(*args, **kwargs) on the cluster; return a concurrent.futures.Future."""
        if self._shutdown:
            raise RuntimeError('cannot schedule new futures after shutdown')
        return self._start(fn, _dumps(fn), _APPLY, [_dumps((args, kwargs))], False)[0]

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        """Like the builtin map(), fn running on the cluster: results in order, each waited
        for within timeout seconds from this call.  Items travel chunksize at a time."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        deadline = None if timeout is None else time.monotonic() + timeout
        function = _Function(self._cluster.client, fn)
        items = zip(*iterables)
        payloads = []
        while True:
            chunk = list(itertools.islice(items, chunksize))
            if not chunk:
                break
            payloads.append(_dumps(chunk))
        futures = self._start(fn, function.data, _STARMAP, payloads, True) if payloads else []

        def results():
            keep = function     # noqa: F841  (a scattered function lives until the end)
            try:
                futures.reverse()
                while futures:
                    f = futures.pop()
                    if deadline is None:
                        values = f.result()
                    else:
                        values = f.result(deadline - time.monotonic())
                    del f
                    yield from values
            finally:
                for f in futures:
                    f.cancel()
        return results()

    def shutdown(self, wait=True, *, cancel_futures=False):
        """No more submits; cancel_futures cancels the futures not yet done; wait waits for
        the others; then the cluster is released (a LocalCluster it started is shut down)."""
        with self._lock:
            self._shutdown = True
            pending = list(self._pending)
        if cancel_futures:
            for f in pending:
                f.cancel()
        if wait:
            with self._lock:
                while self._pending:
                    self._idle.wait(0.05)
            self._finalizer()
        else:
            threading.Thread(target=self._release_when_idle, daemon=True).start()

    def _release_when_idle(self):
        with self._lock:
            while self._pending:
                self._idle.wait(0.05)
        self._finalizer()

