"""The stdlib's multiprocessing.managers, re-exported (no C part planned)."""
import multiprocessing.managers as _std
from multiprocessing.managers import *  # noqa: F401,F403
from multiprocessing.managers import (  # noqa: F401
    AcquirerProxy, ArrayProxy, AutoProxy, BarrierProxy, BaseListProxy, ConditionProxy,
    DictProxy, EventProxy, IteratorProxy, ListProxy, MakeProxyType, Namespace, NamespaceProxy,
    PoolProxy, RemoteError, Server, ValueProxy,
)

from ._stdlib import forward as _forward

__all__ = list(_std.__all__)
__getattr__, __dir__ = _forward(globals(), _std)
