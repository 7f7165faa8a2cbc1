"""Process targets for tests/test_sync.py and tests/test_sync_recovery.py.

They live in an importable module so spawn and forkserver children can find them by name.
Each child reports through its exit code (and through shared values the parent reads), so
the parent only needs join().  Every blocking call has a timeout, so a broken primitive makes
a child fail with TIMED_OUT instead of hanging.
"""
import os
import signal
import sys
import threading
import time

OK = 0
TIMED_OUT = 3       # a wait that should have been woken ran out of time
WRONG = 4           # a value seen in the child was not the expected one (or came too late)
BROKEN = 7          # threading.BrokenBarrierError seen
GOT_KEYBOARD_INTERRUPT = 42

LONG = 30.0         # "forever" for a child: far past any test's own limit on waiting
SLOW = 10.0         # a wakeup that takes longer than this was lost (and came by timeout)


def _done(ok):
    sys.exit(OK if ok else TIMED_OUT)


# ---------------------------------------------------------------- Lock

def hold_until(prim, ready, done):
    """Acquire prim, announce it, hold it until `done` is set, release."""
    if not prim.acquire(timeout=LONG):
        sys.exit(TIMED_OUT)
    ready.set()
    ok = done.wait(LONG)
    prim.release()
    _done(ok)


def increment(lock, counter, ready, go, m):
    """m read-modify-write increments of a raw shared integer, each under `lock`."""
    ready.release()
    if not go.wait(LONG):
        sys.exit(TIMED_OUT)
    for _ in range(m):
        lock.acquire()
        v = counter.value
        counter.value = v + 1
        lock.release()
    sys.exit(OK)


# ---------------------------------------------------------------- Condition

def cond_pingpong(cond, flag):
    """Under the condition: set flag 1, notify, wait until the parent sets flag 2."""
    with cond:
        flag.value = 1
        cond.notify()
        t0 = time.monotonic()
        ok = cond.wait_for(lambda: flag.value == 2, LONG)
        # wait_for re-checks the predicate at its timeout: a lost wakeup shows only as time
        if ok and time.monotonic() - t0 > SLOW:
            sys.exit(WRONG)
    _done(ok)


def cond_waiter(cond, ready, woken, done):
    """Wait on cond once; count a notification in `woken`; announce the end on `done`.
    `ready` is released while the condition's lock is held, so once the parent can take the
    lock this process is registered as a waiter."""
    with cond:
        ready.release()
        notified = cond.wait(LONG)
        if notified:
            woken.value += 1
    done.release()
    _done(notified)


# ---------------------------------------------------------------- Event

def event_relay(ev, ready, ack):
    """Announce, wait for ev, then set ack."""
    ready.set()
    ok = ev.wait(LONG)
    if ok:
        ack.set()
    _done(ok)


# ---------------------------------------------------------------- Barrier

def bump(counter):
    """A Barrier action: count the rounds it runs in."""
    counter.value += 1


def barrier_rounds(barrier, slot, results, counter, rounds):
    """Pass `rounds` rounds; record each wait() return value at results[round*parties+slot]
    and check the action already ran exactly round+1 times when wait() returns."""
    wrong = False
    for r in range(rounds):
        idx = barrier.wait(LONG)
        results[r * barrier.parties + slot] = idx
        if counter.value != r + 1:
            wrong = True
    sys.exit(WRONG if wrong else OK)


def barrier_waiter(barrier):
    try:
        barrier.wait(LONG)
    except threading.BrokenBarrierError:
        sys.exit(BROKEN)
    sys.exit(OK)


# ---------------------------------------------------------------- every primitive as an argument

def use_all(lock, rlock, sem, bsem, cond, event, barrier):
    """The parent holds lock, rlock and cond, has taken one unit of bsem (maxvalue 2), left
    sem at 2; it meets this child at the barrier.  The exit code has one bit per wrong check."""
    bad = 0
    if lock.acquire(False):
        bad |= 1
    if rlock.acquire(False):
        bad |= 2
    if not (sem.acquire(timeout=LONG) and sem.acquire(timeout=LONG)) or sem.acquire(False):
        bad |= 4
    if bsem.get_value() != 1:
        bad |= 8
    bsem.release()
    if cond.acquire(False):
        bad |= 16
    event.set()
    try:
        barrier.wait(LONG)
    except threading.BrokenBarrierError:
        bad |= 32
    sys.exit(bad)


# ---------------------------------------------------------------- Ctrl-C

def blocked_until_sigint(kind, prim, ready):
    """Block on prim until SIGINT; exit GOT_KEYBOARD_INTERRUPT when it raises
    KeyboardInterrupt, TIMED_OUT if the blocking call returns on its own."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if kind in ("lock", "rlock", "semaphore"):
            ready.set()
            prim.acquire(timeout=LONG)
        elif kind == "event":
            ready.set()
            prim.wait(LONG)
        elif kind == "condition":
            with prim:
                ready.set()
                prim.wait(LONG)
        elif kind == "barrier":
            ready.set()
            prim.wait(LONG)
        else:
            raise ValueError(kind)
    except KeyboardInterrupt:
        sys.exit(GOT_KEYBOARD_INTERRUPT)
    except threading.BrokenBarrierError:
        sys.exit(BROKEN)
    sys.exit(TIMED_OUT)


# ---------------------------------------------------------------- dead holders (fastmp only)

def die_holding(prim, ready, how, times):
    """Acquire prim `times` times, announce it, then die without releasing: wait to be
    SIGKILLed (how == "kill") or leave at once through os._exit (how == "exit")."""
    for _ in range(times):
        if not prim.acquire(timeout=LONG):
            os._exit(TIMED_OUT)
    ready.set()
    if how == "exit":
        os._exit(0)
    time.sleep(LONG)
    os._exit(TIMED_OUT)


def use_temporaries(lock, rlock, sem, event):
    """Every argument was a temporary in the parent, gone by the time this child attaches."""
    with lock, rlock, sem:
        event.set()
    sys.exit(OK if event.is_set() else 1)
