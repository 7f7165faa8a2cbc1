"""Pool: the stdlib's semantics (every method, every start method, the stdlib as reference),
and what fastmp adds (dead workers, unpicklable results, raising initializers, cleanup).

``make_pool(ctx, ...)`` builds ``fastmp.pool.Pool(..., context=ctx)`` for fastmp contexts and
``ctx.Pool(...)`` for the stdlib's, so the same scenario runs against both.
"""
import gc
import os
import pickle
import signal
import sys
import threading
import time

import pytest

import _pool_targets as targets
import fastmp
import fastmp.futures
import fastmp.pool
from conftest import is_fastmp

WAIT = 60.0         # generous bound for any result that should come
SHORT = 0.2         # a timeout meant to expire

pytestmark = pytest.mark.timeout(120)


def make_pool(ctx, *args, **kwargs):
    if is_fastmp(ctx):
        return fastmp.pool.Pool(*args, context=ctx, **kwargs)
    return ctx.Pool(*args, **kwargs)


def mod_of(ctx):
    if is_fastmp(ctx):
        return fastmp
    import multiprocessing
    return multiprocessing


@pytest.fixture
def pool2(ctx):
    pool = make_pool(ctx, 2)
    yield pool
    pool.terminate()
    pool.join()


# ---------------------------------------------------------------- apply

def test_apply_and_apply_async(ctx, pool2):
    assert pool2.apply(targets.square, (7,)) == 49
    assert pool2.apply(targets.kwargs, (1,), {"b": 2, "c": 3}) == (1, 2, 3)
    r = pool2.apply_async(targets.add, (2, 3))
    assert r.get(WAIT) == 5
    assert r.ready() and r.successful()
    rs = [pool2.apply_async(targets.square, (i,)) for i in range(200)]
    assert [r.get(WAIT) for r in rs] == [i * i for i in range(200)]


def test_callbacks_run_in_the_parent(ctx, pool2):
    seen, errors = [], []
    done = threading.Event()

    def cb(value):
        seen.append((value, os.getpid()))

    def ecb(exc):
        errors.append((type(exc), os.getpid()))
        done.set()

    r1 = pool2.apply_async(targets.square, (4,), callback=cb)
    r2 = pool2.apply_async(targets.raise_value, (1,), error_callback=ecb)
    assert r1.get(WAIT) == 16
    with pytest.raises(ValueError):
        r2.get(WAIT)
    # stdlib: the callback has run before get() returns
    assert seen == [(16, os.getpid())]
    assert done.wait(WAIT)
    assert errors == [(ValueError, os.getpid())]
    got = []
    m = pool2.map_async(targets.square, range(10), callback=got.append)
    assert m.get(WAIT) == [i * i for i in range(10)]
    assert got == [[i * i for i in range(10)]]


def test_get_timeout_ready_successful(ctx, pool2):
    mp = mod_of(ctx)
    r = pool2.apply_async(targets.sleep_for, (1.0,))
    assert not r.ready()
    with pytest.raises(ValueError):
        r.successful()
    t0 = time.monotonic()
    with pytest.raises(mp.TimeoutError):
        r.get(SHORT)
    assert time.monotonic() - t0 < WAIT / 2
    r.wait(WAIT)
    assert r.ready() and r.successful() and r.get() == 1.0


def test_apply_async_burst_with_callbacks(ctx, pool2):
    # every callback runs once, in the parent, before its get() returns; the C path takes
    # plain, keyword and non-tuple arguments alike
    seen, errors = [], []
    main = threading.get_ident()
    rs = []
    for i in range(3000):
        if i % 3 == 0:
            rs.append(pool2.apply_async(targets.square, (i,), callback=seen.append))
        elif i % 3 == 1:
            rs.append(pool2.apply_async(targets.kwargs, [i], {"c": i}, callback=seen.append))
        else:
            rs.append(pool2.apply_async(targets.fail_on, (i, i), error_callback=errors.append))
    out = []
    for i, r in enumerate(rs):
        if i % 3 == 2:
            with pytest.raises(ValueError):
                r.get(WAIT)
            assert not r.successful()
        else:
            out.append(r.get(WAIT))
    want = [i * i if i % 3 == 0 else (i, 0, i) for i in range(3000) if i % 3 != 2]
    assert out == want
    assert sorted(seen, key=repr) == sorted(want, key=repr)
    assert len(errors) == 1000 and all(type(e) is ValueError for e in errors)
    assert threading.get_ident() == main


def test_result_wait_get_keywords(ctx, pool2):
    mp = mod_of(ctx)
    r = pool2.apply_async(targets.sleep_for, (1.0,))
    assert r.wait(timeout=SHORT) is None and not r.ready()
    with pytest.raises(mp.TimeoutError):
        r.get(timeout=SHORT)
    with pytest.raises(TypeError):
        r.get(timeout="soon")
    with pytest.raises(TypeError):
        r.get(SHORT, "extra")
    assert r.get(timeout=WAIT) == 1.0
    assert r.get(timeout="not looked at once ready") == 1.0
    assert isinstance(r, mp.pool.AsyncResult)
    assert mp.pool.ApplyResult[int].__origin__ is mp.pool.ApplyResult


def test_exception_carries_remote_traceback(ctx, pool2):
    with pytest.raises(ValueError) as info:
        pool2.apply(targets.raise_value, (5,))
    assert info.value.args == ("bad item 5",)
    cause = info.value.__cause__
    assert type(cause).__name__ == "RemoteTraceback"
    assert "raise_value" in str(cause) and "bad item 5" in str(cause)
    r = pool2.apply_async(targets.raise_value, (6,))
    r.wait(WAIT)
    assert r.ready() and not r.successful()


# ---------------------------------------------------------------- map and friends

@pytest.mark.parametrize("chunksize", [None, 1, 3, 1000])
def test_map_and_starmap(ctx, pool2, chunksize):
    data = list(range(101))
    assert pool2.map(targets.square, data, chunksize) == [x * x for x in data]
    assert pool2.map(targets.square, iter(data), chunksize) == [x * x for x in data]
    pairs = [(i, 2 * i) for i in range(57)]
    assert pool2.starmap(targets.add, pairs, chunksize) == [3 * i for i in range(57)]
    assert pool2.starmap_async(targets.add, pairs, chunksize).get(WAIT) == \
        [3 * i for i in range(57)]
    assert pool2.map_async(targets.square, data, chunksize).get(WAIT) == [x * x for x in data]


def _same_items(a, b):
    """Equal, item by item, with the same exact types (and -0.0 and NaN kept)."""
    import math
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert type(x) is type(y), (x, y)
        if type(x) is float and (math.isnan(x) or math.isnan(y)):
            assert math.isnan(x) and math.isnan(y)
        else:
            assert x == y and (type(x) is not float or math.copysign(1, x) == math.copysign(1, y))


def test_map_results_keep_exact_types(ctx, pool2):
    # map chunks of all-int or all-float results travel packed (fastmp); anything else, and
    # ints beyond 64 bits, pickled: the caller sees the same values and exact types either way
    ints = list(range(-10**6, 10**6, 997)) + [2**31, 2**62, -2**63, 2**63 - 1, 0, -1]
    floats = [0.0, -0.0, 1.5, float("inf"), float("-inf"), float("nan"), 1e308, 5e-324] * 5
    bools = [True, False] * 20
    huge = [1, 2, 3] * 10 + [2**63, -2**63 - 1, 10**30] + [4] * 20
    mixed = [1, 2.0] * 20
    for data in (ints, floats, bools, huge, mixed, ints + floats + bools):
        for chunksize in (None, 7, 50, len(data)):
            _same_items(pool2.map(targets.identity, data, chunksize), data)
    _same_items(list(pool2.imap(targets.identity, ints, 50)), ints)
    finite = [x for x in floats if x == x]       # sorted() needs no NaN
    key = lambda x: (x, str(x))                  # noqa: E731  (-0.0 before 0.0, always)
    _same_items(sorted(pool2.imap_unordered(targets.identity, finite, 20), key=key),
                sorted(finite, key=key))
    starmapped = pool2.starmap(targets.add, [(i, i) for i in range(300)], 60)
    _same_items(starmapped, [2 * i for i in range(300)])
    # a chunk too large for the ring travels in a segment of its own, packed too
    big = list(range(300_000))
    _same_items(pool2.map(targets.identity, big, len(big)), big)
    assert pool2.map(targets.identity, [0.5] * 300_000, 300_000) == [0.5] * 300_000


def test_map_empty_and_errors(ctx, pool2):
    assert pool2.map(targets.square, []) == []
    assert pool2.map_async(targets.square, []).get(WAIT) == []
    assert pool2.starmap(targets.add, []) == []
    with pytest.raises(ValueError, match="bad item 3"):
        pool2.map(targets.fail_on, range(10), chunksize=2)
    errs = []
    r = pool2.map_async(targets.fail_on, range(10), chunksize=1, error_callback=errs.append)
    with pytest.raises(ValueError):
        r.get(WAIT)
    assert len(errs) == 1 and isinstance(errs[0], ValueError)
    # the pool still works
    assert pool2.map(targets.square, range(5)) == [0, 1, 4, 9, 16]


def test_default_chunksize_formula(ctx):
    """The stdlib's: ceil(len / (4 * processes)); one task per chunk, seen in the results'
    grouping by worker pid when each task sleeps."""
    if not is_fastmp(ctx):
        pytest.skip("the formula is read from the fastmp object")
    pool = make_pool(ctx, 3)
    try:
        r = pool.map_async(targets.square, range(25))
        assert r._chunksize == 3          # ceil(25 / 12)
        assert r.get(WAIT) == [x * x for x in range(25)]
        assert pool.map_async(targets.square, range(24))._chunksize == 2
    finally:
        pool.terminate()
        pool.join()


@pytest.mark.parametrize("chunksize", [1, 4])
def test_imap_order(ctx, pool2, chunksize):
    data = list(range(300))
    assert list(pool2.imap(targets.square, data, chunksize)) == [x * x for x in data]
    gen = (x for x in data)
    assert list(pool2.imap(targets.square, gen, chunksize)) == [x * x for x in data]
    # slow early items must not reorder imap's output
    delays = [0.2, 0.0, 0.1, 0.0, 0.0, 0.05]
    assert list(pool2.imap(targets.sleep_for, delays, chunksize)) == delays
    out = list(pool2.imap_unordered(targets.square, data, chunksize))
    assert sorted(out) == [x * x for x in data]
    assert list(pool2.imap(targets.square, [], chunksize)) == []


def test_imap_next_timeout_and_errors(ctx, pool2):
    mp = mod_of(ctx)
    it = pool2.imap(targets.sleep_for, [1.0, 0.0])
    with pytest.raises(mp.TimeoutError):
        it.next(SHORT)
    assert it.next(WAIT) == 1.0
    assert it.next(WAIT) == 0.0
    with pytest.raises(StopIteration):
        it.next(WAIT)
    it = pool2.imap(targets.fail_on, range(6))
    assert [next(it) for _ in range(3)] == [0, 1, 4]
    with pytest.raises(ValueError, match="bad item 3"):
        next(it)
    assert list(it) == [16, 25]
    with pytest.raises(ValueError):
        pool2.imap(targets.square, range(3), 0)


def test_imap_iterable_that_raises(ctx, pool2):
    def gen():
        yield 1
        yield 2
        raise KeyError("input broke")

    it = pool2.imap(targets.square, gen())
    assert next(it) == 1
    assert next(it) == 4
    with pytest.raises(KeyError):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


# ---------------------------------------------------------------- lifecycle

def test_close_join_and_state_errors(ctx):
    pool = make_pool(ctx, 2)
    results = [pool.apply_async(targets.slow_square, (i, 0.02)) for i in range(10)]
    with pytest.raises(ValueError):
        pool.join()            # still running
    pool.close()
    with pytest.raises(ValueError):
        pool.apply_async(targets.square, (1,))
    with pytest.raises(ValueError):
        pool.map(targets.square, [1])
    pool.join()
    # close() lets queued work finish
    assert [r.get(0) for r in results] == [i * i for i in range(10)]
    assert pool._pool == [] or all(p.exitcode is not None for p in pool._pool)


def test_context_manager_terminates(ctx):
    with make_pool(ctx, 2) as pool:
        assert pool.map(targets.square, range(4)) == [0, 1, 4, 9]
        workers = list(pool._pool)
    pool.join()
    for p in workers:
        assert p.exitcode is not None
    with pytest.raises(ValueError):
        pool.apply_async(targets.square, (1,))


@pytest.mark.timeout(60)
def test_terminate_is_prompt(ctx):
    pool = make_pool(ctx, 2)
    for _ in range(4):
        pool.apply_async(targets.sleep_for, (30,))
    time.sleep(0.3)
    workers = list(pool._pool)
    t0 = time.monotonic()
    pool.terminate()
    pool.join()
    assert time.monotonic() - t0 < 10
    for p in workers:
        assert p.exitcode is not None


def test_initializer_and_maxtasksperchild(ctx):
    pool = make_pool(ctx, 2, initializer=targets.set_state, initargs=("ready",))
    try:
        assert pool.map(targets.get_state, range(4)) == ["ready"] * 4
    finally:
        pool.close()
        pool.join()
    pool = make_pool(ctx, 1, maxtasksperchild=2)
    try:
        pids = [pool.apply_async(targets.getpid).get(WAIT) for _ in range(6)]
        assert len(set(pids)) == 3           # a new worker every two tasks
        assert pool.map(targets.square, range(10), chunksize=1) == [x * x for x in range(10)]
    finally:
        pool.close()
        pool.join()


def test_argument_errors(ctx):
    with pytest.raises(ValueError):
        make_pool(ctx, 0)
    if is_fastmp(ctx) or sys.version_info >= (3, 10):
        # the stdlib checks maxtasksperchild from 3.10 on (3.9's workers fail, one after the
        # other, for ever)
        with pytest.raises(ValueError):
            make_pool(ctx, 1, maxtasksperchild=0)
    with pytest.raises(TypeError):
        make_pool(ctx, 1, initializer=3)
    pool = make_pool(ctx, 1)
    try:
        with pytest.raises(NotImplementedError):
            pickle.dumps(pool)
        assert "state=RUN" in repr(pool) and "pool_size=1" in repr(pool)
    finally:
        pool.terminate()
        pool.join()


def test_unpicklable_result_is_maybe_encoding_error(ctx, pool2):
    mp = mod_of(ctx)
    with pytest.raises(mp.pool.MaybeEncodingError) as info:
        pool2.apply(targets.unpicklable_result)
    assert "lock" in str(info.value).lower()
    with pytest.raises(mp.pool.MaybeEncodingError):
        pool2.map(targets.unpicklable_result, range(3))
    assert pool2.apply(targets.square, (3,)) == 9


def test_unpicklable_argument_fails_its_task(ctx, pool2):
    r = pool2.apply_async(targets.identity, (threading.Lock(),))
    with pytest.raises(Exception):
        r.get(WAIT)
    assert pool2.apply(targets.square, (3,)) == 9


# ---------------------------------------------------------------- beyond the stdlib (fastmp)

def test_killed_worker_fails_only_its_task(fastmp_ctx):
    pool = fastmp.pool.Pool(2, context=fastmp_ctx)
    try:
        slow = [pool.apply_async(targets.slow_square, (i, 0.3)) for i in range(4)]
        r = pool.apply_async(targets.kill_self)
        with pytest.raises(fastmp.pool.WorkerLostError, match="SIGKILL"):
            r.get(WAIT)
        assert [s.get(WAIT) for s in slow] == [0, 1, 4, 9]
        # replaced: the pool carries on with two workers
        assert pool.map(targets.square, range(20)) == [x * x for x in range(20)]
        deadline = time.monotonic() + WAIT
        while len([p for p in pool._pool if p.is_alive()]) != 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = pool.apply_async(targets.die, (3,))
        with pytest.raises(fastmp.pool.WorkerLostError, match="exit code 3"):
            r.get(WAIT)
        with pytest.raises(fastmp.pool.WorkerLostError):
            pool.map(targets.die_on, range(8), chunksize=1)
        assert pool.apply(targets.square, (5,)) == 25
    finally:
        pool.terminate()
        pool.join()


def test_result_unpicklable_in_parent_fails_its_task(fastmp_ctx):
    pool = fastmp.pool.Pool(1, context=fastmp_ctx)
    try:
        with pytest.raises(TypeError):
            pool.apply(targets.raise_unpicklable_in_parent)
        assert pool.apply(targets.square, (4,)) == 16
    finally:
        pool.terminate()
        pool.join()


def test_initializer_that_raises_breaks_the_pool(fastmp_ctx):
    pool = fastmp.pool.Pool(2, initializer=targets.init_raise, initargs=("no db",),
                            context=fastmp_ctx)
    try:
        with pytest.raises(fastmp.pool.InitializerError, match="no db") as info:
            pool.map(targets.square, range(10))
        assert isinstance(info.value.__cause__, RuntimeError)
        with pytest.raises(fastmp.pool.InitializerError):
            pool.apply(targets.square, (1,))
    finally:
        pool.terminate()
        pool.join()


@pytest.mark.timeout(60)
def test_terminate_leaves_nothing_behind(fastmp_ctx):
    pool = fastmp.pool.Pool(2, context=fastmp_ctx)
    name = pool._dispatcher.name
    pool.map(targets.square, range(10))
    for _ in range(3):
        pool.apply_async(targets.sleep_for, (30,))
    pids = [p.pid for p in pool._pool]
    pool.terminate()
    pool.join()
    assert not os.path.exists("/dev/shm/" + name.lstrip("/"))
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)      # reaped: no zombie left
    pool = fastmp.pool.Pool(1, context=fastmp_ctx)
    name = pool._dispatcher.name
    pool.close()
    pool.join()
    assert not os.path.exists("/dev/shm/" + name.lstrip("/"))


@pytest.mark.timeout(60)
def test_ctrl_c_during_map(fastmp_ctx):
    pool = fastmp.pool.Pool(2, context=fastmp_ctx)
    try:
        timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            pool.map(targets.sleep_for, [5] * 8, chunksize=1)
        assert time.monotonic() - t0 < 4
    finally:
        pool.terminate()
        pool.join()


@pytest.mark.parametrize("call", ["map", "apply", "get", "future"])
def test_ctrl_c_delivered_to_another_thread(fastmp_ctx, call):
    """SIGINT handled by a thread other than the waiting main thread (the kernel picks any
    thread of the process): the main thread's wait is not interrupted, yet it must raise
    KeyboardInterrupt promptly, as it does when the signal lands on it."""
    pool = fastmp.pool.Pool(2, context=fastmp_ctx)
    ex = fastmp.futures.ProcessPoolExecutor(1, mp_context=fastmp_ctx)
    parked = threading.Event()
    other = threading.Thread(target=parked.wait, daemon=True)
    other.start()
    try:
        timer = threading.Timer(0.5, signal.pthread_kill, (other.ident, signal.SIGINT))
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            if call == "map":
                pool.map(targets.sleep_for, [5] * 8, chunksize=1)
            elif call == "apply":
                pool.apply(targets.sleep_for, (5,))
            elif call == "get":
                pool.apply_async(targets.sleep_for, (5,)).get(30)
            else:
                ex.submit(targets.sleep_for, 5).result(30)
        assert time.monotonic() - t0 < 4
    finally:
        parked.set()
        for p in list(ex._processes.values()):
            p.kill()
        ex.shutdown(wait=True)
        pool.terminate()
        pool.join()


def test_lambdas_with_cloudpickle(fastmp_ctx):
    pytest.importorskip("cloudpickle")
    offset = 10
    pool = fastmp.pool.Pool(2, context=fastmp_ctx)
    try:
        assert pool.map(lambda x: x + offset, range(5)) == [10, 11, 12, 13, 14]
        assert pool.apply(lambda: offset * 2) == 20
    finally:
        pool.close()
        pool.join()


def test_abandoned_pool_is_collected(fastmp_ctx):
    pool = fastmp.pool.Pool(1, context=fastmp_ctx)
    assert pool.apply(targets.square, (3,)) == 9
    workers = list(pool._pool)
    name = pool._dispatcher.name
    pool.close()
    pool.join()
    del pool
    gc.collect()
    assert all(p.exitcode is not None for p in workers)
    assert not os.path.exists("/dev/shm/" + name.lstrip("/"))


def test_progress_bar(fastmp_ctx, capsys):
    pytest.importorskip("tqdm")
    pool = fastmp.pool.Pool(2, context=fastmp_ctx)
    try:
        assert pool.map(targets.square, range(50), progress=True) == [x * x for x in range(50)]
        assert list(pool.imap(targets.square, range(20), progress={"desc": "sq"})) == \
            [x * x for x in range(20)]
        err = capsys.readouterr().err
        assert "50/50" in err and "sq" in err and "20/20" in err
    finally:
        pool.close()
        pool.join()


@pytest.mark.parametrize("size", [3 << 20])
def test_large_arguments_and_results(ctx, size):
    """Larger than a ring record: they travel in segments of their own (fastmp)."""
    before = set(os.listdir("/dev/shm"))
    pool = make_pool(ctx, 2)
    try:
        data = b"y" * size
        assert pool.apply(targets.length, (data,)) == size
        assert pool.apply(targets.big, (size,)) == b"x" * size
        assert pool.map(targets.length, [data, b"z", data], chunksize=1) == [size, 1, size]
        out = pool.map(targets.big, [10, size], chunksize=1)
        assert [len(x) for x in out] == [10, size]
    finally:
        pool.close()
        pool.join()
    if is_fastmp(ctx):
        # no segment of a large task or result is left (they are `size` bytes and a bit;
        # other processes on the machine may create fastmp segments meanwhile, never these)
        left = []
        for n in set(os.listdir("/dev/shm")) - before:
            try:
                if n.startswith("fastmp-") and size <= os.path.getsize("/dev/shm/" + n) \
                        <= size + (64 << 10):
                    left.append(n)
            except FileNotFoundError:
                pass
        assert left == []


@pytest.mark.timeout(60)
def test_workers_leave_when_the_parent_dies(fastmp_ctx, tmp_path):
    import subprocess
    import sys
    out = tmp_path / "pids"
    src = os.path.dirname(os.path.dirname(fastmp.__file__))
    tests = os.path.dirname(os.path.abspath(__file__))
    code = (f"import sys; sys.path[:0] = [{src!r}, {tests!r}]; import _pool_targets as t; "
            f"t.orphan_parent_main({fastmp_ctx.get_start_method()!r}, {str(out)!r})")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=50)
    pids = [int(x) for x in out.read_text().split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 20
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if _alive(pid)]
    assert alive == []


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.timeout(60)
def test_terminate_from_a_callback(fastmp_ctx):
    pool = fastmp.pool.Pool(2, context=fastmp_ctx)
    name = pool._dispatcher.name
    try:
        r = pool.apply_async(targets.square, (3,), callback=lambda _: pool.terminate())
        assert r.get(WAIT) == 9
        pool.join()
        deadline = time.monotonic() + WAIT
        while os.path.exists("/dev/shm/" + name.lstrip("/")):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        pool.terminate()
        pool.join()


def test_raising_callback_keeps_the_pool_going(fastmp_ctx, monkeypatch):
    # the stdlib's result thread dies on it (later results never come); fastmp reports the
    # exception through sys.unraisablehook and carries on
    import sys
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)

    def bad_callback(value):
        raise RuntimeError(f"callback saw {value}")

    with fastmp.pool.Pool(2, context=fastmp_ctx) as pool:
        r = pool.apply_async(targets.square, (5,), callback=bad_callback)
        assert r.get(WAIT) == 25 and r.successful()
        assert pool.apply(targets.square, (6,)) == 36
        assert [x.get(WAIT) for x in [pool.apply_async(targets.add, (i, 1)) for i in range(50)]] \
            == list(range(1, 51))
        m = pool.map_async(targets.square, range(4), callback=bad_callback)
        assert m.get(WAIT) == [0, 1, 4, 9]
        assert pool.apply(targets.square, (7,)) == 49
    assert [str(r.exc_value) for r in reported] == ["callback saw 25",
                                                    "callback saw [0, 1, 4, 9]"]
    assert all(type(r.exc_value) is RuntimeError and r.object is bad_callback for r in reported)


def test_imap_runs_out_of_order(ctx, pool2):
    # results come back in records of several tasks, from two workers, out of order: imap
    # still yields them in input order, imap_unordered yields each exactly once
    delays = [0.03 if i % 97 == 0 else 0.0 for i in range(2000)]
    assert list(pool2.imap(targets.sleep_for, delays)) == delays
    assert list(pool2.imap(targets.sleep_for, delays, 7)) == delays
    assert sorted(pool2.imap_unordered(targets.sleep_for, delays)) == sorted(delays)


@pytest.mark.timeout(60)
def test_worker_killed_before_recording_its_task(fastmp_ctx):
    # the worker dies between taking the task record off the ring and writing it into its
    # slot: the parent finds the record still held in its name and fails that task
    with fastmp.pool.Pool(2, context=fastmp_ctx) as pool:
        assert pool.apply(targets.square, (2,)) == 4
        pool._dispatcher.channel._debug_kill_next_taker()
        r = pool.apply_async(targets.square, (3,))
        with pytest.raises(fastmp.pool.WorkerLostError, match="SIGKILL"):
            r.get(WAIT)
        assert pool.apply(targets.square, (4,)) == 16
        assert sorted(pool.map(targets.square, range(20))) == [x * x for x in range(20)]


@pytest.mark.timeout(120)
def test_burst_results_handed_over_while_submitting(ctx, pool2):
    # a long burst: results pile up while the caller submits, and are handed over from inside
    # apply_async() itself; callbacks there may submit more tasks; each runs exactly once
    seen, nested = [], []

    def cb(value):
        seen.append(value)
        if value % 1000 == 0:
            nested.append(pool2.apply_async(targets.square, (value,)))

    rs = [pool2.apply_async(targets.square, (i,), callback=cb) for i in range(30000)]
    assert [r.get(WAIT) for r in rs] == [i * i for i in range(30000)]
    assert sorted(seen) == [i * i for i in range(30000)]
    want = sorted((i * i) ** 2 for i in range(30000) if (i * i) % 1000 == 0)
    assert len(want) == 300
    assert sorted(r.get(WAIT) for r in nested) == want
