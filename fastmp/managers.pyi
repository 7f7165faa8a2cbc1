# The stdlib's multiprocessing.managers, re-exported (see managers.py).
from multiprocessing.managers import *
from multiprocessing.managers import (
    BaseListProxy as BaseListProxy,
    DictProxy as DictProxy,
    ListProxy as ListProxy,
    Namespace as Namespace,
    RemoteError as RemoteError,
    Server as Server,
    ValueProxy as ValueProxy,
)

__all__ = [
    "BaseManager", "SyncManager", "BaseProxy", "Token", "SharedMemoryManager",
]
