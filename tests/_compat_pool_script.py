"""Run by tests/test_compat.py in a fresh interpreter:
``python _compat_pool_script.py IMPL SCENARIO NAMES_FILE [START_METHOD]``.

A pool left by its ``with`` block (which terminates it) after tasks with large arguments, as in
CPython's own pool tests.  IMPL is ``multiprocessing`` or ``fastmp``.  Every name registered
with the resource tracker by this process is appended to NAMES_FILE, so the test knows which
/dev/shm entries are this run's.

  done      every task has finished when the block ends;
  inflight  the block ends while tasks (and their arguments) are still queued or running.
"""
import importlib
import sys
import time
from multiprocessing import resource_tracker

SIZE = 3 << 20


def nbytes(data, delay=0.0):
    time.sleep(delay)
    return len(data)


def main(impl, scenario, names_file, method=None):
    mp = importlib.import_module(impl)
    register = resource_tracker.register

    def recording_register(name, rtype):
        with open(names_file, "a") as f:
            f.write(name + "\n")
        register(name, rtype)

    resource_tracker.register = recording_register
    with (mp.get_context(method) if method else mp).Pool(2) as pool:
        if scenario == "done":
            results = [pool.apply_async(nbytes, (b"x" * SIZE,)) for _ in range(4)]
            assert [r.get(60) for r in results] == [SIZE] * 4
        else:
            results = [pool.apply_async(nbytes, (b"x" * SIZE, 0.3)) for _ in range(8)]
            assert results[0].get(60) == SIZE
    print("DONE", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
