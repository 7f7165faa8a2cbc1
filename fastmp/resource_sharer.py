"""The stdlib's multiprocessing.resource_sharer, re-exported (no C part planned)."""
import multiprocessing.resource_sharer as _std
from multiprocessing.resource_sharer import *  # noqa: F401,F403

from ._stdlib import forward as _forward

__all__ = list(_std.__all__)
__getattr__, __dir__ = _forward(globals(), _std)
