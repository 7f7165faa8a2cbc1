# fastmp.futures: ProcessPoolExecutor on fastmp's C dispatcher.
from concurrent.futures import (
    ALL_COMPLETED as ALL_COMPLETED, FIRST_COMPLETED as FIRST_COMPLETED,
    FIRST_EXCEPTION as FIRST_EXCEPTION, CancelledError as CancelledError,
    Executor, Future as Future, InvalidStateError as InvalidStateError,
    TimeoutError as TimeoutError, as_completed as as_completed, wait as wait,
)
from concurrent.futures.process import BrokenProcessPool as BrokenProcessPool
from .pool import TaskTimeoutError as TaskTimeoutError
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Tuple, TypeVar, Union

__all__ = ["ProcessPoolExecutor", "BrokenProcessPool", "get_reusable_executor"]

_T = TypeVar("_T")

class ProcessPoolExecutor(Executor):
    # the stdlib's private attributes that tests and tools read, with the same meaning
    _max_workers: int
    _mp_context: Any
    _shutdown_thread: bool
    @property
    def _processes(self) -> Dict[int, Any]: ...
    @property
    def _broken(self) -> Union[str, bool]: ...
    @property
    def _executor_manager_thread(self) -> Optional[Any]: ...
    @property
    def _call_queue(self) -> Optional[Any]: ...
    @property
    def _pending_work_items(self) -> Dict[int, Any]: ...
    def __init__(self, max_workers: Optional[int] = ..., mp_context: Optional[Any] = ...,
                 initializer: Optional[Callable[..., object]] = ...,
                 initargs: Tuple[Any, ...] = ..., *,
                 max_tasks_per_child: Optional[int] = ...,
                 # beyond the stdlib: a worker whose resident memory is above this many
                 # bytes after a task leaves and is replaced; as max_tasks_per_child, the
                 # default context is then spawn, and fork is refused (ValueError)
                 max_memory_per_child: Optional[int] = ...,
                 task_timeout: Optional[float] = ...) -> None: ...
    # task_timeout (beyond the stdlib): seconds a call may run once a worker starts it, else
    # its future fails with TaskTimeoutError (a concurrent.futures.TimeoutError), its worker
    # is replaced and the executor carries on; map() applies it per item (per chunk with
    # buffersize, or when submit is overridden).
    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]: ...
    # buffersize: Python 3.14's, on every version: None reads the input at once; an int n >= 1
    # reads it lazily, at most n chunks handed to the workers ahead of the consumer
    # (TypeError for a non-int, ValueError below 1).
    def map(self, fn: Callable[..., _T], *iterables: Iterable[Any],
            timeout: Optional[float] = ..., chunksize: int = ...,
            buffersize: Optional[int] = ...) -> Iterator[_T]: ...
    def shutdown(self, wait: bool = ..., *, cancel_futures: bool = ...) -> None: ...
    def terminate_workers(self) -> None: ...
    def kill_workers(self) -> None: ...

# beyond the stdlib: loky's reusable executor (fastmp/reusable.py)
from fastmp.reusable import _ReusableExecutor
def get_reusable_executor(max_workers: Optional[int] = ..., context: Optional[Any] = ...,
                          timeout: Optional[float] = ..., kill_workers: bool = ...,
                          reuse: Union[bool, str] = ..., *,
                          initializer: Optional[Callable[..., object]] = ...,
                          initargs: Tuple[Any, ...] = ...,
                          max_tasks_per_child: Optional[int] = ...,
                          max_memory_per_child: Optional[int] = ...) -> _ReusableExecutor: ...
