"""How the pool and the executor pickle the functions they send to their workers.

pickle is tried first; what it cannot pickle goes through multiprocessing's reducers, then
cloudpickle when it is installed (lambdas, closures, functions defined interactively).  A plain
function's pickle is remembered: pickled by reference, the same object always gives the same
bytes, so a map() or a run of submit() calls pickles it once.
"""
import pickle
import types

__all__ = ()    # private to the package

# functions pickled by reference, whose pickle can be remembered
_PLAIN_FUNCTIONS = (types.FunctionType, types.BuiltinFunctionType)
# remembered pickles per cache, at most (the cache is emptied past this)
_CACHE_MAX = 256


def _cloudpickle():
    try:
        import cloudpickle
    except ImportError:
        return None
    return cloudpickle


def fallback_dumps(obj, exc):
    """What pickle.dumps could not do (it raised exc): multiprocessing's reducers, then
    cloudpickle; else exc is raised."""
    from multiprocessing.reduction import ForkingPickler
    try:
        return bytes(ForkingPickler.dumps(obj, pickle.HIGHEST_PROTOCOL))
    except Exception:
        pass
    cp = _cloudpickle()
    if cp is not None:
        try:
            return cp.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            pass
    raise exc


def dump_function(func):
    """(pickle of func, whether plain pickle made it)."""
    try:
        return pickle.dumps(func, pickle.HIGHEST_PROTOCOL), True
    except Exception as exc:
        return fallback_dumps(func, exc), False


def dump_cached(cache, func, wrapper=None):
    """The pickle of func (of wrapper(func), if given), remembered in cache (a dict keyed by
    func) for plain functions that pickle made."""
    cacheable = isinstance(func, _PLAIN_FUNCTIONS)
    if cacheable:
        try:
            return cache[func]
        except (KeyError, TypeError):
            pass
    data, by_pickle = dump_function(func if wrapper is None else wrapper(func))
    if cacheable and by_pickle:
        if len(cache) > _CACHE_MAX:
            cache.clear()
        cache[func] = data
    return data
