"""fastmp.futures.ProcessPoolExecutor against concurrent.futures.ProcessPoolExecutor: the same
scenarios in every start method (ids stdlib-fork ... fastmp-forkserver)."""
import concurrent.futures as cf
import os
import sys
import time

import pytest

import _pool_targets as targets
import fastmp.futures

WAIT = 60.0

pytestmark = pytest.mark.timeout(120)


# concurrent.futures' ProcessPoolExecutor takes max_tasks_per_child from Python 3.11 on;
# fastmp's takes it on every version.
STDLIB_MAX_TASKS = sys.version_info >= (3, 11)


def has_max_tasks_per_child(ctx):
    return is_fastmp(ctx) or STDLIB_MAX_TASKS


def is_fastmp(ctx):
    return type(ctx).__module__.startswith("fastmp")


def executor(ctx, *args, **kwargs):
    cls = fastmp.futures.ProcessPoolExecutor if is_fastmp(ctx) else cf.ProcessPoolExecutor
    return cls(*args, mp_context=ctx, **kwargs)


def test_submit_result_exception(ctx):
    with executor(ctx, 2) as ex:
        f = ex.submit(targets.add, 2, 3)
        assert isinstance(f, cf.Future)
        assert f.result(WAIT) == 5
        assert ex.submit(targets.kwargs, 1, b=2, c=3).result(WAIT) == (1, 2, 3)
        f = ex.submit(targets.raise_value, 4)
        assert isinstance(f.exception(WAIT), ValueError)
        with pytest.raises(ValueError, match="bad item 4"):
            f.result(WAIT)
        fs = [ex.submit(targets.square, i) for i in range(50)]
        assert sorted(f.result() for f in cf.as_completed(fs, timeout=WAIT)) == \
            [i * i for i in range(50)]
        done, not_done = cf.wait(fs, timeout=WAIT)
        assert len(done) == 50 and not not_done


def test_result_timeout(ctx):
    with executor(ctx, 1) as ex:
        f = ex.submit(targets.sleep_for, 1.0)
        with pytest.raises(cf.TimeoutError):
            f.result(0.1)
        assert f.result(WAIT) == 1.0


@pytest.mark.parametrize("chunksize", [1, 4])
def test_map(ctx, chunksize):
    with executor(ctx, 2) as ex:
        assert list(ex.map(targets.square, range(40), chunksize=chunksize)) == \
            [i * i for i in range(40)]
        assert list(ex.map(targets.add, range(10), range(10, 20), chunksize=chunksize)) == \
            [2 * i + 10 for i in range(10)]
        assert list(ex.map(targets.square, [], chunksize=chunksize)) == []
        it = ex.map(targets.fail_on, range(6), chunksize=chunksize)
        with pytest.raises(ValueError):
            list(it)
        with pytest.raises(ValueError):
            ex.map(targets.square, range(3), chunksize=0)


def test_map_timeout(ctx):
    with executor(ctx, 1) as ex:
        it = ex.map(targets.sleep_for, [1.0, 1.0], timeout=0.2)
        with pytest.raises(cf.TimeoutError):
            list(it)


def test_shutdown(ctx):
    ex = executor(ctx, 1)
    fs = [ex.submit(targets.sleep_for, 0.3)] + [ex.submit(targets.square, i) for i in range(5)]
    ex.shutdown(wait=True)
    assert [f.result(0) for f in fs] == [0.3, 0, 1, 4, 9, 16]
    with pytest.raises(RuntimeError):
        ex.submit(targets.square, 1)
    ex = executor(ctx, 1)
    # The worker must be up (slow under spawn and the sanitizers) before `first` is
    # submitted, so that 0.2 s is ample for it to take `first`: shutdown spares held tasks.
    assert ex.submit(targets.square, 3).result(60) == 9
    first = ex.submit(targets.sleep_for, 0.5)
    time.sleep(0.2)
    rest = [ex.submit(targets.square, i) for i in range(5)]
    ex.shutdown(wait=True, cancel_futures=True)
    assert first.result(0) == 0.5
    assert all(f.cancelled() or f.done() for f in rest)
    assert any(f.cancelled() for f in rest)


def test_argument_errors(ctx):
    with pytest.raises(ValueError):
        executor(ctx, 0)
    with pytest.raises(TypeError):
        executor(ctx, 1, initializer=5)
    if not has_max_tasks_per_child(ctx):
        with pytest.raises(TypeError, match="max_tasks_per_child"):
            executor(ctx, 1, max_tasks_per_child=2)
    elif ctx.get_start_method() == "fork":
        with pytest.raises(ValueError):
            executor(ctx, 1, max_tasks_per_child=2)
    else:
        with pytest.raises(ValueError):
            executor(ctx, 1, max_tasks_per_child=0)


def test_initializer_and_max_tasks_per_child(ctx):
    with executor(ctx, 1, initializer=targets.set_state, initargs=(7,)) as ex:
        assert ex.submit(targets.get_state).result(WAIT) == 7
    if ctx.get_start_method() != "fork" and has_max_tasks_per_child(ctx):
        with executor(ctx, 1, max_tasks_per_child=2) as ex:
            pids = [ex.submit(targets.getpid).result(WAIT) for _ in range(4)]
            assert len(set(pids)) == 2


def test_killed_worker_breaks_the_executor(ctx):
    ex = executor(ctx, 2)
    try:
        f = ex.submit(targets.die, 9)
        with pytest.raises(cf.process.BrokenProcessPool):
            f.result(WAIT)
        deadline = time.monotonic() + WAIT
        while True:
            try:
                ex.submit(targets.square, 1).result(WAIT)
            except cf.process.BrokenProcessPool:
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        ex.shutdown(wait=True)


def test_raising_initializer_breaks_the_executor(ctx):
    ex = executor(ctx, 1, initializer=targets.init_raise)
    try:
        with pytest.raises(cf.process.BrokenProcessPool):
            ex.submit(targets.square, 3).result(WAIT)
    finally:
        ex.shutdown(wait=True)


def test_lambda_with_cloudpickle(fastmp_ctx):
    pytest.importorskip("cloudpickle")
    k = 3
    with fastmp.futures.ProcessPoolExecutor(1, mp_context=fastmp_ctx) as ex:
        assert ex.submit(lambda x: x * k, 5).result(WAIT) == 15
