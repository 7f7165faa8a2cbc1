"""multiprocessing.connection, with ``Pipe()`` over shared memory.

``Pipe(duplex=True)`` returns two :class:`Connection` objects joined by a buffer in shared memory
(csrc/connection.c): a message is copied in and out, with no system call while the other side
is awake.  The ends are the stdlib's in every way code can see: ``isinstance(conn,
multiprocessing.connection.Connection)`` holds; ``send``/``recv``/``send_bytes``/
``recv_bytes``/``recv_bytes_into``/``poll``/``close``/``fileno`` keep its semantics and errors;
EOFError once every copy of the other end is closed, collected or killed (after the messages
already sent are read); BrokenPipeError on sending to a closed end; ``fileno()`` reads ready
when ``recv()`` would not block, so ``wait()`` takes them mixed with sockets, stdlib
connections and process sentinels; they pickle to children of every start method and through
another connection or a queue (the stdlib's ``reduction`` rules for descriptors).

``fileno()`` is a socket connected to the other end's, as the stdlib's duplex Pipe gives
(``reduction.send_handle``/``recv_handle`` work on it; docs/pipe.md).  ``Listener``,
``Client``, ``wait``, ``answer_challenge`` and ``deliver_challenge`` are the stdlib's.  ``wait()`` also takes the ``_reader`` of fastmp's queues (fastmp.queues).
"""
import io
import multiprocessing.connection as _std
import pickle
from multiprocessing import reduction as _reduction
from multiprocessing.connection import *  # noqa: F401,F403
from multiprocessing.connection import (  # noqa: F401
    AuthenticationError, BufferTooShort, answer_challenge, deliver_challenge,
    families,
)

from . import _core
from . import _lifecycle  # noqa: F401  (fork and exit hooks)
from ._stdlib import forward as _forward

__all__ = list(_std.__all__)


class Connection(_core.Connection, _std.Connection):
    """One end of a fastmp Pipe (see the module's docstring).  Made by :func:`Pipe` only."""

    _fm_dumps = staticmethod(_reduction.ForkingPickler.dumps)
    _fm_plain_dumps = staticmethod(pickle.dumps)
    _fm_loads = staticmethod(pickle.loads)
    _fm_too_short = BufferTooShort

    def __new__(cls, handle, readable=True, writable=True):
        # Connection(fd) wraps a descriptor (a socket, an OS pipe) as the stdlib does: that is
        # the stdlib's class; the shared-memory ends come from Pipe() only.
        return _std.Connection(handle, readable, writable)

    def __del__(self):
        pass        # the C type closes it when it goes

    def _close(self):
        self.close()

    # The stdlib's private I/O layer, for code that calls it directly.
    def _send_bytes(self, buf):
        self.send_bytes(buf)

    def _recv_bytes(self, maxsize=None):
        return io.BytesIO(self.recv_bytes(maxsize))

    def _poll(self, timeout):
        return self.poll(timeout)

    def __repr__(self):
        state = "closed" if self.closed else (
            "duplex" if self.readable and self.writable else
            "read-only" if self.readable else "write-only")
        return "<fastmp.connection.Connection %s at %#x>" % (state, id(self))

    def __reduce__(self):
        memfd, livefd, end = self._fm_fds()
        return _rebuild_connection, (_reduction.DupFd(memfd), _reduction.DupFd(livefd), end,
                                     self.readable, self.writable)


def _rebuild_connection(dmem, dlive, end, readable, writable):
    return Connection._fm_attach(dmem.detach(), dlive.detach(), end, readable, writable)


_reduction.register(Connection, Connection.__reduce__)


def Pipe(duplex=True):
    """Returns a pair of connection objects at either end of a pipe (in shared memory)."""
    return Connection._fm_pair(bool(duplex))


__getattr__, __dir__ = _forward(globals(), _std)
