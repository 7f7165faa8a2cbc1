"""The stdlib's multiprocessing.popen_spawn_win32, re-exported (Windows only: like the stdlib's,
importing it elsewhere raises ImportError)."""
import multiprocessing.popen_spawn_win32 as _std
from multiprocessing.popen_spawn_win32 import *  # noqa: F401,F403

from ._stdlib import forward as _forward

__all__ = list(_std.__all__)
__getattr__, __dir__ = _forward(globals(), _std)
