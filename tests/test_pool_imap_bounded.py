"""Pool.imap / imap_unordered read their input ahead of the consumer by a bounded amount.

The tasks posted and not yet taken from the iterator (running, queued, or done and waiting)
stay within ``buffersize`` tasks (default: 128 per worker), each a chunk of ``chunksize``
items.  The cases where a bound could deadlock (close+join without consuming, terminate, an
iterator dropped half-way, an input that raises, two imaps consumed in turn) run against the
stdlib as the reference where the stdlib ends at all.
"""
import gc
import itertools
import os
import sys
import threading
import time

import pytest

import _pool_targets as targets
import fastmp
import fastmp.pool
from conftest import is_fastmp

WAIT = 60.0
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["stdlib", "fastmp"])
def fctx(request):
    """The fork context of the module under test (one start method: the bound is the
    parent's business, the same for every start method)."""
    if request.param == "stdlib":
        import multiprocessing
        return multiprocessing.get_context("fork")
    return fastmp.get_context("fork")


def make_pool(ctx, n=2):
    if is_fastmp(ctx):
        return fastmp.pool.Pool(n, context=ctx)
    return ctx.Pool(n)


def imap(pool, func, iterable, chunksize=1, unordered=False, **fastmp_only):
    """pool.imap(...) (or imap_unordered); the keywords the stdlib's Pool lacks (buffersize)
    go to fastmp only."""
    method = pool.imap_unordered if unordered else pool.imap
    if isinstance(pool, fastmp.pool.Pool):
        return method(func, iterable, chunksize, **fastmp_only)
    return method(func, iterable, chunksize)


class Counting:
    """An endless (or n-long) input that counts the items drawn from it and whether it was
    closed (a dropped generator is closed when the last reference goes)."""

    def __init__(self, n=None):
        self.drawn = 0
        self.closed = False
        self.n = n

    def __iter__(self):
        try:
            for i in (itertools.count() if self.n is None else range(self.n)):
                self.drawn = i + 1
                yield i
        finally:
            self.closed = True


def settle(read, secs=1.0, limit=5.0):
    """read() once it has not changed for secs (at most limit seconds)."""
    end = time.monotonic() + limit
    last = read()
    stable_since = time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.05)
        now = read()
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= secs:
            break
    return last


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def feeder_threads():
    return [t for t in threading.enumerate() if t.name == "fastmp-pool-feeder" and t.is_alive()]


# ---------------------------------------------------------------- the bound

@pytest.mark.parametrize("unordered", [False, True], ids=["imap", "imap_unordered"])
@pytest.mark.parametrize("chunksize", [1, 10])
def test_paused_consumer_exact_bound(unordered, chunksize):
    src = Counting()
    with fastmp.Pool(2) as pool:
        it = imap(pool, targets.square, iter(src), chunksize, unordered, buffersize=8)
        got = [next(it) for _ in range(3)]
        if not unordered:
            assert got == [0, 1, 4]
        # tasks posted and not taken: at most 8 (each of chunksize items); the feeder refills
        # only once half of that is free, so after taking fewer than 4 tasks (3 here) it has
        # drawn exactly 8 tasks' worth
        assert settle(lambda: src.drawn) == 8 * chunksize
        time.sleep(0.5)
        assert src.drawn == 8 * chunksize
        # the consumer resumes: results flow again, in order for imap
        more = [next(it) for _ in range(2000)]
        if not unordered:
            assert more == [x * x for x in range(3, 2003)]
        else:
            assert len(set(got + more)) == 2003
        assert 2003 <= src.drawn <= 2003 + 8 * chunksize
        del it


def test_default_bound_scales_with_processes_and_chunksize():
    src = Counting()
    with fastmp.Pool(2) as pool:
        it = pool.imap(targets.square, iter(src), chunksize=10)
        assert [next(it) for _ in range(5)] == [0, 1, 4, 9, 16]
        # default: 128 tasks per worker, each a chunk of 10 items
        assert settle(lambda: src.drawn) == 2 * 128 * 10
        del it


def test_paused_consumer_memory_stays_flat():
    src = Counting()
    with fastmp.Pool(2) as pool:
        it = pool.imap(targets.big, (10_000 for _ in src))     # 10 kB per result
        assert len(next(it)) == 10_000
        end = time.monotonic() + WAIT
        while src.drawn < 256 and time.monotonic() < end:
            time.sleep(0.02)
        time.sleep(0.5)
        # the bound (256 tasks here) is reached: no more input is read, nothing grows
        assert src.drawn == 256
        before = rss_bytes()
        time.sleep(3.0)
        grown = rss_bytes() - before
        assert src.drawn == 256
        assert grown < 20 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB with a paused consumer"
        # resuming: everything comes, at once
        t0 = time.monotonic()
        assert all(len(next(it)) == 10_000 for _ in range(3000))
        assert time.monotonic() - t0 < WAIT
        del it


@pytest.mark.parametrize("bad, exc", [(0, ValueError), (-3, ValueError), (1.5, TypeError),
                                      ("4", TypeError)])
def test_buffersize_validation(bad, exc):
    with fastmp.Pool(1) as pool:
        with pytest.raises(exc, match="buffersize"):
            pool.imap(targets.square, range(3), buffersize=bad)
        with pytest.raises(exc, match="buffersize"):
            pool.imap_unordered(targets.square, range(3), buffersize=bad)
        assert list(pool.imap(targets.square, range(3), buffersize=1)) == [0, 1, 4]
        assert list(pool.imap(targets.square, range(3), buffersize=None)) == [0, 1, 4]
        assert pool._cache == {}


@pytest.mark.parametrize("unordered", [False, True], ids=["imap", "imap_unordered"])
def test_known_length_input_is_bounded_too(unordered):
    # a range (or list) longer than the bound goes through the same read-ahead
    with fastmp.Pool(2) as pool:
        it = imap(pool, targets.square, range(10**6), 1, unordered, buffersize=16)
        next(it)
        assert len(pool._cache) == 1
        sink = next(iter(pool._cache.values()))
        end = time.monotonic() + WAIT
        while sink._posted < 16 and time.monotonic() < end:
            time.sleep(0.02)
        time.sleep(0.5)
        assert sink._posted == 16
        out = [next(it) for _ in range(1000)]
        if not unordered:
            assert out == [x * x for x in range(1, 1001)]
        del it


# ---------------------------------------------------------------- no deadlock

@pytest.mark.parametrize("unordered", [False, True], ids=["imap", "imap_unordered"])
@pytest.mark.parametrize("chunksize", [1, 3])
def test_close_join_without_consuming(fctx, unordered, chunksize):
    # the stdlib runs every task before join() returns, consumed or not; so does fastmp
    # (join lifts the bound)
    pool = make_pool(fctx)
    src = Counting(1000)
    it = imap(pool, targets.square, iter(src), chunksize, unordered, buffersize=4)
    pool.close()
    pool.join()
    assert src.drawn == 1000 and src.closed
    out = list(it)
    if unordered:
        out.sort()
    assert out == [x * x for x in range(1000)]


@pytest.mark.parametrize("unordered", [False, True], ids=["imap", "imap_unordered"])
def test_terminate_with_paused_consumer(fctx, unordered):
    if not is_fastmp(fctx) and sys.version_info < (3, 11):
        # the stdlib's own terminate() can hang here before 3.11: its task handler, reading
        # the endless input, blocks putting into the pipe of workers that are gone
        pytest.skip("the stdlib's Pool.terminate() with an endless imap input hangs before 3.11")
    pool = make_pool(fctx)
    src = Counting()
    it = imap(pool, targets.square, iter(src), 1, unordered, buffersize=4)
    next(it)
    time.sleep(0.3)
    t0 = time.monotonic()
    pool.terminate()
    pool.join()
    assert time.monotonic() - t0 < WAIT
    drawn = src.drawn
    time.sleep(0.3)
    assert src.drawn == drawn       # nothing reads the input any more
    if is_fastmp(fctx):
        assert drawn == 4
        end = time.monotonic() + 10
        while feeder_threads() and time.monotonic() < end:
            time.sleep(0.05)
        assert feeder_threads() == []
    del it


@pytest.mark.parametrize("unordered", [False, True], ids=["imap", "imap_unordered"])
@pytest.mark.parametrize("chunksize", [1, 5])
def test_dropped_iterator_stops_its_job(unordered, chunksize):
    # beyond the stdlib, which keeps reading the input (forever, for an endless one) and
    # keeps the job in its cache: here the rest of the input is not read, the generator is
    # closed, the job leaves the cache, and close()+join() end at once
    pool = fastmp.Pool(2)
    try:
        src = Counting()
        it = imap(pool, targets.square, iter(src), chunksize, unordered, buffersize=6)
        # two taken: fewer than the refill mark (3 tasks), so the feeder stays asleep
        for _ in range(2):
            next(it)
        end = time.monotonic() + WAIT
        while src.drawn < 6 * chunksize and time.monotonic() < end:
            time.sleep(0.02)
        del it
        gc.collect()
        end = time.monotonic() + 10
        while not src.closed and time.monotonic() < end:
            time.sleep(0.02)
        assert src.closed
        assert src.drawn == 6 * chunksize
        assert pool._cache == {}
        assert pool._taskqueue.empty()
        # the pool still works, and ends without waiting for the dropped job
        assert list(pool.imap(targets.square, range(5))) == [0, 1, 4, 9, 16]
        pool.close()
        t0 = time.monotonic()
        pool.join()
        assert time.monotonic() - t0 < 10
        assert src.drawn == 6 * chunksize
        assert feeder_threads() == []
    finally:
        pool.terminate()


@pytest.mark.parametrize("unordered", [False, True], ids=["imap", "imap_unordered"])
@pytest.mark.parametrize("chunksize", [1, 3])
def test_input_that_raises(fctx, unordered, chunksize):
    # as the stdlib: the results of the items before, then the input's exception (for imap,
    # in its place: after every result before it), then the end; items of a chunk cut short
    # by the exception are lost
    def gen():
        for i in range(20):
            yield i
        raise KeyError("input broke")

    with make_pool(fctx) as pool:
        it = imap(pool, targets.square, gen(), chunksize, unordered, buffersize=2)
        outcomes = []
        while True:
            try:
                outcomes.append(next(it))
            except StopIteration:
                break
            except KeyError as exc:
                outcomes.append(("raised", exc.args))
        expect = [x * x for x in range(20 - 20 % chunksize)] + [("raised", ("input broke",))]
        if unordered and chunksize > 1:
            # the chunks flattened by a generator: the exception, which may come before some
            # chunks' results, ends it (the stdlib's too)
            assert outcomes[-1] == ("raised", ("input broke",))
            assert len(set(outcomes[:-1])) == len(outcomes) - 1
            assert set(outcomes[:-1]) <= set(expect[:-1])
        elif unordered:
            assert sorted(outcomes, key=repr) == sorted(expect, key=repr)
        else:
            assert outcomes == expect
        # results still coming for a generator ended early leave the cache when they come
        # (stdlib) or when the iterator goes (fastmp)
        del it
        end = time.monotonic() + 10
        while pool._cache and time.monotonic() < end:
            time.sleep(0.02)
        assert pool._cache == {}


def test_two_imaps_consumed_in_turn(fctx):
    # zip() takes one result of each in turn: the second imap's input must be read while
    # the first one waits for room
    with make_pool(fctx) as pool:
        a = imap(pool, targets.square, iter(range(300)), buffersize=4)
        b = imap(pool, targets.identity, iter(range(300)), buffersize=4)
        assert list(zip(a, b)) == [(x * x, x) for x in range(300)]
        # the feeder finds each input's end on its own thread, once the consumer made room:
        # the pool forgets the jobs soon after, not necessarily before zip() returns
        deadline = time.monotonic() + 30
        while pool._cache and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pool._cache == {}
