"""fastmp.futures.ProcessPoolExecutor against concurrent.futures.ProcessPoolExecutor: the same
scenarios in every start method (ids stdlib-fork ... fastmp-forkserver)."""
import concurrent.futures as cf
import os
import sys
import time

import pytest

import _pool_targets as targets
import fastmp.futures
from conftest import is_fastmp

WAIT = 60.0

pytestmark = pytest.mark.timeout(120)


# concurrent.futures' ProcessPoolExecutor takes max_tasks_per_child from Python 3.11 on;
# fastmp's takes it on every version.
STDLIB_MAX_TASKS = sys.version_info >= (3, 11)


def has_max_tasks_per_child(ctx):
    return is_fastmp(ctx) or STDLIB_MAX_TASKS


def executor(ctx, *args, **kwargs):
    cls = fastmp.futures.ProcessPoolExecutor if is_fastmp(ctx) else cf.ProcessPoolExecutor
    return cls(*args, mp_context=ctx, **kwargs)


def test_submit_result_exception(ctx):
    with executor(ctx, 2) as ex:
        f = ex.submit(targets.add, 2, 3)
        assert isinstance(f, cf.Future)
        assert f.result(WAIT) == 5
        assert ex.submit(targets.kwargs, 1, b=2, c=3).result(WAIT) == (1, 2, 3)
        f = ex.submit(targets.raise_value, 4)
        assert isinstance(f.exception(WAIT), ValueError)
        with pytest.raises(ValueError, match="bad item 4"):
            f.result(WAIT)
        fs = [ex.submit(targets.square, i) for i in range(50)]
        assert sorted(f.result() for f in cf.as_completed(fs, timeout=WAIT)) == \
            [i * i for i in range(50)]
        done, not_done = cf.wait(fs, timeout=WAIT)
        assert len(done) == 50 and not not_done


def test_result_timeout(ctx):
    with executor(ctx, 1) as ex:
        f = ex.submit(targets.sleep_for, 1.0)
        with pytest.raises(cf.TimeoutError):
            f.result(0.1)
        assert f.result(WAIT) == 1.0


@pytest.mark.parametrize("chunksize", [1, 4])
def test_map(ctx, chunksize):
    with executor(ctx, 2) as ex:
        assert list(ex.map(targets.square, range(40), chunksize=chunksize)) == \
            [i * i for i in range(40)]
        assert list(ex.map(targets.add, range(10), range(10, 20), chunksize=chunksize)) == \
            [2 * i + 10 for i in range(10)]
        assert list(ex.map(targets.square, [], chunksize=chunksize)) == []
        it = ex.map(targets.fail_on, range(6), chunksize=chunksize)
        with pytest.raises(ValueError):
            list(it)
        with pytest.raises(ValueError):
            ex.map(targets.square, range(3), chunksize=0)


def test_map_timeout(ctx):
    with executor(ctx, 1) as ex:
        it = ex.map(targets.sleep_for, [1.0, 1.0], timeout=0.2)
        with pytest.raises(cf.TimeoutError):
            list(it)


def test_shutdown(ctx):
    ex = executor(ctx, 1)
    fs = [ex.submit(targets.sleep_for, 0.3)] + [ex.submit(targets.square, i) for i in range(5)]
    ex.shutdown(wait=True)
    assert [f.result(0) for f in fs] == [0.3, 0, 1, 4, 9, 16]
    with pytest.raises(RuntimeError):
        ex.submit(targets.square, 1)
    ex = executor(ctx, 1)
    # The worker must be up (slow under spawn and the sanitizers) before `first` is
    # submitted, so that 0.2 s is ample for it to take `first`: shutdown spares held tasks.
    assert ex.submit(targets.square, 3).result(60) == 9
    first = ex.submit(targets.sleep_for, 0.5)
    time.sleep(0.2)
    rest = [ex.submit(targets.square, i) for i in range(5)]
    ex.shutdown(wait=True, cancel_futures=True)
    assert first.result(0) == 0.5
    assert all(f.cancelled() or f.done() for f in rest)
    assert any(f.cancelled() for f in rest)


def test_argument_errors(ctx):
    with pytest.raises(ValueError):
        executor(ctx, 0)
    with pytest.raises(TypeError):
        executor(ctx, 1, initializer=5)
    if not has_max_tasks_per_child(ctx):
        with pytest.raises(TypeError, match="max_tasks_per_child"):
            executor(ctx, 1, max_tasks_per_child=2)
    elif ctx.get_start_method() == "fork":
        with pytest.raises(ValueError):
            executor(ctx, 1, max_tasks_per_child=2)
    else:
        with pytest.raises(ValueError):
            executor(ctx, 1, max_tasks_per_child=0)


def test_initializer_and_max_tasks_per_child(ctx):
    with executor(ctx, 1, initializer=targets.set_state, initargs=(7,)) as ex:
        assert ex.submit(targets.get_state).result(WAIT) == 7
    if ctx.get_start_method() != "fork" and has_max_tasks_per_child(ctx):
        with executor(ctx, 1, max_tasks_per_child=2) as ex:
            pids = [ex.submit(targets.getpid).result(WAIT) for _ in range(4)]
            assert len(set(pids)) == 2


def test_killed_worker_breaks_the_executor(ctx):
    ex = executor(ctx, 2)
    try:
        f = ex.submit(targets.die, 9)
        with pytest.raises(cf.process.BrokenProcessPool):
            f.result(WAIT)
        deadline = time.monotonic() + WAIT
        while True:
            try:
                ex.submit(targets.square, 1).result(WAIT)
            except cf.process.BrokenProcessPool:
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        ex.shutdown(wait=True)


def test_raising_initializer_breaks_the_executor(ctx):
    ex = executor(ctx, 1, initializer=targets.init_raise)
    try:
        with pytest.raises(cf.process.BrokenProcessPool):
            ex.submit(targets.square, 3).result(WAIT)
    finally:
        ex.shutdown(wait=True)


def test_lambda_with_cloudpickle(fastmp_ctx):
    pytest.importorskip("cloudpickle")
    k = 3
    with fastmp.futures.ProcessPoolExecutor(1, mp_context=fastmp_ctx) as ex:
        assert ex.submit(lambda x: x * k, 5).result(WAIT) == 15


# ---------------------------------------------------------------- the stdlib's semantics
# Targets defined here: workers of every start method import this module by name.

def append_line(path, text, secs=0.0):
    if secs:
        time.sleep(secs)
    with open(path, "a") as f:
        f.write(text + "\n")
    return text


def lines_of(path):
    try:
        with open(path) as f:
            return f.read().split()
    except FileNotFoundError:
        return []


def _raise_unpickling():
    import pickle
    raise pickle.UnpicklingError("cannot load this")


def _exit_now():
    import sys
    sys.exit(1)


class FailsToUnpickle:
    """Pickles; unpickling it raises UnpicklingError."""

    def __reduce__(self):
        return _raise_unpickling, ()


class ExitsWhenUnpickled:
    def __reduce__(self):
        return _exit_now, ()


class FailsToPickle:
    def __reduce__(self):
        import pickle
        raise pickle.PicklingError("cannot pickle this")


def make(cls):
    return cls()


def call_exit():
    import sys
    sys.exit(3)


class Plain:
    pass


def make_plain(_):
    return Plain()


def init_log_and_fail(log_queue):
    import logging
    import logging.handlers
    logger = logging.getLogger("concurrent.futures")
    logger.addHandler(logging.handlers.QueueHandler(log_queue))
    logger.setLevel("CRITICAL")
    logger.propagate = False
    raise ValueError("error in initializer")


@pytest.mark.parametrize("how", ["cancel", "shutdown"])
def test_cancelled_futures_never_run(ctx, tmp_path, how):
    """cancel() returning True (or shutdown(cancel_futures=True) cancelling) means the call
    never runs: the side-effect file lists exactly the calls not cancelled."""
    if how == "cancel" and not is_fastmp(ctx) and sys.version_info < (3, 10):
        pytest.skip("the stdlib's shutdown(wait=True) hangs after cancel() on Python 3.9")
    out = str(tmp_path / "ran")
    ex = executor(ctx, 1)
    try:
        assert ex.submit(targets.square, 2).result(WAIT) == 4      # the worker is up
        fs = [ex.submit(append_line, out, str(i), 0.3 if i == 0 else 0.0) for i in range(12)]
        if how == "cancel":
            cancelled = {i for i, f in enumerate(fs) if f.cancel()}
            ex.shutdown(wait=True)
        else:
            ex.shutdown(wait=True, cancel_futures=True)
            cancelled = {i for i, f in enumerate(fs) if f.cancelled()}
        ran = lines_of(out)
        assert sorted(ran, key=int) == [str(i) for i in range(12) if i not in cancelled]
        for i, f in enumerate(fs):
            assert f.cancelled() == (i in cancelled)
            if i not in cancelled:
                assert f.result(0) == str(i)
        # at most max_workers + 1 calls are handed to the workers at a time
        assert len(cancelled) >= 12 - 3
    finally:
        ex.shutdown(wait=True)


@pytest.mark.parametrize("how", ["terminate_workers", "kill_workers"])
def test_terminate_and_kill_workers(fastmp_ctx, how):
    """Python 3.14's terminate_workers()/kill_workers() (fastmp has them on every version;
    the stdlib's before 3.14 has neither): the running call fails with BrokenProcessPool, the
    pending ones are cancelled, every worker is gone at once, no more work is taken."""
    import signal
    ex = executor(fastmp_ctx, 2)
    try:
        running = ex.submit(targets.sleep_for, 60)
        deadline = time.monotonic() + WAIT
        while not running.running():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        pending = [ex.submit(targets.sleep_for, 60) for _ in range(6)]
        workers = list(ex._processes.values())
        assert workers
        t0 = time.monotonic()
        getattr(ex, how)()
        assert isinstance(running.exception(WAIT), cf.process.BrokenProcessPool)
        for f in pending:
            assert f.cancelled() or isinstance(f.exception(WAIT), cf.process.BrokenProcessPool)
        for p in workers:
            p.join(WAIT)
        assert time.monotonic() - t0 < 10
        expected = -signal.SIGTERM if how == "terminate_workers" else -signal.SIGKILL
        # the busy worker is stopped; an idle one may have left on shutdown()'s word first
        codes = [p.exitcode for p in workers]
        assert expected in codes and set(codes) <= {expected, 0}, codes
        with pytest.raises(RuntimeError):
            ex.submit(targets.square, 2)
    finally:
        ex.shutdown(wait=True)


def test_cancel_of_a_running_future_fails(ctx, tmp_path):
    out = str(tmp_path / "ran")
    with executor(ctx, 1) as ex:
        f = ex.submit(append_line, out, "x", 0.2)
        deadline = time.monotonic() + WAIT
        while not f.running() and not f.done():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert not f.cancel()
        assert f.result(WAIT) == "x"
    assert lines_of(out) == ["x"]


def test_workers_start_on_demand(ctx):
    """No worker before the first submit(); then, with fork, all of them (before any
    thread); with spawn and forkserver one per submit() that finds no idle worker."""
    ex = executor(ctx, 4)
    try:
        assert len(ex._processes) == 0
        assert ex.submit(targets.square, 3).result(WAIT) == 9
        expected = 4 if ctx.get_start_method() == "fork" else 1
        assert len(ex._processes) == expected
        for i in range(5):      # one at a time: the idle worker takes each
            assert ex.submit(targets.square, i).result(WAIT) == i * i
        assert len(ex._processes) == expected
        fs = [ex.submit(targets.sleep_for, 0.3) for _ in range(3)]
        assert len(ex._processes) == (4 if expected == 4 else 3)
        assert [f.result(WAIT) for f in fs] == [0.3] * 3
        assert all(isinstance(pid, int) and p.pid == pid for pid, p in ex._processes.items())
    finally:
        ex.shutdown(wait=True)


@pytest.mark.parametrize("case, error", [
    ("task-unpickle", cf.process.BrokenProcessPool),
    ("task-unpickle-exit", cf.process.BrokenProcessPool),
    ("result-pickle", "PicklingError"),
    ("result-unpickle", cf.process.BrokenProcessPool),
    ("result-unpickle-exit", cf.process.BrokenProcessPool),
    ("call-exit", SystemExit),
])
def test_error_types(ctx, case, error):
    import pickle
    if error == "PicklingError":
        error = pickle.PicklingError
    fn, args = {
        "task-unpickle": (id, (FailsToUnpickle(),)),
        "task-unpickle-exit": (id, (ExitsWhenUnpickled(),)),
        "result-pickle": (make, (FailsToPickle,)),
        "result-unpickle": (make, (FailsToUnpickle,)),
        "result-unpickle-exit": (make, (ExitsWhenUnpickled,)),
        "call-exit": (call_exit, ()),
    }[case]
    ex = executor(ctx, 2)
    try:
        f = ex.submit(fn, *args)
        with pytest.raises(BaseException) as info:
            f.result(WAIT)
        assert type(info.value) is error
        if error is cf.process.BrokenProcessPool:
            assert ex._broken
            with pytest.raises(cf.process.BrokenProcessPool):
                ex.submit(targets.square, 2)
        else:
            assert type(info.value.__cause__) is cf.process._RemoteTraceback
            assert ex.submit(targets.square, 2).result(WAIT) == 4
    finally:
        ex.shutdown(wait=True)


def test_remote_traceback_is_the_cause(ctx):
    with executor(ctx, 1) as ex:
        exc = ex.submit(targets.raise_value, 4).exception(WAIT)
        assert type(exc) is ValueError
        assert type(exc.__cause__) is cf.process._RemoteTraceback
        assert "raise_value" in str(exc.__cause__)
        assert "ValueError: bad item 4" in str(exc.__cause__)


def test_submit_after_interpreter_shutdown(ctx):
    """An atexit handler that submits gets the stdlib's RuntimeError."""
    import subprocess
    import sys
    lib = "fastmp.futures" if is_fastmp(ctx) else "concurrent.futures"
    mod = "fastmp" if is_fastmp(ctx) else "multiprocessing"
    code = f"""if True:
        import atexit
        @atexit.register
        def run_last():
            try:
                ex.submit(abs, -1)
            except RuntimeError as e:
                print("runtime-error:", e)
            except BaseException as e:
                print("other:", type(e).__name__, e)
        import {mod}
        from {lib} import ProcessPoolExecutor
        ex = ProcessPoolExecutor(2, mp_context={mod}.get_context({ctx.get_start_method()!r}))
        assert ex.submit(abs, -42).result() == 42
        """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(fastmp.__file__))] +
        [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    # cwd: not the checkout (`-c` puts the working directory first on sys.path, and the source
    # tree's fastmp has no compiled _core)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=WAIT, env=env, cwd=os.path.dirname(os.path.abspath(__file__)))
    assert r.returncode == 0, r.stderr
    # "... after shutdown" or "... after interpreter shutdown", depending on the version
    assert r.stdout.startswith("runtime-error: cannot schedule new futures after "), r.stdout


def test_failing_initializer_is_logged_and_breaks(ctx):
    log_queue = ctx.Queue()
    ex = executor(ctx, 2, initializer=init_log_and_fail, initargs=(log_queue,))
    try:
        try:
            f = ex.submit(targets.square, 2)
        except cf.process.BrokenProcessPool:
            pass
        else:
            with pytest.raises(cf.process.BrokenProcessPool):
                f.result(WAIT)
        deadline = time.monotonic() + WAIT
        while not ex._broken:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(cf.process.BrokenProcessPool):
            ex.submit(targets.square, 2)
    finally:
        ex.shutdown(wait=True)
    record = log_queue.get(timeout=WAIT)
    # QueueHandler puts the formatted traceback into the message
    assert record.getMessage().startswith("Exception in initializer:\nTraceback")
    assert record.levelname == "CRITICAL" and record.name == "concurrent.futures"
    assert "ValueError: error in initializer" in record.getMessage()


@pytest.mark.parametrize("chunksize", [1, 3])
def test_map_keeps_no_yielded_result_alive(ctx, chunksize):
    import gc
    import weakref
    with executor(ctx, 2) as ex:
        n = 0
        for obj in ex.map(make_plain, range(10), chunksize=chunksize):
            wr = weakref.ref(obj)
            del obj
            gc.collect()
            assert wr() is None
            n += 1
        assert n == 10


def test_map_goes_through_an_overridden_submit(ctx):
    base = fastmp.futures.ProcessPoolExecutor if is_fastmp(ctx) else cf.ProcessPoolExecutor
    calls = []

    class Counting(base):
        def submit(self, fn, /, *args, **kwargs):
            calls.append(fn)
            return super().submit(fn, *args, **kwargs)

    with Counting(2, mp_context=ctx) as ex:
        assert list(ex.map(targets.square, range(10), chunksize=3)) == \
            [i * i for i in range(10)]
    assert len(calls) == 4
    # patched on the instance, as tqdm's executor progress does
    with base(2, mp_context=ctx) as ex:
        orig = ex.submit
        seen = []

        def patched(fn, /, *args, **kwargs):
            f = orig(fn, *args, **kwargs)
            f.add_done_callback(lambda _: seen.append(1))
            return f
        ex.submit = patched
        assert list(ex.map(targets.add, range(5), range(5))) == [0, 2, 4, 6, 8]
        deadline = time.monotonic() + WAIT
        while len(seen) < 5:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert len(seen) == 5


def test_private_attributes(ctx):
    ex = executor(ctx, 3)
    try:
        assert ex._max_workers == 3
        assert ex._mp_context is ctx
        assert ex._broken is False
        assert ex._shutdown_thread is False
        assert ex._executor_manager_thread is None
        assert ex._pending_work_items == {}
        assert ex.submit(targets.square, 5).result(WAIT) == 25
        manager = ex._executor_manager_thread
        call_queue = ex._call_queue
        processes = ex._processes
        assert isinstance(processes, dict) and processes
        assert manager.is_alive()
        ex.shutdown(wait=False)
        assert ex._shutdown_thread is True
        manager.join()
        call_queue.join_thread()
        for p in processes.values():
            p.join()
            assert p.exitcode is not None
    finally:
        ex.shutdown(wait=True)


def test_map_errors(ctx):
    """A call of map() that raises fails the map with that exception and its remote
    traceback, as the stdlib's; the executor stays usable."""
    with executor(ctx, 2) as ex:
        it = ex.map(targets.fail_on, range(6), chunksize=2)
        assert [next(it), next(it)] == [0, 1]
        with pytest.raises(ValueError) as info:
            list(it)
        assert type(info.value.__cause__) is cf.process._RemoteTraceback
        with pytest.raises(SystemExit):
            list(ex.map(call_exit_on, [1, 2, 3]))
        assert list(ex.map(targets.square, range(4))) == [0, 1, 4, 9]


def call_exit_on(x):
    if x == 2:
        import sys
        sys.exit(3)
    return x


def test_map_argument_that_cannot_be_loaded_fails_the_map(fastmp_ctx):
    """fastmp on purpose: map() arguments that a worker cannot unpickle fail that map() with
    the unpickling error; the executor stays usable (the stdlib's worker dies, which breaks
    the executor)."""
    import pickle
    with fastmp.futures.ProcessPoolExecutor(2, mp_context=fastmp_ctx) as ex:
        with pytest.raises(pickle.UnpicklingError):
            list(ex.map(id, [1, FailsToUnpickle(), 3]))
        assert not ex._broken
        assert list(ex.map(targets.square, range(4))) == [0, 1, 4, 9]


def test_worker_killed_with_calls_waiting(ctx, tmp_path):
    """A worker SIGKILLed at a random moment while calls wait in the parent: every future
    ends (its result, or BrokenProcessPool), none hangs, and each call that reported a
    result ran.  (No cancel() here: the stdlib's manager thread dies on a cancelled future
    when the pool breaks.)"""
    import random
    import signal
    rng = random.Random(1234)
    for trial in range(3):
        out = str(tmp_path / f"ran{trial}")
        ex = executor(ctx, 2)
        try:
            fs = [ex.submit(append_line, out, str(i), 0.1) for i in range(12)]
            time.sleep(rng.uniform(0.0, 0.3))
            pids = list(ex._processes)
            assert pids
            os.kill(rng.choice(pids), signal.SIGKILL)
            done, not_done = cf.wait(fs, timeout=WAIT)
            assert not not_done
            broken = 0
            for i, f in enumerate(fs):
                if f.exception() is not None:
                    assert type(f.exception()) is cf.process.BrokenProcessPool
                    broken += 1
                else:
                    assert f.result() == str(i)
            assert broken > 0
            with pytest.raises(cf.process.BrokenProcessPool):
                ex.submit(targets.square, 1)
        finally:
            ex.shutdown(wait=True)
        ran = set(lines_of(out))
        assert {str(i) for i, f in enumerate(fs) if f.exception() is None} <= ran
