"""Process targets for tests/test_stdlib_machinery.py (importable, so spawn and forkserver
children find them).  Every blocking call has a timeout: a broken object makes a child fail
(exit code) instead of hanging."""
import os
import random
import sys
import time
from multiprocessing import connection

LONG = 30.0


def square(x):
    return x * x


def fail(x):
    raise ValueError(f"bad {x}")


def pid_of(_):
    time.sleep(0.01)
    return os.getpid()


def produce(q, producer, n, seed):
    """Put n items (producer, i), now and then after a short random pause, so that the
    consumer is sometimes asleep in wait() and sometimes busy when an item lands."""
    rnd = random.Random(seed)
    for i in range(n):
        if rnd.random() < 0.3:
            time.sleep(rnd.random() * 0.004)
        q.put((producer, i))


def std_queue_worker(inq, outq):
    """Echo items from a multiprocessing.queues.Queue built on a fastmp context, doubled,
    until None."""
    while True:
        item = inq.get(timeout=LONG)
        if item is None:
            break
        outq.put(item * 2)


def joinable_worker(jq, n):
    for _ in range(n):
        jq.get(timeout=LONG)
        jq.task_done()


def wait_on_reader(q, report):
    """Wait (multiprocessing.connection.wait) on q's reader, take the item, report it."""
    ready = connection.wait([q._reader], LONG)
    if q._reader not in ready:
        sys.exit(3)
    report.put(("got", q._reader.recv()))


def arm_and_linger(q, armed):
    """Become a watcher of q's reader, say so, then sleep until killed."""
    connection.wait([q._reader], 0)
    armed.put(os.getpid())
    time.sleep(LONG)


def condition_notifier(cond, flag):
    """multiprocessing.synchronize.Condition on a fastmp lock: set the flag, notify."""
    with cond:
        flag.value = 1
        cond.notify_all()
