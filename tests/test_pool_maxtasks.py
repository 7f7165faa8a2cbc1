"""maxtasksperchild: every result right, no worker runs more than its share, and replacing
workers costs what it costs in the stdlib (a worker that leaves after its tasks is replaced at
once, not at the collector's next check for dead workers).  Speed itself is measured in the
benchmark (python -m fastmp.bench --only pool-maxtasks1); here only a generous bound."""
import collections
import os
import time

import pytest

import multiprocessing


def _square_and_pid(x):
    return x * x, os.getpid()


def _run(ctx, n, maxtasks, processes=2):
    pool = ctx.Pool(processes, maxtasksperchild=maxtasks)
    try:
        out = pool.map(_square_and_pid, range(n), chunksize=1)
        more = [pool.apply_async(_square_and_pid, (i,)) for i in range(n, n + 4)]
        out += [r.get(60) for r in more]
    finally:
        pool.close()
        pool.join()
    return out


@pytest.mark.parametrize("maxtasks", [1, 2])
def test_maxtasksperchild_results_and_turnover(ctx, maxtasks):
    n = 40 if ctx.get_start_method() == "fork" else 10
    out = _run(ctx, n, maxtasks)
    assert [v for v, _ in out] == [i * i for i in range(n + 4)]
    per_pid = collections.Counter(pid for _, pid in out)
    assert max(per_pid.values()) <= maxtasks
    assert len(per_pid) >= -(-(n + 4) // maxtasks)
    assert os.getpid() not in per_pid


def test_maxtasksperchild_1_not_much_slower_than_the_stdlib():
    import fastmp
    n = 120
    times = {"stdlib": [], "fastmp": []}
    for _ in range(2):      # alternating, the best of two each
        for name, mod in (("stdlib", multiprocessing), ("fastmp", fastmp)):
            t0 = time.monotonic()
            out = _run(mod.get_context("fork"), n, 1)
            times[name].append(time.monotonic() - t0)
            assert [v for v, _ in out] == [i * i for i in range(n + 4)]
    std, fm = min(times["stdlib"]), min(times["fastmp"])
    assert fm <= 2 * std, times
