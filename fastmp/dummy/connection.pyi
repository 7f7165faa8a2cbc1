# The stdlib's multiprocessing.dummy.connection, re-exported (see dummy/connection.py).
from multiprocessing.dummy.connection import *
from multiprocessing.dummy.connection import (
    Connection as Connection,
    families as families,
)

__all__ = [
    "Client", "Listener", "Pipe",
]
