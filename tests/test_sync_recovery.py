"""fastmp only: a process that dies holding a lock does not hang everyone else.

The stdlib hangs in every test here (a SemLock held by a dead process is never given back),
so there is no stdlib param.  fastmp detects the dead owner and the others recover (docs/reliability.md).
"""
import os
import signal
import threading
import time

import pytest

import _sync_targets as targets
from conftest import start

JOIN = 30.0
RECOVER_WITHIN = 5.0   # the acquire below allows 10 s; recovery must come well before


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


# ---------------------------------------------------------------- a killed Condition waiter

@pytest.mark.timeout(120)
def test_killed_waiter_does_not_swallow_notify(ctx, procs):
    """A process waiting in Condition.wait() is SIGKILLed; notify() must still wake the
    live waiter.  The stdlib does (its notify releases a semaphore that only a live waiter
    can take).  fastmp's notify goes to the oldest ticket, the dead one's: the live waiter
    finds that notification unclaimed at the end of a wait slice and takes it over.

    (The stdlib is also left with the dead waiter counted as asleep: its next notify() with
    nobody waiting blocks forever on the dead waiter's acknowledgement; fastmp's returns.)"""
    cond, ready, done = ctx.Condition(), ctx.Semaphore(0), ctx.Semaphore(0)
    woken = ctx.Value("i", 0)
    victim = start(procs, ctx, targets.cond_waiter, cond, ready, woken, done)
    assert ready.acquire(timeout=JOIN)
    with cond:  # the victim released the lock: it is in wait()
        pass
    live = start(procs, ctx, targets.cond_waiter, cond, ready, woken, done)
    assert ready.acquire(timeout=JOIN)
    with cond:
        pass
    time.sleep(0.05)  # both asleep
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(JOIN)
    assert victim.exitcode == -signal.SIGKILL

    t0 = time.monotonic()
    with cond:
        cond.notify()
    assert done.acquire(timeout=5), "notify() woke nobody: the killed waiter swallowed it"
    elapsed = time.monotonic() - t0
    live.join(JOIN)
    assert live.exitcode == targets.OK
    assert woken.value == 1
    assert elapsed < 2.0, f"woken after {elapsed:.2f} s"
    if "fastmp" in type(ctx).__module__:
        t0 = time.monotonic()
        with cond:
            cond.notify()  # nobody waits: returns at once
            cond.notify_all()
        assert time.monotonic() - t0 < 1.0


@pytest.mark.timeout(120)
def test_killed_waiters_notify_n_wakes_n_live(fastmp_ctx, procs):
    """notify(2) with two dead waiters first in line wakes the two live ones; a waiter that
    starts waiting after the notify is not woken by it."""
    ctx = fastmp_ctx
    cond, ready, done = ctx.Condition(), ctx.Semaphore(0), ctx.Semaphore(0)
    woken = ctx.Value("i", 0)
    waiters = []
    for _ in range(4):  # two to kill, then two live ones, in this order
        waiters.append(start(procs, ctx, targets.cond_waiter, cond, ready, woken, done))
        assert ready.acquire(timeout=JOIN)
        with cond:
            pass
    time.sleep(0.05)
    for p in waiters[:2]:
        os.kill(p.pid, signal.SIGKILL)
    with cond:
        cond.notify(2)
    late = start(procs, ctx, targets.cond_waiter, cond, ready, woken, done)
    assert ready.acquire(timeout=JOIN)
    for _ in range(2):
        assert done.acquire(timeout=5)
    assert woken.value == 2
    for p in waiters[2:]:
        p.join(JOIN)
        assert p.exitcode == targets.OK
    assert not done.acquire(timeout=0.5)  # the late waiter still waits
    with cond:
        cond.notify()
    assert done.acquire(timeout=5)
    late.join(JOIN)
    assert late.exitcode == targets.OK
    assert woken.value == 3


# ---------------------------------------------------------------- pid reuse

# Run as init of a new pid namespace with its own /proc: a child takes the primitive and dies
# holding it; ns_last_pid makes the next fork get its pid (a live, unrelated process); the
# primitive must still be recovered.
_PID_REUSE_SCRIPT = r"""
import os, sys, time
import fastmp
ctx = fastmp.get_context("fork")
kind = sys.argv[1]
prim = getattr(ctx, kind)(1) if kind.endswith("Semaphore") else getattr(ctx, kind)()

def hold():
    prim.acquire()
    os._exit(0)

p = ctx.Process(target=hold)
p.start()
p.join()
assert p.exitcode == 0, p.exitcode
time.sleep(0.05)  # a few clock ticks: the start times differ
with open("/proc/sys/kernel/ns_last_pid", "w") as f:
    f.write(str(p.pid - 1))
r = os.fork()
if r == 0:
    time.sleep(30)
    os._exit(0)
try:
    if r != p.pid:
        print("SKIP: pid", p.pid, "did not come round (got %d)" % r)
        sys.exit(77)
    t0 = time.monotonic()
    got = prim.acquire(timeout=10)
    print("RESULT", got, round(time.monotonic() - t0, 3))
    if got:
        prim.release()
    print("SEGMENT", prim._fm_state()[0])
finally:
    os.kill(r, 9)
    os.waitpid(r, 0)
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["Lock", "RLock", "Semaphore", "BoundedSemaphore", "Condition"])
def test_dead_holder_recovered_after_pid_reuse(kind):
    """Once a dead holder's pid names a live unrelated process, the holder is still known to
    be gone: it is recorded by pid and start time, which the new process does not share."""
    import shutil
    import subprocess
    import sys
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1): a new pid namespace to make a pid come round")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.realpath(
            __import__("fastmp").__file__)))] +
        [x for x in env.get("PYTHONPATH", "").split(os.pathsep) if x])
    r = subprocess.run(["unshare", "-p", "-f", "--mount-proc", sys.executable, "-c",
                        _PID_REUSE_SCRIPT, kind],
                       env=env, capture_output=True, text=True, timeout=90,
                       cwd=os.path.dirname(os.path.abspath(__file__)))
    if r.returncode == 77 or "unshare failed" in r.stderr or "unshare:" in r.stderr:
        pytest.skip(f"cannot arrange pid reuse here: {r.stdout.strip()} {r.stderr.strip()}")
    assert r.returncode == 0, r.stdout + r.stderr
    words = r.stdout.split()
    assert words[:2] == ["RESULT", "True"], r.stdout + r.stderr
    assert float(words[2]) < RECOVER_WITHIN
    # and the namespace's end (every process in it killed) left nothing in /dev/shm
    assert words[3] == "SEGMENT"
    assert not os.path.exists("/dev/shm/" + words[4].lstrip("/"))
