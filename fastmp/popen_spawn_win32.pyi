# The stdlib's multiprocessing.popen_spawn_win32, re-exported (see popen_spawn_win32.py).
from multiprocessing.popen_spawn_win32 import *

__all__ = [
    "Popen",
]
