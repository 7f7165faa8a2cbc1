# fastmp's contexts (see context.py).  What is not declared here is the stdlib's BaseContext.
from multiprocessing import context as _mpcontext
from multiprocessing.context import (
    AuthenticationError as AuthenticationError,
    BaseContext as BaseContext,
    BufferTooShort as BufferTooShort,
    ProcessError as ProcessError,
    TimeoutError as TimeoutError,
    assert_spawning as assert_spawning,
    get_spawning_popen as get_spawning_popen,
    set_spawning_popen as set_spawning_popen,
)
from multiprocessing.process import BaseProcess
from typing import Any, Callable, ClassVar, Iterable, Literal, overload

from fastmp import pool, synchronize

__all__ = ()

class Process(BaseProcess): ...
class ForkProcess(_mpcontext.ForkProcess): ...
class SpawnProcess(_mpcontext.SpawnProcess): ...
class ForkServerProcess(_mpcontext.ForkServerProcess): ...

class FastContext(BaseContext):
    Process: ClassVar[type[BaseProcess]]
    def Lock(self) -> synchronize.Lock: ...  # type: ignore[override]
    def RLock(self) -> synchronize.RLock: ...  # type: ignore[override]
    def Condition(  # type: ignore[override]
        self, lock: synchronize.Lock | synchronize.RLock | None = None
    ) -> synchronize.Condition: ...
    def Semaphore(self, value: int = 1) -> synchronize.Semaphore: ...  # type: ignore[override]
    def BoundedSemaphore(  # type: ignore[override]
        self, value: int = 1
    ) -> synchronize.BoundedSemaphore: ...
    def Event(self) -> synchronize.Event: ...  # type: ignore[override]
    def Barrier(  # type: ignore[override]
        self, parties: int, action: Callable[[], object] | None = None,
        timeout: float | None = None,
    ) -> synchronize.Barrier: ...
    # task_timeout: beyond the stdlib (fastmp.pool.Pool's)
    def Pool(  # type: ignore[override]
        self, processes: int | None = None,
        initializer: Callable[..., object] | None = None, initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None, *, task_timeout: float | None = None,
        max_memory_per_child: int | None = None,
    ) -> pool.Pool: ...
    @overload  # type: ignore[override]
    def get_context(self, method: None = None) -> FastContext: ...
    @overload
    def get_context(self, method: Literal["fork"]) -> ForkContext: ...
    @overload
    def get_context(self, method: Literal["spawn"]) -> SpawnContext: ...
    @overload
    def get_context(self, method: Literal["forkserver"]) -> ForkServerContext: ...
    @overload
    def get_context(self, method: str) -> FastContext: ...

class DefaultContext(FastContext):
    Process: ClassVar[type[Process]]
    def __init__(self, context: FastContext) -> None: ...
    def get_all_start_methods(self) -> list[str]: ...

class ForkContext(FastContext):
    Process: ClassVar[type[ForkProcess]]

class SpawnContext(FastContext):
    Process: ClassVar[type[SpawnProcess]]

class ForkServerContext(FastContext):
    Process: ClassVar[type[ForkServerProcess]]

_concrete_contexts: dict[str, FastContext]
_default_context: DefaultContext

def _force_start_method(method: str) -> None: ...
