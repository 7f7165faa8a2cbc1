"""Task functions for tests/test_pool_memlimit.py and tests/test_reusable_executor.py.

They live in an importable module so spawn and forkserver workers can unpickle them by name.
"""
import os
import time

_HELD = []          # what a task allocated: kept until the worker process ends
_RUN = [0]          # tasks this worker process has run


def resident_bytes():
    """This process's resident set size (what max_memory_per_child compares)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def record(x, grow=0):
    """Task x: allocate and keep `grow` bytes (written, so resident), then return
    (x * x, pid, how many tasks this worker ran before this one)."""
    if grow:
        _HELD.append(b"\x01" * grow)
    seq = _RUN[0]
    _RUN[0] += 1
    return x * x, os.getpid(), seq


def record_star(x, grow):
    return record(x, grow)


def pid_after(secs=0.0):
    time.sleep(secs)
    return os.getpid()


def init_marker(value):
    os.environ["FASTMP_TEST_INIT"] = str(value)


def init_value(_=None):
    return os.environ.get("FASTMP_TEST_INIT"), os.getpid()


def die(_=None):
    os._exit(3)


def reusable_in_child():
    """In a forked child: the parent's reusable executor is not inherited; a call here makes
    the child's own, which works.  Exit code 0 when so."""
    import fastmp.reusable
    from fastmp.futures import get_reusable_executor
    if fastmp.reusable._executor is not None:
        os._exit(2)
    ex = get_reusable_executor(1, timeout=60)
    ok = ex.submit(pid_after).result(60) not in (os.getpid(), os.getppid())
    ex.shutdown(wait=True)
    os._exit(0 if ok else 3)
