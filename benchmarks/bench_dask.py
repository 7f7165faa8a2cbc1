"""fastmp.dask.Pool on a Dask LocalCluster: against hand-written Dask and fastmp's local Pool.

    python benchmarks/bench_dask.py                     # 100k tiny tasks, 200 x 10 ms, 3 rounds
    python benchmarks/bench_dask.py --tiny-items 20000 --rounds 1   # a short run
    python benchmarks/bench_dask.py --only 10ms -v

Needs the extra: pip install 'fastmp[dask]' (without it: prints "dask: absent").  The
workloads live in the package (fastmp.bench.dask), so that an installed fastmp runs them too;
this script is their command line.  The last column is the row's rate (items per second)
over hand-written Dask's, one client.map task per item (above 1: faster), which maps 10k of
the tiny items (--baseline-tiny-items): it costs milliseconds per task.
"""

import os
import sys

try:
    from fastmp.bench import dask as dask_bench
except ImportError:     # run from the checkout without PYTHONPATH
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from fastmp.bench import dask as dask_bench

if __name__ == "__main__":
    sys.exit(dask_bench.main())
