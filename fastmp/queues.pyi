# fastmp.queues: Queue, JoinableQueue, SimpleQueue on fastmp's shared-memory ring (C).
import multiprocessing.queues as _std
import threading
import types
from queue import Empty as Empty, Full as Full
from typing import Any, Generic, Iterable, List, Optional, TypeVar

from multiprocessing.util import (Finalize as Finalize, debug as debug, info as info,
                                  is_exiting as is_exiting,
                                  register_after_fork as register_after_fork)

from ._core import Queue as _CoreQueue

__all__ = ["Queue", "SimpleQueue", "JoinableQueue"]

_T = TypeVar("_T")


class _Reader:
    """q._reader: the reading end as a connection (recv, poll, fileno for
    multiprocessing.connection.wait and select)."""
    readable: bool
    writable: bool
    @property
    def closed(self) -> bool: ...
    def close(self) -> None: ...
    def fileno(self) -> int: ...
    def recv(self) -> Any: ...
    def recv_bytes(self, maxlength: Optional[int] = ...) -> bytes: ...
    def poll(self, timeout: Optional[float] = ...) -> bool: ...


class _Writer:
    """q._writer: the writing end as a connection (send, send_bytes)."""
    readable: bool
    writable: bool
    @property
    def closed(self) -> bool: ...
    def close(self) -> None: ...
    def send(self, obj: Any) -> None: ...
    def send_bytes(self, buf: Any, offset: int = ..., size: Optional[int] = ...) -> None: ...


class _QueueBase(_CoreQueue):
    _reader: _Reader
    _writer: _Writer
    _rlock: threading.Lock


class Queue(_QueueBase, _std.Queue, Generic[_T]):
    """A process-shared FIFO queue with multiprocessing.Queue's API (no feeder thread);
    a multiprocessing.queues.Queue for isinstance."""
    def __init__(self, maxsize: int = ..., *, ctx: Any = ...) -> None: ...
    def put(self, obj: _T, block: bool = ..., timeout: Optional[float] = ...) -> None:
        """Pickle obj into shared memory before returning.  OSError(ENOSPC) when /dev/shm has
        no room for it (nothing is left behind; smaller items still go)."""
    def get(self, block: bool = ..., timeout: Optional[float] = ...) -> _T:
        """The oldest item.  A record corrupted in shared memory raises ValueError naming the
        queue (the next get() has the next item)."""
    def put_nowait(self, obj: _T) -> None: ...
    def get_nowait(self) -> _T: ...
    def qsize(self) -> int: ...
    def empty(self) -> bool: ...
    def full(self) -> bool: ...
    def close(self) -> None: ...
    def join_thread(self) -> None:
        """Compatibility: no feeder thread to join (asserts close() was called, as the stdlib)."""
    def cancel_join_thread(self) -> None:
        """Compatibility: nothing to cancel."""
    # beyond the stdlib
    def put_many(self, items: Iterable[_T], block: bool = ..., timeout: Optional[float] = ...
                 ) -> None:
        """Put every item, in order; a bounded queue waits for room for each.

        When an item fails (the iterable raises, an item does not pickle, queue.Full), the
        exception propagates; the items before that one are in the queue, the rest are not
        (an iterator is consumed one item at a time, as each is put)."""
    def get_many(self, max_items: Optional[int] = ..., block: bool = ...,
                 timeout: Optional[float] = ...) -> List[_T]:
        """Up to max_items items (None: all there are); waits like get() for the first."""
    def __class_getitem__(cls, item: Any) -> types.GenericAlias: ...


class JoinableQueue(Queue[_T], _std.JoinableQueue):
    """A Queue with task_done() and join()."""
    def task_done(self) -> None: ...
    def join(self) -> None: ...


class SimpleQueue(_QueueBase, _std.SimpleQueue, Generic[_T]):
    """An unbounded queue: put, get, empty, close; a multiprocessing.queues.SimpleQueue for
    isinstance (not a Queue, as in the stdlib)."""
    def __init__(self, *, ctx: Any = ...) -> None: ...
    def put(self, obj: _T) -> None: ...  # type: ignore[override]
    def get(self) -> _T: ...  # type: ignore[override]
    def empty(self) -> bool: ...
    def close(self) -> None: ...
    # beyond the stdlib
    def put_many(self, items: Iterable[_T], block: bool = ..., timeout: Optional[float] = ...
                 ) -> None: ...
    def get_many(self, max_items: Optional[int] = ..., block: bool = ...,
                 timeout: Optional[float] = ...) -> List[_T]: ...
    def __class_getitem__(cls, item: Any) -> types.GenericAlias: ...
