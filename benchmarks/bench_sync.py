"""Synchronization primitives: fastmp against the stdlib, in one run.

    python benchmarks/bench_sync.py                 # full run, fork start method
    python benchmarks/bench_sync.py --quick         # smoke test
    python benchmarks/bench_sync.py --only event,barrier --start-method spawn
    python benchmarks/bench_sync.py --libs multiprocessing   # the stdlib alone

Every workload is a function ``bench_X(mp, n, start_method="fork") -> ops/s``
that uses the library only through the module object ``mp`` and
``mp.get_context(start_method)``, so the same code times both libraries.  The
cross-process workloads time, in the parent, ``n`` round trips that start after
the child has said it is ready: process start-up is not measured.

The workloads live in the package (fastmp.bench), so that ``python -m
fastmp.bench`` runs them from an installed fastmp too; this script is their
command line of its own.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import main  # noqa: E402  (finds fastmp.bench: installed, PYTHONPATH, or here)
from fastmp.bench import (  # noqa: E402,F401
    SYNC_WORKLOADS as WORKLOADS,
    bench_barrier2, bench_condition_pingpong, bench_event_pingpong, bench_lock,
    bench_lock_method, bench_lock_with, bench_rlock, bench_semaphore,
)

if __name__ == "__main__":
    sys.exit(main("fastmp vs multiprocessing: synchronization primitives", WORKLOADS))
