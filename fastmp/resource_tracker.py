"""The stdlib's multiprocessing.resource_tracker, re-exported (no C part planned)."""
import multiprocessing.resource_tracker as _std
from multiprocessing.resource_tracker import *  # noqa: F401,F403
from multiprocessing.resource_tracker import ResourceTracker, getfd  # noqa: F401

from ._stdlib import forward as _forward

__all__ = list(_std.__all__)
__getattr__, __dir__ = _forward(globals(), _std)
