"""Shared fixtures: the implementation under test, start methods, process cleanup, /dev/shm hygiene.

The same behavioural tests run against the stdlib (the reference) and fastmp:

* ``mp``   the module: ids ``stdlib`` and ``fastmp``;
* ``ctx``  a context per (module, start method): ids ``stdlib-fork`` ... ``fastmp-forkserver``.

``FASTMP_TEST_METHODS`` (comma-separated, e.g. ``fork``) limits the start methods the ``ctx`` and
``fastmp_ctx`` fixtures (and tests that parametrize over ``METHODS``) run: CI's runs on the other
Python versions use ``fork`` only.  Unset or empty: all three.

If fastmp (or fastmp.synchronize) does not import, every fastmp param FAILS rather than skips,
so CI notices.
"""
import importlib
import os
import re
import signal
import subprocess
import sys
import time

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    # Process targets live in tests/_sync_*.py; spawn and forkserver children import them by
    # name, and they inherit the parent's sys.path.
    sys.path.insert(0, TESTS_DIR)

IMPLS = ("stdlib", "fastmp")
ALL_METHODS = ("fork", "spawn", "forkserver")


def _methods_from_env():
    raw = os.environ.get("FASTMP_TEST_METHODS", "")
    chosen = tuple(m.strip() for m in raw.split(",") if m.strip())
    if not chosen:
        return ALL_METHODS
    unknown = [m for m in chosen if m not in ALL_METHODS]
    if unknown:
        raise pytest.UsageError(f"FASTMP_TEST_METHODS={raw!r}: unknown start method(s) "
                                f"{unknown}; choose from {', '.join(ALL_METHODS)}")
    return tuple(m for m in ALL_METHODS if m in chosen)


METHODS = _methods_from_env()
SHM_DIR = "/dev/shm"
SHM_PREFIX = "fastmp-"


def load_impl(name):
    """The module under test, or a test failure (never a skip) when fastmp is broken."""
    if name == "stdlib":
        import multiprocessing
        import multiprocessing.synchronize  # noqa: F401  (fails here if sem_open is missing)
        return multiprocessing
    try:
        module = importlib.import_module("fastmp")
        importlib.import_module("fastmp.synchronize")
    except Exception as exc:  # any import failure, not only ImportError
        pytest.fail(f"import fastmp / fastmp.synchronize failed: {exc!r}", pytrace=False)
    return module


@pytest.fixture(params=IMPLS)
def mp(request):
    """The multiprocessing-like module under test (default context)."""
    return load_impl(request.param)


@pytest.fixture(params=[(i, m) for i in IMPLS for m in METHODS],
                ids=[f"{i}-{m}" for i in IMPLS for m in METHODS])
def ctx(request):
    """A context of the module under test for one start method."""
    impl, method = request.param
    return load_impl(impl).get_context(method)


@pytest.fixture(params=METHODS, ids=[f"fastmp-{m}" for m in METHODS])
def fastmp_ctx(request):
    """fastmp only (for what the stdlib cannot do, e.g. recover a lock from a dead holder)."""
    return load_impl("fastmp").get_context(request.param)


@pytest.fixture
def procs():
    """Track started processes; at teardown kill any still running (a failed test must not
    leave a child blocked forever) and reap them."""
    started = []
    yield started
    for p in started:
        if p.pid is not None and p.exitcode is None:
            p.join(0.5)
            if p.exitcode is None:
                p.kill()
                p.join(5)


# ---------------------------------------------------------------- helpers the test files share

def is_fastmp(ctx):
    """Whether a context (or a module) is fastmp's rather than the stdlib's."""
    module = ctx.__name__ if isinstance(ctx, type(os)) else type(ctx).__module__
    return module.startswith("fastmp")


def start(procs, ctx, target, *args):
    """Start ctx.Process(target, args) and add it to `procs` (the fixture reaps it)."""
    p = ctx.Process(target=target, args=args)
    p.start()
    procs.append(p)
    return p


def join_ok(p, expected=0, timeout=60.0):
    """Join a child that should end within `timeout` with exit code `expected`."""
    p.join(timeout)
    assert p.exitcode is not None, "child did not end"
    assert p.exitcode == expected


def shm_gone_within(names, seconds):
    """Wait until none of `names` is in /dev/shm any more; what is left after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        left = names & shm_entries()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


@pytest.fixture
def manager(mp):
    """A started Manager of the implementation under test, shut down after the test."""
    m = mp.Manager()
    yield m
    m.shutdown()


@pytest.fixture
def ctx_manager(ctx):
    """(ctx, a started ctx.Manager()), the manager shut down after the test."""
    m = ctx.Manager()
    yield ctx, m
    m.shutdown()


def run_shm_program(tmp_path, source, mode, timeout=60.0):
    """Run the program `source` with fastmp (its argv[1] is `mode`).  It prints "SHM <name>"
    for each fastmp segment it maps and, in mode "kill", "READY" before it sleeps: then it is
    SIGKILLed (the segments it printed must still exist then).  Returns (names, output) once
    it is gone: the segments it named, and everything it printed."""
    fastmp = load_impl("fastmp")
    where = os.path.dirname(os.path.dirname(os.path.abspath(fastmp.__file__)))
    script = tmp_path / "shm_program.py"
    script.write_text(source)
    out = tmp_path / "shm_program.out"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (where, env.get("PYTHONPATH")) if p)
    with open(out, "w") as f:
        proc = subprocess.Popen([sys.executable, str(script), mode], stdout=f,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=str(tmp_path))

    def names():
        return {ln.split(None, 1)[1] for ln in out.read_text().splitlines()
                if ln.startswith("SHM ")}
    try:
        if mode == "kill":
            deadline = time.monotonic() + timeout
            while "READY" not in out.read_text():
                assert proc.poll() is None, out.read_text()
                assert time.monotonic() < deadline, out.read_text()
                time.sleep(0.05)
            assert names() <= shm_entries(), out.read_text()
            os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout) == (-signal.SIGKILL if mode == "kill" else 0), out.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return names(), out.read_text()


# ---------------------------------------------------------------- /dev/shm hygiene

def shm_entries():
    try:
        return {n for n in os.listdir(SHM_DIR) if n.startswith(SHM_PREFIX)}
    except FileNotFoundError:
        return set()


_MAPS_RE = re.compile(r"/dev/shm/(" + re.escape(SHM_PREFIX) + r"\S+)")


def shm_mapped_by_live_processes(but_self=False):
    """fastmp-* segments some live process still maps: in use, so not (yet) a leak.  This also
    keeps a concurrent test run on the same machine from being blamed on this one.  With
    but_self, the ones that processes other than this one map."""
    mapped = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or (but_self and int(pid) == os.getpid()):
            continue
        try:
            with open(f"/proc/{pid}/maps") as f:
                mapped.update(_MAPS_RE.findall(f.read()))
        except OSError:
            continue
    return mapped


@pytest.fixture(scope="session", autouse=True)
def dev_shm_clean():
    """Fail the session (an ERROR at teardown of the last test) if it left new fastmp-* files
    in /dev/shm that no live process maps any more.  Segments still mapped (for example by this
    pytest process, which fastmp cleans at exit) are checked by tests/test_zz_shm_clean.py,
    which runs fresh interpreters to completion.

    With FASTMP_SHM_LEAKS_FILE set (.ci/run sets it), the names are written there instead, and
    the caller checks them once this process and its resource tracker have exited: a segment
    of a process killed while it held a queue is removed by the tracker at exit, which is
    fastmp's promise (nothing left after the program), not before."""
    before = shm_entries()
    yield
    deadline = time.monotonic() + 5.0  # a tracker process may need a moment after a crash
    while True:
        leaked = shm_entries() - before - shm_mapped_by_live_processes()
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if leaked:
        msg = (f"the test session leaked {len(leaked)} /dev/shm entries: {sorted(leaked)} "
               "(new since the session began and mapped by no live process; a concurrent "
               "fastmp test run on this machine could also have left them)")
        print("\n" + msg, file=sys.stderr)
        leaks_file = os.environ.get("FASTMP_SHM_LEAKS_FILE")
        if not leaks_file:
            raise AssertionError(msg)
        with open(leaks_file, "a") as f:
            f.write("".join(name + "\n" for name in sorted(leaked)))


# ---------------------------------------------------------------- pytest-timeout optional

def pytest_addoption(parser, pluginmanager):
    # pyproject sets `timeout` and the tests use @pytest.mark.timeout; without the plugin
    # both would warn (and warnings are errors here).  With it, this does nothing.
    if not pluginmanager.hasplugin("timeout"):
        parser.addini("timeout", "per-test timeout (pytest-timeout is not installed)")


def pytest_configure(config):
    if not config.pluginmanager.hasplugin("timeout"):
        config.addinivalue_line("markers",
                                "timeout(seconds): per-test timeout (needs pytest-timeout)")
