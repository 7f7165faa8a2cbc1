"""max_memory_per_child (beyond the stdlib; billiard's and loky's memory limit): after a task,
a worker whose resident memory is above the limit leaves and is replaced, as after
maxtasksperchild tasks; every result still arrives, once.  A "task" is what maxtasksperchild
counts: one apply call, one map chunk."""
import collections
import os

import pytest

import fastmp
import fastmp.futures
import fastmp.pool
from _memlimit_targets import record, record_star, resident_bytes

FORK = fastmp.get_context("fork")
MiB = 1 << 20


def _limit():
    """A limit above a new worker's size: a forked worker starts near this process's size,
    a spawned or forkserver one below it (a little above it under ASan: hence the margin).
    A task that adds as many bytes as the limit crosses it, whatever the worker's size."""
    return resident_bytes() + 96 * MiB


def _by_pid(out):
    runs = collections.defaultdict(list)
    for i, (_, pid, seq) in enumerate(out):
        runs[pid].append((seq, i))
    return runs


def _check_turnover(out, n, grows):
    """Every result right; a worker that ran a growing task ran nothing after it, and a
    worker ran at most one."""
    assert [v for v, _, _ in out] == [i * i for i in range(n)]
    for pid, runs in _by_pid(out).items():
        runs.sort()
        assert [s for s, _ in runs] == list(range(len(runs))), (pid, runs)
        grown = [i for _, i in runs if i in grows]
        assert len(grown) <= 1, (pid, runs)
        if grown:
            assert runs[-1][1] == grown[0], (pid, runs)
    assert os.getpid() not in _by_pid(out)


@pytest.mark.timeout(120)
def test_pool_worker_over_the_limit_is_replaced_right_after_that_task(fastmp_ctx):
    limit = grow = _limit()
    pool = fastmp.pool.Pool(1, context=fastmp_ctx, max_memory_per_child=limit)
    try:
        first = pool.apply_async(record, (0,)).get(60)
        workers = list(pool._pool)
        assert [p.pid for p in workers] == [first[1]]
        rs = [pool.apply_async(record, (i, grow if i == 3 else 0)) for i in range(1, 8)]
        out = [first] + [r.get(60) for r in rs]
    finally:
        pool.close()
        pool.join()
    assert [v for v, _, _ in out] == [i * i for i in range(8)]
    pids = [pid for _, pid, _ in out]
    assert pids[:4] == [pids[0]] * 4
    assert pids[4:] == [pids[4]] * 4
    assert pids[4] != pids[0]
    assert [s for _, _, s in out] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert workers[0].exitcode == 0     # it left on its own, cleanly


@pytest.mark.timeout(120)
@pytest.mark.parametrize("chunksize", [1, 2])
def test_pool_map_replaces_after_the_chunk_that_crossed(chunksize):
    n, grows, limit = 10, {3}, _limit()
    with fastmp.pool.Pool(1, context=FORK, max_memory_per_child=limit) as pool:
        out = pool.starmap(record_star, [(i, limit if i in grows else 0) for i in range(n)],
                           chunksize=chunksize)
    assert [v for v, _, _ in out] == [i * i for i in range(n)]
    pids = [pid for _, pid, _ in out]
    # the chunk holding task 3 is the old worker's last: 0-3 one worker, 4-9 the next
    assert pids[:4] == [pids[0]] * 4 and pids[4:] == [pids[4]] * 6
    assert pids[0] != pids[4]


@pytest.mark.timeout(120)
def test_pool_many_workers_none_lost():
    n = 24
    grows = set(range(2, n, 5))
    limit = _limit()
    with fastmp.pool.Pool(2, context=FORK, max_memory_per_child=limit) as pool:
        out = pool.starmap(record_star, [(i, limit if i in grows else 0) for i in range(n)],
                           chunksize=1)
        again = pool.map(record, range(n), chunksize=3)     # the replacements work
    _check_turnover(out, n, grows)
    assert len(_by_pid(out)) >= len(grows)
    assert [v for v, _, _ in again] == [i * i for i in range(n)]


@pytest.mark.timeout(120)
def test_pool_below_the_limit_keeps_its_workers(fastmp_ctx):
    n = 30
    with fastmp.pool.Pool(2, context=fastmp_ctx, max_memory_per_child=_limit()) as pool:
        out = pool.map(record, range(n), chunksize=1)
        out += [pool.apply_async(record, (i,)).get(60) for i in range(n, n + 5)]
        workers = sorted(p.pid for p in pool._pool)
    assert [v for v, _, _ in out] == [i * i for i in range(n + 5)]
    assert set(_by_pid(out)) <= set(workers)


@pytest.mark.timeout(120)
def test_pool_imap_with_a_limit():
    n, grows = 12, {0, 5}
    limit = _limit()
    with fastmp.pool.Pool(2, context=FORK, max_memory_per_child=limit) as pool:
        out = list(pool.imap(_record_pair, _pairs(n, grows, limit)))
    _check_turnover(out, n, grows)


def _record_pair(pair):
    return record(*pair)


def _pairs(n, grows, grow):
    return ((i, grow if i in grows else 0) for i in range(n))


BAD_TYPES = ["1G", 1.5, True, [], float("nan")]
BAD_VALUES = [0, -1, -(1 << 70)]


def _pool_makers():
    return [
        ("Pool", lambda limit: fastmp.pool.Pool(1, max_memory_per_child=limit)),
        ("Pool(context=)", lambda limit: fastmp.pool.Pool(
            1, context=fastmp.get_context("spawn"), max_memory_per_child=limit)),
        ("ProcessPoolExecutor", lambda limit: fastmp.futures.ProcessPoolExecutor(
            1, max_memory_per_child=limit)),
    ]


@pytest.mark.parametrize("bad", BAD_TYPES, ids=repr)
def test_bad_limit_types_raise_type_error_at_construction(bad):
    before = fastmp.active_children()
    for name, make in _pool_makers():
        with pytest.raises(TypeError, match="max_memory_per_child must be an integer"):
            make(bad)
    assert fastmp.active_children() == before


@pytest.mark.parametrize("bad", BAD_VALUES)
def test_bad_limit_values_raise_value_error_at_construction(bad):
    before = fastmp.active_children()
    for name, make in _pool_makers():
        with pytest.raises(ValueError, match="max_memory_per_child must be a positive"):
            make(bad)
    assert fastmp.active_children() == before


def test_limit_none_and_ints_accepted():
    for limit in (None, 1 << 40):
        with fastmp.pool.Pool(1, context=FORK, max_memory_per_child=limit) as pool:
            assert pool.apply(record, (3,))[0] == 9


# ---------------------------------------------------------------------------- the executor

def _submit_in_turn(ex, n, grows, grow=0):
    return [ex.submit(record, i, grow if i in grows else 0).result(60) for i in range(n)]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", [None, "spawn", "forkserver"])
def test_executor_worker_over_the_limit_is_replaced(method):
    ctx = None if method is None else fastmp.get_context(method)
    limit = _limit()
    with fastmp.futures.ProcessPoolExecutor(1, mp_context=ctx,
                                            max_memory_per_child=limit) as ex:
        if method is None:
            assert ex._mp_context.get_start_method() == "spawn"   # as max_tasks_per_child
        out = _submit_in_turn(ex, 6, {2}, limit)
        futures = [ex.submit(record, i, limit if i == 7 else 0) for i in range(6, 12)]
        out += [f.result(60) for f in futures]
        out += list(ex.map(record, range(12, 16)))
    assert [v for v, _, _ in out] == [i * i for i in range(16)]
    pids = [pid for _, pid, _ in out]
    assert pids[:3] == [pids[0]] * 3
    assert pids[3:8] == [pids[3]] * 5
    assert pids[8:] == [pids[8]] * 8
    assert len({pids[0], pids[3], pids[8]}) == 3
    assert [s for _, _, s in out] == [0, 1, 2, 0, 1, 2, 3, 4] + list(range(8))


@pytest.mark.timeout(120)
def test_executor_below_the_limit_keeps_its_worker():
    with fastmp.futures.ProcessPoolExecutor(1, max_memory_per_child=_limit()) as ex:
        out = _submit_in_turn(ex, 8, set()) + list(ex.map(record, range(8, 12)))
    assert [v for v, _, _ in out] == [i * i for i in range(12)]
    assert len({pid for _, pid, _ in out}) == 1
    assert [s for _, _, s in out] == list(range(12))


def test_executor_limit_with_fork_raises_as_max_tasks_per_child():
    with pytest.raises(ValueError, match="max_memory_per_child is incompatible with the "
                                         "'fork'"):
        fastmp.futures.ProcessPoolExecutor(1, mp_context=fastmp.get_context("fork"),
                                           max_memory_per_child=1 << 30)
