"""The stdlib's multiprocessing.shared_memory, re-exported (no C part planned).

``fastmp.shared_memory`` *is* the stdlib's module object (this module replaces itself in
``sys.modules`` with it), not a forwarding copy: SharedMemory reads module globals at call
time (``_make_filename``, ``_USE_POSIX``, ...), so patching one of them on
``fastmp.shared_memory`` (``unittest.mock.patch("fastmp.shared_memory._make_filename")``, as
CPython's own suite does) must reach the code that reads it.
"""
import sys

import multiprocessing.shared_memory as _std

sys.modules[__name__] = _std
