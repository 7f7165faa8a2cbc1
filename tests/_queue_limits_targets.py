"""Scenarios for tests/test_queue_limits.py, each run in a fresh interpreter (inside a private
small /dev/shm for the "full" cases).  Usage: python _queue_limits_targets.py CASE

Each case prints one line "OK ..." when every check passed; any other outcome (an assertion, a
crash, a signal) shows in the exit status and the output.
"""
import errno
import gc
import os
import sys
import time

import fastmp


def fastmp_entries():
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith("fastmp-"))


def wait_only(allowed, timeout=10.0):
    """No fastmp entry in /dev/shm but `allowed` (a failed operation left nothing; the
    tracker may unlink a moment later).  This process's arena segments stay until it exits:
    the caller checks that /dev/shm is empty after the exit."""
    deadline = time.monotonic() + timeout
    while set(fastmp_entries()) - set(allowed) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(fastmp_entries()) <= set(allowed), (fastmp_entries(), allowed)


def expect_enospc(call):
    try:
        call()
    except OSError as exc:
        assert type(exc) is OSError, type(exc)
        assert exc.errno == errno.ENOSPC, exc
        return exc
    raise AssertionError("no OSError(ENOSPC)")


def big_result(n):
    return b"r" * n


def small(x):
    return x * 2


def case_put_100mb():
    q = fastmp.Queue()
    before = fastmp_entries()
    expect_enospc(lambda: q.put(b"x" * (100 << 20)))
    wait_only(before)
    q.put("small")
    q.put_many(range(3))
    assert q.get(timeout=10) == "small"
    assert q.get_many(timeout=10) == [0, 1, 2]
    del q
    gc.collect()
    wait_only(before)
    print("OK put_100mb")


def case_big_items_fit():
    # Items a 64 MB /dev/shm has room for go through: a big item grows the ring to about twice
    # its size (not eight times), and when even that ring does not fit, the item goes to a
    # segment of its own size.
    q = fastmp.Queue()
    for mb in (1, 5, 7.9, 20):
        item = b"y" * int(mb * (1 << 20))
        q.put(item)
        assert q.get(timeout=10) == item
    del q
    gc.collect()
    print("OK big_items_fit")


def case_many_queues_1mb():
    fastmp.Queue()                  # the arena that holds the queues' shared blocks
    arenas = fastmp_entries()
    queues, failed = [], 0
    for i in range(200):
        try:
            q = fastmp.Queue()
        except OSError as exc:      # the queue itself had no room: the same clear error
            assert type(exc) is OSError and exc.errno == errno.ENOSPC, exc
            failed += 1
            continue
        try:
            q.put(b"x" * (1 << 20))
        except OSError as exc:
            assert type(exc) is OSError and exc.errno == errno.ENOSPC, exc
            failed += 1
        queues.append(q)
    assert failed > 100, failed     # 64 MB cannot hold 200 rings of 8 MB
    for q in queues:                # every queue made still takes small items
        q.put(7)
    for q in queues:
        got = q.get(timeout=10)
        if got != 7:                # a queue whose 1 MB put succeeded has it first
            assert got == b"x" * (1 << 20)
            assert q.get(timeout=10) == 7
    del queues, q
    gc.collect()
    wait_only(arenas)
    print("OK many_queues_1mb", failed)


def case_pool_result_100mb():
    ctx = fastmp.get_context("fork")
    with ctx.Pool(2) as pool:
        before = fastmp_entries()
        r = pool.apply_async(big_result, (100 << 20,))
        expect_enospc(lambda: r.get(timeout=60))
        wait_only(before)
        assert pool.apply(small, (21,)) == 42
        assert pool.map(small, range(10)) == [2 * i for i in range(10)]
    print("OK pool_result_100mb")


def case_pool_arg_100mb():
    ctx = fastmp.get_context("fork")
    with ctx.Pool(2) as pool:
        def call():
            pool.apply_async(len, (b"a" * (100 << 20),)).get(timeout=60)
        before = fastmp_entries()
        expect_enospc(call)
        wait_only(before)
        assert pool.apply(small, (21,)) == 42
    print("OK pool_arg_100mb")


if __name__ == "__main__":
    globals()["case_" + sys.argv[1]]()
