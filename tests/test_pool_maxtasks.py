"""maxtasksperchild: every result right, no worker runs more than its share, and replacing
workers costs what it costs in the stdlib (a worker that leaves after its tasks is replaced at
once, not at the collector's next check for dead workers).  Speed itself is measured in the
benchmark (python -m fastmp.bench --only pool-maxtasks1); here only a generous bound."""
import collections
import os
import time

import pytest

import multiprocessing


def _square_and_pid(x):
    return x * x, os.getpid()


def _run(ctx, n, maxtasks, processes=2):
    pool = ctx.Pool(processes, maxtasksperchild=maxtasks)
    try:
        out = pool.map(_square_and_pid, range(n), chunksize=1)
        more = [pool.apply_async(_square_and_pid, (i,)) for i in range(n, n + 4)]
        out += [r.get(60) for r in more]
    finally:
        pool.close()
        pool.join()
    return out


@pytest.mark.parametrize("maxtasks", [1, 2])
def test_maxtasksperchild_results_and_turnover(ctx, maxtasks):
    n = 40 if ctx.get_start_method() == "fork" else 10
    out = _run(ctx, n, maxtasks)
    assert [v for v, _ in out] == [i * i for i in range(n + 4)]
    per_pid = collections.Counter(pid for _, pid in out)
    assert max(per_pid.values()) <= maxtasks
    assert len(per_pid) >= -(-(n + 4) // maxtasks)
    assert os.getpid() not in per_pid


def test_maxtasksperchild_1_not_much_slower_than_the_stdlib():
    import fastmp
    n = 120
    times = {"stdlib": [], "fastmp": []}
    for _ in range(2):      # alternating, the best of two each
        for name, mod in (("stdlib", multiprocessing), ("fastmp", fastmp)):
            t0 = time.monotonic()
            out = _run(mod.get_context("fork"), n, 1)
            times[name].append(time.monotonic() - t0)
            assert [v for v, _ in out] == [i * i for i in range(n + 4)]
    std, fm = min(times["stdlib"]), min(times["fastmp"])
    assert fm <= 2 * std, times


FORKSERVER_PRELOAD = """
import sys
import fastmp
from multiprocessing import forkserver
import _pool_targets

mine = ["__main__"]
fastmp.set_forkserver_preload(mine)
ctx = fastmp.get_context("forkserver")
kind = sys.argv[1]
if kind == "pool":
    with ctx.Pool(1) as pool:
        pool.apply(abs, (1,))
else:
    from fastmp.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(1, mp_context=ctx) as ex:
        ex.submit(abs, 1).result()
print(mine)
print(forkserver._forkserver._preload_modules)
# a plain child of the same forkserver: what it has loaded came from the forkserver
with ctx.Pool(1, maxtasksperchild=1) as pool:
    print(pool.apply(_pool_targets.loaded_fastmp_modules))
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind, module", [("pool", "fastmp.pool"),
                                          ("executor", "fastmp.futures")])
def test_forkserver_preloads_the_worker_module(kind, module):
    # the forkserver a pool starts imports the workers' module once, so that a worker
    # (one per task with maxtasksperchild=1) does not import it again; the user's
    # preload list object is left as it was
    import subprocess
    import sys
    from conftest import TESTS_DIR
    proc = subprocess.run([sys.executable, "-c", FORKSERVER_PRELOAD, kind], cwd=TESTS_DIR,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=110)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    mine, preload, loaded = proc.stdout.decode().splitlines()
    assert eval(mine) == ["__main__"]
    assert eval(preload) == ["__main__", module]
    assert module in eval(loaded)


SHADOWED = """
import sys
sys.path.remove("")     # this program's fastmp is the real one; its forkserver's '' is not
import fastmp
ctx = fastmp.get_context("forkserver")
with ctx.Pool(1, maxtasksperchild=1) as pool:
    print(pool.map(abs, [-1, -2, -3], chunksize=1))
"""


@pytest.mark.timeout(120)
def test_forkserver_preload_skips_a_shadowing_fastmp(tmp_path):
    # the forkserver runs in the current directory with its own sys.path ('' first): when a
    # different fastmp sits there (a source checkout), preloading would import that one into
    # every worker; it is not preloaded, and the workers import this process's fastmp
    import os
    import subprocess
    import sys
    from conftest import load_impl
    real = os.path.dirname(os.path.dirname(os.path.abspath(load_impl("fastmp").__file__)))
    (tmp_path / "fastmp").mkdir()
    (tmp_path / "fastmp" / "__init__.py").write_text("SHADOW = True\n")
    env = dict(os.environ, PYTHONPATH=real)
    proc = subprocess.run([sys.executable, "-c", SHADOWED], cwd=str(tmp_path), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=110)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    assert proc.stdout.split(b"\n")[0] == b"[1, 2, 3]"
