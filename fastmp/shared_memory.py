"""The stdlib's multiprocessing.shared_memory, re-exported (no C part planned)."""
import multiprocessing.shared_memory as _std
from multiprocessing.shared_memory import *  # noqa: F401,F403

from ._stdlib import forward as _forward

__all__ = list(_std.__all__)
__getattr__, __dir__ = _forward(globals(), _std)
