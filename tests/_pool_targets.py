"""Task functions for tests/test_pool.py and tests/test_futures.py.

They live in an importable module so spawn and forkserver workers can unpickle them by name.
"""
import os
import signal
import threading
import time

STATE = {"init": None}


def square(x):
    return x * x


def add(a, b):
    return a + b


def kwargs(a, b=0, *, c=None):
    return (a, b, c)


def identity(x):
    return x


def getpid(_=None):
    return os.getpid()


def slow_square(x, secs=0.05):
    time.sleep(secs)
    return x * x


def sleep_for(secs):
    time.sleep(secs)
    return secs


def sleep_then_pid(secs):
    time.sleep(secs)
    return os.getpid()


def raise_value(x):
    raise ValueError(f"bad item {x}")


def fail_on(x, bad=3):
    if x == bad:
        raise ValueError(f"bad item {x}")
    return x * x


def die(code):
    """End the worker without Python's cleanup, with this exit code."""
    os._exit(code)


def die_on(x, bad=3):
    if x == bad:
        os._exit(7)
    time.sleep(0.01)
    return x


def kill_self(sig=signal.SIGKILL):
    os.kill(os.getpid(), sig)
    time.sleep(10)


def unpicklable_result(_=None):
    return threading.Lock()


class NeedsTwoArgs(Exception):
    """Pickles fine in the worker, but unpickling calls NeedsTwoArgs(msg): a TypeError."""

    def __init__(self, a, b):
        super().__init__(f"{a}-{b}")


def raise_unpicklable_in_parent(_=None):
    raise NeedsTwoArgs("x", "y")


def set_state(value):
    STATE["init"] = value


def get_state(_=None):
    return STATE["init"]


def init_raise(msg="initializer failed"):
    raise RuntimeError(msg)


def big(n):
    return b"x" * n


def length(data):
    return len(data)


def orphan_parent_main(method, out_path):
    """Run in a child interpreter: start a pool, write its workers' pids, die without
    cleanup (the workers must notice and leave)."""
    import fastmp
    pool = fastmp.get_context(method).Pool(2)
    pool.map(square, range(4))
    with open(out_path, "w") as f:
        f.write(" ".join(str(p.pid) for p in pool._pool))
    os._exit(0)


def loaded_fastmp_modules(_=None):
    """The fastmp modules loaded in this process (imports none itself)."""
    import sys
    return sorted(m for m in sys.modules if m.startswith("fastmp"))
