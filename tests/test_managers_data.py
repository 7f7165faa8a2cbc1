"""Manager().Queue(), .JoinableQueue(), .Value(), .Array(): fastmp's (its own C objects, no
server process) against the stdlib's (a server process holding a queue.Queue, a managers.Value,
an array.array).  The same body runs against both (the `mp` / `ctx` fixtures), with exact
expected values and messages: what the stdlib does is the reference.  The fastmp-only tests at
the end cover what the stdlib has no counterpart for (no process, nothing left in /dev/shm,
flat mappings, a producer killed in the middle of a put)."""
import array
import multiprocessing
import os
import pickle
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from multiprocessing import managers as std_managers
from multiprocessing.reduction import ForkingPickler

import pytest

from conftest import join_ok, load_impl, run_shm_program, shm_gone_within, start

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
TIMEOUT_MSG = "'timeout' must be a non-negative number"


_LAMBDA = lambda: 0  # noqa: E731  (pickle cannot find it by name: PicklingError)


def _pickling_error():
    """The error the stdlib's proxy raises for an unpicklable argument (its connection pickles
    the call with the ForkingPickler)."""
    try:
        ForkingPickler.dumps(_LAMBDA)
    except Exception as exc:
        return type(exc), str(exc)
    raise AssertionError("the lambda pickled")


def _raises(f):
    """(type, message) of what f() raises, or None.  (Used instead of pytest.raises(...) as e,
    whose traceback would keep the test's frame, and the shared objects in it, alive after the
    test: later tests' forked children would then hold them too.)"""
    try:
        f()
    except Exception as exc:
        return type(exc), str(exc)
    return None


def _error_line(f):
    """The last line of the traceback f() raises (what a RemoteError's text ends with)."""
    exc_type, msg = _raises(f)
    return f"{exc_type.__name__}: {msg}\n"


# ------------------------------------------------------------------- children
# (module-level, so that spawn and forkserver children find them by name)

def _produce(q, tag, n):
    for i in range(n):
        q.put((tag, i))
    q.put((tag, None))


def _consume_joinable(q, total, a):
    """Take items until None, each followed by task_done; the sum in total, a[i] = i * i."""
    while True:
        item = q.get(timeout=60)
        if item is None:
            q.task_done()
            return
        total.value = total.value + item     # the only writer
        a[item] = item * item
        q.task_done()


def _from_queue(carrier, out):
    q, v, a = carrier.get(timeout=60)
    v.value = ("child", os.getpid())
    a[0] = 42
    a[1:3] = array.array("i", [5, 6])
    q.put("from child")
    out.put("ok")


def _pool_task(args):
    q, v, a, i = args
    q.put(i)
    a[i] = i * i
    return a[i], v.value


def _stall_then_sleep(q, ready):
    q.put("before")
    q._obj._debug_stall_put()       # claim room in the ring, never commit: "killed mid-put"
    ready.set()
    time.sleep(120)


def _put_forever(q, ready):
    ready.set()
    i = 0
    while True:
        q.put(i)
        i += 1


# ---------------------------------------------------------------------- Queue

@pytest.mark.parametrize("typeid", ["Queue", "JoinableQueue"])
def test_queue_methods(manager, typeid):
    q = getattr(manager, typeid)(2)
    assert isinstance(q, std_managers.BaseProxy)
    assert type(q).__name__ == f"AutoProxy[{typeid}]"
    assert q._exposed_ == tuple(std_managers.public_methods(queue.Queue()))
    assert set(q._exposed_) >= {'empty', 'full', 'get', 'get_nowait', 'join', 'put',
                                'put_nowait', 'qsize', 'task_done'}
    assert repr(q).startswith(f"<AutoProxy[{typeid}] object, typeid '{typeid}' at 0x")
    assert str(q).startswith("<queue.Queue object at 0x")
    assert (q.empty(), q.full(), q.qsize()) == (True, False, 0)
    assert q.put(1) is None and q.put_nowait([2]) is None
    assert (q.empty(), q.full(), q.qsize()) == (False, True, 2)
    with pytest.raises(queue.Full):
        q.put(3, block=False)
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    t0 = time.monotonic()
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.2)
    assert time.monotonic() - t0 >= 0.15
    assert _raises(lambda: q.put(3, True, -1)) == (ValueError, TIMEOUT_MSG)
    assert _raises(lambda: q.put()) == _raises(queue.Queue().put)    # "Queue.put() missing ..."
    assert q.get() == 1 and q.get_nowait() == [2]
    with pytest.raises(queue.Empty):
        q.get(False)
    with pytest.raises(queue.Empty):
        q.get(False, -1)            # not blocking: the timeout is not looked at
    with pytest.raises(queue.Empty):
        q.get_nowait()
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.2)
    assert time.monotonic() - t0 >= 0.15
    assert _raises(lambda: q.get(timeout=-1)) == (ValueError, TIMEOUT_MSG)
    assert q.task_done() is None and q.task_done() is None
    assert _raises(q.task_done) == (ValueError, "task_done() called too many times")
    assert q.join() is None
    assert q.qsize() == 0


def test_unbounded_queue(manager):
    q = manager.Queue()
    for i in range(1000):
        q.put(i, True, -1)          # never waits: a negative timeout is not looked at
    assert (q.qsize(), q.full()) == (1000, False)
    assert [q.get() for _ in range(1000)] == list(range(1000))
    assert q.empty() is True


@pytest.mark.parametrize("typeid", ["Queue", "JoinableQueue"])
def test_unpicklable_item_raises_in_the_caller(manager, typeid):
    q = getattr(manager, typeid)()
    q.put("a")
    assert _raises(lambda: q.put(_LAMBDA)) == _pickling_error()
    assert _raises(lambda: q.put_nowait(_LAMBDA)) == _pickling_error()
    assert q.qsize() == 1
    q.put("b")
    assert [q.get(), q.get()] == ["a", "b"]


def test_blocked_get_sees_shutdown(mp):
    """A get() waiting on a manager's queue when the manager shuts down raises EOFError."""
    m = mp.Manager()
    q = m.Queue()
    box = []

    def wait():
        try:
            box.append(q.get())
        except Exception as exc:
            box.append(type(exc))

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.3)
    m.shutdown()
    t.join(30)
    assert not t.is_alive() and box == [EOFError]


@pytest.mark.skipif(not hasattr(queue, "ShutDown"), reason="queue.Queue.shutdown: 3.13+")
def test_queue_shutdown(manager):
    q = manager.Queue()
    q.put(1)
    q.put(2)
    assert q.shutdown() is None
    for f in (lambda: q.put(3), lambda: q.put_nowait(3), lambda: q.put(3, True, -1)):
        with pytest.raises(queue.ShutDown):
            f()
    assert (q.get(), q.get_nowait()) == (1, 2)     # what was put is still there
    for f in (q.get, q.get_nowait, lambda: q.get(True, -1)):
        with pytest.raises(queue.ShutDown):
            f()
    jq = manager.JoinableQueue()
    for i in range(3):
        jq.put(i)
    assert jq.get() == 0
    jq.shutdown(immediate=True)     # drops the items left, each counted as done
    assert jq.qsize() == 0
    with pytest.raises(queue.ShutDown):
        jq.get(False)
    jq.task_done()                  # the one taken
    assert jq.join() is None
    assert _raises(jq.task_done) == (ValueError, "task_done() called too many times")
    # a get and a put already waiting raise ShutDown
    empty, full = manager.Queue(), manager.Queue(1)
    full.put(0)
    box = []

    def wait(f):
        try:
            f()
        except Exception as exc:
            box.append(type(exc))

    threads = [threading.Thread(target=wait, args=(f,)) for f in (empty.get, lambda: full.put(1))]
    for t in threads:
        t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    empty.shutdown()
    full.shutdown()
    for t in threads:
        t.join(30)
    assert box == [queue.ShutDown, queue.ShutDown] and time.monotonic() - t0 < 5


# ---------------------------------------------------------------------- Value

def test_value_methods(manager):
    v = manager.Value("i", 1)
    assert isinstance(v, std_managers.ValueProxy) and isinstance(v, std_managers.BaseProxy)
    assert v._exposed_ == ("get", "set")
    assert repr(v).startswith("<ValueProxy object, typeid 'Value' at 0x")
    assert str(v) == "Value('i', 1)"
    assert v.value == 1 and v.get() == 1
    assert v.set(2) is None and v.value == 2
    v.value = "x"                   # the typecode is not enforced
    assert v.value == "x" and str(v) == "Value('i', 'x')"
    v.value = [1, {"a": 2}]
    got = v.value
    got.append(3)                   # a copy: does not write back
    assert v.get() == [1, {"a": 2}]
    ref = v._getvalue()
    assert type(ref) is std_managers.Value and ref.get() == [1, {"a": 2}]
    assert _raises(lambda: v.set(_LAMBDA)) == _pickling_error()
    assert v.value == [1, {"a": 2}]
    assert _raises(v.set) == _raises(lambda: std_managers.ValueProxy.set(v))  # "ValueProxy.set..."
    assert manager.Value("d", 1.5, lock=False).value == 1.5
    assert manager.Value("c", None).value is None
    exc_type, msg = _raises(lambda: manager.Value("i"))
    assert exc_type is std_managers.RemoteError
    assert _error_line(lambda: std_managers.Value("i")) in msg


def test_value_threads(manager):
    v = manager.Value("i", 0)
    seen = []

    def work(t):
        for i in range(300):
            v.value = (t, i)
            seen.append(v.value)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(seen) == 900 and all(type(x) is tuple and len(x) == 2 for x in seen)
    assert v.value in [(t, 299) for t in range(3)]


# ---------------------------------------------------------------------- Array

def test_array_methods(manager):
    a = manager.Array("i", [1, 2, 3])
    assert isinstance(a, std_managers.ArrayProxy) and isinstance(a, std_managers.BaseProxy)
    assert a._exposed_ == ("__len__", "__getitem__", "__setitem__")
    assert repr(a).startswith("<ArrayProxy object, typeid 'Array' at 0x")
    assert str(a) == "array('i', [1, 2, 3])"
    assert len(a) == 3 and (a[0], a[-1], a[True]) == (1, 3, 2)
    assert a[0:2] == array.array("i", [1, 2]) and type(a[0:2]) is array.array
    assert a[::-1] == array.array("i", [3, 2, 1]) and a[5:9] == array.array("i")
    a[0] = 7
    a[-1] = 9
    assert a[:] == array.array("i", [7, 2, 9])
    a[0:2] = array.array("i", [4, 5])
    assert a[:] == array.array("i", [4, 5, 9])
    a[::2] = array.array("i", [0, 0])
    a[True] = 6
    assert a[:] == array.array("i", [0, 6, 0])
    assert a._getvalue() == array.array("i", [0, 6, 0])
    ref = array.array("i", [0, 6, 0])     # what the stdlib's server holds: its errors
    errors = [
        (lambda x: x[3], IndexError),               # "array index out of range"
        (lambda x: x[-4], IndexError),
        (lambda x: x.__setitem__(3, 1), IndexError),    # "array assignment index out of range"
        (lambda x: x.__setitem__(-4, 1), IndexError),
        (lambda x: x.__setitem__(0, "x"), TypeError),
        (lambda x: x.__setitem__(0, 1.5), TypeError),
        (lambda x: x.__setitem__(0, 2 ** 40), OverflowError),
        (lambda x: x.__setitem__(slice(0, 2), [1, 2]), TypeError),    # "can only assign array"
        (lambda x: x.__setitem__(slice(0, 2), array.array("d", [1, 2])), TypeError),
        (lambda x: x.__setitem__(slice(None, None, 2), array.array("i", [1])), ValueError),
        (lambda x: x["x"], TypeError),              # "array indices must be integers"
        (lambda x: x.__setitem__("x", 1), TypeError),
    ]
    for f, exc_type in errors:
        expected = _raises(lambda: f(ref))
        assert expected[0] is exc_type and _raises(lambda: f(a)) == expected
    assert ref == array.array("i", [0, 6, 0])
    assert a[:] == array.array("i", [0, 6, 0])


def test_array_typecodes(manager):
    d = manager.Array("d", [0.5, 1])
    d[0] = 3
    assert (d[0], d[1], type(d[1])) == (3.0, 1.0, float)
    f = manager.Array("f", [0.1])
    assert f[0] == array.array("f", [0.1])[0]
    b = manager.Array("B", range(4))
    assert _raises(lambda: b.__setitem__(0, 256)) == (
        OverflowError, "unsigned byte integer is greater than maximum")
    assert _raises(lambda: b.__setitem__(0, -1)) == (
        OverflowError, "unsigned byte integer is less than minimum")
    q = manager.Array("q", [-2 ** 63, 2 ** 63 - 1])
    assert q[:] == array.array("q", [-2 ** 63, 2 ** 63 - 1])
    # 'u' (deprecated in 3.13, where the stdlib's server would warn) or 'w': not what memoryview
    # casts to
    uc = "w" if sys.version_info >= (3, 13) else "u"
    u = manager.Array(uc, "abc")
    u[1] = "z"
    assert (u[1], u[-3], u[:]) == ("z", "a", array.array(uc, "azc"))
    assert _raises(lambda: u.__setitem__(0, "xy")) == _raises(
        lambda: array.array(uc, "a").__setitem__(0, "xy"))
    e = manager.Array("b", [])
    assert (len(e), str(e), e[:]) == (0, "array('b')", array.array("b"))
    assert _raises(lambda: e[0]) == (IndexError, "array index out of range")
    exc_type, msg = _raises(lambda: manager.Array("z", [1]))
    assert exc_type is std_managers.RemoteError and "ValueError: bad typecode" in msg
    exc_type, msg = _raises(lambda: manager.Array("i", [1, "x"]))
    assert exc_type is std_managers.RemoteError
    assert _error_line(lambda: array.array("i", [1, "x"])) in msg


# ------------------------------------------------------------- pickling, shutdown

def test_proxies_pickle_any_time(manager):
    q, v, a = manager.Queue(), manager.Value("i", 0), manager.Array("i", [0, 0])
    q2, v2, a2 = (pickle.loads(pickle.dumps(x)) for x in (q, v, a))
    q2.put(5)
    v2.value = 3
    a2[1] = 8
    assert q.get(timeout=10) == 5 and v.value == 3 and a[:] == array.array("i", [0, 8])
    lst = manager.list([q, v, a])   # a proxy inside a manager's list comes back as a proxy
    lst[0].put("in list")
    assert q.get(timeout=10) == "in list" and lst[1].value == 3 and lst[2][1] == 8


def test_after_shutdown(mp):
    m = mp.Manager()
    q, v, a = m.Queue(), m.Value("i", 1), m.Array("i", [1])
    data = [pickle.dumps(x) for x in (q, v, a)]
    q.put(1)
    assert (v.value, a[0]) == (1, 1)    # used: the stdlib's proxies are then connected
    m.shutdown()
    for f in (lambda: q.put(1), q.get, q.qsize, q.task_done, lambda: v.value,
              lambda: v.set(2), lambda: a[0], lambda: len(a), lambda: a.__setitem__(0, 1)):
        with pytest.raises(BrokenPipeError):
            f()
    assert str(v).endswith("; '__str__()' failed>")
    for d in data:
        with pytest.raises(FileNotFoundError):
            pickle.loads(d)
    assert _raises(m.Queue) == (AssertionError, "server not yet started")


# ------------------------------------------------------------------ processes

def test_producers_and_consumer(ctx_manager, procs):
    """Two producer processes, this one the consumer: every item once, each producer's in
    order."""
    ctx, m = ctx_manager
    q = m.Queue()
    n = 400
    ps = [start(procs, ctx, _produce, q, tag, n) for tag in ("a", "b")]
    got = {"a": [], "b": []}
    done = 0
    while done < 2:
        tag, i = q.get(timeout=60)
        if i is None:
            done += 1
        else:
            got[tag].append(i)
    for p in ps:
        join_ok(p)
    assert got == {"a": list(range(n)), "b": list(range(n))}
    assert q.empty()


def test_joinable_join_across_processes(ctx_manager, procs):
    ctx, m = ctx_manager
    q = m.JoinableQueue()
    total = m.Value("i", 0)
    a = m.Array("q", [0] * 50)
    p = start(procs, ctx, _consume_joinable, q, total, a)
    for i in range(50):
        q.put(i)
    q.put(None)
    q.join()                        # returns once the child called task_done for each
    assert total.value == sum(range(50))
    assert a[:] == array.array("q", [i * i for i in range(50)])
    join_ok(p)


def test_proxies_through_a_queue(ctx_manager, procs):
    """The proxies are pickled after the child started (not as Process arguments)."""
    ctx, m = ctx_manager
    q, v, a = m.Queue(), m.Value("i", 0), m.Array("i", [0, 0, 0])
    carrier, out = ctx.Queue(), ctx.Queue()
    p = start(procs, ctx, _from_queue, carrier, out)
    carrier.put((q, v, a))
    assert out.get(timeout=60) == "ok"
    assert q.get(timeout=60) == "from child"
    join_ok(p)
    assert v.value == ("child", p.pid)
    assert a[:] == array.array("i", [42, 5, 6])


def test_proxies_as_pool_arguments(ctx_manager):
    ctx, m = ctx_manager
    q, v, a = m.Queue(), m.Value("i", 7), m.Array("i", [0] * 8)
    with ctx.Pool(2) as pool:
        assert pool.map(_pool_task, [(q, v, a, i) for i in range(8)]) == [
            (i * i, 7) for i in range(8)]
    assert sorted(q.get(timeout=10) for _ in range(8)) == list(range(8))
    assert a[:] == array.array("i", [i * i for i in range(8)])


_INTERRUPT_SCRIPT = r"""
import sys, time
impl = __import__(sys.argv[1])
if __name__ == "__main__":
    m = impl.Manager()
    q = m.Queue()
    print("READY", flush=True)
    t0 = time.monotonic()
    try:
        q.get()
    except KeyboardInterrupt:
        print("INTERRUPTED %.3f" % (time.monotonic() - t0), flush=True)
    m.shutdown()
"""


@pytest.mark.timeout(120)
def test_ctrl_c_interrupts_a_blocked_get(mp, tmp_path):
    fastmp = load_impl("fastmp")
    where = os.path.dirname(os.path.dirname(os.path.abspath(fastmp.__file__)))
    script = tmp_path / "interrupt.py"
    script.write_text(_INTERRUPT_SCRIPT)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (where, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen([sys.executable, str(script), mp.__name__], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            cwd=str(tmp_path), text=True)
    try:
        assert proc.stdout.readline().strip() == "READY"
        time.sleep(0.5)
        sent = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        line = proc.stdout.readline()
        assert line.startswith("INTERRUPTED"), line + proc.stdout.read()
        assert time.monotonic() - sent < 5
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


# ---------------------------------------------------------------- fastmp only

def test_proxies_are_fastmps():
    fastmp = load_impl("fastmp")
    from fastmp import _mgr_data
    with fastmp.Manager() as m:
        q, jq, v, a = m.Queue(), m.JoinableQueue(), m.Value("i", 0), m.Array("i", [0])
        assert type(q) is _mgr_data.QueueProxy and type(jq) is _mgr_data.JoinableQueueProxy
        assert type(v) is _mgr_data.SharedValueProxy and type(a) is _mgr_data.SharedArrayProxy
        assert q._callmethod("put", (1,)) is None and q._callmethod("get") == 1
        assert v._callmethod("set", (5,)) is None and v._callmethod("get") == 5
        assert a._callmethod("__setitem__", (0, 3)) is None and a._callmethod("__len__") == 1
        for proxy, std_cls in ((v, std_managers.ValueProxy), (a, std_managers.ArrayProxy)):
            for name in std_cls._exposed_:
                assert getattr(type(proxy), name) is not getattr(std_cls, name), name
        assert type(v).value is not std_managers.ValueProxy.value


def test_pickled_object_kept_by_its_manager():
    """A proxy once pickled may be on its way to another process: its object (and on 3.13+ a
    queue's shut-down flag) stays until the manager shuts down, with no proxy left here."""
    fastmp = load_impl("fastmp")
    m = fastmp.Manager()
    data = [pickle.dumps(m.Queue()), pickle.dumps(m.Value("i", 4)),
            pickle.dumps(m.Array("i", [5]))]
    import gc
    gc.collect()
    m.Array("i", [0] * 64)          # would take a freed block
    q, v, a = (pickle.loads(d) for d in data)
    q.put(3)
    assert (q.get(timeout=10), v.value, a[0]) == (3, 4, 5)
    del q, v, a
    m.shutdown()
    for d in data:
        assert _raises(lambda: pickle.loads(d)) == (
            FileNotFoundError, "[Errno 2] No such file or directory")


def test_no_process(fastmp_ctx):
    """A manager used only for these typeids starts no process."""
    before = set(multiprocessing.active_children())
    with fastmp_ctx.Manager() as m:
        q, jq, v, a = m.Queue(), m.JoinableQueue(), m.Value("i", 0), m.Array("i", [0])
        q.put(1)
        jq.put(2)
        v.value = q.get() + jq.get()
        a[0] = v.value
        assert set(multiprocessing.active_children()) == before
        assert m._number_of_objects() == 0 and a[0] == 3


def test_array_length_is_fixed():
    """A slice assignment that would change the array's length raises ValueError (the
    stdlib's array.array would grow or shrink), the array unchanged."""
    fastmp = load_impl("fastmp")
    with fastmp.Manager() as m:
        a = m.Array("i", [1, 2, 3])
        assert _raises(lambda: a.__setitem__(slice(0, 1), array.array("i", [7, 8]))) == (
            ValueError, "the length of a manager's Array cannot change (a slice assignment "
            "would make it 4, not 3)")
        with pytest.raises(ValueError):
            a[:] = array.array("i")
        assert a[:] == array.array("i", [1, 2, 3]) and len(a) == 3


def test_killed_mid_put_leaves_the_queue_usable(fastmp_ctx, procs):
    m = fastmp_ctx.Manager()
    try:
        q = m.Queue()
        ready = fastmp_ctx.Event()
        p = start(procs, fastmp_ctx, _stall_then_sleep, q, ready)
        assert ready.wait(60)
        os.kill(p.pid, signal.SIGKILL)
        p.join(30)
        assert p.exitcode == -signal.SIGKILL
        assert q.get(timeout=30) == "before"
        q.put("after")
        assert q.get(timeout=30) == "after" and q.qsize() == 0
        # a producer killed at a random moment: every item it put is there once, in order (a
        # bounded queue: its ring does not grow, so the killed child made no segment of its own)
        q = m.Queue(1000)
        ready.clear()
        p = start(procs, fastmp_ctx, _put_forever, q, ready)
        assert ready.wait(60)
        got = []
        deadline = time.monotonic() + 0.4
        while time.monotonic() < deadline:
            got.append(q.get(timeout=30))
        os.kill(p.pid, signal.SIGKILL)
        p.join(30)
        while True:
            try:
                got.append(q.get(timeout=1))
            except queue.Empty:
                break
        assert got == list(range(len(got))) and len(got) > 0
        q.put("still works")
        assert q.get(timeout=10) == "still works"
    finally:
        m.shutdown()


def _mapped_fastmp_segments():
    with open("/proc/self/maps") as f:
        return set(re.findall(r"/dev/shm/(fastmp-[0-9a-f]+)", f.read()))


def _count_mappings():
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


@pytest.mark.timeout(300)
def test_make_and_drop_stays_flat():
    """Queues, Values and Arrays made and dropped in a loop go with their last proxy: mappings
    and /dev/shm entries stay flat while the manager lives."""
    fastmp = load_impl("fastmp")
    with fastmp.Manager() as m:
        def cycle(i):
            q = m.Queue()
            q.put(i)
            v = m.Value("i", i)
            a = m.Array("i", [i, i])
            assert q.get() == i and v.value == i and a[1] == i
        for i in range(500):
            cycle(i)
        maps_before = _count_mappings()
        segs_before = _mapped_fastmp_segments()
        for i in range(20000):
            cycle(i)
        assert _count_mappings() <= maps_before + 8
        assert len(_mapped_fastmp_segments() - segs_before) <= 2


_SHM_SCRIPT = r"""
import os, pickle, re, sys, time
import fastmp

def report():
    with open("/proc/self/maps") as f:
        for name in sorted(set(re.findall(r"/dev/shm/(fastmp-[^\s]+)", f.read()))):
            print("SHM", name, flush=True)

if __name__ == "__main__":
    m = fastmp.Manager()
    q, jq, v, a = m.Queue(), m.JoinableQueue(), m.Value("i", 1), m.Array("d", [0.5] * 1000)
    kept = [pickle.dumps(x) for x in (q, jq, v, a)]
    for i in range(3000):
        q.put("x" * 100)
        jq.put(i)
    report()
    if sys.argv[1] == "kill":
        print("READY", flush=True)
        time.sleep(120)
    m.shutdown()
    print("DONE", flush=True)
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["clean", "kill"])
def test_nothing_left_in_dev_shm(tmp_path, mode):
    names, out = run_shm_program(tmp_path, _SHM_SCRIPT, mode)
    assert len(names) >= 2, out
    assert shm_gone_within(names, 10.0) == set(), out
