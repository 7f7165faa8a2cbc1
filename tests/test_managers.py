"""Manager().dict(), .list(), .Namespace(): fastmp's (in shared memory, no server round trip)
against the stdlib's (a server process).  The same body runs against both (the `mp` / `ctx`
fixtures), with exact expected values: what the stdlib does is the reference."""
import operator
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from multiprocessing import managers as std_managers

import pytest

import _managers_targets as T
from conftest import join_ok, load_impl, run_shm_program, shm_gone_within, start

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def _neg(x):
    return -x


_LAMBDA = lambda: 0  # noqa: E731  (pickle cannot find it by name: PicklingError)


def _unpicklable():
    return _LAMBDA


# ------------------------------------------------------------------------- dict

def test_dict_methods(manager):
    d = manager.dict({"a": 1}, b=2)
    assert len(d) == 2
    d["c"] = [3]
    assert d["c"] == [3]
    assert d.keys() == ["a", "b", "c"]
    assert d.values() == [1, 2, [3]]
    assert d.items() == [("a", 1), ("b", 2), ("c", [3])]
    assert d.copy() == {"a": 1, "b": 2, "c": [3]}
    assert type(d.copy()) is dict and type(d.keys()) is list
    assert list(iter(d)) == ["a", "b", "c"]
    assert "a" in d and "z" not in d
    assert d.get("a") == 1 and d.get("z") is None and d.get("z", 7) == 7
    assert d.setdefault("a", 9) == 1 and d.setdefault("s") is None and d.setdefault("t", 5) == 5
    assert d.pop("s") is None and d.pop("z", 3) == 3
    d["a"] = 10                     # replacing keeps the key's place
    assert d.keys() == ["a", "b", "c", "t"]
    assert d.popitem() == ("t", 5)
    del d["b"]
    d.update({"x": 1}, y=2)
    d.update([("z", 3)])
    assert d.items() == [("a", 10), ("c", [3]), ("x", 1), ("y", 2), ("z", 3)]
    assert str(d) == "{'a': 10, 'c': [3], 'x': 1, 'y': 2, 'z': 3}"
    assert repr(d).startswith("<DictProxy object, typeid 'dict' at 0x")
    assert d._getvalue() == {"a": 10, "c": [3], "x": 1, "y": 2, "z": 3}
    d.clear()
    assert len(d) == 0 and d.items() == [] and not d


def test_dict_errors_leave_it_unchanged(manager):
    d = manager.dict(a=1)
    with pytest.raises(KeyError) as e:
        d["z"]
    assert e.value.args == ("z",)
    with pytest.raises(KeyError) as e:
        del d["z"]
    assert e.value.args == ("z",)
    with pytest.raises(KeyError) as e:
        d.pop("z")
    assert e.value.args == ("z",)
    for op in (lambda: d[[1]], lambda: d.__setitem__([1], 2), lambda: d.get({}),
               lambda: d.__delitem__([1])):
        with pytest.raises(TypeError) as e:
            op()
        assert str(e.value).startswith("unhashable type: ")
    with pytest.raises(pickle.PicklingError):
        d["f"] = _unpicklable()
    with pytest.raises(TypeError) as e:
        d.pop()
    assert str(e.value) == "pop expected at least 1 argument, got 0"
    with pytest.raises(ValueError) as e:
        d.update([(1, 2, 3)])
    assert str(e.value) == "dictionary update sequence element #0 has length 3; 2 is required"
    assert d.copy() == {"a": 1}
    d.clear()
    with pytest.raises(KeyError) as e:
        d.popitem()
    assert e.value.args == ("popitem(): dictionary is empty",)


def test_equal_keys_are_one_key(manager):
    d = manager.dict()
    d[1] = "int"
    d[1.0] = "float"
    d[True] = "bool"
    assert len(d) == 1 and d[1] == "bool" and d[1.0] == "bool" and 1.0 in d
    d[(1, 2.0)] = "t"
    assert d[(1.0, 2)] == "t" and d[(True, 2)] == "t"
    d[frozenset({"a", "b", "c"})] = "f"
    assert d[frozenset(["c", "b", "a"])] == "f"
    shared, fresh = ("ab", "ab"), ("ab", "".join(["a", "b"]))
    assert shared[0] is shared[1] and fresh[0] is not fresh[1]
    d[shared] = "same parts"
    assert d[fresh] == "same parts"
    d[(shared, shared)] = "nested"
    assert d[(fresh, ("ab", "".join(["a", "b"])))] == "nested"
    d[-0.0] = "zero"
    assert d[0] == "zero"
    d[0.5] = "half"
    assert d[0.5] == "half" and len(d) == 7


def test_frozenset_key_in_another_process(ctx_manager, procs):
    ctx, m = ctx_manager
    d = m.dict()
    members = ["alpha", "beta", "gamma", "delta", "epsilon"]
    d[frozenset(members)] = "found"
    d[(1.0, 2)] = "tuple"
    p = start(procs, ctx, T.read_frozen_key, d, repr(members[::-1]))
    join_ok(p)


def test_value_read_is_a_copy(manager):
    d = manager.dict(x=[1])
    v = d["x"]
    v.append(2)
    assert d["x"] == [1]
    lst = manager.list([[1]])
    lst[0].append(2)
    assert lst[0] == [1]


def test_one_mib_value(manager):
    big = os.urandom(1 << 20)
    d = manager.dict()
    d["big"] = big
    d["small"] = 1
    assert d["big"] == big and d["small"] == 1
    lst = manager.list()
    lst.append(big)
    lst.append(big[::-1])
    assert lst[0] == big and lst[1] == big[::-1]


def test_many_keys_grow(manager):
    d = manager.dict()
    d.update({i: str(i) * 3 for i in range(5000)})
    for i in range(0, 5000, 2):
        del d[i]
    assert len(d) == 2500
    assert d[4999] == "4999" * 3 and 4998 not in d
    assert d.keys()[:3] == [1, 3, 5]


# ------------------------------------------------------------------------- list

def test_list_methods(manager):
    lst = manager.list([3, 1, 2])
    assert len(lst) == 3 and lst[0] == 3 and lst[-1] == 2
    lst.append(5)
    lst.extend([4, 4])
    lst.insert(0, 0)
    lst.insert(100, 9)
    lst.insert(-100, -1)
    assert lst[:] == [-1, 0, 3, 1, 2, 5, 4, 4, 9]
    assert lst[1:4] == [0, 3, 1] and lst[::-2] == [9, 4, 2, 3, -1] and type(lst[1:2]) is list
    assert lst.count(4) == 2 and lst.index(4) == 6 and lst.index(4, 7) == 7
    assert 5 in lst and 8 not in lst
    assert lst.pop() == 9 and lst.pop(0) == -1 and lst.pop(-2) == 4
    lst.remove(3)
    assert lst[:] == [0, 1, 2, 5, 4]
    lst.reverse()
    assert lst[:] == [4, 5, 2, 1, 0]
    lst.sort()
    assert lst[:] == [0, 1, 2, 4, 5]
    lst.sort(key=_neg)
    assert lst[:] == [5, 4, 2, 1, 0]
    lst.sort(reverse=True, key=_neg)
    assert lst[:] == [0, 1, 2, 4, 5]
    lst[1] = "one"
    lst[1:3] = ["a", "b", "c"]
    assert lst[:] == [0, "a", "b", "c", 4, 5]
    del lst[1]
    del lst[::2]
    assert lst[:] == ["b", 4]
    assert lst + [1] == ["b", 4, 1] and lst * 2 == ["b", 4, "b", 4] and 2 * lst == ["b", 4] * 2
    assert list(reversed(lst)) == [4, "b"]
    assert list(lst) == ["b", 4]          # iteration by index, as the stdlib's proxy does
    same = lst
    lst += [7]
    assert lst is same and lst[:] == ["b", 4, 7]
    lst *= 2
    assert lst is same and lst[:] == ["b", 4, 7, "b", 4, 7]
    assert str(lst) == "['b', 4, 7, 'b', 4, 7]"
    assert repr(lst).startswith("<ListProxy object, typeid 'list' at 0x")
    assert lst._getvalue() == ["b", 4, 7, "b", 4, 7]
    assert not manager.list() and lst


def _list_error(index, value):
    """The text of the error a list raises for lst[index] = value (it varies by version)."""
    try:
        [1, 2][index] = value
    except TypeError as exc:
        return str(exc)
    raise AssertionError("no error")


def test_list_errors_leave_it_unchanged(manager):
    lst = manager.list([1, 2])
    cases = [
        (lambda: lst[5], IndexError, "list index out of range"),
        (lambda: lst.__setitem__(5, 0), IndexError, "list assignment index out of range"),
        (lambda: lst.__delitem__(-5), IndexError, "list assignment index out of range"),
        (lambda: lst.pop(5), IndexError, "pop index out of range"),
        (lambda: lst["a"], TypeError, "list indices must be integers or slices, not str"),
        (lambda: lst.__setitem__(slice(0, 2, 1), 5), TypeError, _list_error(slice(0, 2, 1), 5)),
        (lambda: lst.__setitem__(slice(None, None, 2), [1, 2, 3]), ValueError,
         "attempt to assign sequence of size 3 to extended slice of size 1"),
        (lambda: lst.remove(7), ValueError, "list.remove(x): x not in list"),
        (lambda: lst.index(2, 0, 1), ValueError, "2 is not in list"),
        (lambda: lst + (1,), TypeError, 'can only concatenate list (not "tuple") to list'),
        (lambda: lst.__imul__("a"), TypeError, "'str' object cannot be interpreted as an integer"),
    ]
    for op, exc, msg in cases:
        with pytest.raises(exc) as e:
            op()
        assert str(e.value) == msg
    with pytest.raises(pickle.PicklingError):
        lst.append(_unpicklable())
    with pytest.raises(pickle.PicklingError):
        lst.extend([3, _unpicklable()])     # all or nothing
    assert lst[:] == [1, 2]
    del lst[:]
    with pytest.raises(IndexError) as e:
        lst.pop()
    assert str(e.value) == "pop from empty list"


# ---------------------------------------------------------------------- Namespace

def test_namespace(manager):
    ns = manager.Namespace(a=1)
    ns.b = [2]
    assert ns.a == 1 and ns.b == [2]
    ns.b.append(3)                          # a copy: not written back
    assert ns.b == [2]
    del ns.a
    with pytest.raises(AttributeError) as e:
        ns.a
    with pytest.raises(AttributeError) as native:
        std_managers.Namespace().a
    assert str(e.value) == str(native.value)
    with pytest.raises(AttributeError) as e:
        del ns.zz
    with pytest.raises(AttributeError) as native:
        del std_managers.Namespace().zz
    assert str(e.value) == str(native.value)
    ns.c = "x"
    assert str(ns) == "Namespace(b=[2], c='x')"
    assert repr(ns).startswith("<NamespaceProxy object, typeid 'Namespace' at 0x")


# ------------------------------------------------------------------ nesting, pickling

def test_nested_proxies(manager):
    outer = manager.list([manager.dict()])
    inner = outer[0]
    inner["k"] = "v"
    assert outer[0]["k"] == "v"
    d = manager.dict()
    lst = manager.list()
    d["l"] = lst
    d["l"].append(1)
    assert lst[:] == [1]


def test_dict_iterator_sees_size_changes(manager):
    d = manager.dict({i: chr(i) for i in range(65, 70)})
    it = iter(d)
    assert list(it) == [65, 66, 67, 68, 69] and list(it) == []
    it = iter(d)
    assert next(it) == 65
    d.clear()
    with pytest.raises(RuntimeError) as e:
        next(it)
    assert str(e.value) == "dictionary changed size during iteration"


def test_server_proxy_inside_a_shared_list(manager):
    lst = manager.list()
    lst.append(manager.Queue())         # the only reference to the queue's proxy
    lst[0].put(123)
    assert lst[0].get(timeout=10) == 123
    d = manager.dict(lock=manager.Lock())
    assert d["lock"].acquire(timeout=10) is True
    d["lock"].release()


def test_proxy_pickles_any_time(manager):
    d = manager.dict(a=1)
    again = pickle.loads(pickle.dumps(d))
    again["b"] = 2
    assert d.items() == [("a", 1), ("b", 2)]


def test_after_shutdown(mp):
    m = mp.Manager()
    d = m.dict(a=1)
    lst = m.list([1])
    ns = m.Namespace(x=1)
    data = pickle.dumps(d)
    assert (d["a"], lst[0], ns.x) == (1, 1, 1)   # used: the stdlib proxy is then connected
    m.shutdown()
    with pytest.raises(BrokenPipeError):
        d["a"]
    with pytest.raises(BrokenPipeError):
        len(lst)
    with pytest.raises(BrokenPipeError):
        ns.x
    with pytest.raises(FileNotFoundError):
        pickle.loads(data)
    with pytest.raises(AssertionError) as e:
        m.dict()
    assert str(e.value) == "server not yet started"


def test_not_started(mp):
    import importlib
    m = importlib.import_module(mp.__name__ + ".managers").SyncManager()
    with pytest.raises(AssertionError) as e:
        m.dict()
    assert str(e.value) == "server not yet started"


# -------------------------------------------------------------------- processes

def test_reads_see_every_change_of_another_process(ctx_manager, procs):
    # the proxies keep what they read until the object changes: two processes taking turns
    # through the dict lose nothing (a stale read would lose an increment or hang)
    ctx, m = ctx_manager
    d = m.dict(turn="a", n=0)
    rounds = 200
    p = start(procs, ctx, T.take_turns, d, "b", "a", rounds)
    T.take_turns(d, "a", "b", rounds)
    join_ok(p, timeout=120)
    assert d["n"] == 2 * rounds and d.get("n") == 2 * rounds


def test_reads_see_changes_through_another_proxy(manager):
    d = manager.dict(k=1, t=(1, 2))
    other = pickle.loads(pickle.dumps(d))
    ns = manager.Namespace(x=1)
    ns2 = pickle.loads(pickle.dumps(ns))
    for _ in range(3):
        assert (d["k"], d.get("k"), d["t"], ns.x) == (1, 1, (1, 2), 1)
    other["k"] = 2
    ns2.x = 2
    assert (d["k"], d.get("k"), ns.x) == (2, 2, 2)
    del other["k"]
    assert d.get("k") is None and "k" not in d
    with pytest.raises(KeyError):
        d["k"]
    other.update(k=3)
    assert d["k"] == 3
    other.clear()
    assert d.get("k", "gone") == "gone"


def test_reads_after_a_writer_died_mid_change(fastmp_ctx, procs):
    # the writer dies holding the lock with its change under way: the version stays odd,
    # and reads go to the object itself (no cache) until the next change
    m = fastmp_ctx.Manager()
    try:
        d = m.dict(k=1)
        assert d["k"] == 1
        p = start(procs, fastmp_ctx, T.write_then_die, d)
        p.join(60)
        assert p.exitcode == -signal.SIGKILL
        assert d._kv.version % 2 == 1
        assert [d["k"], d["k"]] == [2, 2]
        other = pickle.loads(pickle.dumps(d))
        other["k"] = 3
        assert d._kv.version % 2 == 0
        assert [d["k"], d["k"]] == [3, 3]
    finally:
        m.shutdown()


PLAIN_VALUES = [None, True, False, 0, 1, 255, 256, 65535, 65536, -1, -256, 2**31 - 1, -2**31,
                2**31, -2**31 - 1, 2**40, -2**40, 2**55, 2**63 - 1, -2**63, 1.5, -0.0,
                float("inf"), "", "a", "\u00e9" * 300, "\U0001f600", b"", b"x" * 255,
                b"y" * 256, b"z" * 60000]
NOT_PLAIN = [2**63, -2**63 - 1, "\ud800", "x" * 70000, b"z" * 70000, 1 + 2j, [1], (1,),
             bytearray(b"a")]


def test_plain_values_encoded_in_c():
    # what dict_set_plain stores reads back as the same value of the same type, and what it
    # does not take goes through managers.py's encoding
    from fastmp._core import SharedKV
    for v in PLAIN_VALUES:
        out = pickle.loads(SharedKV.encode_plain(v))
        assert type(out) is type(v) and out == v and repr(out) == repr(v)
    for v in NOT_PLAIN:
        assert SharedKV.encode_plain(v) is None
    nan = pickle.loads(SharedKV.encode_plain(float("nan")))
    assert nan != nan


def test_plain_keys_encoded_in_c_are_the_proxies_keys():
    from fastmp._core import SharedKV
    from fastmp import managers
    for k in ["", "ab", "\u00e9", 0, 5, -7, 2**63 - 1, -2**63]:
        assert SharedKV.encode_plain(k, key=True) == managers._enc_key(k)
    for k in ["\ud800", 2**64, True, 1.0, (1,), None]:
        assert SharedKV.encode_plain(k, key=True) is None


def test_keys_set_either_way_are_one_key(manager):
    d = manager.dict()
    d[1] = "int"            # encoded in C
    d[True] = "bool"        # encoded in Python: the same key
    d["\ud800"] = "lone"    # a str C leaves to Python
    d[2**70] = "big"
    for v in PLAIN_VALUES + NOT_PLAIN[:-1]:
        d["v"] = v
        assert d["v"] == v and type(d["v"]) is type(v)
    assert d[1] == "bool" and d[1.0] == "bool" and d["\ud800"] == "lone" and d[2**70] == "big"
    assert len(d) == 4


def test_two_processes_count_exactly(ctx_manager, procs):
    ctx, m = ctx_manager
    d = m.dict(n=0)
    lst = m.list()
    lock = ctx.Lock()
    n = 300
    ps = [start(procs, ctx, T.count_up, lock, d, lst, n, tag) for tag in ("a", "b")]
    for p in ps:
        join_ok(p, timeout=120)
    assert d["n"] == 2 * n
    assert len(lst) == 2 * n and lst.count("a") == n and lst.count("b") == n
    assert d["done-a"] is True and d["done-b"] is True


def test_proxy_as_pool_argument(ctx_manager):
    ctx, m = ctx_manager
    d = m.dict()
    with ctx.Pool(2) as pool:
        assert pool.map(T.set_square, [(d, i) for i in range(20)]) == [i * i for i in range(20)]
    assert sorted(d.items()) == [(i, i * i) for i in range(20)]


def test_proxy_through_a_queue(ctx_manager, procs):
    ctx, m = ctx_manager
    d = m.dict(parent=1)
    q, out = ctx.Queue(), ctx.Queue()
    p = start(procs, ctx, T.from_queue, q, out)
    q.put(d)
    assert out.get(timeout=60) == "ok"
    join_ok(p)
    assert d["child"] == p.pid and d["seen"] == ["child", "parent"]


def test_threads_append_exactly(manager):
    lst = manager.list()
    d = manager.dict()

    def work(t):
        for i in range(200):
            lst.append((t, i))
            d.setdefault(t, 0)
            d.update({(t, i): i})

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(lst) == 800 and len(d) == 4 + 800
    assert sorted(lst[:]) == [(t, i) for t in range(4) for i in range(200)]


# ------------------------------------------------------------------ fastmp only

def test_killed_writer_leaves_it_consistent(fastmp_ctx, procs):
    m = fastmp_ctx.Manager()
    try:
        d = m.dict()
        lst = m.list()
        ready = fastmp_ctx.Event()
        for round_ in range(3):
            p = start(procs, fastmp_ctx, T.write_forever, d, lst, ready)
            assert ready.wait(60)
            time.sleep(0.2 + 0.1 * round_)
            os.kill(p.pid, signal.SIGKILL)
            p.join(30)
            ready.clear()
            d._kv.check()
            lst._kv.check()
            items = d.items()
            assert len(items) > round_ + 1
            for k, v in items:
                assert v == (round_ - 1 if k == "after" else ("v", k, "x" * (k % 97)))
            # each child appended consecutive ints, and only a prefix was ever deleted: one
            # run of consecutive ints per child so far
            values = lst[:]
            breaks = sum(1 for a, b in zip(values, values[1:]) if b != a + 1)
            assert breaks <= round_
            # others carry on
            d["after"] = round_
            lst.append(10 ** 9 + round_)
            assert d["after"] == round_ and lst[-1] == 10 ** 9 + round_
            del lst[-1]
    finally:
        m.shutdown()


def test_lock_wait_is_interruptible(fastmp_ctx, procs):
    """A call waiting for a lock another process holds runs signal handlers (Ctrl-C)."""
    m = fastmp_ctx.Manager()
    try:
        d = m.dict()
        kv = d._kv
        assert kv.begin() is True
        # the same lock, held by this thread: another thread's call must wait
        box = []

        def other():
            try:
                box.append(kv.begin(timeout=0.3))
            except BaseException as exc:    # pragma: no cover
                box.append(exc)

        t = threading.Thread(target=other)
        t.start()
        t.join(30)
        assert box == [False]
        kv.end()
        if fastmp_ctx.get_start_method() != "fork":
            return
        pid = os.fork()
        if pid == 0:            # the child holds the shared lock until killed
            kv2 = pickle.loads(pickle.dumps(d))._kv
            kv2.begin()
            time.sleep(60)
            os._exit(0)
        try:
            deadline = time.monotonic() + 30
            while kv.begin(timeout=0) and time.monotonic() < deadline:
                kv.end()
                time.sleep(0.01)

            def alarm(*_):
                raise KeyboardInterrupt
            old = signal.signal(signal.SIGALRM, alarm)
            try:
                signal.setitimer(signal.ITIMER_REAL, 0.3)
                t0 = time.monotonic()
                with pytest.raises(KeyboardInterrupt):
                    d["x"] = 1
                assert time.monotonic() - t0 < 10
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, old)
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        d["x"] = 2              # the dead holder's lock is taken over
        assert d["x"] == 2
    finally:
        m.shutdown()


def _mapped_fastmp_segments():
    import re
    with open("/proc/self/maps") as f:
        return set(re.findall(r"/dev/shm/(fastmp-[0-9a-f]+)", f.read()))


def test_shutdown_unmaps_the_data_at_once():
    fastmp = load_impl("fastmp")
    m = fastmp.Manager()
    before = _mapped_fastmp_segments()
    d = m.dict()
    d.update({i: "x" * 100 for i in range(2000)})
    data = _mapped_fastmp_segments() - before
    assert len(data) >= 1          # the dict's data segment (and maybe a new arena)
    m.shutdown()
    left = _mapped_fastmp_segments()
    assert len(data - left) >= 1 and d is not None   # gone while the proxy still exists
    assert not any(os.path.exists("/dev/shm/" + n) for n in data - left)


def _count_mappings():
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


@pytest.mark.timeout(300)
def test_make_and_drop_stays_flat():
    """Objects made and dropped in a loop go with their last proxy: mappings, /dev/shm entries
    and memory stay flat while the manager lives (the stdlib's server frees them too)."""
    fastmp = load_impl("fastmp")
    with fastmp.Manager() as m:
        def cycle(i):
            d = m.dict()
            d["a"] = i
            lst = m.list([1, 2])
            ns = m.Namespace(x=i)
            assert d["a"] == i and lst[1] == 2 and ns.x == i
        for i in range(500):
            cycle(i)
        maps_before = _count_mappings()
        segs_before = _mapped_fastmp_segments()
        for i in range(20000):
            cycle(i)
        assert _count_mappings() <= maps_before + 8
        assert len(_mapped_fastmp_segments() - segs_before) <= 2


def test_pickled_object_kept_by_its_manager():
    """A proxy once pickled may be on its way to another process: its object stays until the
    manager shuts down, even with no proxy left in this process."""
    fastmp = load_impl("fastmp")
    m = fastmp.Manager()
    d = m.dict(a=1)
    data = pickle.dumps(d)
    del d
    again = pickle.loads(data)
    assert again["a"] == 1
    del again
    assert pickle.loads(data)["a"] == 1
    m.shutdown()
    with pytest.raises(FileNotFoundError):
        pickle.loads(data)


def test_proxies_are_the_shared_ones():
    fastmp = load_impl("fastmp")
    import multiprocessing.managers as std
    with fastmp.Manager() as m:
        d, lst, ns = m.dict(), m.list(), m.Namespace()
        assert isinstance(d, std.DictProxy) and isinstance(d, std.BaseProxy)
        assert isinstance(lst, std.ListProxy) and isinstance(ns, std.NamespaceProxy)
        assert hasattr(d, "_kv") and hasattr(lst, "_kv") and hasattr(ns, "_kv")
        assert d._callmethod("__setitem__", ("k", 1)) is None and d._callmethod("get", ("k",)) == 1
        # every method the stdlib's proxies expose is defined by fastmp's classes
        for cls, std_cls in ((type(d), std.DictProxy), (type(lst), std.ListProxy)):
            for name in std_cls._exposed_:
                assert getattr(cls, name) is not getattr(std_cls, name, None), (cls, name)


def test_server_only_when_needed(fastmp_ctx):
    """Manager() starts no process while only its C typeids are used; anything else
    starts the stdlib's server then, and works as with the stdlib."""
    import multiprocessing
    from fastmp import managers

    MyManager = T.MyManager
    before = set(multiprocessing.active_children())
    with fastmp_ctx.Manager() as m:
        d, lst, ns = m.dict(a=1), m.list([1]), m.Namespace(x=1)
        assert set(multiprocessing.active_children()) == before
        assert m._number_of_objects() == 0
        pool = m.Pool(1)                    # a server typeid: the server starts now
        assert len(set(multiprocessing.active_children()) - before) == 1
        assert pool.apply(operator.getitem, (d, "a")) == 1     # the server's worker reads d
        del pool
        other = managers.SyncManager(address=m.address, authkey=m._authkey)
        other.connect()
        remote = other.dict(b=2)            # a connected manager: the server's dict
        assert type(remote) is managers.DictProxy and remote.copy() == {"b": 2}
        del remote
    assert set(multiprocessing.active_children()) == before
    with pytest.raises(BrokenPipeError):
        d["a"]
    with managers.SyncManager(ctx=multiprocessing.get_context(
            fastmp_ctx.get_start_method())) as m:
        ns = m.Namespace(test=0)
        m2 = managers.SyncManager(ctx=m._ctx)
        m2.start(T.set_test, (ns,))     # an initializer runs in the server, at start
        assert ns.test == 1
        m2.shutdown()
        m2.join(10)
    mine = MyManager(ctx=multiprocessing.get_context(fastmp_ctx.get_start_method()))
    mine.start()
    try:
        c = mine.Counter()
        assert c.bump() == 1 and c.bump() == 2
        assert mine.dict(k=1).copy() == {"k": 1}
    finally:
        mine.shutdown()
    mine.join(10)


def _can_unshare():
    try:
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs -o size=1m tmpfs /dev/shm"],
                           capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _can_unshare(),
                    reason="needs `unshare -m` and a tmpfs mount (root) for a small /dev/shm")
@pytest.mark.timeout(300)
def test_full_dev_shm():
    """A value too large for /dev/shm: OSError(ENOSPC) or MemoryError, never SIGBUS; the objects
    unchanged and usable; no fastmp file left once the program is over."""
    fastmp = load_impl("fastmp")
    where = os.path.dirname(os.path.dirname(os.path.abspath(fastmp.__file__)))
    script = (
        "mount -t tmpfs -o size=64m tmpfs /dev/shm || exit 97\n"
        f"{sys.executable} {os.path.join(TESTS_DIR, '_managers_targets.py')} full\n"
        "rc=$?\n"
        "for i in $(seq 100); do ls /dev/shm | grep -q fastmp- || break; sleep 0.1; done\n"
        "left=$(ls /dev/shm | grep fastmp-)\n"
        "[ -n \"$left\" ] && { echo \"LEFT: $left\"; exit 98; }\n"
        "exit $rc\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (where, TESTS_DIR, os.environ.get("PYTHONPATH")) if p))
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                       capture_output=True, text=True, env=env, timeout=240, cwd=TESTS_DIR)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"exit {r.returncode} (-7 is SIGBUS):\n{out[-3000:]}"
    assert "OK full" in r.stdout, out[-3000:]


_SHM_SCRIPT = r"""
import os, re, sys, time
import fastmp

def report():
    with open("/proc/self/maps") as f:
        for name in sorted(set(re.findall(r"/dev/shm/(fastmp-[^\s]+)", f.read()))):
            print("SHM", name, flush=True)

if __name__ == "__main__":
    m = fastmp.Manager()
    d, lst = m.dict(), m.list()
    for i in range(3000):
        d[i] = "x" * 100
        lst.append(i)
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
    if mode == "clean":
        assert "resource_tracker" not in out, out
