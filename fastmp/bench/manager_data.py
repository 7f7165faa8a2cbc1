"""The Manager's Queue and Value in the ``managers`` group: operations on the proxies of
``Manager().Queue()`` and ``Manager().Value()``, the manager started before the timing and shut
down after it (see managers.py).  The stdlib's proxies make one round trip to the manager's
server process per operation; fastmp's run in the calling process on shared memory."""
import importlib

from .managers import GROUP, _timed
from .runner import Workload


def _queue_put_get(q, n):
    put, get = q.put, q.get
    for i in range(n):
        put(i)
        get()


def _value_set_get(v, n):
    for i in range(n):
        v.value = i
        v.value


def bench_manager_queue(mp, n, start_method="fork"):
    """q.put(i), then q.get(), on a Manager().Queue() proxy: put+get pairs per second."""
    return _timed(mp, start_method, lambda m: m.Queue(), _queue_put_get, n)


def bench_manager_value(mp, n, start_method="fork"):
    """v.value = i, then v.value, on a Manager().Value('i', 0) proxy: set+get pairs per
    second."""
    return _timed(mp, start_method, lambda m: m.Value("i", 0), _value_set_get, n)


def _probe(fastmp_name, std_name):
    def probe(mp, ctx):
        if mp.__name__ == "fastmp":
            return getattr(importlib.import_module("fastmp._mgr_data"), fastmp_name)
        return getattr(importlib.import_module(mp.__name__ + ".managers"), std_name)
    return probe


WORKLOADS = [
    Workload("manager-queue", bench_manager_queue, 10_000, "put+get",
             "q.put(i), then q.get(), on a Manager().Queue() proxy",
             probe=_probe("QueueProxy", "BaseProxy")),
    Workload("manager-value", bench_manager_value, 10_000, "set+get",
             "v.value = i, then v.value, on a Manager().Value() proxy",
             probe=_probe("SharedValueProxy", "ValueProxy")),
]
for _w in WORKLOADS:
    _w.group = GROUP
del _w
