"""The child processes of the multi-process workloads, and how the parent times them.

Two ways, each starting its children anew for every round, so no process outlives a round:

- :func:`ping_pong`: one child says "ready" on a pipe just before its loop and "done" after it;
  the parent times its own loop between the two.  Both sides run exactly ``n`` iterations, so
  every wait is matched.  Parent and child are placed on CPUs as the pin mode says.
- :func:`producers`: ``k`` children each send ``n/k`` items once the parent says "go".  Each
  child says "ready" on its own pipe and waits for "go"; the parent times from the first "go"
  to the end of its own loop, so start-up is not timed and no child gets a head start.  With one
  producer the parent and the child are placed as the pin mode says; with more, the scheduler
  places them.
"""
from time import perf_counter

from .placement import cpu_plan, pin_self, pinned
from .runner import BenchTimeout


def _pinned_child(cpu, child, conn, n, *objs):
    pin_self(cpu)
    child(conn, n, *objs)


def ping_pong(ctx, n, child, parent, objs, start_timeout=60.0):
    """Start `child(conn, n, *objs)` in a new process, wait for its "ready",
    time `parent(n, *objs)`, and return round trips per second.  The two
    processes are placed on CPUs as the pin mode says (cpu_plan)."""
    parent_cpu, child_cpu = cpu_plan()
    recv_end, send_end = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_pinned_child,
                       args=(child_cpu, child, send_end, n) + tuple(objs), daemon=True)
    proc.start()
    try:
        send_end.close()
        if not recv_end.poll(start_timeout):
            raise BenchTimeout(f"child did not start within {start_timeout:.0f} s")
        msg = recv_end.recv()
        if msg != "ready":
            raise RuntimeError(f"unexpected message from the child: {msg!r}")
        with pinned(parent_cpu):
            t0 = perf_counter()
            parent(n, *objs)
            dt = perf_counter() - t0
        if recv_end.recv() != "done":
            raise RuntimeError("the child did not finish its loop")
        proc.join(start_timeout)
        if proc.exitcode != 0:
            raise RuntimeError(f"child exited with {proc.exitcode}")
        return n / dt
    except EOFError:
        proc.join(5)
        raise RuntimeError(f"child died (exit code {proc.exitcode})") from None
    finally:
        recv_end.close()
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)


def _producer_main(cpu, child, conn, n, *objs):
    pin_self(cpu)
    conn.send("ready")
    if conn.recv() != "go":
        return
    child(n, *objs)
    conn.send("done")


def producers(ctx, n, k, child, parent, objs, start_timeout=60.0):
    """Start k processes running `child(n // k, *objs)` after a "go", time
    `parent((n // k) * k, *objs)`, and return items per second."""
    per = max(1, n // k)
    total = per * k
    parent_cpu, child_cpu = cpu_plan() if k == 1 else (None, None)
    conns, procs = [], []
    try:
        for _ in range(k):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_producer_main,
                               args=(child_cpu, child, theirs, per) + tuple(objs), daemon=True)
            proc.start()
            theirs.close()
            conns.append(mine)
            procs.append(proc)
        for conn in conns:
            if not conn.poll(start_timeout):
                raise BenchTimeout(f"a child did not start within {start_timeout:.0f} s")
            if conn.recv() != "ready":
                raise RuntimeError("unexpected message from a child")
        with pinned(parent_cpu):
            t0 = perf_counter()
            for conn in conns:
                conn.send("go")
            parent(total, *objs)
            dt = perf_counter() - t0
        for conn in conns:
            if conn.recv() != "done":
                raise RuntimeError("a child did not finish its loop")
        for proc in procs:
            proc.join(start_timeout)
            if proc.exitcode != 0:
                raise RuntimeError(f"child exited with {proc.exitcode}")
        return total / dt
    except EOFError:
        for proc in procs:
            proc.join(5)
        codes = [proc.exitcode for proc in procs]
        raise RuntimeError(f"a child died (exit codes {codes})") from None
    finally:
        for conn in conns:
            conn.close()
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
                if proc.is_alive():
                    proc.kill()
                    proc.join(5)
