"""The Manager's typeids (dict, list, Namespace, Lock, Event, Queue, Value, ...), with UltraDict
as the dict rows' peer: fastmp against the stdlib, in one run.

    python benchmarks/bench_managers.py                 # full run, fork start method
    python benchmarks/bench_managers.py --quick         # smoke test
    python benchmarks/bench_managers.py --list

The ``managers`` workloads of ``python -m fastmp.bench``, with the same command line (``--help``),
table and JSON; the libraries alternate round by round and the table gives the ratios.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run("managers", __file__))
