"""Every workload, by group: one module per group, in the order of the table."""
from . import manager_data, manager_sync, managers, misc, pool, queue, sharedctypes, sync

GROUPS = ("sync", "sharedctypes", "queue", "pool", "misc", "managers")
WORKLOADS = (sync.WORKLOADS + sharedctypes.WORKLOADS + queue.WORKLOADS + pool.WORKLOADS
             + misc.WORKLOADS + managers.WORKLOADS + manager_sync.WORKLOADS
             + manager_data.WORKLOADS)


def of_group(group):
    """The workloads of one group (a name in GROUPS)."""
    if group not in GROUPS:
        raise ValueError(f"no workload group {group!r}: one of {', '.join(GROUPS)}")
    return [w for w in WORKLOADS if w.group == group]
