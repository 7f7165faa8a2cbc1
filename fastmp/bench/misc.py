"""The ``misc`` workloads: Pipe between two processes (objects, small byte strings, 64 KiB and
1 MiB messages, wait() over many connections), starting a Process, a Manager and its dict
proxy."""
import importlib
from multiprocessing import connection as _connection
from time import perf_counter

from .harness import ping_pong, producers
from .placement import cpu_plan, pinned
from .queue import BIG_ITEM
from .runner import Workload

GROUP = "misc"


def _pipe_child(conn, n, a, b):
    conn.send("ready")
    send, recv = b.send, b.recv
    for _ in range(n):
        send(recv())
    conn.send("done")


def _pipe_parent(n, a, b):
    send, recv = a.send, a.recv
    for i in range(n):
        send(i)
        recv()


def bench_pipe_pingpong(mp, n, start_method="fork"):
    """conn.send(i) there and back over a duplex Pipe: round trips per second."""
    ctx = mp.get_context(start_method)
    a, b = ctx.Pipe()
    try:
        return ping_pong(ctx, n, _pipe_child, _pipe_parent, (a, b))
    finally:
        a.close()
        b.close()


SMALL_MESSAGE = b"0123456789abcdef"
MIB_MESSAGE = bytes(1 << 20)


def _pipe_bytes_child(conn, n, a, b):
    conn.send("ready")
    send_bytes, recv_bytes = b.send_bytes, b.recv_bytes
    for _ in range(n):
        send_bytes(recv_bytes())
    conn.send("done")


def _pipe_bytes_parent(n, a, b):
    send_bytes, recv_bytes = a.send_bytes, a.recv_bytes
    for _ in range(n):
        send_bytes(SMALL_MESSAGE)
        recv_bytes()


def bench_pipe_bytes(mp, n, start_method="fork"):
    """send_bytes of 16 bytes there and back over a duplex Pipe: round trips per second."""
    ctx = mp.get_context(start_method)
    a, b = ctx.Pipe()
    try:
        return ping_pong(ctx, n, _pipe_bytes_child, _pipe_bytes_parent, (a, b))
    finally:
        a.close()
        b.close()


def _send_bytes(n, r, w, item):
    send_bytes = w.send_bytes
    for _ in range(n):
        send_bytes(item)


def _recv_bytes(n, r, w, item):
    recv_bytes = r.recv_bytes
    for _ in range(n):
        recv_bytes()


def bench_pipe_64k(mp, n, start_method="fork"):
    """A child sends 64 KiB messages (send_bytes) over a one-way Pipe, the parent receives."""
    ctx = mp.get_context(start_method)
    r, w = ctx.Pipe(duplex=False)
    try:
        return producers(ctx, n, 1, _send_bytes, _recv_bytes, (r, w, BIG_ITEM))
    finally:
        r.close()
        w.close()


def bench_pipe_1mib(mp, n, start_method="fork"):
    """A child sends 1 MiB messages (send_bytes) over a one-way Pipe, the parent receives."""
    ctx = mp.get_context(start_method)
    r, w = ctx.Pipe(duplex=False)
    try:
        return producers(ctx, n, 1, _send_bytes, _recv_bytes, (r, w, MIB_MESSAGE))
    finally:
        r.close()
        w.close()


def _send_objects(n, r, w, idle):
    send = w.send
    for i in range(n):
        send(i)


def _wait_and_recv(n, r, w, idle):
    conns = idle + [r]
    wait = _connection.wait
    got = 0
    while got < n:
        for c in wait(conns):
            c.recv()
            got += 1


def bench_pipe_wait(mp, n, start_method="fork"):
    """multiprocessing.connection.wait() over 10 idle Pipe ends and a busy one (a child sends
    small objects): messages taken per second, each after a wait()."""
    ctx = mp.get_context(start_method)
    pairs = [ctx.Pipe() for _ in range(10)]
    r, w = ctx.Pipe(duplex=False)
    try:
        return producers(ctx, n, 1, _send_objects, _wait_and_recv,
                         (r, w, [a for a, _ in pairs]))
    finally:
        for a, b in pairs:
            a.close()
            b.close()
        r.close()
        w.close()


def _noop():
    pass


def bench_process_start(mp, n, start_method="fork"):
    """Process(target=noop).start() then join(): processes per second."""
    ctx = mp.get_context(start_method)
    t0 = perf_counter()
    for _ in range(n):
        proc = ctx.Process(target=_noop)
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"child exited with {proc.exitcode}")
    return n / (perf_counter() - t0)


def bench_manager_start(mp, n, start_method="fork"):
    """Manager() then shutdown(): managers per second."""
    ctx = mp.get_context(start_method)
    t0 = perf_counter()
    for _ in range(n):
        ctx.Manager().shutdown()
    return n / (perf_counter() - t0)


def bench_manager_dict(mp, n, start_method="fork"):
    """d[key] = i on a Manager().dict() proxy: one round trip to the manager each.  The
    manager's process and the parent are placed like the two processes of a ping-pong
    (the manager inherits the CPU mask it is started with)."""
    parent_cpu, child_cpu = cpu_plan()
    with pinned(child_cpu):
        manager = mp.get_context(start_method).Manager()
    try:
        d = manager.dict()
        with pinned(parent_cpu):
            t0 = perf_counter()
            for i in range(n):
                d[i & 63] = i
            dt = perf_counter() - t0
    finally:
        manager.shutdown()
    return n / dt


def _probe_pipe(mp, ctx):
    a, b = ctx.Pipe()
    a.close()
    b.close()
    return type(a)


def _probe_manager(mp, ctx):
    return importlib.import_module(mp.__name__ + ".managers").SyncManager


WORKLOADS = [
    Workload("pipe-pingpong", bench_pipe_pingpong, 10_000, "round trip",
             "conn.send(i) there and back over a duplex Pipe, two processes",
             probe=_probe_pipe),
    Workload("pipe-bytes", bench_pipe_bytes, 20_000, "round trip",
             "send_bytes of 16 bytes there and back over a duplex Pipe, two processes",
             probe=_probe_pipe),
    Workload("pipe-64k", bench_pipe_64k, 5_000, "64 KiB message",
             "send_bytes of 64 KiB over a one-way Pipe, child to parent",
             probe=_probe_pipe),
    Workload("pipe-1mib", bench_pipe_1mib, 300, "1 MiB message",
             "send_bytes of 1 MiB over a one-way Pipe, child to parent",
             probe=_probe_pipe),
    Workload("pipe-wait", bench_pipe_wait, 5_000, "message",
             "connection.wait() over 10 idle Pipe ends and a busy one, then recv()",
             probe=_probe_pipe),
    Workload("process-start", bench_process_start, 50, "process",
             "Process(target=noop): start() and join()",
             probe=lambda mp, ctx: ctx.Process),
    Workload("manager-start", bench_manager_start, 10, "manager",
             "Manager() and shutdown()",
             probe=_probe_manager),
    Workload("manager-dict", bench_manager_dict, 20_000, "set",
             "d[k] = i on a Manager().dict() proxy",
             probe=_probe_manager),
]
for _w in WORKLOADS:
    _w.group = GROUP
del _w
