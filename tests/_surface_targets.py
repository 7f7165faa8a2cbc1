"""Process targets for tests/test_surface.py.

They live in an importable module so spawn and forkserver children can find them by name
(children inherit the parent's sys.path, which holds tests/).
"""
import os
import sys

# The parent sets this to "parent" before starting a child: a forked child still sees
# "parent", a spawned or forkserver child re-imports this module and sees "module".
MARK = "module"


def report(conn):
    """Send what the child sees: fastmp's and the stdlib's start method, MARK, parent pid."""
    import multiprocessing

    import fastmp
    parent = fastmp.parent_process()
    conn.send({
        "fastmp_method": fastmp.get_start_method(allow_none=True),
        "stdlib_method": multiprocessing.get_start_method(allow_none=True),
        "mark": MARK,
        "parent_pid": parent.pid if parent is not None else None,
        "pid": os.getpid(),
    })
    conn.close()


def put_twice(q, value):
    """Put `value` on a queue twice (exercises a stdlib Queue passed to a fastmp Process)."""
    q.put(value)
    q.put(value)
    q.close()
    q.join_thread()


def exit_with(code):
    sys.exit(code)


def square(x):
    return x * x
