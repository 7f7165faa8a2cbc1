"""``python -m fastmp.bench``: fastmp against the stdlib ``multiprocessing``, side by side.

    python -m fastmp.bench                      # every workload, about 2 minutes on 2 cores
    python -m fastmp.bench --quick              # a smoke test, under a minute
    python -m fastmp.bench --only queue,pool --json out.json --plot out.png
    python -m fastmp.bench --list

Every workload runs for the stdlib and for fastmp in the same run, from the same parent process,
the two alternating round by round, and the table gives each one's median rate, the ratio
fastmp/stdlib (higher is better for fastmp) and the spread of the per-round ratios.  A workload
whose fastmp part is not C yet still runs: fastmp hands out the stdlib's object there, so its
ratio is about 1 and shows how noisy the machine is.  Peers, when installed (``pip install
'fastmp[bench]'``), get a column each: faster-fifo for the queue workloads, mpire and loky for
the pool workloads, UltraDict for the Manager dict workloads; a peer that is not installed is
reported absent.

A *workload* is a plain function ``fn(mp, n, start_method) -> float`` that runs ``n``
operations with the library module ``mp`` (``multiprocessing`` or ``fastmp``), reached only
through ``mp`` and ``mp.get_context(start_method)``, and returns operations per second,
measured around the operations only (process start-up and hand-shakes are not timed unless
starting is what the workload measures).  A peer's version of a workload is a function
``fn(n, start_method) -> float``.  The scripts in the checkout's ``benchmarks/`` directory run
the same workloads, one group each, with the same command line (:func:`main` with ``group``).

The package's modules:

    runner        the libraries, the alternating rounds, medians and ratios, the watchdog
    placement     CPU pinning of two-process workloads, the number of worker processes
    harness       the child processes of the multi-process workloads, and their timing
    sync, sharedctypes, queue, pool, misc, managers
                  the workloads, one module per group (each module's WORKLOADS)
    workloads     every workload, by group (GROUPS, WORKLOADS)
    report        a run's report: the JSON, the table, the plot
    cli           the command line (:func:`main`)
"""
from .cli import main
from .placement import (PIN_MODES, cpu_model, cpu_plan, pin_mode, pin_self, pinned, processes,
                        set_pin_mode, set_processes, usable_cpus)
from .report import JSON_FORMAT, PlotError, fmt_rate, plot, print_report, run
from .runner import (C_PART, DEFAULT_LIBS, FASTMP, NOT_C_PART, PEERS, STDLIB, BenchTimeout, Lib,
                     Result, Workload, compare, impl_of, load_lib, load_peer, ratios, select,
                     summary, watchdog)
from .workloads import GROUPS, WORKLOADS
# each group's workloads, and their functions (bench_*: fn(mp, n, start_method); a peer's,
# ff_*, mpire_*, loky_*, ultradict_*: fn(n, start_method))
from .managers import WORKLOADS as MANAGERS_WORKLOADS
from .manager_sync import WORKLOADS as _MANAGER_SYNC_WORKLOADS
from .manager_data import WORKLOADS as _MANAGER_DATA_WORKLOADS
MANAGERS_WORKLOADS = MANAGERS_WORKLOADS + _MANAGER_SYNC_WORKLOADS + _MANAGER_DATA_WORKLOADS
from .misc import WORKLOADS as MISC_WORKLOADS
from .pool import WORKLOADS as POOL_WORKLOADS
from .queue import WORKLOADS as QUEUE_WORKLOADS
from .sharedctypes import WORKLOADS as SHAREDCTYPES_WORKLOADS
from .sync import WORKLOADS as SYNC_WORKLOADS
from .sync import (bench_barrier2, bench_condition_pingpong, bench_event_pingpong, bench_lock,
                   bench_lock_method, bench_lock_with, bench_rlock, bench_semaphore)
from .sharedctypes import (bench_array_item, bench_array_read, bench_array_slice,
                           bench_array_slice_copy, bench_atomic_add, bench_bytes_copy,
                           bench_value_contended, bench_value_get_lock, bench_value_locked,
                           bench_value_raw)
from .queue import (BATCH, BIG_ITEM, FF_README_CONFIGS, MIB_ITEM, SMALL_ITEM, bench_queue_1mib,
                    bench_queue_1p4c, bench_queue_4p1c, bench_queue_64k, bench_queue_fanin,
                    bench_queue_get_many, bench_queue_pingpong, bench_queue_throughput,
                    bench_simplequeue_throughput, ff_queue_1mib, ff_queue_1p4c, ff_queue_4p1c,
                    ff_queue_64k, ff_queue_fanin, ff_queue_get_many, ff_queue_pingpong,
                    ff_queue_throughput)
from .pool import (bench_executor_submit, bench_pool_apply, bench_pool_apply_async,
                   bench_pool_imap, bench_pool_map, bench_pool_maxtasks1, bench_pool_start,
                   loky_executor_submit, loky_pool_apply_async, loky_pool_map, loky_pool_start,
                   mpire_pool_apply_async, mpire_pool_map, mpire_pool_start)
from .managers import (bench_manager_dict_1mib, bench_manager_dict_2proc, bench_manager_dict_get,
                       bench_manager_dict_set, bench_manager_list_append,
                       bench_manager_namespace, ultradict_dict_1mib, ultradict_dict_2proc,
                       ultradict_dict_get, ultradict_dict_set)
from .misc import (bench_manager_dict, bench_manager_start, bench_pipe_64k, bench_pipe_pingpong,
                   bench_process_start)


__all__ = [
    "PIN_MODES", "set_pin_mode", "pin_mode", "cpu_plan", "pinned", "pin_self", "usable_cpus",
    "set_processes", "processes", "cpu_model",
    "Workload", "Lib", "Result", "BenchTimeout", "PlotError", "watchdog", "load_lib",
    "load_peer", "select", "compare", "ratios", "summary", "fmt_rate", "impl_of",
    "SYNC_WORKLOADS", "SHAREDCTYPES_WORKLOADS", "QUEUE_WORKLOADS", "POOL_WORKLOADS",
    "MISC_WORKLOADS", "MANAGERS_WORKLOADS", "WORKLOADS", "GROUPS", "PEERS",
    "run", "print_report", "plot", "main",
]
