"""Task timeouts (beyond the stdlib): Pool(task_timeout=), the per-call task_timeout= of apply,
map, imap and the rest, and ProcessPoolExecutor(task_timeout=).

A task that runs past its limit fails with fastmp.pool.TaskTimeoutError (naming the task and
the limit), its worker is killed and replaced, the tasks that worker had taken and not started
run elsewhere exactly once, and the pool carries on.  The slow tasks here sleep far past every
limit (_timeout_targets.STUCK), so only a timeout can end them: the bounds on elapsed time are
generous (a loaded machine), yet far below STUCK.
"""
import concurrent.futures
import functools
import math
import multiprocessing
import os
import re
import time

import pytest

import _timeout_targets as targets
import fastmp
import fastmp.futures
import fastmp.pool
from fastmp.pool import TaskTimeoutError

LIMIT = 1.0         # the task_timeout of most tests, seconds
WAIT = 60.0         # far above what any step needs; far below targets.STUCK
square = functools.partial(targets.square_or_stuck, stuck=None)     # never stuck


def _finish(pool):
    pool.close()
    pool.join()


def _assert_timeout(exc, index, call, func, limit=LIMIT):
    """exc is the TaskTimeoutError of task `index` of call(func); returns the killed pid."""
    assert type(exc) is TaskTimeoutError
    assert isinstance(exc, multiprocessing.TimeoutError)
    msg = str(exc)
    assert msg.startswith(f"task {index} of {call}({func}) ran past its time limit of "
                          f"{limit:g} seconds (task_timeout={limit:g}): its worker process "), msg
    assert msg.endswith(" was killed and replaced"), msg
    return int(re.search(r"worker process (\d+) ", msg).group(1))


def _outcomes(results):
    out = []
    for r in results:
        try:
            out.append(r.get(WAIT))
        except TaskTimeoutError as exc:
            out.append(exc)
    return out


def _drain(iterator):
    """Every item of an imap iterator, exceptions in their place."""
    out = []
    while True:
        try:
            out.append(iterator.next(WAIT))
        except StopIteration:
            return out
        except TaskTimeoutError as exc:
            out.append(exc)


# ---------------------------------------------------------------- the basic promise

def test_a_task_past_its_limit_fails_while_the_others_finish(fastmp_ctx):
    pool = fastmp_ctx.Pool(2)
    try:
        t0 = time.monotonic()
        results = [pool.apply_async(targets.square_or_stuck, (i,), task_timeout=LIMIT)
                   for i in range(8)]
        out = _outcomes(results)
        elapsed = time.monotonic() - t0
        assert out[:3] + out[4:] == [0, 1, 4, 16, 25, 36, 49]
        pid = _assert_timeout(out[3], 0, "apply_async", "square_or_stuck")
        assert LIMIT <= elapsed < WAIT
        assert not results[3].successful()
        # the pool carries on, the killed worker replaced
        assert pool.map(square, range(10)) == [x * x for x in range(10)]
        assert pool.apply(square, (7,)) == 49
        assert len(pool._pool) == 2
        assert pid not in {p.pid for p in pool._pool}
    finally:
        _finish(pool)


def test_the_stdlib_has_no_task_timeout():
    # what this file tests is an extension: the stdlib's Pool takes no such argument
    with pytest.raises(TypeError):
        multiprocessing.get_context("fork").Pool(1, task_timeout=1)


def test_pool_default_and_per_call_override(fastmp_ctx):
    pool = fastmp_ctx.Pool(2, task_timeout=LIMIT)
    try:
        slow = 2.5 * LIMIT
        default = pool.apply_async(targets.sleep_for, (slow,))
        longer = pool.apply_async(targets.sleep_for, (slow,), task_timeout=10 * LIMIT)
        out = _outcomes([default, longer])
        _assert_timeout(out[0], 0, "apply_async", "sleep_for")
        assert out[1] == slow
        # math.inf lifts the pool's limit for one call; a shorter one applies too
        unlimited = pool.apply_async(targets.sleep_for, (slow,), task_timeout=math.inf)
        shorter = pool.apply_async(targets.sleep_for, (LIMIT,), task_timeout=LIMIT / 4)
        out = _outcomes([unlimited, shorter])
        assert out[0] == slow
        _assert_timeout(out[1], 0, "apply_async", "sleep_for", LIMIT / 4)
        # the default reaches map and apply too
        with pytest.raises(TaskTimeoutError) as info:
            pool.map(targets.sleep_for, [0.01, slow, 0.01])
        _assert_timeout(info.value, 1, "map", "sleep_for")
        with pytest.raises(TaskTimeoutError):
            pool.apply(targets.sleep_for, (slow,))
    finally:
        _finish(pool)


def test_the_context_factory_takes_task_timeout():
    pool = fastmp.Pool(1, task_timeout=LIMIT)
    try:
        with pytest.raises(TaskTimeoutError):
            pool.apply(targets.square_or_stuck, (3,))
        assert pool.apply(targets.square_or_stuck, (2,)) == 4
    finally:
        _finish(pool)


def test_time_is_counted_from_the_start_not_the_submission(fastmp_ctx):
    # one worker, two tasks of 0.6 x the limit each: the second waits for the first, so it
    # ends 1.2 x the limit after it was submitted, but only 0.6 x after it started
    pool = fastmp_ctx.Pool(1)
    try:
        secs = 0.6 * LIMIT
        results = [pool.apply_async(targets.sleep_for, (secs,), task_timeout=LIMIT)
                   for _ in range(2)]
        t0 = time.monotonic()
        assert [r.get(WAIT) for r in results] == [secs, secs]
        assert time.monotonic() - t0 >= 2 * secs - 0.05
        assert pool.map(targets.sleep_for, [secs] * 3, chunksize=3, task_timeout=LIMIT) == \
            [secs] * 3
    finally:
        _finish(pool)


# ---------------------------------------------------------------- the tasks a worker held

@pytest.mark.parametrize("call", ["imap", "starmap_async"])
def test_tasks_the_killed_worker_held_run_elsewhere_exactly_once(fastmp_ctx, tmp_path, call):
    # One worker takes a record of 4 items (chunksize=4); item 1 never ends: item 0 ran and
    # keeps its result, items 2 and 3 were taken and never started: they run in the
    # replacement, once; items 4..7 (the next record) run once too.
    path = str(tmp_path / "starts")
    pool = fastmp_ctx.Pool(1)
    try:
        if call == "imap":
            it = pool.imap(functools.partial(targets.noted, path, stuck=1), range(8),
                           chunksize=4, task_timeout=LIMIT)
            assert next(it) == 0
            with pytest.raises(TaskTimeoutError) as info:
                next(it)
            # the iterator ends at the failure, as the stdlib's imap with chunks does
            with pytest.raises(StopIteration):
                next(it)
        else:
            r = pool.starmap_async(targets.noted, [(path, i, 1) for i in range(8)],
                                   chunksize=4, task_timeout=LIMIT)
            with pytest.raises(TaskTimeoutError) as info:
                r.get(WAIT)
        _assert_timeout(info.value, 1, call, "noted")
        pool.close()
        pool.join()         # every task done, the re-posted ones included
        assert targets.starts(path) == list(range(8))
    finally:
        pool.terminate()


def test_requeued_tasks_results_come_back(fastmp_ctx):
    # imap_unordered of short tasks: once measured short, several go in one task record (the
    # dispatcher's batching); the stuck item's worker held the rest of its record, which runs
    # in the replacement and whose results come out of the iterator: only the stuck one fails
    pool = fastmp_ctx.Pool(1)
    try:
        for _ in range(3):
            assert list(pool.imap(square, range(200))) == [x * x for x in range(200)]
        assert pool._dispatcher.batch_size(40) >= 8     # records of several tasks
        it = pool.imap_unordered(targets.square_or_stuck, range(40), task_timeout=LIMIT)
        out = _drain(it)
        errors = [x for x in out if isinstance(x, Exception)]
        assert sorted(x for x in out if not isinstance(x, Exception)) == \
            [x * x for x in range(40) if x != 3]
        assert len(errors) == 1
        _assert_timeout(errors[0], 3, "imap_unordered", "square_or_stuck")
    finally:
        _finish(pool)


def test_tasks_ending_about_at_their_limit_finish_or_fail_once(tmp_path):
    # tasks that end just before or just after their limit: each either returns its result
    # or fails with TaskTimeoutError (the worker and the collector claim the deadline, one of
    # them wins), none is started twice, and every result is accounted for
    path = str(tmp_path / "starts")
    limit = 0.3
    pool = fastmp.get_context("fork").Pool(2)
    try:
        secs = [limit + d for d in (-0.06, -0.03, -0.01, 0.0, 0.01, 0.03, 0.06)] * 3
        results = [pool.apply_async(targets.noted_sleep, (path, i, s), task_timeout=limit)
                   for i, s in enumerate(secs)]
        out = _outcomes(results)
        for i, x in enumerate(out):
            assert x == i or type(x) is TaskTimeoutError, (i, x)
        assert targets.starts(path) == list(range(len(secs)))
        assert pool.apply(square, (5,)) == 25
    finally:
        _finish(pool)


# ---------------------------------------------------------------- every call

def test_map_raises_the_timeout(fastmp_ctx):
    pool = fastmp_ctx.Pool(2)
    try:
        with pytest.raises(TaskTimeoutError) as info:
            pool.map(targets.square_or_stuck, range(8), chunksize=2, task_timeout=LIMIT)
        _assert_timeout(info.value, 3, "map", "square_or_stuck")
        assert pool.map(square, range(8), chunksize=2, task_timeout=LIMIT) == \
            [x * x for x in range(8)]
    finally:
        _finish(pool)


def test_starmap_raises_the_timeout():
    pool = fastmp.get_context("fork").Pool(2)
    try:
        args = [(a, b) for a in range(3) for b in range(3)]
        with pytest.raises(TaskTimeoutError) as info:
            pool.starmap(targets.pair_or_stuck, args, task_timeout=LIMIT)
        _assert_timeout(info.value, args.index((1, 2)), "starmap", "pair_or_stuck")
        assert pool.starmap(targets.pair_or_stuck, args[:5], task_timeout=LIMIT) == \
            [a + b for a, b in args[:5]]
    finally:
        _finish(pool)


def test_async_calls_report_to_error_callback():
    pool = fastmp.get_context("fork").Pool(2)
    try:
        seen = []
        r = pool.map_async(targets.square_or_stuck, range(6), callback=seen.append,
                           error_callback=seen.append, task_timeout=LIMIT)
        r.wait(WAIT)
        assert r.ready() and not r.successful()
        a = pool.apply_async(targets.square_or_stuck, (3,), callback=seen.append,
                             error_callback=seen.append, task_timeout=LIMIT)
        a.wait(WAIT)
        assert a.ready() and not a.successful()
        b = pool.apply_async(targets.square_or_stuck, (2,), callback=seen.append,
                             error_callback=seen.append, task_timeout=LIMIT)
        assert b.get(WAIT) == 4
        assert len(seen) == 3
        _assert_timeout(seen[0], 3, "map_async", "square_or_stuck")
        _assert_timeout(seen[1], 0, "apply_async", "square_or_stuck")
        assert seen[2] == 4
    finally:
        _finish(pool)


@pytest.mark.parametrize("chunksize", [1, 3])
def test_imap_in_order(fastmp_ctx, chunksize):
    pool = fastmp_ctx.Pool(2)
    try:
        it = pool.imap(targets.square_or_stuck, iter(range(8)), chunksize=chunksize,
                       task_timeout=LIMIT)
        assert [next(it) for _ in range(3)] == [0, 1, 4]
        with pytest.raises(TaskTimeoutError) as info:
            next(it)
        _assert_timeout(info.value, 3, "imap", "square_or_stuck")
        if chunksize == 1:
            # one item per task: the iterator goes on after the failure, as the stdlib's
            assert list(it) == [x * x for x in range(4, 8)]
    finally:
        _finish(pool)


def test_imap_unordered_lazy_input():
    pool = fastmp.get_context("fork").Pool(2)
    try:
        it = pool.imap_unordered(targets.square_or_stuck, iter(range(10)), task_timeout=LIMIT)
        out = _drain(it)
        values = sorted(x for x in out if not isinstance(x, Exception))
        assert values == [x * x for x in range(10) if x != 3]
        assert len(out) == 10
    finally:
        _finish(pool)


def test_many_timeouts_then_close_and_join(fastmp_ctx):
    pool = fastmp_ctx.Pool(2, task_timeout=LIMIT / 2)
    try:
        results = [pool.apply_async(targets.square_or_stuck, (3,)) for _ in range(3)]
        results += [pool.apply_async(targets.square_or_stuck, (i,)) for i in range(5)]
        out = _outcomes(results)
        assert [type(x) for x in out[:3]] == [TaskTimeoutError] * 3
        assert out[3:6] == [0, 1, 4] and out[7] == 16
        assert type(out[6]) is TaskTimeoutError
        workers = list(pool._pool)
    finally:
        t0 = time.monotonic()
        _finish(pool)
    assert time.monotonic() - t0 < WAIT
    assert [p.exitcode for p in workers] == [0] * len(workers)


# ---------------------------------------------------------------- the executor

def test_executor_timed_out_future_raises_timeout_and_the_executor_carries_on():
    ctx = fastmp.get_context("fork")
    with fastmp.futures.ProcessPoolExecutor(2, mp_context=ctx, task_timeout=LIMIT) as ex:
        futures = [ex.submit(targets.square_or_stuck, i) for i in range(6)]
        assert [f.result(WAIT) for f in futures if f is not futures[3]] == [0, 1, 4, 16, 25]
        exc = futures[3].exception(WAIT)
        assert isinstance(exc, concurrent.futures.TimeoutError)
        assert isinstance(exc, multiprocessing.TimeoutError)
        assert exc is not None and fastmp.futures.TaskTimeoutError is TaskTimeoutError
        _assert_timeout(exc, 0, "submit", "square_or_stuck")
        with pytest.raises(concurrent.futures.TimeoutError):
            futures[3].result()
        # not broken: later calls run
        assert not ex._broken
        assert ex.submit(square, 9).result(WAIT) == 81
        # map: the limit is per item
        it = ex.map(targets.square_or_stuck, range(6), chunksize=3)
        assert [next(it) for _ in range(3)] == [0, 1, 4]
        with pytest.raises(concurrent.futures.TimeoutError) as info:
            next(it)
        _assert_timeout(info.value, 3, "map", "square_or_stuck")
        assert list(ex.map(square, range(5), chunksize=2)) == [0, 1, 4, 9, 16]


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_executor_other_start_methods(method):
    ctx = fastmp.get_context(method)
    with fastmp.futures.ProcessPoolExecutor(1, mp_context=ctx, task_timeout=LIMIT) as ex:
        f = ex.submit(targets.square_or_stuck, 3)
        g = ex.submit(targets.square_or_stuck, 2)
        assert isinstance(f.exception(WAIT), TaskTimeoutError)
        assert g.result(WAIT) == 4


# ---------------------------------------------------------------- bad input

BAD = [(-1, ValueError), (-0.5, ValueError), (0, ValueError), (float("nan"), ValueError),
       ("1", TypeError), (b"1", TypeError), ([1], TypeError), (True, TypeError)]


@pytest.mark.parametrize("value,error", BAD, ids=[repr(v) for v, _ in BAD])
def test_bad_timeouts_raise_at_the_call(value, error):
    with pytest.raises(error, match="task_timeout"):
        fastmp.get_context("fork").Pool(1, task_timeout=value)
    with pytest.raises(error, match="task_timeout"):
        fastmp.futures.ProcessPoolExecutor(1, task_timeout=value)
    pool = fastmp.get_context("fork").Pool(1)
    try:
        calls = [
            lambda: pool.apply(square, (1,), task_timeout=value),
            lambda: pool.apply_async(square, (1,), task_timeout=value),
            lambda: pool.map(square, [1], task_timeout=value),
            lambda: pool.map_async(square, [1], task_timeout=value),
            lambda: pool.starmap(targets.pair_or_stuck, [(1, 1)], task_timeout=value),
            lambda: pool.starmap_async(targets.pair_or_stuck, [(1, 1)], task_timeout=value),
            lambda: pool.imap(square, [1], task_timeout=value),
            lambda: pool.imap_unordered(square, [1], task_timeout=value),
        ]
        for call in calls:
            with pytest.raises(error, match="task_timeout"):
                call()
        assert pool._cache == {}        # nothing was submitted
        assert pool.apply(square, (3,)) == 9
    finally:
        _finish(pool)


@pytest.mark.parametrize("value", ["1", float("nan"), -1])
def test_bad_timeout_error_types_are_the_stdlibs(value):
    # the types the stdlib raises for such a number of seconds (a bad get(timeout) of its
    # pool raises TypeError for "1"; NaN and negatives it takes as "time is up" there, so
    # time.sleep is the reference for those)
    with pytest.raises(Exception) as std:
        time.sleep(value)
    with pytest.raises(Exception) as ours:
        fastmp.get_context("fork").Pool(1, task_timeout=value)
    assert type(ours.value) is type(std.value)
    if isinstance(value, str):
        pool = multiprocessing.get_context("fork").Pool(1)
        try:
            with pytest.raises(TypeError):
                pool.apply_async(square, (2,)).get(value)
        finally:
            _finish(pool)
