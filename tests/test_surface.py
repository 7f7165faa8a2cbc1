"""The drop-in surface: fastmp has multiprocessing's public names, signatures, exceptions,
contexts and submodules, and its start-method state is its own.

Tests that set a start method run in a fresh interpreter (subprocess), so this process's state
is untouched.
"""
import importlib
import inspect
import multiprocessing
import multiprocessing.managers
import multiprocessing.pool
import multiprocessing.queues
import multiprocessing.sharedctypes
import multiprocessing.synchronize
import os
import subprocess
import sys
import textwrap

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)  # spawn/forkserver children import _surface_targets by name

import _surface_targets as targets  # noqa: E402

import fastmp  # noqa: E402
import fastmp.context  # noqa: E402
import fastmp.pool  # noqa: E402

METHODS = ("fork", "spawn", "forkserver")
EXCEPTIONS = ("ProcessError", "BufferTooShort", "TimeoutError", "AuthenticationError")
SYNC_FACTORIES = ("Lock", "RLock", "Condition", "Semaphore", "BoundedSemaphore", "Event",
                  "Barrier")
SUBMODULES = ("context", "sharedctypes", "queues", "pool", "connection", "managers",
              "shared_memory", "dummy", "dummy.connection", "process", "util", "reduction",
              "heap", "resource_tracker", "resource_sharer", "spawn", "forkserver",
              "popen_fork", "popen_spawn_posix", "popen_forkserver")
WAIT = 30.0  # seconds; far above what any step here needs


def params(obj):
    """What a drop-in must keep of a callable's signature: names, kinds, defaults."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(obj).parameters.values()]


def has_signature(obj):
    """Callables other than exception classes (those are checked for identity instead)."""
    return callable(obj) and not (inspect.isclass(obj) and issubclass(obj, BaseException))


def run_python(code):
    """Run `code` in a fresh interpreter that imports the same fastmp as this process."""
    path = [os.path.dirname(os.path.dirname(os.path.abspath(fastmp.__file__))), TESTS_DIR]
    if os.environ.get("PYTHONPATH"):
        path.append(os.environ["PYTHONPATH"])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    # cwd: "-c" puts the current directory first on sys.path, and from the repo root that is
    # the source tree's fastmp (no compiled _core when the suite tests an installed build)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=60, cwd=TESTS_DIR)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(autouse=True)
def keep_start_methods():
    """Creating objects fixes the default start method (as in the stdlib); undo that, so the
    tests that run after these see the state they would have seen without them."""
    ours = fastmp.get_start_method(allow_none=True)
    theirs = multiprocessing.get_start_method(allow_none=True)
    yield
    fastmp.set_start_method(ours, force=True)
    multiprocessing.set_start_method(theirs, force=True)


# ---------------------------------------------------------------- top-level names

def test_all_stdlib_names_are_exported():
    missing = [n for n in multiprocessing.__all__ if not hasattr(fastmp, n)]
    assert missing == []
    assert set(multiprocessing.__all__) <= set(fastmp.__all__)
    namespace = {}
    exec("from fastmp import *", namespace)
    assert set(multiprocessing.__all__) <= set(namespace)


# fastmp's extensions of a factory: keyword-only arguments after the stdlib's, with defaults
# that change nothing (docs/usage.md)
EXTENSIONS = {"Pool": ("task_timeout", "max_memory_per_child")}


def params_without_extensions(obj, name):
    """params(obj) without the extensions of factory `name` (checked: keyword-only, None)."""
    ours = params(obj)
    extra = [p for p in ours if p[0] in EXTENSIONS.get(name, ())]
    assert all(kind == inspect.Parameter.KEYWORD_ONLY and default is None
               for _, kind, default in extra)
    return [p for p in ours if p not in extra]


@pytest.mark.parametrize("name", [n for n in multiprocessing.__all__
                                  if has_signature(getattr(multiprocessing, n))])
def test_signature_matches_stdlib(name):
    assert params_without_extensions(getattr(fastmp, name), name) == \
        params(getattr(multiprocessing, name))


@pytest.mark.parametrize("name", EXCEPTIONS)
def test_exceptions_are_the_stdlib_classes(name):
    assert getattr(fastmp, name) is getattr(multiprocessing, name)
    assert getattr(fastmp.context, name) is getattr(multiprocessing.context, name)
    assert getattr(fastmp.get_context("spawn"), name) is getattr(multiprocessing, name)


def test_module_constants():
    assert fastmp.__version__ == "0.1.0"
    assert (fastmp.SUBDEBUG, fastmp.SUBWARNING) == (multiprocessing.SUBDEBUG,
                                                    multiprocessing.SUBWARNING)
    assert fastmp.reducer is multiprocessing.reducer
    assert fastmp.cpu_count() == multiprocessing.cpu_count()
    assert fastmp.current_process() is multiprocessing.current_process()
    assert fastmp.parent_process() is None
    assert fastmp.get_logger() is multiprocessing.get_logger()


def test_spawning_helpers_are_the_stdlibs():
    # The stdlib Popen classes start fastmp's processes and mark "spawning" through these.
    for name in ("assert_spawning", "get_spawning_popen", "set_spawning_popen"):
        assert getattr(fastmp.context, name) is getattr(multiprocessing.context, name)


# ---------------------------------------------------------------- contexts

@pytest.mark.parametrize("method", METHODS)
def test_get_context(method):
    ctx = fastmp.get_context(method)
    assert ctx.get_start_method() == method
    assert ctx.get_context() is ctx
    assert fastmp.get_context(method) is ctx
    assert ctx is not multiprocessing.get_context(method)
    assert isinstance(ctx, multiprocessing.context.BaseContext)
    # As CPython's TestStartMethod checks: names start with the method.
    assert type(ctx).__name__.lower().startswith(method)
    assert ctx.Process.__name__.lower().startswith(method)
    assert issubclass(ctx.Process, multiprocessing.get_context(method).Process)
    with pytest.raises(ValueError):
        ctx.set_start_method("spawn")
    with pytest.raises(ValueError):
        ctx.set_start_method(None)
    other = "spawn" if method != "spawn" else "fork"
    assert ctx.get_context(other) is fastmp.get_context(other)


@pytest.mark.parametrize("method", METHODS)
def test_context_signatures_match_stdlib(method):
    ours, theirs = fastmp.get_context(method), multiprocessing.get_context(method)
    names = [n for n in dir(theirs) if not n.startswith("_")]
    assert [n for n in names if not hasattr(ours, n)] == []
    for name in names:
        if has_signature(getattr(theirs, name)):
            assert params_without_extensions(getattr(ours, name), name) == \
                params(getattr(theirs, name)), name


def test_unknown_method_is_the_stdlibs_value_error():
    with pytest.raises(ValueError) as ours:
        fastmp.get_context("nope")
    with pytest.raises(ValueError) as theirs:
        multiprocessing.get_context("nope")
    assert str(ours.value) == str(theirs.value)
    with pytest.raises(ValueError):
        fastmp.get_context("spawn").get_context("nope")


def test_default_context_is_fastmps():
    assert isinstance(fastmp.get_context(), fastmp.context.FastContext)
    assert fastmp.get_context() is fastmp.get_context(fastmp.get_start_method())
    assert fastmp.get_all_start_methods() == multiprocessing.get_all_start_methods()
    assert fastmp.Process is fastmp.context.Process
    assert issubclass(fastmp.Process, multiprocessing.process.BaseProcess)


@pytest.mark.parametrize("factory", SYNC_FACTORIES)
@pytest.mark.parametrize("method", ("default",) + METHODS)
def test_sync_factories_return_fastmp_classes(method, factory):
    from fastmp import synchronize
    ctx = fastmp if method == "default" else fastmp.get_context(method)
    args = {"Semaphore": (2,), "BoundedSemaphore": (2,), "Barrier": (2,)}.get(factory, ())
    obj = getattr(ctx, factory)(*args)
    assert isinstance(obj, getattr(synchronize, factory))


@pytest.mark.parametrize("method", ("default",) + METHODS)
def test_sharedctypes_factories_return_fastmp_classes(method):
    from fastmp import sharedctypes, synchronize
    ctx = fastmp if method == "default" else fastmp.get_context(method)
    v = ctx.Value("i", 7)
    assert isinstance(v, sharedctypes.Synchronized)
    assert v.value == 7
    assert isinstance(v.get_lock(), synchronize.RLock)
    assert isinstance(ctx.Array("i", 2), sharedctypes.SynchronizedArray)
    a = ctx.Array("d", [1.0, 2.0], lock=False)
    assert list(a) == [1.0, 2.0]
    assert isinstance(a._wrapper, sharedctypes.BufferWrapper)
    assert ctx.RawValue("i", 3).value == 3
    assert list(ctx.RawArray("i", 3)) == [0, 0, 0]
    assert isinstance(ctx.RawValue("i")._wrapper, sharedctypes.BufferWrapper)


@pytest.mark.parametrize("method", METHODS)
def test_other_factories_build_stdlib_objects_on_stdlib_context(method):
    ctx, std = fastmp.get_context(method), multiprocessing.get_context(method)

    # Queue, JoinableQueue, SimpleQueue are fastmp's own: tests/test_queue.py
    from fastmp import queues as fastmp_queues
    for factory in ("Queue", "JoinableQueue", "SimpleQueue"):
        q = getattr(ctx, factory)()
        assert isinstance(q, getattr(fastmp_queues, factory))
        q.close()

    r, w = ctx.Pipe(duplex=False)
    w.send("hi")
    assert r.recv() == "hi"
    r.close()
    w.close()

    pool = ctx.Pool(1)
    try:
        assert isinstance(pool, fastmp.pool.Pool) and pool._ctx is ctx
        assert pool.map(targets.square, range(4)) == [0, 1, 4, 9]
    finally:
        pool.close()
        pool.join()

    manager = ctx.Manager()
    try:
        assert isinstance(manager, multiprocessing.managers.SyncManager)
        assert manager._ctx is std
        d = manager.dict()
        d["k"] = 1
        assert dict(d) == {"k": 1}
    finally:
        manager.shutdown()


def test_default_context_factories_use_stdlib_context_of_fastmp_method():
    q = fastmp.Queue()
    q.close()
    q.join_thread()
    pool = fastmp.Pool(1)
    try:
        assert pool._ctx is fastmp.get_context(fastmp.get_start_method())
    finally:
        pool.close()
        pool.join()


# ---------------------------------------------------------------- processes

@pytest.mark.parametrize("method", METHODS)
def test_context_process_runs_target(method):
    ctx = fastmp.get_context(method)
    r, w = ctx.Pipe(duplex=False)
    targets.MARK = "parent"
    try:
        p = ctx.Process(target=targets.report, args=(w,))
        p.start()
    finally:
        targets.MARK = "module"
    w.close()
    try:
        assert r.poll(WAIT), "child sent nothing"
        info = r.recv()
    finally:
        r.close()
        p.join(WAIT)
    assert p.exitcode == 0
    assert info["parent_pid"] == os.getpid()
    assert info["pid"] == p.pid
    # Forked children share the parent's module state; spawned and forkserver ones re-import.
    assert info["mark"] == ("parent" if method == "fork" else "module")
    # Like CPython's TestStartMethod.check_context: the child reports the method it was
    # started with.
    assert info["fastmp_method"] == method


@pytest.mark.parametrize("method", METHODS)
def test_context_process_exit_code(method):
    p = fastmp.get_context(method).Process(target=targets.exit_with, args=(7,))
    p.start()
    p.join(WAIT)
    assert p.exitcode == 7


@pytest.mark.parametrize("method", METHODS)
def test_stdlib_queue_crosses_fastmp_process(method):
    ctx = fastmp.get_context(method)
    q = ctx.Queue()
    p = ctx.Process(target=targets.put_twice, args=(q, method))
    p.start()
    try:
        assert [q.get(timeout=WAIT), q.get(timeout=WAIT)] == [method, method]
    finally:
        p.join(WAIT)
        q.close()
        q.join_thread()
    assert p.exitcode == 0


def test_start_method_round_trip():
    out = run_python("""
        import multiprocessing, fastmp
        assert fastmp.get_start_method(allow_none=True) is None
        fastmp.set_start_method('spawn')
        assert fastmp.get_start_method() == 'spawn'
        assert type(fastmp.get_context()).__name__ == 'SpawnContext'
        try:
            fastmp.set_start_method('fork')
        except RuntimeError as e:
            assert str(e) == 'context has already been set', e
        else:
            raise AssertionError('no RuntimeError')
        try:
            fastmp.set_start_method('nope', force=True)
        except ValueError:
            pass
        else:
            raise AssertionError('no ValueError')
        fastmp.set_start_method('forkserver', force=True)
        assert fastmp.get_start_method() == 'forkserver'
        fastmp.set_start_method(None, force=True)
        assert fastmp.get_start_method(allow_none=True) is None
        # the stdlib's state is its own
        assert multiprocessing.get_start_method(allow_none=True) is None
        multiprocessing.set_start_method('spawn')
        assert fastmp.get_start_method(allow_none=True) is None
        fastmp.set_start_method('forkserver')
        assert multiprocessing.get_start_method() == 'spawn'
        print('OK')
    """)
    assert out.strip() == "OK"


def test_fastmp_process_honours_fastmp_start_method():
    # fastmp says spawn, the stdlib says forkserver: each Process follows its own module.
    out = run_python("""
        import multiprocessing, os, fastmp
        import _surface_targets as targets
        if __name__ == '__main__':
            fastmp.set_start_method('spawn')
            assert multiprocessing.get_start_method(allow_none=True) is None
            multiprocessing.set_start_method('forkserver')
            targets.MARK = 'parent'
            for mod in (fastmp, multiprocessing):
                r, w = mod.Pipe(duplex=False)
                p = mod.Process(target=targets.report, args=(w,))
                p.start()
                w.close()
                assert r.poll(30)
                info = r.recv()
                r.close()
                p.join(30)
                assert p.exitcode == 0, p.exitcode
                assert info['parent_pid'] == os.getpid(), info
                assert info['mark'] == 'module', info  # not forked: re-imported
                print(mod.__name__, type(p._popen).__module__,
                      info['fastmp_method'], info['stdlib_method'])
    """)
    fastmp_line, stdlib_line = out.splitlines()
    assert fastmp_line.split()[:3] == ["fastmp", "multiprocessing.popen_spawn_posix", "spawn"]
    assert stdlib_line.split()[:2] == ["multiprocessing", "multiprocessing.popen_forkserver"]
    assert stdlib_line.split()[3] == "forkserver"


# ---------------------------------------------------------------- submodules

@pytest.mark.parametrize("name", SUBMODULES)
def test_submodule_mirrors_stdlib(name):
    ours = importlib.import_module("fastmp." + name)
    theirs = importlib.import_module("multiprocessing." + name)
    assert ours.__doc__ and ours.__doc__.strip()
    if hasattr(theirs, "__all__"):
        assert list(ours.__all__) == list(theirs.__all__)
        assert [n for n in theirs.__all__ if not hasattr(ours, n)] == []
    public = [n for n in vars(theirs) if not n.startswith("_")
              and not inspect.ismodule(getattr(theirs, n))]
    assert [n for n in public if not hasattr(ours, n)] == []


def test_submodules_forward_live_stdlib_state():
    import fastmp.process
    import fastmp.util
    assert fastmp.process.ORIGINAL_DIR == multiprocessing.process.ORIGINAL_DIR
    assert fastmp.util._logger is multiprocessing.util._logger
    with pytest.raises(AttributeError, match="fastmp.util"):
        fastmp.util.no_such_name


def test_thread_pool():
    from fastmp.pool import ThreadPool
    pool = ThreadPool(2)
    try:
        assert pool.map(targets.square, range(10)) == [x * x for x in range(10)]
        assert pool.apply_async(targets.square, (5,)).get(WAIT) == 25
    finally:
        pool.close()
        pool.join()


def test_dummy_pool_and_pipe():
    import fastmp.dummy
    import fastmp.dummy.connection
    pool = fastmp.dummy.Pool(2)
    try:
        assert pool.map(targets.square, range(5)) == [0, 1, 4, 9, 16]
    finally:
        pool.close()
        pool.join()
    a, b = fastmp.dummy.connection.Pipe()
    a.send(1)
    assert b.recv() == 1


def test_core_exports_the_enums_its_stub_names():
    """The C enums the Python layer passes to the core (a pool task's mode, a queue's kind)
    and reads from it (a worker slot's state, a record's kind) are module constants of
    fastmp._core, each named in its stub; the Python modules take them from there."""
    import re

    import fastmp._core as core
    import fastmp._dispatcher
    import fastmp.queues
    with open(os.path.join(os.path.dirname(core.__file__), "_core.pyi")) as f:
        names = re.findall(r"^((?:POOL|QUEUE)_[A-Z_]+): int$", f.read(), re.M)
    assert [n for n in names if not isinstance(getattr(core, n, None), int)] == []
    groups = {}
    for n in names:
        groups.setdefault("_".join(n.split("_")[:2]), []).append(n)     # POOL_MODE, ...
    assert {g: len(ns) for g, ns in groups.items()} == \
        {"POOL_MODE": 4, "POOL_SLOT": 6, "POOL_TASK": 2, "QUEUE_KIND": 3}
    for group in groups.values():      # the values within one enum are distinct
        assert len({getattr(core, n) for n in group}) == len(group)
    assert (fastmp._dispatcher.APPLY, fastmp._dispatcher.STARMAP) == \
        (core.POOL_MODE_APPLY, core.POOL_MODE_STARMAP)
    assert [fastmp.queues.Queue._fm_kind, fastmp.queues.JoinableQueue._fm_kind,
            fastmp.queues.SimpleQueue._fm_kind] == \
        [core.QUEUE_KIND_QUEUE, core.QUEUE_KIND_JOINABLE, core.QUEUE_KIND_SIMPLE]
