"""The stdlib's multiprocessing.dummy.connection (queues between threads), re-exported."""
import multiprocessing.dummy.connection as _std
from multiprocessing.dummy.connection import *  # noqa: F401,F403
from multiprocessing.dummy.connection import Connection, families  # noqa: F401

from .._stdlib import forward as _forward

__all__ = list(_std.__all__)
__getattr__, __dir__ = _forward(globals(), _std)
