"""Shared helpers for the scripts in benchmarks/ (and, later, ``python -m fastmp.bench``).

A *workload* is a plain function ``fn(mp, n, start_method) -> float`` that runs
``n`` operations with the library module ``mp`` (``multiprocessing`` or
``fastmp``) and returns operations per second, measured around the operations
only (process start-up and hand-shakes are not timed).

:func:`compare` runs every workload for every library in one process tree,
alternating the libraries round by round, discards a warm-up round, and reports
the median rate per library and the ratio of each library to the first one (the
baseline, normally the stdlib).
"""

import fnmatch
import importlib
import json
import math
import os
import platform
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field

__all__ = [
    "PIN_MODES", "set_pin_mode", "cpu_plan", "pinned", "pin_self",
    "Workload", "Lib", "Result", "BenchTimeout", "watchdog", "load_lib",
    "select", "compare", "print_header", "print_results", "write_json",
    "add_common_args", "main",
]

STDLIB = "multiprocessing"
DEFAULT_LIBS = "multiprocessing,fastmp"


@dataclass
class Workload:
    name: str
    fn: object                 # fn(mp, n, start_method) -> ops/s
    n: int                     # operations per round in a full run
    unit: str = "ops"          # what one operation is, for the table
    descr: str = ""


@dataclass
class Lib:
    name: str                  # import name: "multiprocessing" or "fastmp"
    module: object = None      # None when unavailable
    error: str = ""            # why it is unavailable
    note: str = ""             # where it was loaded from / warnings


@dataclass
class Result:
    workload: str
    unit: str
    n: dict = field(default_factory=dict)        # lib -> operations per kept round
    rates: dict = field(default_factory=dict)    # lib -> [ops/s per kept round]
    errors: dict = field(default_factory=dict)   # lib -> message


# ---------------------------------------------------------------------------
# CPU placement for two-process workloads.
#
# On a small VM a wake-up across CPUs can cost ten times one on the same CPU,
# and the scheduler moves processes between the two at will, so unpinned
# ping-pong rates jump between two modes from round to round.  Pinning makes
# the rounds comparable:
#   split  parent and child on two different CPUs (the default: the common case
#          for multiprocessing, and where spinning before sleeping can pay)
#   same   both on one CPU (every hand-off is a context switch; spinning is waste)
#   none   wherever the scheduler puts them (realistic, noisy)

PIN_MODES = ("split", "same", "none")
_pin_mode = "split"


def set_pin_mode(mode):
    global _pin_mode
    if mode not in PIN_MODES:
        raise ValueError(f"pin mode must be one of {PIN_MODES}, not {mode!r}")
    _pin_mode = mode


def cpu_plan(mode=None):
    """(parent_cpu, child_cpu) for a two-process workload; None = unpinned.
    split falls back to none when fewer than two CPUs are usable."""
    mode = mode or _pin_mode
    if mode == "none" or not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if mode == "same":
        return cpus[0], cpus[0]
    if len(cpus) < 2:
        return None, None
    return cpus[0], cpus[1]


def pin_self(cpu):
    """Pin the calling process to one CPU (no-op for None)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


class pinned:
    """``with pinned(cpu):`` runs the block on one CPU, then restores the mask."""

    def __init__(self, cpu):
        self.cpu = cpu

    def __enter__(self):
        if self.cpu is not None:
            self._old = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {self.cpu})
        return self

    def __exit__(self, *exc):
        if self.cpu is not None:
            os.sched_setaffinity(0, self._old)
        return False


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
    return lib


def select(workloads, pattern):
    """Workloads whose name matches PATTERN: comma-separated globs, or
    substrings when a part has no glob character."""
    if not pattern:
        return list(workloads)
    parts = [p.strip() for p in pattern.split(",") if p.strip()]

    def hit(name):
        for p in parts:
            if any(c in p for c in "*?["):
                if fnmatch.fnmatchcase(name, p):
                    return True
            elif p in name:
                return True
        return False

    return [w for w in workloads if hit(w.name)]


def _one(w, lib, n, start_method, timeout):
    with watchdog(timeout):
        return w.fn(lib.module, n, start_method)


def compare(workloads, libs, *, start_method="fork", rounds=5, round_time=0.25,
            scale=1.0, timeout=120.0, log=None):
    """Run every workload for every usable library.

    Per workload: one warm-up round per library at ``w.n * scale`` operations
    (discarded; it also sizes that library's rounds so each lasts about
    ``round_time`` seconds: a library 50 times faster runs 50 times more
    operations per round instead of a round too short to time well), then
    ``rounds`` kept rounds in which the libraries alternate and the order
    flips every round.  Round i of each library forms a pair for the spread.
    """
    usable = [lib for lib in libs if lib.module is not None]
    results = []
    for w in workloads:
        res = Result(w.name, w.unit)
        n0 = max(1, int(w.n * scale))
        for lib in usable:
            try:
                warm = _one(w, lib, n0, start_method, timeout)
                res.n[lib.name] = max(min(n0, 100), int(round_time * warm))
            except Exception as exc:  # noqa: BLE001 - reported in the table
                res.errors[lib.name] = f"{type(exc).__name__}: {exc}"
        alive = [lib for lib in usable if lib.name not in res.errors]
        for r in range(rounds):
            for lib in (alive if r % 2 == 0 else alive[::-1]):
                if lib.name in res.errors:
                    continue
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


def _fmt_rate(rate):
    if rate is None:
        return "-"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if rate >= div:
            return f"{rate / div:.3g}{suffix}/s"
    return f"{rate:.3g}/s"


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


def print_header(title, libs, start_method, rounds, round_time=None, pin=None,
                 file=sys.stdout):
    p = lambda *a: print(*a, file=file)  # noqa: E731
    p(f"== {title}")
    p(f"python {platform.python_version()} ({platform.python_implementation()}) on "
      f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores "
      f"({len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'} usable)")
    size = f" of about {round_time:g} s" if round_time else ""
    p(f"start method: {start_method}; per library a discarded warm-up, then {rounds} rounds{size}, "
      f"alternating; rate = median of the rounds")
    if pin:
        parent, child = cpu_plan(pin)
        where = ("unpinned" if parent is None
                 else f"parent on CPU {parent}, child on CPU {child}")
        p(f"two-process workloads: --pin {pin} ({where})")
    for lib in libs:
        if lib.module is None:
            p(f"  {lib.name:16s} UNAVAILABLE: {lib.error}")
            if lib.name == "fastmp":
                p(f"  {'':16s} (install it with `pip install .`, or build in place with "
                  f"`python setup.py build_ext --inplace` and set PYTHONPATH to the checkout)")
        else:
            p(f"  {lib.name:16s} {lib.note}")
    file.flush()


def print_results(results, libs, file=sys.stdout):
    p = lambda *a: print(*a, file=file)  # noqa: E731
    names = [lib.name for lib in libs if lib.module is not None]
    if not names:
        p("no library could be timed")
        return
    base = names[0]
    others = names[1:]
    cols = [f"{'workload':22s}"]
    cols += [f"{n + ' rate':>18s}" for n in names]
    for o in others:
        cols += [f"{o + '/' + base:>26s}", f"{'spread':>13s}"]
    cols.append("  unit")
    p("  ".join(cols))
    for res in results:
        row = [f"{res.workload:22s}"]
        for n in names:
            if n in res.errors:
                row.append(f"{'FAILED':>18s}")
            else:
                rates = res.rates.get(n)
                row.append(f"{_fmt_rate(statistics.median(rates) if rates else None):>18s}")
        for o in others:
            _, _, ratio, lo, hi = summary(res, base, o)
            row.append(f"{('%.2fx' % ratio) if ratio else '-':>26s}")
            row.append(f"{('%.2f..%.2f' % (lo, hi)) if lo else '-':>13s}")
        row.append(f"  {res.unit}/s")
        p("  ".join(row))
    for res in results:
        for n, msg in res.errors.items():
            p(f"  {res.workload}: {n} failed: {msg}")
    if others:
        p(f"ratio = {others[0]} rate / {base} rate (higher is better for {others[0]}); "
          f"spread = lowest..highest ratio of paired rounds")
    file.flush()


def write_json(path, results, libs, start_method):
    data = {
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "start_method": start_method,
        "pin": _pin_mode,
        "libs": {lib.name: (lib.note if lib.module else "unavailable: " + lib.error)
                 for lib in libs},
        "results": [
            {"workload": r.workload, "unit": r.unit, "n": r.n,
             "rates": r.rates, "errors": r.errors}
            for r in results
        ],
    }
    with open(path, "w") as f:
        json.dump(data, f, indent=2)


def add_common_args(parser):
    parser.add_argument("--start-method", default="fork",
                        choices=["fork", "spawn", "forkserver"],
                        help="start method for the contexts and child processes (default: fork)")
    parser.add_argument("--pin", choices=PIN_MODES, default="split",
                        help="CPU placement of the two processes in two-process workloads: "
                             "split = two different CPUs (default), same = one CPU, "
                             "none = unpinned (noisy)")
    parser.add_argument("--quick", action="store_true",
                        help="short run: 3 rounds, small sizes (a smoke test, not a measurement)")
    parser.add_argument("--only", metavar="PATTERN",
                        help="run only workloads matching PATTERN "
                             "(comma-separated substrings or globs)")
    parser.add_argument("--libs", default=None,
                        help="comma-separated libraries; the first is the baseline "
                             "(default: multiprocessing,fastmp)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="kept rounds per library (default 5, 3 with --quick)")
    parser.add_argument("--json", metavar="PATH", help="also write the raw per-round rates here")
    parser.add_argument("--list", action="store_true", help="list the workloads and exit")


def main(title, workloads, argv=None):
    """The command line shared by the benchmark scripts."""
    import argparse

    parser = argparse.ArgumentParser(description=title)
    add_common_args(parser)
    args = parser.parse_args(argv)
    if args.list:
        for w in workloads:
            print(f"{w.name:22s} {w.descr}")
        return 0
    chosen = select(workloads, args.only)
    if not chosen:
        parser.error(f"no workload matches {args.only!r} (see --list)")
    rounds = args.rounds or (3 if args.quick else 5)
    if rounds < 1:
        parser.error("--rounds must be at least 1")

    explicit = args.libs is not None
    names = [n.strip() for n in (args.libs or DEFAULT_LIBS).split(",") if n.strip()]
    if len(set(names)) != len(names):
        parser.error("--libs names a library twice")
    libs = [load_lib(n, args.start_method) for n in names]
    if args.quick:
        kw = dict(scale=0.1, round_time=0.03)
    else:
        kw = dict(scale=1.0, round_time=0.25)
    set_pin_mode(args.pin)
    print_header(title, libs, args.start_method, rounds, kw["round_time"], args.pin)
    usable = [lib for lib in libs if lib.module is not None]
    if not usable or (explicit and len(usable) < len(libs)):
        print("error: a requested library is unavailable (see above)", file=sys.stderr)
        return 2
    if len(usable) < len(libs):
        print("note: timing only " + ", ".join(lib.name for lib in usable)
              + "; no comparison this run")
    sys.stdout.flush()

    t0 = time.perf_counter()
    results = compare(chosen, usable, start_method=args.start_method, rounds=rounds, **kw)
    print()
    print_results(results, usable)
    print(f"({time.perf_counter() - t0:.1f} s)")
    if args.json:
        write_json(args.json, results, libs, args.start_method)
    failed = any(r.errors for r in results)
    return 1 if failed else 0
