"""The ``sharedctypes`` workloads: Value and Array, locked and raw, in one process and two;
fastmp's atomic add against the stdlib's locked increment; copies of a large Array."""
import array
import time
from time import perf_counter

from .harness import producers
from .runner import BenchTimeout, Workload, probe_of

GROUP = "sharedctypes"


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
    rate = 2 * producers(ctx, half, 1, _locked_increments, _value_contended_parent, (v,))
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


WORKLOADS = [
    Workload("value-locked", bench_value_locked, 200_000, "increment",
             "`with v.get_lock(): v.value += 1` on a Value('i'), one process",
             probe=probe_of("Value", "i", 0)),
    Workload("value-raw", bench_value_raw, 500_000, "increment",
             "`v.value += 1.0` on a Value('d', lock=False), one process",
             probe=_probe_raw("d", 0.0, lock=False)),
    Workload("array-item", bench_array_item, 200_000, "read+write",
             "`a[i] += 1` on a locked Array('i', 1024), one process",
             probe=probe_of("Array", "i", 4)),
    Workload("array-slice", bench_array_slice, 20_000, "1024-item slice",
             "`a[:]` of a locked Array('d', 1024), one process",
             probe=probe_of("Array", "d", 4)),
    Workload("value-contended", bench_value_contended, 100_000, "increment",
             "two processes add to one locked Value('i'): increments of both per second",
             probe=probe_of("Value", "i", 0)),
    Workload("value-get-lock", bench_value_get_lock, 200_000, "increment",
             "`with v.get_lock(): v.value += 1`, get_lock() called each time, one process",
             probe=probe_of("Value", "i", 0)),
    Workload("array-read", bench_array_read, 500_000, "read",
             "`a[i]` of a locked Array('i', 1024), one process",
             probe=probe_of("Array", "i", 4)),
    Workload("atomic-add", bench_atomic_add, 500_000, "increment",
             "fastmp `v.fetch_add(1)` (lock-free) vs the stdlib's `with lock: v.value += 1`",
             probe=probe_of("Value", "q", 0)),
    Workload("array-slice-copy", bench_array_slice_copy, 20, "1M-double copy",
             "`a[:] = array.array('d', 1M items)` into a locked Array('d', 1M)",
             probe=probe_of("Array", "d", 4)),
    Workload("bytes-copy-8mb", bench_bytes_copy, 200, "8 MB copy",
             "`bytes(bytearray(8 MB))`: the memcpy-speed reference for array-slice-copy",
             probe=_probe_bytes),
]


for _w in WORKLOADS:
    _w.group = GROUP
del _w
