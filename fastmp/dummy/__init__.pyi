# The stdlib's multiprocessing.dummy, re-exported (see dummy/__init__.py).
from multiprocessing.dummy import *
from multiprocessing.dummy import (
    Array as Array,
    DummyProcess as DummyProcess,
    Namespace as Namespace,
    Value as Value,
)

__all__ = [
    "Process", "current_process", "active_children", "freeze_support", "Lock", "RLock",
    "Semaphore", "BoundedSemaphore", "Condition", "Event", "Barrier", "Queue",
    "Manager", "Pipe", "Pool", "JoinableQueue",
]
