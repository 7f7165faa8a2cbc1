"""The ``pool`` workloads: Pool and ProcessPoolExecutor with ``--processes`` workers; mpire's
WorkerPool and loky's ProcessPoolExecutor as peers.

Start-up is not timed in pool-map and pool-apply-async: short tasks run first until every worker
has answered.  pool-start times it: a new pool, one task per worker, close and join.
"""
import importlib
import os
import time
from time import perf_counter

from .placement import processes
from .runner import FASTMP, BenchTimeout, Workload

GROUP = "pool"


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


MIB_ITEMS_PER_MAP = 64


def _mib_items(k):
    """k different 1 MiB bytes objects (equal objects would be pickled once per chunk)."""
    base = bytes(range(256)) * 4096
    return [i.to_bytes(8, "little") + base[8:] for i in range(k)]


def _echo(b):
    """The task of pool-map-1mib: the item itself, back to the parent."""
    return b


def bench_pool_map_1mib(mp, n, start_method="fork"):
    """pool.map(f, items) of 64 different 1 MiB bytes items, f returning its item (1 MiB
    each way per item), the stdlib's default chunk size; repeated until n items ran."""
    k = processes()
    items = _mib_items(min(n, MIB_ITEMS_PER_MAP))
    with _pool_closing(mp.get_context(start_method).Pool(k)) as pool:
        _until_all_up(lambda xs: pool.map(_work, xs, chunksize=1), k)
        done, dt = 0, 0.0
        while done < n:
            batch = items[:n - done]
            t0 = perf_counter()
            out = pool.map(_echo, batch, chunksize=_chunksize(len(batch), k))
            dt += perf_counter() - t0
            if out != batch:
                raise RuntimeError("wrong results from the pool")
            done += len(batch)
            del out
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


def _fresh_forkserver():
    """Stop the forkserver (shared by both libraries in one run) and give it back its default
    preload: the next pool starts its own, as it would in a program that uses only its
    library.  What that forkserver preloads is then up to the library, and each worker it
    forks starts from there."""
    from multiprocessing import forkserver
    server = forkserver._forkserver
    stop = getattr(server, "_stop", None)
    if stop is not None:
        stop()
        server._preload_modules = ["__main__"]


def bench_pool_maxtasks1(mp, n, start_method="fork"):
    """Pool(k, maxtasksperchild=1).map(f, range(n), chunksize=1): every task in a worker
    of its own, so each one costs a worker's exit and its replacement's start."""
    k = processes()
    if start_method == "forkserver":
        _fresh_forkserver()
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


WORKLOADS = [
    Workload("pool-map", bench_pool_map, 100_000, "task",
             "pool.map(f, range(n)), trivial f, the stdlib's default chunk size",
             probe=_probe_pool, peers={"mpire": mpire_pool_map, "loky": loky_pool_map}),
    Workload("pool-map-1mib", bench_pool_map_1mib, 64, "1 MiB item",
             "pool.map(f, items) of 1 MiB bytes items, f returning its item, the stdlib's "
             "default chunk size",
             probe=_probe_pool),
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


for _w in WORKLOADS:
    _w.group = GROUP
del _w
