# The stdlib's multiprocessing.connection, re-exported (see connection.py).
from multiprocessing.connection import *
from multiprocessing.connection import (
    Connection as Connection,
    answer_challenge as answer_challenge,
    deliver_challenge as deliver_challenge,
)
from multiprocessing.context import (
    AuthenticationError as AuthenticationError,
    BufferTooShort as BufferTooShort,
)

__all__ = [
    "Client", "Listener", "Pipe", "wait",
]
