"""The manager typeids whose objects are fastmp's C synchronization primitives (see
_mgr_objects.py).

``Manager().Lock()``, ``RLock()``, ``Semaphore()``, ``BoundedSemaphore()``, ``Condition()``,
``Event()`` and ``Barrier()`` are fastmp's shared-memory objects (``_core.Lock`` ...), used
directly by the calling process: no server, no round trip.  Their proxies subclass the stdlib's
(AcquirerProxy, ConditionProxy, EventProxy, BarrierProxy), keep those proxies' signatures, and
give the semantics of the referent the stdlib's server holds: a *threading* object.  So, unlike
``fastmp.Lock()`` (a multiprocessing lock):

- a Lock released while unlocked raises RuntimeError, and any process or thread may release it;
  an RLock belongs to the process and thread that acquired it, and anyone else's release()
  raises RuntimeError;
- ``acquire(blocking, timeout)`` checks its arguments as threading's do (a timeout with
  blocking=False, a negative timeout other than -1: ValueError);
- a BoundedSemaphore released too many times, a Condition waited on or notified without its
  lock: threading's errors.

The error messages are the running interpreter's own: they are read from threading's objects
when this module is imported.

Condition(lock): a Lock or RLock from a fastmp manager is used as the condition's lock (its C
object); any other lock goes to the stdlib's server (which is started for it), so it behaves
exactly as with the stdlib's manager.

Where they differ from the stdlib's: no server runs them, so a Barrier's action runs in the
process whose wait() completes the round (the stdlib's runs it in the server) and needs to pickle
only when the proxy does; Barrier(parties) checks parties (ValueError below 1, TypeError for a
non-integer) where threading's accepts anything; a Semaphore's value is capped at SEM_VALUE_MAX
(OSError above it, as fastmp.Semaphore); a bad argument to Semaphore() or BoundedSemaphore()
raises threading's error itself, not a RemoteError around it; a Condition over a plain Lock
counts as held only by the thread that acquired the lock (threading's treats "locked by anyone"
as held); str() names fastmp's type (``<unlocked fastmp.synchronize.Lock object at 0x...>`` for
``<unlocked _thread.lock object at 0x...>``), and an RLock held by another thread or process
shows ``owner=other count=unknown``.

Beyond the stdlib: a process killed while it holds a Lock, RLock or Semaphore does not hang the
others (the C objects recover a dead holder, see docs/reliability.md), where the stdlib's
server keeps the dead client's lock forever.
"""
import operator as _operator
import threading as _threading

import multiprocessing.managers as _std
from multiprocessing.managers import AcquirerProxy, BarrierProxy, ConditionProxy, EventProxy

from . import _core
from ._mgr_objects import CObjectProxy, _rebuild, method_table
from ._mgr_objects import broken_pipe as _broken_pipe

__all__ = ()    # private to the package

_Lock = _core.Lock
_RLock = _core.RLock
_Semaphore = _core.Semaphore
_BoundedSemaphore = _core.BoundedSemaphore
_Condition = _core.Condition
_Event = _core.Event
_Barrier = _core.Barrier
_TIMEOUT_MAX = _threading.TIMEOUT_MAX
_get_ident = _threading.get_ident
_index = _operator.index


def _message(call, default):
    """The text of the error `call` raises on threading's objects (so the messages are the
    running Python's)."""
    try:
        call()
    except (RuntimeError, ValueError, OverflowError) as exc:
        return str(exc)
    return default


def _release_unlocked():
    _threading.Lock().release()


def _release_rlock_unowned():
    _threading.RLock().release()


def _lock_timeout_nonblocking():
    _threading.Lock().acquire(False, 1)


def _lock_timeout_negative():
    _threading.Lock().acquire(True, -2)


def _lock_timeout_too_large():
    _threading.Lock().acquire(True, 1e300)


def _sem_timeout_nonblocking():
    _threading.Semaphore().acquire(False, 1)


def _sem_negative():
    _threading.Semaphore(-1)


def _sem_release_n():
    _threading.Semaphore().release(0)


def _bounded_too_many():
    _threading.BoundedSemaphore().release()


def _cond_wait_unowned():
    _threading.Condition(_threading.Lock()).wait(0)


def _cond_notify_unowned():
    _threading.Condition(_threading.Lock()).notify()


_MSG_RELEASE_UNLOCKED = _message(_release_unlocked, "release unlocked lock")
_MSG_RLOCK_UNOWNED = _message(_release_rlock_unowned, "cannot release un-acquired lock")
_MSG_NONBLOCKING_TIMEOUT = _message(_lock_timeout_nonblocking,
                                    "can't specify a timeout for a non-blocking call")
_MSG_NEGATIVE_TIMEOUT = _message(_lock_timeout_negative, "timeout value must be positive")
_MSG_TIMEOUT_TOO_LARGE = _message(_lock_timeout_too_large, "timeout value is too large")
_MSG_SEM_NONBLOCKING_TIMEOUT = _message(_sem_timeout_nonblocking,
                                        "can't specify timeout for non-blocking acquire")
_MSG_SEM_NEGATIVE = _message(_sem_negative, "semaphore initial value must be >= 0")
_MSG_SEM_RELEASE_N = _message(_sem_release_n, "n must be one or more")
_MSG_BOUNDED = _message(_bounded_too_many, "Semaphore released too many times")
_MSG_WAIT_UNOWNED = _message(_cond_wait_unowned, "cannot wait on un-acquired lock")
_MSG_NOTIFY_UNOWNED = _message(_cond_notify_unowned, "cannot notify on un-acquired lock")


def _blocking_rule():
    """How threading's Lock.acquire takes `blocking` on this Python: as an integer (TypeError
    for other objects, up to 3.11) or by truth value (3.12 on)."""
    lock = _threading.Lock()
    try:
        lock.acquire(object())
    except TypeError:
        return _index
    lock.release()
    return bool


_blocking = _blocking_rule()


# ------------------------------------------------------------------ the operations

def _lock_args(blocking, timeout):
    """threading.Lock.acquire's checks of (blocking, timeout), timeout not None; the timeout
    for the C lock's acquire (None: forever)."""
    blocking = _blocking(blocking)
    if not isinstance(timeout, (int, float)):
        raise TypeError(f"{type(timeout).__name__!r} object cannot be interpreted as an "
                        f"integer")
    if timeout != timeout:
        raise ValueError("Invalid value NaN (not a number)")
    if timeout == -1:
        return blocking, None
    if not blocking:
        raise ValueError(_MSG_NONBLOCKING_TIMEOUT)
    if timeout < 0:
        raise ValueError(_MSG_NEGATIVE_TIMEOUT)
    if timeout > _TIMEOUT_MAX:
        raise OverflowError(_MSG_TIMEOUT_TOO_LARGE)
    return blocking, timeout


def _lock_acquire(obj, blocking, timeout):
    if timeout is None:
        return obj.acquire(_blocking(blocking))
    blocking, timeout = _lock_args(blocking, timeout)
    return obj.acquire(blocking, timeout)


def _lock_release(obj):
    try:
        obj.release()
    except ValueError:          # the C lock's "released too many times"
        raise RuntimeError(_MSG_RELEASE_UNLOCKED) from None


def _rlock_release(obj):
    try:
        obj.release()
    except AssertionError:      # the C lock's "not owned by thread"
        raise RuntimeError(_MSG_RLOCK_UNOWNED) from None


def _sem_acquire(obj, blocking, timeout):
    if timeout is None:
        return obj.acquire(True if blocking else False)
    if not blocking:
        raise ValueError(_MSG_SEM_NONBLOCKING_TIMEOUT)
    return obj.acquire(True, timeout)


def _sem_release(obj, n=1):
    if n < 1:
        raise ValueError(_MSG_SEM_RELEASE_N)
    bounded = type(obj) is _BoundedSemaphore
    # checked first so that n > 1 releases nothing when it would overflow (a release by
    # another process in between can still stop it part way, with the same error)
    if bounded and n > 1 and obj.get_value() + n > obj.maxvalue:
        raise ValueError(_MSG_BOUNDED)
    try:
        for _ in range(n):
            obj.release()
    except ValueError:
        if bounded:
            raise ValueError(_MSG_BOUNDED) from None
        raise


# ------------------------------------------------------------------ what str() shows
# The shape of the str() of the stdlib's referents (threading's objects), naming fastmp's type.

def _name(obj):
    t = type(obj)
    return f"{t.__module__}.{t.__qualname__}"


def _lock_str(obj):
    if type(obj) is _RLock:
        if obj._get_value():
            return f"<unlocked {_name(obj)} object owner=0 count=0 at {id(obj):#x}>"
        if obj._is_mine():
            return (f"<locked {_name(obj)} object owner={_get_ident()} count={obj._count()} "
                    f"at {id(obj):#x}>")
        return f"<locked {_name(obj)} object owner=other count=unknown at {id(obj):#x}>"
    state = "unlocked" if obj._get_value() else "locked"
    return f"<{state} {_name(obj)} object at {id(obj):#x}>"


def _semaphore_str(obj):
    if type(obj) is _BoundedSemaphore:
        value = f"{obj.get_value()}/{obj.maxvalue}"
    else:
        value = obj.get_value()
    return f"<{_name(obj)} at {id(obj):#x}: value={value}>"


def _condition_str(obj):
    return f"<Condition({_lock_str(obj._lock)}, {obj._num_waiters()})>"


def _event_str(obj):
    return f"<{_name(obj)} at {id(obj):#x}: {'set' if obj.is_set() else 'unset'}>"


def _barrier_str(obj):
    if obj.broken:
        return f"<{_name(obj)} at {id(obj):#x}: broken>"
    return f"<{_name(obj)} at {id(obj):#x}: waiters={obj.n_waiting}/{obj.parties}>"


class _SyncProxy(CObjectProxy):
    """str() as the stdlib's proxy shows it (the referent's str())."""

    _fm_str = None

    def __str__(self):
        try:
            self._check()
            return self._fm_str(self._obj)
        except Exception:
            return repr(self)[:-1] + "; '__str__()' failed>"


# ------------------------------------------------------------------ the proxies

class _OneHolderProxy(_SyncProxy, AcquirerProxy):
    """A Lock's or RLock's proxy: the C object's release() error (_fm_release_error) is
    threading's RuntimeError (_fm_release_msg)."""

    _fm_proxy_name = "AcquirerProxy"
    _fm_str = staticmethod(_lock_str)

    def acquire(self, blocking=True, timeout=None):
        if self._life.closed:
            raise _broken_pipe()
        return _lock_acquire(self._obj, blocking, timeout)

    def release(self):
        if self._life.closed:
            raise _broken_pipe()
        try:
            self._obj.release()
        except self._fm_release_error:
            raise RuntimeError(self._fm_release_msg) from None

    def __enter__(self):
        self._check()
        return self._obj.acquire()

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.release()


class LockProxy(_OneHolderProxy):
    """A manager's Lock(): a threading.Lock's semantics on a fastmp C lock."""

    _fm_release_error = ValueError
    _fm_release_msg = _MSG_RELEASE_UNLOCKED


class RLockProxy(_OneHolderProxy):
    """A manager's RLock(): a threading.RLock's semantics (owned by the process and thread
    that acquired it) on a fastmp C RLock."""

    _fm_release_error = AssertionError
    _fm_release_msg = _MSG_RLOCK_UNOWNED


class SemaphoreProxy(_SyncProxy, AcquirerProxy):
    """A manager's Semaphore() or BoundedSemaphore(): threading's semantics on a fastmp C
    semaphore."""

    _fm_proxy_name = "AcquirerProxy"
    _fm_str = staticmethod(_semaphore_str)

    def acquire(self, blocking=True, timeout=None):
        self._check()
        return _sem_acquire(self._obj, blocking, timeout)

    def release(self):
        self._check()
        _sem_release(self._obj)

    def __enter__(self):
        self._check()
        return self._obj.acquire()

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.release()


class _CondAttach:
    """Rebuilds a pickled Condition: its lock attached by its own state first (the C
    Condition's _fm_state() holds the lock object itself, which pickles only while a process
    is being started)."""

    @staticmethod
    def _fm_attach(state):
        name, offset, lock_type, lock_state = state
        return _Condition._fm_attach((name, offset, lock_type._fm_attach(lock_state)))


class SharedConditionProxy(_SyncProxy, ConditionProxy):
    """A manager's Condition(): a threading.Condition's semantics on a fastmp C condition
    (wait_for, ConditionProxy's, runs the predicate in the caller)."""

    _fm_proxy_name = "ConditionProxy"
    _fm_str = staticmethod(_condition_str)

    def acquire(self, blocking=True, timeout=None):
        self._check()
        return _lock_acquire(self._obj._lock, blocking, timeout)

    def release(self):
        self._check()
        lock = self._obj._lock
        if type(lock) is _RLock:
            _rlock_release(lock)
        else:
            _lock_release(lock)

    def __enter__(self):
        self._check()
        return self._obj.acquire()

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.release()

    def wait(self, timeout=None):
        self._check()
        try:
            return self._obj.wait(timeout)
        except AssertionError:      # the C condition's "must acquire() ..."
            raise RuntimeError(_MSG_WAIT_UNOWNED) from None

    def notify(self, n=1):
        self._check()
        try:
            self._obj.notify(n)
        except AssertionError:
            raise RuntimeError(_MSG_NOTIFY_UNOWNED) from None

    def notify_all(self):
        self._check()
        try:
            self._obj.notify_all()
        except AssertionError:
            raise RuntimeError(_MSG_NOTIFY_UNOWNED) from None

    def __reduce__(self):
        _, args = CObjectProxy.__reduce__(self)
        name, offset, lock = args[2]
        return _rebuild, (args[0], _CondAttach, (name, offset, type(lock), lock._fm_state()),
                          *args[3:])


class SharedEventProxy(_SyncProxy, EventProxy):
    """A manager's Event() on a fastmp C event."""

    _fm_proxy_name = "EventProxy"
    _fm_str = staticmethod(_event_str)

    def is_set(self):
        if self._life.closed:
            raise _broken_pipe()
        return self._obj.is_set()

    def set(self):
        if self._life.closed:
            raise _broken_pipe()
        self._obj.set()

    def clear(self):
        if self._life.closed:
            raise _broken_pipe()
        self._obj.clear()

    def wait(self, timeout=None):
        self._check()
        return self._obj.wait(timeout)


class SharedBarrierProxy(_SyncProxy, BarrierProxy):
    """A manager's Barrier() on a fastmp C barrier (threading.BrokenBarrierError; the action
    runs in the process whose wait() completes the round)."""

    _fm_proxy_name = "BarrierProxy"
    _fm_str = staticmethod(_barrier_str)

    def wait(self, timeout=None):
        self._check()
        return self._obj.wait(timeout)

    def abort(self):
        self._check()
        self._obj.abort()

    def reset(self):
        self._check()
        self._obj.reset()

    def _fm_getattribute(self, name):
        self._check()
        return getattr(self._obj, name)

    @property
    def parties(self):
        return self._fm_getattribute("parties")

    @property
    def n_waiting(self):
        return self._fm_getattribute("n_waiting")

    @property
    def broken(self):
        return self._fm_getattribute("broken")


def _sem_release_method(self, n=1):
    """_callmethod('release', (n,)): threading.Semaphore.release(n)."""
    self._check()
    _sem_release(self._obj, n)


LockProxy._fm_methods = method_table(LockProxy, AcquirerProxy._exposed_)
RLockProxy._fm_methods = method_table(RLockProxy, AcquirerProxy._exposed_)
SemaphoreProxy._fm_methods = dict(method_table(SemaphoreProxy, AcquirerProxy._exposed_),
                                  release=_sem_release_method)
SharedConditionProxy._fm_methods = method_table(SharedConditionProxy, ConditionProxy._exposed_)
SharedEventProxy._fm_methods = method_table(SharedEventProxy, EventProxy._exposed_)
SharedBarrierProxy._fm_methods = dict(method_table(SharedBarrierProxy, BarrierProxy._exposed_),
                                      __getattribute__=SharedBarrierProxy._fm_getattribute)


# ------------------------------------------------------------------ the factories

def _make_lock(m):
    return m._fm_adopt(LockProxy, _Lock(), "Lock")


def _make_rlock(m):
    return m._fm_adopt(RLockProxy, _RLock(), "RLock")


def _check_value(value):
    if value < 0:
        raise ValueError(_MSG_SEM_NEGATIVE)


def _make_semaphore(m, value=1):
    _check_value(value)
    return m._fm_adopt(SemaphoreProxy, _Semaphore(value), "Semaphore")


def _make_bounded_semaphore(m, value=1):
    _check_value(value)
    return m._fm_adopt(SemaphoreProxy, _BoundedSemaphore(value), "BoundedSemaphore")


def _make_condition(m, lock=None):
    if lock is None:
        obj = _Condition()
    elif isinstance(lock, (LockProxy, RLockProxy)):
        lock._check()
        obj = _Condition(lock._obj)
    else:
        # another kind of lock: the stdlib's server holds the condition, as the stdlib does
        return _std.SyncManager.Condition(m, lock)
    return m._fm_adopt(SharedConditionProxy, obj, "Condition")


def _make_event(m):
    return m._fm_adopt(SharedEventProxy, _Event(), "Event")


def _make_barrier(m, parties, action=None, timeout=None):
    return m._fm_adopt(SharedBarrierProxy, _Barrier(parties, action, timeout), "Barrier")


# typeid -> factory(manager, *args, **kwds)
TYPEIDS = {
    "Lock": _make_lock,
    "RLock": _make_rlock,
    "Semaphore": _make_semaphore,
    "BoundedSemaphore": _make_bounded_semaphore,
    "Condition": _make_condition,
    "Event": _make_event,
    "Barrier": _make_barrier,
}
