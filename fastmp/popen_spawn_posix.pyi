# The stdlib's multiprocessing.popen_spawn_posix, re-exported (see popen_spawn_posix.py).
from multiprocessing.popen_spawn_posix import *

__all__ = [
    "Popen",
]
