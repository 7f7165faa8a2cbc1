# multiprocessing.connection, with Pipe() over shared memory (see connection.py).
import multiprocessing.connection as _std
from multiprocessing.connection import *
from multiprocessing.connection import (
    answer_challenge as answer_challenge,
    deliver_challenge as deliver_challenge,
)
from multiprocessing.context import (
    AuthenticationError as AuthenticationError,
    BufferTooShort as BufferTooShort,
)
from typing import Any, Optional, Tuple

from . import _core

class Connection(_core.Connection, _std.Connection):
    """One end of a fastmp Pipe: a multiprocessing.connection.Connection over shared memory.
    Connection(fd, readable=True, writable=True) wraps a descriptor as the stdlib's does (and
    returns the stdlib's class)."""
    def __new__(cls, handle: int, readable: bool = ..., writable: bool = ...) -> Any: ...
    def send(self, obj: Any) -> None: ...
    def recv(self) -> Any: ...
    def poll(self, timeout: Optional[float] = ...) -> bool: ...

def Pipe(duplex: bool = ...) -> Tuple[Connection, Connection]: ...

__all__ = [
    "Client", "Listener", "Pipe", "wait",
]
