#!/usr/bin/env python3
"""Run CPython's own multiprocessing test suite against fastmp or against the stdlib.

    python tests/cpython/run_suite.py --lib fastmp --method spawn
    python tests/cpython/run_suite.py --lib multiprocessing --method fork --json out.json
    python tests/cpython/run_suite.py --lib fastmp --method fork WithProcessesTestLock.test_lock

The suite is the interpreter's own ``test/_test_multiprocessing.py``; nothing of it is kept in
this repository.  Each run copies it into a fresh temp dir, together with the helpers it runs
as scripts or imports by name:

* ``mp_fork_bomb.py``  run as a script (TestNoForkBomb);
* ``mp_preload.py``    run as a script, and imported as ``test.mp_preload`` (forkserver preload);
* ``test_multiprocessing_<method>.py``: the per-method driver, as CPython has it
  (``install_tests_in_module_dict(globals(), method)``); written here, not copied, and
  preloaded by name by the forkserver (``PRELOAD`` in the suite).

The copies live in a package named ``test`` in the temp dir, placed first on PYTHONPATH, whose
``__path__`` continues with the interpreter's own ``test`` package.  So every module keeps the
name CPython gives it (``test._test_multiprocessing``, ``test.test_multiprocessing_spawn``,
``test.mp_preload``: the suite and spawned children import them by these names) while
``test.support`` and the rest come from the interpreter.

For ``--lib fastmp`` the copies are rewritten so that every use of the module
``multiprocessing`` is a use of ``fastmp`` (see ``rewrite_source``): the name in code
(imports, attribute uses), and in string literals that are code or module paths (inline
scripts run in subprocesses, ``mock.patch`` targets, module names built for ``__import__``).
Messages are left alone where the text is the library's own (``KEEP_STRINGS``).  The
``multiprocessing`` run copies the files unchanged: its result is the stdlib's own.

Both run with a throwaway venv over the interpreter (no site-packages of its own) whose
``.pth`` puts the temp dir first on every interpreter's ``sys.path`` and, for fastmp, adds
fastmp's directory.  So the interpreters the suite starts isolated (``-I``: scripts,
``mp_preload``'s forkserver) import the copies and fastmp too.  The one command run with
``-E -S`` (no site at all: TestFlags) gets the same paths prepended in its text.

The suite runs with unittest (as CPython's regrtest does, through the driver) in a
subprocess in a session of its own, with cwd and TMPDIR inside the temp dir.  A watchdog
(faulthandler: dump every thread, exit) ends a test that hangs past ``--per-test`` s; that
test, or one that crashes the interpreter, is an error, and the run goes on with the tests
after it in a new process, all within ``--timeout`` s.  Afterwards every process left in the
session is ended (the resource trackers last, so that they still unlink what they track),
the temp dir is removed, fastmp segments left unmapped in /dev/shm are removed and reported,
and other new entries there are reported.

The result (``--json``) has one outcome per test id (``Class.test_name``, or
``setUpClass (Class)`` for a fixture's error): pass, fail, error, skip, xfail, xpass (the
worst of a test's subtests), with tracebacks and durations; and counts per test: run,
passed, failed, errors, skipped (unittest's own counts too, for a run in one process).
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tokenize
import io

METHODS = ("fork", "spawn", "forkserver")
LIBS = ("fastmp", "multiprocessing")
SUITE = "_test_multiprocessing.py"
HELPER_SCRIPTS = ("mp_fork_bomb.py", "mp_preload.py")
SHM_PREFIX = "fastmp-"      # fastmp's segments in /dev/shm
DEFAULT_TIMEOUT = 900       # s, a whole run
DEFAULT_PER_TEST = 120      # s, one test (the stdlib's slowest take about 5 s)
LAUNCHER_PKG = "_fastmp_cpython_suite"

# String literals of the suite that keep the word "multiprocessing" in the fastmp variant:
# text that the library itself produces and that the test compares (fastmp reuses the
# stdlib's Pool, whose ResourceWarning says this; a drop-in keeps the message).
KEEP_STRINGS = {
    "'unclosed running multiprocessing pool'",
}

# The driver CPython ships as test/test_multiprocessing_<method>.py (3.11's form).
DRIVER = '''\
# Written by fastmp's tests/cpython/run_suite.py: CPython's driver for one start method.
import unittest
import test._test_multiprocessing
import sys
from test import support

if support.PGO:
    raise unittest.SkipTest("test is not helpful for PGO")

test._test_multiprocessing.install_tests_in_module_dict(globals(), {method!r})

if __name__ == '__main__':
    unittest.main()
'''

# The stand-in for the `test` package: the copies first, then the interpreter's own package.
TEST_PACKAGE_INIT = '''\
# Written by fastmp's tests/cpython/run_suite.py.  Modules in this directory (copies of
# CPython's multiprocessing suite) come first; test.support and everything else come from
# the interpreter's own test package.
__path__.append({real_test_dir!r})
'''

# Runs inside the suite's interpreter as `python -m _fastmp_cpython_suite` (a package
# __main__, so spawned children do not re-import it, as with CPython's regrtest).
LAUNCHER = r'''
import faulthandler
import importlib
import json
import signal
import sys
import time
import unittest


class JsonLinesResult(unittest.TextTestResult):
    """unittest's text result, plus one JSON line per event, flushed at once, so that a
    run cut short (a hang, a crash) still tells what finished and what was running.  A
    watchdog (faulthandler: dump every thread, then exit) is re-armed at every test's start
    and end, so a hang in a test or in a class fixture ends the run after `per_test` s."""

    out = None        # the open events file
    prefix = ""       # the driver module's name + "."
    per_test = 0.0
    _signals = None

    def _tid(self, test):
        tid = test.id() if hasattr(test, "id") else str(test)
        return tid.replace(self.prefix, "")

    @classmethod
    def _event(cls, **kw):
        kw["t"] = round(time.monotonic(), 3)
        cls.out.write(json.dumps(kw) + "\n")
        cls.out.flush()

    def _err(self, err, test):
        if not err:
            return ""
        try:
            text = self._exc_info_to_string(err, test)
        except Exception:
            import traceback
            text = "".join(traceback.format_exception(*err))
        return text[-6000:]

    def _arm(self):
        if self.per_test > 0:
            faulthandler.dump_traceback_later(self.per_test, exit=True)

    def _check_signals(self, test):
        """Note a test that leaves the main thread's signal mask or SIGINT's handler
        changed (the suite sends itself SIGINT and expects KeyboardInterrupt)."""
        state = (sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
                 repr(signal.getsignal(signal.SIGINT)))
        if self._signals is not None and state != self._signals:
            self._event(event="note", id=self._tid(test),
                        detail="signal mask / SIGINT handler changed: %r -> %r"
                        % (self._signals, state))
        type(self)._signals = state

    def startTest(self, test):
        self._arm()
        self._check_signals(test)
        self._event(event="start", id=self._tid(test))
        super().startTest(test)

    def stopTest(self, test):
        super().stopTest(test)
        self._check_signals(test)
        self._arm()

    def addSuccess(self, test):
        super().addSuccess(test)
        self._event(event="outcome", id=self._tid(test), outcome="pass")

    def addFailure(self, test, err):
        detail = self._err(err, test)
        super().addFailure(test, err)
        self._event(event="outcome", id=self._tid(test), outcome="fail", detail=detail)

    def addError(self, test, err):
        detail = self._err(err, test)
        super().addError(test, err)
        self._event(event="outcome", id=self._tid(test), outcome="error", detail=detail)

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._event(event="outcome", id=self._tid(test), outcome="skip", detail=str(reason))

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._event(event="outcome", id=self._tid(test), outcome="xfail")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._event(event="outcome", id=self._tid(test), outcome="xpass")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            failed = issubclass(err[0], test.failureException)
            self._event(event="outcome", id=self._tid(test),
                        outcome="fail" if failed else "error",
                        detail=str(subtest) + "\n" + self._err(err, test))


def _ids(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from _ids(t)
        else:
            yield t.id()


def main():
    method, events_path, per_test, names_path = sys.argv[1:5]
    # As an interactive run has it: a shell starts background jobs with SIGINT ignored,
    # and the suite sends itself SIGINT expecting KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    faulthandler.enable(all_threads=True)
    modname = "test.test_multiprocessing_" + method
    module = importlib.import_module(modname)
    loader = unittest.TestLoader()
    names = []
    if names_path != "-":
        with open(names_path) as f:
            names = [n.strip() for n in f if n.strip()]
    if names:
        suite = loader.loadTestsFromNames([modname + "." + n for n in names])
    else:
        suite = loader.loadTestsFromModule(module)
    with open(events_path, "w", encoding="utf-8") as out:
        JsonLinesResult.out = out
        JsonLinesResult.prefix = modname + "."
        JsonLinesResult.per_test = float(per_test)
        JsonLinesResult._event(event="plan",
                               ids=[i.replace(modname + ".", "") for i in _ids(suite)])
        runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=2,
                                         resultclass=JsonLinesResult)
        result = runner.run(suite)
        from test import support
        JsonLinesResult._event(event="done", run=result.testsRun,
                               failures=len(result.failures), errors=len(result.errors),
                               skipped=len(result.skipped),
                               expected_failures=len(result.expectedFailures),
                               unexpected_successes=len(result.unexpectedSuccesses),
                               env_altered=bool(support.environment_altered))
    faulthandler.cancel_dump_traceback_later()


if __name__ == "__main__":
    main()
'''


# ---------------------------------------------------------------------------- rewriting

_WORD = re.compile(r"\bmultiprocessing\b")


def rewrite_source(text, new="fastmp"):
    """The module name `multiprocessing` -> `new` in Python source `text`.

    Tokens, not text: NAME tokens `multiprocessing` (imports, attribute uses, `import ... as`)
    are renamed; `_multiprocessing` and `test_multiprocessing` are other names and stay.
    String literals are rewritten word-wise (inline scripts, mock.patch targets, module names
    for __import__, f-string expressions) except KEEP_STRINGS.  Comments stay as they are.
    Returns (new_text, list of (line, before, after)).
    """
    lines = text.splitlines(keepends=True)
    edits = []      # (row, col_start, col_end, replacement) on the original text
    changes = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.NAME and tok.string == "multiprocessing":
            edits.append((tok.start, tok.end, new))
            changes.append((tok.start[0], tok.string, new))
        elif tok.type == tokenize.STRING and _WORD.search(tok.string):
            if tok.string in KEEP_STRINGS:
                continue
            replaced = _WORD.sub(new, tok.string)
            edits.append((tok.start, tok.end, replaced))
            changes.append((tok.start[0], tok.string, replaced))
    # apply from the end, so earlier positions stay valid
    for (srow, scol), (erow, ecol), repl in sorted(edits, reverse=True):
        head = lines[srow - 1][:scol]
        tail = lines[erow - 1][ecol:]
        lines[srow - 1:erow] = [head + repl + tail]
    return "".join(lines), changes


def rewrite_suite(text, lib, entry_paths):
    """The suite's text for `lib`.  `entry_paths`: what a `-E -S` interpreter needs on
    sys.path to import the copy and fastmp."""
    if lib == "multiprocessing":
        return text, []
    new, changes = rewrite_source(text)
    for keep in KEEP_STRINGS:
        if keep not in text:
            sys.stderr.write("run_suite: warning: %s is no longer in the suite; review "
                             "KEEP_STRINGS\n" % keep)
    # TestFlags runs `python -E -S -O -c "from test._test_multiprocessing import ..."`:
    # neither PYTHONPATH nor site-packages, so without a path the stdlib's original suite
    # (testing the stdlib) would be imported there.
    old = "prog = ('from test._test_multiprocessing import TestFlags; ' +"
    if old not in new:
        raise SetupError("TestFlags' command line not found in the suite; "
                         "update rewrite_suite for this CPython version")
    prefix = "import sys; sys.path[:0] = %r; " % (list(entry_paths),)
    new = new.replace(old, "prog = (%r + 'from test._test_multiprocessing import "
                           "TestFlags; ' +" % prefix)
    changes.append((0, old, "(TestFlags: sys.path prefix)"))
    return new, changes


def check_rewrite(text, name):
    """The rewritten file still compiles (a SyntaxError here beats 380 confusing errors)."""
    try:
        compile(text, name, "exec")
    except SyntaxError as e:
        raise SetupError("the rewritten %s does not compile: %s" % (name, e))


# ---------------------------------------------------------------------------- environment

def stdlib_test_dir(python):
    out = subprocess.run(
        [python, "-I", "-c",
         "import os, test; print(os.path.dirname(os.path.abspath(test.__file__)))"],
        capture_output=True, text=True, check=True, cwd="/")
    return out.stdout.strip()


def fastmp_location(python, env):
    """Directory holding the fastmp package that `python` imports with `env` (None if it
    does not import, with its compiled core)."""
    proc = subprocess.run(
        [python, "-c", "import os, fastmp, fastmp._core; "
                       "print(os.path.dirname(os.path.dirname(os.path.abspath("
                       "fastmp.__file__))))"],
        capture_output=True, text=True, cwd="/", env=env)
    if proc.returncode != 0:
        return None
    return os.path.realpath(proc.stdout.strip())


def make_venv(python, where, workdir, fastmp_dir):
    """A venv over `python`'s installation (no site-packages of its own) whose every
    interpreter, isolated ones (-I) included, finds the copies in `workdir` first (the `test`
    package) and, if given, fastmp in `fastmp_dir`."""
    subprocess.run([python, "-m", "venv", "--without-pip", where],
                   check=True, capture_output=True, cwd="/")
    vpy = os.path.join(where, "bin", "python")
    site = subprocess.run([vpy, "-I", "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True, cwd="/").stdout.strip()
    lines = [fastmp_dir] if fastmp_dir else []
    # a .pth line that starts with "import" is run by site.py
    lines.append("import sys; sys.path.insert(0, %r)" % workdir)
    with open(os.path.join(site, "_fastmp_cpython_suite.pth"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return vpy


def prepare(workdir, lib, method, python):
    """Write the package `test` (copies, rewritten for `lib`), the driver and the launcher
    into `workdir`, and the venv to run them with.  Returns (python to run, env, rewrites)."""
    real = stdlib_test_dir(python)
    env = dict(os.environ)
    for var in ("PYTHONHOME", "PYTHONSAFEPATH", "PYTHONSTARTUP", "PYTHONINSPECT",
                "PYTHONWARNINGS", "PYTHONNOUSERSITE", "VIRTUAL_ENV"):
        env.pop(var, None)
    fastmp_dir = None
    entry_paths = [workdir]
    if lib == "fastmp":
        fastmp_dir = fastmp_location(python, env)
        if fastmp_dir is None:
            raise SetupError("%s cannot import fastmp (and fastmp._core): build "
                             "and install it, or set PYTHONPATH" % python)
        entry_paths.append(fastmp_dir)
    run_python = make_venv(python, os.path.join(workdir, "venv"), workdir, fastmp_dir)
    pkg = os.path.join(workdir, "test")
    os.makedirs(pkg)
    with open(os.path.join(pkg, "__init__.py"), "w") as f:
        f.write(TEST_PACKAGE_INIT.format(real_test_dir=real))
    with open(os.path.join(real, SUITE), encoding="utf-8") as f:
        suite = f.read()
    suite, changes = rewrite_suite(suite, lib, entry_paths)
    if lib == "fastmp":
        check_rewrite(suite, SUITE)
    with open(os.path.join(pkg, SUITE), "w", encoding="utf-8") as f:
        f.write(suite)
    for name in HELPER_SCRIPTS:
        with open(os.path.join(real, name), encoding="utf-8") as f:
            text = f.read()
        if lib == "fastmp":
            text, _ = rewrite_source(text)
            check_rewrite(text, name)
        with open(os.path.join(pkg, name), "w", encoding="utf-8") as f:
            f.write(text)
    for m in METHODS:
        with open(os.path.join(pkg, "test_multiprocessing_%s.py" % m), "w") as f:
            f.write(DRIVER.format(method=m))
    launcher = os.path.join(workdir, LAUNCHER_PKG)
    os.makedirs(launcher)
    open(os.path.join(launcher, "__init__.py"), "w").close()
    with open(os.path.join(launcher, "__main__.py"), "w") as f:
        f.write(LAUNCHER)
    for d in ("cwd", "tmp"):
        os.makedirs(os.path.join(workdir, d))
    # PYTHONPATH: only the copies (fastmp comes through the venv's .pth, as installed)
    env["PYTHONPATH"] = workdir
    env["TMPDIR"] = os.path.join(workdir, "tmp")
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return run_python, env, changes


# ---------------------------------------------------------------------------- processes

def _proc_stat(pid):
    """(ppid, pgid, session) of `pid`, or None."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[2]), int(fields[3])


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def session_members(sid):
    """Live (not zombie) processes of session `sid`."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _proc_stat(int(entry))
            if st is not None and st[2] == sid:
                pids.append(int(entry))
    return pids


def _kill(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _wait_empty(sid, seconds, keep=lambda pid: False):
    deadline = time.monotonic() + seconds
    while True:
        left = [p for p in session_members(sid) if not keep(p)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)


def end_session(sid):
    """End what is left of session `sid` (its leader has exited).  Resource trackers go
    last: they exit, unlinking what they track, once every process holding their pipe is
    gone.  Returns the command lines of the processes that had to be killed."""
    killed = []
    left = _wait_empty(sid, 5.0)
    if not left:
        return killed

    def is_tracker(pid):
        return "resource_tracker" in _cmdline(pid)

    others = [p for p in left if not is_tracker(p)]
    killed += [_cmdline(p) for p in others]
    _kill(others, signal.SIGKILL)
    _wait_empty(sid, 5.0, keep=is_tracker)
    left = _wait_empty(sid, 10.0)
    killed += [_cmdline(p) for p in left]
    _kill(left, signal.SIGKILL)
    _wait_empty(sid, 5.0)
    return killed


# ---------------------------------------------------------------------------- /dev/shm

def shm_entries():
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


def shm_mapped():
    """Names in /dev/shm that some process maps (those are in use, maybe not ours)."""
    used = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/maps" % entry) as f:
                for line in f:
                    i = line.find("/dev/shm/")
                    if i >= 0:
                        used.add(line[i + 9:].split(" (deleted)")[0].strip())
        except OSError:
            pass
    return used


def reap_fastmp_segments(before, min_age=2.0):
    """Remove fastmp's segments that appeared since `before` and that no process maps, and
    return their names.  fastmp unlinks a segment when its last user is done, and the
    resource tracker after a crash; what is left unmapped is garbage.  The suite leaves
    some when a run ends abnormally (a hang, a kill) after TestResourceTracker has killed
    the tracker that held their registrations.  Others' files are left alone: only
    fastmp-* names, new during this run, untouched for `min_age` s."""
    removed = []
    new = [n for n in shm_entries() - before if n.startswith(SHM_PREFIX)]
    if not new:
        return removed
    mapped = shm_mapped()
    now = time.time()
    for name in sorted(new):
        path = os.path.join("/dev/shm", name)
        try:
            if name in mapped or now - os.stat(path).st_mtime < min_age:
                continue
            os.unlink(path)
            removed.append(name)
        except OSError:
            pass
    return removed


# ---------------------------------------------------------------------------- results

_RANK = {"pass": 0, "xfail": 0, "skip": 1, "xpass": 2, "fail": 3, "error": 4}


def parse_events(path):
    """One process's events file, as a dict: plan (test ids, in order), outcomes {id:
    outcome} (the worst of a test's reports: a failing subtest fails the test), details {id:
    traceback text, or skip reason}, durations {id: seconds}, notes [(id, text)], done (the
    final event, or None), running (the test that started and did not finish, or None)."""
    res = {"plan": [], "outcomes": {}, "details": {}, "durations": {}, "notes": [],
           "done": None, "running": None}
    outcomes, details = res["outcomes"], res["details"]
    started, skips = {}, {}
    try:
        f = open(path, encoding="utf-8")
    except OSError:
        return res
    with f:
        for line in f:
            try:
                ev = json.loads(line)
            except ValueError:
                continue        # a line cut short by a kill
            kind, tid = ev["event"], ev.get("id")
            if kind == "plan":
                res["plan"] = ev["ids"]
            elif kind == "start":
                res["running"] = tid
                started[tid] = ev["t"]
            elif kind == "outcome":
                out = ev["outcome"]
                if tid == res["running"]:
                    res["running"] = None
                if tid in started:
                    res["durations"][tid] = round(ev["t"] - started[tid], 2)
                if tid not in outcomes or _RANK[out] > _RANK[outcomes[tid]]:
                    outcomes[tid] = out
                if ev.get("detail"):
                    if out == "skip":
                        skips[tid] = ev["detail"]
                    else:
                        details[tid] = details.get(tid, "") + ev["detail"]
            elif kind == "note":
                res["notes"].append((tid, ev["detail"]))
            elif kind == "done":
                res["done"] = ev
    for tid, reason in skips.items():
        if outcomes.get(tid) == "skip":
            details[tid] = "skipped: " + reason
    return res


_live = set()                   # session leaders of the suites running now
_live_lock = threading.Lock()
_stopping = threading.Event()   # set by kill_live_sessions: start no more suites


class SetupError(Exception):
    """The suite could not be prepared (fastmp not importable, an unexpected suite text)."""


class Stopped(Exception):
    """The run was stopped by kill_live_sessions."""


def kill_live_sessions():
    """Kill every suite process still running, and start no more (from any thread); each
    run then ends what is left of its session and removes its temp dir as usual."""
    with _live_lock:
        _stopping.set()
        pids = list(_live)
    _kill(pids, signal.SIGKILL)


def exit_on_signals():
    """SIGTERM/SIGHUP (CI's time cap) raise SystemExit in the main thread, so that the
    cleanup runs: the suites run in sessions of their own, out of reach of a kill sent to
    this process's group."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def _run_process(cmd, cwd, env, logpath, wait):
    """Run the suite's process in a session of its own, appending its output to `logpath`;
    after `wait` s kill it.  Returns (exit status, timed out?, killed leftovers)."""
    timed_out = False
    with _live_lock, open(logpath, "ab") as logf:
        if _stopping.is_set():
            raise Stopped()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=subprocess.STDOUT, start_new_session=True)
        _live.add(proc.pid)
    try:
        try:
            rc = proc.wait(max(wait, 1.0))
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill([proc.pid], signal.SIGKILL)
            rc = proc.wait()
    except BaseException:       # interrupted: leave nothing running
        _kill([proc.pid], signal.SIGKILL)
        proc.wait()
        end_session(proc.pid)
        raise
    finally:
        with _live_lock:
            _live.discard(proc.pid)
    return rc, timed_out, end_session(proc.pid)


def _log_since(logpath, offset, limit=4000):
    try:
        with open(logpath, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return ""
    return data[-limit:].decode("utf-8", "replace")


def run(lib, method, tests=(), timeout=DEFAULT_TIMEOUT, python=None, keep=False,
        log=None, per_test=DEFAULT_PER_TEST, max_restarts=8):
    """Run the suite (or `tests`); returns a result dict (see the module docstring).

    A test that hangs past `per_test` s, or that crashes the interpreter, is an error, and
    the run goes on with the tests after it in a new process (at most `max_restarts` times,
    all within `timeout` s overall)."""
    python = python or sys.executable
    workdir = tempfile.mkdtemp(prefix="fmcs-%s-%s-" % ("fm" if lib == "fastmp" else "mp",
                                                       method))
    result = {"lib": lib, "method": method, "tests": list(tests), "workdir": workdir,
              "outcomes": {}, "details": {}, "durations": {}, "notes": [], "killed": [],
              "processes": 0, "not_run": [], "aborted": []}
    t0 = time.monotonic()
    deadline = t0 + timeout
    shm_before = shm_entries()
    try:
        run_python, env, changes = prepare(workdir, lib, method, python)
        result["rewrites"] = len(changes)
        logpath = log or os.path.join(workdir, "suite.log")
        open(logpath, "wb").close()
        names = list(tests)
        plan = None
        while True:
            n = result["processes"]
            result["processes"] += 1
            events = os.path.join(workdir, "events-%d.jsonl" % n)
            names_path = "-"
            if names:
                names_path = os.path.join(workdir, "names-%d.txt" % n)
                with open(names_path, "w") as f:
                    f.write("\n".join(names) + "\n")
            log_offset = os.path.getsize(logpath)
            cmd = [run_python, "-X", "faulthandler", "-m", LAUNCHER_PKG, method, events,
                   str(per_test), names_path]
            rc, timed_out, killed = _run_process(cmd, os.path.join(workdir, "cwd"), env,
                                                 logpath, deadline - time.monotonic())
            result["killed"] += killed
            if _stopping.is_set():
                raise Stopped()
            ev = parse_events(events)
            if plan is None:
                plan = ev["plan"]
            for key in ("outcomes", "details", "durations"):
                result[key].update(ev[key])
            result["notes"] += ev["notes"]
            if ev["done"] is not None:
                result["env_altered"] = result.get("env_altered") or ev["done"]["env_altered"]
                if n == 0:
                    result["unittest_counts"] = {k: ev["done"][k] for k in (
                        "run", "failures", "errors", "skipped", "expected_failures",
                        "unexpected_successes")}
                break
            # cut short: blame the test that was running (or, in a fixture between tests,
            # the next one), then go on after it
            todo = [t for t in (ev["plan"] or names or plan or [])
                    if t not in result["outcomes"]]
            culprit = ev["running"] or (todo[0] if todo else None)
            why = ("the run's time cap (%ss) ran out" % timeout if timed_out else
                   "the suite's process ended (exit status %s): hung past the per-test "
                   "cap (%ss) or crashed" % (rc, per_test))
            if culprit is not None:
                result["aborted"].append(culprit)
                result["outcomes"][culprit] = "error"
                result["details"][culprit] = (
                    "%s while this test was running%s\n--- end of the output:\n%s"
                    % (why, "" if ev["running"] else " (or the fixtures before it)",
                       _log_since(logpath, log_offset)))
            todo = [t for t in todo if t != culprit]
            if timed_out or not todo or n >= max_restarts or time.monotonic() >= deadline:
                result["not_run"] = todo
                break
            names = todo
        if plan is None and not result["outcomes"]:
            result["setup_failure"] = _log_since(logpath, 0)
        result["counts"] = count_outcomes(result["outcomes"])
        result["done"] = not result["not_run"] and not result["aborted"] and \
            "setup_failure" not in result
        with open(logpath, "rb") as f:
            result["log_tail"] = f.read()[-20000:].decode("utf-8", "replace")
        if log:
            result["log"] = log
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
        result["shm_removed"] = reap_fastmp_segments(shm_before)
    result["seconds"] = round(time.monotonic() - t0, 1)
    new = shm_entries() - shm_before
    if new:
        new -= shm_mapped()
    result["shm_new"] = sorted(new)
    return result


def is_fixture(tid):
    """unittest reports an error in setUpClass/setUpModule/... as 'setUpClass (Class)'."""
    return " " in tid


def count_outcomes(outcomes):
    """Counts per test (a test with a failing subtest is one failure); fixture errors count
    as errors but not as tests run."""
    c = {"run": 0, "passed": 0, "failures": 0, "errors": 0, "skipped": 0,
         "expected_failures": 0, "unexpected_successes": 0}
    key = {"pass": "passed", "fail": "failures", "error": "errors", "skip": "skipped",
           "xfail": "expected_failures", "xpass": "unexpected_successes"}
    for tid, out in outcomes.items():
        if not is_fixture(tid):
            c["run"] += 1
        c[key[out]] += 1
    return c


def summary_line(res):
    c = res["counts"]
    extra = ""
    if res.get("setup_failure"):
        extra = "  SETUP FAILED"
    elif res["aborted"]:
        extra = "  (hung/crashed: %s)" % ", ".join(res["aborted"])
    if res["not_run"]:
        extra += "  NOT RUN: %d tests" % len(res["not_run"])
    return ("%-15s %-10s run %4d  passed %4d  failed %3d  errors %3d  skipped %3d  %6.1fs%s"
            % (res["lib"], res["method"], c["run"], c["passed"], c["failures"], c["errors"],
               c["skipped"], res["seconds"], extra))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lib", choices=LIBS, default="fastmp")
    ap.add_argument("--method", choices=METHODS, default="fork")
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                    help="time cap for the whole run, seconds (default %(default)s)")
    ap.add_argument("--per-test", type=float, default=DEFAULT_PER_TEST,
                    help="time cap for one test, seconds (default %(default)s)")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--json", help="write the result here")
    ap.add_argument("--log", help="keep the suite's output (unittest -v) in this file")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--show-rewrites", action="store_true",
                    help="print the rewrites made for the fastmp variant and exit")
    ap.add_argument("tests", nargs="*", help="Class or Class.test_name (default: all)")
    args = ap.parse_args(argv)
    exit_on_signals()
    if args.show_rewrites:
        import difflib
        real = stdlib_test_dir(args.python)
        for name in (SUITE,) + HELPER_SCRIPTS:
            with open(os.path.join(real, name), encoding="utf-8") as f:
                before = f.read()
            if name == SUITE:
                after, _ = rewrite_suite(before, "fastmp", ["<workdir>", "<fastmp dir>"])
            else:
                after = rewrite_source(before)[0]
            sys.stdout.writelines(difflib.unified_diff(
                before.splitlines(True), after.splitlines(True), name, name + " (fastmp)",
                n=0))
        return 0
    try:
        res = run(args.lib, args.method, args.tests, args.timeout, args.python, args.keep,
                  args.log, args.per_test)
    except SetupError as e:
        print("run_suite: %s" % e)
        return 2
    for tid, out in sorted(res["outcomes"].items()):
        if out in ("fail", "error", "xpass"):
            print("%s: %s" % (out.upper(), tid))
    print(summary_line(res))
    if res["killed"]:
        print("processes left after the suite, killed: %d" % len(res["killed"]))
        for c in res["killed"]:
            print("   ", c[:200])
    for tid, text in res["notes"]:
        print("note: after %s: %s" % (tid, text))
    if res["shm_new"]:
        print("new entries in /dev/shm: %s" % " ".join(res["shm_new"]))
    if res["shm_removed"]:
        print("fastmp segments left in /dev/shm (removed): %s" % " ".join(res["shm_removed"]))
    if res.get("setup_failure"):
        print(res["setup_failure"])
    if args.keep:
        print("kept:", res["workdir"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1, sort_keys=True)
    c = res["counts"]
    ok = res["done"] and c["failures"] == 0 and c["errors"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
