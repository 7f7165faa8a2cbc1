#!/usr/bin/env python3
"""CPython's multiprocessing suite against fastmp, compared with the stdlib on the same machine.

    python tests/cpython/compare.py                       # fork, spawn, forkserver; 2 at a time
    python tests/cpython/compare.py --methods fork --jobs 1

For each start method it runs the suite twice (tests/cpython/run_suite.py): against the stdlib
(the reference) and against fastmp, and prints a table of run/passed/failed/errors/skipped.

A test that passes with the stdlib and does not pass with fastmp (fails, errors, is skipped, or
is not reached) is an *unexpected difference*, unless expected.txt lists it.  Before it counts,
it is run again against fastmp on its own (--rerun times): one that passes then is reported as
flaky, not as a failure (a loaded 2-core machine makes a few of the suite's timing checks
noisy, for the stdlib too; and up to 3.11.7 WithThreadsTestPool.test_terminate now and then
takes minutes, CPython gh-113205, until the per-test cap ends it).  An expected.txt entry
whose test now passes with fastmp is reported as stale, and does not fail the run.

expected.txt: one test per line, `Class.test_name  # reason`, optionally prefixed with the start
methods it applies to (`fork,spawn:Class.test_name  # reason`); `#` lines are comments.
Every entry needs its reason; the list may hold at most MAX_EXPECTED entries.

Exit status: 0 no unexpected difference; 1 unexpected differences; 2 the comparison could not
be made (fastmp does not import, a bad expected.txt, a stdlib run that failed to start or ran
out of time).
"""
import argparse
import concurrent.futures
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import run_suite  # noqa: E402

MAX_EXPECTED = 10
PASS = ("pass", "xfail")


def expected_lines(path):
    """(line number, spec, reason) for each entry of an expected file: `spec  # reason`, blank
    lines and comment lines skipped.  Raises ValueError on a line with no reason."""
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            spec, sep, reason = line.partition("#")
            spec, reason = spec.strip(), reason.strip()
            if not sep or not reason:
                raise ValueError("%s:%d: no reason after '#': %r" % (path, lineno, line))
            yield lineno, spec, reason


def load_expected(path):
    """{(method, test id): reason}; method None for every method.  Raises ValueError."""
    entries = {}
    count = 0
    for lineno, spec, reason in expected_lines(path):
        methods = [None]
        if ":" in spec:
            prefix, spec = spec.split(":", 1)
            methods = [m.strip() for m in prefix.split(",")]
            bad = [m for m in methods if m not in run_suite.METHODS]
            if bad:
                raise ValueError("%s:%d: unknown start method %r" % (path, lineno, bad))
        if not spec or " " in spec:
            raise ValueError("%s:%d: not a test id: %r" % (path, lineno, spec))
        count += 1
        for m in methods:
            if (m, spec) in entries:
                raise ValueError("%s:%d: %s listed twice" % (path, lineno, spec))
            entries[(m, spec)] = reason
    if count > MAX_EXPECTED:
        raise ValueError("%s: %d entries; the target is at most %d" % (path, count, MAX_EXPECTED))
    return entries


def expected_reason(expected, method, tid):
    return expected.get((method, tid)) or expected.get((None, tid))


def excerpt(text, lines=12):
    text = (text or "").rstrip()
    return "\n".join("        " + ln for ln in text.splitlines()[-lines:])


def table(results, methods):
    head = "%-11s %-16s %5s %7s %7s %7s %8s %8s" % (
        "method", "library", "run", "passed", "failed", "errors", "skipped", "time")
    out = [head, "-" * len(head)]
    for m in methods:
        for lib in ("multiprocessing", "fastmp"):
            r = results.get((lib, m))
            if r is None:
                continue
            c = r["counts"]
            flag = ""
            if r.get("setup_failure"):
                flag = "  setup failed"
            elif r["not_run"]:
                flag = "  %d not run" % len(r["not_run"])
            out.append("%-11s %-16s %5d %7d %7d %7d %8d %7.0fs%s" % (
                m, lib, c["run"], c["passed"], c["failures"], c["errors"], c["skipped"],
                r["seconds"], flag))
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default=",".join(run_suite.METHODS),
                    help="comma-separated start methods (default: %(default)s)")
    ap.add_argument("--jobs", "-j", type=int, default=2,
                    help="suites run at the same time (default %(default)s)")
    ap.add_argument("--timeout", type=float, default=600,
                    help="time cap of one suite run, s (default %(default)s)")
    ap.add_argument("--budget", type=float, default=None,
                    help="time cap of the whole comparison, s: runs and reruns share it "
                         "(default: none)")
    ap.add_argument("--per-test", type=float, default=run_suite.DEFAULT_PER_TEST,
                    help="time cap of one test, s (default %(default)s)")
    ap.add_argument("--rerun", type=int, default=2,
                    help="times a differing test is run again on its own (default %(default)s)")
    ap.add_argument("--expected", default=os.path.join(HERE, "expected.txt"))
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--json-dir", help="write each run's result (JSON) here")
    ap.add_argument("--log-dir", help="keep each run's output (unittest -v) here")
    args = ap.parse_args(argv)
    run_suite.exit_on_signals()

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in run_suite.METHODS]
    if bad:
        ap.error("unknown start method(s): %s" % ", ".join(bad))
    try:
        expected = load_expected(args.expected)
    except (OSError, ValueError) as e:
        print("compare: bad expected-differences list: %s" % e)
        return 2
    if run_suite.fastmp_location(args.python, dict(os.environ)) is None:
        print("compare: %s cannot import fastmp (and fastmp._core): build and install it, "
              "or set PYTHONPATH" % args.python)
        return 2
    for d in (args.json_dir, args.log_dir):
        if d:
            os.makedirs(d, exist_ok=True)

    t0 = time.monotonic()
    deadline = t0 + args.budget if args.budget else float("inf")

    def cap():
        """A run's time cap: --timeout, or what is left of --budget."""
        return min(args.timeout, deadline - time.monotonic())

    shm_before = run_suite.shm_entries()
    # Longest first; with 2 jobs the stdlib and fastmp runs of one method go side by side,
    # so both see the same load.
    order = sorted(methods, key=lambda m: {"spawn": 0, "forkserver": 1, "fork": 2}[m])
    jobs = [(lib, m) for m in order for lib in ("multiprocessing", "fastmp")]

    def one(job):
        lib, m = job
        log = os.path.join(args.log_dir, "%s-%s.log" % (lib, m)) if args.log_dir else None
        res = run_suite.run(lib, m, timeout=max(cap(), 1.0), python=args.python, log=log,
                            per_test=args.per_test)
        print(run_suite.summary_line(res), flush=True)
        if args.json_dir:
            with open(os.path.join(args.json_dir, "%s-%s.json" % (lib, m)), "w") as f:
                json.dump(res, f, indent=1, sort_keys=True)
        return job, res

    results = {}
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        try:
            for job, res in pool.map(one, jobs):
                results[job] = res
        except run_suite.SetupError as e:
            pool.shutdown(wait=False, cancel_futures=True)
            run_suite.kill_live_sessions()
            print("compare: %s" % e)
            return 2
        except BaseException:
            # stop the suites, so that the worker threads can finish and clean up
            pool.shutdown(wait=False, cancel_futures=True)
            run_suite.kill_live_sessions()
            raise

    status = 0
    unexpected, flaky, stale, notes = [], [], [], []
    for m in methods:
        ref, fm = results[("multiprocessing", m)], results[("fastmp", m)]
        if ref.get("setup_failure") or ref["counts"]["run"] == 0:
            notes.append("%s: the stdlib reference run failed to start:\n%s"
                         % (m, excerpt(ref.get("setup_failure") or ref.get("log_tail"), 30)))
            status = 2
            continue
        if ref["not_run"] or ref["aborted"]:
            notes.append("%s: the stdlib reference run hung or crashed in %s; %d tests not run"
                         % (m, ", ".join(ref["aborted"]) or "-", len(ref["not_run"])))
        if ref["not_run"]:
            status = 2      # out of time: those tests cannot be compared
        for tid, out in sorted(ref["outcomes"].items()):
            if out in ("fail", "error", "xpass") and not is_expected_any(expected, tid):
                notes.append("%s: %s does not pass with the stdlib either (%s): not compared"
                             % (m, tid, out))
        differing = {}
        for tid, out in ref["outcomes"].items():
            if out not in PASS:
                continue
            fout = fm["outcomes"].get(tid, "not run")
            if fout in PASS:
                continue
            if expected_reason(expected, m, tid):
                continue
            differing[tid] = fout
        # run the differences again, on their own
        still = dict(differing)
        for attempt in range(args.rerun):
            if not still or cap() < 30:
                break
            again = run_suite.run("fastmp", m, sorted(still), timeout=cap(),
                                  python=args.python, per_test=args.per_test)
            for tid in list(still):
                if again["outcomes"].get(tid) in PASS:
                    flaky.append((m, tid, still.pop(tid)))
                elif tid in again["details"]:
                    fm["details"][tid] = again["details"][tid]
        for tid, fout in sorted(still.items()):
            unexpected.append((m, tid, fout, fm["details"].get(tid, "")))
        for (em, tid), reason in sorted(expected.items(), key=lambda x: (str(x[0][0]), x[0][1])):
            if em not in (None, m):
                continue
            if tid not in ref["outcomes"] and tid not in fm["outcomes"]:
                notes.append("%s: expected.txt names %s, which the suite does not have"
                             % (m, tid))
            elif fm["outcomes"].get(tid) in PASS:
                stale.append((m, tid, reason))

    print()
    print("CPython's multiprocessing suite (%s), stdlib vs fastmp:"
          % os.path.basename(run_suite.SUITE))
    print(table(results, methods))
    for (lib, m), r in sorted(results.items()):
        for tid in r["aborted"]:
            print("  %s/%s: %s hung or crashed; the run went on after it" % (lib, m, tid))
        if r["killed"]:
            print("  %s/%s: %d processes were left after the suite and killed"
                  % (lib, m, len(r["killed"])))
        if r["shm_removed"]:
            print("  %s/%s: fastmp segments left in /dev/shm after the suite (removed): %s"
                  % (lib, m, " ".join(r["shm_removed"])))
    for n in notes:
        print("note:", n)
    for m, tid, out in flaky:
        print("FLAKY (%s with fastmp, passed when run again): %s %s" % (out, m, tid))
    for m, tid, reason in stale:
        print("STALE expected.txt entry (passes with fastmp now): %s %s  # %s" % (m, tid, reason))
    if unexpected:
        print()
        print("UNEXPECTED DIFFERENCES (pass with the stdlib, not with fastmp, not in %s):"
              % os.path.basename(args.expected))
        for m, tid, out, detail in unexpected:
            print("  %-10s %-6s %s" % (m, out, tid))
            if detail:
                print(excerpt(detail))
        status = max(status, 1)
    new_shm = run_suite.shm_entries() - shm_before
    if new_shm:
        new_shm -= run_suite.shm_mapped()
    if new_shm:
        # a warning: on a shared machine the entries may be someone else's
        print("warning: new entries in /dev/shm since the start: %s" % " ".join(sorted(new_shm)))
    print("compare: %s in %.0fs" % ({0: "OK", 1: "FAILED", 2: "ERROR"}[status],
                                   time.monotonic() - t0))
    return status


def is_expected_any(expected, tid):
    return any(t == tid for (_, t) in expected)


if __name__ == "__main__":
    sys.exit(main())
