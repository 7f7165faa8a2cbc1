"""The stdlib's multiprocessing.queues until its C part lands (issue kind: "Queue")."""
import multiprocessing.queues as _std
from multiprocessing.queues import *  # noqa: F401,F403
from multiprocessing.queues import Empty, Full  # noqa: F401

from ._stdlib import forward as _forward

__all__ = list(_std.__all__)
__getattr__, __dir__ = _forward(globals(), _std)
