"""Task timeouts of Pool and ProcessPoolExecutor (beyond the stdlib, whose ``get(timeout)``
only stops waiting while the task runs on and holds its worker).

``task_timeout=`` (seconds) limits each task from the moment a worker starts it, not from its
submission: a task that waits in the queue behind others is not counted.  How it works:

* the dispatcher gives the channel the job's limit (``PoolChannel.timeouts``), which goes into
  the job's task records; before each task of such a record, the worker writes into its slot
  of the shared worker table which task runs and its deadline (csrc/pool_worker.c);
* the parent's collector thread compares the deadlines with the clock at each of its checks
  (every 50 ms) and kills (SIGKILL) the worker of an overdue task (csrc/pool_collect.c); the
  deadline is claimed with a compare-and-swap on both sides, so a task that ends in time is
  never killed and its result never lost;
* the dead worker is found as any other (Dispatcher.on_dead): the task that ran fails with
  TaskTimeoutError, the tasks after it in the worker's batch (taken, never started) are posted
  again and run in other workers, the tasks before it posted their results as each ended (a
  timed record's results are not held back for the batch), and a new worker replaces the
  killed one.

A map() with a limit runs each item as a task of its own (the limit is per item), and its
chunksize becomes how many of them travel in one task record.

This module holds what is shared: the exception, the check of the argument, and the record
of a timed job (what to post again, what to name in the message).
"""
import functools
import math
import multiprocessing
import numbers
from concurrent.futures import TimeoutError as _FuturesTimeoutError

__all__ = ()    # private to the package; TaskTimeoutError is public as fastmp.pool's


class TaskTimeoutError(multiprocessing.TimeoutError, _FuturesTimeoutError):
    """A task ran past its task_timeout: its worker process was killed and replaced (beyond
    the stdlib).  A multiprocessing.TimeoutError, and concurrent.futures.TimeoutError (the
    builtin TimeoutError since Python 3.11) for the executor's futures."""
    __module__ = "fastmp.pool"      # public there (and in fastmp.futures)


# a limit this large is none (about 146 years; the worker's clock arithmetic stays in range)
_NO_LIMIT_NS = 1 << 62


def check_timeout(value, name="task_timeout"):
    """The limit in seconds (a float), or None for no limit.  None and math.inf: no limit;
    a negative number, zero or NaN: ValueError; anything else not a real number
    (a bool included): TypeError, as the stdlib's timeouts raise for such values."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds or None, "
                        f"not {type(value).__name__!r}")
    seconds = float(value)
    if math.isnan(seconds):
        raise ValueError(f"{name} must be a number of seconds, not NaN")
    if seconds <= 0:
        raise ValueError(f"{name} must be positive (seconds), not {value!r}")
    if math.isinf(seconds):
        return None
    return seconds


def to_ns(seconds):
    return max(1, min(_NO_LIMIT_NS, int(seconds * 1e9)))


class TimedJob:
    """What the dispatcher keeps of a job with a task timeout: its limit, how its tasks are
    posted (mode, the function's pickle), their items by task index (to post again the tasks
    a killed worker held and never started), and what the timeout's message names."""
    __slots__ = ("seconds", "ns", "mode", "fdata", "items", "name", "call", "_kept")

    def __init__(self, seconds, mode, fdata, items, func, call):
        self.seconds = seconds
        self.ns = to_ns(seconds)
        self.mode = mode
        self.fdata = fdata
        self.items = items          # a sequence by task index, or a dict (a lazy imap)
        self.name = _func_name(func)
        self.call = call
        self._kept = 0

    def note(self, first, group, result):
        """A lazy imap posted tasks first, first+1, ... (group: their items); the items of
        tasks done are dropped now and then, so the dict stays within the read-ahead."""
        items = self.items
        for k, item in enumerate(group):
            items[first + k] = item
        if len(items) > 2 * self._kept + 256:
            is_done = result._is_done
            self.items = items = {i: x for i, x in items.items() if not is_done(i)}
            self._kept = len(items)

    def pending(self, start, end):
        """The items of tasks start..end-1 (an _Offset for Dispatcher.submit), or None if
        some item was not kept."""
        items = self.items
        try:
            if isinstance(items, dict):
                run = [items[i] for i in range(start, end)]
            else:
                run = list(items[start:end])
        except (KeyError, IndexError):
            return None
        if len(run) != end - start:
            return None
        return _Offset(start, run)

    def error(self, index, pid):
        limit = f"{self.seconds:g}"
        return TaskTimeoutError(
            f"task {index} of {self.call}({self.name}) ran past its time limit of {limit} "
            f"seconds (task_timeout={limit}): its worker process {pid} was killed and "
            f"replaced")


def _func_name(func):
    while isinstance(func, functools.partial):
        func = func.func
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    if not isinstance(name, str):
        name = type(func).__name__
    return name


class _Offset:
    """Items of tasks start, start+1, ... as a sequence indexed from task 0 (only the slices
    Dispatcher.submit and feed_list take from start on): the tasks a killed worker held,
    posted again under their own indices."""
    __slots__ = ("start", "run")

    def __init__(self, start, run):
        self.start, self.run = start, run

    def __len__(self):
        return self.start + len(self.run)

    def __getitem__(self, key):
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("only slices from the first task on")
        lo = (key.start or 0) - self.start
        hi = None if key.stop is None else max(0, key.stop - self.start)
        return self.run[max(0, lo):hi]


class TimedJobs:
    """The dispatcher's record of its timed jobs: {job: TimedJob}, and the channel's
    {job: limit in ns}.  Entries of jobs no longer in the cache (done) are dropped as new ones
    come, at amortized constant cost."""

    def __init__(self, channel, cache):
        self.jobs = {}
        self.cache = cache
        self.ns = channel.timeouts = {}
        self._kept = 0

    def __bool__(self):
        return bool(self.jobs)

    def get(self, job):
        return self.jobs.get(job)

    def add(self, job, timed):
        if len(self.jobs) > 2 * self._kept + 64:
            cache = self.cache
            # list(dict) copies in one step: other threads may add jobs meanwhile
            for j in [j for j in list(self.jobs) if j not in cache]:
                self.jobs.pop(j, None)
                self.ns.pop(j, None)
            self._kept = len(self.jobs)
        self.jobs[job] = timed
        self.ns[job] = timed.ns
