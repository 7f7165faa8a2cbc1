"""The manager typeids whose objects are fastmp's C queues and shared values (see _mgr_objects.py).

What the stdlib's server holds for these typeids, and what fastmp holds instead:

- ``Queue(maxsize=0)`` and ``JoinableQueue(maxsize=0)``: a ``queue.Queue`` for both (so both have
  task_done and join) behind an ``AutoProxy[Queue]`` / ``AutoProxy[JoinableQueue]``.  Here: a
  ``_core.Queue`` of the joinable kind (the ring of fastmp.Queue: an item is pickled by the
  caller, so a pickling error raises in put() with the queue unchanged, and a producer killed in
  the middle of a put does not wedge it).  queue.Queue's argument checks are made here
  (a negative timeout raises ValueError where queue.Queue raises it).  A put or get that waits
  looks at its manager every half second: once the manager shut down it raises EOFError, as the
  stdlib's proxy does when its server goes (join() waits in C without looking).
- ``Value(typecode, value, lock=True)``: a ``managers.Value``, which stores any object (the
  typecode is only shown by its repr).  Here: a ``_core.SharedKV`` list of two items, the pickled
  value and the pickled typecode.  A set publishes the whole new value at once (a reader sees the
  old value or the new one), any object fits, and a small int or float costs one short copy each
  way; a fixed C slot would be faster only for the typecode's own C type, which the stdlib does
  not enforce.
- ``Array(typecode, sequence, lock=True)``: an ``array.array``.  Here: a ``_core.BufferWrapper``
  (a block of fastmp's shared heap) holding the typecode in its first 8 bytes and the items after
  them, read and written through a memoryview; errors are array.array's own (an item is checked by
  putting it in a one-item array first, a slice is assigned on a copy first).  Unlike the stdlib's
  referent, the array keeps its length: a slice assignment that would change it raises
  ValueError, with the array unchanged.
"""
import array as _array_mod
import operator as _operator
import pickle as _pickle
import queue as _queue
import traceback as _traceback
from time import monotonic as _monotonic
from multiprocessing import managers as _std

from . import _core
from . import queues as _queues     # (also sets the C queue's pickling hooks)
from ._mgr_objects import CObjectProxy, method_table

__all__ = ()    # private to the package

_array = _array_mod.array
_SharedKV = _core.SharedKV
_CQueue = _core.Queue
_Buffer = _core.BufferWrapper
_loads = _pickle.loads
_Empty = _queues.Empty
_Full = _queues.Full


def _made_by_server(make, *args, **kwds):
    """make(*args, **kwds), where the stdlib's server makes the referent: an error there reaches
    the caller as a RemoteError carrying the traceback's text."""
    try:
        return make(*args, **kwds)
    except Exception:
        raise _std.RemoteError(_traceback.format_exc()) from None


def _enc(value):
    """A value as the shared dict and list store theirs (managers.py)."""
    return _managers._enc_value(value)


def _named(owner, cls):
    """Give cls's public methods the qualified names owner.method, so that a call with wrong
    arguments raises the TypeError the stdlib raises (its message names the method so)."""
    for name, func in list(vars(cls).items()):
        if callable(func) and not name.startswith("_"):
            func.__qualname__ = f"{owner}.{name}"
    return cls


# ----------------------------------------------------------------------- Queue

_SLICE = 0.5       # how long a blocked put or get waits before it looks at its manager's life
_ShutDown = getattr(_queue, "ShutDown", None)   # queue.Queue.shutdown(): Python 3.13+


def _negative(timeout):
    return timeout is not None and timeout < 0


class _QueueMethods(CObjectProxy, _std.BaseProxy):
    """The methods of queue.Queue on a fastmp C queue (the stdlib's proxy is an AutoProxy on a
    queue.Queue)."""

    _exposed_ = tuple(_std.public_methods(_queue.Queue()))     # as the stdlib's AutoProxy
    _isauto = True

    def put(self, item, block=True, timeout=None):
        self._check()
        q = self._obj
        if not block or q._maxsize == 0:
            return q.put(item, block)
        if _negative(timeout):
            raise ValueError("'timeout' must be a non-negative number")
        return self._fm_wait(q.put, (item, True), timeout, _Full)

    def get(self, block=True, timeout=None):
        self._check()
        if not block:
            return self._obj.get(False)
        if _negative(timeout):
            raise ValueError("'timeout' must be a non-negative number")
        return self._fm_wait(self._obj.get, (True,), timeout, _Empty)

    def _fm_wait(self, op, args, timeout, exc_type):
        """op(*args, slice) in slices of at most _SLICE seconds up to timeout (None: without
        limit), so that a wait notices its manager's shutdown: EOFError then, as the stdlib's
        proxy raises when its server goes while it waits."""
        deadline = None if timeout is None else _monotonic() + timeout
        while True:
            left = _SLICE if deadline is None else min(max(deadline - _monotonic(), 0.0), _SLICE)
            try:
                return op(*args, left)
            except exc_type:
                if self._life.closed:
                    raise EOFError from None
                self._fm_waited(exc_type)
                if deadline is not None and _monotonic() >= deadline:
                    raise

    def _fm_waited(self, exc_type):
        """Called each time a slice of a wait ended with nothing done."""

    def put_nowait(self, item):
        return self.put(item, False)

    def get_nowait(self):
        return self.get(False)

    def qsize(self):
        self._check()
        return self._obj.qsize()

    def empty(self):
        self._check()
        return self._obj.empty()

    def full(self):
        self._check()
        return self._obj.full()

    def task_done(self):
        self._check()
        self._obj._task_done()

    def join(self):
        self._check()
        self._obj._join()

    def __str__(self):
        try:
            self._check()
        except Exception:
            return repr(self)[:-1] + "; '__str__()' failed>"
        return "<queue.Queue object at %#x>" % id(self._obj)


def _rebuild_with_flag(rebuild, args, flag_state):
    proxy = rebuild(*args)
    proxy._fm_set_flag(_Buffer._fm_attach(flag_state))
    return proxy


class _QueueShutdownMethods(_QueueMethods):
    """queue.Queue's methods where it has shutdown() (3.13+): the shut-down state is one shared
    word (a BufferWrapper of 8 bytes) next to the C queue, checked where queue.Queue checks it.
    A put or get already waiting sees it within a wait slice (_SLICE)."""

    def _fm_set_flag(self, buf):
        d = self.__dict__
        d["_flag_buf"] = buf
        d["_flag"] = buf.create_memoryview().cast("q")

    def __reduce__(self):
        rebuild, args = super().__reduce__()    # (its manager keeps the queue from now on)
        if self._manager is not None:
            self._manager._fm_keep(self._flag_buf)      # and the flag with it
        return _rebuild_with_flag, (rebuild, args, self._flag_buf._fm_state())

    def put(self, item, block=True, timeout=None):
        self._check()
        if self._flag[0]:
            raise _ShutDown
        return super().put(item, block, timeout)

    def get(self, block=True, timeout=None):
        self._check()
        if self._flag[0] and not self._obj.qsize():
            raise _ShutDown
        return super().get(block, timeout)

    def _fm_waited(self, exc_type):
        if self._flag[0] and (exc_type is _Full or not self._obj.qsize()):
            raise _ShutDown

    def shutdown(self, immediate=False):
        self._check()
        self._flag[0] = 1
        if immediate:
            q = self._obj
            while True:
                try:
                    q.get(False)
                except _Empty:
                    break
                if q._unfinished() > 0:
                    q._task_done()


class QueueProxy(_QueueShutdownMethods if _ShutDown is not None else _QueueMethods):
    """A manager's Queue() (see the module's docstring)."""

    _fm_proxy_name = "AutoProxy[Queue]"


_named("Queue", _QueueMethods)
_named("Queue", _QueueShutdownMethods)
QueueProxy.__name__ = "AutoProxy[Queue]"     # as the stdlib's class (pickled by __qualname__)


class JoinableQueueProxy(QueueProxy):
    """A manager's JoinableQueue(): the same as its Queue() (as in the stdlib)."""

    _fm_proxy_name = "AutoProxy[JoinableQueue]"


JoinableQueueProxy.__name__ = "AutoProxy[JoinableQueue]"
QueueProxy._fm_methods = method_table(QueueProxy, QueueProxy._exposed_)
JoinableQueueProxy._fm_methods = QueueProxy._fm_methods


def _queue_factory(cls, typeid):
    def make(manager, *args, **kwds):
        maxsize = _made_by_server(_queue.Queue, *args, **kwds).maxsize
        q = _CQueue(maxsize if maxsize > 0 else 0, kind=_core.QUEUE_KIND_JOINABLE)
        proxy = manager._fm_adopt(cls, q, typeid)
        if _ShutDown is not None:
            proxy._fm_set_flag(_Buffer(8))
        return proxy
    return make


# ----------------------------------------------------------------------- Value

class SharedValueProxy(CObjectProxy, _std.ValueProxy):
    """A manager's Value(): any object, in a shared list's first item (its typecode in the
    second)."""

    _fm_proxy_name = "ValueProxy"

    def get(self):
        if self._life.closed:
            self._check()
        return _loads(self._obj.list_get(0))

    def set(self, value):
        if self._life.closed:
            self._check()
        self._obj.list_set(0, _enc(value))

    value = property(get, set)

    def _fm_referent(self):
        self._check()
        kv = self._obj
        kv.begin()
        try:
            raw, tc = kv.list_get(0), kv.list_get(1)
        finally:
            kv.end()
        return _std.Value(_loads(tc), _loads(raw))

    def _getvalue(self):
        return self._fm_referent()

    def __str__(self):
        try:
            return repr(self._fm_referent())
        except Exception:
            return repr(self)[:-1] + "; '__str__()' failed>"


_named("ValueProxy", SharedValueProxy)     # the stdlib's proxy checks set()'s arguments itself
SharedValueProxy._fm_methods = method_table(SharedValueProxy, _std.ValueProxy._exposed_)


def _make_value(manager, *args, **kwds):
    ref = _made_by_server(_std.Value, *args, **kwds)
    kv = _SharedKV(_SharedKV.LIST)
    kv.list_extend([_enc(ref._value), _enc(ref._typecode)])
    return manager._fm_adopt(SharedValueProxy, kv, "Value")


# ----------------------------------------------------------------------- Array

_HEADER = 8     # the typecode's character (ASCII), then zeros; the items start after it
_CASTABLE = frozenset("bBhHiIlLqQfd")   # what memoryview.cast takes (not 'u', 'w')


class SharedArrayProxy(CObjectProxy, _std.ArrayProxy):
    """A manager's Array(): the items of an array.array in a block of shared memory, with
    array.array's semantics and errors for __len__, __getitem__, __setitem__ (see the module's
    docstring: the length is fixed)."""

    _fm_proxy_name = "ArrayProxy"

    @classmethod
    def _fm_from(cls, obj, life, typeid, manager=None):
        self = super()._fm_from(obj, life, typeid, manager)
        raw = obj.create_memoryview()
        tc = bytes(raw[:1]).decode("ascii")
        size = _array(tc).itemsize
        data = raw[_HEADER:]
        d = self.__dict__
        d["_tc"] = tc
        d["_size"] = size
        d["_len"] = len(data) // size
        d["_bytes"] = data
        d["_items"] = data.cast(tc) if tc in _CASTABLE else None
        return self

    def _fm_copy(self):
        a = _array(self._tc)
        a.frombytes(self._bytes)
        return a

    def _fm_put(self, i, a, j):
        """Item i of the shared array := item j of the array a (already validated)."""
        s = self._size
        self._bytes[i * s:(i + 1) * s] = memoryview(a).cast("B")[j * s:(j + 1) * s]

    def _fm_index(self, i, message):
        n = self._len
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(message)
        return i

    def __len__(self):
        self._check()
        return self._len

    def __getitem__(self, i):
        self._check()
        if type(i) is int:
            i = self._fm_index(i, "array index out of range")
            items = self._items
            if items is not None:
                return items[i]
            s = self._size
            a = _array(self._tc)
            a.frombytes(self._bytes[i * s:(i + 1) * s])
            return a[0]
        return self._fm_copy()[i]       # a slice, or an index of another type: array.array's

    def __setitem__(self, i, value):
        self._check()
        if type(i) is int:
            i = self._fm_index(i, "array assignment index out of range")
            one = _array(self._tc, (value,))    # array.array's item errors
            items = self._items
            if items is not None:
                items[i] = one[0]
            else:
                self._fm_put(i, one, 0)
            return
        a = self._fm_copy()
        n = len(a)
        a[i] = value                    # array.array's errors, on a copy
        if len(a) != n:
            raise ValueError("the length of a manager's Array cannot change "
                             f"(a slice assignment would make it {len(a)}, not {n})")
        if isinstance(i, slice):
            start, stop, step = i.indices(n)
            if step == 1:
                if start < stop:
                    s = self._size
                    self._bytes[start * s:stop * s] = memoryview(a).cast("B")[start * s:stop * s]
            else:
                for j in range(start, stop, step):
                    self._fm_put(j, a, j)
        else:
            j = _operator.index(i)
            self._fm_put(j + n if j < 0 else j, a, j + n if j < 0 else j)

    def _getvalue(self):
        self._check()
        return self._fm_copy()

    def __str__(self):
        try:
            return str(self._getvalue())
        except Exception:
            return repr(self)[:-1] + "; '__str__()' failed>"


SharedArrayProxy._fm_methods = method_table(SharedArrayProxy, _std.ArrayProxy._exposed_)


def _make_array(manager, *args, **kwds):
    a = _made_by_server(_std.Array, *args, **kwds)    # array.array(typecode, sequence)
    b = _Buffer(_HEADER + len(a) * a.itemsize)
    raw = b.create_memoryview()
    raw[:1] = a.typecode.encode("ascii")
    raw[_HEADER:] = memoryview(a).cast("B")
    return manager._fm_adopt(SharedArrayProxy, b, "Array")


# typeid -> factory(manager, *args, **kwds)
TYPEIDS = {
    "Queue": _queue_factory(QueueProxy, "Queue"),
    "JoinableQueue": _queue_factory(JoinableQueueProxy, "JoinableQueue"),
    "Value": _make_value,
    "Array": _make_array,
}


# last: managers.py imports this module (for TYPEIDS) before it defines what _enc uses
from . import managers as _managers  # noqa: E402
