"""The stdlib's multiprocessing.popen_forkserver, re-exported (no C part planned)."""
import multiprocessing.popen_forkserver as _std
from multiprocessing.popen_forkserver import *  # noqa: F401,F403

from ._stdlib import forward as _forward

__all__ = list(_std.__all__)
__getattr__, __dir__ = _forward(globals(), _std)
