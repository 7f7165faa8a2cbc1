"""ProcessPoolExecutor.map(..., buffersize=n): Python 3.14's bounded, lazy map, which fastmp has
on every Python version.  The stdlib runs the same bodies from 3.14 on (ids stdlib-...), and
is skipped before.

3.14's rule, which these tests pin down: map() reads and hands over the first n chunks; the
iterator, each time it moves to the next chunk, first reads and hands over one more chunk of
the input, then waits for the oldest one's results.  So after the consumer has entered k
chunks, exactly n + k chunks of the input have been read."""
import concurrent.futures as cf
import gc
import itertools
import sys
import time

import pytest

import _pool_targets as targets
import fastmp.futures
from conftest import is_fastmp

WAIT = 60.0

pytestmark = pytest.mark.timeout(120)

STDLIB_BUFFERSIZE = sys.version_info >= (3, 14)


def executor(ctx, *args, **kwargs):
    if not is_fastmp(ctx) and not STDLIB_BUFFERSIZE:
        pytest.skip("the stdlib's Executor.map has buffersize from Python 3.14 on")
    cls = fastmp.futures.ProcessPoolExecutor if is_fastmp(ctx) else cf.ProcessPoolExecutor
    return cls(*args, mp_context=ctx, **kwargs)


class Counted:
    """An endless input (0, 1, 2, ...) that counts the items read from it."""

    def __init__(self, stop=None, fail_at=None):
        self.read = 0
        self.stop = stop
        self.fail_at = fail_at

    def __iter__(self):
        for i in itertools.count():
            if i == self.fail_at:
                raise ValueError(f"bad input {i}")
            if i == self.stop:
                return
            self.read += 1
            yield i


@pytest.mark.parametrize("chunksize", [1, 3])
def test_endless_input_is_read_a_bounded_amount_ahead(ctx, chunksize):
    with executor(ctx, 2) as ex:
        src = Counted()
        it = ex.map(targets.square, src, chunksize=chunksize, buffersize=4)
        # map() itself reads the first 4 chunks
        assert src.read == 4 * chunksize
        got = [next(it) for _ in range(5)]
        assert got == [0, 1, 4, 9, 16]
        entered = -(-5 // chunksize)        # chunks the consumer has moved to
        assert src.read == (4 + entered) * chunksize
        # a paused consumer: nothing more is read behind its back
        time.sleep(0.5)
        assert src.read == (4 + entered) * chunksize
        # it resumes: results go on in order, the bound moves with it
        got = [next(it) for _ in range(3 * chunksize)]
        assert got == [i * i for i in range(5, 5 + 3 * chunksize)]
        entered = -(-(5 + 3 * chunksize) // chunksize)
        assert src.read == (4 + entered) * chunksize
        del it


@pytest.mark.parametrize("chunksize", [1, 4])
def test_results_in_order(ctx, chunksize):
    with executor(ctx, 2) as ex:
        assert list(ex.map(targets.square, range(50), chunksize=chunksize, buffersize=3)) == \
            [i * i for i in range(50)]
        # the later calls finish first; the results still come in the input's order
        secs = [0.3, 0.2, 0.1, 0.0, 0.0, 0.0]
        assert list(ex.map(targets.sleep_for, secs, chunksize=chunksize, buffersize=2)) == secs
        assert list(ex.map(targets.add, range(7), range(10, 30), chunksize=chunksize,
                           buffersize=5)) == [2 * i + 10 for i in range(7)]
        assert list(ex.map(targets.square, [], chunksize=chunksize, buffersize=1)) == []
        # a buffer larger than the input
        assert list(ex.map(targets.square, range(5), chunksize=chunksize, buffersize=100)) == \
            [i * i for i in range(5)]


def test_a_call_that_raises_ends_the_iterator(ctx):
    with executor(ctx, 2) as ex:
        it = ex.map(targets.fail_on, range(10), buffersize=2)
        assert [next(it) for _ in range(3)] == [0, 1, 4]
        with pytest.raises(ValueError, match="bad item 3"):
            next(it)
        with pytest.raises(StopIteration):
            next(it)


def test_input_exception_reaches_the_consumer(ctx):
    with executor(ctx, 2) as ex:
        # raised while the iterator reads ahead: after the results before it was read
        src = Counted(fail_at=6)
        it = ex.map(targets.square, src, buffersize=2)
        got = []
        with pytest.raises(ValueError, match="bad input 6"):
            for x in it:
                got.append(x)
        # read: 0..5; yielded: the results of 0..3 (4 and 5 were read ahead of the failure)
        assert got == [0, 1, 4, 9]
        assert src.read == 6
        # raised while map() reads the first chunks: map() raises it
        src = Counted(fail_at=1)
        with pytest.raises(ValueError, match="bad input 1"):
            ex.map(targets.square, src, buffersize=4)
        # the executor goes on
        assert list(ex.map(targets.square, range(4), buffersize=2)) == [0, 1, 4, 9]


def test_dropping_the_iterator_does_not_hang_shutdown(ctx):
    ex = executor(ctx, 2)
    src = Counted()
    it = ex.map(targets.slow_square, src, buffersize=4)
    assert next(it) == 0
    assert next(it) == 1
    del it
    gc.collect()
    t0 = time.monotonic()
    ex.shutdown(wait=True)
    assert time.monotonic() - t0 < WAIT
    assert src.read == 4 + 2


def test_after_shutdown_the_iterator_reads_no_more(ctx):
    with executor(ctx, 2) as ex:
        src = Counted()
        it = ex.map(targets.square, src, buffersize=2)
        assert next(it) == 0
    # the executor is shut down: handing over the next chunk raises, as submit() does
    with pytest.raises(RuntimeError, match="after shutdown"):
        next(it)
    assert src.read == 4     # the item read for it is lost, as in 3.14


def test_timeout(ctx):
    with executor(ctx, 1) as ex:
        it = ex.map(targets.sleep_for, [1.0, 1.0], timeout=0.2, buffersize=1)
        with pytest.raises(cf.TimeoutError):
            list(it)


def test_through_an_overridden_submit(ctx):
    base = fastmp.futures.ProcessPoolExecutor if is_fastmp(ctx) else cf.ProcessPoolExecutor
    if not is_fastmp(ctx) and not STDLIB_BUFFERSIZE:
        pytest.skip("the stdlib's Executor.map has buffersize from Python 3.14 on")
    calls = []

    class Counting(base):
        def submit(self, fn, /, *args, **kwargs):
            calls.append(fn)
            return super().submit(fn, *args, **kwargs)

    with Counting(2, mp_context=ctx) as ex:
        src = Counted()
        it = ex.map(targets.square, src, chunksize=2, buffersize=3)
        assert len(calls) == 3
        assert [next(it) for _ in range(3)] == [0, 1, 4]
        # two chunks entered: two more handed over
        assert len(calls) == 5
        assert src.read == 10
        del it


@pytest.mark.parametrize("bad, exc, message", [
    ("4", TypeError, "buffersize must be an integer or None"),
    (2.0, TypeError, "buffersize must be an integer or None"),
    (0, ValueError, "buffersize must be None or > 0"),
    (-1, ValueError, "buffersize must be None or > 0"),
])
def test_bad_buffersize(ctx, bad, exc, message):
    with executor(ctx, 1) as ex:
        src = Counted()
        with pytest.raises(exc, match=message):
            ex.map(targets.square, src, buffersize=bad)
        assert src.read == 0
        assert list(ex.map(targets.square, range(3), buffersize=None)) == [0, 1, 4]


class Unpicklable:
    def __call__(self, x):
        return x

    def __reduce__(self):
        raise TypeError("this function cannot be pickled")


def test_a_function_that_cannot_be_pickled_fails_the_first_result(ctx):
    with executor(ctx, 1) as ex:
        src = Counted()
        it = ex.map(Unpicklable(), src, buffersize=2)
        with pytest.raises(TypeError, match="cannot be pickled"):
            next(it)
        assert src.read == 3
        assert list(ex.map(targets.square, range(3), buffersize=1)) == [0, 1, 4]
