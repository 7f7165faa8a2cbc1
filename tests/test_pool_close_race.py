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
