"""Queues: fastmp against the stdlib and faster-fifo, in one run.

    python benchmarks/bench_queue.py                 # full run, fork start method
    python benchmarks/bench_queue.py --quick         # smoke test
    python benchmarks/bench_queue.py --list

The workloads live in the package (fastmp.bench, its QUEUE_WORKLOADS), so that
``python -m fastmp.bench`` runs them from an installed fastmp too; this script
is their command line of its own (see benchmarks/README.md).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import main  # noqa: E402  (finds fastmp.bench: installed, PYTHONPATH, or here)
from fastmp.bench import QUEUE_WORKLOADS as WORKLOADS  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("fastmp vs multiprocessing: queues", WORKLOADS, processes=True))
