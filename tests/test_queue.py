"""Queue, JoinableQueue, SimpleQueue: the stdlib's semantics (the same scenario against the stdlib
and fastmp, with the ``ctx`` fixture), and what only fastmp does (``fastmp_ctx``): no feeder
thread (join before get, pickling errors in put), put_many/get_many, 100 MB items, unbounded
growth across processes, a producer killed in the middle of a put, cleanup of /dev/shm."""
import gc
import os
import pickle
import queue
import signal
import threading
import time

import pytest

import _queue_targets as targets
from conftest import shm_entries, shm_mapped_by_live_processes, start

WAIT = 30.0


def close(q):
    q.close()
    if hasattr(q, "join_thread"):
        q.join_thread()


# ---------------------------------------------------------------- in one process

def test_fifo_types_and_counts(ctx):
    q = ctx.Queue()
    items = [1, "two", (3, 4.5), {"k": [None, True]}, b"\x00" * 100, 2 ** 80, None]
    for it in items:
        q.put(it)
    assert q.qsize() == len(items)
    assert [q.get(timeout=WAIT) for _ in items] == items
    assert q.qsize() == 0
    with pytest.raises(queue.Empty):
        q.get(False)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.2)
    assert 0.19 <= time.monotonic() - t0 < 5
    with pytest.raises(queue.Empty):
        q.get(True, -1)                 # a negative timeout: do not wait
    close(q)


def test_maxsize_counts_items(ctx):
    q = ctx.Queue(3)
    assert not q.full()
    for i in range(3):
        q.put(b"x" * (1000 * i))    # sizes do not matter, the count does
    assert q.full()
    assert q.qsize() == 3
    with pytest.raises(queue.Full):
        q.put_nowait(9)
    with pytest.raises(queue.Full):
        q.put(9, False)
    t0 = time.monotonic()
    with pytest.raises(queue.Full):
        q.put(9, timeout=0.2)
    assert 0.19 <= time.monotonic() - t0 < 5
    assert q.get(timeout=WAIT) == b""
    assert not q.full()
    q.put(3)
    assert q.qsize() == 3
    assert [q.get(timeout=WAIT) for _ in range(3)] == [b"x" * 1000, b"x" * 2000, 3]
    close(q)


@pytest.mark.parametrize("maxsize", [0, -1, -100])
def test_maxsize_zero_or_negative_is_unbounded(ctx, maxsize):
    q = ctx.Queue(maxsize)
    for i in range(2000):
        q.put_nowait(i)
    assert not q.full()
    assert q.qsize() == 2000
    assert [q.get(timeout=WAIT) for _ in range(2000)] == list(range(2000))
    close(q)


def test_blocked_get_woken_by_put_from_thread(ctx):
    q = ctx.Queue()
    threading.Timer(0.1, q.put, ("late",)).start()
    t0 = time.monotonic()
    assert q.get(timeout=WAIT) == "late"
    assert time.monotonic() - t0 < WAIT / 2
    close(q)


def test_blocked_put_woken_by_get_from_thread(ctx):
    q = ctx.Queue(1)
    q.put("first")
    threading.Timer(0.1, q.get).start()
    q.put("second", timeout=WAIT)
    assert q.get(timeout=WAIT) == "second"
    close(q)


def test_close_then_use_raises_value_error(ctx):
    q = ctx.Queue()
    q.put(1)
    q.close()
    with pytest.raises(ValueError, match="is closed"):
        q.put(2)
    with pytest.raises(ValueError, match="is closed"):
        q.get()
    with pytest.raises(ValueError, match="is closed"):
        q.get_nowait()
    q.join_thread()
    q.cancel_join_thread()


def test_join_thread_needs_close(ctx):
    q = ctx.Queue()
    with pytest.raises(AssertionError):
        q.join_thread()
    close(q)


def test_joinable_task_done_and_join(ctx):
    q = ctx.JoinableQueue()
    with pytest.raises(ValueError, match="too many times"):
        q.task_done()
    q.join()                            # nothing unfinished: returns at once
    for i in range(5):
        q.put(i)
    for i in range(5):
        assert q.get(timeout=WAIT) == i
    done = threading.Event()

    def joiner():
        q.join()
        done.set()
    t = threading.Thread(target=joiner)
    t.start()
    for i in range(4):
        q.task_done()
    time.sleep(0.1)
    assert not done.is_set()            # one task still open
    q.task_done()
    t.join(WAIT)
    assert done.is_set()
    with pytest.raises(ValueError, match="too many times"):
        q.task_done()
    close(q)


def test_simple_queue(ctx):
    q = ctx.SimpleQueue()
    assert q.empty()
    q.put([1, 2])
    q.put("b")
    assert [q.get(), q.get()] == [[1, 2], "b"]
    assert q.empty()
    q.close()
    with pytest.raises(OSError):
        q.put(1)
    with pytest.raises(OSError):
        q.get()


@pytest.mark.parametrize("factory", ["Queue", "JoinableQueue", "SimpleQueue"])
def test_pickling_only_while_spawning(ctx, factory):
    q = getattr(ctx, factory)()
    with pytest.raises(RuntimeError, match="inheritance"):
        pickle.dumps(q)
    close(q)


def test_bad_arguments(ctx):
    with pytest.raises(TypeError):
        ctx.Queue("3")
    q = ctx.Queue()
    with pytest.raises(TypeError):
        q.get(True, "soon")
    q.put(1)
    assert q.get(timeout=WAIT) == 1      # the queue still works
    close(q)


def test_empty_true_right_after_get_and_false_right_after_put(fastmp_ctx):
    # The stdlib's empty() can be True right after put() (the feeder thread has not
    # written yet): fastmp's reads the shared count.
    q = fastmp_ctx.Queue()
    for i in range(200):
        assert q.empty()
        q.put(i)
        assert not q.empty()
        assert q.qsize() == 1
        assert q.get(timeout=WAIT) == i
    close(q)


def test_pickling_error_raises_in_put(fastmp_ctx):
    q = fastmp_ctx.Queue()
    with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
        q.put(lambda: 1)
    with pytest.raises(TypeError):
        q.put(threading.Lock())
    assert q.qsize() == 0 and q.empty()
    q.put("fine")
    assert q.get(timeout=WAIT) == "fine"
    close(q)


def test_put_many_get_many(fastmp_ctx):
    q = fastmp_ctx.Queue()
    q.put_many(range(1000))
    assert q.qsize() == 1000
    assert q.get_many(max_items=10) == list(range(10))
    assert q.get_many(max_items=1) == [10]
    rest = q.get_many()
    assert rest == list(range(11, 1000))
    with pytest.raises(queue.Empty):
        q.get_many(block=False)
    with pytest.raises(queue.Empty):
        q.get_many(timeout=0.1)
    with pytest.raises(ValueError):
        q.get_many(max_items=0)
    q.put_many(iter(["a", "b"]))        # any iterable
    assert q.get_many(max_items=5, timeout=WAIT) == ["a", "b"]
    bq = fastmp_ctx.Queue(3)
    with pytest.raises(queue.Full):
        bq.put_many(range(5), timeout=0.1)
    assert bq.qsize() == 3               # the ones before the failing item stay put
    assert bq.get_many() == [0, 1, 2]
    close(q)
    close(bq)


def test_ring_grows_and_large_items_intact(fastmp_ctx):
    q = fastmp_ctx.Queue()
    blobs = [os.urandom(n) for n in (10, 70_000, 1 << 20, 3 << 20, 9 << 20)]
    for b in blobs:
        q.put(b)
    for i in range(50_000):              # far more than the first ring holds
        q.put(i)
    assert q.qsize() == len(blobs) + 50_000
    assert [q.get(timeout=WAIT) for _ in blobs] == blobs
    assert q.get_many() == list(range(50_000))
    close(q)


@pytest.mark.timeout(120)
def test_100mb_item_intact(fastmp_ctx, procs):
    q = fastmp_ctx.Queue()
    size = 100 * 1024 * 1024
    p = start(procs, fastmp_ctx, targets.put_big_and_exit, q, size)
    item = q.get(timeout=90)
    p.join(WAIT)
    assert p.exitcode == 0
    assert len(item) == size
    assert item == bytes(range(256)) * (size // 256)
    close(q)


# ---------------------------------------------------------------- across processes

@pytest.mark.timeout(120)
def test_child_puts_parent_gets(ctx, procs):
    q = ctx.Queue()
    p = start(procs, ctx, targets.produce, q, 0, 500)
    got = [q.get(timeout=WAIT) for _ in range(501)]
    p.join(WAIT)
    assert p.exitcode == 0
    assert got == [targets.item_for(0, i) for i in range(500)] + [None]
    close(q)


@pytest.mark.timeout(120)
def test_parent_puts_child_gets(ctx, procs):
    q, results = ctx.Queue(), ctx.Queue()
    p = start(procs, ctx, targets.consume, q, results)
    for i in range(500):
        q.put(targets.item_for(7, i))
    q.put(None)
    pid, count, total, in_order = results.get(timeout=WAIT)
    p.join(WAIT)
    assert p.exitcode == 0
    assert (pid, count, in_order) == (p.pid, 500, True)
    assert total == sum(targets.checksum(7, i) for i in range(500))
    close(q)
    close(results)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("nprod,ncons", [(3, 2), (2, 3)])
def test_producers_consumers_checksum(ctx, procs, nprod, ncons):
    q, results = ctx.Queue(50), ctx.Queue()
    n = 2000
    consumers = [start(procs, ctx, targets.consume, q, results, 1) for _ in range(ncons)]
    producers = [start(procs, ctx, targets.produce, q, k, n, False) for k in range(nprod)]
    for p in producers:
        p.join(WAIT * 3)
        assert p.exitcode == 0
    for _ in range(ncons):               # behind every item: one per consumer
        q.put(None)
    reports = [results.get(timeout=WAIT) for _ in range(ncons)]
    for p in consumers:
        p.join(WAIT)
    leftover = []
    while not q.empty():
        leftover.append(q.get(timeout=WAIT))
    assert all(x is None for x in leftover)
    assert sum(r[1] for r in reports) == nprod * n
    assert sum(r[2] for r in reports) == sum(
        targets.checksum(k, i) for k in range(nprod) for i in range(n))
    assert all(r[3] for r in reports)    # each consumer saw each producer's items in order
    close(q)
    close(results)


@pytest.mark.timeout(120)
def test_joinable_across_processes(ctx, procs):
    q = ctx.JoinableQueue()
    for i in range(50):
        q.put(i)
    p = start(procs, ctx, targets.task_worker, q, 50)
    q.join()
    assert q.empty()
    p.join(WAIT)
    assert p.exitcode == 0
    close(q)


@pytest.mark.timeout(120)
def test_simple_queue_across_processes(ctx, procs):
    q = ctx.SimpleQueue()
    p = start(procs, ctx, targets.put_and_exit, q, ["a", ("b", 2)])
    assert [q.get(), q.get()] == ["a", ("b", 2)]
    p.join(WAIT)
    q.close()


@pytest.mark.timeout(120)
def test_sigint_interrupts_blocked_get(ctx, procs):
    q, ready = ctx.Queue(), ctx.Event()
    p = start(procs, ctx, targets.blocked_get_until_sigint, q, ready)
    assert ready.wait(WAIT)
    time.sleep(0.3)
    t0 = time.monotonic()
    os.kill(p.pid, signal.SIGINT)
    p.join(10)
    assert p.exitcode == targets.GOT_KEYBOARD_INTERRUPT
    assert time.monotonic() - t0 < 10
    close(q)


@pytest.mark.timeout(120)
def test_sigint_interrupts_blocked_put(ctx, procs):
    q, ready = ctx.Queue(1), ctx.Event()
    p = start(procs, ctx, targets.blocked_put_until_sigint, q, ready)
    assert ready.wait(WAIT)
    time.sleep(0.3)
    os.kill(p.pid, signal.SIGINT)
    p.join(10)
    assert p.exitcode == targets.GOT_KEYBOARD_INTERRUPT
    close(q)


# ---------------------------------------------------------------- fastmp only

@pytest.mark.timeout(60)
def test_join_before_get_does_not_deadlock(fastmp_ctx, procs):
    # The stdlib documents this as a deadlock (the child's feeder thread cannot finish
    # writing a large item nobody reads, so the child never exits).  fastmp has no feeder.
    q = fastmp_ctx.Queue()
    p = start(procs, fastmp_ctx, targets.put_big_and_exit, q, 4 << 20)
    p.join(30)
    assert p.exitcode == 0
    assert q.get(timeout=WAIT) == bytes(range(256)) * ((4 << 20) // 256)
    close(q)


@pytest.mark.timeout(120)
def test_growth_in_child_survives_its_exit(fastmp_ctx, procs):
    # The child makes the queue grow (new rings, created by the child) and exits before the
    # parent reads anything: every item must still arrive.
    q = fastmp_ctx.Queue()
    items = list(range(100_000)) + [os.urandom(5 << 20), os.urandom(20 << 20)]
    p = start(procs, fastmp_ctx, targets.put_and_exit, q, items)
    p.join(60)
    assert p.exitcode == 0
    assert q.qsize() == len(items)
    got = q.get_many()
    while len(got) < len(items):
        got += q.get_many(timeout=WAIT)
    assert got == items
    close(q)


@pytest.mark.timeout(120)
def test_producer_killed_mid_put_does_not_wedge(fastmp_ctx, procs):
    q, ready = fastmp_ctx.Queue(), fastmp_ctx.Event()
    q.put("before")
    p = start(procs, fastmp_ctx, targets.stall_put_then_sleep, q, ready)
    assert ready.wait(WAIT)
    q.put("after")                      # behind the stalled record
    assert q.get(timeout=WAIT) == "before"
    with pytest.raises(queue.Empty):    # FIFO: the live writer's record holds the line
        q.get(timeout=0.3)
    p.kill()
    p.join(WAIT)
    t0 = time.monotonic()
    assert q.get(timeout=WAIT) == "after"
    assert time.monotonic() - t0 < 5
    q.put("again")
    assert q.get(timeout=WAIT) == "again"
    close(q)


@pytest.mark.timeout(120)
def test_every_item_once_with_get_many(fastmp_ctx, procs):
    q, results = fastmp_ctx.Queue(), fastmp_ctx.Queue()
    n, nprod = 20_000, 3
    producers = [start(procs, fastmp_ctx, targets.produce_many, q, k, n, 100)
                 for k in range(nprod)]
    seen = {}
    sentinels = 0
    while sentinels < nprod:
        for item in q.get_many(max_items=500, timeout=WAIT):
            if item is None:
                sentinels += 1
                continue
            k, i = item[0], item[1]
            assert seen.get(k, -1) == i - 1   # in order per producer, none lost or doubled
            seen[k] = i
    assert seen == {k: n - 1 for k in range(nprod)}
    for p in producers:
        p.join(WAIT)
        assert p.exitcode == 0
    close(q)
    close(results)


ARENA_MAGIC = (0x504d4146).to_bytes(4, "little")   # csrc/core/shm.h: arenas outlive one queue


def queue_files(names):
    """The names that are not arenas (rings and spill segments)."""
    out = set()
    for n in names:
        try:
            with open(os.path.join("/dev/shm", n), "rb") as f:
                if f.read(4) != ARENA_MAGIC:
                    out.add(n)
        except FileNotFoundError:
            pass
    return out


def test_rings_unlinked_when_queue_dropped(fastmp_ctx):
    before = shm_entries()
    q = fastmp_ctx.Queue()
    for i in range(30_000):              # several rings
        q.put(i)
    q.put(b"s" * (20 << 20))            # a spill segment left in the queue
    # (what another process maps is a concurrent test run's, not this queue's)
    made = queue_files(shm_entries() - before) - shm_mapped_by_live_processes(but_self=True)
    assert len(made) >= 2
    del q
    gc.collect()
    left = shm_entries() & made
    assert not left, f"left in /dev/shm: {sorted(left)}"


def test_drained_rings_unlinked_while_in_use(fastmp_ctx):
    before = shm_entries()
    q = fastmp_ctx.Queue()
    for i in range(30_000):
        q.put(i)
    grown = queue_files(shm_entries() - before)
    assert q.get_many() == list(range(30_000))
    now = queue_files(shm_entries() - before)
    assert len(now) < len(grown)         # drained, superseded rings are gone already
    close(q)


def test_subclass_and_repr(fastmp_ctx):
    import fastmp.queues
    q = fastmp_ctx.Queue()
    assert isinstance(q, fastmp.queues.Queue)
    assert isinstance(fastmp_ctx.JoinableQueue(), fastmp.queues.Queue)
    assert "Queue" in repr(q)
    close(q)


PLAIN_ITEMS = [None, True, False, 0, -1, 2 ** 63 - 1, -2 ** 63, 2 ** 63, 2 ** 200, 1.5, -0.0,
               float("inf"), "", "abc", "\u00e9\u20ac\U0001f600", "\udc80", b"", b"\x00\xff",
               (), (1,), [1, "a"], {}, {"a": (1, 2.0), 3: None}, (1, (2, (3, (4, (5, (6,)))))),
               [[1]], {"k": [1]}, ([1],), (True, 1, 1.0), "x" * 100_000, b"y" * 300_000,
               list(range(5000)), {i: str(i) for i in range(100)}]


def test_items_come_back_equal_with_their_exact_types(fastmp_ctx):
    # plain data takes a C encoding, the rest pickle: both must give back what was put
    q = fastmp_ctx.Queue()
    items = PLAIN_ITEMS + [targets.StrSub("sub"), frozenset({1}), bytearray(b"ba"), 3 + 4j,
                           (targets.StrSub("in a tuple"), 1)]
    for it in items:
        q.put(it)
    q.put_many(items)
    for it in items + items:
        got = q.get(timeout=WAIT)
        assert got == it and type(got) is type(it)
        if isinstance(it, (tuple, list)):
            assert [type(x) for x in got] == [type(x) for x in it]
    nan = q.put(float("nan")) or q.get(timeout=WAIT)
    assert nan != nan
    shared = [1]
    q.put((shared, shared))              # a list twice in one item: pickle keeps the sharing
    a, b = q.get(timeout=WAIT)
    assert a is b
    close(q)


@pytest.mark.timeout(120)
def test_items_cross_processes_intact(ctx, procs):
    q, results = ctx.Queue(), ctx.Queue()
    p = start(procs, ctx, targets.put_and_exit, q, PLAIN_ITEMS)
    got = [q.get(timeout=WAIT) for _ in PLAIN_ITEMS]
    p.join(WAIT)
    assert got == PLAIN_ITEMS
    assert [type(x) for x in got] == [type(x) for x in PLAIN_ITEMS]
    close(q)
    close(results)
