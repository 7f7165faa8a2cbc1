# The stdlib's multiprocessing.sharedctypes, re-exported (see sharedctypes.py).
from multiprocessing.sharedctypes import *
from multiprocessing.sharedctypes import (
    Synchronized as Synchronized,
    SynchronizedArray as SynchronizedArray,
    SynchronizedBase as SynchronizedBase,
    SynchronizedString as SynchronizedString,
)

__all__ = [
    "RawValue", "RawArray", "Value", "Array", "copy", "synchronized",
]
