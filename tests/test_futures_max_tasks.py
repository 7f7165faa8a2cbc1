"""ProcessPoolExecutor's max_tasks_per_child and mp_context (the stdlib's from Python 3.11; fastmp's
on every version): the same behaviour as the stdlib's where it has them."""
import collections
import concurrent.futures as cf
import multiprocessing
import sys

import pytest

import fastmp
import fastmp.futures
from _memlimit_targets import pid_after, record

STDLIB_HAS_IT = sys.version_info >= (3, 11)


@pytest.fixture(params=["stdlib", "fastmp"])
def executor_class(request):
    if request.param == "stdlib":
        if not STDLIB_HAS_IT:
            pytest.skip("concurrent.futures takes max_tasks_per_child from Python 3.11 on")
        return cf.ProcessPoolExecutor
    return fastmp.futures.ProcessPoolExecutor


def _module(executor_class):
    return multiprocessing if executor_class is cf.ProcessPoolExecutor else fastmp


@pytest.mark.timeout(120)
def test_max_tasks_per_child_defaults_to_spawn_and_turns_workers_over(executor_class):
    with executor_class(2, max_tasks_per_child=3) as ex:
        assert ex._mp_context.get_start_method() == "spawn"
        pids = [ex.submit(pid_after).result(60) for _ in range(9)]
        out = list(ex.map(record, range(6)))
    per_pid = collections.Counter(pids)
    assert max(per_pid.values()) <= 3 and len(per_pid) >= 3
    assert [v for v, _, _ in out] == [i * i for i in range(6)]
    assert max(collections.Counter(pid for _, pid, _ in out).values()) <= 3


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_max_tasks_per_child_with_an_explicit_context(executor_class, method):
    ctx = _module(executor_class).get_context(method)
    with executor_class(1, mp_context=ctx, max_tasks_per_child=2) as ex:
        assert ex._mp_context is ctx
        pids = [ex.submit(pid_after).result(60) for _ in range(6)]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4] == pids[5]


def test_max_tasks_per_child_bad_values(executor_class):
    with pytest.raises(TypeError):
        executor_class(1, max_tasks_per_child="2")
    with pytest.raises(ValueError):
        executor_class(1, max_tasks_per_child=0)
    fork = _module(executor_class).get_context("fork")
    with pytest.raises(ValueError, match="fork"):
        executor_class(1, mp_context=fork, max_tasks_per_child=1)
