"""The command line of ``python -m fastmp.bench``, also the one of the scripts in a checkout's
``benchmarks/`` directory (each runs one group of workloads: ``main(group=...)``)."""
import argparse
import json
import sys
from time import perf_counter

from .placement import PIN_MODES, set_pin_mode, set_processes
from .report import PlotError, lib_names, load, plot, print_report, pyplot, run
from .runner import FASTMP, PEERS, STDLIB, select
from .workloads import GROUPS, WORKLOADS, of_group


class _Progress:
    """One line on stderr, rewritten in place; only when stderr is a terminal."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.on = hasattr(stream, "isatty") and stream.isatty()
        self.t0 = perf_counter()
        self.width = 0

    def __call__(self, done, total, label):
        if not self.on:
            return
        pct = 100 * done // max(1, total)
        text = f"[{pct:3d}%  {perf_counter() - self.t0:5.0f} s] {label}"
        self.stream.write("\r" + text.ljust(self.width))
        self.width = len(text)
        self.stream.flush()

    def clear(self):
        if self.on and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


PROG = "python -m fastmp.bench"


def _parser(prog=PROG, group=None):
    what = f"the {group} workloads" if group else "every workload"
    parser = argparse.ArgumentParser(
        prog=prog,
        description="fastmp against the stdlib multiprocessing (and peers, when installed), "
                    f"side by side: {what} for every library in one run, rounds "
                    "alternating; the table gives the medians and the ratios.")
    parser.add_argument("--quick", action="store_true",
                        help="a fraction of the work: 3 short rounds, small sizes (under a "
                             "minute on 2 cores; a smoke test, not a measurement)")
    parser.add_argument("--only", metavar="PATTERN",
                        help="only the workloads matching PATTERN: comma-separated "
                             "substrings, globs, or group names (" + ", ".join(GROUPS) + "); "
                             "'dask' alone: fastmp.dask on a Dask cluster against hand-written "
                             "Dask (needs the dask extra)")
    parser.add_argument("--json", metavar="FILE", help="also write the results to FILE as JSON")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="also draw the ratios as a bar chart, log scale (needs matplotlib)")
    parser.add_argument("--processes", metavar="N", type=int, default=None,
                        help="worker processes for the pools and producers for queue-fanin "
                             "(default: the usable CPUs)")
    parser.add_argument("--start-method", default="fork",
                        choices=["fork", "spawn", "forkserver"],
                        help="start method of the contexts and child processes (default: fork)")
    parser.add_argument("--pin", choices=PIN_MODES, default="split",
                        help="CPUs of the two processes in two-process workloads: split = two "
                             "different CPUs (default), same = one CPU, none = unpinned")
    parser.add_argument("--rounds", type=int, default=None,
                        help="kept rounds per library (default 5, 3 with --quick)")
    parser.add_argument("--libs", metavar="NAMES",
                        help=f"only these libraries, comma-separated, among "
                             f"{', '.join([STDLIB, FASTMP] + list(PEERS))} (default: the "
                             f"stdlib, fastmp and the installed peers of the chosen "
                             f"workloads); the ratios are to the stdlib; a library named here "
                             f"that is unavailable is an error")
    parser.add_argument("--no-peers", action="store_true",
                        help=f"leave out the peers ({', '.join(PEERS)}) even when installed")
    parser.add_argument("--from-json", metavar="FILE",
                        help="run nothing: print the table of a saved --json FILE "
                             "(and --plot it)")
    parser.add_argument("--markdown", action="store_true",
                        help="print the table as Markdown (as in the README)")
    parser.add_argument("--list", action="store_true", help="list the workloads and exit")
    # For tests: scale the work further down (a fraction of --quick's sizes and round time).
    parser.add_argument("--scale", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=120.0, help=argparse.SUPPRESS)
    return parser


def _libs_option(parser, args, chosen):
    """The library names of --libs (None: the default libraries); a parser error when --libs
    is not a list of distinct known names."""
    if args.libs is None:
        return None
    libs = [name.strip() for name in args.libs.split(",") if name.strip()]
    if not libs:
        parser.error("--libs names no library")
    if len(set(libs)) != len(libs):
        parser.error("--libs names a library twice")
    if args.no_peers and any(name in PEERS for name in libs):
        parser.error("--no-peers leaves out the peers that --libs names")
    try:
        lib_names(chosen, libs)
    except ValueError as exc:
        parser.error(f"--libs: {exc}")
    return libs


_INSTALL_FASTMP = ("(install it with `pip install .`, or build in place with "
                   "`python setup.py build_ext --inplace` and set PYTHONPATH to the checkout)")


def _unusable(names, explicit, start_method):
    """The error message when a library that must be timed is unusable, else None: fastmp
    always, the others only when named with --libs (by default an absent peer is reported in
    its column, not an error)."""
    for name in names:
        if name != FASTMP and not explicit:
            continue
        lib = load(name, start_method)
        if lib.module is not None:
            continue
        if name == FASTMP:
            hint = "\n" + _INSTALL_FASTMP
        elif name in PEERS:
            hint = f"\n(pip install {PEERS[name][1]}, or pip install 'fastmp[bench]')"
        else:
            hint = ""
        return f"error: {name} is not usable here: {lib.error}{hint}"
    return None


def _dask(args):
    """``--only dask``: fastmp.dask's workloads (fastmp/bench/dask.py) on a LocalCluster, with
    their own table: a Pool on a cluster compares with hand-written Dask, not with the stdlib.
    Needs the extra; says "absent" otherwise."""
    from . import dask
    argv = ["--rounds", str(args.rounds or (1 if args.quick else 3))]
    if args.quick:
        argv += ["--tiny-items", "20000", "--baseline-tiny-items", "2000",
                 "--per-task-items", "500"]
    if args.processes:
        argv += ["--workers", str(args.processes)]
    return dask.main(argv)


def main(argv=None, *, group=None, prog=PROG):
    """Run the command line ``argv`` (default: ``sys.argv[1:]``) and return the exit status:
    0, 1 when a workload failed for a library, 2 when a library to time is unusable.  With
    ``group``, only the workloads of that group (see GROUPS) are there to choose from, as in the
    scripts of ``benchmarks/``; ``prog`` is the command as the help and the report show it."""
    workloads = of_group(group) if group else WORKLOADS
    parser = _parser(prog, group)
    args = parser.parse_args(argv)
    if args.list:
        for w in workloads:
            peers = f"  [peers: {', '.join(w.peers)}]" if w.peers else ""
            print(f"{w.group:13s} {w.name:24s} {w.descr}{peers}")
        return 0
    if args.plot:
        try:
            pyplot()
        except PlotError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.from_json:
        with open(args.from_json) as f:
            rep = json.load(f)
        print_report(rep, command=rep.get("command"), markdown=args.markdown)
        if args.plot:
            plot(rep, args.plot)
            print(f"plot: {args.plot}")
        return 1 if rep.get("failed") else 0

    if args.only and set(args.only.replace(" ", "").split(",")) == {"dask"}:
        return _dask(args)
    chosen = select(workloads, args.only, groups=True)
    if not chosen:
        parser.error(f"no workload matches {args.only!r} (see --list)")
    rounds = args.rounds or (3 if args.quick else 5)
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.processes is not None and args.processes < 1:
        parser.error("--processes must be at least 1")
    scale, round_time = (0.1, 0.03) if args.quick else (1.0, 0.25)
    if args.scale:
        scale, round_time = scale * args.scale, round_time * args.scale
    libs = _libs_option(parser, args, chosen)
    set_pin_mode(args.pin)
    set_processes(args.processes)
    error = _unusable(lib_names(chosen, libs, peers=not args.no_peers), libs is not None,
                      args.start_method)
    if error:
        print(error, file=sys.stderr)
        return 2

    progress = _Progress()
    try:
        rep = run(chosen, start_method=args.start_method, rounds=rounds,
                  round_time=round_time, scale=scale, peers=not args.no_peers,
                  timeout=args.timeout, progress=progress, libs=libs)
    finally:
        progress.clear()
    rep["quick"] = bool(args.quick)
    rep["command"] = " ".join([prog] + list(sys.argv[1:] if argv is None else argv))
    print_report(rep, command=rep["command"], markdown=args.markdown)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rep, f, indent=1)
            f.write("\n")
    if args.plot:
        plot(rep, args.plot)
        print(f"plot: {args.plot}")
    return 1 if rep["failed"] else 0
