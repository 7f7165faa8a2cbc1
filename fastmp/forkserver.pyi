# The stdlib's multiprocessing.forkserver, re-exported (see forkserver.py).
from multiprocessing.forkserver import *
from multiprocessing.forkserver import (
    MAXFDS_TO_SEND as MAXFDS_TO_SEND,
    ForkServer as ForkServer,
)

__all__ = [
    "ensure_running", "get_inherited_fds", "connect_to_new_process",
    "set_forkserver_preload",
]
