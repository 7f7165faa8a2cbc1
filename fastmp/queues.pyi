# The stdlib's multiprocessing.queues, re-exported (see queues.py).
from multiprocessing.queues import *
from queue import Empty as Empty, Full as Full

__all__ = [
    "Queue", "SimpleQueue", "JoinableQueue",
]
