"""Value, Array, RawValue, RawArray, copy and synchronized.

The behavioural tests run against the stdlib (the reference, ids ``stdlib...``) and fastmp
(``fastmp...``), in every start method where processes are involved.  fastmp's extensions
(atomic operations, lock-free element access, huge blocks) are tested on fastmp alone.
"""
import array
import ctypes
import gc
import os
import pickle
import sys
import threading

import pytest

import _sharedctypes_targets as targets
from _sharedctypes_targets import Point
from conftest import join_ok, load_impl, shm_entries, shm_gone_within, start

JOIN = 60.0

TYPECODES = {
    # typecode: (ctypes type, a value that round-trips, a second one)
    'c': (ctypes.c_char, b'x', b'\xff'),
    'u': (ctypes.c_wchar, 'x', '\u20ac'),
    'b': (ctypes.c_byte, -128, 127),
    'B': (ctypes.c_ubyte, 0, 255),
    'h': (ctypes.c_short, -32768, 32767),
    'H': (ctypes.c_ushort, 0, 65535),
    'i': (ctypes.c_int, -2**31, 2**31 - 1),
    'I': (ctypes.c_uint, 0, 2**32 - 1),
    'l': (ctypes.c_long, -2**(8 * ctypes.sizeof(ctypes.c_long) - 1), 7),
    'L': (ctypes.c_ulong, 2**(8 * ctypes.sizeof(ctypes.c_ulong)) - 1, 7),
    'q': (ctypes.c_longlong, -2**63, 2**63 - 1),
    'Q': (ctypes.c_ulonglong, 0, 2**64 - 1),
    'f': (ctypes.c_float, 0.5, -1.25),
    'd': (ctypes.c_double, 1 / 3, -1e300),
}
INTEGER_CODES = "bBhHiIlLqQ"


def sharedctypes_of(ctx):
    """The sharedctypes module of the implementation ctx belongs to."""
    if type(ctx).__module__.startswith("fastmp"):
        import fastmp.sharedctypes
        return fastmp.sharedctypes
    import multiprocessing.sharedctypes
    return multiprocessing.sharedctypes


@pytest.fixture
def fm():
    return load_impl("fastmp")


@pytest.fixture
def sc():
    load_impl("fastmp")
    import fastmp.sharedctypes
    return fastmp.sharedctypes


# ---------------------------------------------------------------- with processes

@pytest.mark.timeout(120)
def test_child_negates_array_and_sets_value(ctx, procs):
    arr = ctx.Array('i', range(10))
    dbl = ctx.Array('d', [0.5 * i for i in range(10)])
    val = ctx.Value('i', 0)
    text = ctx.Array('c', 20)
    text.value = b"parent"
    point = ctx.Value(Point, 3, 1.5)
    join_ok(start(procs, ctx, targets.negate_and_set, arr, val, text, point))
    assert arr[:] == [-i for i in range(10)]
    assert val.value == 42
    assert text.value == b"set by the child"
    assert (point.x, point.y) == (6, 3.0)
    join_ok(start(procs, ctx, targets.negate_and_set, dbl, val, text, point))
    assert dbl[:] == [-0.5 * i for i in range(10)]


@pytest.mark.timeout(120)
def test_child_negates_raw_objects(ctx, procs):
    arr = ctx.RawArray('q', [2**40 + i for i in range(5)])
    val = ctx.RawValue('h', 1)
    join_ok(start(procs, ctx, targets.negate_raw, arr, val))
    assert list(arr) == [-(2**40 + i) for i in range(5)]
    assert val.value == 42
    arr2 = ctx.Array('f', [1.0, -2.0], lock=False)
    val2 = ctx.Value('d', 1.0, lock=False)
    join_ok(start(procs, ctx, targets.negate_raw, arr2, val2))
    assert list(arr2) == [-1.0, 2.0]
    assert val2.value == 42.0


@pytest.mark.timeout(180)
def test_four_processes_increment_under_the_lock(ctx, procs):
    n = 2000
    counter = ctx.Value('i', 0)
    ps = [start(procs, ctx, targets.locked_increments, counter, n) for _ in range(4)]
    for p in ps:
        join_ok(p)
    assert counter.value == 4 * n


@pytest.mark.timeout(120)
def test_big_array_shared_with_child(ctx, procs):
    n = 1_000_000                       # 8 MB of doubles: far above the 64 KiB blocks
    arr = ctx.Array('d', n)
    assert len(arr) == n
    arr[n - 1] = 1.5
    join_ok(start(procs, ctx, targets.check_and_mark_big, arr, 1.5, 7.0))
    marked = arr[::4096]
    assert marked == [7.0] * len(range(0, n, 4096))
    assert arr[1] == 0.0 and arr[n - 1] == 1.5
    raw = ctx.RawArray('b', 70_000)     # just above the largest block class
    raw[69_999] = 3
    join_ok(start(procs, ctx, targets.check_and_mark_big, raw, 3, 9))
    assert raw[0] == 9 and raw[4096] == 9 and raw[1] == 0


@pytest.mark.timeout(120)
def test_child_copies_slices(ctx, procs):
    src = ctx.Array('d', [float(i) for i in range(100_000)])
    dst = ctx.Array('d', 100_000)
    join_ok(start(procs, ctx, targets.copy_slice, src, dst))
    assert dst[:] == src[:]


@pytest.mark.timeout(120)
def test_every_typecode_in_child(ctx, procs):
    checks = []
    for code, (_, a, b) in TYPECODES.items():
        checks.append((ctx.Value(code, a), "value", a))
        # a c_char array's slice is bytes, a c_wchar array's str, others' a list
        both = a + b if code in "cu" else [a, b]
        checks.append((ctx.Array(code, [a, b]), "slice", both))
        checks.append((ctx.RawArray(code, [b, a]), "slice", b + a if code in "cu" else [b, a]))
    join_ok(start(procs, ctx, targets.check_values, checks))


# ---------------------------------------------------------------- values and typecodes

@pytest.mark.parametrize("code", list(TYPECODES))
def test_typecode_round_trip(ctx, code):
    ctype, a, b = TYPECODES[code]
    for lock in (True, False):
        v = ctx.Value(code, a, lock=lock)
        assert v.value == a
        v.value = b
        assert v.value == b
        raw = v if lock is False else v.get_obj()
        assert type(raw) is ctype
        arr = ctx.Array(code, [a, b, a], lock=lock)
        assert len(arr) == 3
        assert [arr[0], arr[1], arr[-1]] == [a, b, a]
        arr[1] = a
        arr[-3] = b
        assert [arr[i] for i in range(3)] == [b, a, a]
        assert list(arr) == [b, a, a]
        zeros = ctx.Array(code, 4, lock=lock)
        assert list(zeros) == [ctype().value] * 4


def test_values_truncate_like_ctypes(ctx):
    # the stdlib stores through ctypes, which silently truncates integers
    cases = [('b', 300), ('B', -1), ('h', 2**20 + 5), ('I', -2), ('i', 2**40 + 3), ('Q', -1)]
    for code, x in cases:
        v = ctx.Value(code, 0)
        v.value = x
        expected = TYPECODES[code][0](x).value
        assert v.value == expected
        a = ctx.Array(code, 2)
        a[0] = x
        a[1:] = [x]
        assert a[:] == [expected, expected]
    f = ctx.Value('f', 0.0)
    f.value = 0.1
    assert f.value == ctypes.c_float(0.1).value
    b = ctx.Value(ctypes.c_bool, False)
    b.value = [1]
    assert b.value is True


def test_ctypes_types_accepted(ctx):
    assert ctx.Value(ctypes.c_bool, True).value is True
    assert ctx.Value(ctypes.c_longdouble, 2.5).value == 2.5
    assert ctx.Value(ctypes.c_size_t, 2**40).value == 2**40
    assert ctx.Value(ctypes.c_int8, -3).value == -3
    v = ctx.Value(ctypes.c_longdouble, 1.0)
    with v.get_lock():
        v.value += 1
    assert v.value == 2.0
    a = ctx.Array(ctypes.c_uint16, [1, 2, 3])
    assert a[:] == [1, 2, 3]
    b = ctx.Array(ctypes.c_bool, [True, False])
    assert b[:] == [True, False]


def test_structure_value(ctx):
    p = ctx.Value(Point, 2, 0.5)
    assert type(p).__name__ == "SynchronizedPoint"
    assert isinstance(p.get_obj(), Point)
    assert (p.x, p.y) == (2, 0.5)
    p.x = 5
    with p.get_lock():
        p.y += 1
    assert (p.x, p.y) == (5, 1.5)
    assert repr(p).startswith("<SynchronizedPoint wrapper for <")
    q = ctx.Value(Point, 1, 2)
    assert type(q) is type(p)               # one wrapper class per Structure
    pts = ctx.Array(Point, [(1, 1.0), (2, 2.0)])
    assert pts[1].x == 2
    pts[0] = Point(7, 7.0)
    assert pts[0].y == 7.0
    with pytest.raises(TypeError):
        ctx.Value(Point, 1, 2, 3)           # too many initializers


def test_char_array_value_and_raw(ctx):
    s = ctx.Array('c', b"hello\0world")
    assert s.value == b"hello"
    assert s.raw == b"hello\0world"
    assert s[0] == b"h"
    assert s[1:3] == b"el"
    assert s[::-1] == b"dlrow\0olleh"
    s.value = b"abc"
    assert s.raw == b"abc\0o\0world"
    s.raw = b"x" * 11
    assert s.value == b"x" * 11
    s[0] = b"y"
    s[1] = 65
    s[2:4] = b"zz"
    assert s.value == b"yAzz" + b"x" * 7
    assert len(s) == 11
    u = ctx.Array('u', "h\u20acllo")
    assert u[:] == "h\u20acllo"
    assert u[1] == "\u20ac"
    assert u.get_obj().value == "h\u20acllo"


def test_slices(ctx):
    a = ctx.Array('i', range(10))
    ref = list(range(10))
    for sl in (slice(None), slice(2, 5), slice(None, None, 3), slice(8, 1, -2), slice(-3, None),
               slice(5, 2), slice(100, 200), slice(None, None, -1)):
        assert a[sl] == ref[sl]
    a[2:5] = [20, 30, 40]
    ref[2:5] = [20, 30, 40]
    a[::-3] = [1, 2, 3, 4]
    ref[::-3] = [1, 2, 3, 4]
    a[7:7] = []
    assert a[:] == ref
    a[:] = array.array('i', range(100, 110))
    assert a[:] == list(range(100, 110))
    a[0:2] = (5, 6)
    assert a[:2] == [5, 6]
    d = ctx.Array('d', 4)
    d[:] = array.array('d', [0.5, 1.5, 2.5, 3.5])
    d[1:3] = array.array('f', [9.0, 8.0])       # another type: converted item by item
    assert d[:] == [0.5, 9.0, 8.0, 3.5]
    assert 8.0 in d and 7.0 not in d
    assert list(reversed(d)) == [3.5, 8.0, 9.0, 0.5]


def test_repr(ctx):
    assert repr(ctx.Value('i', 5)) == "<Synchronized wrapper for c_int(5)>"
    assert repr(ctx.Value('d', 0.5)) == "<Synchronized wrapper for c_double(0.5)>"
    assert repr(ctx.Array('i', 2)).startswith("<SynchronizedArray wrapper for <")
    assert "c_int_Array_2 object at 0x" in repr(ctx.Array('i', 2))
    assert repr(ctx.Array('c', 2)).startswith("<SynchronizedString wrapper for <")


def test_locks(ctx):
    v = ctx.Value('i', 1)
    lock = v.get_lock()
    assert type(lock).__name__ == "RLock"
    assert v.get_lock() is lock
    assert v.acquire() is True
    assert v.acquire() is True              # an RLock
    v.release()
    v.release()
    with v as entered:
        assert entered is True
    given = ctx.Lock()
    w = ctx.Value('i', 2, lock=given)
    assert w.get_lock() is given
    with w:
        assert not given.acquire(False)
    assert given.acquire(False)
    given.release()
    a = ctx.Array('d', 3, lock=given)
    assert a.get_lock() is given
    raw = ctx.Value('i', 3, lock=False)
    assert type(raw) is ctypes.c_int and raw.value == 3
    assert type(ctx.Array('i', 3, lock=False)) is ctypes.c_int * 3
    assert isinstance(ctx.Value('i', lock=None).get_lock(), type(lock))


def test_sharedctypes_module_functions(ctx):
    sc = sharedctypes_of(ctx)
    raw = sc.RawValue('i', 4)
    s = sc.synchronized(raw)
    assert type(s) is sc.Synchronized and s.get_obj() is raw
    assert isinstance(s, sc.SynchronizedBase)
    assert type(sc.synchronized(sc.RawArray('d', 2))) is sc.SynchronizedArray
    assert type(sc.synchronized(sc.RawArray('c', 2))) is sc.SynchronizedString
    assert issubclass(sc.SynchronizedString, sc.SynchronizedArray)
    arr = sc.RawArray('i', [1, 2, 3])
    c = sc.copy(arr)
    assert list(c) == [1, 2, 3]
    assert ctypes.addressof(c) != ctypes.addressof(arr)
    c[0] = 9
    assert arr[0] == 1
    p = sc.copy(sc.RawValue(Point, 1, 2.0))
    assert (p.x, p.y) == (1, 2.0)
    local = sc.synchronized(ctypes.c_int(5))      # any ctypes object, shared or not
    local.value += 1
    assert local.value == 6
    assert sc.Value('i', 3, ctx=ctx).value == 3
    assert sc.Array('i', 3, ctx=ctx, lock=False)[:] == [0, 0, 0]
    assert sc.typecode_to_type['d'] is ctypes.c_double


def test_raw_objects_are_ctypes(ctx):
    v = ctx.RawValue('i', 7)
    assert type(v) is ctypes.c_int
    ptr = ctypes.cast(ctypes.addressof(v), ctypes.POINTER(ctypes.c_int))
    ptr[0] = 8
    assert v.value == 8
    a = ctx.RawArray(ctypes.c_double, [1.0, 2.0])
    assert isinstance(a, ctypes.Array) and a._type_ is ctypes.c_double
    p = ctx.RawValue(Point, 1, 2.0)
    assert type(p) is Point and (p.x, p.y) == (1, 2.0)
    assert ctx.RawArray('i', 0)[:] == []


def test_buffer_protocol(ctx):
    a = ctx.Array('d', [1.0, 2.0, 3.0])
    m = memoryview(a.get_obj())
    assert m.format == '<d' and m.itemsize == 8 and m.shape == (3,) and not m.readonly
    m.cast('B').cast('d')[1] = 5.0               # zero copy: writes the shared memory
    assert a[1] == 5.0
    assert memoryview(ctx.RawArray('i', 2)).itemsize == ctypes.sizeof(ctypes.c_int)
    np = pytest.importorskip("numpy")
    view = np.frombuffer(a.get_obj(), dtype=np.float64)
    assert view.tolist() == [1.0, 5.0, 3.0]
    view[2] = 7.0
    assert a[2] == 7.0
    ints = np.frombuffer(ctx.RawArray('i', range(4)), dtype=np.intc)
    assert ints.tolist() == [0, 1, 2, 3]


# ---------------------------------------------------------------- bad input

def _raises(exc, fn, *args, **kwargs):
    with pytest.raises(exc):
        fn(*args, **kwargs)


def test_bad_typecodes_and_initializers(ctx):
    _raises(TypeError, ctx.Value, 'x')
    _raises(TypeError, ctx.Array, 'z', 3)
    _raises(TypeError, ctx.RawValue, 'w')
    _raises(TypeError, ctx.Value, [1])
    _raises(TypeError, ctx.Value, 'i', 1, 2)           # too many initializers
    _raises(TypeError, ctx.Value, 'i', 1.5)
    _raises(TypeError, ctx.Value, 'i', 'a')
    _raises(ValueError, ctx.Array, 'i', -1)
    _raises(TypeError, ctx.Array, 'i', 2.5)
    _raises(TypeError, ctx.Array, 'i', [1, 'a'])
    _raises(TypeError, ctx.Array, 'c', ['ab'])
    _raises(AttributeError, ctx.Value, 'i', 1, lock=object())
    _raises(AttributeError, ctx.Array, 'i', 1, lock=42)


def test_bad_element_access(ctx):
    a = ctx.Array('i', [1, 2, 3])
    for i in (3, -4, 2**70):
        _raises(IndexError, a.__getitem__, i)
        _raises(IndexError, a.__setitem__, i, 0)
    _raises(TypeError, a.__getitem__, 'x')
    _raises(TypeError, a.__getitem__, 1.0)
    _raises(TypeError, a.__setitem__, 0, 'x')
    _raises(TypeError, a.__setitem__, 0, 1.5)
    with pytest.raises(AttributeError):         # the stdlib's class has no __delitem__
        del a[0]
    with pytest.raises(AttributeError):
        del a[0:1]
    _raises(ValueError, a.__setitem__, slice(0, 2), [1])
    _raises(ValueError, a.__setitem__, slice(0, 2), [1, 2, 3])
    _raises(ValueError, a.__setitem__, slice(None), 5)
    _raises(TypeError, a.__setitem__, slice(0, 2), [1, 'x'])
    assert a[:] == [1, 2, 3] or not type(ctx).__module__.startswith("fastmp")
    v = ctx.Value('i', 1)
    _raises(TypeError, setattr, v, 'value', 'x')
    _raises(TypeError, setattr, v, 'value', 1.5)
    _raises(TypeError, len, v)
    _raises(AttributeError, delattr, v, 'value')
    s = ctx.Array('c', 3)
    _raises(TypeError, s.__setitem__, 0, 'x')
    _raises(TypeError, s.__setitem__, 0, 300)
    _raises(TypeError, s.__setitem__, 0, b'xy')
    _raises(ValueError, setattr, s, 'value', b'toolong')
    u = ctx.Array('u', 2)
    _raises(TypeError, u.__setitem__, 0, b'x')
    _raises(TypeError, u.__setitem__, 0, 'xy')
    d = ctx.Value('d', 0.0)
    _raises(TypeError, setattr, d, 'value', 'x')
    assert v.value == 1 and d.value == 0.0 and s.raw == b"\0\0\0"


def test_bad_input_leaves_fastmp_arrays_intact(fm):
    # fastmp converts a whole slice before it writes any of it (the stdlib writes the items
    # before the bad one)
    a = fm.Array('i', [1, 2, 3])
    with pytest.raises(TypeError):
        a[0:3] = [7, 8, 'x']
    assert a[:] == [1, 2, 3]
    with pytest.raises(ValueError):
        a[:] = array.array('i', [1, 2])
    assert a[:] == [1, 2, 3]


def test_already_synchronized(ctx):
    sc = sharedctypes_of(ctx)
    with pytest.raises(AssertionError):
        sc.synchronized(ctx.Value('i'))


def test_pickling_only_while_spawning(ctx):
    for obj in (ctx.Value('i', 1), ctx.Array('d', 2), ctx.Array('c', 2), ctx.Value(Point)):
        with pytest.raises(RuntimeError):
            pickle.dumps(obj)
    from multiprocessing.reduction import ForkingPickler
    for raw in (ctx.RawValue('i', 1), ctx.RawArray('d', 3)):
        with pytest.raises(RuntimeError):
            ForkingPickler.dumps(raw)


# ---------------------------------------------------------------- fastmp: implementation

def test_fastmp_types_are_c(fm, sc):
    v = fm.Value('i')
    assert type(v) is sc.Synchronized
    assert sc.Synchronized.__module__ == "fastmp.sharedctypes"
    assert type(fm.Array('i', 1)) is sc.SynchronizedArray
    assert type(fm.Array('c', 1)) is sc.SynchronizedString
    assert type(v.get_lock()) is fm.synchronize.RLock if hasattr(fm, "synchronize") else True
    assert type(fm.RawValue('i')._wrapper) is sc.BufferWrapper
    from fastmp import bench
    assert bench.impl_of(v) == "C"


@pytest.mark.parametrize("code", list(TYPECODES))
def test_fastmp_primitive_elements_are_direct(sc, code):
    assert sc.Value(code)._fm_direct() == TYPECODES[code][0]._type_
    assert sc.Array(code, 2)._fm_direct() == TYPECODES[code][0]._type_


def test_fastmp_other_elements_go_through_the_lock(sc):
    class MyInt(ctypes.c_int):
        pass

    for obj in (sc.Value(ctypes.c_longdouble), sc.Value(ctypes.c_char_p),
                sc.Value(MyInt), sc.Array(Point, 2), sc.Value(ctypes.c_int.__ctype_be__),
                sc.Array(ctypes.c_int * 2, 2)):
        assert obj._fm_direct() is None
    v = sc.Value(ctypes.c_int.__ctype_be__, 1)
    v.value = 2
    assert v.value == 2 and bytes(v.get_obj()) == b"\0\0\0\2"


@pytest.mark.timeout(30)
def test_fastmp_element_access_takes_no_lock(fm):
    # a non-recursive lock held by this thread: any lock taken by an element access would
    # deadlock (the stdlib's would); compound and slice operations do take it
    lock = fm.Lock()
    v = fm.Value('i', 1, lock=lock)
    a = fm.Array('d', [1.0, 2.0], lock=lock)
    with lock:
        v.value = 5
        assert v.value == 5
        a[1] = 3.0
        assert a[1] == 3.0 and a[-2] == 1.0 and len(a) == 2
        assert v.fetch_add(1) == 5
    assert a[:] == [1.0, 3.0]                    # slices lock (it is free again)
    hold = threading.Event()
    release = threading.Event()

    def holder():
        with lock:
            hold.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    hold.wait(10)
    got = []
    reader = threading.Thread(target=lambda: got.append(a[:]))
    reader.start()
    reader.join(0.2)
    assert reader.is_alive()                     # the slice waits for the lock
    release.set()
    reader.join(10)
    t.join(10)
    assert got == [[1.0, 3.0]]


@pytest.mark.timeout(180)
def test_fastmp_two_processes_1m_atomic_adds(fastmp_ctx, procs):
    n = 1_000_000
    counter = fastmp_ctx.Value('q', 0)
    ps = [start(procs, fastmp_ctx, targets.atomic_adds, counter, n) for _ in range(2)]
    for p in ps:
        join_ok(p)
    assert counter.value == 2 * n


@pytest.mark.timeout(180)
def test_fastmp_atomic_array_adds_in_processes(fastmp_ctx, procs):
    n = 20_000
    arr = fastmp_ctx.Array('H', 4)           # 16-bit: 3 * n wraps around
    ps = [start(procs, fastmp_ctx, targets.atomic_array_adds, arr, n) for _ in range(3)]
    for p in ps:
        join_ok(p)
    assert arr[:] == [(3 * n) % 65536] * 4


def test_fastmp_atomic_value_operations(sc):
    v = sc.Value('i', 10)
    assert v.load() == 10
    assert v.fetch_add() == 10 and v.value == 11
    assert v.fetch_add(5) == 11 and v.value == 16
    assert v.fetch_sub() == 16 and v.fetch_sub(6) == 15 and v.value == 9
    assert v.fetch_and(0b1100) == 9 and v.value == 8
    assert v.fetch_or(3) == 8 and v.value == 11
    assert v.fetch_xor(1) == 11 and v.value == 10
    assert v.exchange(-4) == 10 and v.value == -4
    assert v.compare_exchange(-4, 100) == (True, -4) and v.value == 100
    assert v.compare_exchange(-4, 5) == (False, 100) and v.value == 100
    assert v.store(-2**31) is None and v.load() == -2**31
    # results wrap around as in C; operands must fit the type
    assert v.fetch_sub(1) == -2**31 and v.value == 2**31 - 1
    with pytest.raises(OverflowError):
        v.fetch_add(2**31)
    with pytest.raises(OverflowError):
        v.store(-2**31 - 1)
    with pytest.raises(OverflowError):
        v.compare_exchange(2**40, 0)
    assert v.value == 2**31 - 1
    with pytest.raises(TypeError):
        v.fetch_add(1.0)
    with pytest.raises(TypeError):
        v.fetch_add(1, 2)
    with pytest.raises(TypeError):
        v.compare_exchange(1)
    u = sc.Value('Q', 2**64 - 1)
    assert u.fetch_add(1) == 2**64 - 1 and u.value == 0
    assert u.fetch_sub(1) == 0 and u.value == 2**64 - 1
    with pytest.raises(OverflowError):
        u.fetch_add(-1)
    with pytest.raises(OverflowError):
        u.store(2**64)
    b = sc.Value('b', 127)
    assert b.fetch_add(1) == 127 and b.value == -128
    for code in INTEGER_CODES:
        w = sc.Value(code, 3)
        assert w.fetch_add(2) == 3 and w.load() == 5, code
    for code in "cudf":
        with pytest.raises(TypeError):
            sc.Value(code).fetch_add(1)
    with pytest.raises(TypeError):
        sc.Value(ctypes.c_longdouble).load()
    raw = sc.Value('i', lock=False)
    assert not hasattr(raw, 'fetch_add')


def test_fastmp_atomic_array_operations(sc):
    a = sc.Array('l', [1, 2, 3])
    assert a.load(0) == 1 and a.load(-1) == 3
    assert a.fetch_add(1, 10) == 2 and a[1] == 12
    assert a.fetch_add(-1) == 3 and a[2] == 4
    assert a.exchange(0, 7) == 1 and a[0] == 7
    assert a.compare_exchange(0, 7, 8) == (True, 7)
    assert a.compare_exchange(0, 7, 9) == (False, 8)
    a.store(-3, 0)
    assert a[:] == [0, 12, 4]
    for bad in (3, -4):
        with pytest.raises(IndexError):
            a.fetch_add(bad, 1)
    with pytest.raises(TypeError):
        a.load()
    with pytest.raises(TypeError):
        a.load('x')
    with pytest.raises(TypeError):
        sc.Array('d', 2).fetch_add(0, 1)


@pytest.mark.timeout(60)
def test_fastmp_huge_block_reclaimed_when_dropped(sc):
    from fastmp import _lifecycle
    arr = sc.Array('d', 1_000_000)
    name = arr.get_obj()._wrapper._fm_state()[0].lstrip("/")
    assert name in shm_entries()
    arr[999_999] = 1.0
    del arr
    gc.collect()
    assert name not in shm_entries()             # unlinked at once by its creator
    assert "/" + name in _lifecycle._gone or not _lifecycle._gone
    sc.Value('i')                                # the next creation tells the tracker
    assert _lifecycle._gone == []


@pytest.mark.timeout(60)
def test_fastmp_forked_child_leaves_the_parents_gone_names(sc):
    # a huge block unlinked by the parent while it cannot tell the tracker (this thread holds
    # the tracker's lock) waits in _gone until the parent's next creation; a child forked
    # meanwhile must not unregister it too (the tracker then prints a KeyError)
    import fastmp
    from multiprocessing import resource_tracker
    from fastmp import _lifecycle
    arr = sc.Array('d', 1_000_000)
    with resource_tracker._resource_tracker._lock:
        del arr
        gc.collect()
    assert len(_lifecycle._gone) == 1
    p = fastmp.get_context("fork").Process(target=targets.exit_with_pending_gone)
    p.start()
    p.join(30)
    assert p.exitcode == 0
    sc.Value('i')
    assert _lifecycle._gone == []


@pytest.mark.timeout(60)
def test_fastmp_huge_block_kept_while_a_view_lives(sc):
    raw = sc.RawArray('b', 100_000)
    name = raw._wrapper._fm_state()[0].lstrip("/")
    view = memoryview(raw).cast('B')
    del raw
    gc.collect()
    assert name in shm_entries()
    view[5] = 1
    del view
    gc.collect()
    assert name not in shm_entries()


def test_fastmp_buffer_wrapper(sc):
    w = sc.BufferWrapper(10)
    assert w.size == 10
    m = w.create_memoryview()
    assert len(m) == 10 and not m.readonly and bytes(m) == bytes(10)
    with pytest.raises(ValueError):
        sc.BufferWrapper(-1)
    name, off, size = w._fm_state()
    assert size == 10
    other = sc.BufferWrapper._fm_attach((name, off, 10))
    other.create_memoryview()[3] = 9
    assert m[3] == 9
    with pytest.raises(ValueError):
        sc.BufferWrapper._fm_attach((name, off, 100_000))   # more than the block holds
    with pytest.raises(ValueError):
        sc.BufferWrapper._fm_attach((name, off + 64, 1))
    with pytest.raises(TypeError):
        sc.BufferWrapper._fm_attach((name, off))


def test_fastmp_memoryview_of_wrapper(sc):
    a = sc.Array('i', [1, 2, 3])
    m = memoryview(a)
    assert m.shape == (3,) and m.itemsize == ctypes.sizeof(ctypes.c_int)
    m.cast('B').cast('i')[0] = 10
    assert a[0] == 10
    np = pytest.importorskip("numpy")
    assert np.frombuffer(a, dtype=np.intc).tolist() == [10, 2, 3]


def test_fastmp_slice_copy_from_buffers(sc):
    n = 1_000_000
    a = sc.Array('d', n)
    src = array.array('d', range(n))
    a[:] = src                                   # one copy (GIL released when large)
    assert a[n - 1] == n - 1.0 and a[12345] == 12345.0
    b = sc.Array('d', n)
    b[:] = a                                     # another shared array, as a buffer
    assert b[::100_000] == [float(i) for i in range(0, n, 100_000)]
    q = sc.Array('q', 3)
    q[:] = array.array('Q', [2**64 - 1, 1, 2])   # same width: the bits ctypes would store
    assert q[:] == [-1, 1, 2]
    c = sc.Array('c', 5)
    c[:] = b"hello"
    c[1:3] = bytearray(b"EL")
    assert c.value == b"hELlo"


def test_fastmp_wrapper_attributes(sc):
    v = sc.Value('i', 1)
    assert v._obj is v.get_obj() and v._lock is v.get_lock()
    v.extra = 5                                  # instances take attributes, as the stdlib's
    assert v.extra == 5
    import weakref
    assert weakref.ref(v)() is v
    assert sc.SynchronizedBase(ctypes.c_int(3)).get_obj().value == 3


@pytest.mark.timeout(120)
def test_fastmp_mixed_with_stdlib_objects_in_spawned_child(procs, fm):
    import multiprocessing
    ctx = fm.get_context("spawn")
    ours = ctx.RawArray('i', [1, 2])
    theirs = multiprocessing.sharedctypes.RawArray('i', [3, 4])
    join_ok(start(procs, ctx, targets.negate_raw, ours, fm.RawValue('i')))
    join_ok(start(procs, ctx, targets.negate_raw, theirs, fm.RawValue('i')))
    assert list(ours) == [-1, -2] and list(theirs) == [-3, -4]


def test_fastmp_sharedctypes_stubs_name_the_extensions():
    path = os.path.join(os.path.dirname(load_impl("fastmp").__file__), "sharedctypes.pyi")
    with open(path) as f:
        text = f.read()
    for name in ("fetch_add", "compare_exchange", "BufferWrapper", "SynchronizedString"):
        assert name in text


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip("fastmp targets Linux")


# ---------------------------------------------------------------- fresh interpreters

def _run_script(mode, out_path):
    import subprocess
    fastmp = load_impl("fastmp")
    where = os.path.dirname(os.path.dirname(os.path.abspath(fastmp.__file__)))
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (where, here, env.get("PYTHONPATH")) if p)
    with open(out_path, "w") as out:   # a file, not a pipe: the tracker may keep it open
        return subprocess.Popen([sys.executable, os.path.join(here, "_sharedctypes_targets.py"),
                                 mode], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=here)


@pytest.mark.timeout(120)
def test_fastmp_huge_segments_clean_after_normal_exit(tmp_path):
    out = tmp_path / "out.txt"
    proc = _run_script("clean", out)
    try:
        rc = proc.wait(100)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out.read_text()
    lines = text.splitlines()
    assert rc == 0 and lines[-1] == "DONE", text
    names = {ln.split()[1] for ln in lines if ln.startswith("SHM ")}
    assert len(names) == 3, text                  # one arena, two huge segments
    assert shm_gone_within(names, 5.0) == set()
    # the tracker was told of the early unlink: it has nothing to warn about
    assert "leaked" not in text and "Traceback" not in text, text


@pytest.mark.timeout(60)
def test_fastmp_huge_segments_clean_after_sigkill(tmp_path):
    import signal
    import time
    out = tmp_path / "out.txt"
    proc = _run_script("kill", out)
    try:
        deadline = time.monotonic() + 30
        while "READY" not in out.read_text():
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, "the script never got ready"
            time.sleep(0.05)
        names = {ln.split()[1] for ln in out.read_text().splitlines()
                 if ln.startswith("SHM ")}
        assert len(names) == 3 and names <= shm_entries()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert shm_gone_within(names, 5.0) == set()     # the resource tracker unlinked them
