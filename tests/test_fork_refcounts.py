"""A forked child's references on inherited shared objects are taken before the fork.

The child used to take them in its after-fork hook, while the parent ran on: a parent that
dropped an object right after starting the child (a temporary passed as a Process argument,
say) gave the block back first; the child's late reference and its release at exit then put
the block on the free list a second time, and two objects created later shared one block
(a BoundedSemaphore(2) read as 2**31 - 1, the value of another queue's semaphore).
"""
import gc
import os

import pytest

import fastmp

ROUNDS = 20
OBJECTS = 200


def _child_exits(objs):
    # touch them so that the child uses what it inherited
    assert len(objs) == OBJECTS


def _blocks(objs):
    return [o._fm_state() for o in objs]


@pytest.mark.timeout(120)
def test_parent_drops_objects_right_after_fork():
    ctx = fastmp.get_context("fork")
    for _ in range(ROUNDS):
        objs = [ctx.Lock() for _ in range(OBJECTS)]
        p = ctx.Process(target=_child_exits, args=(objs,))
        p.start()
        # the parent drops every object at once, racing the child's start
        del objs
        gc.collect()
        p.join(60)
        assert p.exitcode == 0
    # every block given back once only: new objects each get a block of their own
    fresh = [ctx.Lock() for _ in range(4 * OBJECTS)]
    states = _blocks(fresh)
    assert len(set(states)) == len(states), "two live objects share one shared block"
    sems = [ctx.BoundedSemaphore(2) for _ in range(OBJECTS)]
    others = [ctx.BoundedSemaphore(2**31 - 1) for _ in range(OBJECTS)]
    assert [s.get_value() for s in sems] == [2] * OBJECTS
    assert [s.get_value() for s in others] == [2**31 - 1] * OBJECTS


@pytest.mark.timeout(120)
def test_os_fork_child_keeps_objects_the_parent_dropped():
    """A bare os.fork(): the child's inherited objects stay its own after the parent lets go."""
    lock = fastmp.Lock()
    ev = fastmp.Event()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(w)
            os.read(r, 1)               # the parent has dropped its objects by now
            # still ours: a new object must not land on the same block
            others = [fastmp.Event() for _ in range(64)]
            ok = all(not o.is_set() for o in others)
            ev.set()
            ok = ok and ev.is_set() and all(not o.is_set() for o in others)
            ok = ok and lock.acquire(timeout=5)
            os._exit(0 if ok else 1)
        except BaseException:
            os._exit(2)
    os.close(r)
    del lock, ev
    gc.collect()
    # the parent reuses whatever it gave back
    mine = [fastmp.Event() for _ in range(64)]
    os.write(w, b"x")
    os.close(w)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not any(e.is_set() for e in mine), "the child's event shares a block with ours"
