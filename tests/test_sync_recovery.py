"""fastmp only: a process that dies holding a lock does not hang everyone else.

The stdlib hangs in every test here (a SemLock held by a dead process is never given back),
so there is no stdlib param.  DESIGN.md rule 4: the others detect the dead owner and recover.
"""
import os
import signal
import threading
import time

import pytest

import _sync_targets as targets

JOIN = 30.0
RECOVER_WITHIN = 5.0   # the acquire below allows 10 s; recovery must come well before


def start(procs, ctx, target, *args):
    p = ctx.Process(target=target, args=args)
    p.start()
    procs.append(p)
    return p


def make(ctx, kind):
    if kind in ("Semaphore", "BoundedSemaphore"):
        return getattr(ctx, kind)(1)
    return getattr(ctx, kind)()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["sigkill", "os_exit"])
@pytest.mark.parametrize("kind", ["Lock", "RLock", "Semaphore", "BoundedSemaphore"])
def test_dead_holder_is_recovered(fastmp_ctx, procs, kind, how):
    ctx = fastmp_ctx
    prim, ready = make(ctx, kind), ctx.Event()
    times = 2 if kind == "RLock" else 1  # a recursion count dies with its owner too
    p = start(procs, ctx, targets.die_holding, prim, ready,
              "kill" if how == "sigkill" else "exit", times)
    assert ready.wait(JOIN)
    assert prim.acquire(False) is False  # held by the (still living or just dead) child
    if how == "sigkill":
        os.kill(p.pid, signal.SIGKILL)
    # no join first: the dead child may still be an unreaped zombie
    t0 = time.monotonic()
    got = prim.acquire(timeout=10)
    elapsed = time.monotonic() - t0
    assert got is True
    assert elapsed < RECOVER_WITHIN, f"recovered only after {elapsed:.2f} s"

    # it works afterwards, with clean state
    if kind == "RLock":
        assert repr(prim) == "<RLock(MainProcess, 1)>"
    elif kind == "Lock":
        assert repr(prim) == "<Lock(owner=MainProcess)>"
    else:
        assert prim.get_value() == 0
    assert prim.acquire(False) is (kind == "RLock")
    if kind == "RLock":
        prim.release()
    prim.release()
    if kind in ("Semaphore", "BoundedSemaphore"):
        assert prim.get_value() == 1
    if kind == "BoundedSemaphore":
        with pytest.raises(ValueError):  # the dead unit was given back once, not twice
            prim.release()
    assert prim.acquire(timeout=1) is True
    prim.release()
    if kind == "Lock":
        assert repr(prim) == "<Lock(owner=None)>"
    if kind == "RLock":
        assert repr(prim) == "<RLock(None, 0)>"
        with pytest.raises(AssertionError):
            prim.release()

    p.join(JOIN)
    expected = -signal.SIGKILL if how == "sigkill" else 0
    assert p.exitcode == expected


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_dead_holder_recovered_for_blocked_waiter(fastmp_ctx, procs, sig):
    """The parent is already blocked in acquire() (no timeout) when the holder dies."""
    ctx = fastmp_ctx
    lock, ready = ctx.Lock(), ctx.Event()
    p = start(procs, ctx, targets.die_holding, lock, ready, "kill", 1)
    assert ready.wait(JOIN)
    result = []
    t = threading.Thread(target=lambda: result.append(lock.acquire()), daemon=True)
    t.start()
    time.sleep(0.2)  # the thread is blocked now
    assert result == []
    t0 = time.monotonic()
    os.kill(p.pid, sig)  # SIGTERM's default action in the child: die at once, no cleanup
    t.join(10)
    assert result == [True]
    assert time.monotonic() - t0 < RECOVER_WITHIN
    lock.release()
    p.join(JOIN)
    assert p.exitcode == -sig


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["Lock", "Semaphore"])
def test_live_holder_is_not_robbed(fastmp_ctx, procs, kind):
    """Dead-owner detection must not take a lock from a holder that is alive but slow."""
    ctx = fastmp_ctx
    prim, ready, done = make(ctx, kind), ctx.Event(), ctx.Event()
    p = start(procs, ctx, targets.hold_until, prim, ready, done)
    assert ready.wait(JOIN)
    t0 = time.monotonic()
    assert prim.acquire(timeout=1.0) is False
    assert time.monotonic() - t0 >= 0.95
    done.set()
    assert prim.acquire(timeout=JOIN) is True
    prim.release()
    p.join(JOIN)
    assert p.exitcode == targets.OK
