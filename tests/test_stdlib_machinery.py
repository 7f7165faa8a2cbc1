"""The stdlib's own machinery built on a fastmp context: concurrent.futures.ProcessPoolExecutor
(mp_context=...), multiprocessing.pool.Pool (context=...), multiprocessing.queues.Queue
(ctx=...), multiprocessing.synchronize.Condition on a given lock, and
multiprocessing.connection.wait on the readers of fastmp's queues.  Each body runs against
the stdlib's context too (the ``ctx`` fixture): it is the reference.

That code reaches past the public API: ``q._reader.recv()``, ``q._writer.send()``,
``q._reader.poll()``, ``connection.wait([q._reader, ...])`` (fileno), ``q._rlock``, and
``sem._semlock._is_zero()``; and isinstance against the stdlib's classes."""
import concurrent.futures
import multiprocessing
import multiprocessing.pool
import multiprocessing.queues
import multiprocessing.synchronize
import os
import queue
import socket
import sys
import threading
import time
from multiprocessing import connection

import pytest

import _machinery_targets as targets
from conftest import is_fastmp, start

WAIT = 30.0


# ---------------------------------------------------------------- concurrent.futures

@pytest.mark.timeout(90)
def test_process_pool_executor_on_context(ctx):
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        assert list(ex.map(targets.square, range(20))) == [x * x for x in range(20)]
        assert list(ex.map(targets.square, range(50), chunksize=7)) == [x * x for x in range(50)]
        futs = [ex.submit(targets.square, i) for i in range(10)]
        assert [f.result(timeout=WAIT) for f in futs] == [i * i for i in range(10)]
        bad = ex.submit(targets.fail, 3)
        exc = bad.exception(timeout=WAIT)
        assert type(exc) is ValueError and str(exc) == "bad 3"
        # the pool survives a failed task
        assert ex.submit(targets.square, 7).result(timeout=WAIT) == 49
        pids = set(ex.map(targets.pid_of, range(20)))
        assert 1 <= len(pids) <= 2 and os.getpid() not in pids


# ---------------------------------------------------------------- multiprocessing.pool

@pytest.mark.timeout(90)
def test_stdlib_pool_on_context(ctx):
    pool = multiprocessing.pool.Pool(2, context=ctx)
    try:
        assert pool.apply(targets.square, (6,)) == 36
        assert pool.map(targets.square, range(30)) == [x * x for x in range(30)]
        assert list(pool.imap(targets.square, range(30), 4)) == [x * x for x in range(30)]
        assert sorted(pool.imap_unordered(targets.square, range(30))) == \
            [x * x for x in range(30)]
        r = pool.apply_async(targets.fail, (5,))
        with pytest.raises(ValueError, match="bad 5"):
            r.get(WAIT)
        assert pool.map_async(targets.square, [1, 2, 3]).get(WAIT) == [1, 4, 9]
        pool.close()
        pool.join()
    finally:
        pool.terminate()


@pytest.mark.timeout(90)
def test_stdlib_pool_terminate_on_context(ctx):
    pool = multiprocessing.pool.Pool(2, context=ctx)
    assert pool.map(targets.square, range(10)) == [x * x for x in range(10)]
    workers = list(pool._pool)
    pool.terminate()
    pool.join()
    assert all(w.exitcode is not None for w in workers)


# ---------------------------------------------------------------- multiprocessing.queues

@pytest.mark.timeout(90)
def test_stdlib_queue_on_context(ctx, procs):
    inq = multiprocessing.queues.Queue(2, ctx=ctx)
    outq = multiprocessing.queues.Queue(ctx=ctx)
    assert inq.empty() and not inq.full() and inq.qsize() == 0
    inq.put(1)
    inq.put(2)
    assert inq.full() and inq.qsize() == 2
    with pytest.raises(queue.Full):
        inq.put(3, timeout=0.1)
    p = start(procs, ctx, targets.std_queue_worker, inq, outq)
    got = [outq.get(timeout=WAIT) for _ in range(2)]
    for i in range(3, 20):
        inq.put(i, timeout=WAIT)
    got += [outq.get(timeout=WAIT) for _ in range(3, 20)]
    assert got == [2 * i for i in range(1, 20)]
    inq.put(None)
    p.join(WAIT)
    assert p.exitcode == 0
    assert inq.empty() and not inq.full()
    for q in (inq, outq):
        q.close()
        q.join_thread()


@pytest.mark.timeout(90)
def test_stdlib_joinable_queue_on_context(ctx, procs):
    jq = multiprocessing.queues.JoinableQueue(ctx=ctx)
    for i in range(10):
        jq.put(i)
    p = start(procs, ctx, targets.joinable_worker, jq, 10)
    jq.join()               # returns once every item was marked done
    p.join(WAIT)
    assert p.exitcode == 0
    with pytest.raises(ValueError):
        jq.task_done()
    jq.close()
    jq.join_thread()


# ---------------------------------------------------------------- synchronize

def test_semlock_surface(ctx):
    b = ctx.BoundedSemaphore(2)
    assert not b._semlock._is_zero() and b._semlock._get_value() == 2
    assert b._semlock.maxvalue == 2
    b.acquire()
    b._semlock.acquire()
    assert b._semlock._is_zero() and b._semlock._get_value() == 0
    b._semlock.release()
    assert b._semlock._get_value() == 1
    s = ctx.Semaphore(0)
    assert s._semlock._is_zero()
    s.release()
    assert not s._semlock._is_zero()
    for lock, kind in ((ctx.Lock(), 1), (ctx.RLock(), 0)):
        sl = lock._semlock
        assert sl.kind == kind and sl.maxvalue == 1
        assert not sl._is_mine() and sl._count() == 0 and sl._get_value() == 1
        assert not sl._is_zero()
        with lock:
            assert sl._is_mine() and sl._count() == 1 and sl._is_zero()
        sl._after_fork()
    r = ctx.RLock()
    with r, r:
        assert r._semlock._count() == 2


@pytest.mark.timeout(60)
def test_stdlib_condition_on_given_lock(ctx, procs):
    for lock in (ctx.Lock(), ctx.RLock()):
        cond = multiprocessing.synchronize.Condition(lock, ctx=ctx)
        flag = ctx.Value("i", 0)
        with cond:
            p = start(procs, ctx, targets.condition_notifier, cond, flag)
            assert cond.wait_for(lambda: flag.value == 1, timeout=WAIT)
        p.join(WAIT)
        assert p.exitcode == 0


# ---------------------------------------------------------------- isinstance

def test_isinstance_stdlib_queue_classes(ctx):
    q, jq, sq = ctx.Queue(), ctx.JoinableQueue(), ctx.SimpleQueue()
    assert isinstance(q, multiprocessing.queues.Queue)
    assert isinstance(jq, multiprocessing.queues.Queue)
    assert isinstance(jq, multiprocessing.queues.JoinableQueue)
    assert not isinstance(q, multiprocessing.queues.JoinableQueue)
    assert isinstance(sq, multiprocessing.queues.SimpleQueue)
    assert not isinstance(sq, multiprocessing.queues.Queue)
    for x in (q, jq, sq):
        x.close()


@pytest.mark.skipif(sys.version_info < (3, 12, 4) and sys.version_info[:2] != (3, 13),
                    reason="dictConfig checks isinstance(queue, multiprocessing.queues.Queue) "
                           "since 3.12.4 / 3.13")
def test_dictconfig_accepts_queue(ctx):
    import logging
    import logging.config
    q = ctx.Queue()
    logging.config.dictConfig({
        "version": 1, "disable_existing_loggers": False,
        "handlers": {"q": {"class": "logging.handlers.QueueHandler", "queue": q}},
        "loggers": {"fastmp-dictconfig": {"handlers": ["q"], "level": "INFO"}},
    })
    logging.getLogger("fastmp-dictconfig").info("hello")
    rec = q.get(timeout=WAIT)
    assert rec.getMessage() == "hello"
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})


# ---------------------------------------------------------------- the queue ends

def test_queue_ends_as_connections(ctx):
    q = ctx.SimpleQueue()
    r, w = q._reader, q._writer
    assert not r.poll() and not r.poll(0.05)
    w.send({"a": 1})
    assert r.poll() and r.poll(None)
    assert r.recv() == {"a": 1}
    assert not r.poll(0)
    w.send_bytes(b"xyz")
    w.send_bytes(bytearray(b"0123456789"), 2, 3)
    if is_fastmp(ctx):
        # bytes travel as bytes items
        assert r.recv_bytes() == b"xyz" and r.recv_bytes() == b"234"
    else:
        assert r.recv_bytes() == b"xyz" and r.recv_bytes() == b"234"
    # a pool worker closes the ends it does not use, then goes on with the queue
    q2 = ctx.SimpleQueue()
    q2._writer.close()
    assert q2._writer.closed and not q2._reader.closed
    q.close()
    assert r.closed
    with pytest.raises(OSError):
        r.fileno()


@pytest.mark.timeout(60)
def test_wait_ready_exactly_when_an_item_is_there(ctx, procs):
    q = ctx.SimpleQueue()
    r = q._reader
    a, b = socket.socketpair()
    p = start(procs, ctx, time.sleep, 5)
    try:
        for _ in range(50):
            assert connection.wait([r, a, p.sentinel], 0) == []
            q.put("x")
            assert connection.wait([r, a, p.sentinel], WAIT) == [r]
            assert connection.wait([r], 0) == [r]     # level-triggered: still there
            b.send(b"!")
            assert set(connection.wait([r, a, p.sentinel], WAIT)) == {r, a}
            assert r.recv() == "x"
            assert connection.wait([r, a, p.sentinel], 0) == [a]
            assert a.recv(1) == b"!"
        q.put(1)
        q.put(2)
        assert r.recv() == 1
        assert connection.wait([r], 0) == [r]
        assert r.recv() == 2
        assert connection.wait([r], 0.05) == []
        # a put from another thread wakes a wait already asleep
        t = threading.Timer(0.2, q.put, ("late",))
        t.start()
        t0 = time.monotonic()
        assert connection.wait([r, a], WAIT) == [r]
        assert time.monotonic() - t0 < WAIT / 2
        t.join()
        assert r.recv() == "late"
        p.terminate()
        assert connection.wait([r, a, p.sentinel], WAIT) == [p.sentinel]
        p.join(WAIT)
    finally:
        a.close()
        b.close()
        q.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["SimpleQueue", "Queue"])
def test_wait_never_misses_an_item(ctx, procs, kind):
    """Several producers put at random moments; the consumer only ever waits (no timeout
    expires unless a wake-up was lost) and then takes exactly one item."""
    q = getattr(ctx, kind)()
    nprod, n = 3, 400
    for k in range(nprod):
        start(procs, ctx, targets.produce, q, k, n, 1000 + k)
    r = q._reader
    got = {k: [] for k in range(nprod)}
    for _ in range(nprod * n):
        ready = connection.wait([r], WAIT)
        assert ready == [r], "a wake-up was lost"
        producer, i = r.recv()
        got[producer].append(i)
    assert all(got[k] == list(range(n)) for k in range(nprod))
    assert connection.wait([r], 0) == []
    for p in procs:
        p.join(WAIT)
        assert p.exitcode == 0
    q.close()


@pytest.mark.timeout(60)
def test_wait_on_reader_in_child(ctx, procs):
    q, report = ctx.SimpleQueue(), ctx.SimpleQueue()
    assert connection.wait([q._reader], 0) == []     # the parent watches too (fork: inherited)
    p = start(procs, ctx, targets.wait_on_reader, q, report)
    time.sleep(0.3)
    q.put("to the child")
    assert report.get() == ("got", "to the child")
    p.join(WAIT)
    assert p.exitcode == 0
    # the parent's own watcher still works after the child is gone
    q.put("to the parent")
    assert connection.wait([q._reader], WAIT) == [q._reader]
    assert q._reader.recv() == "to the parent"
    q.close()
    report.close()


@pytest.mark.timeout(120)
def test_watchers_killed_leave_no_slot_behind(fastmp_ctx):
    """Watchers SIGKILLed at random moments keep their doorbell slot only until someone
    needs it: three rounds of 8 armed watchers (more than the 16 slots in all) arm, and a live
    watcher is still woken.  In a fresh interpreter (see targets.kill_watchers)."""
    import subprocess
    method = fastmp_ctx.get_start_method()
    import fastmp
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastmp.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    r = subprocess.run([sys.executable, targets.__file__, "kill-watchers", method],
                       capture_output=True, text=True, timeout=100, env=env)
    assert r.stdout.strip().splitlines()[-1:] == ["ok"], (r.stdout, r.stderr)
    assert r.returncode == 0
