"""What the proxies on fastmp's C objects that a manager hands out have in common.

A manager's ``dict()``, ``list()`` and ``Namespace()`` are ``_core.SharedKV`` objects (see
managers.py); its other built-in typeids (Lock, Event, Queue, Value, ...) are fastmp's own C
objects (``_core.Lock``, ``_core.Queue``, ...) wrapped in a proxy class that subclasses the stdlib's
proxy for that typeid, so that isinstance() checks against AcquirerProxy, ValueProxy, BaseProxy,
... hold.  Every call runs in the calling process; no server is involved.

Unlike the objects ``fastmp.Lock()`` and friends make, these pickle at any time (a Pool task
argument, a queue item, a pipe message), as the stdlib's proxies do: the pickle carries the C
object's ``_fm_state()`` and the state of its manager's *life token*, an empty SharedKV that
``shutdown()`` destroys.  So:

- a proxy used after its manager's shutdown raises BrokenPipeError, and unpickling one raises
  FileNotFoundError, as the stdlib's do once their server is gone (``_check`` reads one shared
  word per call);
- an object whose proxy was pickled is kept by its manager until shutdown (``_fm_keep``), so the
  block a pickle names cannot be freed and reused by another object while the pickle may still be
  unpickled; an object never pickled goes with its last proxy.

A typeid module (``_mgr_sync``, ``_mgr_data``) subclasses ``CObjectProxy`` and lists its factories
in a ``TYPEIDS`` dict: typeid -> ``factory(manager, *args, **kwds)`` returning a proxy made with
``manager._fm_adopt(proxy_class, c_object, typeid)``.
"""
import errno as _errno
import os as _os

from multiprocessing.managers import Token

from . import _core

__all__ = ()    # private to the package

_SharedKV = _core.SharedKV


def _gone(exc_type, err):
    return exc_type(err, _os.strerror(err))


def broken_pipe():
    """The error a stdlib proxy raises once its server is gone."""
    return _gone(BrokenPipeError, _errno.EPIPE)


def _rebuild(cls, c_type, state, life_state, typeid):
    try:
        life = _SharedKV._fm_attach(life_state)
    except (ValueError, FileNotFoundError):
        raise _gone(FileNotFoundError, _errno.ENOENT) from None
    if life.closed:
        raise _gone(FileNotFoundError, _errno.ENOENT)
    return cls._fm_from(c_type._fm_attach(state), life, typeid)


class LocalProxy:
    """The BaseProxy API of a proxy whose referent is in shared memory, used in the calling
    process: mixed in before the stdlib's proxy class (none of its server machinery is used).
    The shared dict/list/Namespace proxies (managers.py) and CObjectProxy share it.  A subclass
    sets ``_fm_methods`` (name -> function, for ``_callmethod``) and ``_fm_proxy_name``."""

    _fm_methods = {}

    @classmethod
    def _fm_make(cls, typeid, manager, **fields):
        """A proxy with these instance attributes, bypassing BaseProxy.__init__ (no server)."""
        self = object.__new__(cls)
        d = self.__dict__
        d.update(fields)
        d["_manager"] = manager
        d["_token"] = token = Token(typeid, None, "%x" % id(self))
        d["_id"] = token.id         # (BaseProxy's attributes that code outside reads)
        d["_serializer"] = "pickle"
        return self

    def _callmethod(self, methodname, args=(), kwds={}):
        """Run a method of the referent, as BaseProxy._callmethod does (here: locally)."""
        try:
            method = self._fm_methods[methodname]
        except KeyError:
            raise AttributeError(
                f"{type(self).__name__!r} object has no method {methodname!r}") from None
        return method(self, *args, **kwds)

    def _incref(self):
        pass

    def _decref(self):
        pass

    def _after_fork(self):
        pass

    def _connect(self):
        pass

    def __repr__(self):
        return "<%s object, typeid %r at %#x>" % (
            self._fm_proxy_name, self._token.typeid, id(self))


class CObjectProxy(LocalProxy):
    """A proxy on a fastmp C object.  ``_obj`` is the C object, ``_life`` the manager's life
    token.  A subclass defines the exposed methods, each starting with ``self._check()``."""

    @classmethod
    def _fm_from(cls, obj, life, typeid, manager=None):
        return cls._fm_make(typeid, manager, _obj=obj, _life=life)

    def _check(self):
        """BrokenPipeError once the manager shut down (as the stdlib's proxy raises when its
        server is gone)."""
        if self._life.closed:
            raise broken_pipe()

    def _getvalue(self):
        self._check()
        return self._obj

    def __reduce__(self):
        self._check()
        manager = self._manager
        if manager is not None:
            # may be on its way to another process: its manager keeps it from now on
            manager._fm_keep(self._obj)
        return _rebuild, (type(self), type(self._obj), self._obj._fm_state(),
                          self._life._fm_state(), self._token.typeid)

    def __str__(self):
        try:
            self._check()
            return str(self._obj)
        except Exception:
            return repr(self)[:-1] + "; '__str__()' failed>"


def method_table(cls, names):
    """name -> function of cls, for the names the stdlib's proxy class exposes."""
    return {name: getattr(cls, name) for name in names if hasattr(cls, name)}
