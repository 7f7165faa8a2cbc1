"""fastmp.futures.get_reusable_executor() (beyond the stdlib; loky's API): one executor per
process, returned again while alive and asked for with the same parameters, its workers reused
across calls, gone after `timeout` idle seconds (the executor still works afterwards), a shut
down or broken one replaced, another size resized in place."""
import math
import os
import time

import pytest

import fastmp
import fastmp.futures
import fastmp.reusable
from fastmp.futures import BrokenProcessPool, get_reusable_executor
from _memlimit_targets import die, init_marker, init_value, pid_after, record

METHODS = ["fork", "spawn"]


@pytest.fixture(autouse=True)
def no_executor_left():
    """Each test starts without the process's reusable executor and ends its own."""
    _shutdown_current()
    yield
    _shutdown_current()


def _shutdown_current():
    ex = fastmp.reusable._executor
    if ex is not None:
        ex.shutdown(wait=True)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _all_gone_within(pids, seconds):
    deadline = time.monotonic() + seconds
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _pids(ex, n=8):
    """The pids of the workers that ran n calls (submit and map)."""
    got = {ex.submit(pid_after).result(60) for _ in range(n)}
    return got | set(ex.map(pid_after, [0.0] * n))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", METHODS)
def test_same_executor_and_workers_across_calls(method):
    ex = get_reusable_executor(2, context=method, timeout=60)
    first = _pids(ex)
    workers = set(ex._processes)
    assert first <= workers and len(workers) <= 2
    for _ in range(3):
        again = get_reusable_executor(2, context=method, timeout=60)
        assert again is ex
        assert _pids(again) <= workers
        assert set(again._processes) == workers
    assert [ex.submit(record, i).result(60)[0] for i in range(5)] == [0, 1, 4, 9, 16]
    assert os.getpid() not in workers


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", METHODS)
def test_workers_exit_after_the_idle_timeout_and_the_executor_still_works(method):
    ex = get_reusable_executor(2, context=method, timeout=0.5)
    got = _pids(ex)
    workers = got | set(ex._processes)
    segment = "/dev/shm/" + ex._pool._dispatcher.name
    assert workers and all(_alive(p) for p in workers) and os.path.exists(segment)
    assert _all_gone_within(workers, 30), "workers still alive after the idle timeout"
    assert ex._processes == {}
    # the old pool's channel goes with it: its shutdown, in the monitor thread, closes it once
    # the workers are gone (a moment after they are)
    deadline = time.monotonic() + 30
    while os.path.exists(segment) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(segment)
    # still usable: the next calls start new workers
    assert get_reusable_executor(2, context=method, timeout=0.5) is ex
    assert list(ex.map(record, range(6)))[5][0] == 25
    fresh = _pids(ex)
    assert fresh and not fresh & workers
    assert ex.submit(record, 7).result(60)[0] == 49
    # and they time out again
    assert _all_gone_within(fresh | set(ex._processes), 30)


@pytest.mark.timeout(120)
def test_a_call_longer_than_the_timeout_keeps_its_worker():
    ex = get_reusable_executor(1, timeout=0.5)
    pid = ex.submit(pid_after).result(60)
    # busy for four timeouts: neither killed nor replaced meanwhile
    assert ex.submit(pid_after, 2.0).result(60) == pid
    assert ex.submit(pid_after).result(60) == pid
    assert _all_gone_within({pid}, 30)


@pytest.mark.timeout(120)
def test_a_buffered_map_keeps_its_workers_while_consumed_slowly():
    ex = get_reusable_executor(1, timeout=0.3)
    it = ex.map(record, range(6), buffersize=1)
    out = []
    for v in it:
        out.append(v)
        time.sleep(0.5)     # longer than the timeout between chunks
    assert [v for v, _, _ in out] == [i * i for i in range(6)]
    assert len({pid for _, pid, _ in out}) == 1
    # a buffered map dropped early does not keep the workers forever
    it = ex.map(record, range(100), buffersize=2)
    assert next(it)[0] == 0
    pid = next(iter(ex._processes))
    del it
    assert _all_gone_within({pid}, 30)


@pytest.mark.timeout(120)
def test_a_shut_down_executor_is_replaced():
    ex = get_reusable_executor(2, timeout=60)
    workers = _pids(ex) | set(ex._processes)
    segment = "/dev/shm/" + ex._pool._dispatcher.name
    ex.shutdown(wait=True)
    assert not any(_alive(p) for p in workers)
    assert not os.path.exists(segment)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(pid_after)
    new = get_reusable_executor(2, timeout=60)
    assert new is not ex
    assert not _pids(new) & workers
    # as a context manager: shut down at the end, replaced at the next call
    with get_reusable_executor(2, timeout=60) as same:
        assert same is new
    assert get_reusable_executor(2, timeout=60) is not new


@pytest.mark.timeout(120)
def test_a_broken_executor_is_replaced():
    ex = get_reusable_executor(1, timeout=60)
    with pytest.raises(BrokenProcessPool):
        ex.submit(die).result(60)
    new = get_reusable_executor(1, timeout=60)
    assert new is not ex
    assert new.submit(record, 3).result(60)[0] == 9


@pytest.mark.timeout(120)
def test_another_max_workers_resizes_the_same_executor():
    ex = get_reusable_executor(2, context="fork", timeout=60)
    old = _pids(ex) | set(ex._processes)
    assert len(ex._processes) == 2      # fork: every worker at the first call
    same = get_reusable_executor(3, context="fork", timeout=60)
    assert same is ex and ex._max_workers == 3
    assert not any(_alive(p) for p in old)      # the old workers finished and exited
    new = _pids(ex)
    assert len(ex._processes) == 3 and not new & old
    # max_workers=None with reuse=True keeps the size
    assert get_reusable_executor(None, context="fork", timeout=60, reuse=True) is ex
    assert ex._max_workers == 3
    workers = set(ex._processes)
    assert _pids(ex) <= workers


@pytest.mark.timeout(120)
def test_other_parameters_make_a_new_executor():
    ex = get_reusable_executor(1, timeout=60, initializer=init_marker, initargs=(1,))
    value, pid = ex.submit(init_value).result(60)
    assert value == "1"
    new = get_reusable_executor(1, timeout=60, initializer=init_marker, initargs=(2,))
    assert new is not ex
    assert not _alive(pid)          # the old one was shut down, its work done
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(init_value)
    assert new.submit(init_value).result(60)[0] == "2"
    # reuse=True: the current one whatever the parameters; reuse=False: always a new one
    assert get_reusable_executor(1, timeout=60, reuse=True) is new
    assert get_reusable_executor(1, timeout=5, initializer=init_marker, initargs=(2,),
                                 reuse=True) is new
    newer = get_reusable_executor(1, timeout=60, initializer=init_marker, initargs=(2,),
                                  reuse=False)
    assert newer is not new
    # a different timeout or context is another executor too
    assert get_reusable_executor(1, timeout=30, initializer=init_marker,
                                 initargs=(2,)) is not newer
    last = get_reusable_executor(1, timeout=30, initializer=init_marker, initargs=(2,),
                                 context="spawn")
    assert last.submit(init_value).result(60)[0] == "2"


@pytest.mark.timeout(120)
def test_kill_workers_stops_the_running_work_of_the_old_executor():
    ex = get_reusable_executor(1, timeout=60)
    running = ex.submit(pid_after, 60)
    time.sleep(0.3)
    t0 = time.monotonic()
    new = get_reusable_executor(1, timeout=60, initializer=init_marker, initargs=(5,),
                                kill_workers=True)
    assert time.monotonic() - t0 < 30
    assert new is not ex
    assert isinstance(running.exception(30), BrokenProcessPool)
    assert new.submit(init_value).result(60)[0] == "5"


@pytest.mark.timeout(120)
def test_memory_limit_through_the_reusable_executor():
    from _memlimit_targets import resident_bytes
    limit = resident_bytes() + (96 << 20)     # as in test_pool_memlimit.py
    ex = get_reusable_executor(1, timeout=60, max_memory_per_child=limit)
    out = [ex.submit(record, i, limit if i == 1 else 0).result(60) for i in range(4)]
    pids = [pid for _, pid, _ in out]
    assert pids[0] == pids[1] != pids[2] == pids[3]


@pytest.mark.parametrize("kwargs, exc", [
    ({"timeout": -1}, ValueError),
    ({"timeout": 0}, ValueError),
    ({"timeout": math.nan}, ValueError),
    ({"timeout": "10"}, TypeError),
    ({"max_workers": 0}, ValueError),
    ({"max_workers": "2"}, TypeError),
    ({"reuse": "always"}, ValueError),
    ({"kill_workers": None}, TypeError),
    ({"initializer": 3}, TypeError),
    ({"max_memory_per_child": -5}, ValueError),
    ({"max_tasks_per_child": 0}, ValueError),
])
def test_bad_arguments_raise_and_keep_the_current_executor(kwargs, exc):
    ex = get_reusable_executor(1, timeout=60)
    with pytest.raises(exc):
        get_reusable_executor(**kwargs)
    assert get_reusable_executor(1, timeout=60) is ex
    assert ex.submit(record, 2).result(60)[0] == 4


def test_timeout_none_keeps_the_workers():
    ex = get_reusable_executor(1, timeout=None)
    pid = ex.submit(pid_after).result(60)
    time.sleep(0.5)
    assert _alive(pid) and ex.submit(pid_after).result(60) == pid
    assert fastmp.reusable._executor is ex


@pytest.mark.timeout(120)
def test_a_forked_child_makes_its_own_executor():
    from _memlimit_targets import reusable_in_child
    ex = get_reusable_executor(1, timeout=60)
    parent_workers = _pids(ex)
    p = fastmp.get_context("fork").Process(target=reusable_in_child)
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert _pids(ex) == parent_workers and get_reusable_executor(1, timeout=60) is ex
