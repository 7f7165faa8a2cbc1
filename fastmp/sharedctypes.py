"""The stdlib's multiprocessing.sharedctypes until its C part lands (issue kind: "Value/Array")."""
import multiprocessing.sharedctypes as _std
from multiprocessing.sharedctypes import *  # noqa: F401,F403
from multiprocessing.sharedctypes import (  # noqa: F401
    Synchronized, SynchronizedArray, SynchronizedBase, SynchronizedString,
)

from ._stdlib import forward as _forward

__all__ = list(_std.__all__)
__getattr__, __dir__ = _forward(globals(), _std)
