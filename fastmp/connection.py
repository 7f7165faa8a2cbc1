"""The stdlib's multiprocessing.connection, re-exported.

``wait()`` also takes the ``_reader`` of fastmp's queues: its ``fileno()`` is a descriptor
that reads ready while the queue holds an item (fastmp.queues, csrc/core/doorbell.h)."""
import multiprocessing.connection as _std
from multiprocessing.connection import *  # noqa: F401,F403
from multiprocessing.connection import (  # noqa: F401
    AuthenticationError, BufferTooShort, Connection, answer_challenge, deliver_challenge,
    families,
)

from ._stdlib import forward as _forward

__all__ = list(_std.__all__)
__getattr__, __dir__ = _forward(globals(), _std)
