# fastmp.dask: the Pool and ProcessPoolExecutor APIs on a Dask distributed cluster.
# Needs the extra: pip install 'fastmp[dask]'.  The result classes subclass multiprocessing.pool's.
import concurrent.futures
import multiprocessing.pool as _std
from multiprocessing.context import TimeoutError as TimeoutError
from types import TracebackType
from typing import (
    Any, Callable, Dict, Generic, Iterable, Iterator, List, Mapping, Optional, Type, TypeVar,
    Union,
)

from distributed import Client

from .pool import InitializerError as InitializerError
from .pool import WorkerLostError as WorkerLostError

__all__ = ["Pool", "ProcessPoolExecutor", "ApplyResult", "AsyncResult", "MapResult",
           "IMapIterator", "IMapUnorderedIterator", "WorkerLostError", "InitializerError"]

_S = TypeVar("_S")
_T = TypeVar("_T")
_Progress = Union[bool, Dict[str, Any]]

RUN: str
CLOSE: str
TERMINATE: str

class ApplyResult(_std.ApplyResult[_T], Generic[_T]):
    def get(self, timeout: Optional[float] = ...) -> _T: ...
    def wait(self, timeout: Optional[float] = ...) -> None: ...
    def ready(self) -> bool: ...
    def successful(self) -> bool: ...

AsyncResult = ApplyResult

class MapResult(ApplyResult[List[_T]], _std.MapResult[_T]):
    def __init__(self, pool: Pool, chunksize: int, length: int,
                 callback: Optional[Callable[[List[_T]], object]],
                 error_callback: Optional[Callable[[BaseException], object]]) -> None: ...

class IMapIterator(_std.IMapIterator[_T], Iterator[_T]):
    def __iter__(self) -> "IMapIterator[_T]": ...
    def next(self, timeout: Optional[float] = ...) -> _T: ...
    def __next__(self) -> _T: ...

class IMapUnorderedIterator(IMapIterator[_T], _std.IMapUnorderedIterator[_T]): ...

class Pool(_std.Pool):
    _cache: Dict[int, Any]
    _state: Optional[str]
    _processes: int
    def __init__(self, processes: Optional[int] = ...,
                 initializer: Optional[Callable[..., object]] = ...,
                 initargs: Iterable[Any] = ..., maxtasksperchild: None = ..., *,
                 address: Optional[str] = ..., client: Optional[Client] = ...) -> None: ...
    @property
    def client(self) -> Optional[Client]: ...
    def apply(self, func: Callable[..., _T], args: Iterable[Any] = ...,
              kwds: Mapping[str, Any] = ...) -> _T: ...
    def apply_async(self, func: Callable[..., _T], args: Iterable[Any] = ...,
                    kwds: Mapping[str, Any] = ...,
                    callback: Optional[Callable[[_T], object]] = ...,
                    error_callback: Optional[Callable[[BaseException], object]] = ...
                    ) -> AsyncResult[_T]: ...
    # progress: True, or tqdm's arguments as a dict (a progress bar, as fastmp.Pool's)
    def map(self, func: Callable[[_S], _T], iterable: Iterable[_S],
            chunksize: Optional[int] = ..., *, progress: _Progress = ...) -> List[_T]: ...
    def starmap(self, func: Callable[..., _T], iterable: Iterable[Iterable[Any]],
                chunksize: Optional[int] = ..., *, progress: _Progress = ...) -> List[_T]: ...
    def map_async(self, func: Callable[[_S], _T], iterable: Iterable[_S],
                  chunksize: Optional[int] = ...,
                  callback: Optional[Callable[[List[_T]], object]] = ...,
                  error_callback: Optional[Callable[[BaseException], object]] = ...,
                  *, progress: _Progress = ...) -> MapResult[_T]: ...
    def starmap_async(self, func: Callable[..., _T], iterable: Iterable[Iterable[Any]],
                      chunksize: Optional[int] = ...,
                      callback: Optional[Callable[[List[_T]], object]] = ...,
                      error_callback: Optional[Callable[[BaseException], object]] = ...,
                      *, progress: _Progress = ...) -> MapResult[_T]: ...
    # chunksize=None (the default here): chunks grow to about 50 ms of work each
    def imap(self, func: Callable[[_S], _T], iterable: Iterable[_S],
             chunksize: Optional[int] = ..., *, buffersize: Optional[int] = ...,
             progress: _Progress = ...) -> Iterator[_T]: ...
    def imap_unordered(self, func: Callable[[_S], _T], iterable: Iterable[_S],
                       chunksize: Optional[int] = ..., *, buffersize: Optional[int] = ...,
                       progress: _Progress = ...) -> Iterator[_T]: ...
    def close(self) -> None: ...
    def terminate(self) -> None: ...
    def join(self) -> None: ...
    def __enter__(self) -> "Pool": ...
    def __exit__(self, exc_type: Optional[Type[BaseException]],
                 exc_val: Optional[BaseException],
                 exc_tb: Optional[TracebackType]) -> None: ...

class ProcessPoolExecutor(concurrent.futures.Executor):
    def __init__(self, max_workers: Optional[int] = ...,
                 initializer: Optional[Callable[..., object]] = ...,
                 initargs: Iterable[Any] = ..., *, address: Optional[str] = ...,
                 client: Optional[Client] = ...) -> None: ...
    @property
    def client(self) -> Optional[Client]: ...
    def submit(self, fn: Callable[..., _T], /, *args: Any,
               **kwargs: Any) -> concurrent.futures.Future[_T]: ...
    def map(self, fn: Callable[..., _T], *iterables: Iterable[Any],
            timeout: Optional[float] = ..., chunksize: int = ...) -> Iterator[_T]: ...
    def shutdown(self, wait: bool = ..., *, cancel_futures: bool = ...) -> None: ...
