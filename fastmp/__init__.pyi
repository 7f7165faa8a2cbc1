# fastmp: multiprocessing.__all__, bound to fastmp's default context (see __init__.py).
from multiprocessing import reduction as reducer
from multiprocessing.process import (
    active_children as active_children,
    current_process as current_process,
    parent_process as parent_process,
)

from fastmp import context as context
from fastmp import process as process
from fastmp import reduction as reduction
from fastmp.context import (
    AuthenticationError as AuthenticationError,
    BufferTooShort as BufferTooShort,
    Process as Process,
    ProcessError as ProcessError,
    TimeoutError as TimeoutError,
)

__version__: str
SUBDEBUG: int
SUBWARNING: int

# Bound methods of context._default_context at runtime.
Array = context._default_context.Array
Barrier = context._default_context.Barrier
BoundedSemaphore = context._default_context.BoundedSemaphore
Condition = context._default_context.Condition
Event = context._default_context.Event
JoinableQueue = context._default_context.JoinableQueue
Lock = context._default_context.Lock
Manager = context._default_context.Manager
Pipe = context._default_context.Pipe
Pool = context._default_context.Pool
Queue = context._default_context.Queue
RLock = context._default_context.RLock
RawArray = context._default_context.RawArray
RawValue = context._default_context.RawValue
Semaphore = context._default_context.Semaphore
SimpleQueue = context._default_context.SimpleQueue
Value = context._default_context.Value
allow_connection_pickling = context._default_context.allow_connection_pickling
cpu_count = context._default_context.cpu_count
freeze_support = context._default_context.freeze_support
get_all_start_methods = context._default_context.get_all_start_methods
get_context = context._default_context.get_context
get_logger = context._default_context.get_logger
get_start_method = context._default_context.get_start_method
log_to_stderr = context._default_context.log_to_stderr
set_executable = context._default_context.set_executable
set_forkserver_preload = context._default_context.set_forkserver_preload
set_start_method = context._default_context.set_start_method

__all__ = [
    "Array", "AuthenticationError", "Barrier", "BoundedSemaphore", "BufferTooShort",
    "Condition", "Event", "JoinableQueue", "Lock", "Manager", "Pipe", "Pool", "Process",
    "ProcessError", "Queue", "RLock", "RawArray", "RawValue", "Semaphore", "SimpleQueue",
    "TimeoutError", "Value", "active_children", "allow_connection_pickling", "cpu_count",
    "current_process", "freeze_support", "get_all_start_methods", "get_context", "get_logger",
    "get_start_method", "log_to_stderr", "parent_process", "reducer", "set_executable",
    "set_forkserver_preload", "set_start_method",
]

# Every submodule is an attribute of the package (imported on first access, see __init__.py).
from fastmp import connection as connection
from fastmp import dummy as dummy
from fastmp import forkserver as forkserver
from fastmp import futures as futures
from fastmp import heap as heap
from fastmp import managers as managers
from fastmp import pool as pool
from fastmp import popen_fork as popen_fork
from fastmp import popen_forkserver as popen_forkserver
from fastmp import popen_spawn_posix as popen_spawn_posix
from fastmp import queues as queues
from fastmp import resource_sharer as resource_sharer
from fastmp import resource_tracker as resource_tracker
from fastmp import shared_memory as shared_memory
from fastmp import sharedctypes as sharedctypes
from fastmp import spawn as spawn
from fastmp import synchronize as synchronize
from fastmp import util as util
