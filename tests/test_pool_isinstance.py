"""isinstance against the stdlib's classes: code outside fastmp (dask's processes scheduler,
for one) checks pools and results against multiprocessing.pool's classes.  Every check runs
with the stdlib (the reference) and fastmp; the stdlib's classes are the reference classes in
both cases."""
import gc

import pytest

import multiprocessing.pool as std_pool


def _pool_module(mp):
    import importlib
    return importlib.import_module(mp.__name__ + ".pool")


def test_pool_is_a_stdlib_pool(mp):
    with mp.Pool(2) as pool:
        assert isinstance(pool, std_pool.Pool)
        assert isinstance(pool, _pool_module(mp).Pool)
        # what code reads of the stdlib's private attributes
        assert pool._processes == 2
        assert len(pool._pool) == 2
        assert pool._state == "RUN"
        assert pool._taskqueue.qsize() == 0 and pool._taskqueue.empty()
        assert pool._cache == {}
        pool.close()
        assert pool._state == "CLOSE"
        pool.join()


def test_results_are_the_stdlib_results(mp):
    mod = _pool_module(mp)
    with mp.Pool(2) as pool:
        r = pool.apply_async(abs, (-3,))
        assert r.get(60) == 3
        assert isinstance(r, std_pool.ApplyResult)
        assert isinstance(r, std_pool.AsyncResult)
        assert isinstance(r, mod.ApplyResult) and isinstance(r, mod.AsyncResult)
        assert not isinstance(r, std_pool.MapResult)

        m = pool.map_async(abs, [-1, -2])
        assert m.get(60) == [1, 2]
        assert isinstance(m, std_pool.MapResult) and isinstance(m, std_pool.ApplyResult)
        assert isinstance(m, mod.MapResult) and isinstance(m, mod.ApplyResult)
        assert issubclass(mod.MapResult, mod.ApplyResult)
        assert issubclass(mod.MapResult, std_pool.MapResult)

        it = pool.imap(abs, [-1, -2])
        assert isinstance(it, std_pool.IMapIterator) and isinstance(it, mod.IMapIterator)
        assert not isinstance(it, std_pool.IMapUnorderedIterator)
        assert list(it) == [1, 2]
        it = pool.imap_unordered(abs, [-1, -2])
        assert isinstance(it, std_pool.IMapUnorderedIterator)
        assert isinstance(it, std_pool.IMapIterator)
        assert isinstance(it, mod.IMapUnorderedIterator) and isinstance(it, mod.IMapIterator)
        assert sorted(it) == [1, 2]
        assert issubclass(mod.IMapUnorderedIterator, std_pool.IMapUnorderedIterator)


def test_fastmp_apply_result_stays_the_c_type():
    # isinstance holds through __class__; the object itself is still the lean C type
    import fastmp
    from fastmp import _core
    with fastmp.Pool(1) as pool:
        r = pool.apply_async(abs, (-3,))
        assert r.get(60) == 3
        assert type(r) is _core.ApplyResult
        assert r.__class__ is fastmp.pool.ApplyResult
        assert not hasattr(r, "__dict__") and not gc.is_tracked(r)
        m = pool.map_async(abs, [1])
        m.get(60)
        assert m.__class__ is type(m) is fastmp.pool.MapResult


def test_threadpool_is_a_subclass_of_pool(mp):
    mod = _pool_module(mp)
    assert issubclass(mod.ThreadPool, mod.Pool)
    assert issubclass(mod.ThreadPool, std_pool.ThreadPool)
    assert issubclass(mod.ThreadPool, std_pool.Pool)
    with mod.ThreadPool(2) as tp:
        assert isinstance(tp, mod.Pool) and isinstance(tp, std_pool.Pool)
        assert tp.map(abs, [-1, -2]) == [1, 2]
        assert tp.apply_async(abs, (-5,)).get(60) == 5
        assert list(tp.imap(abs, [-3])) == [3]
        assert tp._processes == 2
        tp.close()
        tp.join()


@pytest.mark.parametrize("processes", [1, 3])
def test_pool_subclass_process_hook(mp, processes):
    # Pool.Process stays the hook a subclass overrides, as in the stdlib
    made = []

    class MyPool(_pool_module(mp).Pool):
        @staticmethod
        def Process(ctx, *args, **kwds):
            made.append(1)
            return ctx.Process(*args, **kwds)

    with MyPool(processes) as pool:
        assert isinstance(pool, std_pool.Pool)
        assert pool.map(abs, [-1]) == [1]
        assert len(made) >= processes
