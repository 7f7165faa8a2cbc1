"""Workers whose parent died stop taking work.

A parent process makes a Pool (or a ProcessPoolExecutor, which runs the same C worker loop),
queues many slow tasks and is SIGKILLed at a random moment.  Every task writes a line when it
starts; after the parent is gone (reaped by this test) no task may start, and every worker
must be gone within a few seconds.  A task running when the parent dies may finish.

And the other way round: a pool made in a thread that then exits keeps its workers (the
kernel's parent-death signal fires when the *thread* that forked a worker exits).
"""
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

# Where the fastmp under test lives (the installed package, or an in-place build named by
# PYTHONPATH); never the repo root, whose source tree has no compiled _core.
import fastmp  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(fastmp.__file__)))
METHODS = ["fork", "spawn", "forkserver"]
TASK_S = 0.4            # each task sleeps this long
# A task may start this long after the parent was reaped: the time it takes a loaded machine
# to run the worker up to the task's first line once it passed its check (and, for a
# forkserver's child, for the forkserver to exit or the worker's periodic check to run).
# Without the check every worker starts its next tasks TASK_S and more after.
START_SLACK_S = 0.1
GONE_WITHIN_S = 4.0

PARENT = textwrap.dedent("""
    import os, sys, threading, time
    import fastmp

    def task(path, i):
        with open(path, "a") as f:
            f.write("{} {} {:.6f}\\n".format(i, os.getpid(), time.time()))
        time.sleep(TASK_S)
        return i

    def make(kind, ctx, path, n):
        if kind == "pool":
            pool = ctx.Pool(2)
            for i in range(n):
                pool.apply_async(task, (path, i))
            return pool, lambda: [p.pid for p in pool._pool]
        from fastmp.futures import ProcessPoolExecutor
        ex = ProcessPoolExecutor(2, mp_context=ctx)
        for i in range(n):
            ex.submit(task, path, i)
        return ex, lambda: sorted(ex._processes)

    if __name__ == "__main__":
        kind, method, path, where = sys.argv[1:5]
        ctx = fastmp.get_context(method)
        keep = []
        if where == "thread":
            t = threading.Thread(target=lambda: keep.append(make(kind, ctx, path, 400)))
            t.start()
            t.join()
        else:
            keep.append(make(kind, ctx, path, 400))
        obj, pids = keep[0]
        deadline = time.monotonic() + 60
        while len(pids()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        print(obj._dispatcher.name, " ".join(map(str, pids())), flush=True)
        time.sleep(120)
""").replace("TASK_S", repr(TASK_S))


def _gone(pid):
    """The process has ended (a zombie counts: nobody may reap orphans in a container)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def _starts(path):
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    return [(int(i), int(pid), float(t)) for i, pid, t in
            (ln.split() for ln in lines if ln.count(" ") == 2)]


def _start_parent(tmp_path, kind, method, where):
    script = tmp_path / "orphan_parent.py"
    script.write_text(PARENT)
    log = tmp_path / f"starts-{kind}-{method}-{where}-{random.random()}.txt"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, str(script), kind, method, str(log), where],
                            stdout=subprocess.PIPE, env=env, cwd=str(tmp_path))
    line = proc.stdout.readline().decode()
    proc.stdout.close()
    assert len(line.split()) == 3, line
    segment, *pids = line.split()
    return proc, [int(x) for x in pids], str(log), segment


def _wait_for_starts(log, n, timeout=30):
    deadline = time.monotonic() + timeout
    while len(_starts(log)) < n:
        assert time.monotonic() < deadline, "the workers never started tasks"
        time.sleep(0.01)


def _kill_and_check(proc, pids, log, segment):
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    dead_at = time.time()           # the parent is gone and reaped from here on
    deadline = time.monotonic() + GONE_WITHIN_S
    while not all(_gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    left = [p for p in pids if not _gone(p)]
    for p in left:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    late = [s for s in _starts(log) if s[2] > dead_at + START_SLACK_S]
    assert left == [], f"workers {left} still alive {GONE_WITHIN_S}s after the parent died"
    assert late == [], f"tasks started after the parent died: {late}"
    # the dead parent's resource tracker unlinks the pool's segment (before the session's
    # check for leaked /dev/shm entries looks)
    path = "/dev/shm/" + segment.lstrip("/")
    deadline = time.monotonic() + 20
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(path)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["pool", "executor"])
def test_orphaned_workers_stop(tmp_path, kind, method):
    for trial in range(3):
        proc, pids, log, segment = _start_parent(tmp_path, kind, method, "main")
        try:
            _wait_for_starts(log, 2)
            # at a random moment of the tasks in flight
            time.sleep(random.uniform(0.0, 2 * TASK_S))
            _kill_and_check(proc, pids, log, segment)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert len(_starts(log)) < 400


@pytest.mark.parametrize("method", ["fork", "spawn"])
@pytest.mark.parametrize("kind", ["pool", "executor"])
def test_pool_made_in_an_exited_thread_keeps_its_workers(tmp_path, kind, method):
    proc, pids, log, segment = _start_parent(tmp_path, kind, method, "thread")
    try:
        # the thread that forked the workers has exited: they carry on
        _wait_for_starts(log, 2)
        n = len(_starts(log))
        time.sleep(3 * TASK_S)
        assert not any(_gone(p) for p in pids)
        assert len(_starts(log)) >= n + 2
        assert {pid for _, pid, _ in _starts(log)} <= set(pids)
        # and stop when the process dies
        _kill_and_check(proc, pids, log, segment)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
