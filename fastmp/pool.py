"""The stdlib's multiprocessing.pool until its C part lands (issue kind: "Pool")."""
import multiprocessing.pool as _std
from multiprocessing.pool import *  # noqa: F401,F403
from multiprocessing.pool import (  # noqa: F401
    ApplyResult, AsyncResult, IMapIterator, IMapUnorderedIterator, MapResult,
    MaybeEncodingError, RemoteTraceback, TimeoutError,
)

from ._stdlib import forward as _forward

__all__ = list(_std.__all__)
__getattr__, __dir__ = _forward(globals(), _std)
