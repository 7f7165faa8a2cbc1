"""Queue, JoinableQueue, SimpleQueue on a lock-free shared-memory ring (``fastmp._core``).

The classes are Python subclasses of the C type ``fastmp._core.Queue``; everything that moves
items is C.  Differences from the stdlib, all on the side of fewer surprises:

* No feeder thread.  ``put()`` pickles in the caller's thread and copies the pickle into shared
  memory before it returns: a pickling error raises in ``put()``; a process may exit right after
  ``put()`` with nothing lost; ``p.join()`` before ``q.get()`` never deadlocks.
  ``join_thread()`` and ``cancel_join_thread()`` exist for compatibility and do nothing more.
* ``qsize()``, ``empty()`` and ``full()`` read one shared count: right the moment after a put.
* An unbounded queue's ``put()`` never waits: a full ring is replaced by one twice the size.
* Beyond the stdlib: ``put_many(items)`` and ``get_many(max_items=None, block=True,
  timeout=None)``.
"""
import os
import pickle
import queue as _queue
import types as _types
import multiprocessing.queues as _std
from multiprocessing import context as _mp_context
from multiprocessing import reduction as _reduction

from multiprocessing.util import Finalize, debug, info, is_exiting, register_after_fork  # noqa: F401

from . import _core
from . import _lifecycle  # noqa: F401  (segment tracking, fork and exit hooks)
from ._stdlib import forward as _forward

__all__ = ['Queue', 'SimpleQueue', 'JoinableQueue']

Empty = _queue.Empty
Full = _queue.Full

_KIND_QUEUE, _KIND_JOINABLE, _KIND_SIMPLE = 0, 1, 2


# Items that are plain data (None, bool, int, float, str, bytes, tuples of them; a list or dict
# of them at the top) travel in a compact form C writes and reads itself; everything else is
# pickled with the ForkingPickler, as the stdlib's queues do.
_core._set_queue_hooks(_reduction.ForkingPickler.dumps, pickle.loads)


def _rebuild(cls, state):
    return cls._fm_attach(state)


class _PipeEnd:
    """Stands for the stdlib's ``_reader`` / ``_writer`` connection ends (code that checks
    ``q._reader.closed`` after ``close()``, as CPython's tests do): there is no pipe, so
    ``closed`` is the queue's closed state, and ``close()`` closes the queue object."""
    __slots__ = ('_queue',)

    def __init__(self, q):
        self._queue = q

    @property
    def closed(self):
        return self._queue._closed

    def close(self):
        self._queue.close()


class Queue(_core.Queue):
    """A process-shared FIFO queue (multiprocessing.Queue's API; see the module docstring)."""

    _fm_kind = _KIND_QUEUE

    def __new__(cls, maxsize=0, *, ctx=None):
        return super().__new__(cls, maxsize, kind=cls._fm_kind)

    def __init__(self, maxsize=0, *, ctx=None):
        self._ctx = ctx

    def __reduce__(self):
        # as the stdlib: a queue travels only to a process being started
        _mp_context.assert_spawning(self)
        return _rebuild, (type(self), self._fm_state())

    __class_getitem__ = classmethod(_types.GenericAlias)

    def __repr__(self):
        return f"<{type(self).__module__}.{type(self).__qualname__} object at {id(self):#x}>"

    @property
    def _reader(self):
        return _PipeEnd(self)

    _writer = _reader

    def put_nowait(self, obj):
        """Put obj without waiting (queue.Full if a bounded queue is full)."""
        return self.put(obj, False)

    def get_nowait(self):
        """Take an item without waiting (queue.Empty if there is none)."""
        return self.get(False)

    def join_thread(self):
        """Kept for compatibility: there is no feeder thread to join.  Like the stdlib's, only
        after close()."""
        assert self._closed, "Queue {0!r} not closed".format(self)

    def cancel_join_thread(self):
        """Kept for compatibility: there is no feeder thread, so nothing to cancel (and nothing
        put can be lost at exit)."""


class JoinableQueue(Queue):
    """A Queue with task_done() and join() (multiprocessing.JoinableQueue's API)."""

    _fm_kind = _KIND_JOINABLE

    task_done = _core.Queue._task_done
    join = _core.Queue._join


class SimpleQueue(Queue):
    """An unbounded queue with get, put, empty and close (multiprocessing.SimpleQueue)."""

    _fm_kind = _KIND_SIMPLE

    def __new__(cls, *, ctx=None):
        return _core.Queue.__new__(cls, 0, kind=cls._fm_kind)

    def __init__(self, *, ctx=None):
        self._ctx = ctx

    def put(self, obj):
        """Put obj on the queue (never waits)."""
        return _core.Queue.put(self, obj)

    def get(self):
        """Remove and return an item, waiting for one."""
        return _core.Queue.get(self)


del os
__getattr__, __dir__ = _forward(globals(), _std)
