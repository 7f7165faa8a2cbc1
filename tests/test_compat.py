"""Drop-in details, with the stdlib as the reference (ids stdlib / fastmp where both run):

* the submodules a program reaches as attributes (``multiprocessing.util.Finalize``) after the
  stdlib would have bound them;
* a shared ctypes object given to a pool as a task argument: the stdlib's RuntimeError;
* a pool left by its ``with`` block after large task arguments: nothing on stderr, nothing left
  in /dev/shm;
* a resource tracker killed and relaunched mid-program: nothing of the program's left in
  /dev/shm, whether it then exits or is killed;
* the C sources keep every Python-version test in csrc/compat.h.

The first four run fresh interpreters, so that what this pytest process already imported or
made does not get in the way.
"""
import copy
import glob
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import load_impl, shm_entries, shm_gone_within

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
WAIT = 60.0

pytestmark = pytest.mark.timeout(180)


def run_python(code_or_args, timeout=120, extra_env=None):
    """Run a fresh interpreter that imports the fastmp under test (installed, or an in-place
    build), from the tests directory; returns the CompletedProcess."""
    fastmp = load_impl("fastmp")
    where = os.path.dirname(os.path.dirname(os.path.abspath(fastmp.__file__)))
    env = dict(os.environ, **(extra_env or {}))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (where, TESTS_DIR, env.get("PYTHONPATH"))
                                        if p)
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else list(code_or_args)
    return subprocess.run([sys.executable] + args, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout, env=env, cwd=TESTS_DIR)


# ---------------------------------------------------------------- submodules as attributes

SUBMODULES = ("connection", "context", "dummy", "forkserver", "heap", "managers", "pool",
              "popen_fork", "popen_forkserver", "popen_spawn_posix", "process", "queues",
              "reduction", "resource_sharer", "resource_tracker", "shared_memory",
              "sharedctypes", "spawn", "synchronize", "util")

BOUND_SCRIPT = r"""
import importlib, json, sys
mp = importlib.import_module(sys.argv[1])
SUBMODULES = %r

def reachable():
    out = []
    for name in SUBMODULES:
        try:
            value = getattr(mp, name)
        except AttributeError:
            continue
        # the package's own submodule (fastmp.shared_memory is the stdlib's module object)
        if value is sys.modules.get(mp.__name__ + "." + name):
            out.append(name)
    return out

def pool():
    with mp.get_context("fork").Pool(1) as p:
        assert p.map(abs, [-1]) == [1]

def process():
    p = mp.get_context("fork").Process(target=abs, args=(1,))
    p.start()
    p.join()

def manager():
    m = mp.Manager()
    m.list([1])
    m.shutdown()

if __name__ == "__main__":
    steps = [("import", lambda: None), ("Lock", mp.Lock), ("Queue", mp.Queue),
             ("Value", lambda: mp.Value("i")), ("Pipe", mp.Pipe), ("Process", process),
             ("Pool", pool), ("Manager", manager)]
    seen = {}
    for step, run in steps:
        run()
        seen[step] = reachable()
    seen["Finalize"] = mp.util.Finalize.__module__ + "." + mp.util.Finalize.__name__
    print(json.dumps(seen))
""" % (SUBMODULES,)


def bound_after_steps(module_name):
    proc = run_python(["-c", BOUND_SCRIPT, module_name])
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def stdlib_bound():
    return bound_after_steps("multiprocessing")


def test_submodules_are_attributes_once_the_stdlib_binds_them(mp, stdlib_bound):
    # after each step, every submodule the stdlib has bound as an attribute by then is an
    # attribute of the module under test too (fastmp: its own submodule of that name)
    seen = bound_after_steps(mp.__name__)
    for step, names in stdlib_bound.items():
        if step == "Finalize":
            continue
        missing = sorted(set(names) - set(seen[step]))
        assert missing == [], f"after {step}: {mp.__name__}.{missing} are not attributes"
    assert {"util", "connection", "synchronize", "queues"} <= set(stdlib_bound["Queue"])
    assert seen["Finalize"] == "multiprocessing.util.Finalize"


def test_fastmp_submodule_attribute_is_the_submodule():
    proc = run_python(
        "import sys, fastmp\n"
        "assert fastmp.util is sys.modules['fastmp.util']\n"
        "assert fastmp.queues.Queue is not None and fastmp.connection.wait is not None\n"
        "try:\n"
        "    fastmp.no_such_module\n"
        "except AttributeError as e:\n"
        "    print(e)\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "module 'fastmp' has no attribute 'no_such_module'"


# ---------------------------------------------------------------- shared ctypes as task args

def _shared(mp, kind):
    if kind == "RawArray":
        return mp.RawArray("i", 3), "c_int_Array_3"
    if kind == "RawValue":
        return mp.RawValue("i", 3), "c_int"
    if kind == "RawArray-double":
        return mp.RawArray("d", [1.0, 2.0]), "c_double_Array_2"
    if kind == "Array":
        return mp.Array("i", 3), "SynchronizedArray"
    if kind == "Value":
        return mp.Value("d", 1.5), "Synchronized"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["RawArray", "RawValue", "RawArray-double", "Array", "Value"])
def test_shared_ctypes_task_argument_raises_the_stdlib_error(mp, kind):
    obj, type_name = _shared(mp, kind)
    message = f"^{type_name} objects should only be shared between processes through " \
              "inheritance$"
    with mp.get_context("fork").Pool(1) as pool:
        with pytest.raises(RuntimeError, match=message):
            pool.apply(len, (obj,))
        with pytest.raises(RuntimeError, match=message):
            pool.map(len, [obj])
        with pytest.raises(RuntimeError, match=message):
            pool.apply_async(len, (obj,)).get(WAIT)
        assert pool.apply(abs, (-3,)) == 3          # the pool is fine afterwards


@pytest.mark.parametrize("kind", ["RawArray", "RawValue"])
def test_raw_shared_ctypes_copy_is_private(mp, kind):
    obj, _ = _shared(mp, kind)
    if kind == "RawArray":
        obj[:] = [1, 2, 3]
    dup = copy.copy(obj)
    assert type(dup) is type(obj)
    assert bytes(dup) == bytes(obj)
    if kind == "RawArray":
        dup[0] = 9
        assert obj[0] == 1
    else:
        dup.value = 9
        assert obj.value == 3


def test_fastmp_raw_shared_ctypes_plain_pickle_says_why():
    fastmp = load_impl("fastmp")
    with pytest.raises(RuntimeError, match="^c_int_Array_3 objects should only be shared"):
        pickle.dumps(fastmp.RawArray("i", 3))
    with pytest.raises(RuntimeError, match="^c_long objects should only be shared"):
        pickle.dumps(fastmp.RawValue("l", 3))


def test_fastmp_raw_shared_ctypes_still_reach_a_spawned_child(procs):
    fastmp = load_impl("fastmp")
    ctx = fastmp.get_context("spawn")
    arr = fastmp.RawArray("i", [1, 2, 3])
    q = ctx.SimpleQueue()
    p = ctx.Process(target=_sum_into, args=(arr, q))
    procs.append(p)
    p.start()
    assert q.get() == 6
    p.join(WAIT)
    assert p.exitcode == 0


def _sum_into(arr, q):
    q.put(sum(arr))


# ---------------------------------------------------------------- pool left by `with`

POOL_SCRIPT = os.path.join(TESTS_DIR, "_compat_pool_script.py")


def _pool_script(mp, scenario, tmp_path, method=None):
    names = tmp_path / "names.txt"
    proc = run_python([POOL_SCRIPT, mp.__name__, scenario, str(names)] + ([method] if method
                                                                           else []))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "DONE"
    mine = {n.strip().lstrip("/") for n in names.read_text().split()} if names.exists() \
        else set()
    if mp.__name__ == "fastmp":
        assert mine                                  # large entries travelled in segments
    assert mine & shm_entries() == set()
    return proc.stderr


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_pool_with_block_large_arguments_is_quiet(mp, tmp_path, method):
    # every task done when the block ends: not a word from the resource tracker (in a spawned
    # or forkserver worker, the tracker is the parent's: the names it unlinks are its to hear)
    assert _pool_script(mp, "done", tmp_path, method) == ""


def test_pool_with_block_large_arguments_in_flight(mp, tmp_path):
    # the block ends while workers take tasks: a worker killed between taking a task and
    # unlinking its argument's segment leaves the file to the tracker (a "leaked" warning at
    # the end; a window of microseconds), but a segment is never unlinked twice, nor left
    stderr = _pool_script(mp, "inflight", tmp_path)
    assert "No such file or directory" not in stderr
    assert "Traceback" not in stderr


# ---------------------------------------------------------------- a relaunched tracker

TRACKER_SCRIPT = os.path.join(TESTS_DIR, "_compat_tracker_script.py")




@pytest.mark.parametrize("end", ["exit", "kill"])
def test_fastmp_relaunched_tracker_still_cleans_up(end, tmp_path):
    out_path = tmp_path / "out.txt"
    fastmp = load_impl("fastmp")
    where = os.path.dirname(os.path.dirname(os.path.abspath(fastmp.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (where, env.get("PYTHONPATH")) if p)
    # output to a file, not a pipe: the tracker keeps the write end open
    with open(out_path, "w") as out:
        proc = subprocess.Popen([sys.executable, TRACKER_SCRIPT, end], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=TESTS_DIR)
    try:
        if end == "kill":
            deadline = time.monotonic() + 100
            while "READY" not in out_path.read_text():
                assert proc.poll() is None, out_path.read_text()
                assert time.monotonic() < deadline, "the script never got ready"
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        else:
            assert proc.wait(100) == 0, out_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = out_path.read_text().splitlines()
    names = {ln.split(None, 1)[1] for ln in lines if ln.startswith("SHM ")}
    assert len(names) >= 5, lines        # arena, huge block, ring, spilled item, ... per round
    # the tracker (the relaunched one) unlinks what a killed program left; a normal exit
    # leaves nothing for it to do, so it reports no leak
    assert shm_gone_within(names, 15) == set()
    if end == "exit":
        assert lines[-1] == "DONE", lines
        assert [ln for ln in lines if not ln.startswith("SHM ") and ln != "DONE"] == []


# ---------------------------------------------------------------- one place for version tests

def test_version_checks_live_in_compat_h():
    csrc = os.path.join(os.path.dirname(TESTS_DIR), "csrc")
    if not os.path.isdir(csrc):
        pytest.skip("no csrc/ next to tests/ (an installed package without its sources)")
    offenders = []
    for path in sorted(glob.glob(os.path.join(csrc, "*.[ch]"))
                       + glob.glob(os.path.join(csrc, "core", "*.[ch]"))):
        if os.path.basename(path) == "compat.h":
            continue
        with open(path) as f:
            for no, line in enumerate(f, 1):
                if re.search(r"\bPY_VERSION_HEX\b", line):
                    offenders.append(f"{os.path.basename(path)}:{no}: {line.strip()}")
    assert offenders == []


# ---------------------------------------------------------------- FASTMP_TEST_METHODS

@pytest.mark.parametrize("value, expected", [
    ("fork", ["stdlib-fork", "fastmp-fork"]),
    ("spawn, fork", ["stdlib-fork", "stdlib-spawn", "fastmp-fork", "fastmp-spawn"]),
    ("", ["stdlib-fork", "stdlib-spawn", "stdlib-forkserver",
          "fastmp-fork", "fastmp-spawn", "fastmp-forkserver"]),
])
def test_test_methods_switch_limits_the_ctx_fixture(value, expected):
    proc = run_python(["-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                       os.path.join(TESTS_DIR, "test_futures.py"), "-k", "test_map_timeout"],
                      extra_env={"FASTMP_TEST_METHODS": value})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = re.findall(r"test_map_timeout\[([\w-]+)\]", proc.stdout)
    assert ids == expected


def test_test_methods_switch_rejects_unknown_methods():
    proc = run_python(["-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                       os.path.join(TESTS_DIR, "test_futures.py")],
                      extra_env={"FASTMP_TEST_METHODS": "fork,vfork"})
    assert proc.returncode != 0
    assert "unknown start method(s) ['vfork']" in proc.stdout + proc.stderr
