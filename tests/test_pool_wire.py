"""The pool channel's task records (csrc/pool_wire.h, csrc/pool.c), driven directly.

PoolChannel.put() packs several short tasks into one record (a batch); a batch that grows
past the largest record is sent one task per record instead.  These tests pin that on both
paths that flush a batch: the one at the end of the items (or when the batch is full) and
the one before an item that cannot be pickled.  Nothing consumes the ring here: the
channel is closed (which unlinks it) at the end of each test.
"""
import functools
import operator
import pickle

import pytest

import fastmp.pool
from fastmp import _core

pytestmark = pytest.mark.timeout(120)

APPLY = 0


class PickleRefused(Exception):
    pass


class Unpicklable:
    def __reduce__(self):
        raise PickleRefused("this item cannot be pickled")


@pytest.fixture
def channel():
    ch = _core.PoolChannel(1, task_capacity=64 * 1024)
    yield ch
    ch.close()


def _batch_of_five(channel):
    """Five items, each well under a quarter of a record (so none travels as a large
    entry), that together do not fit in one record."""
    item = b"x" * (channel.max_record // 5)
    assert len(pickle.dumps(item, -1)) < channel.max_record // 4
    assert 5 * len(pickle.dumps(item, -1)) > channel.max_record
    return [item] * 5


def test_oversized_batch_at_the_end_is_sent_task_by_task(channel):
    items = _batch_of_five(channel)
    done, error = channel.put(1, APPLY, 0, pickle.dumps(len), items, 64, False)
    assert (done, error) == (5, None)


def test_oversized_batch_before_an_unpicklable_item_is_sent_task_by_task(channel):
    # the batch is flushed because items[5] fails to pickle: its five tasks are posted
    # (one per record), and the error reported is items[5]'s own
    items = _batch_of_five(channel) + [Unpicklable()]
    done, error = channel.put(1, APPLY, 0, pickle.dumps(len), items, 64, False)
    assert done == 5
    assert type(error) is PickleRefused
    assert str(error) == "this item cannot be pickled"


def test_a_single_task_too_large_still_fails_as_too_large(channel):
    # a function pickle that leaves no room for even one entry: the first task fails
    func = pickle.dumps(b"f" * channel.max_record)
    done, error = channel.put(1, APPLY, 0, func, [()], 64, False)
    assert done == 0
    assert type(error) is ValueError
    assert str(error).startswith("task too large for the pool's channel")


def test_pool_map_of_batched_tasks_reports_the_unpicklable_item(ctx):
    # Short tasks (measured) are batched two per record here; the function's pickle is so
    # large that two tasks do not fit in one record though one does.  The batch before the
    # unpicklable item must be posted task by task: map() raises that item's error, as the
    # stdlib's does, not "task too large" for a task that only shared a record.
    func = functools.partial(operator.is_, b"f" * 470_000)
    items = [b"i" * 30_000] * 4 + [Unpicklable()]
    probe = _core.PoolChannel(1)
    max_record = probe.max_record
    probe.close()
    single = len(pickle.dumps(func, -1)) + len(pickle.dumps((items[0],), -1))
    assert single + 200 < max_record < single + len(pickle.dumps((items[0],), -1))
    if type(ctx).__module__.startswith("fastmp"):
        pool = fastmp.pool.Pool(1, context=ctx)
    else:
        pool = ctx.Pool(1)
    try:
        assert pool.map(abs, range(-200, 0)) == list(range(200, 0, -1))   # measured short
        with pytest.raises(PickleRefused, match="this item cannot be pickled"):
            pool.map(func, items, chunksize=1)
        assert pool.map(func, items[:4], chunksize=1) == [False] * 4
    finally:
        pool.terminate()
        pool.join()
