"""The stdlib's multiprocessing.heap until its C part lands (issue kind: "Value/Array")."""
import multiprocessing.heap as _std
from multiprocessing.heap import *  # noqa: F401,F403
from multiprocessing.heap import Arena, Heap  # noqa: F401

from ._stdlib import forward as _forward

__all__ = list(_std.__all__)
__getattr__, __dir__ = _forward(globals(), _std)
