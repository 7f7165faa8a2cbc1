# The stdlib's multiprocessing.pool, re-exported (see pool.py).
from multiprocessing.context import TimeoutError as TimeoutError
from multiprocessing.pool import *
from multiprocessing.pool import (
    ApplyResult as ApplyResult,
    AsyncResult as AsyncResult,
    IMapIterator as IMapIterator,
    IMapUnorderedIterator as IMapUnorderedIterator,
    MapResult as MapResult,
)

__all__ = [
    "Pool", "ThreadPool",
]
