"""What the scripts here share: they run one group of ``python -m fastmp.bench``'s workloads,
with its command line, its table and its JSON (the workloads live in the package, so that an
installed fastmp runs them without this directory)."""
import os
import sys


def run(group, script):
    """``python benchmarks/bench_<group>.py [options]``: exit status as ``fastmp.bench.main``'s.
    fastmp comes from wherever Python finds it (installed, or PYTHONPATH), else this checkout."""
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(script))))
    from fastmp.bench import main
    return main(group=group, prog=f"python benchmarks/{os.path.basename(script)}")
