"""The stdlib's multiprocessing.dummy (threads behind the multiprocessing API), re-exported."""
import multiprocessing.dummy as _std
from multiprocessing.dummy import *  # noqa: F401,F403
from multiprocessing.dummy import Array, DummyProcess, Namespace, Value  # noqa: F401

from .._stdlib import forward as _forward

__all__ = list(_std.__all__)
__getattr__, __dir__ = _forward(globals(), _std)
