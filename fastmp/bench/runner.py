"""The runner: the libraries, and the alternating rounds that time a workload on each.

A *workload* is a plain function ``fn(mp, n, start_method) -> float`` that runs ``n``
operations with the library module ``mp`` (``multiprocessing`` or ``fastmp``), reached only
through ``mp`` and ``mp.get_context(start_method)``, and returns operations per second,
measured around the operations only (process start-up and hand-shakes are not timed unless
starting is what the workload measures).  A peer's version of a workload is a function
``fn(n, start_method) -> float``.

:func:`compare` runs every workload for every library from the same parent process: a
discarded warm-up round per library, which also sizes its rounds, then rounds in which the
libraries alternate, the order flipping every round.  :func:`summary` gives the medians and the
ratios of the rounds; a :func:`watchdog` stops a round that makes no progress.
"""
import fnmatch
import importlib
import math
import os
import platform
import signal
import statistics
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import resource_tracker

STDLIB = "multiprocessing"
FASTMP = "fastmp"
DEFAULT_LIBS = "multiprocessing,fastmp"
C_PART = "C"
NOT_C_PART = "stdlib (not C yet)"


# ---------------------------------------------------------------------------
# the pieces of a run


@dataclass
class Workload:
    name: str
    fn: object                 # fn(mp, n, start_method) -> ops/s
    n: int                     # operations per round in a full run
    unit: str = "ops"          # what one operation is, for the table
    descr: str = ""
    group: str = ""            # sync, sharedctypes, queue, pool, misc
    probe: object = None       # probe(mp, ctx) -> the class fastmp hands out for this workload
    peers: dict = field(default_factory=dict)   # peer name -> fn(n, start_method) -> ops/s


@dataclass
class Lib:
    name: str                  # "multiprocessing", "fastmp", or a peer's name ("faster-fifo")
    module: object = None      # None when unavailable
    error: str = ""            # why it is unavailable
    note: str = ""             # where it was loaded from / warnings
    kind: str = "module"       # "module" (the workload runs on it) or "peer" (its own functions)
    version: str = ""


@dataclass
class Result:
    workload: str
    unit: str
    n: dict = field(default_factory=dict)        # lib -> operations per kept round
    rates: dict = field(default_factory=dict)    # lib -> [ops/s per kept round]
    errors: dict = field(default_factory=dict)   # lib -> message
    group: str = ""
    descr: str = ""


class BenchTimeout(Exception):
    """Raised by :func:`watchdog` when a workload round runs too long."""


class watchdog:
    """``with watchdog(seconds):`` raises BenchTimeout in the main thread
    after ``seconds`` (SIGALRM), so a hung wait does not hang the whole run.
    Both the stdlib's and fastmp's waits let signal handlers run."""

    def __init__(self, seconds):
        self.seconds = max(1, int(math.ceil(seconds)))

    def _fire(self, signum, frame):
        raise BenchTimeout(f"no progress after {self.seconds} s")

    def __enter__(self):
        self._old = signal.signal(signal.SIGALRM, self._fire)
        signal.alarm(self.seconds)
        return self

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self._old)
        return False


def _dist_version(dist):
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return ""


def load_lib(name, start_method):
    """Import a library and check that it can make a Lock under start_method.
    Never raises: an unusable library comes back with .error set."""
    lib = Lib(name)
    try:
        mod = importlib.import_module(name)
        if name != STDLIB:
            # fastmp's primitives live in fastmp.synchronize, on the C core
            importlib.import_module(name + ".synchronize")
        ctx = mod.get_context(start_method)
        lock_type = type(ctx.Lock())
    except Exception as exc:  # noqa: BLE001 - report whatever went wrong
        lib.error = f"{type(exc).__name__}: {exc}"
        return lib
    lib.module = mod
    lib.note = f"{os.path.dirname(getattr(mod, '__file__', '') or '?')}"
    if name != STDLIB and lock_type.__module__.startswith(STDLIB):
        lib.note += f"  (warning: its Lock is {lock_type.__module__}.{lock_type.__qualname__})"
    lib.version = (platform.python_version() if name == STDLIB
                   else getattr(mod, "__version__", "") or _dist_version(name))
    return lib


# Peers: name -> (import name, distribution name, what they stand in for).
PEERS = {
    "faster-fifo": ("faster_fifo", "faster-fifo", "queues"),
    "mpire": ("mpire", "mpire", "pools"),
    "loky": ("loky", "loky", "pools"),
    "UltraDict": ("UltraDict", "UltraDict", "manager dicts"),
}


@contextmanager
def tracker_kept():
    """``with tracker_kept():`` puts the stdlib's resource tracker back as it was on leaving:
    its ``register`` and ``unregister`` functions and its table of cleanup functions.

    A peer may change them for the whole process when imported (UltraDict takes shared memory
    out of the tracker's hands, to unlink its segments itself).  In the process that also
    times the stdlib and fastmp, that would change how they run (fastmp registers every
    segment it creates with the tracker), so a peer's import, and its own rounds, run inside
    this."""
    saved = (resource_tracker.register, resource_tracker.unregister,
             dict(getattr(resource_tracker, "_CLEANUP_FUNCS", {})))
    try:
        yield
    finally:
        resource_tracker.register, resource_tracker.unregister = saved[0], saved[1]
        funcs = getattr(resource_tracker, "_CLEANUP_FUNCS", None)
        if funcs is not None:
            funcs.clear()
            funcs.update(saved[2])


def load_peer(name):
    """Import a peer library (leaving the stdlib's resource tracker as it was: see
    :func:`tracker_kept`).  Never raises: an absent peer comes back with .error set."""
    import_name, dist, _ = PEERS[name]
    lib = Lib(name, kind="peer")
    try:
        with tracker_kept():
            mod = importlib.import_module(import_name)
    except Exception as exc:  # noqa: BLE001
        lib.error = f"{type(exc).__name__}: {exc}"
        return lib
    lib.module = mod
    lib.version = getattr(mod, "__version__", "") or _dist_version(dist)
    lib.note = os.path.dirname(getattr(mod, "__file__", "") or "?")
    return lib


def select(workloads, pattern, groups=False):
    """Workloads whose name matches PATTERN: comma-separated globs, or
    substrings when a part has no glob character.  With ``groups``, a part that
    is the name of a group (sync, queue, ...) selects that group, and only it
    ("sync" does not also pick pool-apply-async)."""
    if not pattern:
        return list(workloads)
    parts = [p.strip() for p in pattern.split(",") if p.strip()]

    group_names = {w.group for w in workloads} if groups else set()

    def hit(w):
        for p in parts:
            if p in group_names:
                if p == w.group:
                    return True
                continue
            if any(c in p for c in "*?["):
                if fnmatch.fnmatchcase(w.name, p):
                    return True
            elif p in w.name:
                return True
        return False

    return [w for w in workloads if hit(w)]


def _applies(w, lib):
    return lib.kind == "module" or lib.name in w.peers


def _one(w, lib, n, start_method, timeout):
    with watchdog(timeout):
        if lib.kind == "peer":
            return w.peers[lib.name](n, start_method)
        return w.fn(lib.module, n, start_method)


def compare(workloads, libs, *, start_method="fork", rounds=5, round_time=0.25,
            scale=1.0, timeout=120.0, log=None, progress=None):
    """Run every workload for every usable library.

    Per workload: one warm-up round per library at ``w.n * scale`` operations
    (discarded; it also sizes that library's rounds so each lasts about
    ``round_time`` seconds: a library 50 times faster runs 50 times more
    operations per round instead of a round too short to time well), then
    ``rounds`` kept rounds in which the libraries alternate and the order
    flips every round.  Round i of each library forms a pair for the spread.
    A peer runs only the workloads it has a function for.

    ``log(result)`` is called after each workload; ``progress(done, total,
    label)`` before each round.
    """
    usable = [lib for lib in libs if lib.module is not None]
    total = sum(len([lib for lib in usable if _applies(w, lib)]) * (1 + rounds)
                for w in workloads)
    done = 0

    def step(label):
        nonlocal done
        if progress:
            progress(done, total, label)
        done += 1

    results = []
    for w in workloads:
        res = Result(w.name, w.unit, group=w.group, descr=w.descr)
        mine = [lib for lib in usable if _applies(w, lib)]
        n0 = max(1, int(w.n * scale))
        for lib in mine:
            step(f"{w.name}: {lib.name} warm-up")
            try:
                warm = _one(w, lib, n0, start_method, timeout)
                res.n[lib.name] = max(min(n0, 100), int(round_time * warm))
            except Exception as exc:  # noqa: BLE001 - reported in the table
                res.errors[lib.name] = f"{type(exc).__name__}: {exc}"
        alive = [lib for lib in mine if lib.name not in res.errors]
        done += (len(mine) - len(alive)) * rounds
        for r in range(rounds):
            for lib in (alive if r % 2 == 0 else alive[::-1]):
                if lib.name in res.errors:
                    done += 1
                    continue
                step(f"{w.name}: {lib.name} round {r + 1}/{rounds}")
                try:
                    rate = _one(w, lib, res.n[lib.name], start_method, timeout)
                except Exception as exc:  # noqa: BLE001
                    res.errors[lib.name] = f"{type(exc).__name__}: {exc}"
                    continue
                res.rates.setdefault(lib.name, []).append(rate)
        results.append(res)
        if log:
            log(res)
    return results


def ratios(res, base, other):
    """Per-round ratios other/base (rounds are paired by index)."""
    a, b = res.rates.get(base, []), res.rates.get(other, [])
    return [y / x for x, y in zip(a, b) if x > 0]


def summary(res, base, other):
    """(median base rate, median other rate, ratio of medians, min ratio,
    max ratio); None where not measured."""
    a, b = res.rates.get(base), res.rates.get(other)
    ma = statistics.median(a) if a else None
    mb = statistics.median(b) if b else None
    rs = ratios(res, base, other)
    ratio = mb / ma if ma and mb else None
    return ma, mb, ratio, (min(rs) if rs else None), (max(rs) if rs else None)


def impl_of(cls):
    """"C" when fastmp hands out its own class here (in its MRO, a fastmp class comes before
    any class of the stdlib's multiprocessing: fastmp's classes may subclass the stdlib's so
    that isinstance checks against them pass), else "stdlib (not C yet)"."""
    if not isinstance(cls, type):
        cls = type(cls)
    for c in cls.__mro__:
        m = getattr(c, "__module__", "") or ""
        if m == STDLIB or m.startswith(STDLIB + "."):
            return NOT_C_PART
        if m == FASTMP or m.startswith(FASTMP + "."):
            return C_PART
    return NOT_C_PART


def probe_of(factory, *args, **kwargs):
    """A probe for a workload: ``probe(mp, ctx)`` gives the class that
    ``ctx.<factory>(*args, **kwargs)`` hands out, for :func:`impl_of`."""
    def probe(mp, ctx):
        return type(getattr(ctx, factory)(*args, **kwargs))
    probe.__qualname__ = f"probe({factory})"
    return probe
