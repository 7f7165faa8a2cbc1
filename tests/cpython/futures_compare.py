#!/usr/bin/env python3
"""CPython's concurrent.futures tests: the stdlib's ProcessPoolExecutor against fastmp's.

    python tests/cpython/futures_compare.py                        # this interpreter's copy
    python tests/cpython/futures_compare.py --python /path/to/python3.13
    python tests/cpython/futures_compare.py --source /path/to/3.10/test/test_concurrent_futures.py
    python tests/cpython/futures_compare.py --methods fork -k test_map

The tests are the interpreter's own: ``test/test_concurrent_futures.py`` (3.9, 3.10) or the
``test/test_concurrent_futures/`` package (3.12+).  Nothing is fetched and nothing of them is
kept in this repository: an interpreter that ships neither (some 3.11 builds) is pointed at
another one's copy with ``--source``; the file of 3.10 runs on 3.11 unchanged.

Each run copies the tests into a fresh temp dir (as the top-level module or package
``test_concurrent_futures``, so that workers of every start method import them by that name)
and runs, in a subprocess, only the process-pool test classes of one start method (the classes
CPython builds from its ``ProcessPool<Method>Mixin``).  The run is made twice per start method:
with the stdlib's executor (the reference), and with ``fastmp.futures.ProcessPoolExecutor``
set as ``concurrent.futures.ProcessPoolExecutor`` and ``concurrent.futures.process.
ProcessPoolExecutor`` before the tests are imported, so every executor they build is fastmp's.
The tests' own contexts (``multiprocessing.get_context(method)``) are left as they are.

A test that passes with the stdlib and not with fastmp (fails, errors, is skipped, or is not
reached) is an *unexpected difference*, unless ``futures_expected.txt`` lists it.  Before it
counts it is run again on its own (--rerun times): one that passes then is reported as flaky.
An entry of the expected file that fastmp now passes is reported as stale.

A watchdog (faulthandler) ends a test that hangs past --per-test s: that test is an error and
the run goes on with the tests after it in a new process, all within --timeout s.

Expected file: one test per line, ``Class.test_name  # reason`` (the class name without its
start method part, e.g. ``ProcessPoolShutdownTest.test_x``, matches every start method), at
most MAX_EXPECTED entries, each a place where fastmp differs on purpose.

Exit status: 0 no unexpected difference; 1 unexpected differences; 2 the comparison could not
be made (no tests found, fastmp does not import, a bad expected file, a stdlib run that failed).
"""
import argparse
import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import expected_lines  # noqa: E402  (the expected-file format both share)

HERE = os.path.dirname(os.path.abspath(__file__))
METHODS = ("fork", "spawn", "forkserver")
LIBS = ("multiprocessing", "fastmp")
MAX_EXPECTED = 5
PASS = ("pass", "xfail")
MIXIN = {"fork": "ProcessPoolFork", "spawn": "ProcessPoolSpawn",
         "forkserver": "ProcessPoolForkserver"}

# Runs in the tested interpreter: python -c CHILD lib method tests_dir out.jsonl per_test [ids]
CHILD = r'''
import faulthandler, importlib, json, os, sys, time, unittest
lib, method, tests_dir, out_path, per_test = sys.argv[1:6]
only = set(json.loads(sys.argv[6])) if len(sys.argv) > 6 else None
per_test = float(per_test)
sys.path.insert(0, tests_dir)
if lib == "fastmp":
    import concurrent.futures, concurrent.futures.process
    import fastmp.futures
    concurrent.futures.ProcessPoolExecutor = fastmp.futures.ProcessPoolExecutor
    concurrent.futures.process.ProcessPoolExecutor = fastmp.futures.ProcessPoolExecutor
out = open(out_path, "a", buffering=1)
def emit(**kw):
    out.write(json.dumps(kw) + "\n")
    out.flush()
mixin = {"fork": "ProcessPoolFork", "spawn": "ProcessPoolSpawn",
         "forkserver": "ProcessPoolForkserver"}[method]
pat = __import__("re").compile(r"^%s(?!server)[A-Z]" % mixin)
base = os.path.join(tests_dir, "test_concurrent_futures")
if os.path.isdir(base):
    names = sorted("test_concurrent_futures." + f[:-3] for f in os.listdir(base)
                   if f.startswith("test_") and f.endswith(".py"))
else:
    names = ["test_concurrent_futures"]
loader = unittest.TestLoader()
def flat(s):
    for t in s:
        if isinstance(t, unittest.TestSuite):
            yield from flat(t)
        else:
            yield t
def tid(t):
    parts = t.id().split(".")
    return ".".join(parts[1:]) if parts[0] == "test_concurrent_futures" and len(parts) > 3 \
        else ".".join(parts[-2:])
selected = []
for n in names:
    mod = importlib.import_module(n)
    for t in flat(loader.loadTestsFromModule(mod)):
        if not pat.match(type(t).__name__):
            continue
        if only is not None and tid(t) not in only:
            continue
        selected.append(t)
emit(event="plan", ids=[tid(t) for t in selected])

class Result(unittest.TextTestResult):
    def startTest(self, test):
        faulthandler.dump_traceback_later(per_test, exit=True)
        self._t0 = time.monotonic()
        emit(event="start", id=tid(test))
        super().startTest(test)
    def _end(self, test, outcome, detail=""):
        emit(event="end", id=tid(test), outcome=outcome, detail=detail[-3000:],
             seconds=round(time.monotonic() - getattr(self, "_t0", time.monotonic()), 2))
    def addSuccess(self, test):
        super().addSuccess(test); self._end(test, "pass")
    def addFailure(self, test, err):
        super().addFailure(test, err); self._end(test, "fail", self.failures[-1][1])
    def addError(self, test, err):
        super().addError(test, err)
        if isinstance(test, unittest.TestCase):
            self._end(test, "error", self.errors[-1][1])
        else:
            emit(event="fixture", id=str(test), detail=self.errors[-1][1][-3000:])
    def addSkip(self, test, reason):
        super().addSkip(test, reason); self._end(test, "skip", reason)
    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err); self._end(test, "xfail")
    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test); self._end(test, "xpass")
    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            kind = "fail" if issubclass(err[0], test.failureException) else "error"
            emit(event="subfail", id=tid(test), outcome=kind,
                 detail=self._exc_info_to_string(err, test)[-3000:])
    def stopTest(self, test):
        super().stopTest(test)
        faulthandler.dump_traceback_later(per_test, exit=True)

faulthandler.dump_traceback_later(per_test, exit=True)
runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=2, resultclass=Result)
runner.run(unittest.TestSuite(selected))
faulthandler.cancel_dump_traceback_later()
emit(event="done")
out.close()
'''


def find_source(python):
    """The tested interpreter's own copy of the tests (file or package), or None."""
    code = ("import os, sysconfig; d = os.path.join(sysconfig.get_paths()['stdlib'], 'test');"
            "print(next((p for p in (os.path.join(d, 'test_concurrent_futures'),"
            " os.path.join(d, 'test_concurrent_futures.py')) if os.path.exists(p)), ''))")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    return out.stdout.strip() or None


def fastmp_imports(python):
    r = subprocess.run([python, "-c", "import fastmp._core, fastmp.futures"],
                       capture_output=True, text=True, timeout=120, cwd=tempfile.gettempdir())
    return r.returncode == 0, r.stderr[-2000:]


def copy_tests(source, dest):
    if os.path.isdir(source):
        shutil.copytree(source, os.path.join(dest, "test_concurrent_futures"),
                        ignore=shutil.ignore_patterns("__pycache__"))
    else:
        shutil.copy(source, os.path.join(dest, "test_concurrent_futures.py"))


def run(lib, method, source, python, timeout, per_test, ids=None, log=None):
    """One suite run (or the tests `ids`): {'outcomes': {id: outcome}, 'details': {...},
    'plan': [...], 'aborted': [...], 'seconds': s, 'log_tail': str}."""
    t0 = time.monotonic()
    res = {"lib": lib, "method": method, "outcomes": {}, "details": {}, "plan": None,
           "aborted": [], "fixtures": [], "log_tail": ""}
    with tempfile.TemporaryDirectory(prefix="fastmp-futures-") as tmp:
        tests_dir = os.path.join(tmp, "tests")
        os.mkdir(tests_dir)
        copy_tests(source, tests_dir)
        work = os.path.join(tmp, "cwd")
        os.mkdir(work)
        env = dict(os.environ, TMPDIR=work, PYTHONDONTWRITEBYTECODE="1")
        env.pop("PYTHONSTARTUP", None)
        remaining = ids
        for _ in range(50):
            left = timeout - (time.monotonic() - t0)
            if left < 5:
                break
            out_path = os.path.join(tmp, "events-%d.jsonl" % len(res["aborted"]))
            argv = [python, "-c", CHILD, lib, method, tests_dir, out_path, str(per_test)]
            if remaining is not None:
                argv.append(json.dumps(sorted(remaining)))
            with open(os.path.join(tmp, "log"), "w+") as logf:
                p = subprocess.Popen(argv, cwd=work, env=env, stdout=logf, stderr=logf,
                                     start_new_session=True)
                try:
                    p.wait(left)
                except subprocess.TimeoutExpired:
                    pass
                _kill_session(p)
                logf.seek(0)
                text = logf.read()
            if log:
                with open(log, "a") as f:
                    f.write(text)
            res["log_tail"] = text[-4000:]
            events = []
            if os.path.exists(out_path):
                with open(out_path) as f:
                    for line in f:
                        try:
                            events.append(json.loads(line))
                        except ValueError:
                            pass
            running, done = None, False
            for e in events:
                if e["event"] == "plan":
                    if res["plan"] is None:
                        res["plan"] = e["ids"]
                elif e["event"] == "start":
                    running = e["id"]
                elif e["event"] == "end":
                    prev = res["outcomes"].get(e["id"])
                    out = e["outcome"]
                    if prev in ("fail", "error"):     # a failed subtest
                        out = prev
                    res["outcomes"][e["id"]] = out
                    if e.get("detail"):
                        res["details"][e["id"]] = e["detail"]
                    running = None
                elif e["event"] == "subfail":
                    res["outcomes"][e["id"]] = e["outcome"]
                    res["details"][e["id"]] = e["detail"]
                elif e["event"] == "fixture":
                    res["fixtures"].append(e["id"])
                    res["details"][e["id"]] = e["detail"]
                elif e["event"] == "done":
                    done = True
            if done or res["plan"] is None:
                break
            # hung or crashed: that test is an error, the run goes on after it
            if running is not None:
                res["aborted"].append(running)
                res["outcomes"][running] = "error"
                res["details"][running] = "hung or crashed the run:\n" + text[-3000:]
            remaining = [t for t in res["plan"] if t not in res["outcomes"]]
            if not remaining:
                break
    res["seconds"] = time.monotonic() - t0
    plan = res["plan"] or []
    res["not_run"] = [t for t in plan if t not in res["outcomes"]]
    c = {"run": len(res["outcomes"])}
    for k, o in (("passed", PASS), ("failures", ("fail",)), ("errors", ("error",)),
                 ("skipped", ("skip",))):
        c[k] = sum(1 for v in res["outcomes"].values() if v in o)
    res["counts"] = c
    return res


def _kill_session(p):
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        pass


def generic(tid):
    """Class.test with the start method part of the class name removed."""
    for prefix in ("ProcessPoolForkserver", "ProcessPoolFork", "ProcessPoolSpawn"):
        tid = re.sub(r"(^|\.)%s(?=[A-Z])" % prefix, r"\1", tid)
    return tid


def load_expected(path):
    """{test id: reason}, read as compare.py reads its own expected file."""
    entries = {}
    for lineno, spec, reason in expected_lines(path):
        if not spec or " " in spec:
            raise ValueError("%s:%d: not a test id: %r" % (path, lineno, spec))
        if spec in entries:
            raise ValueError("%s:%d: %s listed twice" % (path, lineno, spec))
        entries[spec] = reason
    if len(entries) > MAX_EXPECTED:
        raise ValueError("%s: %d entries; at most %d" % (path, len(entries), MAX_EXPECTED))
    return entries


def is_expected(expected, tid):
    g = generic(tid)
    return any(g == e or g.endswith("." + e) for e in expected)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--source", help="the tests to run (a test_concurrent_futures.py or "
                    "package); default: the tested interpreter's own")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--jobs", "-j", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=600, help="cap of one run, s")
    ap.add_argument("--budget", type=float, default=None, help="cap of everything, s")
    ap.add_argument("--per-test", type=float, default=60)
    ap.add_argument("--rerun", type=int, default=1)
    ap.add_argument("-k", dest="pattern", help="compare only the tests whose id contains this "
                    "(the runs still run every test)")
    ap.add_argument("--expected", default=os.path.join(HERE, "futures_expected.txt"))
    ap.add_argument("--log-dir")
    args = ap.parse_args(argv)

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if any(m not in METHODS for m in methods):
        ap.error("unknown start method in %r" % args.methods)
    try:
        expected = load_expected(args.expected)
    except (OSError, ValueError) as e:
        print("futures_compare: bad expected file: %s" % e)
        return 2
    source = args.source or find_source(args.python)
    if not source:
        print("futures_compare: %s ships no test_concurrent_futures; give --source" % args.python)
        return 2
    ok, err = fastmp_imports(args.python)
    if not ok:
        print("futures_compare: %s cannot import fastmp.futures:\n%s" % (args.python, err))
        return 2
    if args.log_dir:
        os.makedirs(args.log_dir, exist_ok=True)
    print("futures_compare: %s, tests from %s" % (args.python, source), flush=True)

    t0 = time.monotonic()
    deadline = t0 + args.budget if args.budget else float("inf")

    def cap():
        return min(args.timeout, deadline - time.monotonic())

    def one(job):
        lib, m = job
        log = os.path.join(args.log_dir, "%s-%s.log" % (lib, m)) if args.log_dir else None
        r = run(lib, m, source, args.python, max(cap(), 1.0), args.per_test, log=log)
        if args.pattern:
            r["outcomes"] = {k: v for k, v in r["outcomes"].items() if args.pattern in k}
        c = r["counts"]
        print("  %-10s %-16s run %3d passed %3d failed %3d errors %3d skipped %3d  %4.0fs%s"
              % (m, lib, c["run"], c["passed"], c["failures"], c["errors"], c["skipped"],
                 r["seconds"], "  (%d not run)" % len(r["not_run"]) if r["not_run"] else ""),
              flush=True)
        return job, r

    order = sorted(methods, key=lambda m: {"spawn": 0, "forkserver": 1, "fork": 2}[m])
    jobs = [(lib, m) for m in order for lib in LIBS]
    results = {}
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for job, r in pool.map(one, jobs):
            results[job] = r

    status = 0
    unexpected, flaky, stale, notes = [], [], [], []
    for m in methods:
        ref, fm = results[("multiprocessing", m)], results[("fastmp", m)]
        if not ref["outcomes"]:
            notes.append("%s: the stdlib run ran no test:\n%s" % (m, ref["log_tail"][-2000:]))
            status = 2
            continue
        for t in ref["not_run"]:
            notes.append("%s: %s not reached by the stdlib run (out of time)" % (m, t))
        differing = {}
        for t, out in ref["outcomes"].items():
            if out not in PASS:
                continue
            if args.pattern and args.pattern not in t:
                continue
            fout = fm["outcomes"].get(t, "not run")
            if fout in PASS or is_expected(expected, t):
                continue
            differing[t] = fout
        for _ in range(args.rerun):
            if not differing or cap() < 20:
                break
            again = run("fastmp", m, source, args.python, cap(), args.per_test,
                        ids=sorted(differing))
            for t in list(differing):
                if again["outcomes"].get(t) in PASS:
                    flaky.append((m, t, differing.pop(t)))
                elif t in again["details"]:
                    fm["details"][t] = again["details"][t]
        for t, fout in sorted(differing.items()):
            unexpected.append((m, t, fout, fm["details"].get(t, "")))
        for e, reason in expected.items():
            hits = [t for t in fm["outcomes"] if generic(t) == e or generic(t).endswith("." + e)]
            if hits and all(fm["outcomes"][t] in PASS for t in hits):
                stale.append((m, e, reason))

    for n in notes:
        print("note:", n)
    for m, t, out in flaky:
        print("FLAKY (%s with fastmp, passed when run again): %s %s" % (out, m, t))
    for m, t, reason in stale:
        print("STALE expected entry (passes with fastmp now): %s %s" % (m, t))
    if unexpected:
        print("\nUNEXPECTED DIFFERENCES (pass with the stdlib, not with fastmp):")
        for m, t, out, detail in unexpected:
            print("  %-10s %-8s %s" % (m, out, t))
            if detail:
                print("\n".join("        " + ln for ln in detail.rstrip().splitlines()[-10:]))
        status = max(status, 1)
    print("futures_compare: %s, %d differences, in %.0fs"
          % ({0: "OK", 1: "FAILED", 2: "ERROR"}[status], len(unexpected), time.monotonic() - t0))
    return status


if __name__ == "__main__":
    sys.exit(main())
