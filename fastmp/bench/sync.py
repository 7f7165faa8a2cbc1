"""The ``sync`` workloads: Lock, RLock, Semaphore uncontended in one process; Event, Condition
and Barrier between two processes."""
from time import perf_counter

from .harness import ping_pong
from .runner import Workload, probe_of

GROUP = "sync"


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
# two processes (see harness.ping_pong)


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


def bench_event_pingpong(mp, n, start_method="fork"):
    """Event ping-pong between two processes: round trips per second."""
    ctx = mp.get_context(start_method)
    return ping_pong(ctx, n, _event_child, _event_parent, (ctx.Event(), ctx.Event()))


def bench_condition_pingpong(mp, n, start_method="fork"):
    """Condition notify ping-pong on a shared turn flag: round trips per second."""
    ctx = mp.get_context(start_method)
    cond = ctx.Condition()
    turn = ctx.RawValue("i", 0)
    return ping_pong(ctx, n, _cond_child, _cond_parent, (cond, turn))


def bench_barrier2(mp, n, start_method="fork"):
    """Barrier(2) rounds between two processes: rounds per second."""
    ctx = mp.get_context(start_method)
    return ping_pong(ctx, n, _barrier_child, _barrier_parent, (ctx.Barrier(2),))


WORKLOADS = [
    Workload("lock", bench_lock, 200_000, "acquire+release",
             "Lock acquire+release pairs via methods bound once, uncontended",
             probe=probe_of("Lock")),
    Workload("lock-method", bench_lock_method, 200_000, "acquire+release",
             "lock.acquire(); lock.release(), method looked up each call",
             probe=probe_of("Lock")),
    Workload("lock-with", bench_lock_with, 200_000, "with-block",
             "`with lock: pass`, uncontended",
             probe=probe_of("Lock")),
    Workload("rlock", bench_rlock, 200_000, "acquire+release",
             "RLock acquire+release pairs, uncontended",
             probe=probe_of("RLock")),
    Workload("semaphore", bench_semaphore, 200_000, "acquire+release",
             "Semaphore acquire+release pairs, uncontended",
             probe=probe_of("Semaphore", 1)),
    Workload("event-pingpong", bench_event_pingpong, 5_000, "round trip",
             "Event ping-pong between two processes",
             probe=probe_of("Event")),
    Workload("condition-pingpong", bench_condition_pingpong, 5_000, "round trip",
             "Condition wait/notify ping-pong on a shared turn flag, two processes",
             probe=probe_of("Condition")),
    Workload("barrier2", bench_barrier2, 5_000, "round",
             "Barrier(2) rounds between two processes",
             probe=probe_of("Barrier", 2)),
]
for _w in WORKLOADS:
    _w.group = GROUP
del _w
