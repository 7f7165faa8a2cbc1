"""Workloads of the ``managers`` group on the synchronization objects a Manager hands out (its
Lock and Event).  The stdlib's proxies make one round trip to the manager's server process per
call; fastmp's call its C objects in the calling process."""
import importlib

from .managers import GROUP, _timed
from .runner import Workload


def _lock_pairs(lock, n):
    acquire, release = lock.acquire, lock.release
    for _ in range(n):
        acquire()
        release()


def _event_ops(ev, n):
    set_, clear, is_set = ev.set, ev.clear, ev.is_set
    for _ in range(n):
        set_()
        clear()
        is_set()


def bench_manager_lock(mp, n, start_method="fork"):
    """lock.acquire() + lock.release() on a Manager().Lock() proxy, uncontended: pairs per
    second."""
    return _timed(mp, start_method, lambda m: m.Lock(), _lock_pairs, n)


def bench_manager_event(mp, n, start_method="fork"):
    """ev.set(), ev.clear(), ev.is_set() on a Manager().Event() proxy: rounds of the three
    per second."""
    return _timed(mp, start_method, lambda m: m.Event(), _event_ops, n)


def _probe(name, std_name):
    """The proxy class mp's Manager hands out (fastmp's in its _mgr_sync)."""
    def probe(mp, ctx):
        try:
            return getattr(importlib.import_module(mp.__name__ + "._mgr_sync"), name)
        except (ImportError, AttributeError):
            return getattr(importlib.import_module(mp.__name__ + ".managers"), std_name)
    probe.__qualname__ = f"probe({name})"
    return probe


WORKLOADS = [
    Workload("manager-lock", bench_manager_lock, 10_000, "acquire+release",
             "lock.acquire(); lock.release() on a Manager().Lock() proxy",
             probe=_probe("LockProxy", "AcquirerProxy")),
    Workload("manager-event", bench_manager_event, 5_000, "set+clear+is_set",
             "ev.set(); ev.clear(); ev.is_set() on a Manager().Event() proxy",
             probe=_probe("SharedEventProxy", "EventProxy")),
]
for _w in WORKLOADS:
    _w.group = GROUP
del _w
