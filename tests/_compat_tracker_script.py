"""Run by tests/test_compat.py in a fresh interpreter: ``python _compat_tracker_script.py END``.

Makes fastmp objects of every kind that owns segments (small and huge shared ctypes objects, a
queue holding a large item, a pool), SIGKILLs the resource tracker, then makes more of them (the
first registration relaunches the tracker).  It prints ``SHM <name>`` for every fastmp-*
segment it maps or owns, then:

  exit  exits normally (prints DONE last);
  kill  prints READY and sleeps until the test SIGKILLs it.
"""
import os
import re
import signal
import sys
import time
import warnings

import fastmp
from fastmp import _core
from multiprocessing import resource_tracker

_MAPS_RE = re.compile(r"/dev/shm/(fastmp-[^\s]+)")


def report():
    with open("/proc/self/maps") as f:
        names = set(_MAPS_RE.findall(f.read()))
    names.update(n.lstrip("/") for n in _core._own_segments())
    for name in sorted(names):
        print(f"SHM {name}", flush=True)


def make(keep):
    keep.append(fastmp.Value("i", 1))
    keep.append(fastmp.RawArray("b", 1 << 20))     # a segment of its own
    q = fastmp.Queue()
    q.put(b"x" * (3 << 20))                         # a large item
    q.put(1)
    keep.append(q)
    keep.append(fastmp.Lock())


def square(x):
    return x * x


def main(end):
    keep = []
    make(keep)
    pool = fastmp.Pool(1)
    assert pool.map(square, range(10)) == [x * x for x in range(10)]
    assert pool.apply(len, (b"x" * (1 << 20),)) == 1 << 20      # a large task entry
    pool.close()
    pool.join()
    tracker = resource_tracker._resource_tracker
    old_pid = tracker._pid
    os.kill(old_pid, signal.SIGKILL)
    os.waitpid(old_pid, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")             # "process died unexpectedly, relaunching"
        make(keep)
    assert tracker._pid not in (None, old_pid), (old_pid, tracker._pid)
    report()
    if end == "kill":
        print("READY", flush=True)
        time.sleep(120)
        return 1
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
