"""Lock, RLock, Semaphore, BoundedSemaphore, Condition, Event, Barrier.

The objects live in shared memory and are implemented in C
(``fastmp._core``): futex-based, the GIL released while waiting, Ctrl-C
honoured at once.  This module adds what the stdlib's classes show in
Python: the constructors' ``ctx`` argument, ``repr`` and pickling (only while
a process is being started, as the stdlib).

Beyond the stdlib: a process that dies while holding a Lock, RLock or
Semaphore does not hang the others; see the README, "dead-holder recovery".
"""
import os
import threading

from multiprocessing import context as _mp_context
from multiprocessing import process as _process

from . import _core
from . import _lifecycle  # noqa: F401  (segment tracking, fork and exit hooks)

__all__ = [
    'Lock', 'RLock', 'Semaphore', 'BoundedSemaphore', 'Condition', 'Event',
    'Barrier',
]

SEM_VALUE_MAX = _core.SEM_VALUE_MAX


def _rebuild(cls, state):
    return cls._fm_attach(state)


class _Shared:
    """Pickling for the C types: only while spawning a process."""
    __slots__ = ()

    def __reduce__(self):
        _mp_context.assert_spawning(self)
        return _rebuild, (type(self), self._fm_state())


def _holder_name():
    name = _process.current_process().name
    thread = threading.current_thread().name
    if thread != 'MainThread':
        name += '|' + thread
    return name


class Lock(_Shared, _core.Lock):
    """A non-recursive lock shared between processes."""

    def __repr__(self):
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


class RLock(_Shared, _core.RLock):
    """A recursive lock shared between processes."""

    def __repr__(self):
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


class Semaphore(_Shared, _core.Semaphore):
    """A counting semaphore shared between processes."""

    def __new__(cls, value=1, *, ctx=None):
        return super().__new__(cls, value)

    def __repr__(self):
        try:
            value = self.get_value()
        except Exception:
            value = 'unknown'
        return '<%s(value=%s)>' % (type(self).__name__, value)


class BoundedSemaphore(Semaphore):
    """A semaphore whose release() raises ValueError past its initial value."""

    def __new__(cls, value=1, *, ctx=None):
        return _core.Semaphore.__new__(cls, value, maxvalue=value)

    def __repr__(self):
        try:
            value = self.get_value()
        except Exception:
            value = 'unknown'
        return '<%s(value=%s, maxvalue=%s)>' % (type(self).__name__, value,
                                                self.maxvalue)


class Condition(_Shared, _core.Condition):
    """A condition variable shared between processes, over a fastmp lock."""

    def __new__(cls, lock=None, *, ctx=None):
        if lock is None:
            lock = RLock()
        return super().__new__(cls, lock)

    def __repr__(self):
        try:
            waiters = self._num_waiters()
        except Exception:
            waiters = 'unknown'
        return '<%s(%s, %s)>' % (type(self).__name__, self._lock, waiters)


class Event(_Shared, _core.Event):
    """An event flag shared between processes."""

    def __repr__(self):
        status = 'set' if self.is_set() else 'unset'
        return f"<{type(self).__qualname__} at {id(self):#x} {status}>"


class Barrier(_Shared, _core.Barrier, threading.Barrier):
    """A barrier shared between processes (a threading.Barrier, as the
    stdlib's; everything it does is in C)."""

    def __init__(self, parties, action=None, timeout=None, *, ctx=None):
        # all state lives in the shared block set up by __new__
        pass
