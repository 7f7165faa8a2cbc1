"""Process-level bookkeeping for fastmp's shared memory.

- Every segment a process creates is registered with the stdlib's resource
  tracker, which unlinks it if the program dies without cleaning up.
- On a normal exit, a process gives back its references on shared blocks and
  unlinks the segments it created.  This runs as a multiprocessing finalizer
  of low priority, so in the main process it runs after the children have
  been joined (a spawned child attaches segments by name when it starts).
- A segment this process unlinks before exit, whoever created it (a huge block of
  fastmp.sharedctypes whose last reference it dropped, a queue's outgrown ring, a pool's large
  entry or its channel), is unregistered from the tracker: one hook for them all
  (_core._set_segment_gone_hook).  Not at once: the hook often runs in a deallocator, possibly
  while this thread is inside the tracker's lock (a plain Lock in some Python versions); the
  names wait for the next object creation, for exit, or for a moment the lock is free once
  enough of them are waiting.
- A forked child takes its own references on every shared object it
  inherited (os.register_at_fork), so that the parent dropping its object
  cannot free a block the child still uses.
"""
import os
from multiprocessing import context as _mp_context
from multiprocessing import resource_tracker, util

from . import _core

__all__ = ()   # private; every module of the package has an __all__, as the stdlib's do

_EXIT_PRIORITY = -100


_tracker_fd = None
_gone = []      # names unlinked early, not yet unregistered from the tracker


_GONE_FLUSH = 64     # names waiting before _segment_gone tries to unregister them itself


def _segment_gone(name):
    """Called (often from a deallocator) when this process has unlinked a segment before exit."""
    _gone.append(name)
    if len(_gone) >= _GONE_FLUSH:
        # a process that only receives (a pool's parent getting large results) creates
        # nothing for a long time: do not let the list grow without bound
        lock = getattr(getattr(resource_tracker, "_resource_tracker", None), "_lock", None)
        if lock is not None and not lock.locked():
            _unregister_gone()


def _unregister_gone():
    while _gone:
        name = _gone.pop()
        try:
            resource_tracker.unregister(name, "shared_memory")
        except Exception:   # the tracker may be gone at interpreter shutdown
            pass


def _object_created(new_segment):
    """Called for every new shared object (new_segment: the name of the
    segment this process had to create for it, or None).

    The tracker may have died since we last spoke to it (killed, say): then
    getfd() relaunches it (with the stdlib's warning), and the new tracker
    must hear of every segment this process still owns."""
    global _tracker_fd
    fd = resource_tracker.getfd()
    if fd != _tracker_fd:
        del _gone[:]    # a new tracker never heard of them
        if _tracker_fd is not None:
            for name in _core._own_segments():
                if name != new_segment:
                    resource_tracker.register(name, "shared_memory")
        _tracker_fd = fd
    if new_segment is not None:
        resource_tracker.register(new_segment, "shared_memory")
    if _gone:
        _unregister_gone()


def _at_exit():
    _core._release_all()
    _unregister_gone()
    for name in _core._unlink_own_segments():
        try:
            resource_tracker.unregister(name, "shared_memory")
        except Exception:   # the tracker may be gone at interpreter shutdown
            pass


def _install_exit_hook(*_ignored):
    util.Finalize(None, _at_exit, exitpriority=_EXIT_PRIORITY)


def _after_fork_child():
    # names the parent unlinked and has yet to unregister are the parent's to tell the
    # tracker: told twice, the tracker prints a KeyError
    del _gone[:]
    _core._after_fork_child()
    _install_exit_hook()


class _AfterForkAnchor:
    """Kept alive by this module: util.register_after_fork holds it weakly."""


_anchor = _AfterForkAnchor()

_core._set_segment_hook(_object_created)
_core._set_segment_gone_hook(_segment_gone)
_install_exit_hook()
# multiprocessing's own children clear the finalizer registry after the fork
# hooks have run; its after-fork callbacks run after that clearing.
util.register_after_fork(_anchor, _install_exit_hook)
os.register_at_fork(after_in_child=_after_fork_child)


def keep_alive_while_spawning(obj):
    """Pickling `obj` for a child being started: keep it alive as long as the child's Popen.

    The child attaches the block by name after start() has returned, and by then the parent
    may hold no other reference (Process.start drops its args): a temporary passed to a
    spawned child would otherwise free its block before the child gets there."""
    _mp_context.assert_spawning(obj)
    popen = _mp_context.get_spawning_popen()
    try:
        popen._fm_keepalive.append(obj)
    except AttributeError:
        popen._fm_keepalive = [obj]
