"""fastmp's contexts: one per start method, plus the default context behind the top-level names.

They are the stdlib's contexts with other factories.  The synchronization primitives (Lock,
RLock, Condition, Semaphore, BoundedSemaphore, Event, Barrier) are fastmp's own, from
fastmp.synchronize; so are the shared ctypes (RawValue, RawArray, Value, Array) from
fastmp.sharedctypes, the queues (Queue, JoinableQueue, SimpleQueue) from fastmp.queues, Pipe
from fastmp.connection and Pool from fastmp.pool (all C types of fastmp._core, or Python classes
on them).  Manager builds fastmp.managers.SyncManager (the stdlib's, with dict, list and
Namespace in shared memory) with the *stdlib's* context of the same start method, so that its
server keeps using the stdlib primitives it relies on.  The rest (cpu_count,
log_to_stderr, set_executable, reducer, ...) is inherited from the stdlib unchanged.

fastmp's default context is separate from the stdlib's: ``fastmp.set_start_method('spawn')``
changes fastmp.Process and fastmp's factories, not multiprocessing.Process.  Its initial start
method is the stdlib's platform default.

Processes are the stdlib's (same Popen classes, same spawning machinery).  The one addition: a
child fixes fastmp's start method the way the stdlib child fixes the stdlib's, so
``fastmp.get_start_method()`` inside a child reports the method it was started with.
"""
import multiprocessing
from multiprocessing import context as _mpcontext
from multiprocessing import process as _mpprocess

from . import process  # noqa: F401  (like the stdlib package: fastmp.process after import)
from . import reduction  # noqa: F401

__all__ = ()

# The stdlib's own exceptions and spawning helpers (identity matters: except clauses, and the
# stdlib Popen classes that start fastmp's processes mark "spawning" through these).
ProcessError = _mpcontext.ProcessError
BufferTooShort = _mpcontext.BufferTooShort
TimeoutError = _mpcontext.TimeoutError
AuthenticationError = _mpcontext.AuthenticationError
BaseContext = _mpcontext.BaseContext
get_spawning_popen = _mpcontext.get_spawning_popen
set_spawning_popen = _mpcontext.set_spawning_popen
assert_spawning = _mpcontext.assert_spawning


# ---------------------------------------------------------------- processes

class _FixesStartMethodInChild:
    """Mixin: in the child, set fastmp's start method before running, as BaseProcess._bootstrap
    does for the stdlib's.  The method is the class's own, or for fastmp.Process the parent's
    default, recorded by Process._Popen."""

    def _bootstrap(self, parent_sentinel=None):
        method = self._start_method or self.__dict__.get("_fastmp_start_method")
        if method is not None:
            _force_start_method(method)
        return super()._bootstrap(parent_sentinel)


class Process(_FixesStartMethodInChild, _mpprocess.BaseProcess):
    """A process started with fastmp's default start method (fastmp.set_start_method)."""
    _start_method = None

    @staticmethod
    def _Popen(process_obj):
        ctx = _default_context.get_context()
        process_obj._fastmp_start_method = ctx._name
        return ctx.Process._Popen(process_obj)

    if hasattr(_mpprocess.BaseProcess, "_after_fork"):  # Python 3.10+
        @staticmethod
        def _after_fork():
            return _default_context.get_context().Process._after_fork()


# ---------------------------------------------------------------- contexts

class FastContext(BaseContext):
    """The factories of every fastmp context.  Subclasses set _name and Process."""

    def get_context(self, method=None):
        if method is None:
            return self
        # The stdlib's lookup, for its errors (unknown method, forkserver unavailable).
        stdlib_ctx = multiprocessing.get_context(method)
        return _concrete_contexts[stdlib_ctx._name]

    def _stdlib_context(self):
        """The stdlib's context with this context's start method."""
        return multiprocessing.get_context(self.get_context()._name)

    # fastmp.synchronize -------------------------------------------------------

    def Lock(self):
        """A non-recursive lock shared between processes (fastmp.synchronize.Lock)."""
        from .synchronize import Lock
        return Lock(ctx=self.get_context())

    def RLock(self):
        """A recursive lock shared between processes (fastmp.synchronize.RLock)."""
        from .synchronize import RLock
        return RLock(ctx=self.get_context())

    def Condition(self, lock=None):
        """A condition variable, on `lock` or a new RLock (fastmp.synchronize.Condition)."""
        from .synchronize import Condition
        return Condition(lock, ctx=self.get_context())

    def Semaphore(self, value=1):
        """A counting semaphore (fastmp.synchronize.Semaphore)."""
        from .synchronize import Semaphore
        return Semaphore(value, ctx=self.get_context())

    def BoundedSemaphore(self, value=1):
        """A semaphore that may not be released above `value` (fastmp.synchronize)."""
        from .synchronize import BoundedSemaphore
        return BoundedSemaphore(value, ctx=self.get_context())

    def Event(self):
        """An event flag shared between processes (fastmp.synchronize.Event)."""
        from .synchronize import Event
        return Event(ctx=self.get_context())

    def Barrier(self, parties, action=None, timeout=None):
        """A barrier for `parties` processes (fastmp.synchronize.Barrier)."""
        from .synchronize import Barrier
        return Barrier(parties, action, timeout, ctx=self.get_context())

    # fastmp.sharedctypes -------------------------------------------------------

    def RawValue(self, typecode_or_type, *args):
        """A shared ctypes object, no lock (fastmp.sharedctypes.RawValue)."""
        from .sharedctypes import RawValue
        return RawValue(typecode_or_type, *args)

    def RawArray(self, typecode_or_type, size_or_initializer):
        """A shared ctypes array, no lock (fastmp.sharedctypes.RawArray)."""
        from .sharedctypes import RawArray
        return RawArray(typecode_or_type, size_or_initializer)

    def Value(self, typecode_or_type, *args, lock=True):
        """A shared ctypes object with a lock (fastmp.sharedctypes.Value)."""
        from .sharedctypes import Value
        return Value(typecode_or_type, *args, lock=lock, ctx=self.get_context())

    def Array(self, typecode_or_type, size_or_initializer, *, lock=True):
        """A shared ctypes array with a lock (fastmp.sharedctypes.Array)."""
        from .sharedctypes import Array
        return Array(typecode_or_type, size_or_initializer, lock=lock,
                     ctx=self.get_context())

    # fastmp.queues ----------------------------------------------------------------

    def Pipe(self, duplex=True):
        """Two connection objects joined by a pipe in shared memory (fastmp.connection.Pipe)."""
        from .connection import Pipe
        return Pipe(duplex)

    def Queue(self, maxsize=0):
        """A queue on fastmp's shared-memory ring (fastmp.queues.Queue)."""
        from .queues import Queue
        return Queue(maxsize, ctx=self.get_context())

    def JoinableQueue(self, maxsize=0):
        """A queue with task_done() and join() (fastmp.queues.JoinableQueue)."""
        from .queues import JoinableQueue
        return JoinableQueue(maxsize, ctx=self.get_context())

    def SimpleQueue(self):
        """A simplified queue (fastmp.queues.SimpleQueue)."""
        from .queues import SimpleQueue
        return SimpleQueue(ctx=self.get_context())

    # fastmp.pool; Manager: fastmp.managers', on the stdlib's context of the same method ---

    def Pool(self, processes=None, initializer=None, initargs=(),
             maxtasksperchild=None, *, task_timeout=None, max_memory_per_child=None):
        """A pool of worker processes on fastmp's C dispatcher (fastmp.pool.Pool).  Beyond
        the stdlib: task_timeout, the default limit per task in seconds; max_memory_per_child,
        the resident bytes above which a worker is replaced after a task."""
        from .pool import Pool
        return Pool(processes, initializer, initargs, maxtasksperchild,
                    context=self.get_context(), task_timeout=task_timeout,
                    max_memory_per_child=max_memory_per_child)

    def Manager(self):
        """A started fastmp.managers.SyncManager: the stdlib's, with dict(), list() and
        Namespace() in shared memory."""
        from .managers import SyncManager
        m = SyncManager(ctx=self._stdlib_context())
        m.start()
        return m


class DefaultContext(_mpcontext.DefaultContext, FastContext):
    """fastmp's default context: the stdlib's DefaultContext logic (set at most once unless
    forced) over fastmp's concrete contexts."""
    Process = Process


_concrete_contexts = {}

if hasattr(_mpcontext, "ForkContext"):  # POSIX
    class ForkProcess(_FixesStartMethodInChild, _mpcontext.ForkProcess):
        """The stdlib's ForkProcess; the child's fastmp start method is fork."""

    class SpawnProcess(_FixesStartMethodInChild, _mpcontext.SpawnProcess):
        """The stdlib's SpawnProcess; the child's fastmp start method is spawn."""

    class ForkServerProcess(_FixesStartMethodInChild, _mpcontext.ForkServerProcess):
        """The stdlib's ForkServerProcess; the child's fastmp start method is forkserver."""

    class ForkContext(FastContext, _mpcontext.ForkContext):
        Process = ForkProcess

    class SpawnContext(FastContext, _mpcontext.SpawnContext):
        Process = SpawnProcess

    class ForkServerContext(FastContext, _mpcontext.ForkServerContext):
        Process = ForkServerProcess

    _concrete_contexts.update(
        fork=ForkContext(), spawn=SpawnContext(), forkserver=ForkServerContext())
else:  # Windows: spawn only, like the stdlib
    class SpawnProcess(_FixesStartMethodInChild, _mpcontext.SpawnProcess):
        """The stdlib's SpawnProcess; the child's fastmp start method is spawn."""

    class SpawnContext(FastContext, _mpcontext.SpawnContext):
        Process = SpawnProcess

    _concrete_contexts.update(spawn=SpawnContext())

# The stdlib's platform default (fork on Linux before 3.14, spawn on macOS, ...).
_default_context = DefaultContext(
    _concrete_contexts[_mpcontext._default_context._default_context._name])


def _force_start_method(method):
    """Set fastmp's start method without the 'already set' check (used in children)."""
    _default_context._actual_context = _concrete_contexts[method]
