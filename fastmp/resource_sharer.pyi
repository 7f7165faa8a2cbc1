# The stdlib's multiprocessing.resource_sharer, re-exported (see resource_sharer.py).
from multiprocessing.resource_sharer import *

__all__ = [
    "stop", "DupFd",
]
