# fastmp.reusable: get_reusable_executor (loky's API, on fastmp's executor); also exported
# from fastmp.futures.
from concurrent.futures import Executor, Future
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Tuple, TypeVar, Union

__all__ = ["get_reusable_executor"]

_T = TypeVar("_T")

class _ReusableExecutor(Executor):
    _max_workers: int
    @property
    def _processes(self) -> Dict[int, Any]: ...
    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]: ...
    def map(self, fn: Callable[..., _T], *iterables: Iterable[Any],
            timeout: Optional[float] = ..., chunksize: int = ...,
            buffersize: Optional[int] = ...) -> Iterator[_T]: ...
    def shutdown(self, wait: bool = ..., *, cancel_futures: bool = ...) -> None: ...

def get_reusable_executor(max_workers: Optional[int] = ..., context: Optional[Any] = ...,
                          timeout: Optional[float] = ..., kill_workers: bool = ...,
                          reuse: Union[bool, str] = ..., *,
                          initializer: Optional[Callable[..., object]] = ...,
                          initargs: Tuple[Any, ...] = ...,
                          max_tasks_per_child: Optional[int] = ...,
                          max_memory_per_child: Optional[int] = ...) -> _ReusableExecutor: ...
