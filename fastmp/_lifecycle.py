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
  (_core._set_segment_gone_hook).  At once when this thread does not hold the tracker's lock
  (the hook often runs in a deallocator, possibly from inside the tracker); else the name
  waits for the next object creation, or for exit.
- The tracker can die (killed) and be relaunched by the next registration, usually on the
  same descriptor number.  A change of the tracker's pid shows it: the new tracker is then
  told of every segment this process still owns.
- A forked child owns a reference on every shared object it inherited: the
  parent takes them for it just before the fork (os.register_at_fork), so that
  the parent dropping its object right after cannot free a block the child
  still uses.
"""
import os
from multiprocessing import context as _mp_context
from multiprocessing import resource_tracker, util

from . import _core

__all__ = ()   # private; every module of the package has an __all__, as the stdlib's do

_EXIT_PRIORITY = -100


_tracker_seen = None   # (pid, fd) of the resource tracker this process last registered with
_gone = []      # names unlinked early, not yet unregistered from the tracker
# Names this process registered with the tracker, for a relaunched tracker to hear again.  The
# segments another process unlinks (a pool's large task entries, a queue's spilled items) stay
# here until a prune drops the names gone from /dev/shm: one stat per registration, amortized.
_registered = set()
_prune_at = 256


def _tracker_lock_free():
    """Whether this thread can call into the resource tracker now without deadlocking: it does
    not hold the tracker's lock itself (it may be a deallocator run from inside the tracker).
    The lock is an RLock from Python 3.11 on (its owner is known) and a plain Lock before
    (held by anyone counts as held by this thread)."""
    lock = getattr(getattr(resource_tracker, "_resource_tracker", None), "_lock", None)
    if lock is None:
        return False
    is_owned = getattr(lock, "_is_owned", None)
    if is_owned is not None:
        return not is_owned()
    return not lock.locked()


def _segment_gone(name):
    """Called (often from a deallocator) when this process has unlinked a segment before exit.

    Tells the tracker at once when that is safe, so that a process killed later (a pool's
    worker ended by terminate()) leaves no name pending, which the tracker would try to unlink
    again at the end and report as leaked; otherwise the name waits for the next object
    creation, or for exit."""
    _gone.append(name)
    _registered.discard(name)
    if _tracker_lock_free():
        try:
            _object_created(None)
        except Exception:   # e.g. at interpreter shutdown; the names stay pending
            pass


def _unregister_gone():
    while _gone:
        name = _gone.pop()
        try:
            resource_tracker.unregister(name, "shared_memory")
        except Exception:   # the tracker may be gone at interpreter shutdown
            pass


def _tracker_identity():
    """(pid, fd) of the resource tracker, launching it if it is not running.

    A relaunched tracker (the old one was killed) usually gets the same descriptor number, so
    the fd alone does not show it; the pid does.  In a spawned child the pid is unknown (None)
    until the child relaunches the tracker itself."""
    fd = resource_tracker.getfd()
    return getattr(resource_tracker._resource_tracker, "_pid", None), fd


def _object_created(new_segment):
    """Called for every new shared object (new_segment: the name of the
    segment this process had to create for it, or None).

    The tracker may have died since we last spoke to it (killed, say): then
    getfd() relaunches it (with the stdlib's warning), and the new tracker
    must hear of every segment this process still owns."""
    global _tracker_seen
    seen = _tracker_identity()
    if seen != _tracker_seen:
        if _tracker_seen is not None:
            # relaunched: the new tracker never heard of the names gone, and must hear of
            # those still here
            del _gone[:]
            _register_again(new_segment)
        # else: the first word of this process (a spawned child's tracker is its parent's,
        # which does know the names gone)
        _tracker_seen = seen
    if new_segment is not None:
        resource_tracker.register(new_segment, "shared_memory")
        _remember(new_segment)
    if _gone:
        _unregister_gone()


def _remember(name):
    global _prune_at
    _registered.add(name)
    if len(_registered) >= _prune_at:
        _prune()
        _prune_at = max(256, 2 * len(_registered))


def _prune():
    """Forget the registered names whose segment is gone (unlinked by another process)."""
    for name in list(_registered):
        if not os.path.exists("/dev/shm/" + name.lstrip("/")):
            _registered.discard(name)


def _register_again(new_segment):
    """Tell a relaunched tracker of every segment this process made that still exists."""
    _prune()
    for name in _registered.union(_core._own_segments()):
        if name != new_segment:
            resource_tracker.register(name, "shared_memory")


def _at_exit():
    if _tracker_seen is not None:   # (a process that never registered starts no tracker here)
        try:
            _object_created(None)   # a tracker relaunched since: told first, so the names
        except Exception:           # below are unregistered from one that knows them
            pass
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
    _registered.clear()     # the parent's segments are the parent's to register again
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
os.register_at_fork(before=_core._before_fork, after_in_child=_after_fork_child)


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
