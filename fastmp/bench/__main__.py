"""``python -m fastmp.bench``: see the package's docstring, or ``python -m fastmp.bench --help``."""
import importlib
import os
import sys


def _skip_uncompiled_source_tree():
    """`python -m fastmp.bench` run from the root of a checkout: `-m` puts the current
    directory first on sys.path, so `fastmp` is the source tree, which has no compiled _core
    unless built in place.  Then use the installed fastmp instead, if there is one, and say so.
    (Nothing of the source tree's fastmp has registered anything yet: only its pure-Python
    package modules were imported.)"""
    try:
        importlib.import_module("fastmp._core")
        return
    except ImportError:
        pass
    tree = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not sys.path or os.path.abspath(sys.path[0] or os.curdir) != tree:
        return
    saved_path = list(sys.path)
    saved_modules = {k: v for k, v in sys.modules.items()
                     if k == "fastmp" or k.startswith("fastmp.")}
    del sys.path[0]
    for k in saved_modules:
        del sys.modules[k]
    try:
        importlib.import_module("fastmp._core")
    except ImportError:
        sys.path[:] = saved_path
        for k in [k for k in sys.modules if k == "fastmp" or k.startswith("fastmp.")]:
            del sys.modules[k]
        sys.modules.update(saved_modules)
        return
    where = os.path.dirname(sys.modules["fastmp"].__file__)
    print(f"note: {os.path.join(tree, 'fastmp')} (the current directory's) has no compiled "
          f"_core: timing the installed fastmp, {where}", file=sys.stderr)


if __name__ == "__main__":
    _skip_uncompiled_source_tree()
    # Import main only now: after the switch above it is the installed fastmp's.  The functions
    # that child processes run live in the package's modules (fastmp.bench.<group>), so they
    # pickle by a name a spawned child can import, not as __main__.<name>.
    from fastmp.bench import main
    sys.exit(main())
