"""Synchronization primitives (Lock, RLock, Semaphore, Event, Condition, Barrier): fastmp
against the stdlib, in one run.

    python benchmarks/bench_sync.py                 # full run, fork start method
    python benchmarks/bench_sync.py --quick         # smoke test
    python benchmarks/bench_sync.py --list
    python benchmarks/bench_sync.py --only event,barrier --start-method spawn
    python benchmarks/bench_sync.py --libs multiprocessing    # the stdlib alone

The ``sync`` workloads of ``python -m fastmp.bench``, with the same command line (``--help``),
table and JSON; the libraries alternate round by round and the table gives the ratios.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run("sync", __file__))
