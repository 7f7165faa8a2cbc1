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

For the stdlib's own code built on a fastmp context (multiprocessing.pool.Pool,
concurrent.futures.ProcessPoolExecutor, logging's QueueHandler): the classes are also the
stdlib's (isinstance against multiprocessing.queues.Queue, JoinableQueue, SimpleQueue holds;
the stdlib class comes after the C type, so nothing of it runs on the fast path), and
``_reader`` / ``_writer`` behave as the ends of the stdlib's pipe, down to a ``fileno()`` that
multiprocessing.connection.wait can poll (csrc/core/doorbell.h; docs/reliability.md).
"""
import functools as _functools
import os
import pickle
import queue as _queue
import threading as _threading
import time as _time
import types as _types
from multiprocessing import connection as _connection
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

# What the C type is to be (its shared block records it).
_KIND_QUEUE = _core.QUEUE_KIND_QUEUE
_KIND_JOINABLE = _core.QUEUE_KIND_JOINABLE
_KIND_SIMPLE = _core.QUEUE_KIND_SIMPLE


# Items that are plain data (None, bool, int, float, str, bytes, tuples of them; a list or dict
# of them at the top) travel in a compact form C writes and reads itself; everything else is
# pickled with the ForkingPickler, as the stdlib's queues do.
_core._set_queue_hooks(_reduction.ForkingPickler.dumps, pickle.loads)


def _rebuild(cls, state):
    return cls._fm_attach(state)


class _End:
    """One end of the queue seen as a connection, for the stdlib's code that takes
    ``q._reader`` / ``q._writer`` for the ends of a pipe (multiprocessing.pool sends tasks
    with ``_writer.send`` and takes results with ``_reader.recv``; concurrent.futures waits
    on ``_reader`` with multiprocessing.connection.wait).  There is no pipe: the methods go
    to the queue.  ``close()`` closes this end only (the stdlib's pool workers close the ends
    they do not use, then go on with the queue); ``closed`` is also true once the queue
    object is closed."""
    __slots__ = ('_queue', '_end_closed')

    def __init__(self, q):
        self._queue = q
        self._end_closed = False

    @property
    def closed(self):
        return self._end_closed or self._queue._closed

    def _check_closed(self):
        if self.closed:
            raise OSError("handle is closed")

    def close(self):
        self._end_closed = True

    def __repr__(self):
        return f"<{type(self).__qualname__} of {self._queue!r}>"


class _Reader(_End):
    """The reading end: recv, poll, fileno (see _End)."""
    __slots__ = ()
    readable, writable = True, False

    def close(self):
        self._end_closed = True
        self._queue._unwatch()

    def fileno(self):
        """A descriptor that reads ready while the queue holds an item: select, poll and
        multiprocessing.connection.wait accept the reader.  Each call arms it (the stdlib's
        wait calls it once per wait), from a socket this process binds for the queue the
        first time (csrc/core/doorbell.h: producers ring it only while someone watches)."""
        self._check_closed()
        return self._queue._watch_fd()

    def recv(self):
        """Take the next item (waiting for one): the queue's get()."""
        self._check_closed()
        return _core.Queue.get(self._queue)

    def recv_bytes(self, maxlength=None):
        """Take the next item, which must be bytes (what send_bytes put)."""
        self._check_closed()
        item = _core.Queue.get(self._queue)
        if not isinstance(item, bytes):
            raise TypeError(f"recv_bytes() found a {type(item).__name__}, not bytes")
        if maxlength is not None and len(item) > maxlength:
            raise OSError("bad message length")
        return item

    def poll(self, timeout=0.0):
        """True when an item is there to take, waiting up to timeout seconds (None:
        without limit) for one."""
        self._check_closed()
        q = self._queue
        if _core.Queue.qsize(q) > 0:
            return True
        if timeout is not None and timeout <= 0:
            return False
        deadline = None if timeout is None else _time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - _time.monotonic())
            _connection.wait([self], left)
            if _core.Queue.qsize(q) > 0:
                return True
            if deadline is not None and _time.monotonic() >= deadline:
                return False


class _Writer(_End):
    """The writing end: send, send_bytes (see _End)."""
    __slots__ = ()
    readable, writable = False, True

    def send(self, obj):
        """Put obj on the queue (the queue's put, with no wait for room)."""
        self._check_closed()
        _core.Queue.put(self._queue, obj)

    def send_bytes(self, buf, offset=0, size=None):
        """Put bytes(buf[offset:offset + size]) on the queue as one item."""
        self._check_closed()
        m = memoryview(buf).cast('B')
        if offset < 0 or offset > len(m):
            raise ValueError("offset out of bounds")
        if size is None:
            size = len(m) - offset
        elif size < 0 or offset + size > len(m):
            raise ValueError("buffer length < offset + size")
        _core.Queue.put(self._queue, bytes(m[offset:offset + size]))


class _QueueBase(_core.Queue):
    """What Queue, JoinableQueue and SimpleQueue share: pickling, repr, the connection-like
    ends, and the lock the stdlib's pool takes (``_rlock``) when it empties a queue."""

    def __reduce__(self):
        # as the stdlib: a queue travels only to a process being started
        _mp_context.assert_spawning(self)
        return _rebuild, (type(self), self._fm_state())

    __class_getitem__ = classmethod(_types.GenericAlias)

    def __repr__(self):
        return f"<{type(self).__module__}.{type(self).__qualname__} object at {id(self):#x}>"

    @_functools.cached_property
    def _reader(self):
        return _Reader(self)

    @_functools.cached_property
    def _writer(self):
        return _Writer(self)

    @_functools.cached_property
    def _rlock(self):
        # The stdlib's queues serialize readers with it; fastmp's get needs no lock.  The
        # stdlib's pool takes it (and keeps it) while it empties a queue at terminate():
        # a lock of this process is enough for that.
        return _threading.Lock()


class Queue(_QueueBase, _std.Queue):
    """A process-shared FIFO queue (multiprocessing.Queue's API; see the module docstring).
    A multiprocessing.queues.Queue for isinstance; every method is fastmp's."""

    _fm_kind = _KIND_QUEUE

    def __new__(cls, maxsize=0, *, ctx=None):
        return _core.Queue.__new__(cls, maxsize, kind=cls._fm_kind)

    def __init__(self, maxsize=0, *, ctx=None):
        self._ctx = ctx

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


class JoinableQueue(Queue, _std.JoinableQueue):
    """A Queue with task_done() and join() (multiprocessing.JoinableQueue's API)."""

    _fm_kind = _KIND_JOINABLE

    task_done = _core.Queue._task_done
    join = _core.Queue._join


class SimpleQueue(_QueueBase, _std.SimpleQueue):
    """An unbounded queue with get, put, empty and close (multiprocessing.SimpleQueue).
    A multiprocessing.queues.SimpleQueue for isinstance (not a Queue, as in the stdlib)."""

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
