"""The stdlib's multiprocessing.popen_fork, re-exported (no C part planned)."""
import multiprocessing.popen_fork as _std
from multiprocessing.popen_fork import *  # noqa: F401,F403

from ._stdlib import forward as _forward

__all__ = list(_std.__all__)
__getattr__, __dir__ = _forward(globals(), _std)
