"""Where the processes of a workload run: CPU pinning and the number of worker processes.

On a small VM a wake-up across CPUs can cost ten times one on the same CPU, and the scheduler
moves processes between the two at will, so unpinned ping-pong rates jump between two modes from
round to round.  Pinning makes the rounds comparable.  The pin mode (``--pin``) says where the two
processes of a two-process workload go:

    split  parent and child on two different CPUs (the default: the common case for
           multiprocessing, and where spinning before sleeping can pay)
    same   both on one CPU (every hand-off is a context switch; spinning is waste)
    none   wherever the scheduler puts them (realistic, noisy)

The number of processes (``--processes``) is the worker count of the pool workloads and the
producer count of queue-fanin.
"""
import os
import platform

PIN_MODES = ("split", "same", "none")
_pin_mode = "split"


def set_pin_mode(mode):
    global _pin_mode
    if mode not in PIN_MODES:
        raise ValueError(f"pin mode must be one of {PIN_MODES}, not {mode!r}")
    _pin_mode = mode


def pin_mode():
    return _pin_mode


def cpu_plan(mode=None):
    """(parent_cpu, child_cpu) for a two-process workload; None = unpinned.
    split falls back to none when fewer than two CPUs are usable."""
    mode = mode or _pin_mode
    if mode == "none" or not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if mode == "same":
        return cpus[0], cpus[0]
    if len(cpus) < 2:
        return None, None
    return cpus[0], cpus[1]


def pin_self(cpu):
    """Pin the calling process to one CPU (no-op for None)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


class pinned:
    """``with pinned(cpu):`` runs the block on one CPU, then restores the mask."""

    def __init__(self, cpu):
        self.cpu = cpu

    def __enter__(self):
        if self.cpu is not None:
            self._old = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {self.cpu})
        return self

    def __exit__(self, *exc):
        if self.cpu is not None:
            os.sched_setaffinity(0, self._old)
        return False


def usable_cpus():
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# Worker processes of the pool workloads and producers of the fan-in workload (--processes).
_processes = None


def set_processes(n):
    global _processes
    if n is not None and n < 1:
        raise ValueError(f"processes must be at least 1, not {n}")
    _processes = n


def processes():
    """The number of worker processes: --processes, or the usable CPUs."""
    return _processes or usable_cpus()


def cpu_model():
    """The CPU's model name, for the report ("" when unknown)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or ""
