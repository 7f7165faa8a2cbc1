"""Process targets for tests/test_queue.py (importable, so spawn and forkserver children find
them).  Children report through their exit code or through a result queue; every blocking call
has a timeout, so a broken queue makes a child fail instead of hanging."""
import os
import queue
import signal
import sys
import time

OK = 0
TIMED_OUT = 3
WRONG = 4
GOT_KEYBOARD_INTERRUPT = 42

LONG = 60.0


class StrSub(str):
    """A str subclass: must come back as itself, not as a str."""


def item_for(producer, i):
    """A deterministic item: a small tuple, now and then a larger payload."""
    if i % 97 == 0:
        return (producer, i, b"%d" % i * 200)
    return (producer, i)


def checksum(producer, i):
    return producer * 1_000_003 + i


def produce(q, producer, n, sentinel=True):
    """Put n items, then (if sentinel) a None."""
    for i in range(n):
        q.put(item_for(producer, i))
    if sentinel:
        q.put(None)


def produce_many(q, producer, n, batch):
    """put_many in batches, then a sentinel."""
    for start in range(0, n, batch):
        q.put_many([item_for(producer, i) for i in range(start, min(n, start + batch))])
    q.put(None)


def consume(q, results, expect_sentinels=1):
    """Get until `expect_sentinels` Nones; report (count, checksum, order ok) on `results`."""
    count = total = 0
    last = {}
    in_order = True
    seen_none = 0
    while seen_none < expect_sentinels:
        item = q.get(timeout=LONG)
        if item is None:
            seen_none += 1
            continue
        producer, i = item[0], item[1]
        if len(item) == 3 and item[2] != b"%d" % i * 200:
            in_order = False
        if last.get(producer, -1) >= i:
            in_order = False
        last[producer] = i
        count += 1
        total += checksum(producer, i)
    results.put((os.getpid(), count, total, in_order))


def put_and_exit(q, items):
    """Put the items and exit at once (no feeder thread may still hold them)."""
    for it in items:
        q.put(it)


def put_big_and_exit(q, size):
    q.put(bytes(range(256)) * (size // 256))


def get_one_and_report(q, results):
    results.put(q.get(timeout=LONG))


def stall_put_then_sleep(q, ready):
    """Claim a record and never commit it (a producer killed in the middle of a put)."""
    q._debug_stall_put()
    ready.set()
    time.sleep(LONG)


def blocked_get_until_sigint(q, ready):
    signal.signal(signal.SIGINT, signal.default_int_handler)
    ready.set()
    try:
        q.get(timeout=LONG)
    except KeyboardInterrupt:
        sys.exit(GOT_KEYBOARD_INTERRUPT)
    sys.exit(WRONG)


def blocked_put_until_sigint(q, ready):
    signal.signal(signal.SIGINT, signal.default_int_handler)
    q.put("fills it")
    ready.set()
    try:
        q.put("blocks", timeout=LONG)
    except KeyboardInterrupt:
        sys.exit(GOT_KEYBOARD_INTERRUPT)
    except queue.Full:
        sys.exit(TIMED_OUT)
    sys.exit(WRONG)


def task_worker(q, n):
    """Get n items, marking each done."""
    for _ in range(n):
        q.get(timeout=LONG)
        time.sleep(0.001)
        q.task_done()
