"""Behaviour of Lock, RLock, Semaphore, BoundedSemaphore, Condition, Event and Barrier.

Every test runs against the stdlib (the reference: ids ``stdlib...``) and fastmp (ids
``fastmp...``); tests with processes run once per start method (``stdlib-fork`` ...
``fastmp-forkserver``).  The expected values are what the stdlib does, edge cases included.
"""
import errno
import functools
import os
import pickle
import signal
import threading
import time

import pytest

import _sync_targets as targets
from conftest import join_ok, start

JOIN = 30.0          # generous bound for a child that should end
SHORT = 0.1          # a timeout that is meant to expire
SLACK = 0.09         # a timed wait of SHORT must take at least this (clock granularity)
LATE = 2.0           # ... and at most this


def timed(fn, *args, **kwargs):
    t0 = time.monotonic()
    result = fn(*args, **kwargs)
    return result, time.monotonic() - t0


def in_thread(fn, *args, name=None):
    """Run fn in a thread; returns (thread, results list with fn's value or exception)."""
    out = []

    def run():
        try:
            out.append(fn(*args))
        except BaseException as exc:  # the test inspects it
            out.append(exc)

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    return t, out


def wait_until(pred, timeout=JOIN):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


INHERITANCE = "objects should only be shared between processes through inheritance"


# ============================================================================ Lock

def test_lock_acquire_release(mp):
    lock = mp.Lock()
    assert lock.acquire() is True
    assert lock.acquire(False) is False
    assert lock.acquire(block=False) is False
    assert lock.acquire(True, 0) is False
    lock.release()
    assert lock.acquire(block=False) is True
    lock.release()
    assert lock.acquire(timeout=1.0) is True
    lock.release()
    assert lock.acquire(True, None) is True
    lock.release()


def test_lock_nonblocking_ignores_timeout(mp):
    lock = mp.Lock()
    lock.acquire()
    result, elapsed = timed(lock.acquire, False, 5)
    assert result is False
    assert elapsed < 1.0
    lock.release()


def test_lock_timeout_in_process(mp):
    lock = mp.Lock()
    lock.acquire()
    result, elapsed = timed(lock.acquire, timeout=SHORT)
    assert result is False
    assert SLACK <= elapsed < LATE
    lock.release()


def test_lock_release_unlocked_raises(mp):
    lock = mp.Lock()
    with pytest.raises(ValueError):
        lock.release()
    lock.acquire()
    lock.release()
    with pytest.raises(ValueError):
        lock.release()
    # still a working lock
    assert lock.acquire(False) is True
    assert lock.acquire(False) is False
    lock.release()


def test_lock_released_by_other_thread(mp):
    # Like threading.Lock (and unlike RLock), any thread may release a held Lock.
    lock = mp.Lock()
    lock.acquire()
    t, out = in_thread(lock.release)
    t.join(JOIN)
    assert out == [None]
    assert lock.acquire(False) is True
    lock.release()


def test_lock_context_manager(mp):
    lock = mp.Lock()
    with lock as entered:
        assert entered is True
        assert lock.acquire(False) is False
    assert lock.acquire(False) is True
    lock.release()
    with pytest.raises(ZeroDivisionError):
        with lock:
            1 / 0
    assert lock.acquire(False) is True  # released by __exit__ on the exception
    lock.release()


@pytest.mark.parametrize("timeout", [-1, -0.5, -1e9])
def test_lock_negative_timeout(mp, timeout):
    # The stdlib treats a negative timeout as zero: no error, no wait.
    lock = mp.Lock()
    assert lock.acquire(timeout=timeout) is True
    result, elapsed = timed(lock.acquire, timeout=timeout)
    assert result is False
    assert elapsed < 1.0
    lock.release()


def test_lock_bad_timeout_type(mp):
    lock = mp.Lock()
    with pytest.raises(TypeError):
        lock.acquire(timeout="1")
    assert lock.acquire(False) is True  # nothing was taken
    lock.release()


def test_lock_repr(mp):
    lock = mp.Lock()
    assert repr(lock) == "<Lock(owner=None)>"
    lock.acquire()
    assert repr(lock) == "<Lock(owner=MainProcess)>"
    lock.release()
    assert repr(lock) == "<Lock(owner=None)>"


def test_lock_repr_other_thread(mp):
    lock = mp.Lock()
    got, release = threading.Event(), threading.Event()

    def hold():
        lock.acquire()
        seen = repr(lock)
        got.set()
        release.wait(JOIN)
        lock.release()
        return seen

    t, out = in_thread(hold, name="T1")
    assert got.wait(JOIN)
    assert repr(lock) == "<Lock(owner=SomeOtherThread)>"
    release.set()
    t.join(JOIN)
    assert out == ["<Lock(owner=MainProcess|T1)>"]


@pytest.mark.timeout(60)
def test_lock_timeout_held_by_other_process(ctx, procs):
    lock, ready, done = ctx.Lock(), ctx.Event(), ctx.Event()
    p = start(procs, ctx, targets.hold_until, lock, ready, done)
    assert ready.wait(JOIN)
    assert repr(lock) == "<Lock(owner=SomeOtherProcess)>"
    assert lock.acquire(False) is False
    result, elapsed = timed(lock.acquire, timeout=SHORT)
    assert result is False
    assert SLACK <= elapsed < LATE
    done.set()
    assert lock.acquire(timeout=JOIN) is True  # the child releases it
    lock.release()
    join_ok(p)


N_PROCS, N_INCR = 4, 2000


@pytest.mark.timeout(90)
def test_lock_contention(ctx, procs):
    lock, counter = ctx.Lock(), ctx.RawValue("l", 0)
    ready, go = ctx.Semaphore(0), ctx.Event()
    ps = [start(procs, ctx, targets.increment, lock, counter, ready, go, N_INCR)
          for _ in range(N_PROCS)]
    for _ in ps:  # all children are at the start line before any begins
        assert ready.acquire(timeout=JOIN)
    go.set()
    for p in ps:
        join_ok(p)
    assert counter.value == N_PROCS * N_INCR


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", ["RLock", "Semaphore", "BoundedSemaphore"])
def test_lock_like_contention_fork(mp, procs, kind):
    ctx = mp.get_context("fork")
    lock = getattr(ctx, kind)() if kind == "RLock" else getattr(ctx, kind)(1)
    counter, ready, go = ctx.RawValue("l", 0), ctx.Semaphore(0), ctx.Event()
    ps = [start(procs, ctx, targets.increment, lock, counter, ready, go, N_INCR)
          for _ in range(N_PROCS)]
    for _ in ps:
        assert ready.acquire(timeout=JOIN)
    go.set()
    for p in ps:
        join_ok(p)
    assert counter.value == N_PROCS * N_INCR


# ============================================================================ RLock

def test_rlock_recursive(mp):
    rlock = mp.RLock()
    for _ in range(3):
        assert rlock.acquire() is True
    assert rlock.acquire(False) is True
    assert rlock.acquire(timeout=0) is True
    for _ in range(5):
        rlock.release()
    with pytest.raises(AssertionError):
        rlock.release()
    assert repr(rlock) == "<RLock(None, 0)>"


def test_rlock_release_unowned_raises(mp):
    rlock = mp.RLock()
    with pytest.raises(AssertionError):
        rlock.release()
    assert repr(rlock) == "<RLock(None, 0)>"


def test_rlock_release_by_non_owner_thread_raises(mp):
    rlock = mp.RLock()
    rlock.acquire()
    t, out = in_thread(rlock.release)
    t.join(JOIN)
    assert len(out) == 1 and type(out[0]) is AssertionError
    # a non-owner cannot take it either
    t, out = in_thread(rlock.acquire, False)
    t.join(JOIN)
    assert out == [False]
    assert repr(rlock) == "<RLock(MainProcess, 1)>"
    rlock.release()
    t, out = in_thread(lambda: (rlock.acquire(False), rlock.release()))
    t.join(JOIN)
    assert out == [(True, None)]


def test_rlock_context_manager(mp):
    rlock = mp.RLock()
    with rlock as a:
        with rlock as b:
            assert (a, b) == (True, True)
            assert repr(rlock) == "<RLock(MainProcess, 2)>"
        assert repr(rlock) == "<RLock(MainProcess, 1)>"
    assert repr(rlock) == "<RLock(None, 0)>"


def test_rlock_repr(mp):
    rlock = mp.RLock()
    assert repr(rlock) == "<RLock(None, 0)>"
    rlock.acquire()
    rlock.acquire()
    assert repr(rlock) == "<RLock(MainProcess, 2)>"
    rlock.release()
    assert repr(rlock) == "<RLock(MainProcess, 1)>"
    rlock.release()
    assert repr(rlock) == "<RLock(None, 0)>"


def test_rlock_repr_other_thread(mp):
    rlock = mp.RLock()
    got, release = threading.Event(), threading.Event()

    def hold():
        rlock.acquire()
        seen = repr(rlock)
        got.set()
        release.wait(JOIN)
        rlock.release()
        return seen

    t, out = in_thread(hold, name="T1")
    assert got.wait(JOIN)
    assert repr(rlock) == "<RLock(SomeOtherThread, nonzero)>"
    release.set()
    t.join(JOIN)
    assert out == ["<RLock(MainProcess|T1, 1)>"]


@pytest.mark.parametrize("timeout", [-1, -0.5])
def test_rlock_negative_timeout(mp, timeout):
    rlock = mp.RLock()
    assert rlock.acquire(timeout=timeout) is True
    assert rlock.acquire(timeout=timeout) is True  # recursion, not a wait
    t, out = in_thread(rlock.acquire, True, timeout)
    t.join(JOIN)
    assert out == [False]
    rlock.release()
    rlock.release()


# ============================================================================ Semaphore

def test_semaphore_counts(mp):
    sem = mp.Semaphore(3)
    assert sem.get_value() == 3
    assert sem.acquire() is True
    assert sem.get_value() == 2
    assert sem.acquire(False) is True
    assert sem.acquire(timeout=1) is True
    assert sem.get_value() == 0
    assert sem.acquire(False) is False
    sem.release()
    assert sem.get_value() == 1
    # an unbounded Semaphore may be released past its initial value
    sem.release()
    sem.release()
    sem.release()
    assert sem.get_value() == 4


def test_semaphore_default_value(mp):
    sem = mp.Semaphore()
    assert sem.get_value() == 1
    assert repr(sem) == "<Semaphore(value=1)>"
    bsem = mp.BoundedSemaphore()
    assert bsem.get_value() == 1
    assert repr(bsem) == "<BoundedSemaphore(value=1, maxvalue=1)>"


def test_semaphore_zero_timeout(mp):
    sem = mp.Semaphore(0)
    assert sem.acquire(False) is False
    assert sem.acquire(block=False) is False
    result, elapsed = timed(sem.acquire, timeout=SHORT)
    assert result is False
    assert SLACK <= elapsed < LATE
    assert sem.get_value() == 0


@pytest.mark.parametrize("timeout", [-1, -0.5])
def test_semaphore_negative_timeout(mp, timeout):
    sem = mp.Semaphore(1)
    assert sem.acquire(timeout=timeout) is True
    result, elapsed = timed(sem.acquire, timeout=timeout)
    assert result is False
    assert elapsed < 1.0
    assert sem.get_value() == 0


def test_semaphore_context_manager(mp):
    sem = mp.Semaphore(2)
    with sem as entered:
        assert entered is True
        assert sem.get_value() == 1
    assert sem.get_value() == 2


def test_semaphore_released_by_other_thread(mp):
    sem = mp.Semaphore(0)
    t, out = in_thread(sem.acquire, True, JOIN)
    time.sleep(0.05)
    sem.release()
    t.join(JOIN)
    assert out == [True]
    assert sem.get_value() == 0


def test_bounded_semaphore_over_release(mp):
    bsem = mp.BoundedSemaphore(2)
    assert bsem.get_value() == 2
    with pytest.raises(ValueError):
        bsem.release()
    assert bsem.get_value() == 2
    assert bsem.acquire() is True
    bsem.release()
    with pytest.raises(ValueError):
        bsem.release()
    assert bsem.get_value() == 2
    assert bsem.acquire(False) and bsem.acquire(False)
    assert bsem.acquire(False) is False
    bsem.release()
    bsem.release()
    assert bsem.get_value() == 2


def test_semaphore_repr(mp):
    sem = mp.Semaphore(2)
    assert repr(sem) == "<Semaphore(value=2)>"
    sem.acquire()
    assert repr(sem) == "<Semaphore(value=1)>"
    bsem = mp.BoundedSemaphore(1)
    assert repr(bsem) == "<BoundedSemaphore(value=1, maxvalue=1)>"
    bsem.acquire()
    assert repr(bsem) == "<BoundedSemaphore(value=0, maxvalue=1)>"
    assert repr(mp.BoundedSemaphore(3)) == "<BoundedSemaphore(value=3, maxvalue=3)>"


@pytest.mark.parametrize("kind", ["Semaphore", "BoundedSemaphore"])
def test_semaphore_negative_value(mp, kind):
    # The stdlib passes the value to sem_open, which fails with EINVAL: OSError, not ValueError.
    with pytest.raises(OSError) as info:
        getattr(mp, kind)(-1)
    assert info.value.errno == errno.EINVAL


def test_semaphore_bad_value_type(mp):
    with pytest.raises(TypeError):
        mp.Semaphore("1")


# ============================================================================ Condition

COND_LOCKS = ["default", "Lock", "RLock"]


def make_cond(mp, lock_kind):
    if lock_kind == "default":
        return mp.Condition()
    return mp.Condition(getattr(mp, lock_kind)())


def test_condition_repr(mp):
    assert repr(mp.Condition()) == "<Condition(<RLock(None, 0)>, 0)>"
    assert repr(mp.Condition(mp.Lock())) == "<Condition(<Lock(owner=None)>, 0)>"


@pytest.mark.parametrize("lock_kind", COND_LOCKS)
def test_condition_acquire_release(mp, lock_kind):
    cond = make_cond(mp, lock_kind)
    assert cond.acquire() is True
    t, out = in_thread(cond.acquire, False)
    t.join(JOIN)
    assert out == [False]
    cond.release()
    with cond as entered:
        assert entered is True
    assert cond.acquire(False) is True
    cond.release()


@pytest.mark.parametrize("lock_kind", COND_LOCKS)
def test_condition_wait_timeout(mp, lock_kind):
    cond = make_cond(mp, lock_kind)
    with cond:
        result, elapsed = timed(cond.wait, SHORT)
        assert result is False
        assert SLACK <= elapsed < LATE
        # the lock is held again after the wait
        t, out = in_thread(cond.acquire, False)
        t.join(JOIN)
        assert out == [False]


@pytest.mark.parametrize("timeout", [0, -1])
def test_condition_wait_nonpositive_timeout(mp, timeout):
    cond = mp.Condition()
    with cond:
        result, elapsed = timed(cond.wait, timeout)
    assert result is False
    assert elapsed < 1.0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("lock_kind", COND_LOCKS)
def test_condition_wait_notified(mp, lock_kind):
    cond = make_cond(mp, lock_kind)
    state = []

    def notifier():
        with cond:  # only possible once the main thread waits (the lock is released)
            state.append(1)
            cond.notify()

    with cond:
        t, out = in_thread(notifier)
        result = cond.wait(JOIN)
        assert result is True
        assert state == [1]
    t.join(JOIN)
    assert out == [None]


@pytest.mark.parametrize("lock_kind", COND_LOCKS)
def test_condition_wait_for(mp, lock_kind):
    cond = make_cond(mp, lock_kind)
    marker = object()
    with cond:
        # a true predicate is returned at once, as is
        result, elapsed = timed(cond.wait_for, lambda: marker, JOIN)
        assert result is marker
        assert elapsed < 1.0
        # a false one is returned after the timeout, as is
        result, elapsed = timed(cond.wait_for, lambda: [], SHORT)
        assert result == [] and type(result) is list
        assert SLACK <= elapsed < LATE
        result, elapsed = timed(cond.wait_for, lambda: False, SHORT)
        assert result is False

    state = [0]

    def setter():
        for _ in range(3):
            time.sleep(0.02)
            with cond:
                state[0] += 1
                cond.notify_all()

    with cond:
        t, _ = in_thread(setter)
        result, elapsed = timed(cond.wait_for, lambda: state[0] == 3, JOIN)
        assert result is True
        assert elapsed < targets.SLOW, "a notify_all was lost (woke by timeout)"
        assert state[0] == 3
    t.join(JOIN)


@pytest.mark.parametrize("lock_kind", COND_LOCKS)
def test_condition_requires_lock(mp, lock_kind):
    cond = make_cond(mp, lock_kind)
    with pytest.raises(AssertionError):
        cond.wait(SHORT)
    with pytest.raises(AssertionError):
        cond.wait_for(lambda: False, SHORT)
    with pytest.raises(AssertionError):
        cond.notify()
    with pytest.raises(AssertionError):
        cond.notify_all()
    # held by another thread is not held by us
    got, release = threading.Event(), threading.Event()

    def hold():
        with cond:
            got.set()
            release.wait(JOIN)

    t, _ = in_thread(hold)
    assert got.wait(JOIN)
    try:
        with pytest.raises(AssertionError):
            cond.wait(SHORT)
        with pytest.raises(AssertionError):
            cond.notify()
    finally:
        release.set()
        t.join(JOIN)
    # still usable
    with cond:
        cond.notify()
        assert cond.wait(0.01) is False


@pytest.mark.timeout(60)
@pytest.mark.parametrize("lock_kind", ["default", "Lock"])
def test_condition_notify_not_taken_by_later_waiter(mp, lock_kind):
    # notify() wakes one of the threads waiting *at that moment*; a thread that starts
    # waiting afterwards (here: the notifier itself, at once) must not consume that wakeup.
    for _ in range(3):
        cond = make_cond(mp, lock_kind)

        def notifier():
            with cond:
                cond.notify()
                return cond.wait(0.3)  # nobody notifies it: times out

        with cond:
            t, out = in_thread(notifier)
            result, elapsed = timed(cond.wait, 5.0)
        t.join(JOIN)
        assert result is True, f"the notified waiter was not woken (returned after {elapsed:.1f} s)"
        assert elapsed < 4.0
        assert out == [False], "the later waiter took the earlier waiter's wakeup"


@pytest.mark.timeout(60)
def test_condition_rlock_level_restored(mp):
    rlock = mp.RLock()
    cond = mp.Condition(rlock)
    cond.acquire()
    cond.acquire()
    assert repr(rlock) == "<RLock(MainProcess, 2)>"
    # timeout path
    assert cond.wait(0.01) is False
    assert repr(rlock) == "<RLock(MainProcess, 2)>"

    # notified path: while we wait the RLock is fully released (another thread takes it)
    seen = []

    def other():
        with cond:
            seen.append(repr(rlock))
            cond.notify()

    t, out = in_thread(other, name="T1")
    assert cond.wait(JOIN) is True
    t.join(JOIN)
    assert out == [None]
    assert seen == ["<RLock(MainProcess|T1, 1)>"]
    assert repr(rlock) == "<RLock(MainProcess, 2)>"
    cond.release()
    assert repr(rlock) == "<RLock(MainProcess, 1)>"
    cond.release()
    assert repr(rlock) == "<RLock(None, 0)>"
    with pytest.raises(AssertionError):
        cond.release()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("lock_kind", ["default", "Lock"])
def test_condition_notify_n_threads(mp, lock_kind):
    cond = make_cond(mp, lock_kind)
    k = 4
    waiting = mp.Semaphore(0)
    woken = []
    lock = threading.Lock()

    def waiter():
        with cond:
            waiting.release()
            r = cond.wait(JOIN)
        with lock:
            woken.append(r)

    threads = [in_thread(waiter)[0] for _ in range(k)]
    for _ in range(k):
        assert waiting.acquire(timeout=JOIN)
    with cond:  # all k are waiting once we hold the lock
        cond.notify()
    assert wait_until(lambda: len(woken) == 1)
    with cond:
        cond.notify(2)
    assert wait_until(lambda: len(woken) == 3)
    time.sleep(0.1)
    assert len(woken) == 3
    with cond:
        cond.notify_all()
    for t in threads:
        t.join(JOIN)
    assert woken == [True] * k
    with cond:  # nobody waits any more: notifying is a no-op
        cond.notify()
        cond.notify_all()
    assert repr(cond).endswith(", 0)>")


@pytest.mark.timeout(60)
def test_condition_between_processes(ctx, procs):
    cond, flag = ctx.Condition(), ctx.RawValue("i", 0)
    with cond:
        p = start(procs, ctx, targets.cond_pingpong, cond, flag)
        # the child can only notify once we wait (we hold the lock until then)
        result, elapsed = timed(cond.wait_for, lambda: flag.value == 1, targets.SLOW)
        assert result is True
        # wait_for re-checks at its timeout, so a lost wakeup would show only as time
        assert elapsed < targets.SLOW - 2, f"notify from the child lost: woke after {elapsed:.1f} s"
        flag.value = 2
        cond.notify()
    join_ok(p)


@pytest.mark.timeout(90)
def test_condition_notify_n_processes(ctx, procs):
    k = 3
    cond = ctx.Condition()
    ready, done = ctx.Semaphore(0), ctx.Semaphore(0)
    woken = ctx.RawValue("i", 0)
    ps = [start(procs, ctx, targets.cond_waiter, cond, ready, woken, done) for _ in range(k)]
    for _ in ps:
        assert ready.acquire(timeout=JOIN)
    with cond:  # all k wait once we hold the lock
        cond.notify(2)
    assert done.acquire(timeout=JOIN)
    assert done.acquire(timeout=JOIN)
    assert done.acquire(timeout=0.3) is False  # the third one was not woken
    with cond:
        assert woken.value == 2
        cond.notify_all()
    assert done.acquire(timeout=JOIN)
    for p in ps:
        join_ok(p)
    assert woken.value == k


# ============================================================================ Event

def test_event_basics(mp):
    ev = mp.Event()
    assert ev.is_set() is False
    result, elapsed = timed(ev.wait, SHORT)
    assert result is False
    assert SLACK <= elapsed < LATE
    ev.set()
    assert ev.is_set() is True
    assert ev.wait() is True
    assert ev.wait(0) is True
    assert ev.wait(SHORT) is True
    ev.set()  # setting twice is fine
    assert ev.is_set() is True
    ev.clear()
    assert ev.is_set() is False
    assert ev.wait(0) is False
    ev.clear()
    assert ev.is_set() is False


@pytest.mark.parametrize("timeout", [0, -1])
def test_event_wait_nonpositive_timeout(mp, timeout):
    ev = mp.Event()
    result, elapsed = timed(ev.wait, timeout)
    assert result is False
    assert elapsed < 1.0
    ev.set()
    assert ev.wait(timeout) is True


@pytest.mark.timeout(60)
def test_event_set_by_thread(mp):
    ev = mp.Event()
    t, out = in_thread(ev.wait, JOIN)
    time.sleep(0.05)
    ev.set()
    t.join(JOIN)
    assert out == [True]


@pytest.mark.timeout(60)
def test_event_between_processes(ctx, procs):
    ev, ready, ack = ctx.Event(), ctx.Event(), ctx.Event()
    p = start(procs, ctx, targets.event_relay, ev, ready, ack)
    assert ready.wait(JOIN)
    time.sleep(0.1)  # let the child block in wait()
    assert ack.is_set() is False
    ev.set()
    assert ack.wait(JOIN) is True
    join_ok(p)


# ============================================================================ Barrier

def test_barrier_attributes(mp):
    b = mp.Barrier(3)
    assert (b.parties, b.n_waiting, b.broken) == (3, 0, False)
    b2 = mp.Barrier(2, timeout=5)
    assert b2.parties == 2


def test_barrier_timeout_breaks(mp):
    b = mp.Barrier(2)
    t0 = time.monotonic()
    with pytest.raises(threading.BrokenBarrierError):
        b.wait(SHORT)
    assert SLACK <= time.monotonic() - t0 < LATE
    assert b.broken is True
    assert b.n_waiting == 0
    t0 = time.monotonic()
    with pytest.raises(threading.BrokenBarrierError):
        b.wait(JOIN)
    assert time.monotonic() - t0 < 1.0  # a broken barrier fails at once


def test_barrier_default_timeout_breaks(mp):
    b = mp.Barrier(2, timeout=SHORT)
    t0 = time.monotonic()
    with pytest.raises(threading.BrokenBarrierError):
        b.wait()
    assert SLACK <= time.monotonic() - t0 < LATE
    assert b.broken is True


@pytest.mark.parametrize("timeout", [0, -1])
def test_barrier_nonpositive_timeout_breaks(mp, timeout):
    b = mp.Barrier(2)
    t0 = time.monotonic()
    with pytest.raises(threading.BrokenBarrierError):
        b.wait(timeout)
    assert time.monotonic() - t0 < 1.0
    assert b.broken is True


@pytest.mark.timeout(60)
def test_barrier_abort_and_reset_threads(mp):
    b = mp.Barrier(2)
    t, out = in_thread(b.wait, JOIN)
    assert wait_until(lambda: b.n_waiting == 1)
    b.abort()
    t.join(JOIN)
    assert len(out) == 1 and type(out[0]) is threading.BrokenBarrierError
    assert b.broken is True
    with pytest.raises(threading.BrokenBarrierError):
        b.wait(JOIN)
    b.reset()
    assert (b.broken, b.n_waiting) == (False, 0)
    # usable again
    t, out = in_thread(b.wait, JOIN)
    idx = b.wait(JOIN)
    t.join(JOIN)
    assert sorted([idx] + out) == [0, 1]


@pytest.mark.timeout(60)
def test_barrier_reset_while_waiting(mp):
    b = mp.Barrier(2)
    t, out = in_thread(b.wait, JOIN)
    assert wait_until(lambda: b.n_waiting == 1)
    b.reset()
    t.join(JOIN)
    assert len(out) == 1 and type(out[0]) is threading.BrokenBarrierError
    assert b.broken is False  # reset leaves it usable
    t, out = in_thread(b.wait, JOIN)
    idx = b.wait(JOIN)
    t.join(JOIN)
    assert sorted([idx] + out) == [0, 1]


@pytest.mark.timeout(60)
def test_barrier_threads_rounds(mp):
    runs = []
    b = mp.Barrier(3, action=lambda: runs.append(1))
    results = []
    lock = threading.Lock()

    def party():
        for _ in range(4):
            r = b.wait(JOIN)
            with lock:
                results.append(r)

    threads = [in_thread(party)[0] for _ in range(2)]
    for _ in range(4):
        r = b.wait(JOIN)
        with lock:
            results.append(r)
    for t in threads:
        t.join(JOIN)
    assert sorted(results) == [0] * 4 + [1] * 4 + [2] * 4
    assert len(runs) == 4
    assert b.n_waiting == 0 and b.broken is False


@pytest.mark.timeout(90)
def test_barrier_between_processes(ctx, procs):
    rounds, parties = 5, 3
    counter = ctx.RawValue("i", 0)
    results = ctx.RawArray("i", [-1] * (rounds * parties))
    b = ctx.Barrier(parties, action=functools.partial(targets.bump, counter))
    ps = [start(procs, ctx, targets.barrier_rounds, b, slot, results, counter, rounds)
          for slot in range(parties - 1)]
    me = parties - 1
    for r in range(rounds):
        results[r * parties + me] = b.wait(JOIN)
        assert counter.value == r + 1  # the action ran exactly once, before the release
    for p in ps:
        join_ok(p)
    assert counter.value == rounds
    for r in range(rounds):
        assert sorted(results[r * parties:(r + 1) * parties]) == [0, 1, 2], f"round {r}"
    assert (b.n_waiting, b.broken) == (0, False)


@pytest.mark.timeout(60)
def test_barrier_abort_between_processes(ctx, procs):
    b = ctx.Barrier(2)
    p = start(procs, ctx, targets.barrier_waiter, b)
    assert wait_until(lambda: b.n_waiting == 1)
    b.abort()
    join_ok(p, targets.BROKEN)
    assert b.broken is True
    b.reset()
    assert (b.broken, b.n_waiting) == (False, 0)


# ============================================================================ pickling / sharing

KINDS = ["Lock", "RLock", "Semaphore", "BoundedSemaphore", "Condition", "Event", "Barrier"]


def make(mp, kind):
    return mp.Barrier(2) if kind == "Barrier" else getattr(mp, kind)()


@pytest.mark.parametrize("kind", KINDS)
def test_pickle_outside_process_start_raises(mp, kind):
    obj = make(mp, kind)
    for proto in (pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL):
        with pytest.raises(RuntimeError, match=INHERITANCE) as info:
            pickle.dumps(obj, proto)
    if kind not in ("Event", "Barrier"):
        # the stdlib names the type; for Event and Barrier it names their inner Condition
        assert str(info.value).startswith(f"{kind} objects")


@pytest.mark.timeout(60)
def test_every_primitive_as_process_argument(ctx, procs):
    lock, rlock, cond = ctx.Lock(), ctx.RLock(), ctx.Condition()
    sem, bsem = ctx.Semaphore(2), ctx.BoundedSemaphore(2)
    event, barrier = ctx.Event(), ctx.Barrier(2)
    lock.acquire()
    rlock.acquire()
    cond.acquire()
    bsem.acquire()
    p = start(procs, ctx, targets.use_all, lock, rlock, sem, bsem, cond, event, barrier)
    barrier.wait(JOIN)
    p.join(JOIN)
    assert p.exitcode == 0, f"failed checks in the child: bitmask {p.exitcode}"
    assert event.is_set() is True
    assert sem.get_value() == 0
    assert bsem.get_value() == 2
    lock.release()
    rlock.release()
    cond.release()


# ============================================================================ GIL

BLOCKERS = ["Lock", "RLock", "Semaphore", "Event", "Condition", "Barrier"]


def blocked_call(mp, kind):
    """A primitive and a call that blocks for BLOCK seconds in another thread of this process."""
    if kind in ("Lock", "RLock"):
        prim = getattr(mp, kind)()
        prim.acquire()  # held by the main thread
        return prim, lambda: prim.acquire(True, BLOCK)
    if kind == "Semaphore":
        prim = mp.Semaphore(0)
        return prim, lambda: prim.acquire(True, BLOCK)
    if kind == "Event":
        prim = mp.Event()
        return prim, lambda: prim.wait(BLOCK)
    if kind == "Condition":
        prim = mp.Condition()

        def call():
            with prim:
                return prim.wait(BLOCK)
        return prim, call
    prim = mp.Barrier(2)

    def call():
        try:
            return prim.wait(BLOCK)
        except threading.BrokenBarrierError:
            return False
    return prim, call


BLOCK = 0.6


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", BLOCKERS)
def test_blocking_releases_gil(mp, kind):
    prim, call = blocked_call(mp, kind)
    entering = threading.Event()

    def blocker():
        entering.set()
        return call()

    t, out = in_thread(blocker)
    assert entering.wait(JOIN)
    time.sleep(0.02)  # into the blocking call
    # If the blocked thread kept the GIL, this loop could only start after its BLOCK s timeout.
    n, end = 0, time.monotonic() + 0.2
    while time.monotonic() < end:
        n += 1
    still_blocked = t.is_alive()
    t.join(JOIN)
    assert still_blocked, "the main thread could not run while the other thread was blocked"
    assert n > 1000
    assert out == [False]


# ============================================================================ Ctrl-C

SIGINT_KINDS = ["lock", "rlock", "semaphore", "event", "condition", "barrier"]


def sigint_prim(ctx, kind):
    if kind in ("lock", "rlock"):
        prim = ctx.Lock() if kind == "lock" else ctx.RLock()
        prim.acquire()  # held by the parent
        return prim
    if kind == "semaphore":
        return ctx.Semaphore(0)
    if kind == "event":
        return ctx.Event()
    if kind == "condition":
        return ctx.Condition()
    return ctx.Barrier(2)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", SIGINT_KINDS)
def test_sigint_interrupts_blocked_child(ctx, procs, kind):
    prim, ready = sigint_prim(ctx, kind), ctx.Event()
    p = start(procs, ctx, targets.blocked_until_sigint, kind, prim, ready)
    assert ready.wait(JOIN)
    time.sleep(0.2)  # let the child block
    assert p.exitcode is None
    t0 = time.monotonic()
    os.kill(p.pid, signal.SIGINT)
    p.join(5)
    elapsed = time.monotonic() - t0
    assert p.exitcode == targets.GOT_KEYBOARD_INTERRUPT, f"exit code {p.exitcode}"
    assert elapsed < 5.0
    if kind in ("lock", "rlock"):
        prim.release()


@pytest.mark.timeout(60)
def test_temporaries_outlive_a_spawning_start(fastmp_ctx, procs):
    """Objects the parent drops right after start() stay alive until the child has attached
    them (the stdlib fails here under spawn: its semaphore is unlinked when collected)."""
    import gc
    p = fastmp_ctx.Process(target=targets.use_temporaries,
                           args=(fastmp_ctx.Lock(), fastmp_ctx.RLock(),
                                 fastmp_ctx.Semaphore(1), fastmp_ctx.Event()))
    procs.append(p)
    p.start()
    gc.collect()
    p.join(30)
    assert p.exitcode == targets.OK
