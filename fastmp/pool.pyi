# fastmp.pool: Pool on fastmp's C dispatcher; ThreadPool is the stdlib's (a subclass of Pool).
# Pool, ApplyResult, MapResult and the imap iterators subclass multiprocessing.pool's classes.
import multiprocessing.pool as _std
import threading
from multiprocessing.context import ProcessError
from multiprocessing.context import TimeoutError as TimeoutError
from multiprocessing.pool import MaybeEncodingError as MaybeEncodingError
from multiprocessing.pool import RemoteTraceback as RemoteTraceback
from concurrent.futures import TimeoutError as _FuturesTimeoutError
from types import TracebackType
from typing import (
    Any, Callable, Dict, Generic, Iterable, Iterator, List, Mapping, Optional, Type, TypeVar,
    Union,
)

__all__ = ["Pool", "ThreadPool"]

_S = TypeVar("_S")
_T = TypeVar("_T")
_Progress = Union[bool, Dict[str, Any]]

INIT: str
RUN: str
CLOSE: str
TERMINATE: str

class WorkerLostError(ProcessError):
    """A worker process died while it held the task (beyond the stdlib, which hangs)."""

class InitializerError(ProcessError):
    """The pool's initializer raised in a worker; __cause__ is its exception."""

class TaskTimeoutError(TimeoutError, _FuturesTimeoutError):
    """A task ran past its task_timeout (beyond the stdlib): its worker was killed and
    replaced.  Also a concurrent.futures.TimeoutError (the executor's futures raise it)."""

class ApplyResult(_std.ApplyResult[_T], Generic[_T]):
    def __init__(self, pool: Pool, callback: Optional[Callable[[_T], object]],
                 error_callback: Optional[Callable[[BaseException], object]]) -> None: ...
    def get(self, timeout: Optional[float] = ...) -> _T: ...
    def wait(self, timeout: Optional[float] = ...) -> None: ...
    def ready(self) -> bool: ...
    def successful(self) -> bool: ...
    def __class_getitem__(cls, item: Any) -> Any: ...

AsyncResult = ApplyResult

class MapResult(ApplyResult[List[_T]], _std.MapResult[_T]):
    def __init__(self, pool: Pool, chunksize: int, length: int,
                 callback: Optional[Callable[[List[_T]], object]],
                 error_callback: Optional[Callable[[BaseException], object]]) -> None: ...

class IMapIterator(_std.IMapIterator[_T], Iterator[_T]):
    def __init__(self, pool: Pool, buffersize: Optional[int] = ...) -> None: ...
    def __iter__(self) -> "IMapIterator[_T]": ...
    def next(self, timeout: Optional[float] = ...) -> _T: ...
    def __next__(self) -> _T: ...

class IMapUnorderedIterator(IMapIterator[_T], _std.IMapUnorderedIterator[_T]): ...

class _TaskQueueView:
    def qsize(self) -> int: ...
    def empty(self) -> bool: ...

class Pool(_std.Pool):
    _pool: List[Any]
    _cache: Dict[int, Any]
    _state: str
    _processes: int
    _taskqueue: Any         # Pool: a _TaskQueueView; ThreadPool: the stdlib's queue
    @staticmethod
    def Process(ctx: Any, *args: Any, **kwds: Any) -> Any: ...
    def __init__(self, processes: Optional[int] = ...,
                 initializer: Optional[Callable[..., object]] = ...,
                 initargs: Iterable[Any] = ..., maxtasksperchild: Optional[int] = ...,
                 context: Optional[Any] = ..., *,
                 # beyond the stdlib: a worker whose resident memory is above this many
                 # bytes after a task leaves and is replaced (TypeError for a non-int,
                 # ValueError below 1)
                 max_memory_per_child: Optional[int] = ...,
                 task_timeout: Optional[float] = ...) -> None: ...
    # task_timeout (beyond the stdlib): seconds a task may run once a worker starts it, else
    # it fails with TaskTimeoutError and its worker is replaced; per item for the map family.
    # On a call, None means the pool's (math.inf: no limit).  ValueError for a negative,
    # zero or NaN limit, TypeError for a non-number.
    def apply(self, func: Callable[..., _T], args: Iterable[Any] = ...,
              kwds: Mapping[str, Any] = ..., *, task_timeout: Optional[float] = ...) -> _T: ...
    def apply_async(self, func: Callable[..., _T], args: Iterable[Any] = ...,
                    kwds: Mapping[str, Any] = ...,
                    callback: Optional[Callable[[_T], object]] = ...,
                    error_callback: Optional[Callable[[BaseException], object]] = ...,
                    *, task_timeout: Optional[float] = ...) -> AsyncResult[_T]: ...
    def map(self, func: Callable[[_S], _T], iterable: Iterable[_S],
            chunksize: Optional[int] = ..., *, progress: _Progress = ...,
            task_timeout: Optional[float] = ...) -> List[_T]: ...
    def map_async(self, func: Callable[[_S], _T], iterable: Iterable[_S],
                  chunksize: Optional[int] = ...,
                  callback: Optional[Callable[[List[_T]], object]] = ...,
                  error_callback: Optional[Callable[[BaseException], object]] = ...,
                  *, progress: _Progress = ..., task_timeout: Optional[float] = ...) -> MapResult[_T]: ...
    # imap/imap_unordered read the input ahead of the consumer by at most buffersize tasks
    # (chunks of chunksize items) posted and not yet taken; default 128 per worker process.
    # buffersize: an int >= 1 (ValueError below, TypeError for a non-int), as Python 3.14's
    # Executor.map.  join() lifts the bound; a dropped iterator stops reading its input.
    def imap(self, func: Callable[[_S], _T], iterable: Iterable[_S], chunksize: int = ...,
             *, progress: _Progress = ..., buffersize: Optional[int] = ...,
             task_timeout: Optional[float] = ...) -> Iterator[_T]: ...
    def imap_unordered(self, func: Callable[[_S], _T], iterable: Iterable[_S],
                       chunksize: int = ..., *, progress: _Progress = ...,
                       buffersize: Optional[int] = ..., task_timeout: Optional[float] = ...) -> Iterator[_T]: ...
    def starmap(self, func: Callable[..., _T], iterable: Iterable[Iterable[Any]],
                chunksize: Optional[int] = ..., *, progress: _Progress = ...,
                task_timeout: Optional[float] = ...) -> List[_T]: ...
    def starmap_async(self, func: Callable[..., _T], iterable: Iterable[Iterable[Any]],
                      chunksize: Optional[int] = ...,
                      callback: Optional[Callable[[List[_T]], object]] = ...,
                      error_callback: Optional[Callable[[BaseException], object]] = ...,
                      *, progress: _Progress = ..., task_timeout: Optional[float] = ...) -> MapResult[_T]: ...
    def close(self) -> None: ...
    def terminate(self) -> None: ...
    def join(self) -> None: ...
    def __enter__(self) -> "Pool": ...
    def __exit__(self, exc_type: Optional[Type[BaseException]],
                 exc_val: Optional[BaseException], exc_tb: Optional[TracebackType]) -> None: ...

class ThreadPool(_std.ThreadPool, Pool):
    def __init__(self, processes: Optional[int] = ...,
                 initializer: Optional[Callable[..., object]] = ...,
                 initargs: Iterable[Any] = ...) -> None: ...

def __getattr__(name: str) -> Any: ...   # the stdlib module's other public names
