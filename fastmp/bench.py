"""``python -m fastmp.bench``: fastmp against the stdlib ``multiprocessing``, side by side.

    python -m fastmp.bench                      # every workload, about 2 minutes on 2 cores
    python -m fastmp.bench --quick              # a smoke test, under a minute
    python -m fastmp.bench --only queue,pool --json out.json --plot out.png
    python -m fastmp.bench --list

Every workload runs for the stdlib and for fastmp in the same run, from the same parent process,
the two alternating round by round, and the table gives each one's median rate, the ratio
fastmp/stdlib (higher is better for fastmp) and the spread of the per-round ratios.  A workload
whose fastmp part is not C yet still runs: fastmp hands out the stdlib's object there, so its
ratio is about 1 and shows how noisy the machine is.  Peers, when installed (``pip install
'fastmp[bench]'``), get a column each: faster-fifo for the queue workloads, mpire and loky for
the pool workloads; a peer that is not installed is reported absent.

A *workload* is a plain function ``fn(mp, n, start_method) -> float`` that runs ``n``
operations with the library module ``mp`` (``multiprocessing`` or ``fastmp``), reached only
through ``mp`` and ``mp.get_context(start_method)``, and returns operations per second,
measured around the operations only (process start-up and hand-shakes are not timed unless
starting is what the workload measures).  A peer's version of a workload is a function
``fn(n, start_method) -> float``.  The scripts in the checkout's ``benchmarks/`` directory run
the same workloads, one group each.
"""
import argparse
import fnmatch
import importlib
import json
import math
import os
import platform
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field

__all__ = [
    "PIN_MODES", "set_pin_mode", "pin_mode", "cpu_plan", "pinned", "pin_self", "usable_cpus",
    "set_processes", "processes", "cpu_model",
    "Workload", "Lib", "Result", "BenchTimeout", "PlotError", "watchdog", "load_lib",
    "load_peer", "select", "compare", "ratios", "summary", "fmt_rate", "impl_of",
    "SYNC_WORKLOADS", "SHAREDCTYPES_WORKLOADS", "QUEUE_WORKLOADS", "POOL_WORKLOADS",
    "MISC_WORKLOADS", "WORKLOADS", "GROUPS", "PEERS",
    "run", "print_report", "plot", "main",
]

STDLIB = "multiprocessing"
FASTMP = "fastmp"
DEFAULT_LIBS = "multiprocessing,fastmp"
C_PART = "C"
NOT_C_PART = "stdlib (not C yet)"
JSON_FORMAT = 1

perf_counter = time.perf_counter


# ---------------------------------------------------------------------------
# the pieces of a run


@dataclass
class Workload:
    name: str
    fn: object                 # fn(mp, n, start_method) -> ops/s
    n: int                     # operations per round in a full run
    unit: str = "ops"          # what one operation is, for the table
    descr: str = ""
    group: str = ""            # sync, sharedctypes, queue, pool, misc
    probe: object = None       # probe(mp, ctx) -> the class fastmp hands out for this workload
    peers: dict = field(default_factory=dict)   # peer name -> fn(n, start_method) -> ops/s


@dataclass
class Lib:
    name: str                  # "multiprocessing", "fastmp", or a peer's name ("faster-fifo")
    module: object = None      # None when unavailable
    error: str = ""            # why it is unavailable
    note: str = ""             # where it was loaded from / warnings
    kind: str = "module"       # "module" (the workload runs on it) or "peer" (its own functions)
    version: str = ""


@dataclass
class Result:
    workload: str
    unit: str
    n: dict = field(default_factory=dict)        # lib -> operations per kept round
    rates: dict = field(default_factory=dict)    # lib -> [ops/s per kept round]
    errors: dict = field(default_factory=dict)   # lib -> message
    group: str = ""
    descr: str = ""


# ---------------------------------------------------------------------------
# CPU placement for two-process workloads.
#
# On a small VM a wake-up across CPUs can cost ten times one on the same CPU,
# and the scheduler moves processes between the two at will, so unpinned
# ping-pong rates jump between two modes from round to round.  Pinning makes
# the rounds comparable:
#   split  parent and child on two different CPUs (the default: the common case
#          for multiprocessing, and where spinning before sleeping can pay)
#   same   both on one CPU (every hand-off is a context switch; spinning is waste)
#   none   wherever the scheduler puts them (realistic, noisy)

PIN_MODES = ("split", "same", "none")
_pin_mode = "split"


def set_pin_mode(mode):
    global _pin_mode
    if mode not in PIN_MODES:
        raise ValueError(f"pin mode must be one of {PIN_MODES}, not {mode!r}")
    _pin_mode = mode


def pin_mode():
    return _pin_mode


def cpu_plan(mode=None):
    """(parent_cpu, child_cpu) for a two-process workload; None = unpinned.
    split falls back to none when fewer than two CPUs are usable."""
    mode = mode or _pin_mode
    if mode == "none" or not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if mode == "same":
        return cpus[0], cpus[0]
    if len(cpus) < 2:
        return None, None
    return cpus[0], cpus[1]


def pin_self(cpu):
    """Pin the calling process to one CPU (no-op for None)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


class pinned:
    """``with pinned(cpu):`` runs the block on one CPU, then restores the mask."""

    def __init__(self, cpu):
        self.cpu = cpu

    def __enter__(self):
        if self.cpu is not None:
            self._old = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {self.cpu})
        return self

    def __exit__(self, *exc):
        if self.cpu is not None:
            os.sched_setaffinity(0, self._old)
        return False


def usable_cpus():
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# Worker processes of the pool workloads and producers of the fan-in workload (--processes).
_processes = None


def set_processes(n):
    global _processes
    if n is not None and n < 1:
        raise ValueError(f"processes must be at least 1, not {n}")
    _processes = n


def processes():
    """The number of worker processes: --processes, or the usable CPUs."""
    return _processes or usable_cpus()


class BenchTimeout(Exception):
    """Raised by :func:`watchdog` when a workload round runs too long."""


class watchdog:
    """``with watchdog(seconds):`` raises BenchTimeout in the main thread
    after ``seconds`` (SIGALRM), so a hung wait does not hang the whole run.
    Both the stdlib's and fastmp's waits let signal handlers run."""

    def __init__(self, seconds):
        self.seconds = max(1, int(math.ceil(seconds)))

    def _fire(self, signum, frame):
        raise BenchTimeout(f"no progress after {self.seconds} s")

    def __enter__(self):
        self._old = signal.signal(signal.SIGALRM, self._fire)
        signal.alarm(self.seconds)
        return self

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self._old)
        return False


def _dist_version(dist):
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return ""


def load_lib(name, start_method):
    """Import a library and check that it can make a Lock under start_method.
    Never raises: an unusable library comes back with .error set."""
    lib = Lib(name)
    try:
        mod = importlib.import_module(name)
        if name != STDLIB:
            # fastmp's primitives live in fastmp.synchronize, on the C core
            importlib.import_module(name + ".synchronize")
        ctx = mod.get_context(start_method)
        lock_type = type(ctx.Lock())
    except Exception as exc:  # noqa: BLE001 - report whatever went wrong
        lib.error = f"{type(exc).__name__}: {exc}"
        return lib
    lib.module = mod
    lib.note = f"{os.path.dirname(getattr(mod, '__file__', '') or '?')}"
    if name != STDLIB and lock_type.__module__.startswith(STDLIB):
        lib.note += f"  (warning: its Lock is {lock_type.__module__}.{lock_type.__qualname__})"
    lib.version = (platform.python_version() if name == STDLIB
                   else getattr(mod, "__version__", "") or _dist_version(name))
    return lib


# Peers: name -> (import name, distribution name, what they stand in for).
PEERS = {
    "faster-fifo": ("faster_fifo", "faster-fifo", "queues"),
    "mpire": ("mpire", "mpire", "pools"),
    "loky": ("loky", "loky", "pools"),
}


def load_peer(name):
    """Import a peer library.  Never raises: an absent peer comes back with .error set."""
    import_name, dist, _ = PEERS[name]
    lib = Lib(name, kind="peer")
    try:
        mod = importlib.import_module(import_name)
    except Exception as exc:  # noqa: BLE001
        lib.error = f"{type(exc).__name__}: {exc}"
        return lib
    lib.module = mod
    lib.version = getattr(mod, "__version__", "") or _dist_version(dist)
    lib.note = os.path.dirname(getattr(mod, "__file__", "") or "?")
    return lib


def select(workloads, pattern, groups=False):
    """Workloads whose name matches PATTERN: comma-separated globs, or
    substrings when a part has no glob character.  With ``groups``, a part that
    is the name of a group (sync, queue, ...) selects that group, and only it
    ("sync" does not also pick pool-apply-async)."""
    if not pattern:
        return list(workloads)
    parts = [p.strip() for p in pattern.split(",") if p.strip()]

    group_names = {w.group for w in workloads} if groups else set()

    def hit(w):
        for p in parts:
            if p in group_names:
                if p == w.group:
                    return True
                continue
            if any(c in p for c in "*?["):
                if fnmatch.fnmatchcase(w.name, p):
                    return True
            elif p in w.name:
                return True
        return False

    return [w for w in workloads if hit(w)]


def _applies(w, lib):
    return lib.kind == "module" or lib.name in w.peers


def _one(w, lib, n, start_method, timeout):
    with watchdog(timeout):
        if lib.kind == "peer":
            return w.peers[lib.name](n, start_method)
        return w.fn(lib.module, n, start_method)


def compare(workloads, libs, *, start_method="fork", rounds=5, round_time=0.25,
            scale=1.0, timeout=120.0, log=None, progress=None):
    """Run every workload for every usable library.

    Per workload: one warm-up round per library at ``w.n * scale`` operations
    (discarded; it also sizes that library's rounds so each lasts about
    ``round_time`` seconds: a library 50 times faster runs 50 times more
    operations per round instead of a round too short to time well), then
    ``rounds`` kept rounds in which the libraries alternate and the order
    flips every round.  Round i of each library forms a pair for the spread.
    A peer runs only the workloads it has a function for.

    ``log(result)`` is called after each workload; ``progress(done, total,
    label)`` before each round.
    """
    usable = [lib for lib in libs if lib.module is not None]
    total = sum(len([lib for lib in usable if _applies(w, lib)]) * (1 + rounds)
                for w in workloads)
    done = 0

    def step(label):
        nonlocal done
        if progress:
            progress(done, total, label)
        done += 1

    results = []
    for w in workloads:
        res = Result(w.name, w.unit, group=w.group, descr=w.descr)
        mine = [lib for lib in usable if _applies(w, lib)]
        n0 = max(1, int(w.n * scale))
        for lib in mine:
            step(f"{w.name}: {lib.name} warm-up")
            try:
                warm = _one(w, lib, n0, start_method, timeout)
                res.n[lib.name] = max(min(n0, 100), int(round_time * warm))
            except Exception as exc:  # noqa: BLE001 - reported in the table
                res.errors[lib.name] = f"{type(exc).__name__}: {exc}"
        alive = [lib for lib in mine if lib.name not in res.errors]
        done += (len(mine) - len(alive)) * rounds
        for r in range(rounds):
            for lib in (alive if r % 2 == 0 else alive[::-1]):
                if lib.name in res.errors:
                    done += 1
                    continue
                step(f"{w.name}: {lib.name} round {r + 1}/{rounds}")
                try:
                    rate = _one(w, lib, res.n[lib.name], start_method, timeout)
                except Exception as exc:  # noqa: BLE001
                    res.errors[lib.name] = f"{type(exc).__name__}: {exc}"
                    continue
                res.rates.setdefault(lib.name, []).append(rate)
        results.append(res)
        if log:
            log(res)
    return results


def fmt_rate(rate):
    if rate is None:
        return "-"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if rate >= div:
            return f"{rate / div:.3g}{suffix}/s"
    return f"{rate:.3g}/s"



def ratios(res, base, other):
    """Per-round ratios other/base (rounds are paired by index)."""
    a, b = res.rates.get(base, []), res.rates.get(other, [])
    return [y / x for x, y in zip(a, b) if x > 0]


def summary(res, base, other):
    """(median base rate, median other rate, ratio of medians, min ratio,
    max ratio); None where not measured."""
    a, b = res.rates.get(base), res.rates.get(other)
    ma = statistics.median(a) if a else None
    mb = statistics.median(b) if b else None
    rs = ratios(res, base, other)
    ratio = mb / ma if ma and mb else None
    return ma, mb, ratio, (min(rs) if rs else None), (max(rs) if rs else None)


def impl_of(cls):
    """"C" when fastmp hands out its own class here (in its MRO, a fastmp class comes before
    any class of the stdlib's multiprocessing: fastmp's classes may subclass the stdlib's so
    that isinstance checks against them pass), else "stdlib (not C yet)"."""
    if not isinstance(cls, type):
        cls = type(cls)
    for c in cls.__mro__:
        m = getattr(c, "__module__", "") or ""
        if m == STDLIB or m.startswith(STDLIB + "."):
            return NOT_C_PART
        if m == FASTMP or m.startswith(FASTMP + "."):
            return C_PART
    return NOT_C_PART


# ---------------------------------------------------------------------------
# synchronization primitives (benchmarks/bench_sync.py)
#
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
    processes are placed on CPUs as the pin mode says (cpu_plan)."""
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


def _probe(factory, *args, **kwargs):
    """A probe: the class that ctx.<factory>(*args) hands out."""
    def probe(mp, ctx):
        return type(getattr(ctx, factory)(*args, **kwargs))
    probe.__qualname__ = f"probe({factory})"
    return probe


SYNC_WORKLOADS = [
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
for _w, _factory, _args in zip(SYNC_WORKLOADS,
                               ["Lock", "Lock", "Lock", "RLock", "Semaphore",
                                "Event", "Condition", "Barrier"],
                               [(), (), (), (), (1,), (), (), (2,)]):
    _w.group = "sync"
    _w.probe = _probe(_factory, *_args)


# ---------------------------------------------------------------------------
# producers: k processes that each send n/k items once the parent says "go"
#
# Each child says "ready" on its own pipe and waits for "go"; the parent times
# from the first "go" to the end of its own loop, so start-up is not timed and
# no child gets a head start.  With one producer the parent and the child are
# placed as the pin mode says; with more, the scheduler places them.


def _producer_main(cpu, child, conn, n, *objs):
    pin_self(cpu)
    conn.send("ready")
    if conn.recv() != "go":
        return
    child(n, *objs)
    conn.send("done")


def _producers(ctx, n, k, child, parent, objs, start_timeout=60.0):
    """Start k processes running `child(n // k, *objs)` after a "go", time
    `parent((n // k) * k, *objs)`, and return items per second."""
    per = max(1, n // k)
    total = per * k
    parent_cpu, child_cpu = cpu_plan() if k == 1 else (None, None)
    conns, procs = [], []
    try:
        for _ in range(k):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_producer_main,
                               args=(child_cpu, child, theirs, per) + tuple(objs), daemon=True)
            proc.start()
            theirs.close()
            conns.append(mine)
            procs.append(proc)
        for conn in conns:
            if not conn.poll(start_timeout):
                raise BenchTimeout(f"a child did not start within {start_timeout:.0f} s")
            if conn.recv() != "ready":
                raise RuntimeError("unexpected message from a child")
        with pinned(parent_cpu):
            t0 = perf_counter()
            for conn in conns:
                conn.send("go")
            parent(total, *objs)
            dt = perf_counter() - t0
        for conn in conns:
            if conn.recv() != "done":
                raise RuntimeError("a child did not finish its loop")
        for proc in procs:
            proc.join(start_timeout)
            if proc.exitcode != 0:
                raise RuntimeError(f"child exited with {proc.exitcode}")
        return total / dt
    except EOFError:
        for proc in procs:
            proc.join(5)
        codes = [proc.exitcode for proc in procs]
        raise RuntimeError(f"a child died (exit codes {codes})") from None
    finally:
        for conn in conns:
            conn.close()
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
                if proc.is_alive():
                    proc.kill()
                    proc.join(5)


# ---------------------------------------------------------------------------
# sharedctypes: Value, Array


def bench_value_locked(mp, n, start_method="fork"):
    """`with v.get_lock(): v.value += 1` on a Value('i'), one process."""
    v = mp.get_context(start_method).Value("i", 0)
    lock = v.get_lock()
    t0 = perf_counter()
    for _ in range(n):
        with lock:
            v.value += 1
    dt = perf_counter() - t0
    if v.value != n:
        raise RuntimeError(f"counted {v.value}, expected {n}")
    return n / dt


def bench_value_raw(mp, n, start_method="fork"):
    """`v.value += 1` on a Value('d', lock=False), one process."""
    v = mp.get_context(start_method).Value("d", 0.0, lock=False)
    t0 = perf_counter()
    for _ in range(n):
        v.value += 1.0
    return n / (perf_counter() - t0)


def bench_array_item(mp, n, start_method="fork"):
    """`a[i] += 1` on a locked Array('i', 1024): one read and one write, each locked."""
    a = mp.get_context(start_method).Array("i", 1024)
    t0 = perf_counter()
    for i in range(n):
        a[i & 1023] += 1
    return n / (perf_counter() - t0)


def bench_array_slice(mp, n, start_method="fork"):
    """`a[:]` of a locked Array('d', 1024): the whole array copied out to a list."""
    a = mp.get_context(start_method).Array("d", 1024)
    t0 = perf_counter()
    for _ in range(n):
        a[:]
    return n / (perf_counter() - t0)


def _locked_increments(n, v):
    lock = v.get_lock()
    for _ in range(n):
        with lock:
            v.value += 1


def _value_contended_parent(n, v):
    _locked_increments(n, v)
    raw = v.get_obj()
    deadline = perf_counter() + 60.0
    while raw.value < 2 * n:             # until the other process has added its n too
        if perf_counter() > deadline:
            raise BenchTimeout("the other process did not finish its increments")
        time.sleep(20e-6)


def bench_value_contended(mp, n, start_method="fork"):
    """Two processes each add n/2 to one locked Value('i'): increments per second, both
    together (parent and child on two CPUs with --pin split)."""
    ctx = mp.get_context(start_method)
    v = ctx.Value("i", 0)
    half = max(1, n // 2)
    rate = 2 * _producers(ctx, half, 1, _locked_increments, _value_contended_parent, (v,))
    if v.value != 2 * half:
        raise RuntimeError(f"counted {v.value}, expected {2 * half}")
    return rate


def bench_value_get_lock(mp, n, start_method="fork"):
    """`with v.get_lock(): v.value += 1` on a Value('i'), get_lock() called every time."""
    v = mp.get_context(start_method).Value("i", 0)
    t0 = perf_counter()
    for _ in range(n):
        with v.get_lock():
            v.value += 1
    dt = perf_counter() - t0
    if v.value != n:
        raise RuntimeError(f"counted {v.value}, expected {n}")
    return n / dt


def bench_array_read(mp, n, start_method="fork"):
    """`a[i]` of a locked Array('i', 1024): one element read."""
    a = mp.get_context(start_method).Array("i", 1024)
    t0 = perf_counter()
    for i in range(n):
        a[i & 1023]
    return n / (perf_counter() - t0)


def bench_atomic_add(mp, n, start_method="fork"):
    """One increment of a shared Value('q') as fast as the library allows: fastmp's lock-free
    `v.fetch_add(1)` (bound once); the stdlib has no atomics, so its locked increment
    `with lock: v.value += 1`."""
    v = mp.get_context(start_method).Value("q", 0)
    if hasattr(v, "fetch_add"):
        add = v.fetch_add
        t0 = perf_counter()
        for _ in range(n):
            add(1)
    else:
        lock = v.get_lock()
        t0 = perf_counter()
        for _ in range(n):
            with lock:
                v.value += 1
    dt = perf_counter() - t0
    if v.value != n:
        raise RuntimeError(f"counted {v.value}, expected {n}")
    return n / dt


_SLICE_N = 1_000_000


def bench_array_slice_copy(mp, n, start_method="fork"):
    """`a[:] = src`: 1M doubles from an array.array('d') into a locked Array('d', 1M)."""
    import array
    a = mp.get_context(start_method).Array("d", _SLICE_N)
    src = array.array("d", range(_SLICE_N))
    t0 = perf_counter()
    for _ in range(n):
        a[:] = src
    dt = perf_counter() - t0
    if a[_SLICE_N - 1] != _SLICE_N - 1:
        raise RuntimeError("the copy did not arrive")
    return n / dt


def bench_bytes_copy(mp, n, start_method="fork"):
    """`bytes(buf)` of 8 MB (1M doubles): a memcpy-speed reference for array-slice-copy; the
    same code for every library (mp is not used)."""
    buf = bytearray(8 * _SLICE_N)
    t0 = perf_counter()
    for _ in range(n):
        bytes(buf)
    return n / (perf_counter() - t0)


def _probe_raw(*args, **kwargs):
    """A probe for a raw (lock=False) object: a ctypes object for both libraries, so the class
    of the memory behind it (fastmp's BufferWrapper, or the stdlib's heap.BufferWrapper)."""
    def probe(mp, ctx):
        return type(ctx.Value(*args, **kwargs)._wrapper)
    probe.__qualname__ = "probe(Value._wrapper)"
    return probe


def _probe_bytes(mp, ctx):
    return bytes


SHAREDCTYPES_WORKLOADS = [
    Workload("value-locked", bench_value_locked, 200_000, "increment",
             "`with v.get_lock(): v.value += 1` on a Value('i'), one process",
             probe=_probe("Value", "i", 0)),
    Workload("value-raw", bench_value_raw, 500_000, "increment",
             "`v.value += 1.0` on a Value('d', lock=False), one process",
             probe=_probe_raw("d", 0.0, lock=False)),
    Workload("array-item", bench_array_item, 200_000, "read+write",
             "`a[i] += 1` on a locked Array('i', 1024), one process",
             probe=_probe("Array", "i", 4)),
    Workload("array-slice", bench_array_slice, 20_000, "1024-item slice",
             "`a[:]` of a locked Array('d', 1024), one process",
             probe=_probe("Array", "d", 4)),
    Workload("value-contended", bench_value_contended, 100_000, "increment",
             "two processes add to one locked Value('i'): increments of both per second",
             probe=_probe("Value", "i", 0)),
    Workload("value-get-lock", bench_value_get_lock, 200_000, "increment",
             "`with v.get_lock(): v.value += 1`, get_lock() called each time, one process",
             probe=_probe("Value", "i", 0)),
    Workload("array-read", bench_array_read, 500_000, "read",
             "`a[i]` of a locked Array('i', 1024), one process",
             probe=_probe("Array", "i", 4)),
    Workload("atomic-add", bench_atomic_add, 500_000, "increment",
             "fastmp `v.fetch_add(1)` (lock-free) vs the stdlib's `with lock: v.value += 1`",
             probe=_probe("Value", "q", 0)),
    Workload("array-slice-copy", bench_array_slice_copy, 20, "1M-double copy",
             "`a[:] = array.array('d', 1M items)` into a locked Array('d', 1M)",
             probe=_probe("Array", "d", 4)),
    Workload("bytes-copy-8mb", bench_bytes_copy, 200, "8 MB copy",
             "`bytes(bytearray(8 MB))`: the memcpy-speed reference for array-slice-copy",
             probe=_probe_bytes),
]


# ---------------------------------------------------------------------------
# queues: Queue, SimpleQueue (peer: faster-fifo)

SMALL_ITEM = ("task", 12345, 6.5)
BIG_ITEM = bytes(64 * 1024)


def _put_items(n, q, item):
    put = q.put
    for _ in range(n):
        put(item)


def _get_items(n, q, item):
    get = q.get
    for _ in range(n):
        get()


def _close_queue(q):
    close = getattr(q, "close", None)
    if close is not None:
        close()
    join_thread = getattr(q, "join_thread", None)
    if join_thread is not None:
        join_thread()


def _queue_producers(ctx, q, n, k, item):
    """k producer processes put n items in all; the parent gets them: items per second."""
    try:
        return _producers(ctx, n, k, _put_items, _get_items, (q, item))
    finally:
        _close_queue(q)


def _queue_pingpong_child(conn, n, q1, q2, item):
    conn.send("ready")
    get, put = q1.get, q2.put
    for _ in range(n):
        put(get())
    conn.send("done")


def _queue_pingpong_parent(n, q1, q2, item):
    get, put = q2.get, q1.put
    for _ in range(n):
        put(item)
        get()


def _queue_pingpong(ctx, q1, q2, n):
    try:
        return _ping_pong(ctx, n, _queue_pingpong_child, _queue_pingpong_parent,
                          (q1, q2, SMALL_ITEM))
    finally:
        _close_queue(q1)
        _close_queue(q2)


def bench_queue_throughput(mp, n, start_method="fork"):
    """One producer process puts small tuples on a Queue, the parent gets them."""
    ctx = mp.get_context(start_method)
    return _queue_producers(ctx, ctx.Queue(), n, 1, SMALL_ITEM)


def bench_queue_64k(mp, n, start_method="fork"):
    """One producer process puts 64 KiB bytes objects on a Queue, the parent gets them."""
    ctx = mp.get_context(start_method)
    return _queue_producers(ctx, ctx.Queue(), n, 1, BIG_ITEM)


def bench_queue_fanin(mp, n, start_method="fork"):
    """--processes producer processes put small tuples on one Queue, the parent gets them."""
    ctx = mp.get_context(start_method)
    return _queue_producers(ctx, ctx.Queue(), n, processes(), SMALL_ITEM)


def bench_queue_pingpong(mp, n, start_method="fork"):
    """A small tuple there and back through two Queues: round trips per second."""
    ctx = mp.get_context(start_method)
    return _queue_pingpong(ctx, ctx.Queue(), ctx.Queue(), n)


def bench_simplequeue_throughput(mp, n, start_method="fork"):
    """One producer process puts small tuples on a SimpleQueue, the parent gets them."""
    ctx = mp.get_context(start_method)
    return _queue_producers(ctx, ctx.SimpleQueue(), n, 1, SMALL_ITEM)


def _std_ctx(start_method):
    import multiprocessing
    return multiprocessing.get_context(start_method)


def _ff_queue():
    import faster_fifo
    return faster_fifo.Queue()          # 1 MB ring: room for fifteen 64 KiB messages


def ff_queue_throughput(n, start_method="fork"):
    return _queue_producers(_std_ctx(start_method), _ff_queue(), n, 1, SMALL_ITEM)


def ff_queue_64k(n, start_method="fork"):
    return _queue_producers(_std_ctx(start_method), _ff_queue(), n, 1, BIG_ITEM)


def ff_queue_fanin(n, start_method="fork"):
    return _queue_producers(_std_ctx(start_method), _ff_queue(), n, processes(), SMALL_ITEM)


def ff_queue_pingpong(n, start_method="fork"):
    return _queue_pingpong(_std_ctx(start_method), _ff_queue(), _ff_queue(), n)


# --- issue 5: get_many, 1 MiB items, fixed fan-in / fan-out, faster-fifo's README configurations

MIB_ITEM = bytes(1 << 20)
_FF_BIG_BYTES = 64 << 20        # faster-fifo ring for the 1 MiB workload (its default is 1 MB)


BATCH = 256     # items per put_many / get_many call in the batched workloads


def _batch_kw(q):
    # faster-fifo names the limit max_messages_to_get; fastmp max_items
    return ({"max_messages_to_get": BATCH} if type(q).__module__.startswith("faster_fifo")
            else {"max_items": BATCH})


def _put_items_many(n, q, item):
    """Producer side with put_many where the queue has it (fastmp, faster-fifo)."""
    put_many = getattr(q, "put_many", None)
    if put_many is None:
        return _put_items(n, q, item)
    batch = [item] * BATCH
    for _ in range(n // BATCH):
        put_many(batch)
    put_many([item] * (n % BATCH))


def _get_items_many(n, q, item):
    """Consumer side with get_many where the queue has it (fastmp, faster-fifo)."""
    get_many = getattr(q, "get_many", None)
    if get_many is None:
        return _get_items(n, q, item)
    kw = _batch_kw(q)
    got = 0
    while got < n:
        got += len(get_many(**kw))


def _queue_many(ctx, q, n, k, item):
    try:
        return _producers(ctx, n, k, _put_items_many, _get_items_many, (q, item))
    finally:
        _close_queue(q)


def _mpmc_child(conn, work, n, q, item):
    conn.send("ready")
    if conn.recv() != "go":
        return
    work(n, q, item)
    conn.send("done")


def _mpmc_put(n, q, item):
    put = q.put
    for _ in range(n):
        put(item)
    # The stdlib's put hands items to a feeder thread: flush it before reporting "done", or
    # the end markers the parent puts next could overtake them.
    _close_queue(q)


def _mpmc_get(n, q, item):
    """Get until a None; with get_many (where the queue has it) give back the Nones meant
    for the other consumers."""
    get_many = getattr(q, "get_many", None)
    if get_many is None:
        get = q.get
        while get() is not None:
            pass
        return
    kw = _batch_kw(q)
    while True:
        batch = get_many(**kw)
        stops = batch.count(None)
        if stops:
            for _ in range(stops - 1):
                q.put(None)
            return


def _mpmc(ctx, q, n, np_, nc, item, start_timeout=120.0):
    """np_ producer and nc consumer processes; items per second from "go" until every consumer
    has seen its end marker (one None each, put by the parent once the producers are done)."""
    per = max(1, n // np_)
    conns, procs = [], []
    try:
        for role, count in ((_mpmc_put, np_), (_mpmc_get, nc)):
            for _ in range(count):
                mine, theirs = ctx.Pipe()
                proc = ctx.Process(target=_mpmc_child, args=(theirs, role, per, q, item),
                                   daemon=True)
                proc.start()
                theirs.close()
                conns.append(mine)
                procs.append(proc)
        for conn in conns:
            if not conn.poll(start_timeout):
                raise BenchTimeout(f"a child did not start within {start_timeout:.0f} s")
            conn.recv()
        t0 = perf_counter()
        for conn in conns:
            conn.send("go")
        for conn in conns[:np_]:
            conn.recv()
        for _ in range(nc):
            q.put(None)
        for conn in conns[np_:]:
            conn.recv()
        dt = perf_counter() - t0
        for proc in procs:
            proc.join(start_timeout)
        return per * np_ / dt
    except EOFError:
        raise RuntimeError("a child died") from None
    finally:
        for conn in conns:
            conn.close()
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        _close_queue(q)


def bench_queue_get_many(mp, n, start_method="fork"):
    """Batched: one producer process puts small tuples with put_many, the parent takes them
    with get_many, 256 at a time (the stdlib, which has neither, with put and get)."""
    ctx = mp.get_context(start_method)
    return _queue_many(ctx, ctx.Queue(), n, 1, SMALL_ITEM)


def bench_queue_1mib(mp, n, start_method="fork"):
    """One producer process puts 1 MiB bytes objects, the parent gets them."""
    ctx = mp.get_context(start_method)
    return _queue_producers(ctx, ctx.Queue(), n, 1, MIB_ITEM)


def bench_queue_4p1c(mp, n, start_method="fork"):
    """Four producer processes put small tuples on one Queue, the parent gets them."""
    ctx = mp.get_context(start_method)
    return _queue_producers(ctx, ctx.Queue(), n, 4, SMALL_ITEM)


def bench_queue_1p4c(mp, n, start_method="fork"):
    """One producer process, four consumer processes, small tuples."""
    ctx = mp.get_context(start_method)
    return _mpmc(ctx, ctx.Queue(), n, 1, 4, SMALL_ITEM)


def ff_queue_get_many(n, start_method="fork"):
    return _queue_many(_std_ctx(start_method), _ff_queue(), n, 1, SMALL_ITEM)


def ff_queue_1mib(n, start_method="fork"):
    import faster_fifo
    return _queue_producers(_std_ctx(start_method),
                            faster_fifo.Queue(max_size_bytes=_FF_BIG_BYTES), n, 1, MIB_ITEM)


def ff_queue_4p1c(n, start_method="fork"):
    return _queue_producers(_std_ctx(start_method), _ff_queue(), n, 4, SMALL_ITEM)


def ff_queue_1p4c(n, start_method="fork"):
    return _mpmc(_std_ctx(start_method), _ff_queue(), n, 1, 4, SMALL_ITEM)


# faster-fifo's README compares producers x consumers with every consumer on get_many; here
# with the same process counts (on this 2-core machine they take turns) and fewer messages.
FF_README_CONFIGS = ((1, 1), (1, 10), (10, 1), (3, 20), (20, 3), (20, 20))


def _ff_readme_workloads():
    out = []
    for np_, nc in FF_README_CONFIGS:
        def ours(mp, n, start_method="fork", _p=np_, _c=nc):
            ctx = mp.get_context(start_method)
            return _mpmc(ctx, ctx.Queue(), n, _p, _c, SMALL_ITEM)

        def peer(n, start_method="fork", _p=np_, _c=nc):
            return _mpmc(_std_ctx(start_method), _ff_queue(), n, _p, _c, SMALL_ITEM)
        ours.__name__ = f"bench_queue_ff_{np_}p{nc}c"
        ours.__doc__ = (f"faster-fifo README configuration: {np_} producer and {nc} consumer "
                        "processes, small tuples, consumers on get_many where there is one")
        peer.__name__ = f"ff_queue_ff_{np_}p{nc}c"
        out.append(Workload(f"queue-ff-{np_}p{nc}c", ours, 100_000, "item",
                            f"{np_} producer x {nc} consumer processes (faster-fifo's README)",
                            probe=_probe_queue("Queue"), peers={"faster-fifo": peer}))
    return out


def _probe_queue(factory):
    def probe(mp, ctx):
        q = getattr(ctx, factory)()
        _close_queue(q)
        return type(q)
    return probe


QUEUE_WORKLOADS = [
    Workload("queue-throughput", bench_queue_throughput, 50_000, "item",
             "one producer process puts small tuples on a Queue, the parent gets them",
             probe=_probe_queue("Queue"), peers={"faster-fifo": ff_queue_throughput}),
    Workload("queue-64k", bench_queue_64k, 5_000, "64 KiB item",
             "the same with 64 KiB bytes objects",
             probe=_probe_queue("Queue"), peers={"faster-fifo": ff_queue_64k}),
    Workload("queue-fanin", bench_queue_fanin, 50_000, "item",
             "--processes producer processes into one Queue, the parent gets",
             probe=_probe_queue("Queue"), peers={"faster-fifo": ff_queue_fanin}),
    Workload("queue-pingpong", bench_queue_pingpong, 5_000, "round trip",
             "a small tuple there and back through two Queues, two processes",
             probe=_probe_queue("Queue"), peers={"faster-fifo": ff_queue_pingpong}),
    Workload("simplequeue-throughput", bench_simplequeue_throughput, 50_000, "item",
             "one producer process puts small tuples on a SimpleQueue, the parent gets them",
             probe=_probe_queue("SimpleQueue")),
    # issue 5
    Workload("queue-get-many", bench_queue_get_many, 200_000, "item",
             "put_many / get_many of 256 small tuples, two processes (stdlib: put / get)",
             probe=_probe_queue("Queue"), peers={"faster-fifo": ff_queue_get_many}),
    Workload("queue-1mib", bench_queue_1mib, 1_000, "1 MiB item",
             "one producer process puts 1 MiB bytes objects, the parent gets them",
             probe=_probe_queue("Queue"), peers={"faster-fifo": ff_queue_1mib}),
    Workload("queue-4p1c", bench_queue_4p1c, 100_000, "item",
             "four producer processes into one Queue, the parent gets",
             probe=_probe_queue("Queue"), peers={"faster-fifo": ff_queue_4p1c}),
    Workload("queue-1p4c", bench_queue_1p4c, 100_000, "item",
             "one producer process, four consumer processes",
             probe=_probe_queue("Queue"), peers={"faster-fifo": ff_queue_1p4c}),
] + _ff_readme_workloads()


# ---------------------------------------------------------------------------
# pools: Pool (peers: mpire's WorkerPool, loky's ProcessPoolExecutor)
#
# --processes workers.  Start-up is not timed in pool-map and pool-apply-async:
# short tasks run first until every worker has answered.  pool-start times it:
# a new pool, one task per worker, close and join.


def _work(x):
    """The pool task: x*x; a negative x sleeps -x ms and returns the worker's pid."""
    if x < 0:
        time.sleep(-x / 1000.0)
        return os.getpid()
    return x * x


def _until_all_up(run_tasks, k, timeout=60.0):
    """Run 5 ms tasks through run_tasks(list) until k different workers answered."""
    deadline = perf_counter() + timeout
    seen = set()
    while len(seen) < k:
        seen.update(run_tasks([-5] * (2 * k)))
        if perf_counter() > deadline:
            raise BenchTimeout(f"{len(seen)} of {k} workers answered in {timeout:.0f} s")


def _chunksize(n, k):
    """The stdlib Pool.map's default chunk size, given to every library alike."""
    return max(1, -(-n // (4 * k)))


def _check_squares(out, n):
    if len(out) != n or (n and out[-1] != (n - 1) * (n - 1)):
        raise RuntimeError("wrong results from the pool")


class _pool_closing:
    """close()+join() a stdlib-API pool after the block, terminate()+join() on error."""

    def __init__(self, pool):
        self.pool = pool

    def __enter__(self):
        return self.pool

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.pool.close()
        else:
            self.pool.terminate()
        self.pool.join()
        return False


def _apply_all(apply, get, xs):
    handles = [apply(x) for x in xs]
    return [get(h) for h in handles]


def bench_pool_map(mp, n, start_method="fork"):
    """pool.map(f, range(n)) of a trivial f, the stdlib's default chunk size."""
    k = processes()
    with _pool_closing(mp.get_context(start_method).Pool(k)) as pool:
        _until_all_up(lambda xs: pool.map(_work, xs, chunksize=1), k)
        t0 = perf_counter()
        out = pool.map(_work, range(n), chunksize=_chunksize(n, k))
        dt = perf_counter() - t0
    _check_squares(out, n)
    return n / dt


def bench_pool_apply_async(mp, n, start_method="fork"):
    """n pool.apply_async(f, (i,)) calls, then every result's get()."""
    k = processes()
    with _pool_closing(mp.get_context(start_method).Pool(k)) as pool:
        run = lambda xs: _apply_all(lambda x: pool.apply_async(_work, (x,)),  # noqa: E731
                                    lambda r: r.get(), xs)
        _until_all_up(run, k)
        t0 = perf_counter()
        out = run(range(n))
        dt = perf_counter() - t0
    _check_squares(out, n)
    return n / dt


def bench_pool_start(mp, n, start_method="fork"):
    """Pool(k), one task per worker, close(), join(): pools per second."""
    k = processes()
    ctx = mp.get_context(start_method)
    t0 = perf_counter()
    for _ in range(n):
        with _pool_closing(ctx.Pool(k)) as pool:
            pool.map(_work, range(k), chunksize=1)
    return n / (perf_counter() - t0)


def bench_pool_maxtasks1(mp, n, start_method="fork"):
    """Pool(k, maxtasksperchild=1).map(f, range(n), chunksize=1): every task in a worker
    of its own, so each one costs a worker's exit and its replacement's start."""
    k = processes()
    with _pool_closing(mp.get_context(start_method).Pool(k, maxtasksperchild=1)) as pool:
        t0 = perf_counter()
        out = pool.map(_work, range(n), chunksize=1)
        dt = perf_counter() - t0
    _check_squares(out, n)
    return n / dt


def bench_pool_apply(mp, n, start_method="fork"):
    """n pool.apply(f, (i,)) round trips, one after the other."""
    k = processes()
    with _pool_closing(mp.get_context(start_method).Pool(k)) as pool:
        _until_all_up(lambda xs: pool.map(_work, xs, chunksize=1), k)
        apply = pool.apply
        t0 = perf_counter()
        for i in range(n):
            apply(_work, (i,))
        dt = perf_counter() - t0
    return n / dt


def bench_pool_imap(mp, n, start_method="fork"):
    """list(pool.imap(f, range(n))): chunksize 1, one task per item."""
    k = processes()
    with _pool_closing(mp.get_context(start_method).Pool(k)) as pool:
        _until_all_up(lambda xs: pool.map(_work, xs, chunksize=1), k)
        t0 = perf_counter()
        out = list(pool.imap(_work, range(n)))
        dt = perf_counter() - t0
    _check_squares(out, n)
    return n / dt


def _executor_class(mp):
    """The library's ProcessPoolExecutor: fastmp.futures', or concurrent.futures' for the
    stdlib (its process pool is multiprocessing's)."""
    if mp.__name__ == FASTMP:
        return importlib.import_module(FASTMP + ".futures").ProcessPoolExecutor
    return importlib.import_module("concurrent.futures").ProcessPoolExecutor


def bench_executor_submit(mp, n, start_method="fork"):
    """n executor.submit(f, i).result() round trips."""
    k = processes()
    ex = _executor_class(mp)(k, mp_context=mp.get_context(start_method))
    try:
        _until_all_up(lambda xs: [f.result() for f in [ex.submit(_work, x) for x in xs]], k)
        submit = ex.submit
        t0 = perf_counter()
        for i in range(n):
            submit(_work, i).result()
        dt = perf_counter() - t0
    finally:
        ex.shutdown(wait=True)
    return n / dt


def loky_executor_submit(n, start_method="fork"):
    k = processes()
    ex = _loky_executor()
    try:
        _until_all_up(lambda xs: [f.result() for f in [ex.submit(_work, x) for x in xs]], k)
        t0 = perf_counter()
        for i in range(n):
            ex.submit(_work, i).result()
        dt = perf_counter() - t0
    finally:
        ex.shutdown(wait=True)
    return n / dt


def _mpire_pool(start_method, keep_alive=True):
    from mpire import WorkerPool
    return WorkerPool(n_jobs=processes(), start_method=start_method, keep_alive=keep_alive)


def mpire_pool_map(n, start_method="fork"):
    k = processes()
    with _mpire_pool(start_method) as pool:
        _until_all_up(lambda xs: pool.map(_work, xs, chunk_size=1), k)
        t0 = perf_counter()
        out = pool.map(_work, range(n), chunk_size=_chunksize(n, k))
        dt = perf_counter() - t0
    _check_squares(out, n)
    return n / dt


def mpire_pool_apply_async(n, start_method="fork"):
    k = processes()
    with _mpire_pool(start_method) as pool:
        run = lambda xs: _apply_all(lambda x: pool.apply_async(_work, (x,)),  # noqa: E731
                                    lambda r: r.get(), xs)
        _until_all_up(run, k)
        t0 = perf_counter()
        out = run(range(n))
        dt = perf_counter() - t0
    _check_squares(out, n)
    return n / dt


def mpire_pool_start(n, start_method="fork"):
    k = processes()
    t0 = perf_counter()
    for _ in range(n):
        with _mpire_pool(start_method, keep_alive=False) as pool:
            pool.map(_work, range(k), chunk_size=1)
    return n / (perf_counter() - t0)


def _loky_executor():
    # loky starts its workers its own way (fork+exec, "loky"), whatever --start-method says
    from loky import ProcessPoolExecutor
    return ProcessPoolExecutor(max_workers=processes())


def loky_pool_map(n, start_method="fork"):
    k = processes()
    ex = _loky_executor()
    try:
        _until_all_up(lambda xs: list(ex.map(_work, xs)), k)
        t0 = perf_counter()
        out = list(ex.map(_work, range(n), chunksize=_chunksize(n, k)))
        dt = perf_counter() - t0
    finally:
        ex.shutdown(wait=True)
    _check_squares(out, n)
    return n / dt


def loky_pool_apply_async(n, start_method="fork"):
    k = processes()
    ex = _loky_executor()
    try:
        run = lambda xs: _apply_all(lambda x: ex.submit(_work, x),  # noqa: E731
                                    lambda f: f.result(), xs)
        _until_all_up(run, k)
        t0 = perf_counter()
        out = run(range(n))
        dt = perf_counter() - t0
    finally:
        ex.shutdown(wait=True)
    _check_squares(out, n)
    return n / dt


def loky_pool_start(n, start_method="fork"):
    k = processes()
    t0 = perf_counter()
    for _ in range(n):
        ex = _loky_executor()
        try:
            list(ex.map(_work, range(k)))
        finally:
            ex.shutdown(wait=True)
    return n / (perf_counter() - t0)


def _probe_pool(mp, ctx):
    return importlib.import_module(mp.__name__ + ".pool").Pool


def _probe_executor(mp, ctx):
    return _executor_class(mp)


POOL_WORKLOADS = [
    Workload("pool-map", bench_pool_map, 100_000, "task",
             "pool.map(f, range(n)), trivial f, the stdlib's default chunk size",
             probe=_probe_pool, peers={"mpire": mpire_pool_map, "loky": loky_pool_map}),
    Workload("pool-apply-async", bench_pool_apply_async, 5_000, "task",
             "n apply_async(f, (i,)) (loky: submit), then every result",
             probe=_probe_pool,
             peers={"mpire": mpire_pool_apply_async, "loky": loky_pool_apply_async}),
    Workload("pool-start", bench_pool_start, 10, "pool",
             "start a pool of --processes workers, one task each, close and join",
             probe=_probe_pool, peers={"mpire": mpire_pool_start, "loky": loky_pool_start}),
    Workload("pool-apply", bench_pool_apply, 2_000, "round trip",
             "pool.apply(f, (i,)), one call after the other",
             probe=_probe_pool),
    Workload("pool-imap", bench_pool_imap, 50_000, "task",
             "list(pool.imap(f, range(n))), chunksize 1",
             probe=_probe_pool),
    Workload("pool-maxtasks1", bench_pool_maxtasks1, 300, "task",
             "Pool(maxtasksperchild=1).map(f, range(n), chunksize=1): a new worker per task",
             probe=_probe_pool),
    Workload("executor-submit", bench_executor_submit, 2_000, "round trip",
             "ProcessPoolExecutor: submit(f, i).result(), one after the other "
             "(stdlib: concurrent.futures')",
             probe=_probe_executor, peers={"loky": loky_executor_submit}),
]


# ---------------------------------------------------------------------------
# the rest: Pipe, Process, Manager


def _pipe_child(conn, n, a, b):
    conn.send("ready")
    send, recv = b.send, b.recv
    for _ in range(n):
        send(recv())
    conn.send("done")


def _pipe_parent(n, a, b):
    send, recv = a.send, a.recv
    for i in range(n):
        send(i)
        recv()


def bench_pipe_pingpong(mp, n, start_method="fork"):
    """conn.send(i) there and back over a duplex Pipe: round trips per second."""
    ctx = mp.get_context(start_method)
    a, b = ctx.Pipe()
    try:
        return _ping_pong(ctx, n, _pipe_child, _pipe_parent, (a, b))
    finally:
        a.close()
        b.close()


def _send_bytes(n, r, w, item):
    send_bytes = w.send_bytes
    for _ in range(n):
        send_bytes(item)


def _recv_bytes(n, r, w, item):
    recv_bytes = r.recv_bytes
    for _ in range(n):
        recv_bytes()


def bench_pipe_64k(mp, n, start_method="fork"):
    """A child sends 64 KiB messages (send_bytes) over a one-way Pipe, the parent receives."""
    ctx = mp.get_context(start_method)
    r, w = ctx.Pipe(duplex=False)
    try:
        return _producers(ctx, n, 1, _send_bytes, _recv_bytes, (r, w, BIG_ITEM))
    finally:
        r.close()
        w.close()


def _noop():
    pass


def bench_process_start(mp, n, start_method="fork"):
    """Process(target=noop).start() then join(): processes per second."""
    ctx = mp.get_context(start_method)
    t0 = perf_counter()
    for _ in range(n):
        proc = ctx.Process(target=_noop)
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"child exited with {proc.exitcode}")
    return n / (perf_counter() - t0)


def bench_manager_start(mp, n, start_method="fork"):
    """Manager() then shutdown(): managers per second."""
    ctx = mp.get_context(start_method)
    t0 = perf_counter()
    for _ in range(n):
        ctx.Manager().shutdown()
    return n / (perf_counter() - t0)


def bench_manager_dict(mp, n, start_method="fork"):
    """d[key] = i on a Manager().dict() proxy: one round trip to the manager each.  The
    manager's process and the parent are placed like the two processes of a ping-pong
    (the manager inherits the CPU mask it is started with)."""
    parent_cpu, child_cpu = cpu_plan()
    with pinned(child_cpu):
        manager = mp.get_context(start_method).Manager()
    try:
        d = manager.dict()
        with pinned(parent_cpu):
            t0 = perf_counter()
            for i in range(n):
                d[i & 63] = i
            dt = perf_counter() - t0
    finally:
        manager.shutdown()
    return n / dt


def _probe_pipe(mp, ctx):
    a, b = ctx.Pipe()
    a.close()
    b.close()
    return type(a)


def _probe_manager(mp, ctx):
    return importlib.import_module(mp.__name__ + ".managers").SyncManager


MISC_WORKLOADS = [
    Workload("pipe-pingpong", bench_pipe_pingpong, 10_000, "round trip",
             "conn.send(i) there and back over a duplex Pipe, two processes",
             probe=_probe_pipe),
    Workload("pipe-64k", bench_pipe_64k, 5_000, "64 KiB message",
             "send_bytes of 64 KiB over a one-way Pipe, child to parent",
             probe=_probe_pipe),
    Workload("process-start", bench_process_start, 50, "process",
             "Process(target=noop): start() and join()",
             probe=lambda mp, ctx: ctx.Process),
    Workload("manager-start", bench_manager_start, 10, "manager",
             "Manager() and shutdown()",
             probe=_probe_manager),
    Workload("manager-dict", bench_manager_dict, 20_000, "set",
             "d[k] = i on a Manager().dict() proxy",
             probe=_probe_manager),
]

for _group, _ws in (("sharedctypes", SHAREDCTYPES_WORKLOADS), ("queue", QUEUE_WORKLOADS),
                    ("pool", POOL_WORKLOADS), ("misc", MISC_WORKLOADS)):
    for _w in _ws:
        _w.group = _group
del _group, _ws, _w, _factory, _args

GROUPS = ("sync", "sharedctypes", "queue", "pool", "misc")
WORKLOADS = (SYNC_WORKLOADS + SHAREDCTYPES_WORKLOADS + QUEUE_WORKLOADS + POOL_WORKLOADS
             + MISC_WORKLOADS)


# ---------------------------------------------------------------------------
# a whole run: the report (what --json writes), the table, the plot


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or ""


def _lib_entry(lib):
    kind = ("stdlib" if lib.name == STDLIB else "fastmp" if lib.name == FASTMP
            else lib.kind)
    entry = {"name": lib.name, "kind": kind, "available": lib.module is not None,
             "version": lib.version, "location": lib.note, "error": lib.error}
    if lib.kind == "peer":
        entry["for"] = PEERS[lib.name][2]
    return entry


def _fastmp_part(w, fastmp_lib, start_method):
    if fastmp_lib is None or fastmp_lib.module is None or w.probe is None:
        return "?"
    try:
        return impl_of(w.probe(fastmp_lib.module, fastmp_lib.module.get_context(start_method)))
    except Exception:  # noqa: BLE001 - the column says "?"
        return "?"


def _finite(x):
    return x is not None and math.isfinite(x)


def run(workloads, *, start_method="fork", rounds=5, round_time=0.25, scale=1.0,
        peers=True, timeout=120.0, progress=None):
    """Time ``workloads`` for the stdlib, fastmp and (with ``peers``) the peers that apply;
    return the report: a dict of plain values, what ``--json`` writes."""
    t_start = time.time()
    libs = [load_lib(STDLIB, start_method), load_lib(FASTMP, start_method)]
    wanted = [p for p in PEERS if any(p in w.peers for w in workloads)] if peers else []
    libs += [load_peer(p) for p in wanted]
    fastmp_lib = libs[1]
    t0 = perf_counter()
    results = compare(workloads, libs, start_method=start_method, rounds=rounds,
                      round_time=round_time, scale=scale, timeout=timeout,
                      progress=progress)
    elapsed = perf_counter() - t0
    rows = []
    by_name = {w.name: w for w in workloads}
    for res in results:
        w = by_name[res.workload]
        row = {"workload": res.workload, "group": res.group, "unit": res.unit,
               "descr": res.descr, "fastmp_part": _fastmp_part(w, fastmp_lib, start_method),
               "peers": [p for p in wanted if p in w.peers],
               "n": res.n, "rates": res.rates, "errors": res.errors,
               "median": {}, "ratio": {}, "spread": {}}
        for name, rates in res.rates.items():
            row["median"][name] = statistics.median(rates)
            if name == STDLIB:
                continue
            _, _, ratio, lo, hi = summary(res, STDLIB, name)
            if _finite(ratio):
                row["ratio"][name] = ratio
                row["spread"][name] = [lo, hi]
        rows.append(row)
    return {
        "format": JSON_FORMAT,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "system": f"{platform.system()} {platform.machine()}",
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable_cpus(),
        "start_method": start_method,
        "pin": _pin_mode,
        "processes": processes(),
        "rounds": rounds,
        "round_time": round_time,
        "scale": scale,
        "peers_run": bool(peers),
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t_start)),
        "elapsed": elapsed,
        "libs": [_lib_entry(lib) for lib in libs],
        "results": rows,
        "failed": any(r["errors"] for r in rows),
    }


def _ratio_text(x):
    if x is None:
        return "-"
    if x >= 100:
        return f"{x:.0f}x"
    if x >= 10:
        return f"{x:.1f}x"
    return f"{x:.2f}x"


def _spread_text(pair):
    if not pair:
        return "-"
    return f"{_ratio_text(pair[0])[:-1]}..{_ratio_text(pair[1])}"


def _markdown_table(rep, peer_cols, libs):
    head = ["Workload", "unit", "fastmp part", "stdlib", "fastmp", "fastmp / stdlib", "spread"]
    head += peer_cols
    lines = ["| " + " | ".join(head) + " |",
             "| " + " | ".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + " |"]
    for row in rep["results"]:
        def rate(name):
            if name in row["errors"]:
                return "FAILED"
            med = row["median"].get(name)
            return fmt_rate(med) if med is not None else "-"
        ratio = row["ratio"].get(FASTMP)
        ratio_text = _ratio_text(ratio)
        if row["fastmp_part"] == C_PART and ratio is not None:
            ratio_text = f"**{ratio_text}**"
        cells = [f"`{row['workload']}`", row["unit"], row["fastmp_part"], rate(STDLIB),
                 rate(FASTMP), ratio_text, _spread_text(row["spread"].get(FASTMP))]
        for peer in peer_cols:
            if peer not in row["peers"]:
                cells.append("")
            elif not libs[peer]["available"]:
                cells.append("absent")
            elif peer in row["errors"]:
                cells.append("FAILED")
            else:
                cells.append(f"{rate(peer)} ({_ratio_text(row['ratio'].get(peer))})")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def print_report(rep, file=sys.stdout, command=None, markdown=False):
    """The table, with the machine, the method and the libraries above it; with
    ``markdown``, the table as Markdown (for a README)."""
    p = lambda *a: print(*a, file=file)  # noqa: E731
    libs = {lib["name"]: lib for lib in rep["libs"]}
    p("== fastmp against the stdlib multiprocessing, side by side")
    if command:
        p(f"command: {command}")
    cpu = f", {rep['cpu']}" if rep.get("cpu") else ""
    p(f"python {rep['python']} ({rep['implementation']}) on {rep['system']}{cpu}: "
      f"{rep['cores']} cores ({rep['usable_cores']} usable); run at {rep['started']}")
    p(f"start method: {rep['start_method']}; per library a discarded warm-up, then "
      f"{rep['rounds']} rounds of about {rep['round_time']:g} s, libraries alternating, "
      f"order flipped every round; rate = median of the rounds")
    p(f"two-process workloads: --pin {rep['pin']}; pools and queue-fanin: "
      f"--processes {rep['processes']}")
    for lib in rep["libs"]:
        name = lib["name"]
        if lib["available"]:
            what = f" (for {lib['for']})" if lib.get("for") else ""
            p(f"  {name:16s} {lib['version'] or '?':10s} {lib['location']}{what}")
        elif lib["kind"] == "peer":
            p(f"  {name:16s} absent ({lib['error']}); for {lib['for']}: "
              f"pip install {PEERS[name][1]}  (or: pip install 'fastmp[bench]')")
        else:
            p(f"  {name:16s} UNAVAILABLE: {lib['error']}")
    if not rep.get("peers_run", True):
        p("  peers: not run (--no-peers)")
    p("")

    peer_cols = [lib["name"] for lib in rep["libs"] if lib["kind"] == "peer"]
    if markdown:
        for line in _markdown_table(rep, peer_cols, libs):
            p(line)
        p("")
        p(f"({rep['elapsed']:.1f} s)")
        file.flush()
        return
    head = (f"{'workload':22s} {'unit':16s} {'fastmp part':18s} {'stdlib':>9s} "
            f"{'fastmp':>9s} {'fastmp/stdlib':>13s} {'spread':>13s}")
    for peer in peer_cols:
        head += f"  {peer:>16s}"
    p(head)
    p("-" * len(head))

    def cell(row, name):
        if name in row["errors"]:
            return "FAILED"
        med = row["median"].get(name)
        return fmt_rate(med) if med is not None else "-"

    for row in rep["results"]:
        fm_ratio = row["ratio"].get(FASTMP)
        line = (f"{row['workload']:22s} {row['unit']:16s} {row['fastmp_part']:18s} "
                f"{cell(row, STDLIB):>9s} {cell(row, FASTMP):>9s} "
                f"{_ratio_text(fm_ratio) if FASTMP not in row['errors'] else 'FAILED':>13s} "
                f"{_spread_text(row['spread'].get(FASTMP)):>13s}")
        for peer in peer_cols:
            if peer not in row["peers"]:
                text = ""
            elif not libs[peer]["available"]:
                text = "absent"
            elif peer in row["errors"]:
                text = "FAILED"
            else:
                text = f"{cell(row, peer)} {_ratio_text(row['ratio'].get(peer))}"
            line += f"  {text:>16s}"
        p(line.rstrip())
    for row in rep["results"]:
        for name, msg in row["errors"].items():
            p(f"  {row['workload']}: {name} failed: {msg}")
    p("")
    p("rates are per second, each the median of the rounds; fastmp/stdlib = ratio of the "
      "medians (higher is")
    p("better for fastmp); spread = lowest..highest ratio of paired rounds (a wide spread "
      "means a noisy machine);")
    p("fastmp part: C = fastmp's own C object; stdlib (not C yet) = fastmp hands out the "
      "stdlib's object,")
    p("so the ratio is about 1 and shows the noise; a peer's column is its rate and its "
      "ratio to the stdlib.")
    p(f"({rep['elapsed']:.1f} s)")
    file.flush()


class PlotError(RuntimeError):
    """--plot cannot be done (matplotlib missing)."""


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotError(f"--plot needs matplotlib, which does not import here ({exc}); "
                        f"install it with `pip install matplotlib` "
                        f"or `pip install 'fastmp[bench]'`") from None
    return plt


def plot(rep, path):
    """A horizontal bar chart of the ratios to the stdlib, log scale, to ``path``: per
    workload one bar for fastmp and one per peer that ran it, from 1x to the ratio, with the
    spread of the rounds as an error bar."""
    plt = _pyplot()
    from matplotlib.patches import Patch
    rows = [r for r in rep["results"] if r["ratio"]]
    if not rows:
        raise PlotError("nothing to plot: no workload has a ratio")
    peers = [lib["name"] for lib in rep["libs"]
             if lib["kind"] == "peer" and lib["available"]]
    series = [FASTMP] + [p for p in peers if any(p in r["ratio"] for r in rows)]
    colors = {"faster-fifo": "#e69f00", "mpire": "#009e73", "loky": "#cc79a7"}
    c_color, not_c_color = "#0b5394", "#a0a0a0"
    bar, gap = 0.32, 0.4
    # lay the rows out top to bottom; a row is as tall as the bars it has
    layout, y = [], 0.0
    for row in rows:
        names = [name for name in series if name in row["ratio"]]
        layout.append((row, names, y))
        y += len(names) * bar + gap
    total = y
    fig, ax = plt.subplots(figsize=(10, 1.4 + 0.42 * total))
    values, ticks, labels = [], [], []
    prev_group = None
    for row, names, top in layout:
        if prev_group is not None and row["group"] != prev_group:
            ax.axhline(total - (top - gap / 2), color="#dddddd", linewidth=0.8)
        prev_group = row["group"]
        centre = total - (top + len(names) * bar / 2)
        ticks.append(centre)
        labels.append(row["workload"])
        for i, name in enumerate(names):
            ratio = row["ratio"][name]
            lo, hi = row["spread"].get(name, [ratio, ratio])
            values += [ratio, lo, hi]
            yb = total - (top + (i + 0.5) * bar)
            if name == FASTMP:
                color = c_color if row["fastmp_part"] == C_PART else not_c_color
            else:
                color = colors.get(name, "#555555")
            ax.barh(yb, ratio - 1, left=1, height=bar * 0.9, color=color,
                    xerr=[[max(0.0, ratio - lo)], [max(0.0, hi - ratio)]],
                    error_kw={"elinewidth": 0.7, "capsize": 1.5, "ecolor": "#444444"})
            if ratio >= 1:
                ax.text(max(ratio, hi) * 1.06, yb, _ratio_text(ratio), va="center",
                        ha="left", fontsize=7)
            else:
                ax.text(min(ratio, lo) / 1.06, yb, _ratio_text(ratio), va="center",
                        ha="right", fontsize=7)
    ax.set_xscale("log")
    ax.set_xlim(min(0.5, min(values) / 3), max(2.0, max(values) * 4))
    ax.set_ylim(gap / 2, total + gap / 2)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels, fontsize=8)
    ax.tick_params(axis="y", length=0)
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda x, _: f"{x:g}x"))
    ax.set_xlabel("rate / stdlib multiprocessing rate (log scale; right of 1x: faster "
                  "than the stdlib)")
    ax.grid(axis="x", which="major", linewidth=0.4, alpha=0.5)
    handles = [Patch(color=c_color, label="fastmp (its C object)"),
               Patch(color=not_c_color, label="fastmp (the stdlib's object: not C yet)")]
    handles += [Patch(color=colors.get(p, "#555555"), label=p) for p in series[1:]]
    ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.95)
    cpu = f" ({rep['cpu']})" if rep.get("cpu") else ""
    ax.set_title(f"python -m fastmp.bench: Python {rep['python']}, {rep['cores']} cores{cpu}, "
                 f"{rep['start_method']}, --pin {rep['pin']}, --processes {rep['processes']}\n"
                 f"median of {rep['rounds']} rounds; error bars span the lowest..highest "
                 f"per-round ratio", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------
# the command line


class _Progress:
    """One line on stderr, rewritten in place; only when stderr is a terminal."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.on = hasattr(stream, "isatty") and stream.isatty()
        self.t0 = perf_counter()
        self.width = 0

    def __call__(self, done, total, label):
        if not self.on:
            return
        pct = 100 * done // max(1, total)
        text = f"[{pct:3d}%  {perf_counter() - self.t0:5.0f} s] {label}"
        self.stream.write("\r" + text.ljust(self.width))
        self.width = len(text)
        self.stream.flush()

    def clear(self):
        if self.on and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m fastmp.bench",
        description="fastmp against the stdlib multiprocessing (and peers, when installed), "
                    "side by side: every workload for every library in one run, rounds "
                    "alternating; the table gives the medians and the ratios.")
    parser.add_argument("--quick", action="store_true",
                        help="a fraction of the work: 3 short rounds, small sizes (under a "
                             "minute on 2 cores; a smoke test, not a measurement)")
    parser.add_argument("--only", metavar="PATTERN",
                        help="only the workloads matching PATTERN: comma-separated "
                             "substrings, globs, or group names (" + ", ".join(GROUPS) + ")")
    parser.add_argument("--json", metavar="FILE", help="also write the results to FILE as JSON")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="also draw the ratios as a bar chart, log scale (needs matplotlib)")
    parser.add_argument("--processes", metavar="N", type=int, default=None,
                        help="worker processes for the pools and producers for queue-fanin "
                             "(default: the usable CPUs)")
    parser.add_argument("--start-method", default="fork",
                        choices=["fork", "spawn", "forkserver"],
                        help="start method of the contexts and child processes (default: fork)")
    parser.add_argument("--pin", choices=PIN_MODES, default="split",
                        help="CPUs of the two processes in two-process workloads: split = two "
                             "different CPUs (default), same = one CPU, none = unpinned")
    parser.add_argument("--rounds", type=int, default=None,
                        help="kept rounds per library (default 5, 3 with --quick)")
    parser.add_argument("--no-peers", action="store_true",
                        help="leave out faster-fifo, mpire and loky even when installed")
    parser.add_argument("--from-json", metavar="FILE",
                        help="run nothing: print the table of a saved --json FILE "
                             "(and --plot it)")
    parser.add_argument("--markdown", action="store_true",
                        help="print the table as Markdown (as in the README)")
    parser.add_argument("--list", action="store_true", help="list the workloads and exit")
    # For tests: scale the work further down (a fraction of --quick's sizes and round time).
    parser.add_argument("--scale", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=120.0, help=argparse.SUPPRESS)
    return parser


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    if args.list:
        for w in WORKLOADS:
            peers = f"  [peers: {', '.join(w.peers)}]" if w.peers else ""
            print(f"{w.group:13s} {w.name:24s} {w.descr}{peers}")
        return 0
    if args.plot:
        try:
            _pyplot()
        except PlotError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.from_json:
        with open(args.from_json) as f:
            rep = json.load(f)
        print_report(rep, command=rep.get("command"), markdown=args.markdown)
        if args.plot:
            plot(rep, args.plot)
            print(f"plot: {args.plot}")
        return 1 if rep.get("failed") else 0

    chosen = select(WORKLOADS, args.only, groups=True)
    if not chosen:
        parser.error(f"no workload matches {args.only!r} (see --list)")
    rounds = args.rounds or (3 if args.quick else 5)
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.processes is not None and args.processes < 1:
        parser.error("--processes must be at least 1")
    scale, round_time = (0.1, 0.03) if args.quick else (1.0, 0.25)
    if args.scale:
        scale, round_time = scale * args.scale, round_time * args.scale
    set_pin_mode(args.pin)
    set_processes(args.processes)

    fastmp_lib = load_lib(FASTMP, args.start_method)
    if fastmp_lib.module is None:
        print(f"error: fastmp is not usable here: {fastmp_lib.error}\n"
              f"(install it with `pip install .`, or build in place with "
              f"`python setup.py build_ext --inplace` and set PYTHONPATH to the checkout)",
              file=sys.stderr)
        return 2

    progress = _Progress()
    try:
        rep = run(chosen, start_method=args.start_method, rounds=rounds,
                  round_time=round_time, scale=scale, peers=not args.no_peers,
                  timeout=args.timeout, progress=progress)
    finally:
        progress.clear()
    rep["quick"] = bool(args.quick)
    rep["command"] = " ".join(["python -m fastmp.bench"] + list(
        sys.argv[1:] if argv is None else argv))
    print_report(rep, command=rep["command"], markdown=args.markdown)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rep, f, indent=1)
            f.write("\n")
    if args.plot:
        plot(rep, args.plot)
        print(f"plot: {args.plot}")
    return 1 if rep["failed"] else 0


def _skip_uncompiled_source_tree():
    """`python -m fastmp.bench` run from the root of a checkout: `-m` puts the current
    directory first on sys.path, so `fastmp` is the source tree, which has no compiled _core
    unless built in place.  Then use the installed fastmp instead, if there is one, and say so.
    (Nothing of the source tree's fastmp has registered anything yet: only its pure-Python
    package modules were imported.)"""
    try:
        importlib.import_module("fastmp._core")
        return
    except ImportError:
        pass
    tree = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not sys.path or os.path.abspath(sys.path[0] or os.curdir) != tree:
        return
    saved_path = list(sys.path)
    saved_modules = {k: v for k, v in sys.modules.items()
                     if k == "fastmp" or k.startswith("fastmp.")}
    del sys.path[0]
    for k in saved_modules:
        del sys.modules[k]
    try:
        importlib.import_module("fastmp._core")
    except ImportError:
        sys.path[:] = saved_path
        for k in [k for k in sys.modules if k == "fastmp" or k.startswith("fastmp.")]:
            del sys.modules[k]
        sys.modules.update(saved_modules)
        return
    where = os.path.dirname(sys.modules["fastmp"].__file__)
    print(f"note: {os.path.join(tree, 'fastmp')} (the current directory's) has no compiled "
          f"_core: timing the installed fastmp, {where}", file=sys.stderr)


if __name__ == "__main__":
    _skip_uncompiled_source_tree()
    # Run the module under its own name, so that the functions that child processes run
    # pickle as fastmp.bench.<name> (importable in a spawned child), not __main__.<name>.
    from fastmp.bench import main as _main
    sys.exit(_main())
