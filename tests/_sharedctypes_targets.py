"""Process targets for tests/test_sharedctypes.py (importable, so that spawn and forkserver
children find them by name).  Each reports through its exit code and the shared objects."""
import ctypes
import sys

OK = 0
WRONG = 4           # a value seen in the child was not the expected one


class Point(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_double)]


def negate_and_set(arr, val, text, point):
    """The seeds case: negate every element of arr, set val and a c_char array, double a
    Structure's fields."""
    for i in range(len(arr)):
        arr[i] = -arr[i]
    val.value = 42
    text.value = b"set by the child"
    point.x *= 2
    point.y *= 2
    sys.exit(OK)


def negate_raw(arr, val):
    """The same on raw ctypes objects (lock=False / RawArray)."""
    if not isinstance(arr, ctypes.Array) or not isinstance(val, ctypes._SimpleCData):
        sys.exit(WRONG)
    for i in range(len(arr)):
        arr[i] = -arr[i]
    val.value = 42
    sys.exit(OK)


def locked_increments(counter, n):
    """n read-modify-write increments, each under the value's lock."""
    for _ in range(n):
        with counter.get_lock():
            counter.value += 1
    sys.exit(OK)


def atomic_adds(counter, n):
    """n lock-free increments (fastmp's fetch_add)."""
    add = counter.fetch_add
    for _ in range(n):
        add(1)
    sys.exit(OK)


def atomic_array_adds(arr, n):
    """n lock-free increments of every element (fastmp's fetch_add with an index)."""
    for _ in range(n):
        for i in range(len(arr)):
            arr.fetch_add(i, 1)
    sys.exit(OK)


def check_and_mark_big(arr, expect_last, mark):
    """A big shared array: the last element must be expect_last (written by the parent);
    write mark at every 4096th element."""
    if arr[len(arr) - 1] != expect_last:
        sys.exit(WRONG)
    for i in range(0, len(arr), 4096):
        arr[i] = mark
    sys.exit(OK)


def copy_slice(src, dst):
    """dst[:] = src[:] in the child (both shared arrays)."""
    dst[:] = src[:]
    sys.exit(OK)


def check_values(checks):
    """checks: [(shared object, "value" or "slice", expected)]; exit WRONG on a mismatch."""
    for obj, how, expected in checks:
        got = obj.value if how == "value" else obj[:]
        if got != expected:
            sys.exit(WRONG)
    sys.exit(OK)


# ---------------------------------------------------------------- a fresh interpreter
# python _sharedctypes_targets.py MODE: shared ctypes, a huge one among them, then
#   clean  drop a huge array early (its creator unlinks it at once), keep one to the end,
#          exit normally
#   kill   announce READY and wait to be killed
# Prints "SHM <name>" for each segment, then DONE (clean) or READY (kill).

def _script(mode):
    import time

    import fastmp

    small = fastmp.Value('i', 1)
    kept = fastmp.Array('d', 1_000_000)
    dropped = fastmp.RawArray('b', 200_000)
    names = {small.get_obj()._wrapper._fm_state()[0], kept.get_obj()._wrapper._fm_state()[0],
             dropped._wrapper._fm_state()[0]}
    for name in sorted(names):
        print("SHM", name.lstrip("/"), flush=True)
    if mode == "clean":
        ctx = fastmp.get_context("spawn")
        p = ctx.Process(target=negate_raw, args=(dropped, fastmp.RawValue('i')))
        del dropped
        p.start()
        p.join()
        if p.exitcode != OK:
            sys.exit(WRONG)
        del p
        fastmp.Value('i')            # a creation after the drop: the tracker hears of it
        kept[0] = 1.0
        print("DONE", flush=True)
    else:
        print("READY", flush=True)
        time.sleep(60)


if __name__ == "__main__":
    _script(sys.argv[1])


def exit_with_pending_gone():
    """Exit code: how many early-unlinked names this (forked) process thinks it must still
    unregister from the resource tracker (its parent's are not its own)."""
    from fastmp import _lifecycle
    sys.exit(len(_lifecycle._gone))
