"""A process killed the instant a new segment's file appears in /dev/shm leaves nothing behind.

Every segment fastmp makes (a queue's first ring, a grown ring, a spilled item, an arena of
small objects, a huge block, a pool's channel, a pool's large task, a manager dict's or list's
data) is named and told to the
resource tracker *before* its file is linked into /dev/shm.  The test hook
`_core._debug_die_after_link(fd)` kills the process right after the next link, writing the
name it linked to `fd` first; the program's own resource tracker must then remove that file
once the program is dead.  Each scenario runs in a program of its own, so that its tracker is
its own and exits with it (the test session's tracker lives until the session ends).
"""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import TESTS_DIR

SCENARIOS = {
    "queue-first-ring": """
        die()
        fastmp.Queue()
    """,
    "queue-grown-ring": """
        q = fastmp.Queue()
        die()
        for i in range(100000):
            q.put(b"x" * 100)
    """,
    "queue-big-item-ring": """
        q = fastmp.Queue()
        die()
        q.put(b"x" * (1 << 20))
    """,
    "queue-spilled-item": """
        q = fastmp.Queue()
        q.put(b"warm")
        die()
        q.put(b"x" * (40 << 20))
    """,
    "value-new-arena": """
        die()
        fastmp.Value("i", 7)
    """,
    "array-huge-block": """
        fastmp.Value("i", 7)
        die()
        fastmp.Array("b", 4 << 20, lock=False)
    """,
    "pool-channel": """
        die()
        fastmp.Pool(1)
    """,
    "manager-dict-data": """
        d = fastmp.Manager().dict()
        die()
        d["k"] = b"x" * 1000
    """,
    "manager-list-grown-data": """
        lst = fastmp.Manager().list()
        lst.append(1)
        die()
        lst.extend([b"y" * 1000] * 1000)
    """,
    "pool-large-task": """
        with fastmp.Pool(1) as pool:
            pool.apply(len, (b"warm",))
            die()
            pool.apply(len, (b"x" * (8 << 20),))
    """,
}

PROGRAM = """
import os, sys
import fastmp
from fastmp import _core
fd = int(sys.argv[1])
def die():
    _core._debug_die_after_link(fd)
{body}
os.write(fd, b"survived\\n")
"""


def run_scenario(body):
    r, w = os.pipe()
    try:
        code = PROGRAM.format(body=textwrap.indent(textwrap.dedent(body), ""))
        # run in tests/, so that '-c' does not put a source tree's fastmp first
        proc = subprocess.run([sys.executable, "-c", code, str(w)], cwd=TESTS_DIR,
                              pass_fds=(w,), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=120)
        os.close(w)
        w = -1
        with os.fdopen(r, "rb") as f:
            r = -1
            out = f.read().decode()
    finally:
        for fd in (r, w):
            if fd >= 0:
                os.close(fd)
    return proc, out.split()


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_killed_right_after_link_leaves_nothing(scenario):
    proc, names = run_scenario(SCENARIOS[scenario])
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr.decode()[-2000:])
    assert len(names) == 1 and names[0].startswith("/fastmp-"), names
    path = "/dev/shm" + names[0]
    # the program's resource tracker sees its pipe close and unlinks what it was told of
    deadline = time.monotonic() + 30
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(path), f"{scenario}: {path} outlived its creator and its tracker"


def test_hook_is_off_by_default():
    proc, names = run_scenario("""
        q = fastmp.Queue()
        q.put(b"x" * (1 << 20))
        fastmp.Value("i", 1)
    """)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert names == ["survived"]
