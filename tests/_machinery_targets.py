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


def kill_watchers(method, rounds=3, per_round=8, seed=7):
    """Watchers SIGKILLed at random moments: rounds of `per_round` armed watchers, more than
    the doorbell's 16 slots in all, so a round arms only if the dead ones' slots are freed;
    then a live watcher must still be woken by a put.  Runs in a fresh interpreter
    (``python _machinery_targets.py kill-watchers METHOD``): the killed children never give
    back their references to the queues, whose shared memory the resource tracker then
    removes when this script exits.  Prints "ok" and exits 0, or exits non-zero."""
    import signal
    import fastmp
    ctx = fastmp.get_context(method)
    rnd = random.Random(seed)
    q, armed = ctx.SimpleQueue(), ctx.SimpleQueue()
    for trial in range(rounds):
        kids = [ctx.Process(target=arm_and_linger, args=(q, armed)) for _ in range(per_round)]
        for k in kids:
            k.start()
        deadline = time.monotonic() + LONG
        pids = set()
        while len(pids) < len(kids):
            left = deadline - time.monotonic()
            if left <= 0 or not connection.wait([armed._reader], left):
                print(f"round {trial}: only {len(pids)} of {len(kids)} watchers could arm")
                return 5
            pids.add(armed.get())
        for k in kids:
            time.sleep(rnd.random() * 0.02)
            os.kill(k.pid, signal.SIGKILL)
        for k in kids:
            k.join(LONG)
            if k.exitcode != -signal.SIGKILL:
                print(f"a watcher ended with {k.exitcode}")
                return 6
    if connection.wait([q._reader], 0) != []:
        print("ready with nothing in the queue")
        return 7
    q.put("still heard")
    if connection.wait([q._reader], LONG) != [q._reader]:
        print("a put did not wake the live watcher")
        return 8
    if q._reader.recv() != "still heard":
        return 9
    print("ok")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["kill-watchers"]:
        sys.exit(kill_watchers(sys.argv[2]))
    sys.exit(f"unknown command {sys.argv[1:]}")
