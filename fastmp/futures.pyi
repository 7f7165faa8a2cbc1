# fastmp.futures: ProcessPoolExecutor on fastmp's C dispatcher.
from concurrent.futures import (
    ALL_COMPLETED as ALL_COMPLETED, FIRST_COMPLETED as FIRST_COMPLETED,
    FIRST_EXCEPTION as FIRST_EXCEPTION, CancelledError as CancelledError,
    Executor, Future as Future, InvalidStateError as InvalidStateError,
    TimeoutError as TimeoutError, as_completed as as_completed, wait as wait,
)
from concurrent.futures.process import BrokenProcessPool as BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator, Optional, Tuple, TypeVar

__all__ = ["ProcessPoolExecutor", "BrokenProcessPool"]

_T = TypeVar("_T")

class ProcessPoolExecutor(Executor):
    _max_workers: int
    def __init__(self, max_workers: Optional[int] = ..., mp_context: Optional[Any] = ...,
                 initializer: Optional[Callable[..., object]] = ...,
                 initargs: Tuple[Any, ...] = ..., *,
                 max_tasks_per_child: Optional[int] = ...) -> None: ...
    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]: ...
    def map(self, fn: Callable[..., _T], *iterables: Iterable[Any],
            timeout: Optional[float] = ..., chunksize: int = ...) -> Iterator[_T]: ...
    def shutdown(self, wait: bool = ..., *, cancel_futures: bool = ...) -> None: ...
