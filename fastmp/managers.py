"""multiprocessing.managers, with every built-in typeid of the Manager in shared memory.

``fastmp.Manager()`` (and ``ctx.Manager()``, ``fastmp.managers.SyncManager``) is the stdlib's
SyncManager, except that its built-in typeids need no server: ``dict()``, ``list()`` and
``Namespace()`` return proxies on a fastmp._core.SharedKV (a hash table or vector of byte strings
in shared memory, this module), and ``Lock()``, ``RLock()``, ``Semaphore()``,
``BoundedSemaphore()``, ``Condition()``, ``Event()``, ``Barrier()`` (_mgr_sync.py), ``Queue()``,
``JoinableQueue()``, ``Value()`` and ``Array()`` (_mgr_data.py) proxies on fastmp's C objects
(_mgr_objects.py).  Every operation runs in the calling process, under locks that a killed holder
cannot wedge: no server round trip, about a microsecond instead of tens.  ``Pool()``,
``register()``ed typeids and a manager reached with ``connect()`` keep the stdlib's server,
started the first time one of them needs it.

The proxies keep the stdlib proxies' API and semantics: a value read is a copy (mutating it does
not write back), keys()/values()/items() return lists, a proxy stored inside another comes back
as a proxy to the same object, they pickle at any time (a Pool task argument, a queue item, a
pipe message) and any process of the same user attaches them by name.  Lifetime: an object
lives while a proxy to it lives, in any process; once a proxy has been pickled (it may be on its
way to another process), the manager also keeps the object until shutdown().  One never pickled
goes with its last proxy, so a loop that makes and drops objects stays flat.  shutdown() frees
them all, after which using a proxy raises BrokenPipeError and unpickling one
FileNotFoundError, as the stdlib's do once their server is gone.

Encoding: values are pickled (multiprocessing's ForkingPickler for what plain pickle cannot do;
plain ones, None, bool, int, float, str, bytes, by csrc/kv_encode.c).  Keys are encoded so that
keys Python's dict treats as one are one key here: str and int directly, a float or bool equal
to an int as that int, other hashable keys (tuples, frozensets, ...) pickled after the same
normalisation of their parts.  So 1, 1.0 and True are the same key, as in a dict; the key kept
is the normalised one (d[True] = x gives the key 1).  Keys of other types must pickle to the
same bytes when equal (value types do; objects compared by identity do not).

Reads: a dict or Namespace proxy keeps the immutable values it read under str and int keys
while the object's version (SharedKV.version, moved by every change in any process) stays the
same, so repeated reads of an unchanged object cost a version check.
"""
import operator as _operator
import pickle as _pickle
import threading as _threading
import weakref as _weakref
from multiprocessing import util as _util

import multiprocessing.managers as _std
from multiprocessing.managers import *  # noqa: F401,F403
from multiprocessing.managers import (  # noqa: F401
    AcquirerProxy, ArrayProxy, AutoProxy, BarrierProxy, BaseListProxy, ConditionProxy,
    DictProxy, EventProxy, IteratorProxy, ListProxy, MakeProxyType, Namespace, NamespaceProxy,
    PoolProxy, RemoteError, Server, State, Token, ValueProxy,
)
from multiprocessing.reduction import ForkingPickler as _ForkingPickler

from . import _core
from . import _mgr_data, _mgr_sync
from ._mgr_objects import LocalProxy as _LocalProxy
from . import _lifecycle  # noqa: F401  (segment tracking, fork and exit hooks)
from ._stdlib import forward as _forward

__all__ = list(_std.__all__)

_SharedKV = _core.SharedKV
_HP = _pickle.HIGHEST_PROTOCOL
_dumps = _pickle.dumps
_loads = _pickle.loads


# ------------------------------------------------------------------ encoding

def _enc_value(value):
    t = type(value)
    if t is bytes and len(value) >= 0x10000:    # as pickle's, without its page faults
        return _SharedKV.pickle_bytes(value)
    if t in _SHAREABLE:
        return _dumps(value, _HP)   # holds no proxy: no scan for one (100 ns of a 400 ns set)
    try:
        data = _dumps(value, _HP)
    except Exception:
        # what only multiprocessing's reducers pickle (connections, sockets, ...); its error is
        # the one the stdlib's proxies raise
        data = bytes(_ForkingPickler.dumps(value, _HP))
    if b"RebuildProxy" in data:
        _keep_server_proxies(value)
    return data


# Proxies to objects of a manager's *server* (its Queue(), Lock(), ...) stored in a shared dict or
# list: a stdlib container on the server holds such a proxy, which keeps the referent alive;
# here the stored bytes cannot, so this process keeps the proxy until it exits (the server, and
# with it the referent, goes at the manager's shutdown anyway).
_kept_server_proxies = {}


class _ProxyFinder(_pickle.Pickler):
    def __init__(self, file):
        super().__init__(file, _HP)
        self.found = []

    def reducer_override(self, obj):
        if isinstance(obj, _std.BaseProxy) and not isinstance(obj, _SharedProxy):
            self.found.append(obj)
        return NotImplemented


def _keep_server_proxies(value):
    import io
    finder = _ProxyFinder(io.BytesIO())
    try:
        finder.dump(value)
    except Exception:
        return
    for proxy in finder.found:
        token = getattr(proxy, "_token", None)
        if token is not None:
            _kept_server_proxies.setdefault((token.address, token.id), proxy)


_dec_value = _loads
_object_getattribute = object.__getattribute__

# What a proxy's read cache keeps (see _cached_read): values of these types, whose
# encoding is at most _CACHED_MAX bytes.
_SHAREABLE = frozenset({int, float, complex, str, bytes, bool, type(None)})
_CACHED_MAX = 1 << 16
_MISS = object()
_NO_CACHE = (-1, None)      # (no version is -1, and a write inside begin()/end() returns None)


class _FrozenKey(tuple):
    """A frozenset inside a key, as its items sorted by their encoding: pickles the same in
    every process (a frozenset of str pickles in an order that hash randomisation changes)."""

    def __reduce__(self):
        return frozenset, (tuple(self),)


def _normal(key):
    """key with the parts Python compares by value put in one form: an integral float or a
    bool as int, a frozenset as _FrozenKey."""
    t = type(key)
    if t is bool:
        return int(key)
    if t is float and key.is_integer():
        return int(key)
    if t is tuple:
        return tuple(_normal(k) for k in key)
    if t is frozenset:
        return _FrozenKey(sorted((_normal(k) for k in key), key=_enc_key))
    return key


def _enc_key(key):
    t = type(key)
    if t is str:
        return b"s" + key.encode("utf-8", "surrogatepass")
    if t is int or t is bool:
        return b"i%d" % key
    if t is float and key.is_integer():
        return b"i%d" % key
    hash(key)   # an unhashable key: TypeError, as a dict raises
    return b"p" + _dumps_unshared(_normal(key))


def _dumps_unshared(obj):
    """A pickle that does not depend on which parts are the same object (pickle's memo writes a
    part seen before as a reference to it: ("ab", "ab") and ("ab", "a" + "b") would differ)."""
    import io
    buf = io.BytesIO()
    p = _pickle.Pickler(buf, _HP)
    p.fast = True       # no memo (a key cannot contain itself)
    p.dump(obj)
    return buf.getvalue()


def _dec_key(data):
    tag = data[:1]
    if tag == b"s":
        return data[1:].decode("utf-8", "surrogatepass")
    if tag == b"i":
        return int(data[1:])
    return _loads(data[1:])


# ------------------------------------------------------------------- proxies

def _rebuild(cls, state, typeid):
    try:
        kv = _SharedKV._fm_attach(state)
    except ValueError:
        # the block is gone (its manager shut down and the last reference went)
        import errno
        import os
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT)) from None
    return cls._fm_from(kv, typeid)


def _cached_read(d, key):
    """key's value from the proxy whose instance dict is d, or _MISS when it is not there.

    With a str or int key, through the proxy's read cache: values read since the object last
    changed (in any process: its version says), when they are immutable (handing out the same
    object is handing out a copy).  The cache is one (version, dict) pair, replaced whole when
    the version moves, so that a thread storing what it read stores it in the dict of the
    version it saw before its read."""
    kv = d["_kv"]
    if type(key) is not str and type(key) is not int:
        data = kv.dict_get(_enc_key(key))
        return _MISS if data is None else _dec_value(data)
    version = kv.version
    seen, entries = d["_fm_cache"]
    if seen == version:
        value = entries.get(key, _MISS)
        if value is not _MISS:
            return value
    elif not version & 1:       # odd: a change is under way (or its writer died)
        entries = {}
        d["_fm_cache"] = (version, entries)
    data = kv.dict_get(_enc_key(key))
    if data is None:
        return _MISS
    value = _dec_value(data)
    if entries is not None and type(value) in _SHAREABLE and len(data) <= _CACHED_MAX:
        entries[key] = value
    return value


def _cached_write(d, key, value):
    """Set key in the proxy whose instance dict is d; a cache that was current until this
    write stays current (the object's version before it says: see SharedKV.dict_set)."""
    kv = d["_kv"]
    before = kv.dict_set_plain(key, value)      # str/int key, plain value: encoded in C
    if before is NotImplemented:
        data = _enc_value(value)
        before = kv.dict_set(_enc_key(key), data)
        keep = type(value) in _SHAREABLE and len(data) <= _CACHED_MAX
    else:
        keep = True                             # (plain values are encoded in 64 KiB at most)
    cache = d["_fm_cache"]
    if cache[0] == before:
        t = type(key)
        if t is str or t is int:    # (a key of another type may stand for a cached one: True)
            entries = cache[1]
            if keep:
                entries[key] = value
            else:
                entries.pop(key, None)
            d["_fm_cache"] = ((before | 1) + 3, entries)


class _SharedProxy(_LocalProxy):
    """What the three shared proxies have in common (mixed in before the stdlib's proxy class,
    so that isinstance() checks against DictProxy, ListProxy, NamespaceProxy and BaseProxy
    still hold; none of the stdlib proxy's server machinery is used)."""

    @classmethod
    def _fm_from(cls, kv, typeid, manager=None):
        return cls._fm_make(typeid, manager, _kv=kv, _fm_cache=_NO_CACHE)

    def _fm_read(self, key):
        """key's value, or _MISS when it is not there (see _cached_read)."""
        return _cached_read(self.__dict__, key)

    def __reduce__(self):
        manager = self._manager
        if manager is not None:
            # may be on its way to another process: its manager keeps it from now on
            manager._fm_keep(self._kv)
        return _rebuild, (type(self), self._kv._fm_state(), self._token.typeid)

    def __deepcopy__(self, memo):
        return self._getvalue()

    def __str__(self):
        try:
            return repr(self._getvalue())
        except Exception:
            return repr(self)[:-1] + "; '__str__()' failed>"


def _held(kv):
    """The kv's lock held for a with block (several calls as one)."""
    return _Hold(kv)


class _Hold:
    __slots__ = ("kv",)

    def __init__(self, kv):
        self.kv = kv

    def __enter__(self):
        self.kv.begin()

    def __exit__(self, *exc):
        self.kv.end()


class _DictIterator:
    """Iterates over the keys the dict had when it started; as a dict's iterator, raises
    RuntimeError when the dict's size changes meanwhile."""

    __slots__ = ("_kv", "_keys", "_size")

    def __init__(self, kv, keys):
        self._kv = kv
        self._keys = iter(keys)
        self._size = len(keys)

    def __iter__(self):
        return self

    def __next__(self):
        if self._keys is None:
            raise StopIteration
        if self._kv.size() != self._size:
            self._keys = None
            raise RuntimeError("dictionary changed size during iteration")
        try:
            return next(self._keys)
        except StopIteration:
            self._keys = None
            raise


def _arg_count_error(name, args):
    """The TypeError dict's own methods raise for a wrong number of arguments."""
    if not args:
        return TypeError(f"{name} expected at least 1 argument, got 0")
    return TypeError(f"{name} expected at most 2 arguments, got {len(args)}")


class SharedDictProxy(_SharedProxy, DictProxy):
    """The Manager's dict(): a dict in shared memory (see the module's docstring)."""

    _fm_proxy_name = "DictProxy"

    def _getvalue(self):
        raw = self._kv.dict_items()
        return {_dec_key(raw[i]): _dec_value(raw[i + 1]) for i in range(0, len(raw), 2)}

    def __len__(self):
        return self._kv.size()

    def __contains__(self, key):
        return self._kv.dict_contains(_enc_key(key))

    def __getitem__(self, key):
        value = self._fm_read(key)
        if value is _MISS:
            raise KeyError(key)
        return value

    def __setitem__(self, key, value):
        _cached_write(self.__dict__, key, value)

    def __delitem__(self, key):
        if not self._kv.dict_delete(_enc_key(key)):
            raise KeyError(key)

    def __iter__(self):
        return _DictIterator(self._kv, self.keys())

    def get(self, *args):
        if not 1 <= len(args) <= 2:
            raise _arg_count_error("get", args)
        value = self._fm_read(args[0])
        if value is _MISS:
            return args[1] if len(args) > 1 else None
        return value

    def setdefault(self, *args):
        if not 1 <= len(args) <= 2:
            raise _arg_count_error("setdefault", args)
        key, default = args[0], args[1] if len(args) > 1 else None
        k = _enc_key(key)
        v = _enc_value(default)
        with _held(self._kv):
            data = self._kv.dict_get(k)
            if data is None:
                self._kv.dict_set(k, v)
                data = v
        return _dec_value(data)

    def pop(self, *args):
        if not 1 <= len(args) <= 2:
            raise _arg_count_error("pop", args)
        key = args[0]
        data = self._kv.dict_pop(_enc_key(key))
        if data is None:
            if len(args) == 1:
                raise KeyError(key)
            return args[1]
        return _dec_value(data)

    def popitem(self):
        item = self._kv.dict_popitem()
        if item is None:
            raise KeyError("popitem(): dictionary is empty")
        return _dec_key(item[0]), _dec_value(item[1])

    def update(self, *args, **kwds):
        if len(args) > 1:
            raise TypeError(f"update expected at most 1 argument, got {len(args)}")
        pairs = []
        if args:
            other = args[0]
            if hasattr(other, "keys"):
                for k in other.keys():
                    pairs.append((_enc_key(k), _enc_value(other[k])))
            else:
                for n, item in enumerate(other):
                    try:
                        k, v = item
                    except TypeError:
                        raise TypeError(f"cannot convert dictionary update sequence element "
                                        f"#{n} to a sequence") from None
                    except ValueError:
                        raise ValueError(f"dictionary update sequence element #{n} has length "
                                         f"{len(item)}; 2 is required") from None
                    pairs.append((_enc_key(k), _enc_value(v)))
        for k, v in kwds.items():
            pairs.append((_enc_key(k), _enc_value(v)))
        if not pairs:
            return
        kv = self._kv
        with _held(kv):
            for k, v in pairs:
                kv.dict_set(k, v)

    def clear(self):
        self._kv.clear()

    def copy(self):
        return self._getvalue()

    def keys(self):
        return [_dec_key(k) for k in self._kv.dict_keys()]

    def values(self):
        return [_dec_value(v) for v in self._kv.dict_values()]

    def items(self):
        raw = self._kv.dict_items()
        return [(_dec_key(raw[i]), _dec_value(raw[i + 1])) for i in range(0, len(raw), 2)]


def _index(i):
    try:
        return _operator.index(i)
    except TypeError:
        raise TypeError(
            f"list indices must be integers or slices, not {type(i).__name__}") from None


class SharedListProxy(_SharedProxy, ListProxy):
    """The Manager's list(): a list in shared memory (see the module's docstring)."""

    _fm_proxy_name = "ListProxy"

    def _getvalue(self):
        return [_dec_value(v) for v in self._kv.list_slice()]

    def __len__(self):
        return self._kv.size()

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [_dec_value(v) for v in self._kv.list_slice(i.start, i.stop, i.step)]
        return _dec_value(self._kv.list_get(_index(i)))

    def __setitem__(self, i, value):
        if isinstance(i, slice):
            try:
                values = iter(value)
            except TypeError:
                probe = []
                probe[i] = value    # the list's own error (its text varies by version)
                raise
            new = [_enc_value(v) for v in values]
            kv = self._kv
            with _held(kv):
                raw = kv.list_slice()
                raw[i] = new
                kv.list_replace(raw)
            return
        self._kv.list_set(_index(i), _enc_value(value))

    def __delitem__(self, i):
        if isinstance(i, slice):
            kv = self._kv
            with _held(kv):
                raw = kv.list_slice()
                del raw[i]
                kv.list_replace(raw)
            return
        self._kv.list_delete(_index(i))

    def __contains__(self, value):
        return value in self._getvalue()

    def __add__(self, other):
        return self._getvalue() + other

    def __mul__(self, n):
        return self._getvalue() * n

    def __rmul__(self, n):
        return n * self._getvalue()

    def __reversed__(self):
        return reversed(self._getvalue())

    def __iadd__(self, value):
        self.extend(value)
        return self

    def __imul__(self, n):
        n = _operator.index(n)
        kv = self._kv
        with _held(kv):
            kv.list_replace(kv.list_slice() * n)
        return self

    def append(self, value):
        self._kv.list_append(_enc_value(value))

    def extend(self, values):
        self._kv.list_extend([_enc_value(v) for v in values])

    def insert(self, i, value):
        self._kv.list_insert(_operator.index(i), _enc_value(value))

    def pop(self, i=-1):
        return _dec_value(self._kv.list_pop(_operator.index(i)))

    def count(self, value):
        return self._getvalue().count(value)

    def index(self, value, *args):
        return self._getvalue().index(value, *args)

    def remove(self, value):
        kv = self._kv
        with _held(kv):
            items = [_dec_value(v) for v in kv.list_slice()]
            for i, item in enumerate(items):
                if item is value or item == value:
                    kv.list_delete(i)
                    return
        raise ValueError("list.remove(x): x not in list")

    def reverse(self):
        self._kv.list_reverse()

    def sort(self, *, key=None, reverse=False):
        kv = self._kv
        with _held(kv):
            raw = kv.list_slice()
            items = [_dec_value(v) for v in raw]
            keys = items if key is None else [key(x) for x in items]
            order = sorted(range(len(raw)), key=keys.__getitem__, reverse=reverse)
            kv.list_replace([raw[i] for i in order])

    if hasattr(list, "clear") and "clear" in getattr(ListProxy, "_exposed_", ()):
        def clear(self):
            self._kv.clear()


class SharedNamespaceProxy(_SharedProxy, NamespaceProxy):
    """The Manager's Namespace(): its attributes in a shared dict (see the module's
    docstring)."""

    _fm_proxy_name = "NamespaceProxy"

    def _getvalue(self):
        raw = self._kv.dict_items()
        return Namespace(**{_dec_key(raw[i]): _dec_value(raw[i + 1])
                            for i in range(0, len(raw), 2)})

    def __getattribute__(self, key):
        # (not __getattr__, as the stdlib's proxy: a public name is never the proxy's own,
        # and a failed lookup first would cost more than the read)
        if key[0] == "_":
            return _object_getattribute(self, key)
        value = _cached_read(_object_getattribute(self, "__dict__"), key)
        if value is _MISS:
            return getattr(Namespace(), key)    # a Namespace's own AttributeError
        return value

    def __setattr__(self, key, value):
        if key[0] == "_":
            return object.__setattr__(self, key, value)
        _cached_write(_object_getattribute(self, "__dict__"), key, value)

    def __delattr__(self, key):
        if key[0] == "_":
            return object.__delattr__(self, key)
        if not self._kv.dict_delete(_enc_key(key)):
            delattr(Namespace(), key)           # a Namespace's own AttributeError

    def __str__(self):
        try:
            return str(self._getvalue())
        except Exception:
            return repr(self)[:-1] + "; '__str__()' failed>"


def _namespace_getattribute(self, key):
    return SharedNamespaceProxy.__getattribute__(self, key)


def _method_table(cls, names):
    table = {}
    for name in names:
        if name == "__getattribute__" and cls is SharedNamespaceProxy:
            table[name] = _namespace_getattribute
        else:
            table[name] = getattr(cls, name)
    return table


SharedDictProxy._fm_methods = _method_table(SharedDictProxy, DictProxy._exposed_)
SharedListProxy._fm_methods = _method_table(SharedListProxy, ListProxy._exposed_)
SharedNamespaceProxy._fm_methods = _method_table(SharedNamespaceProxy, NamespaceProxy._exposed_)


# ------------------------------------------------------------------- manager

def _destroy_all(objects, lock, proxies=(), life=None):
    with lock:
        kept = list(objects.values())
        objects.clear()
        kept.extend(p._kv for p in list(proxies) if isinstance(p, _SharedProxy))
        if life:
            kept.append(life.pop())
    for obj in kept:
        # the shared dicts, lists and namespaces, and the life token of the C objects (their
        # proxies raise from now on); a C object itself goes with its last reference
        if type(obj) is _SharedKV:
            obj.destroy()


def _finalize(server, objects, lock, state, proxies=(), life=None):
    """shutdown(): the server's own finalizer (if a server was started), then free the shared
    objects."""
    try:
        if server:
            server[0]()
    finally:
        state.value = State.SHUTDOWN
        _destroy_all(objects, lock, proxies, life)


class SyncManager(_std.SyncManager):
    """The stdlib's SyncManager, with its built-in typeids in shared memory (no server round
    trip); see the module's docstring.

    start() starts no process (unless given an initializer, which runs in the server): the
    server is started the first time something needs it (``Pool()``, a register()ed typeid,
    ``address``, ...).  A manager used only for the built-in typeids never has one."""

    def __init__(self, *args, **kwds):
        super().__init__(*args, **kwds)
        self._fm_objects = {}           # id -> SharedKV: the objects whose proxies were pickled
        self._fm_proxies = _weakref.WeakSet()   # every proxy it made that is still alive
        self._fm_lock = _threading.RLock()
        self._fm_local = False
        self._fm_server = []            # the server's finalizer, once started
        self._fm_pending = None         # (initializer, initargs) until the server starts
        self._fm_life = []              # the life token of its C objects, once one is made

    def start(self, initializer=None, initargs=()):
        if self._state.value != State.INITIAL:
            return super().start(initializer, initargs)     # the stdlib's error
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        self._process = None
        self._fm_pending = (initializer, initargs)
        self._fm_local = True
        self._state.value = State.STARTED
        self.shutdown = _util.Finalize(
            self, _finalize, args=(self._fm_server, self._fm_objects, self._fm_lock,
                                   self._state, self._fm_proxies, self._fm_life),
            exitpriority=0)
        if initializer is not None:
            self._fm_need_server()      # the initializer runs in the server, at start

    def _fm_need_server(self):
        """Start the server now if start() left it for later."""
        if self._fm_pending is None:
            return
        with self._fm_lock:
            if self._fm_pending is None or self._state.value != State.STARTED:
                return
            initializer, initargs = self._fm_pending
            ours = self.shutdown
            self._state.value = State.INITIAL
            try:
                _std.BaseManager.start(self, initializer, initargs)
            except BaseException:
                self._state.value = State.STARTED
                raise
            finally:
                server_shutdown, self.shutdown = self.shutdown, ours
            self._fm_server.append(server_shutdown)
            self._fm_pending = None

    @property
    def address(self):
        self._fm_need_server()
        return self._address

    def _create(self, typeid, /, *args, **kwds):
        self._fm_need_server()
        return super()._create(typeid, *args, **kwds)

    def _number_of_objects(self):
        if self._fm_pending is not None:
            return 0        # no server: no server object (the shared ones are not counted)
        return super()._number_of_objects()

    def _debug_info(self):
        if self._fm_pending is not None:
            return ""
        return super()._debug_info()

    def _fm_new(self, cls, kind, typeid):
        if self._state.value != State.STARTED:
            raise AssertionError("server not yet started")
        proxy = cls._fm_from(_SharedKV(kind), typeid, self)
        with self._fm_lock:
            self._fm_proxies.add(proxy)
        return proxy

    def _fm_keep(self, obj):
        with self._fm_lock:
            if self._state.value == State.STARTED:
                self._fm_objects.setdefault(id(obj), obj)

    def _fm_adopt(self, cls, obj, typeid):
        """A proxy of class cls (an _mgr_objects.CObjectProxy) on the C object obj, which this
        manager made for typeid."""
        with self._fm_lock:
            if self._state.value != State.STARTED:
                raise AssertionError("server not yet started")
            if not self._fm_life:
                self._fm_life.append(_SharedKV(_SharedKV.DICT))
            proxy = cls._fm_from(obj, self._fm_life[0], typeid, self)
        return proxy

    def _fm_factory(self, typeid):
        """The factory making typeid's C object here, or None (then the stdlib's server makes
        it)."""
        if not self._fm_local:
            return None
        factory = _C_TYPEIDS.get(typeid)
        if factory is None or self._registry.get(typeid) is not _std.SyncManager._registry.get(
                typeid):
            return None     # a subclass register()ed its own callable for this typeid
        return factory

    def dict(self, *args, **kwds):
        if not self._fm_local:
            return super().dict(*args, **kwds)
        initial = dict(*args, **kwds)
        proxy = self._fm_new(SharedDictProxy, _SharedKV.DICT, "dict")
        if initial:
            proxy.update(initial)
        return proxy

    def list(self, *args, **kwds):
        if not self._fm_local:
            return super().list(*args, **kwds)
        initial = list(*args, **kwds)
        proxy = self._fm_new(SharedListProxy, _SharedKV.LIST, "list")
        if initial:
            proxy.extend(initial)
        return proxy

    def Namespace(self, *args, **kwds):
        if not self._fm_local:
            return super().Namespace(*args, **kwds)
        initial = Namespace(*args, **kwds)
        proxy = self._fm_new(SharedNamespaceProxy, _SharedKV.DICT, "Namespace")
        for k, v in vars(initial).items():
            setattr(proxy, k, v)
        return proxy


# Typeids whose objects are fastmp's C objects: typeid -> factory(manager, *args, **kwds).
_C_TYPEIDS = {}
for _module in (_mgr_sync, _mgr_data):
    _C_TYPEIDS.update(_module.TYPEIDS)


def _c_typeid_method(typeid):
    std_method = getattr(_std.SyncManager, typeid)

    def method(self, *args, **kwds):
        factory = self._fm_factory(typeid)
        if factory is None:
            return std_method(self, *args, **kwds)
        return factory(self, *args, **kwds)

    method.__name__ = method.__qualname__ = typeid
    method.__doc__ = std_method.__doc__
    return method


for _typeid in _C_TYPEIDS:
    setattr(SyncManager, _typeid, _c_typeid_method(_typeid))


__getattr__, __dir__ = _forward(globals(), _std)
