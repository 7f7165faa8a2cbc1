"""The parent's side of the C task channel (``fastmp._core.PoolChannel``), shared by
fastmp.pool.Pool and fastmp.futures.ProcessPoolExecutor.

A Dispatcher owns the channel and the worker processes: it posts tasks (at once what fits in
the task ring, the rest through a feeder thread), hands the results the channel's collector
thread takes to the job they belong to (``cache[job]._set_run``), replaces workers that die
or leave, and ends the workers on close or terminate.  The pool and the executor subclass it
for what they do differently: the worker's entry point, what a lost worker or a failed
initializer means (a failed task and a broken pool; a broken executor).

A job is any object in the cache with ``_job``, ``_set(i, (ok, value))``,
``_set_run(first, pairs)`` and ``_fail_held(first, count, exc)``; a lazy feed's job is also a
ReadAhead, which bounds how far the feeder reads its input ahead of the consumer.
"""
import collections
import itertools
import operator
import threading
import time

from multiprocessing.pool import CLOSE, RUN, TERMINATE     # the pool's states

from . import _core
from . import _lifecycle  # noqa: F401  (segment tracking, fork and exit hooks)
from ._pickling import dump_cached, fallback_dumps
from ._timeouts import TimedJobs

__all__ = ()    # private to the package

# The channel's task modes, worker-slot states and record kinds (csrc/pool.h).
APPLY = _core.POOL_MODE_APPLY           # a task: f(*args)
APPLY_KW = _core.POOL_MODE_APPLY_KW     # a task: f(*args, **kwds)
MAP = _core.POOL_MODE_MAP               # a task: a chunk, f(x) for each
STARMAP = _core.POOL_MODE_STARMAP       # a task: a chunk, f(*x) for each
SLOT_FREE = _core.POOL_SLOT_FREE
SLOT_STARTING = _core.POOL_SLOT_STARTING
SLOT_BUSY = _core.POOL_SLOT_BUSY
SLOT_INITFAIL = _core.POOL_SLOT_INITFAIL
SLOT_EXITED = _core.POOL_SLOT_EXITED
TASK_RUN = _core.POOL_TASK_RUN          # adopt_held(): a record of tasks (else an EXIT)

# Transport batching: tasks measured shorter than this are sent several per record.
BATCH_TARGET_NS = 200_000
BATCH_MAX = 64

# Items a lazy feed reads from its input per step of the feeder.
READ_AHEAD_GROUP = 256

next_job = _core.pool_next_job      # job numbers start at 1: 0 is "initializer failed"


def wait_on_channel(channel, done, timeout):
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


class ItemwiseRuns:
    """_set_run() for results that take their tasks' outcomes one _set() at a time."""
    __slots__ = ()

    def _set_run(self, first, pairs):
        for k, pair in enumerate(pairs):
            self._set(first + k, pair)


def check_memory_limit(limit, name):
    """A memory limit in bytes (max_memory_per_child): None, or an int >= 1; TypeError and
    ValueError as the stdlib's checks of max_tasks_per_child."""
    if limit is None:
        return None
    try:
        if isinstance(limit, bool):
            raise TypeError
        limit = operator.index(limit)           # an int, a numpy integer, ...
    except TypeError:
        raise TypeError(f"{name} must be an integer (bytes) or None, "
                        f"not {type(limit).__name__}") from None
    if limit <= 0:
        raise ValueError(f"{name} must be a positive number of bytes or None, not {limit}")
    return int(limit)


def check_buffersize(buffersize):
    """buffersize= of Pool.imap and Executor.map: None, or an int >= 1; the exceptions and
    messages of Python 3.14's Executor.map."""
    if buffersize is not None and not isinstance(buffersize, int):
        raise TypeError("buffersize must be an integer or None")
    if buffersize is not None and buffersize < 1:
        raise ValueError("buffersize must be None or > 0")


class ReadAhead:
    """The bound on a lazy feed (see Dispatcher.next_feed): the feeder posts a group of
    tasks only while _room() >= _refill, and sleeps on the dispatcher's condition otherwise,
    with _waiting set; the consumer, after taking a result, calls _credit() when _waiting
    is set.  A subclass says how many tasks were taken (_outstanding)."""

    def _init_read_ahead(self, dispatcher, limit):
        self._wake = dispatcher.lock_cond() if dispatcher is not None else None
        self._limit = limit         # tasks posted and not yet taken, at most
        self._refill = max(1, min(limit // 2, READ_AHEAD_GROUP))
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


class Feed:
    """Tasks of one call that did not fit in the task ring at once (or come from a lazy
    iterable): the feeder thread posts them, waiting for room with the GIL released."""
    __slots__ = ("result", "mode", "func", "items", "first", "lazy", "chunksize", "batch")

    def __init__(self, result, mode, func, items, first, lazy=False, chunksize=1, batch=1):
        self.result, self.mode, self.func, self.items = result, mode, func, items
        self.first, self.lazy, self.chunksize, self.batch = first, lazy, chunksize, batch


def _start_method(ctx):
    try:
        return ctx.get_start_method()
    except Exception:
        return None


def preload_in_forkserver(module):
    """Have the forkserver import module when it starts (when it is not running yet), so that
    every process it forks finds the module loaded.  The workers' code lives in fastmp.pool
    or fastmp.futures, which a forkserver started from a __main__ that imports fastmp alone
    does not have: each worker would import it again, several ms, paid once per task with
    maxtasksperchild=1.  A forkserver already running is left alone."""
    from multiprocessing import forkserver
    server = getattr(forkserver, "_forkserver", None)
    preload = getattr(server, "_preload_modules", None)
    if preload is None or getattr(server, "_forkserver_alive_fd", 0) is not None:
        return
    if module not in preload and _forkserver_finds_this_fastmp():
        # a new list: the one the user gave set_forkserver_preload() stays as it was
        server._preload_modules = list(preload) + [module]


def _forkserver_finds_this_fastmp():
    """Whether the forkserver would import this very fastmp.  It runs ``python -c`` in the
    current directory, and its sys.path is its own (the stdlib does not give it ours): the
    current directory and PYTHONPATH come first.  A fastmp found there that is not this one
    (a source checkout next to an installed package, say) must not be preloaded: every process
    the forkserver forks would inherit it, in place of the one this process uses."""
    import importlib.machinery
    import os
    import sys
    here = os.path.dirname(os.path.abspath(__file__))
    path = [os.getcwd()] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    try:
        spec = importlib.machinery.PathFinder.find_spec("fastmp", path + sys.path[1:])
    except Exception:
        return False
    locations = getattr(spec, "submodule_search_locations", None) or ()
    return any(os.path.realpath(loc) == os.path.realpath(here) for loc in locations)


class Dispatcher:
    """Everything the collector thread and the finalizer touch, kept apart from the Pool (or
    executor) so that an abandoned one can be garbage-collected (and its finalizer terminate
    it).  A subclass gives worker_target and what a failure means: worker_lost, init_failed,
    fail_everything."""

    worker_target = None    # the function a worker process runs (name, slot, initializer,
    #                         initargs, maxtasks; max_memory= when a memory limit is set)
    worker_label = None     # what "Process" becomes in the workers' names, if anything

    def __init__(self, ctx, processes, initializer, initargs, maxtasks, cache, maxmem=None):
        self.ctx = ctx
        self.processes = processes
        self.initializer = initializer
        self.initargs = initargs
        self.maxtasks = maxtasks
        self.maxmem = maxmem            # bytes of resident memory a worker leaves above
        self.cache = cache
        self.state = RUN
        self.broken = None              # the exception of every task, once broken
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
        self.channel = _core.PoolChannel(processes, fallback_dumps=fallback_dumps)
        self.name = self.channel.name
        # what PoolChannel.apply() and its C hand-over of apply_async() results use
        self.channel.cache = cache
        self.channel.func_cache = self.func_cache
        self.channel.dump_function = self.dump_function
        self.channel.submit = self.submit
        # a busy worker comes back for the next short task by itself, unless it may leave
        self.channel.lazy_wake = maxtasks is None and maxmem is None
        # jobs with a task timeout (fastmp._timeouts), and their limits for the channel
        self.timed = TimedJobs(self.channel, cache)

    # ---- workers

    def start_workers(self):
        for slot in range(self.processes):
            self.start_worker(slot)

    def start_worker(self, slot):
        if _start_method(self.ctx) == "forkserver":
            preload_in_forkserver(type(self).__module__)
        ch = self.channel
        ch.set_slot(slot, 0, SLOT_STARTING)
        # kwargs= only with a limit: a Pool.Process override may take target and args only
        limits = self.worker_limits()
        p = self.make_process(target=type(self).worker_target,
                              args=(self.name, slot, self.initializer, self.initargs,
                                    self.maxtasks),
                              **({"kwargs": limits} if limits else {}))
        if self.worker_label is not None:
            p.name = p.name.replace("Process", self.worker_label)
        p.daemon = True
        p.start()
        ch.set_slot(slot, getattr(p, "pid", None) or 0, None)
        self.workers[slot] = p
        self.pool.append(p)

    def on_dead(self):
        """Collector thread, GIL held: some worker's process is gone, or some worker left
        its loop (after maxtasksperchild tasks, it says so on the result ring): replace it
        now, without waiting for its process to end (it is reaped later)."""
        timed_out = []      # workers killed for a task timeout: handled out of the lock
        with self.lock:
            if self.channel.closed:
                return
            if self.retiring:
                self.retiring = [p for p in self.retiring if p.is_alive()]
            for slot, p in enumerate(self.workers):
                if p is None:
                    continue
                pid, state, job, first, count, _ = self.channel.slot(slot)
                if state == SLOT_FREE:
                    continue
                alive = p.is_alive()
                if alive:
                    if state != SLOT_EXITED:
                        continue
                    # out of its loop for good: the slot is ours again
                    self.retiring.append(p)
                else:
                    p.join()
                running = self.channel.timed_out(slot)     # before the slot is freed
                self.channel.set_slot(slot, 0, SLOT_FREE)
                self.workers[slot] = None
                try:
                    self.pool.remove(p)
                except ValueError:
                    pass
                if state != SLOT_BUSY and not alive and p.pid:
                    # it may have died between taking a task record and saying so in its
                    # slot: the record is still in the ring, in its name
                    held = self.channel.adopt_held(p.pid)
                    if held is not None:
                        kind, job, first, count = held
                        state = SLOT_BUSY if kind == TASK_RUN else SLOT_EXITED
                if state not in (SLOT_EXITED, SLOT_INITFAIL):
                    if running is not None and state == SLOT_BUSY:
                        timed_out.append((p, job, first, count, running))
                    elif not self.worker_lost(p, state, job, first, count):
                        continue
                if self.broken is None and state != SLOT_INITFAIL and (
                        self.state == RUN or (self.state == CLOSE and self.cache)):
                    self.start_worker(slot)
            self.maybe_finish()
        for event in timed_out:
            self.task_timed_out(*event)

    def task_timed_out(self, p, job, first, count, running):
        """The collector killed worker p: task `running` of job ran past the job's time
        limit (its slot held tasks first..first+count-1).  That task fails with
        TaskTimeoutError; the ones after it were taken and never started: they are posted
        again; the ones before it posted their results.  (Not under self.lock: failing a
        task may run the executor's window, whose lock comes first.)"""
        result = self.cache.get(job)
        timed = self.timed.get(job)
        if result is None or timed is None:
            return
        # read from shared memory: a record holds at most BATCH_MAX tasks
        end = min(first + count, running + 1 + BATCH_MAX) if running >= first else running + 1
        if running + 1 < end:
            run = timed.pending(running + 1, end)
            if run is not None:
                self.submit(result, timed.mode, timed.fdata, run, first=running + 1)
            else:
                result._fail_held(running + 1, end - running - 1, timed.error(running, p.pid))
        result._fail_held(running, 1, timed.error(running, p.pid))
        self.maybe_finish()

    def worker_limits(self):
        """Keyword arguments of worker_target beyond the stdlib's: the memory limit."""
        return {} if self.maxmem is None else {"max_memory": self.maxmem}

    def worker_lost(self, p, state, job, first, count):
        """A worker died on its own (not after an EXIT record or maxtasks); state is its
        slot's, and if SLOT_BUSY it held tasks first..first+count-1 of job.  Returns whether
        to start a replacement."""
        raise NotImplementedError

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
        """The initializer raised exc in the worker of slot."""
        raise NotImplementedError

    def fail_everything(self, result, exc):
        """Fail every task of result's job not yet done with exc (the dispatcher is
        broken)."""
        raise NotImplementedError

    # ---- posting tasks

    def batch_size(self, ntasks):
        """Tasks per record: several only for short tasks (measured), so a slow task never
        waits behind another in the same record; one when a worker may leave after a task
        (maxtasks, or the memory limit, checked after each record)."""
        if self.maxtasks is not None or self.maxmem is not None:
            return 1
        task_ns = self.channel.task_ns
        if task_ns <= 0 or task_ns >= BATCH_TARGET_NS // 2:
            return 1
        per_worker = max(1, ntasks // (2 * self.processes))
        return max(1, min(BATCH_MAX, BATCH_TARGET_NS // task_ns, per_worker))

    def submit(self, result, mode, func, items, first=0, chunksize=1, batch=None):
        """Post items as tasks first, first+1, ... of result's job: at once what fits, the
        rest through the feeder thread; batch: tasks per record (None: batch_size's)."""
        if self.broken is not None:
            self.fail_everything(result, self.broken)
            return
        if not self.feeds and not self.feeding:
            if batch is None:
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
        self.feed(Feed(result, mode, func, items, first))

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
        ReadAhead): one whose consumer has not made room waits aside, so that the feeds
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
        many as the iterator has room for (at most READ_AHEAD_GROUP).  Returns True once
        the feed is over (input exhausted or raised, iterator dropped, pool ending).  An
        exception from the input fails that index and ends the input, as in the stdlib."""
        sink, it, index, size = f.result, f.items, f.first, f.chunksize
        if self.state == TERMINATE or self.broken is not None or sink._cancelled:
            return True
        n = READ_AHEAD_GROUP if self.unbounded else max(1, min(READ_AHEAD_GROUP,
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
        if self.timed:
            timed = self.timed.get(f.result._job)
            if timed is not None:
                timed.note(index, group, f.result)      # to post again after a timeout
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
        return dump_cached(self.func_cache, func)

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
            if type(result) is _core.ApplyResult and not result.ready():
                result._pool = result._channel = None
        self.finished.set()
        if not self.channel.in_collector():
            self.close_channel()

