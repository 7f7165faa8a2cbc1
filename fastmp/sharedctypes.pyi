# fastmp.sharedctypes: multiprocessing.sharedctypes on fastmp's C core (see sharedctypes.py).
#
# Beyond the stdlib (integer Values and Arrays only; arrays take the index first):
#   load() / store(x)                 one atomic read / write
#   exchange(x)                       store x, return the previous value
#   compare_exchange(expected, desired) -> (True, expected) if it stored, else (False, current)
#   fetch_add(delta=1) fetch_sub(delta=1) fetch_and(mask) fetch_or(mask) fetch_xor(mask)
#                                     atomically update, return the previous value
# Operands must fit the element type (OverflowError); results wrap around as in C.  None of
# them takes the lock.  Element reads and writes of primitive types take no lock either (one
# atomic access each); slices, Structures and other types do.
import ctypes
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Type, TypeVar, Union, overload

from ._core import BufferWrapper as BufferWrapper
from ._core import Synchronized as Synchronized
from ._core import SynchronizedArray as SynchronizedArray
from ._core import SynchronizedBase as SynchronizedBase
from ._core import SynchronizedString as SynchronizedString

__all__ = [
    "RawValue", "RawArray", "Value", "Array", "copy", "synchronized",
]

_CT = TypeVar("_CT", bound=ctypes._CData)

typecode_to_type: Dict[str, Type[ctypes._SimpleCData[Any]]]

@overload
def RawValue(typecode_or_type: Type[_CT], *args: Any) -> _CT: ...
@overload
def RawValue(typecode_or_type: str, *args: Any) -> Any: ...
@overload
def RawArray(typecode_or_type: Type[_CT], size_or_initializer: Union[int, Sequence[Any]]) -> ctypes.Array[_CT]: ...
@overload
def RawArray(typecode_or_type: str, size_or_initializer: Union[int, Sequence[Any]]) -> ctypes.Array[Any]: ...
def Value(typecode_or_type: Union[str, Type[ctypes._CData]], *args: Any,
          lock: Any = ..., ctx: Any = ...) -> Any: ...
def Array(typecode_or_type: Union[str, Type[ctypes._CData]],
          size_or_initializer: Union[int, Sequence[Any]], *,
          lock: Any = ..., ctx: Any = ...) -> Any: ...
def copy(obj: _CT) -> _CT: ...
def synchronized(obj: Any, lock: Any = ..., ctx: Any = ...) -> SynchronizedBase: ...
