"""ctypes objects in shared memory: RawValue, RawArray, Value, Array, copy, synchronized.

The same API as multiprocessing.sharedctypes, on fastmp's C core (``fastmp._core``):

* The memory is a block of fastmp's shared allocator (one segment of its own above 64 KiB),
  owned by a :class:`BufferWrapper`; ``RawValue``/``RawArray`` return real ctypes objects built
  over it with ``from_buffer`` (so ``ctypes.addressof``, Structure fields, ``numpy.frombuffer``
  and ``isinstance`` checks work as with the stdlib).
* ``Value``/``Array`` wrap them in :class:`Synchronized`, :class:`SynchronizedArray` or
  :class:`SynchronizedString` (C types, or for a Structure a generated subclass of
  :class:`SynchronizedBase`), with a fastmp RLock by default.  Reading or writing one element
  of a primitive type (integers, c_float, c_double, c_bool, c_char, c_wchar) is a single atomic
  access and takes no lock; slices, Structures and other types take the lock, as the stdlib
  does for everything.  Compound updates still need the lock:
  ``with v.get_lock(): v.value += 1``.
* Beyond the stdlib: integer Values and Arrays have lock-free atomic operations -- ``load``,
  ``store``, ``exchange``, ``compare_exchange``, ``fetch_add``, ``fetch_sub``, ``fetch_and``,
  ``fetch_or``, ``fetch_xor`` (arrays take the index first).  Their operands must fit the
  element type (OverflowError otherwise); results wrap around as in C.  They do not take the
  lock: do not mix them with locked read-modify-write of the same element.
* Objects pickle only while a process is being started (RuntimeError otherwise); a spawned
  child attaches the block by segment name and offset.
"""
import ctypes
import weakref

from multiprocessing import context as _mp_context
from multiprocessing import reduction as _reduction
# The typecodes the stdlib accepts (those of the array module, and 'c'): its own table.
from multiprocessing.sharedctypes import typecode_to_type

from . import _core
from . import _lifecycle  # noqa: F401  (segment tracking, fork and exit hooks)

__all__ = ['RawValue', 'RawArray', 'Value', 'Array', 'copy', 'synchronized']

BufferWrapper = _core.BufferWrapper
SynchronizedBase = _core.SynchronizedBase
Synchronized = _core.Synchronized
SynchronizedArray = _core.SynchronizedArray
SynchronizedString = _core.SynchronizedString

# The ctypes types whose elements the wrappers read and write directly (exact types only: a
# subclass of c_int, or a byte-swapped one, goes through ctypes under the lock).
SynchronizedBase._fm_set_kinds({
    t: t._type_ for t in (
        ctypes.c_char, ctypes.c_wchar, ctypes.c_bool,
        ctypes.c_byte, ctypes.c_ubyte, ctypes.c_short, ctypes.c_ushort,
        ctypes.c_int, ctypes.c_uint, ctypes.c_long, ctypes.c_ulong,
        ctypes.c_longlong, ctypes.c_ulonglong, ctypes.c_float, ctypes.c_double)
})


# ---------------------------------------------------------------- raw objects

def _ctype_of(typecode_or_type):
    try:
        type_ = typecode_to_type.get(typecode_or_type, typecode_or_type)
    except TypeError:  # unhashable
        type_ = typecode_or_type
    if isinstance(type_, str):
        raise TypeError(f"bad typecode {type_!r} (must be one of "
                        f"{' '.join(typecode_to_type)}, or a ctypes type)")
    return type_


def _new_value(type_):
    """A zeroed ctypes object of type_ in a new shared block."""
    wrapper = BufferWrapper(ctypes.sizeof(type_))
    return _rebuild_ctype(type_, wrapper, None)


def _reduce_ctype(obj):
    """ForkingPickler's reducer for shared ctypes objects (only while spawning).

    Works for the stdlib's objects too (their _wrapper also has create_memoryview), since the
    stdlib registers its reducer for the same ctypes types and the last registration wins."""
    _mp_context.assert_spawning(obj)
    if isinstance(obj, ctypes.Array):
        return _rebuild_ctype, (obj._type_, obj._wrapper, obj._length_)
    return _rebuild_ctype, (type(obj), obj._wrapper, None)


def _rebuild_ctype(type_, wrapper, length):
    if length is not None:
        type_ = type_ * length
    _reduction.ForkingPickler.register(type_, _reduce_ctype)
    if isinstance(wrapper, BufferWrapper):
        obj = type_.from_buffer(wrapper)
    else:  # a stdlib heap.BufferWrapper
        obj = type_.from_buffer(wrapper.create_memoryview())
    obj._wrapper = wrapper
    obj.__reduce_ex__ = _InheritanceOnly(obj)
    return obj


class _InheritanceOnly:
    """The ``__reduce_ex__`` of one shared ctypes object, set on the object itself.

    ForkingPickler reduces the object with _reduce_ctype (registered for its type), so this is
    what every other pickler and the copy module see.  Pickling then raises the stdlib's
    RuntimeError ("c_int_Array_3 objects should only be shared between processes through
    inheritance") wherever it happens -- a plain ``pickle.dumps``, a task argument of
    fastmp.Pool -- rather than failing on the lookup of the array type's name.  copy.copy still
    gives a private copy, as the stdlib's objects do.  Holds the object weakly: no cycle keeps a
    dropped object's shared block alive."""
    __slots__ = ("_ref",)

    def __init__(self, obj):
        self._ref = weakref.ref(obj)

    def __call__(self, protocol):
        obj = self._ref()
        if _mp_context.get_spawning_popen() is not None:
            return _reduce_ctype(obj)
        return _private_copy, (_NotPicklable(obj),)


class _NotPicklable:
    """Carries a shared ctypes object into _private_copy; pickled, raises as the stdlib does."""
    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __reduce__(self):
        _mp_context.assert_spawning(self.obj)
        return _private_copy, (self.obj,)   # not reached: no process is being started


def _private_copy(carrier):
    """copy.copy of a shared ctypes object: its bytes in private memory (its other attributes
    shared), as copying one of the stdlib's gives."""
    obj = carrier.obj if isinstance(carrier, _NotPicklable) else carrier
    new = type(obj).from_buffer_copy(obj)
    new.__dict__.update((k, v) for k, v in obj.__dict__.items() if k != "__reduce_ex__")
    return new


def _rebuild_buffer(state):
    return BufferWrapper._fm_attach(state)


def _reduce_buffer(self):
    _lifecycle.keep_alive_while_spawning(self)
    return _rebuild_buffer, (self._fm_state(),)


BufferWrapper.__reduce__ = _reduce_buffer


def RawValue(typecode_or_type, *args):
    """A ctypes object of the given type (or typecode) in shared memory, no lock."""
    type_ = _ctype_of(typecode_or_type)
    obj = _new_value(type_)
    obj.__init__(*args)
    return obj


def RawArray(typecode_or_type, size_or_initializer):
    """A ctypes array in shared memory, no lock: size_or_initializer is a length (zeroed) or a
    sequence of initial items."""
    type_ = _ctype_of(typecode_or_type)
    if isinstance(size_or_initializer, int):
        return _new_value(type_ * size_or_initializer)
    obj = _new_value(type_ * len(size_or_initializer))
    obj.__init__(*size_or_initializer)
    return obj


# ---------------------------------------------------------------- synchronized objects

def _lock_for(lock, ctx):
    if lock in (True, None):
        if ctx is not None:
            return ctx.RLock()
        from .synchronize import RLock
        return RLock()
    if not hasattr(lock, 'acquire'):
        raise AttributeError("%r has no method 'acquire'" % (lock,))
    return lock


def Value(typecode_or_type, *args, lock=True, ctx=None):
    """A shared ctypes value with a lock (lock=True: a new RLock; or the lock given), or the raw
    object (lock=False)."""
    obj = RawValue(typecode_or_type, *args)
    if lock is False:
        return obj
    return synchronized(obj, _lock_for(lock, ctx), ctx=ctx)


def Array(typecode_or_type, size_or_initializer, *, lock=True, ctx=None):
    """A shared ctypes array with a lock (lock=True: a new RLock; or the lock given), or the
    raw array (lock=False)."""
    obj = RawArray(typecode_or_type, size_or_initializer)
    if lock is False:
        return obj
    return synchronized(obj, _lock_for(lock, ctx), ctx=ctx)


def copy(obj):
    """A new shared ctypes object holding a copy of obj's bytes."""
    new_obj = _new_value(type(obj))
    ctypes.memmove(ctypes.addressof(new_obj), ctypes.addressof(obj), ctypes.sizeof(obj))
    return new_obj


def _field_property(name):
    def get(self):
        with self:
            return getattr(self._obj, name)

    def set(self, value):
        with self:
            setattr(self._obj, name, value)

    return property(get, set, doc=f"Field {name!r}, read and written under the lock.")


_structure_wrappers = weakref.WeakKeyDictionary()


def _wrapper_class(cls):
    """A SynchronizedBase subclass with a locked property per field of the Structure cls."""
    try:
        return _structure_wrappers[cls]
    except KeyError:
        pass
    props = {field[0]: _field_property(field[0]) for field in cls._fields_}
    props['__module__'] = __name__
    wcls = type('Synchronized' + cls.__name__, (SynchronizedBase,), props)
    _structure_wrappers[cls] = wcls
    return wcls


def synchronized(obj, lock=None, ctx=None):
    """Wrap the ctypes object obj with lock (None: a new RLock)."""
    if isinstance(obj, SynchronizedBase):
        raise AssertionError('object already synchronized')
    if isinstance(obj, ctypes._SimpleCData):
        return Synchronized(obj, lock, ctx)
    if isinstance(obj, ctypes.Array):
        if obj._type_ is ctypes.c_char:
            return SynchronizedString(obj, lock, ctx)
        return SynchronizedArray(obj, lock, ctx)
    return _wrapper_class(type(obj))(obj, lock, ctx)


def _reduce_synchronized(self):
    _mp_context.assert_spawning(self)
    return synchronized, (self._obj, self._lock)


SynchronizedBase.__reduce__ = _reduce_synchronized


# the rest of the stdlib module's names (its helpers), for code that reaches for them
import multiprocessing.sharedctypes as _std  # noqa: E402

from ._stdlib import forward as _forward  # noqa: E402

__getattr__, __dir__ = _forward(globals(), _std)
