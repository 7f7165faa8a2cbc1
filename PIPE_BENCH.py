"""Pipe workloads for the lead to wire into fastmp.bench: each is fn(mp, n, start_method) ->
operations per second, the stdlib and fastmp run the same body.

    python PIPE_BENCH.py [n_scale] [rounds]      runs them, alternating, and prints the ratios
"""
import sys
import time
from time import perf_counter

MIB = 1 << 20
PARENT_CPU, CHILD_CPU = 0, 1     # two-process workloads run split over two CPUs, as fastmp.bench


def _pin(cpu):
    import os
    try:
        os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError):
        pass


def _start(ctx, target, args):
    p = ctx.Process(target=_pinned_child, args=(target, args))
    p.start()
    return p


def _pinned_child(target, args):
    _pin(CHILD_CPU)
    target(*args)


def _bytes_echo(conn, n):
    recv_bytes, send_bytes = conn.recv_bytes, conn.send_bytes
    for _ in range(n):
        send_bytes(recv_bytes())


def bench_pipe_bytes_pingpong(mp, n, start_method="fork"):
    """send_bytes(16 bytes)/recv_bytes there and back over a duplex Pipe: round trips/s."""
    ctx = mp.get_context(start_method)
    a, b = ctx.Pipe()
    p = _start(ctx, _bytes_echo, (b, n + 1))
    try:
        msg = b"0123456789abcdef"
        a.send_bytes(msg)
        a.recv_bytes()          # the child is up
        send_bytes, recv_bytes = a.send_bytes, a.recv_bytes
        t0 = perf_counter()
        for _ in range(n):
            send_bytes(msg)
            recv_bytes()
        dt = perf_counter() - t0
        p.join()
    finally:
        a.close()
        b.close()
    return n / dt


def _tuple_echo(conn, n):
    recv, send = conn.recv, conn.send
    for _ in range(n):
        send(recv())


def bench_pipe_tuple_pingpong(mp, n, start_method="fork"):
    """send((i, 'x', 2.5))/recv there and back: round trips/s."""
    ctx = mp.get_context(start_method)
    a, b = ctx.Pipe()
    p = _start(ctx, _tuple_echo, (b, n + 1))
    try:
        a.send(None)
        a.recv()
        send, recv = a.send, a.recv
        t0 = perf_counter()
        for i in range(n):
            send((i, "x", 2.5))
            recv()
        dt = perf_counter() - t0
        p.join()
    finally:
        a.close()
        b.close()
    return n / dt


def _send_big(w, n, size):
    data = b"\xab" * size
    send_bytes = w.send_bytes
    for _ in range(n):
        send_bytes(data)


def bench_pipe_1m(mp, n, start_method="fork"):
    """A child sends 1 MiB messages over a one-way Pipe, the parent receives: messages/s."""
    ctx = mp.get_context(start_method)
    r, w = ctx.Pipe(duplex=False)
    p = _start(ctx, _send_big, (w, n + 1, MIB))
    try:
        r.recv_bytes()
        recv_bytes = r.recv_bytes
        t0 = perf_counter()
        for _ in range(n):
            recv_bytes()
        dt = perf_counter() - t0
        p.join()
    finally:
        r.close()
        w.close()
    return n / dt


def _busy_sender(w, n):
    send = w.send
    for i in range(n):
        send(i)


def bench_pipe_wait_11(mp, n, start_method="fork"):
    """wait() over 10 idle connections and one busy one (a child sends n small objects):
    messages taken per second, each after a wait()."""
    ctx = mp.get_context(start_method)
    conn_mod = __import__(mp.__name__ + ".connection", fromlist=["wait"])
    idle = [ctx.Pipe() for _ in range(10)]
    r, w = ctx.Pipe(duplex=False)
    p = _start(ctx, _busy_sender, (w, n + 1))
    try:
        conns = [c for c, _ in idle] + [r]
        wait = conn_mod.wait
        wait(conns)
        r.recv()
        t0 = perf_counter()
        got = 0
        while got < n:
            for c in wait(conns):
                c.recv()
                got += 1
        dt = perf_counter() - t0
        p.join()
    finally:
        for a, b in idle:
            a.close()
            b.close()
        r.close()
        w.close()
    return n / dt


WORKLOADS = [
    ("pipe-bytes-pingpong", bench_pipe_bytes_pingpong, 20000),
    ("pipe-tuple-pingpong", bench_pipe_tuple_pingpong, 20000),
    ("pipe-1m", bench_pipe_1m, 300),
    ("pipe-wait-11", bench_pipe_wait_11, 5000),
]


def main():
    import statistics
    import multiprocessing
    import fastmp
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    import os
    cap = int(os.environ.get("PIPE_CAPACITY", "0"))
    if cap:
        import fastmp.connection as fc
        fc.Pipe = lambda duplex=True: fc.Connection._fm_pair(duplex, cap)
    only = os.environ.get("PIPE_ONLY", "")
    saved = os.sched_getaffinity(0)
    _pin(PARENT_CPU)
    for name, fn, n in WORKLOADS:
        if only and only not in name:
            continue
        n = max(1, int(n * scale))
        res = {"stdlib": [], "fastmp": []}
        for _ in range(rounds):
            res["stdlib"].append(fn(multiprocessing, n))
            res["fastmp"].append(fn(fastmp, n))
        s = statistics.median(res["stdlib"])
        f = statistics.median(res["fastmp"])
        print(f"{name:22s} stdlib {s:12.1f}/s  fastmp {f:12.1f}/s  ratio {f / s:6.2f}x")
    os.sched_setaffinity(0, saved)


if __name__ == "__main__":
    main()
