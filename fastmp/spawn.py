"""The stdlib's multiprocessing.spawn, re-exported (no C part planned)."""
import multiprocessing.spawn as _std
from multiprocessing.spawn import *  # noqa: F401,F403
from multiprocessing.spawn import WINEXE, WINSERVICE, is_forking, prepare, spawn_main  # noqa: F401

from ._stdlib import forward as _forward

__all__ = list(_std.__all__)
__getattr__, __dir__ = _forward(globals(), _std)
