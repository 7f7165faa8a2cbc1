"""Process targets for tests/test_managers_sync.py (an importable module, so that spawn and
forkserver children find them by name).  Children report through their exit code and the shared
objects."""
import os
import sys
import time

OK = 0
WRONG = 4
INTERRUPTED = 7
NOT_INTERRUPTED = 8


def count_up(lock, d, n):
    """n times, under the manager's `lock`: d['n'] += 1 (a read and a write: lost updates
    without the lock)."""
    for _ in range(n):
        with lock:
            v = d["n"]
            d["n"] = v + 1


def count_up_from_queue(q, d, n):
    """The lock arrives through a queue (pickled long after the process started)."""
    lock = q.get(timeout=60)
    count_up(lock, d, n)


def locked_add(args):
    """A pool task: under the lock, d['n'] += 1 (acquire()/release() this time)."""
    lock, d, times = args
    for _ in range(times):
        assert lock.acquire() is True
        try:
            d["n"] = d["n"] + 1
        finally:
            lock.release()
    return times


def hold_forever(obj, ready):
    """Take obj (a manager Lock, RLock or Semaphore), say so, and sleep until killed."""
    assert obj.acquire(True, 60) is True
    ready.set()
    time.sleep(300)
    sys.exit(WRONG)


def blocked_call(kind, obj, ready):
    """Block in a call on obj until SIGINT: exit INTERRUPTED on KeyboardInterrupt."""
    try:
        ready.set()
        if kind in ("Lock", "RLock", "Semaphore"):
            obj.acquire()
        elif kind == "Condition":
            obj.acquire()           # (no release on the way out: the stdlib's would hang)
            obj.wait()
        else:                       # Event, Barrier
            obj.wait()
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)
    sys.exit(NOT_INTERRUPTED)


def condition_worker(cond, d, ready):
    """Wait on cond until d['go'] is true (wait_for: the predicate runs here), then record."""
    with cond:
        ready.set()
        assert cond.wait_for(lambda: d.get("go", False), 60) is True
        d[os.getpid()] = "woken"
        cond.notify_all()


def event_worker(ev_in, ev_out):
    """Wait for ev_in; then set ev_out."""
    sys.exit(OK if ev_in.wait(60) is True and (ev_out.set() is None) else WRONG)


def barrier_worker(barrier, d):
    """Pass the barrier twice; record the indexes."""
    first = barrier.wait(60)
    second = barrier.wait(60)
    d[("idx", os.getpid())] = (first, second)
