"""The stdlib's multiprocessing.forkserver, re-exported (no C part planned)."""
import multiprocessing.forkserver as _std
from multiprocessing.forkserver import *  # noqa: F401,F403
from multiprocessing.forkserver import MAXFDS_TO_SEND, ForkServer  # noqa: F401

from ._stdlib import forward as _forward

__all__ = list(_std.__all__)
__getattr__, __dir__ = _forward(globals(), _std)
