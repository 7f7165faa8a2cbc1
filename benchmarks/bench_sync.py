"""Synchronization primitives: fastmp against the stdlib, in one run.

    python benchmarks/bench_sync.py                 # full run, fork start method
    python benchmarks/bench_sync.py --quick         # smoke test
    python benchmarks/bench_sync.py --only event,barrier --start-method spawn
    python benchmarks/bench_sync.py --libs multiprocessing   # the stdlib alone

Every workload is a function ``bench_X(mp, n, start_method="fork") -> ops/s``
that uses the library only through the module object ``mp`` and
``mp.get_context(start_method)``, so the same code times both libraries.  The
cross-process workloads time, in the parent, ``n`` round trips that start after
the child has said it is ready: process start-up is not measured.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import BenchTimeout, Workload, cpu_plan, main, pin_self, pinned  # noqa: E402

perf_counter = time.perf_counter

# ---------------------------------------------------------------------------
# uncontended, one process


def bench_lock(mp, n, start_method="fork"):
    """Lock.acquire() + Lock.release() pairs, uncontended."""
    lock = mp.get_context(start_method).Lock()
    acquire, release = lock.acquire, lock.release
    t0 = perf_counter()
    for _ in range(n):
        acquire()
        release()
    return n / (perf_counter() - t0)


def bench_lock_method(mp, n, start_method="fork"):
    """lock.acquire(); lock.release() as written in user code (method lookup
    on every call), uncontended."""
    lock = mp.get_context(start_method).Lock()
    t0 = perf_counter()
    for _ in range(n):
        lock.acquire()
        lock.release()
    return n / (perf_counter() - t0)


def bench_lock_with(mp, n, start_method="fork"):
    """`with lock: pass`, uncontended."""
    lock = mp.get_context(start_method).Lock()
    t0 = perf_counter()
    for _ in range(n):
        with lock:
            pass
    return n / (perf_counter() - t0)


def bench_rlock(mp, n, start_method="fork"):
    """RLock.acquire() + RLock.release() pairs, uncontended."""
    lock = mp.get_context(start_method).RLock()
    acquire, release = lock.acquire, lock.release
    t0 = perf_counter()
    for _ in range(n):
        acquire()
        release()
    return n / (perf_counter() - t0)


def bench_semaphore(mp, n, start_method="fork"):
    """Semaphore.acquire() + Semaphore.release() pairs, uncontended."""
    sem = mp.get_context(start_method).Semaphore(1)
    acquire, release = sem.acquire, sem.release
    t0 = perf_counter()
    for _ in range(n):
        acquire()
        release()
    return n / (perf_counter() - t0)


# ---------------------------------------------------------------------------
# two processes
#
# The child says "ready" on a pipe just before its loop and "done" after it;
# the parent times its own loop between the two.  Both sides run exactly n
# iterations, so every wait is matched.


def _event_child(conn, n, e1, e2):
    conn.send("ready")
    for _ in range(n):
        e1.wait()
        e1.clear()
        e2.set()
    conn.send("done")


def _event_parent(n, e1, e2):
    for _ in range(n):
        e1.set()
        e2.wait()
        e2.clear()


def _cond_child(conn, n, cond, turn):
    conn.send("ready")
    for _ in range(n):
        with cond:
            while turn.value != 1:
                cond.wait()
            turn.value = 0
            cond.notify()
    conn.send("done")


def _cond_parent(n, cond, turn):
    for _ in range(n):
        with cond:
            while turn.value != 0:
                cond.wait()
            turn.value = 1
            cond.notify()


def _barrier_child(conn, n, barrier):
    conn.send("ready")
    for _ in range(n):
        barrier.wait()
    conn.send("done")


def _barrier_parent(n, barrier):
    for _ in range(n):
        barrier.wait()


def _pinned_child(cpu, child, conn, n, *objs):
    pin_self(cpu)
    child(conn, n, *objs)


def _ping_pong(ctx, n, child, parent, objs, start_timeout=60.0):
    """Start `child(conn, n, *objs)` in a new process, wait for its "ready",
    time `parent(n, *objs)`, and return round trips per second.  The two
    processes are placed on CPUs as the pin mode says (_common.cpu_plan)."""
    parent_cpu, child_cpu = cpu_plan()
    recv_end, send_end = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_pinned_child,
                       args=(child_cpu, child, send_end, n) + tuple(objs), daemon=True)
    proc.start()
    try:
        send_end.close()
        if not recv_end.poll(start_timeout):
            raise BenchTimeout(f"child did not start within {start_timeout:.0f} s")
        msg = recv_end.recv()
        if msg != "ready":
            raise RuntimeError(f"unexpected message from the child: {msg!r}")
        with pinned(parent_cpu):
            t0 = perf_counter()
            parent(n, *objs)
            dt = perf_counter() - t0
        if recv_end.recv() != "done":
            raise RuntimeError("the child did not finish its loop")
        proc.join(start_timeout)
        if proc.exitcode != 0:
            raise RuntimeError(f"child exited with {proc.exitcode}")
        return n / dt
    except EOFError:
        proc.join(5)
        raise RuntimeError(f"child died (exit code {proc.exitcode})") from None
    finally:
        recv_end.close()
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)


def bench_event_pingpong(mp, n, start_method="fork"):
    """Event ping-pong between two processes: round trips per second."""
    ctx = mp.get_context(start_method)
    return _ping_pong(ctx, n, _event_child, _event_parent, (ctx.Event(), ctx.Event()))


def bench_condition_pingpong(mp, n, start_method="fork"):
    """Condition notify ping-pong on a shared turn flag: round trips per second."""
    ctx = mp.get_context(start_method)
    cond = ctx.Condition()
    turn = ctx.RawValue("i", 0)
    return _ping_pong(ctx, n, _cond_child, _cond_parent, (cond, turn))


def bench_barrier2(mp, n, start_method="fork"):
    """Barrier(2) rounds between two processes: rounds per second."""
    ctx = mp.get_context(start_method)
    return _ping_pong(ctx, n, _barrier_child, _barrier_parent, (ctx.Barrier(2),))


WORKLOADS = [
    Workload("lock", bench_lock, 200_000, "acquire+release",
             "Lock acquire+release pairs via methods bound once, uncontended"),
    Workload("lock-method", bench_lock_method, 200_000, "acquire+release",
             "lock.acquire(); lock.release(), method looked up each call"),
    Workload("lock-with", bench_lock_with, 200_000, "with-block",
             "`with lock: pass`, uncontended"),
    Workload("rlock", bench_rlock, 200_000, "acquire+release",
             "RLock acquire+release pairs, uncontended"),
    Workload("semaphore", bench_semaphore, 200_000, "acquire+release",
             "Semaphore acquire+release pairs, uncontended"),
    Workload("event-pingpong", bench_event_pingpong, 5_000, "round trip",
             "Event ping-pong between two processes"),
    Workload("condition-pingpong", bench_condition_pingpong, 5_000, "round trip",
             "Condition wait/notify ping-pong on a shared turn flag, two processes"),
    Workload("barrier2", bench_barrier2, 5_000, "round",
             "Barrier(2) rounds between two processes"),
]


if __name__ == "__main__":
    sys.exit(main("fastmp vs multiprocessing: synchronization primitives", WORKLOADS))
