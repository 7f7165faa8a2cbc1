# The stdlib's multiprocessing.heap, re-exported (see heap.py).
from multiprocessing.heap import *
from multiprocessing.heap import (
    Arena as Arena,
    Heap as Heap,
)

__all__ = [
    "BufferWrapper",
]
