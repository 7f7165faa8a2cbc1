"""The stdlib's multiprocessing.process, re-exported (no C part planned)."""
import multiprocessing.process as _std
from multiprocessing.process import *  # noqa: F401,F403
from multiprocessing.process import AuthenticationString  # noqa: F401

from ._stdlib import forward as _forward

__all__ = list(_std.__all__)
__getattr__, __dir__ = _forward(globals(), _std)
