"""Shared helpers for the scripts in benchmarks/.

The workloads and the machinery that times them live in the package, in
:mod:`fastmp.bench`, so that ``python -m fastmp.bench`` works from an installed
fastmp, where this directory does not exist.  This module re-exports them and
keeps what only the scripts have: their command line (``--libs``, ``--list``,
...) and their table of raw rates, one column per library.

A *workload* is a plain function ``fn(mp, n, start_method) -> float`` that runs
``n`` operations with the library module ``mp`` (``multiprocessing`` or
``fastmp``) and returns operations per second, measured around the operations
only (process start-up and hand-shakes are not timed).  A workload may also
name peers (faster-fifo, mpire, loky) with their own version of it.

:func:`compare` runs every workload for every library in one process tree,
alternating the libraries round by round, discards a warm-up round, and reports
the median rate per library and the ratio of each library to the first one (the
baseline, normally the stdlib).
"""

import json
import os
import platform
import statistics
import sys
import time


def _import_bench():
    """fastmp.bench from wherever Python finds fastmp (the installed package, or the
    checkout with PYTHONPATH); failing that, from this checkout."""
    try:
        import fastmp.bench as bench
        return bench
    except ImportError:
        if "fastmp" in sys.modules:
            where = os.path.dirname(getattr(sys.modules["fastmp"], "__file__", "") or "?")
            sys.exit(f"error: the fastmp at {where} has no fastmp.bench: reinstall it "
                     f"(`pip install .`) or set PYTHONPATH to the checkout")
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import fastmp.bench as bench
    return bench


_bench = _import_bench()

from fastmp.bench import (  # noqa: E402,F401  (re-exported for the scripts)
    PEERS, PIN_MODES, STDLIB, BenchTimeout, Lib, Result, Workload, compare, cpu_plan,
    load_lib, load_peer, pin_self, pinned, ratios, select, set_pin_mode, set_processes,
    summary, watchdog,
)
from fastmp.bench import fmt_rate as _fmt_rate  # noqa: E402

__all__ = [
    "PIN_MODES", "set_pin_mode", "cpu_plan", "pinned", "pin_self",
    "Workload", "Lib", "Result", "BenchTimeout", "watchdog", "load_lib",
    "select", "compare", "print_header", "print_results", "write_json",
    "add_common_args", "main",
]

DEFAULT_LIBS = "multiprocessing,fastmp"


def _load(name, start_method):
    return load_peer(name) if name in PEERS else load_lib(name, start_method)


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
        if lib.module is None and lib.kind == "peer":
            p(f"  {lib.name:16s} absent: {lib.error} (pip install {PEERS[lib.name][1]}, "
              f"or pip install 'fastmp[bench]')")
        elif lib.module is None:
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
        "pin": _bench.pin_mode(),
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


def add_common_args(parser, processes=False, peers=()):
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
    default = DEFAULT_LIBS + "".join("," + p for p in peers)
    parser.add_argument("--libs", default=None,
                        help="comma-separated libraries; the first is the baseline "
                             f"(default: {default}"
                             + ("; the peers only when installed)" if peers else ")"))
    parser.add_argument("--rounds", type=int, default=None,
                        help="kept rounds per library (default 5, 3 with --quick)")
    parser.add_argument("--json", metavar="PATH", help="also write the raw per-round rates here")
    parser.add_argument("--list", action="store_true", help="list the workloads and exit")
    if processes:
        parser.add_argument("--processes", metavar="N", type=int, default=None,
                            help="worker processes of the pools, producers of queue-fanin "
                                 "(default: the usable CPUs)")


def main(title, workloads, argv=None, processes=False):
    """The command line shared by the benchmark scripts.  The peers that some of
    ``workloads`` have (faster-fifo, mpire, loky) join the default libraries when
    installed, and are reported absent otherwise; ``processes`` adds --processes."""
    import argparse

    peers = [p for p in PEERS if any(p in w.peers for w in workloads)]
    parser = argparse.ArgumentParser(description=title)
    add_common_args(parser, processes=processes, peers=peers)
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
    if processes and args.processes is not None and args.processes < 1:
        parser.error("--processes must be at least 1")

    explicit = args.libs is not None
    names = [n.strip() for n in (args.libs or DEFAULT_LIBS).split(",") if n.strip()]
    if not explicit:
        names += [p for p in peers if any(p in w.peers for w in chosen)]
    if len(set(names)) != len(names):
        parser.error("--libs names a library twice")
    if names and names[0] in PEERS:
        parser.error("the baseline (the first of --libs) must be a module, not a peer")
    libs = [_load(n, args.start_method) for n in names]
    if args.quick:
        kw = dict(scale=0.1, round_time=0.03)
    else:
        kw = dict(scale=1.0, round_time=0.25)
    set_pin_mode(args.pin)
    set_processes(args.processes if processes else None)
    print_header(title, libs, args.start_method, rounds, kw["round_time"], args.pin)
    if processes:
        print(f"pools and queue-fanin: --processes {_bench.processes()}")
    usable = [lib for lib in libs if lib.module is not None]
    # an absent peer that was not asked for by name is reported, not an error
    wanted = [lib for lib in libs if explicit or lib.kind != "peer"]
    wanted_usable = [lib for lib in wanted if lib.module is not None]
    if not wanted_usable or (explicit and len(usable) < len(libs)):
        print("error: a requested library is unavailable (see above)", file=sys.stderr)
        return 2
    if len(wanted_usable) < len(wanted):
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
