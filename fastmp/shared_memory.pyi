# The stdlib's multiprocessing.shared_memory, re-exported (see shared_memory.py).
from multiprocessing.shared_memory import *

__all__ = [
    "SharedMemory", "ShareableList",
]
