"""The stdlib's multiprocessing.popen_spawn_posix, re-exported (no C part planned)."""
import multiprocessing.popen_spawn_posix as _std
from multiprocessing.popen_spawn_posix import *  # noqa: F401,F403

from ._stdlib import forward as _forward

__all__ = list(_std.__all__)
__getattr__, __dir__ = _forward(globals(), _std)
