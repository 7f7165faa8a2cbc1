"""fastmp: Python's multiprocessing with its hot paths in C.  The same API:
``import fastmp as multiprocessing`` changes nothing in a program but how fast it runs.

The top-level names are the public methods and attributes of fastmp's default context, bound
here the way the stdlib binds its own (see fastmp.context).
"""
import importlib as _importlib

from . import context

__version__ = "0.1.0"

__all__ = [x for x in dir(context._default_context) if not x.startswith("_")]
globals().update((name, getattr(context._default_context, name)) for name in __all__)

# The stdlib's logging levels of the same names (multiprocessing.util.SUBDEBUG, SUBWARNING).
SUBDEBUG = 5
SUBWARNING = 25

# The submodules, reachable as attributes of the package.  The stdlib binds each of its own
# (multiprocessing.util, .connection, .queues, ...) once something imported it, which its
# objects do on first use, so programs read ``multiprocessing.util.Finalize`` without importing
# it themselves.  fastmp's objects import less, so a submodule is imported on first access.
_SUBMODULES = frozenset((
    "connection", "context", "dummy", "forkserver", "futures", "heap", "managers", "pool",
    "popen_fork", "popen_forkserver", "popen_spawn_posix", "process",
    "queues", "reduction", "resource_sharer", "resource_tracker", "shared_memory",
    "sharedctypes", "spawn", "synchronize", "util"))


def __getattr__(name):
    if name in _SUBMODULES:
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
