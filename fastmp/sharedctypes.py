"""The stdlib's multiprocessing.sharedctypes until its C part lands (issue kind: "Value/Array").

Value, Array and synchronized are the stdlib's, except for the context they fall back on when
given none: fastmp's default context (its start method), as ``fastmp.Value`` has it, not the
stdlib's.  Otherwise ``fastmp.set_start_method("spawn")`` followed by
``fastmp.sharedctypes.Value("i")`` would build the lock in the stdlib's default (fork)
context, which a spawned child refuses ("A SemLock created in a fork context is being shared
with a process in a spawn context").
"""
import multiprocessing.sharedctypes as _std
from multiprocessing.sharedctypes import *  # noqa: F401,F403
from multiprocessing.sharedctypes import (  # noqa: F401
    Synchronized, SynchronizedArray, SynchronizedBase, SynchronizedString,
)

from ._stdlib import forward as _forward

__all__ = list(_std.__all__)
__getattr__, __dir__ = _forward(globals(), _std)


def _default_ctx():
    """The stdlib context with fastmp's default start method (as FastContext.Value uses)."""
    from .context import _default_context
    return _default_context._stdlib_context()


def Value(typecode_or_type, *args, lock=True, ctx=None):
    """The stdlib's Value, with fastmp's default start method when ctx is None."""
    if ctx is None and lock in (True, None):
        ctx = _default_ctx()
    return _std.Value(typecode_or_type, *args, lock=lock, ctx=ctx)


def Array(typecode_or_type, size_or_initializer, *, lock=True, ctx=None):
    """The stdlib's Array, with fastmp's default start method when ctx is None."""
    if ctx is None and lock in (True, None):
        ctx = _default_ctx()
    return _std.Array(typecode_or_type, size_or_initializer, lock=lock, ctx=ctx)


def synchronized(obj, lock=None, ctx=None):
    """The stdlib's synchronized, with fastmp's default start method when ctx is None."""
    if ctx is None and not lock:
        ctx = _default_ctx()
    return _std.synchronized(obj, lock, ctx)
