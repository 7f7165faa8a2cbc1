# multiprocessing.managers, with SyncManager's dict(), list() and Namespace() in shared memory
# (see managers.py).
from typing import Any, Dict, List

from multiprocessing.managers import *
from multiprocessing.managers import (
    BaseListProxy as BaseListProxy,
    DictProxy as DictProxy,
    ListProxy as ListProxy,
    Namespace as Namespace,
    NamespaceProxy as NamespaceProxy,
    RemoteError as RemoteError,
    Server as Server,
    State as State,
    Token as Token,
    ValueProxy as ValueProxy,
)
from multiprocessing.managers import SyncManager as _StdSyncManager

from ._core import SharedKV

class SharedDictProxy(DictProxy):
    _kv: SharedKV
    def _getvalue(self) -> Dict[Any, Any]: ...
    def keys(self) -> List[Any]: ...
    def values(self) -> List[Any]: ...
    def items(self) -> List[Any]: ...
    def copy(self) -> Dict[Any, Any]: ...

class SharedListProxy(ListProxy):
    _kv: SharedKV
    def _getvalue(self) -> List[Any]: ...
    def sort(self, *, key: Any = ..., reverse: bool = ...) -> None: ...

class SharedNamespaceProxy(NamespaceProxy):
    _kv: SharedKV
    def _getvalue(self) -> Namespace: ...

class SyncManager(_StdSyncManager):
    def dict(self, *args: Any, **kwds: Any) -> SharedDictProxy: ...  # type: ignore[override]
    def list(self, *args: Any, **kwds: Any) -> SharedListProxy: ...  # type: ignore[override]
    def Namespace(self, *args: Any, **kwds: Any) -> SharedNamespaceProxy: ...  # type: ignore[override]

__all__ = [
    "BaseManager", "SyncManager", "BaseProxy", "Token", "SharedMemoryManager",
]
