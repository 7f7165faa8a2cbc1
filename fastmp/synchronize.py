"""Lock, RLock, Semaphore, BoundedSemaphore, Condition, Event, Barrier.

The objects live in shared memory and are implemented in C
(``fastmp._core``): futex-based, the GIL released while waiting, Ctrl-C
honoured at once.  The classes here *are* the C types (CPython specializes a
method call only when the method belongs to the object's exact type, so a
Python subclass would make ``lock.acquire()`` slower); this module gives them
what the stdlib's classes do in Python: ``repr`` and pickling (only while a
process is being started).  Barrier is a Python subclass, because the
stdlib's Barrier is a ``threading.Barrier``.

Beyond the stdlib: a process that dies while holding a Lock, RLock or
Semaphore does not hang the others; see docs/reliability.md.
"""
import os
import threading

from multiprocessing import process as _process

from . import _core
from . import _lifecycle  # noqa: F401  (segment tracking, fork and exit hooks)

__all__ = [
    'Lock', 'RLock', 'Semaphore', 'BoundedSemaphore', 'Condition', 'Event',
    'Barrier',
]

SEM_VALUE_MAX = _core.SEM_VALUE_MAX

Lock = _core.Lock
RLock = _core.RLock
Semaphore = _core.Semaphore
BoundedSemaphore = _core.BoundedSemaphore
Condition = _core.Condition
Event = _core.Event


def _rebuild(cls, state):
    return cls._fm_attach(state)


def _reduce(self):
    _lifecycle.keep_alive_while_spawning(self)
    return _rebuild, (type(self), self._fm_state())


def _holder_name():
    name = _process.current_process().name
    thread = threading.current_thread().name
    if thread != 'MainThread':
        name += '|' + thread
    return name


def _lock_repr(self):
    try:
        if self._is_mine():
            name = _holder_name()
        elif self._get_value() == 1:
            name = 'None'
        elif self._owner_pid() == os.getpid():
            name = 'SomeOtherThread'
        else:
            name = 'SomeOtherProcess'
    except Exception:
        name = 'unknown'
    return '<%s(owner=%s)>' % (type(self).__name__, name)


def _rlock_repr(self):
    try:
        if self._is_mine():
            name, count = _holder_name(), self._count()
        elif self._get_value() == 1:
            name, count = 'None', 0
        elif self._owner_pid() == os.getpid():
            name, count = 'SomeOtherThread', 'nonzero'
        else:
            name, count = 'SomeOtherProcess', 'nonzero'
    except Exception:
        name, count = 'unknown', 'unknown'
    return '<%s(%s, %s)>' % (type(self).__name__, name, count)


def _semaphore_repr(self):
    try:
        value = self.get_value()
    except Exception:
        value = 'unknown'
    return '<%s(value=%s)>' % (type(self).__name__, value)


def _bounded_semaphore_repr(self):
    try:
        value = self.get_value()
    except Exception:
        value = 'unknown'
    return '<%s(value=%s, maxvalue=%s)>' % (type(self).__name__, value,
                                            self.maxvalue)


def _condition_repr(self):
    try:
        waiters = self._num_waiters()
    except Exception:
        waiters = 'unknown'
    return '<%s(%s, %s)>' % (type(self).__name__, self._lock, waiters)


def _event_repr(self):
    status = 'set' if self.is_set() else 'unset'
    return f"<{type(self).__qualname__} at {id(self):#x} {status}>"


for _cls, _repr in [(Lock, _lock_repr), (RLock, _rlock_repr),
                    (Semaphore, _semaphore_repr),
                    (BoundedSemaphore, _bounded_semaphore_repr),
                    (Condition, _condition_repr), (Event, _event_repr)]:
    _cls.__repr__ = _repr
    _cls.__reduce__ = _reduce
del _cls, _repr


# The stdlib's SemLock classes keep their C lock in ``_semlock``, and the stdlib's own code
# reaches through it: multiprocessing.queues.Queue.full() calls
# ``self._sem._semlock._is_zero()`` on ctx.BoundedSemaphore(), JoinableQueue the same on
# ctx.Semaphore(0), synchronize.Condition ``_lock._semlock._is_mine()`` and ``_count()`` on
# the lock it is given.  Here the C object is its own ``_semlock`` (no second lock, no
# wrapper), with the few names the stdlib's SemLock has and the types here did not.
_RECURSIVE_MUTEX, _SEMAPHORE = 0, 1     # the stdlib's SemLock kinds


def _semlock(self):
    return self


def _lock_is_zero(self):
    return self._get_value() == 0


def _after_fork(self):
    """Nothing to reset after a fork: the state is in shared memory."""


for _cls, _kind in [(Lock, _SEMAPHORE), (RLock, _RECURSIVE_MUTEX),
                    (Semaphore, _SEMAPHORE), (BoundedSemaphore, _SEMAPHORE)]:
    _cls._semlock = property(_semlock, doc="the object itself (the stdlib's SemLock has "
                                           "its C lock here)")
    _cls.kind = _kind
    _cls.name = None        # no named POSIX semaphore behind it
    _cls._after_fork = _after_fork
for _cls in (Lock, RLock):
    _cls._is_zero = _lock_is_zero
    _cls.maxvalue = 1
    _cls.SEM_VALUE_MAX = SEM_VALUE_MAX
Semaphore.SEM_VALUE_MAX = BoundedSemaphore.SEM_VALUE_MAX = SEM_VALUE_MAX
del _cls, _kind


class _Count:
    """A read-only count with the get_value() of the stdlib's semaphores."""
    __slots__ = ('_value',)

    def __init__(self, value):
        self._value = value

    def get_value(self):
        return self._value


# The stdlib's Condition keeps three semaphores; code that checks a
# Condition for leaked waiters (CPython's own tests do) reads them.  fastmp's
# Condition has tickets instead: the waiters not yet notified are "sleeping",
# and a notification is bound to the ticket it wakes, so none is ever left
# over in a "wait semaphore" and no "woken" count lags behind.
Condition._sleeping_count = property(lambda self: _Count(self._num_waiters()))
Condition._woken_count = property(lambda self: _Count(0))
Condition._wait_semaphore = property(lambda self: _Count(0))


class Barrier(_core.Barrier, threading.Barrier):
    """A barrier shared between processes (a threading.Barrier, as the
    stdlib's; everything it does is in C)."""

    __reduce__ = _reduce

    def __init__(self, parties, action=None, timeout=None, *, ctx=None):
        # all state lives in the shared block that __new__ set up
        pass
