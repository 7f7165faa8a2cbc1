# The stdlib's multiprocessing.popen_forkserver, re-exported (see popen_forkserver.py).
from multiprocessing.popen_forkserver import *

__all__ = [
    "Popen",
]
