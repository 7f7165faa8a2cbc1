# The stdlib's multiprocessing.resource_tracker, re-exported (see resource_tracker.py).
from multiprocessing.resource_tracker import *
from multiprocessing.resource_tracker import (
    ResourceTracker as ResourceTracker,
    getfd as getfd,
)

__all__ = [
    "ensure_running", "register", "unregister",
]
