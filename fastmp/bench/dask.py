"""The workloads of fastmp.dask: a Pool on a Dask cluster against hand-written Dask and
against fastmp's local Pool, on one LocalCluster (loopback, one thread per worker).

    rows = run(workers=2)        # a list of dicts, one per (workload, implementation)
    print(format_rows(rows))

Workloads (each a ``map`` whose result is checked):

* ``tiny``: ``tiny_items`` (100k) calls of a function that adds 1;
* ``10ms``: ``sleep_items`` (200) calls of a function that sleeps ``sleep_seconds`` (10 ms);
* ``per-task``: ``per_task_items`` (2,000) calls of the tiny function with ``chunksize=1``
  (one Dask task per item, as hand-written Dask): the pool's own cost per task.

Implementations: ``fastmp.dask.Pool.map`` (default chunks but for per-task), hand-written Dask (one
``client.map`` task per item, then ``client.gather``; ``pure=False``), and ``fastmp.Pool.map``
with as many local workers.  Every implementation first maps a few items untimed (imports
and pickles in the workers), then the three run ``rounds`` times, alternating round by round
(the scheduler is left to forget one run's tasks before the next starts); a row gives the
median seconds and the rate.  Hand-written Dask costs milliseconds per task, so on the tiny
workload it maps 10k of the items (``baseline_tiny_items``) and is compared by rate.  The
ratio column is the row's rate over hand-written Dask's: above 1, faster.
Needs the extra (``pip install 'fastmp[dask]'``): :func:`missing` says what is missing.
"""
import statistics
import time

__all__ = ["WORKLOADS", "IMPLS", "missing", "run", "format_rows", "main"]

WORKLOADS = ("tiny", "10ms", "per-task")
IMPLS = ("fastmp.dask.Pool", "dask client.map", "fastmp.Pool")
BASELINE = "dask client.map"


def _tiny(x):
    return x + 1


def _sleep(seconds):
    time.sleep(seconds)
    return seconds


def missing():
    """None if the workloads can run, else why not (the extra is not installed)."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        return "needs Dask's distributed: pip install 'fastmp[dask]'"
    return None


def _settle(client, timeout=60.0):
    """Wait (untimed) until the scheduler has forgotten every task of the last run: releasing
    thousands of tasks keeps it busy after gather() returns."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.run_on_scheduler(_scheduler_tasks) == 0:
            return
        time.sleep(0.05)


def _scheduler_tasks(dask_scheduler):
    return len(dask_scheduler.tasks)


def run(workers=2, tiny_items=100_000, sleep_items=200, sleep_seconds=0.01, rounds=3,
        baseline_tiny_items=10_000, per_task_items=2_000, workloads=WORKLOADS, log=None):
    """Run the workloads; return one dict per (workload, implementation) with the keys
    workload, impl, items, seconds (median of the rounds), runs (every round's seconds), rate
    (items per second) and ratio (this row's rate over hand-written Dask's).

    Hand-written Dask costs milliseconds per task here, so on the tiny workload it maps only
    min(tiny_items, baseline_tiny_items) items (its rate is the same per item: one task
    each); the other rows map all of them."""
    why = missing()
    if why is not None:
        raise ImportError(why)
    import distributed
    import fastmp
    from fastmp import dask as fdask

    sizes = {"tiny": tiny_items, "10ms": sleep_items, "per-task": per_task_items}
    funcs = {"tiny": _tiny, "10ms": _sleep, "per-task": _tiny}
    chunks = {"tiny": None, "10ms": None, "per-task": 1}

    def items_of(name, impl):
        n = sizes[name]
        if name == "tiny" and impl == BASELINE and baseline_tiny_items:
            n = min(n, baseline_tiny_items)
        if name != "10ms":
            return list(range(n)), [x + 1 for x in range(n)]
        return [sleep_seconds] * n, [sleep_seconds] * n

    rows = []
    # the local pool first: its workers fork before Dask's threads run in this process
    with fastmp.Pool(workers) as lpool, \
            distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                     host="127.0.0.1", dashboard_address="127.0.0.1:0") as lc, \
            distributed.Client(lc, set_as_default=False) as client, \
            fdask.Pool(client=client) as dpool:
        client.wait_for_workers(workers, timeout=120)
        calls = {
            "fastmp.dask.Pool": dpool.map,
            "dask client.map": lambda f, items, chunksize: client.gather(
                client.map(f, items, pure=False)),
            "fastmp.Pool": lpool.map,
        }
        for name in workloads:
            func = funcs[name]
            for impl in IMPLS:     # warm-up, untimed: imports and pickles in the workers
                calls[impl](func, items_of(name, impl)[0][:50], chunks[name])
            _settle(client)
            runs = {impl: [] for impl in IMPLS}
            for r in range(rounds):
                for impl in IMPLS:
                    items, expected = items_of(name, impl)
                    t0 = time.perf_counter()
                    out = calls[impl](func, items, chunks[name])
                    seconds = time.perf_counter() - t0
                    if out != expected:
                        raise AssertionError(f"{impl} gave a wrong result for {name}")
                    del out
                    runs[impl].append(seconds)
                    _settle(client)
                    if log is not None:
                        log(f"{name} {impl} round {r + 1}: {len(items)} items "
                            f"in {seconds:.3f} s")
            rates = {}
            for impl in IMPLS:
                n = len(items_of(name, impl)[0])
                med = statistics.median(runs[impl])
                rates[impl] = n / med
                rows.append({"workload": name, "impl": impl, "items": n, "seconds": med,
                             "runs": runs[impl], "rate": rates[impl]})
            for row in rows[-len(IMPLS):]:
                row["ratio"] = row["rate"] / rates[BASELINE]
    return rows


def format_rows(rows):
    """The rows as a text table."""
    lines = [f"{'workload':<10} {'implementation':<18} {'items':>7} {'seconds':>9} "
             f"{'items/s':>10} {'vs hand-written Dask':>21}"]
    for row in rows:
        lines.append(f"{row['workload']:<10} {row['impl']:<18} {row['items']:>7} "
                     f"{row['seconds']:>9.3f} {row['rate']:>10.0f} {row['ratio']:>20.2f}x")
    return "\n".join(lines)


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tiny-items", type=int, default=100_000)
    parser.add_argument("--baseline-tiny-items", type=int, default=10_000,
                        help="items of the tiny workload for hand-written Dask (0: all)")
    parser.add_argument("--sleep-items", type=int, default=200)
    parser.add_argument("--per-task-items", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=",".join(WORKLOADS),
                        help="comma-separated workloads: " + ", ".join(WORKLOADS))
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    why = missing()
    if why is not None:
        print(f"dask: absent ({why})")
        return 0
    only = tuple(w for w in args.only.split(",") if w)
    bad = [w for w in only if w not in WORKLOADS]
    if bad:
        parser.error(f"unknown workload(s) {bad}; choose from {', '.join(WORKLOADS)}")
    rows = run(args.workers, args.tiny_items, args.sleep_items, rounds=args.rounds,
               baseline_tiny_items=args.baseline_tiny_items,
               per_task_items=args.per_task_items, workloads=only,
               log=print if args.verbose else None)
    print(format_rows(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
