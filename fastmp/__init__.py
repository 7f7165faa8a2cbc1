"""fastmp: Python's multiprocessing with its hot paths in C.  The same API:
``import fastmp as multiprocessing`` changes nothing in a program but how fast it runs.

The top-level names are the public methods and attributes of fastmp's default context, bound
here the way the stdlib binds its own (see fastmp.context).
"""
from . import context

__version__ = "0.1.0"

__all__ = [x for x in dir(context._default_context) if not x.startswith("_")]
globals().update((name, getattr(context._default_context, name)) for name in __all__)

# The stdlib's logging levels of the same names (multiprocessing.util.SUBDEBUG, SUBWARNING).
SUBDEBUG = 5
SUBWARNING = 25
