# The stdlib's multiprocessing.popen_fork, re-exported (see popen_fork.py).
from multiprocessing.popen_fork import *

__all__ = [
    "Popen",
]
