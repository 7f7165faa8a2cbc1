"""The stdlib's multiprocessing.heap, re-exported: ``fastmp.heap`` exists as the stdlib's does.

fastmp's own shared ctypes do not use it: their memory is a block of the C allocator of
fastmp._core (``fastmp.sharedctypes.BufferWrapper``; see docs/design.md, "Segments and cleanup").
"""
import multiprocessing.heap as _std
from multiprocessing.heap import *  # noqa: F401,F403
from multiprocessing.heap import Arena, Heap  # noqa: F401

from ._stdlib import forward as _forward

__all__ = list(_std.__all__)
__getattr__, __dir__ = _forward(globals(), _std)
