# The stdlib's multiprocessing.process, re-exported (see process.py).
from multiprocessing.process import *

__all__ = [
    "BaseProcess", "current_process", "active_children", "parent_process",
]
