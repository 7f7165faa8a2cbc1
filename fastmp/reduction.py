"""The stdlib's multiprocessing.reduction, re-exported (no C part planned)."""
import multiprocessing.reduction as _std
from multiprocessing.reduction import *  # noqa: F401,F403
from multiprocessing.reduction import ACKNOWLEDGE, HAVE_SEND_HANDLE, AbstractReducer  # noqa: F401

from ._stdlib import forward as _forward

__all__ = list(_std.__all__)
__getattr__, __dir__ = _forward(globals(), _std)
