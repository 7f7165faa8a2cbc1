"""The ``managers`` workloads: operations on the proxies a Manager hands out (its dict, list
and Namespace), the manager started before the timing and shut down after it.  The stdlib's
proxies make one round trip to the manager's server process per operation; fastmp's run in the
calling process on shared memory.  UltraDict, the shared-memory dict users pick instead of a
Manager dict, is the peer of the dict workloads (see :func:`ultradict_dict_set`)."""
import importlib
import importlib.util
import sys
from contextlib import contextmanager
from time import perf_counter

from .harness import producers
from .placement import cpu_plan, pinned
from .runner import Workload, tracker_kept

GROUP = "managers"


def _timed(mp, start_method, make, body, n):
    """Start a manager (its server placed like the other end of a ping-pong), make the proxy,
    time body(proxy, n) in the parent, shut down; operations per second."""
    parent_cpu, child_cpu = cpu_plan()
    with pinned(child_cpu):
        manager = mp.get_context(start_method).Manager()
    try:
        proxy = make(manager)
        with pinned(parent_cpu):
            t0 = perf_counter()
            body(proxy, n)
            dt = perf_counter() - t0
    finally:
        manager.shutdown()
    return n / dt


def _dict_set(d, n):
    for i in range(n):
        d[i & 63] = i


def _dict_get(d, n):
    for i in range(n):
        d[i & 63]


def _list_append(lst, n):
    append = lst.append
    for i in range(n):
        append(i)


def _namespace_set_get(ns, n):
    for i in range(n):
        ns.x = i
        ns.x


_MIB = b"\x5a" * (1 << 20)


def _dict_set_1mib(d, n):
    for i in range(n):
        d[i & 3] = _MIB


def _filled_dict(manager):
    d = manager.dict()
    d.update({i: i for i in range(64)})
    return d


def bench_manager_dict_set(mp, n, start_method="fork"):
    """d[k] = i (64 keys, small ints) on a Manager().dict() proxy: sets per second."""
    return _timed(mp, start_method, lambda m: m.dict(), _dict_set, n)


def bench_manager_dict_get(mp, n, start_method="fork"):
    """d[k] (64 keys, small ints) on a Manager().dict() proxy: gets per second."""
    return _timed(mp, start_method, _filled_dict, _dict_get, n)


def bench_manager_list_append(mp, n, start_method="fork"):
    """lst.append(i) on a Manager().list() proxy: appends per second."""
    return _timed(mp, start_method, lambda m: m.list(), _list_append, n)


def bench_manager_namespace(mp, n, start_method="fork"):
    """ns.x = i, then ns.x, on a Manager().Namespace() proxy: set+get pairs per second."""
    return _timed(mp, start_method, lambda m: m.Namespace(), _namespace_set_get, n)


def bench_manager_dict_1mib(mp, n, start_method="fork"):
    """d[k] = a 1 MiB bytes value (4 keys) on a Manager().dict() proxy: sets per second."""
    return _timed(mp, start_method, lambda m: m.dict(), _dict_set_1mib, n)


def _setter_child(n, d):
    for i in range(n):
        d[i & 63] = i
    d["child-done"] = True


def _setter_parent(n, d):
    for i in range(n):
        d[64 + (i & 63)] = i
    while not d.get("child-done"):
        pass


def bench_manager_dict_2proc(mp, n, start_method="fork"):
    """d[k] = i from two processes at once into one Manager().dict() (64 keys each): sets per
    second, both processes' together, timed until both are done."""
    ctx = mp.get_context(start_method)
    manager = ctx.Manager()
    try:
        return 2 * producers(ctx, n, 1, _setter_child, _setter_parent, (manager.dict(),))
    finally:
        manager.shutdown()


# ---------------------------------------------------------------------------
# UltraDict (PyPI: UltraDict), as the peer of the dict workloads.  No server process: every
# process keeps a local copy of the dict and brings it up to date from a stream of updates
# (each a pickled key and value) in a shared buffer of fixed size; when an update does not fit,
# the writer pickles the whole dict into a new segment (a "full dump") and the stream starts
# over.  Reads that find no new update read the local copy.
#
# Set up as its README advises: one process writing keeps the default lock (a
# multiprocessing.RLock, shared with forked children); two processes writing use
# shared_lock=True (a lock word in the shared memory, on the atomics package), which also holds
# when the children are spawned.  The stream buffer is the default 10 kB for small values (about
# 450 updates between full dumps of a small dict; a 1 MiB buffer measured within a few per cent)
# and 16 MiB for the 1 MiB values: room for 15 of them before a full dump (of the 4 MiB dict),
# where the default buffer would make every set a full dump (a third of the speed; 64 MiB
# measured no faster).  A dict is created before the timing and unlinked after (its control
# segment, its stream and its last full dump).

_UD_BIG_BUFFER = 16 << 20


def _ultradict():
    """The UltraDict class; the import leaves the stdlib's resource tracker as it was (see
    :func:`tracker_kept`)."""
    with tracker_kept():
        from UltraDict import UltraDict
    return UltraDict


@contextmanager
def _ultradict_as_shipped(cls):
    """While UltraDict's own round runs: its segments out of the stdlib's resource tracker, as
    its import sets for the whole process (it unlinks them itself)."""
    with tracker_kept():
        untrack = getattr(sys.modules.get(cls.__module__), "remove_shm_from_resource_tracker",
                          None)
        if untrack is not None:
            untrack()
        yield


def _ud_timed(make, body, n):
    """Make an UltraDict, time body(d, n) (placed like _timed's parent), unlink it."""
    cls = _ultradict()
    parent_cpu, _ = cpu_plan()
    with _ultradict_as_shipped(cls):
        d = make(cls)
        try:
            with pinned(parent_cpu):
                t0 = perf_counter()
                body(d, n)
                dt = perf_counter() - t0
        finally:
            d.unlink()
    return n / dt


def ultradict_dict_set(n, start_method="fork"):
    """d[k] = i (64 keys, small ints) on an UltraDict: sets per second."""
    return _ud_timed(lambda cls: cls(), _dict_set, n)


def ultradict_dict_get(n, start_method="fork"):
    """d[k] (64 keys, small ints) on an UltraDict: gets per second."""
    return _ud_timed(lambda cls: cls({i: i for i in range(64)}), _dict_get, n)


def ultradict_dict_1mib(n, start_method="fork"):
    """d[k] = a 1 MiB bytes value (4 keys) on an UltraDict with a 16 MiB stream buffer: sets
    per second."""
    return _ud_timed(lambda cls: cls(buffer_size=_UD_BIG_BUFFER), _dict_set_1mib, n)


def ultradict_dict_2proc(n, start_method="fork"):
    """d[k] = i from two processes (the stdlib's, of ``start_method``) at once into one
    UltraDict with shared_lock=True (64 keys each): sets per second, both together."""
    if importlib.util.find_spec("atomics") is None:
        # checked first: UltraDict finds out only once it has made its segments, and leaves them
        raise RuntimeError("UltraDict's shared_lock=True needs the atomics package "
                           "(pip install atomics)")
    import multiprocessing
    cls = _ultradict()
    ctx = multiprocessing.get_context(start_method)
    with _ultradict_as_shipped(cls):
        d = cls(shared_lock=True)
        try:
            return 2 * producers(ctx, n, 1, _setter_child, _setter_parent, (d,))
        finally:
            d.unlink()


def _probe_dict(mp, ctx):
    module = importlib.import_module(mp.__name__ + ".managers")
    return getattr(module, "SharedDictProxy", module.DictProxy)


def _probe_namespace(mp, ctx):
    module = importlib.import_module(mp.__name__ + ".managers")
    return getattr(module, "SharedNamespaceProxy", module.NamespaceProxy)


def _probe_list(mp, ctx):
    module = importlib.import_module(mp.__name__ + ".managers")
    return getattr(module, "SharedListProxy", module.ListProxy)


WORKLOADS = [
    Workload("manager-dict-set", bench_manager_dict_set, 20_000, "set",
             "d[k] = i on a Manager().dict() proxy (64 keys)", probe=_probe_dict,
             peers={"UltraDict": ultradict_dict_set}),
    Workload("manager-dict-get", bench_manager_dict_get, 20_000, "get",
             "d[k] on a Manager().dict() proxy (64 keys)", probe=_probe_dict,
             peers={"UltraDict": ultradict_dict_get}),
    Workload("manager-list-append", bench_manager_list_append, 20_000, "append",
             "lst.append(i) on a Manager().list() proxy", probe=_probe_list),
    Workload("manager-dict-2proc", bench_manager_dict_2proc, 10_000, "set",
             "d[k] = i from two processes into one Manager().dict()", probe=_probe_dict,
             peers={"UltraDict": ultradict_dict_2proc}),
    Workload("manager-namespace", bench_manager_namespace, 10_000, "set+get",
             "ns.x = i, then ns.x, on a Manager().Namespace() proxy", probe=_probe_namespace),
    Workload("manager-dict-1mib", bench_manager_dict_1mib, 200, "1 MiB set",
             "d[k] = 1 MiB of bytes on a Manager().dict() proxy (4 keys)", probe=_probe_dict,
             peers={"UltraDict": ultradict_dict_1mib}),
]
for _w in WORKLOADS:
    _w.group = GROUP
del _w
