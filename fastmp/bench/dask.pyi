# fastmp.dask_bench: the workloads of fastmp.dask (needs the extra: pip install 'fastmp[dask]').
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

__all__ = ["WORKLOADS", "IMPLS", "missing", "run", "format_rows", "main"]

WORKLOADS: Tuple[str, ...]
IMPLS: Tuple[str, ...]
BASELINE: str

# None when the workloads can run, else why not
def missing() -> Optional[str]: ...
# one dict per (workload, implementation): workload, impl, items, seconds, runs, rate, ratio
def run(workers: int = ..., tiny_items: int = ..., sleep_items: int = ...,
        sleep_seconds: float = ..., rounds: int = ..., baseline_tiny_items: int = ...,
        per_task_items: int = ..., workloads: Sequence[str] = ...,
        log: Optional[Callable[[str], object]] = ...) -> List[Dict[str, Any]]: ...
def format_rows(rows: List[Dict[str, Any]]) -> str: ...
def main(argv: Optional[Sequence[str]] = ...) -> int: ...
