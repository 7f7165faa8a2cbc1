"""Process targets for tests/test_managers.py (an importable module, so that spawn and forkserver
children find them by name).  Children report through their exit code and the shared objects."""
import os
import sys
import time

OK = 0
WRONG = 4


def count_up(lock, d, lst, n, tag):
    """n times, under `lock`: d['n'] += 1, and append tag to lst."""
    for _ in range(n):
        with lock:
            d["n"] = d["n"] + 1
        lst.append(tag)
    d[f"done-{tag}"] = True


def set_square(args):
    """A pool task: d[i] = i * i, then the value read back."""
    d, i = args
    d[i] = i * i
    return d[i]


def from_queue(q, out):
    """Take a dict proxy from q, write to it, answer through `out`."""
    d = q.get(timeout=60)
    d["child"] = os.getpid()
    d["seen"] = sorted(k for k in d.keys() if isinstance(k, str))
    out.put("ok")


def write_forever(d, lst, ready):
    """Write keys and grow the list in a loop until killed (values say where they belong)."""
    i = 0
    ready.set()
    while True:
        k = i % 5000
        d[k] = ("v", k, "x" * (k % 97))
        lst.append(i)
        if len(lst) > 20000:
            del lst[:10000]
        i += 1


def read_frozen_key(d, key_repr):
    """The child (another process: another str hash seed under spawn) finds a frozenset key."""
    key = frozenset(eval(key_repr))
    sys.exit(OK if d.get(key) == "found" and d[(1, 2)] == "tuple" else WRONG)


class Counter:
    """A registered type of MyManager (served by its server process)."""

    def __init__(self):
        self.n = 0

    def bump(self):
        self.n += 1
        return self.n


from fastmp import managers as _fm_managers  # noqa: E402


class MyManager(_fm_managers.SyncManager):
    """fastmp's SyncManager with a registered typeid (served by its server process)."""


MyManager.register("Counter", Counter)


def set_test(ns):
    """A manager's initializer: runs in its server process."""
    ns.test = 1


def full_dev_shm_case():
    """Run inside a private 64 MiB /dev/shm (tests/test_managers.py): a value that cannot fit
    raises OSError(ENOSPC) or MemoryError, never SIGBUS; the dict and list are unchanged and
    still usable."""
    import errno
    import fastmp
    with fastmp.Manager() as m:
        d = m.dict(a=1)
        lst = m.list([1, 2])
        for op in (lambda: d.__setitem__("big", b"x" * (100 << 20)),
                   lambda: lst.append(b"x" * (100 << 20))):
            try:
                op()
            except MemoryError:
                pass
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
            else:
                raise AssertionError("no error")
        assert d.copy() == {"a": 1} and lst[:] == [1, 2]
        d["b"] = 2
        lst.append(3)
        assert d.copy() == {"a": 1, "b": 2} and lst[:] == [1, 2, 3]
    print("OK full")


if __name__ == "__main__" and sys.argv[1:] == ["full"]:
    full_dev_shm_case()


def take_turns(d, me, other, rounds):
    """Add one to d["n"] whenever it is this side's turn, then hand the turn over: any stale
    read of "turn" or "n" loses an increment or never sees its turn."""
    for _ in range(rounds):
        while d["turn"] != me:
            pass
        d["n"] = d["n"] + 1
        d["turn"] = other


def write_then_die(d):
    import os
    import signal
    d._kv.begin()
    d["k"] = 2
    os.kill(os.getpid(), signal.SIGKILL)
