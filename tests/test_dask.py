"""fastmp.dask: the Pool and ProcessPoolExecutor APIs on a Dask ``distributed`` cluster.

One LocalCluster on 127.0.0.1 (2 worker processes, one thread each) serves the module; the
Pool tests that make sense on both run one body against fastmp's local Pool and
fastmp.dask.Pool.  One test starts a scheduler and workers with Dask's command-line tool.
Without the extra (pip install 'fastmp[dask]') the module is skipped.
"""
import concurrent.futures
import concurrent.futures.process
import functools
import io
import itertools
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

distributed = pytest.importorskip(
    "distributed", reason="fastmp.dask needs the extra: pip install 'fastmp[dask]'")
import dask  # noqa: E402
import psutil  # noqa: E402  (a dependency of distributed)

import fastmp  # noqa: E402
import fastmp.dask  # noqa: E402
from multiprocessing import TimeoutError  # noqa: E402
from multiprocessing.pool import RemoteTraceback  # noqa: E402
from fastmp.pool import InitializerError, WorkerLostError  # noqa: E402

pytestmark = pytest.mark.timeout(100)

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
WAIT = 60       # bound on every wait for the cluster (a loaded 2-core machine)


# --------------------------------------------------------------------------- task functions
# (imported by reference in the workers: this module is on their sys.path)

def square(x):
    return x * x


def add(a, b):
    return a + b


def raise_value_error(x):
    if x == 3:
        raise ValueError(f"bad item {x}")
    return x


def nap(seconds):
    time.sleep(seconds)
    return seconds


def kill_own_worker(x):
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


_MARK = None


def set_mark(tag):
    global _MARK
    _MARK = (tag, os.getpid()) if _MARK is None else ("twice", os.getpid())


def get_mark():
    return _MARK


def failing_initializer():
    raise OSError("no such resource")


def dask_pool_without_cluster():
    try:
        fastmp.dask.Pool()
    except RuntimeError as exc:
        return str(exc)
    return "no error"


def dask_pool_with_worker_client(n):
    with distributed.worker_client() as client:
        with fastmp.dask.Pool(client=client) as pool:
            return pool.map(square, range(n))


def local_pool_in_task(n):
    try:
        with fastmp.Pool(2) as pool:
            return pool.map(square, range(n))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- fixtures

def _alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="module")
def cluster():
    # One retry after a lost worker (Dask's default is 3): the lost-worker test kills a
    # worker per attempt, and each restart costs seconds here.
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        lc = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      host="127.0.0.1", dashboard_address="127.0.0.1:0")
    pids = set()
    try:
        yield lc
        with distributed.Client(lc, set_as_default=False) as c:
            pids.update(c.run(os.getpid).values())
    finally:
        lc.close()
    # no worker process outlives the cluster
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if _alive(p)]


@pytest.fixture
def client(cluster):
    with distributed.Client(cluster, set_as_default=False) as c:
        c.wait_for_workers(2, timeout=WAIT)     # back to 2 after a test killed one
        yield c


POOLS = ("fastmp", "dask")


@pytest.fixture(params=POOLS)
def make_pool(request, cluster):
    """A factory of pools of one kind: fastmp's local Pool (forkserver: this process runs
    Dask's threads) or fastmp.dask.Pool on the module's cluster (its own client)."""
    made = []

    def make(**kwds):
        if request.param == "fastmp":
            pool = fastmp.get_context("forkserver").Pool(2, **kwds)
        else:
            c = distributed.Client(cluster, set_as_default=False)
            made.append(c)
            c.wait_for_workers(2, timeout=WAIT)
            pool = fastmp.dask.Pool(client=c, **kwds)
        made.append(pool)
        return pool

    make.kind = request.param
    yield make
    for obj in reversed(made):
        if isinstance(obj, distributed.Client):
            obj.close()
        else:
            obj.terminate()
            obj.join()


# --------------------------------------------------------------------------- Pool, both kinds

def test_map_starmap_apply(make_pool):
    with make_pool() as pool:
        assert pool.map(square, range(50)) == [x * x for x in range(50)]
        assert pool.map(square, range(7), chunksize=3) == [x * x for x in range(7)]
        assert pool.map(square, []) == []
        assert pool.starmap(add, [(1, 2), (3, 4), (5, 6)]) == [3, 7, 11]
        assert pool.apply(add, (2, 3)) == 5
        assert pool.apply(add, (), {"a": 1, "b": 9}) == 10
        assert pool.map_async(square, range(5)).get(WAIT) == [0, 1, 4, 9, 16]
        assert pool.starmap_async(add, [(1, 1)]).get(WAIT) == [2]


def test_async_result_api(make_pool):
    with make_pool() as pool:
        r = pool.apply_async(nap, (1.5,))
        assert not r.ready()
        with pytest.raises(ValueError):
            r.successful()
        with pytest.raises(TimeoutError):
            r.get(timeout=0.05)
        r.wait(WAIT)
        assert r.ready() and r.successful()
        assert r.get(0) == 1.5
        assert isinstance(r, __import__("multiprocessing.pool").pool.ApplyResult)


def test_callbacks(make_pool):
    got, errors = [], []
    with make_pool() as pool:
        pool.apply_async(square, (4,), callback=got.append).get(WAIT)
        r = pool.map_async(square, range(4), callback=got.append)
        assert r.get(WAIT) == [0, 1, 4, 9]
        r = pool.apply_async(raise_value_error, (3,), error_callback=errors.append)
        r.wait(WAIT)
        assert not r.successful()
    assert got == [16, [0, 1, 4, 9]]
    assert len(errors) == 1 and isinstance(errors[0], ValueError)


def test_exception_carries_remote_traceback(make_pool):
    with make_pool() as pool:
        with pytest.raises(ValueError, match="bad item 3") as info:
            pool.map(raise_value_error, range(6), chunksize=1)
        cause = info.value.__cause__
        assert isinstance(cause, RemoteTraceback)
        assert "raise_value_error" in str(cause) and "bad item 3" in str(cause)
        with pytest.raises(ValueError) as info:
            pool.apply(raise_value_error, (3,))
        assert isinstance(info.value.__cause__, RemoteTraceback)
        it = pool.imap(raise_value_error, range(5), chunksize=1)
        assert [next(it) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(ValueError) as info:
            next(it)
        assert "raise_value_error" in str(info.value.__cause__)
        assert next(it) == 4


def test_lambdas_and_closures(make_pool):
    offset = 10

    def shifted(x):
        return x + offset
    with make_pool() as pool:
        assert pool.map(lambda x: x * 3, range(5)) == [0, 3, 6, 9, 12]
        assert pool.apply(shifted, (1,)) == 11
        assert list(pool.imap(shifted, range(3))) == [10, 11, 12]


def test_imap_orders(make_pool):
    with make_pool() as pool:
        assert list(pool.imap(square, range(20))) == [x * x for x in range(20)]
        assert list(pool.imap(square, iter(range(20)), chunksize=3)) == \
            [x * x for x in range(20)]
        assert sorted(pool.imap_unordered(square, range(20), chunksize=2)) == \
            [x * x for x in range(20)]
        it = pool.imap(nap, [2.0])
        with pytest.raises(TimeoutError):
            it.next(timeout=0.05)
        assert it.next(timeout=WAIT) == 2.0
        with pytest.raises(StopIteration):
            next(it)


def test_imap_endless_input_is_read_ahead_boundedly(make_pool):
    read = [0]

    def numbers():
        for i in itertools.count():
            read[0] = i + 1
            yield i
    with make_pool() as pool:
        it = pool.imap(square, numbers(), chunksize=1, buffersize=4)
        assert [next(it) for _ in range(10)] == [x * x for x in range(10)]
        time.sleep(1.0)     # a paused consumer
        first = read[0]
        time.sleep(0.5)
        assert read[0] == first                 # the feed waits for the consumer
        assert 10 < read[0] <= 10 + 4 + 1       # taken + buffersize (+ one being read)
        if make_pool.kind == "dask":
            # the pool holds futures only for tasks in flight: at most buffersize
            assert len(pool.client.futures) <= 4
        assert next(it) == 100
        del it


def test_progress_keyword(make_pool):
    # fastmp.Pool's progress= (a tqdm bar) is there too, so that switching pools is one line
    try:
        import tqdm  # noqa: F401
    except ImportError:
        with make_pool() as pool:
            with pytest.raises(ImportError, match=r"pip install 'fastmp\[progress\]'"):
                pool.map(square, range(5), progress=True)
        return
    out = io.StringIO()
    with make_pool() as pool:
        assert pool.map(square, range(20), chunksize=3, progress={"file": out}) == \
            [x * x for x in range(20)]
        assert "20/20" in out.getvalue()
        out = io.StringIO()
        assert list(pool.imap(square, range(7), progress={"file": out})) == \
            [x * x for x in range(7)]
        assert "7/7" in out.getvalue()


def test_imap_of_an_unpicklable_function_raises_from_next(make_pool):
    with make_pool() as pool:
        it = pool.imap(_Unpicklable(), range(3))
        with pytest.raises(TypeError, match="no pickling"):
            next(it)


class _Unpicklable:
    def __call__(self, x):
        return x

    def __reduce__(self):
        raise TypeError("no pickling for this callable")


def test_close_join_and_not_running(make_pool):
    pool = make_pool()
    r = pool.map_async(nap, [0.3, 0.3, 0.3])
    pool.close()
    with pytest.raises(ValueError):
        pool.apply(square, (1,))
    pool.join()
    assert r.ready() and r.get(0) == [0.3, 0.3, 0.3]
    with make_pool() as pool:
        pass
    with pytest.raises(ValueError):
        pool.map(square, [1])


def test_initializer_runs_in_every_worker(make_pool):
    with make_pool(initializer=set_mark, initargs=("init",)) as pool:
        marks = pool.map(functools.partial(_mark_of, 0.2), range(8), chunksize=1)
    assert {m[0] for m in marks} == {"init"}


def _mark_of(seconds, _):
    time.sleep(seconds)
    return get_mark()


def test_maxtasksperchild_is_refused(cluster):
    with pytest.raises(ValueError, match="maxtasksperchild has no equivalent on a Dask"):
        fastmp.dask.Pool(2, maxtasksperchild=5, address=cluster.scheduler_address)
    with pytest.raises(ValueError, match="not both"):
        fastmp.dask.Pool(address="tcp://127.0.0.1:1", client=object())


# --------------------------------------------------------------------------- dask only

def test_tasks_are_not_merged(client):
    # pure=False: identical calls run once each (Dask's default would merge them)
    with fastmp.dask.Pool(client=client) as pool:
        results = [pool.apply_async(os.getpid) for _ in range(4)]
        pids = [r.get(WAIT) for r in results]
        assert len(pids) == 4
        counts = pool.map(_count_calls, [0] * 6, chunksize=1)
    assert sorted(counts)[-1] >= 3      # 6 calls spread over 2 workers


_CALLS = [0]


def _count_calls(_):
    _CALLS[0] += 1
    return _CALLS[0]


def test_large_function_is_scattered_once(client):
    big = bytes(300_000)
    f = functools.partial(_len_plus, big)
    # sent to the cluster once, as a future every task of the call takes; small ones inline
    assert isinstance(fastmp.dask._Function(client, f).data, distributed.Future)
    assert isinstance(fastmp.dask._Function(client, square).data, bytes)
    with fastmp.dask.Pool(client=client) as pool:
        assert pool.map(f, range(6), chunksize=1) == [300_000 + i for i in range(6)]
        assert list(pool.imap(f, range(3))) == [300_000, 300_001, 300_002]


def _len_plus(data, i):
    return len(data) + i


def test_imap_default_chunks_grow_for_short_tasks(client):
    # chunksize=None: one item per task first, then chunks of about 50 ms of work; with
    # chunksize=1 each item is a task (the stdlib's default)
    with fastmp.dask.Pool(client=client) as pool:
        it = pool.imap(square, range(3000))
        assert list(it) == [x * x for x in range(3000)]
        assert it._stream._posted < 100
        it = pool.imap(square, range(30), chunksize=1)
        assert list(it) == [x * x for x in range(30)]
        assert it._stream._posted == 30


def test_initializer_error(client):
    with pytest.raises(InitializerError) as info:
        fastmp.dask.Pool(client=client, initializer=failing_initializer)
    assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(concurrent.futures.process.BrokenProcessPool):
        fastmp.dask.ProcessPoolExecutor(client=client, initializer=failing_initializer)
    # the plugin that failed does not stay registered: later pools still work
    with fastmp.dask.Pool(client=client) as pool:
        assert pool.apply(square, (5,)) == 25
    plugins = client.run_on_scheduler(_worker_plugin_names)
    assert not [name for name in plugins if name.startswith("fastmp-initializer-")]


def _worker_plugin_names(dask_scheduler):
    return list(dask_scheduler.worker_plugins)


def test_nested_pools_in_dask_tasks(client):
    msg = client.submit(dask_pool_without_cluster, pure=False).result(WAIT)
    assert "worker_client" in msg and "inside a Dask task" in msg
    assert client.submit(dask_pool_with_worker_client, 5, pure=False).result(WAIT) == \
        [0, 1, 4, 9, 16]
    # a Dask worker is a daemonic process: a local pool there fails at once, as the stdlib's
    out = client.submit(local_pool_in_task, 4, pure=False).result(WAIT)
    assert out == [0, 1, 4, 9] or out == \
        "AssertionError: daemonic processes are not allowed to have children"


def test_executor(client):
    with fastmp.dask.ProcessPoolExecutor(client=client) as ex:
        futures = [ex.submit(square, i) for i in range(6)]
        assert all(isinstance(f, concurrent.futures.Future) for f in futures)
        done = {f.result() for f in concurrent.futures.as_completed(futures, timeout=WAIT)}
        assert done == {x * x for x in range(6)}
        assert list(ex.map(add, range(5), range(5), chunksize=2)) == [0, 2, 4, 6, 8]
        assert list(ex.map(lambda x: -x, range(3))) == [0, -1, -2]
        f = ex.submit(raise_value_error, 3)
        concurrent.futures.wait([f], timeout=WAIT)
        assert isinstance(f.exception(), ValueError)
        assert isinstance(f.exception().__cause__, RemoteTraceback)
        slow = ex.submit(nap, 30)
        assert slow.cancel() and slow.cancelled()
        with pytest.raises(concurrent.futures.TimeoutError):
            list(ex.map(nap, [2.0], timeout=0.1))
    with pytest.raises(RuntimeError):
        ex.submit(square, 1)


@pytest.mark.timeout(240)
def test_lost_worker_fails_tasks(client):
    # the task kills its worker on every attempt: after Dask's retry, WorkerLostError (four
    # worker deaths and restarts in all: about 30 s here, more under load)
    with fastmp.dask.Pool(client=client) as pool:
        r = pool.map_async(kill_own_worker, range(6), chunksize=1)
        r.wait(2 * WAIT)
        assert r.ready()
        with pytest.raises(WorkerLostError) as info:
            r.get(0)
        assert isinstance(info.value.__cause__, distributed.scheduler.KilledWorker)
    with fastmp.dask.ProcessPoolExecutor(client=client) as ex:
        client.wait_for_workers(2, timeout=WAIT)
        f = ex.submit(kill_own_worker, 3)
        assert isinstance(f.exception(2 * WAIT), WorkerLostError)


def test_pool_owns_a_local_cluster():
    with fastmp.dask.Pool(1) as pool:
        assert pool.map(square, range(4)) == [0, 1, 4, 9]
        client = pool.client
        pids = set(client.run(os.getpid).values())
        assert len(pids) == 1
    assert pool.client is None and client.status == "closed"
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if _alive(p)]


# --------------------------------------------------------------------------- Dask's CLI

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_env():
    env = dict(os.environ)
    paths = [TESTS_DIR, os.path.dirname(os.path.dirname(os.path.abspath(fastmp.__file__)))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def test_scheduler_and_workers_from_the_command_line():
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    cli = [sys.executable, "-m", "dask"]
    started = []

    def start(*args):
        p = subprocess.Popen(cli + list(args), cwd=TESTS_DIR, env=_child_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        started.append(p)
        return p

    worker = ("worker", address, "--host", "127.0.0.1", "--nthreads", "1",
              "--no-dashboard")
    try:
        start("scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard")
        start(*worker)
        with distributed.Client(address, timeout=WAIT, set_as_default=False) as c:
            c.wait_for_workers(1, timeout=WAIT)
        with fastmp.dask.Pool(address=address, initializer=set_mark,
                              initargs=("cli",)) as pool:
            assert pool.map(square, range(10)) == [x * x for x in range(10)]
            start(*worker)      # a worker that joins after the pool started
            pool.client.wait_for_workers(2, timeout=WAIT)
            marks = pool.client.run(get_mark)
            assert len(marks) == 2
            assert {m[0] for m in marks.values()} == {"cli"}
            assert sorted(pool.imap_unordered(square, range(10))) == \
                [x * x for x in range(10)]
    finally:
        for p in reversed(started):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in reversed(started):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)


# --------------------------------------------------------------------------- a script

SCRIPT = """\
from fastmp.dask import Pool


def f(x):
    return x * x


if __name__ == "__main__":
    with Pool(2) as p:
        print(p.map(f, [1, 2, 3]))
        print(sorted(p.imap_unordered(lambda x: -x, range(3))))
"""


def test_the_stdlib_example_as_a_script(tmp_path):
    # the docs' first Pool example with one line changed: a function of __main__, a
    # LocalCluster the pool starts (spawned workers, the main guard) and closes
    script = tmp_path / "example.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script)], cwd=str(tmp_path), env=_child_env(),
                         capture_output=True, text=True, timeout=WAIT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == ["[1, 4, 9]", "[-2, -1, 0]"]


# --------------------------------------------------------------------------- imports

def _python(code):
    return subprocess.run([sys.executable, "-c", code], cwd=TESTS_DIR, env=_child_env(),
                          capture_output=True, text=True, timeout=WAIT)


def test_import_fastmp_does_not_import_dask():
    out = _python("import sys, fastmp, fastmp.pool, fastmp.futures\n"
                  "print(sorted(m for m in ('dask', 'distributed') if m in sys.modules))")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_import_without_the_extra_names_it():
    out = _python("import sys\nsys.modules['distributed'] = None\n"
                  "try:\n    import fastmp.dask\n"
                  "except ImportError as exc:\n    print(exc)\n")
    assert out.returncode == 0, out.stderr
    assert "pip install 'fastmp[dask]'" in out.stdout


# --------------------------------------------------------------------------- benchmark

def test_bench_workloads_run_small():
    from fastmp.bench import dask as dask_bench
    assert dask_bench.missing() is None
    rows = dask_bench.run(workers=1, tiny_items=300, sleep_items=4, sleep_seconds=0.001,
                          rounds=1, baseline_tiny_items=30, per_task_items=20)
    assert [(r["workload"], r["impl"], r["items"]) for r in rows] == [
        ("tiny", "fastmp.dask.Pool", 300), ("tiny", "dask client.map", 30),
        ("tiny", "fastmp.Pool", 300),
        ("10ms", "fastmp.dask.Pool", 4), ("10ms", "dask client.map", 4),
        ("10ms", "fastmp.Pool", 4),
        ("per-task", "fastmp.dask.Pool", 20), ("per-task", "dask client.map", 20),
        ("per-task", "fastmp.Pool", 20)]
    for r in rows:
        assert r["rate"] == pytest.approx(r["items"] / r["seconds"])
        if r["impl"] == "dask client.map":
            assert r["ratio"] == pytest.approx(1.0)
    table = dask_bench.format_rows(rows).splitlines()
    assert len(table) == 10 and "vs hand-written Dask" in table[0]
