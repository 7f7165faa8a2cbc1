"""A pool closed while its feeder thread is still posting tasks: the feeder leaves, nothing
touches the channel's memory once it is unmapped.

terminate() closes the channel while the feeder thread may be inside a put (blocked on a full
task ring, or between two puts).  Closing calls the resource tracker's hook, Python code that
lets other threads run; the feeder used to run there, into the unmapped ring, and the process
died of SIGSEGV (seen in CPython's own WithProcessesTestPool.test_terminate, once in a few
whole-suite runs).  The hook is slowed down here so that the feeder always runs there.
"""
import subprocess
import sys

import pytest

from conftest import TESTS_DIR

PROGRAM = """
import sys, time
import fastmp
from fastmp import _core, _lifecycle

def slow_hook(name):
    time.sleep(0.2)             # the GIL is free: the feeder thread runs now
    _lifecycle._segment_gone(name)

_core._set_segment_gone_hook(slow_hook)
ctx = fastmp.get_context(sys.argv[1])
for _ in range(4):
    pool = ctx.Pool(2)
    pool.map_async(time.sleep, [30] * 200000, chunksize=1)
    time.sleep(0.05)            # the feeder fills the ring and waits for room
    pool.terminate()
    pool.join()
print("survived")
"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_terminate_while_the_feeder_posts(method):
    proc = subprocess.run([sys.executable, "-c", PROGRAM, method], cwd=TESTS_DIR,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=170)
    assert proc.returncode == 0, (proc.returncode, proc.stderr.decode()[-3000:])
    assert proc.stdout.split() == [b"survived"]



TWO_CLOSERS = """
import sys, threading, time
import fastmp
from fastmp import _core, _lifecycle

gone = []

def slow_hook(name):
    gone.append(name)
    time.sleep(0.2)             # the GIL is free: the other closer runs now
    _lifecycle._segment_gone(name)

ctx = fastmp.get_context(sys.argv[1])
for _ in range(3):
    del gone[:]
    pool = ctx.Pool(2)
    assert len(pool.apply(bytes, (8 << 20,))) == 8 << 20     # a big slot to unlink at close
    channel = pool._dispatcher.channel
    name = channel.name
    _core._set_segment_gone_hook(slow_hook)
    threads = [threading.Thread(target=channel.close) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _core._set_segment_gone_hook(_lifecycle._segment_gone)
    assert channel.closed
    print(gone.count(name), len(gone) - len(set(gone)), flush=True)
    pool.terminate()
print("survived")
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_two_threads_close_one_channel(method):
    # the second closer waits for the first: each segment is unlinked, and the tracker told,
    # once (both used to drain the big slots and unlink the channel: SIGSEGV)
    proc = subprocess.run([sys.executable, "-c", TWO_CLOSERS, method], cwd=TESTS_DIR,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=110)
    assert proc.returncode == 0, (proc.returncode, proc.stderr.decode()[-3000:])
    assert proc.stdout.split() == [b"1", b"0"] * 3 + [b"survived"]
