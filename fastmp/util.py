"""The stdlib's multiprocessing.util, re-exported (no C part planned)."""
import multiprocessing.util as _std
from multiprocessing.util import *  # noqa: F401,F403
from multiprocessing.util import DEFAULT_LOGGING_FORMAT, LOGGER_NAME, spawnv_passfds  # noqa: F401

from ._stdlib import forward as _forward

__all__ = list(_std.__all__)
__getattr__, __dir__ = _forward(globals(), _std)
