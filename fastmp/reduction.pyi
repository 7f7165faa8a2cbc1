# The stdlib's multiprocessing.reduction, re-exported (see reduction.py).
from multiprocessing.reduction import *
from multiprocessing.reduction import (
    ACKNOWLEDGE as ACKNOWLEDGE,
    HAVE_SEND_HANDLE as HAVE_SEND_HANDLE,
    AbstractReducer as AbstractReducer,
)

__all__ = [
    "send_handle", "recv_handle", "ForkingPickler", "register", "dump", "DupFd",
    "sendfds", "recvfds",
]
