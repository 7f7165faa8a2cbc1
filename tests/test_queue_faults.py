"""A producer SIGKILLed in the middle of put() never wedges a queue or a pool.

Two processes put into one fastmp Queue in a tight loop; one of them is SIGKILLed at a random
moment (20-300 ms in), over many trials.  Every item the survivor put arrives exactly once and in
order, the victim's items arrive at most once and in order, an item put afterwards arrives, and
qsize() agrees.  The same with put_many, with items big enough to travel through a spill segment,
and for a pool whose worker is killed while it returns results.

The kill lands now and then between a producer's reservation of a record in the ring and the
stamp of its header (csrc/core/ring.c, "Claiming"); consumers revoke such a reservation after two wait
slices.  Before that, such a trial hung.  The window is also hit on purpose: the ring calls
fm_ring_test_claim_window (csrc/core/ring.h) there when a program defines it; the tests below build a
tiny library that does and preload it into a program of their own, in which one process (a
producer, a pool worker returning a result) is told to stop there and is then SIGKILLed.
"""
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

import fastmp
import fastmp.pool

WAIT = 20.0
TRIALS = 20
BIG = 9 << 20          # above an inline record's limit (csrc/queue.c): a spill segment each


# ------------------------------------------------------------------ process targets

_PADS = {}


def _item(k, i, big):
    """big: True for a spilled item now and then; a number for that many bytes in every item."""
    if big is not True and big:
        pad = _PADS.get(big)
        if pad is None:
            pad = _PADS[big] = b"p" * big
        return (k, i, pad)
    if big and i % 25 == 7:
        return (k, i, bytes([i % 251]) * BIG)
    return (k, i)


def produce(q, k, stop, batch, big):
    """Put (k, 0), (k, 1), ... until `stop` is set (forever without one), then ("end", k, n)."""
    i = 0
    while stop is None or not stop.is_set():
        if batch:
            q.put_many([_item(k, j, big) for j in range(i, i + batch)])
            i += batch
        else:
            q.put(_item(k, i, big))
            i += 1
    q.put(("end", k, i))


def square(x):
    return x * x


# ------------------------------------------------------------------ queue trials

def _check_item(item, k, want, big):
    assert item[0] == k and item[1] == want, (item[:2], k, want)
    if big is not True and big:
        assert item[2] == b"p" * big
    elif big and item[1] % 25 == 7:
        assert item[2] == bytes([item[1] % 251]) * BIG
    else:
        assert len(item) == 2


def _trial(ctx, rng, batch, big, maxsize=0, pad=0):
    q, stop = ctx.Queue(maxsize), ctx.Event()
    # Grow the ring to 8 MiB first (an item of 1 MiB makes it eight times that), so that the
    # small items never make the victim grow it: a process killed while creating a segment
    # leaves an empty file in /dev/shm (another matter, not this test's).
    q.put(bytes(1 << 20))
    assert q.get(timeout=WAIT) == bytes(1 << 20)
    survivor = ctx.Process(target=produce, args=(q, 0, stop, batch, big or pad), daemon=True)
    # (the victim puts small items only: one killed while creating a spill segment leaves an
    # empty file in /dev/shm, another matter; a victim stopped right after spilling, in the
    # claim window of the record that names the segment, is scenario_big below)
    victim = ctx.Process(target=produce, args=(q, 1, None, batch, pad), daemon=True)
    survivor.start()
    victim.start()
    try:
        kill_at = time.monotonic() + rng.uniform(0.02, 0.3)
        stop_at = None
        nxt = [0, 0]
        end = None
        while end is None:
            now = time.monotonic()
            if stop_at is None and now >= kill_at:
                os.kill(victim.pid, signal.SIGKILL)
                stop_at = now + 0.05        # the survivor goes on putting a while
            elif stop_at is not None and now >= stop_at:
                stop.set()
            try:
                items = q.get_many(max_items=1000, timeout=WAIT)
            except queue.Empty:
                pytest.fail(f"wedged: no item for {WAIT}s; got {nxt} so far, qsize {q.qsize()}")
            for item in items:
                if item[0] == "end":
                    assert item[1] == 0
                    end = item[2]
                    continue
                k = item[0]
                _check_item(item, k, nxt[k], pad if k else big or pad)
                nxt[k] += 1
        victim.join(WAIT)
        survivor.join(WAIT)
        assert victim.exitcode == -signal.SIGKILL
        assert survivor.exitcode == 0
        assert nxt[0] == end, "the survivor's items arrive, each once"
        # what the victim committed before it died comes before this (a bounded queue whose
        # slot the victim took to its grave says Full here)
        q.put("marker", timeout=WAIT)
        while True:
            item = q.get(timeout=WAIT)
            if item == "marker":
                break
            _check_item(item, 1, nxt[1], pad)
            nxt[1] += 1
        with pytest.raises(queue.Empty):
            q.get_nowait()
        assert q.empty() and q.qsize() == 0
        # the count is exact with items in as well (a victim killed after committing an item
        # and before counting it used to leave it short)
        q.put("later", timeout=WAIT)
        assert q.qsize() == 1 and not q.empty()
        if maxsize:
            for i in range(maxsize - 1):
                q.put_nowait(("fill", i))
            assert q.full() and q.qsize() == maxsize
            with pytest.raises(queue.Full):
                q.put_nowait("one too many")
        assert q.get(timeout=WAIT) == "later"
        for i in range(maxsize - 1 if maxsize else 0):
            assert q.get(timeout=WAIT) == ("fill", i)
        with pytest.raises(queue.Empty):
            q.get_nowait()
        assert q.empty() and q.qsize() == 0
        return nxt[1]
    finally:
        for p in (victim, survivor):
            if p.exitcode is None:
                p.kill()
                p.join(5)
        q.close()


def _run_trials(batch=0, big=False, trials=TRIALS, maxsize=0, pad=0):
    ctx = fastmp.get_context("fork")
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(trials):
        _trial(ctx, rng, batch, big, maxsize, pad)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("maxsize", [1, 4])
def test_producer_killed_in_bounded_put_never_wedges(maxsize):
    # A bounded put takes its slot of the count before it writes its record: a producer killed
    # in between must not keep the slot (Full, or a put blocked for ever, on an empty queue).
    # The items carry 256 KiB (copied into the ring between the two), so that a kill
    # at random lands there often.
    _run_trials(maxsize=maxsize, pad=256 << 10)


@pytest.mark.timeout(240)
def test_producer_killed_in_bounded_put_many_never_wedges():
    _run_trials(batch=50, maxsize=4, pad=256 << 10)


@pytest.mark.timeout(180)
def test_producer_killed_in_put_never_wedges():
    _run_trials()


@pytest.mark.timeout(180)
def test_producer_killed_in_put_many_never_wedges():
    _run_trials(batch=50)


@pytest.mark.timeout(180)
def test_producer_killed_putting_big_items_never_wedges():
    # In a program of its own: a victim killed between writing a spill segment and committing
    # the record that names it leaves the segment to the resource tracker, which removes it when
    # that program exits (docs/reliability.md), not when this test ends.
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([tests_dir] + [p for p in [env.get("PYTHONPATH")] if p])
    run = subprocess.run(
        [sys.executable, "-c", "import test_queue_faults as t; t._run_trials(big=True, trials=10)"],
        env=env, capture_output=True, text=True, timeout=150, cwd=tests_dir)
    assert run.returncode == 0, run.stdout + run.stderr


# ------------------------------------------------------------------ pool


@pytest.mark.timeout(180)
def test_pool_worker_killed_returning_results_never_wedges():
    # tiny tasks, so the workers spend their time putting results into the result ring; one is
    # SIGKILLed at a random moment.  Each task's result arrives once or its task fails with
    # WorkerLostError; the pool then goes on.
    ctx = fastmp.get_context("fork")
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(10):
        with fastmp.pool.Pool(2, context=ctx) as pool:
            assert pool.apply(square, (3,)) == 9
            victim = pool._pool[0].pid
            seen = {}

            def done(value, seen=seen):
                seen[value] = seen.get(value, 0) + 1

            rs = []
            kill_at = time.monotonic() + rng.uniform(0.02, 0.3)
            while time.monotonic() < kill_at:   # results flowing back all along
                rs += [pool.apply_async(square, (i,), callback=done)
                       for i in range(len(rs), len(rs) + 500)]
            os.kill(victim, signal.SIGKILL)
            rs += [pool.apply_async(square, (i,), callback=done)
                   for i in range(len(rs), len(rs) + 2000)]
            ok = lost = 0
            for i, r in enumerate(rs):
                try:
                    assert r.get(WAIT) == i * i
                    ok += 1
                except fastmp.pool.WorkerLostError:
                    lost += 1
            assert ok + lost == len(rs)
            assert all(n == 1 for n in seen.values())
            assert len(seen) == ok
            assert pool.map(square, range(200)) == [x * x for x in range(200)]


# ------------------------------------------------------------------ the window, on purpose

# Defines ring.h's test hook: a process whose environment names a file in
# FASTMP_TEST_HANG_IN_CLAIM ("path" or "path:N" for its N-th claim from then on) writes its pid
# into that file and waits there, in the window between a reservation and its header stamp, until killed.
HOOK_C = r"""
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct fm_ring;
void fm_ring_test_claim_window(struct fm_ring *r, uint64_t pos);

void
fm_ring_test_claim_window(struct fm_ring *r, uint64_t pos)
{
    static int calls;
    (void)r;
    (void)pos;
    const char *v = getenv("FASTMP_TEST_HANG_IN_CLAIM");
    if (v == NULL || *v == 0)
        return;
    char path[512];
    strncpy(path, v, sizeof path - 1);
    path[sizeof path - 1] = 0;
    char *colon = strrchr(path, ':');
    int nth = 1;
    if (colon != NULL) {
        *colon = 0;
        nth = atoi(colon + 1);
    }
    if (++calls < nth)
        return;
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) {
        dprintf(fd, "%d", (int)getpid());
        close(fd);
        rename(tmp, path);
    }
    for (;;)
        pause();
}
"""


@pytest.fixture(scope="module")
def hook_lib():
    # (a directory of its own: pytest's numbered temporary directories are shared by every
    # pytest session of the user, and pruned as new ones start)
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the claim-window hook library")
    with tempfile.TemporaryDirectory(prefix="fastmp-claim-hook-") as d:
        with open(os.path.join(d, "hook.c"), "w") as f:
            f.write(HOOK_C)
        so = os.path.join(d, "hook.so")
        subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", so, os.path.join(d, "hook.c")],
                       check=True, capture_output=True)
        yield so


def _run_with_hook(hook_lib, tmp_path, scenario):
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ)
    # tests/ for this module; the rest as given (never the repo root: the installed fastmp is
    # the one under test, and the source tree has no compiled _core)
    env["PYTHONPATH"] = os.pathsep.join([tests_dir] + [p for p in [env.get("PYTHONPATH")] if p])
    # after any preload already there (a sanitizer runtime must stay first)
    env["LD_PRELOAD"] = " ".join(p for p in [env.get("LD_PRELOAD"), hook_lib] if p)
    env.pop("FASTMP_TEST_HANG_IN_CLAIM", None)
    run = subprocess.run(
        [sys.executable, "-c", f"import test_queue_faults as t; t.{scenario}({str(tmp_path)!r})"],
        env=env, capture_output=True, text=True, timeout=120, cwd=tests_dir)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def _await_file(path, timeout=WAIT):
    """The pid of the process waiting in the claim window."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, "no process reached the claim window"
        time.sleep(0.005)
    with open(path) as f:
        return int(f.read())


def _put_and_hang(q, flag, how):
    os.environ["FASTMP_TEST_HANG_IN_CLAIM"] = flag
    if how == "put":
        q.put("lost")
    elif how == "put_many":
        q.put_many([("many", i) for i in range(10)])   # stops at its 4th record (flag ":4")
    else:
        q.put(b"b" * BIG)                               # the spill segment's record


def _victim_in_window(tmp, how):
    ctx = fastmp.get_context("fork")
    q = ctx.Queue()
    q.put("before")
    flag = os.path.join(tmp, "in-window")
    p = ctx.Process(target=_put_and_hang,
                    args=(q, flag + (":4" if how == "put_many" else ""), how))
    p.start()
    assert _await_file(flag) == p.pid
    p.kill()
    p.join(WAIT)
    assert p.exitcode == -signal.SIGKILL
    q.put("after")                      # behind the reservation the victim left unstamped
    assert q.get(timeout=WAIT) == "before"
    if how == "put_many":               # the three it committed before stopping
        assert q.get_many(max_items=3, timeout=WAIT) == [("many", i) for i in range(3)]
    t0 = time.monotonic()
    assert q.get(timeout=WAIT) == "after"
    took = time.monotonic() - t0
    with pytest.raises(queue.Empty):
        q.get_nowait()
    q.put_many(["x", "y"])
    assert q.get_many(timeout=WAIT) == ["x", "y"]
    print(f"recovered in {took:.3f}s")
    q.close()


def scenario_put(tmp):
    _victim_in_window(tmp, "put")


def scenario_put_many(tmp):
    _victim_in_window(tmp, "put_many")


def scenario_big(tmp):
    _victim_in_window(tmp, "big")


def _hang_returning(flag, x):
    os.environ["FASTMP_TEST_HANG_IN_CLAIM"] = flag   # the result's record is the next claim
    return x * x


def _bounded_in_window(tmp, maxsize, joinable):
    # A bounded queue: the victim has its slot and stops in the claim window, then is killed.
    ctx = fastmp.get_context("fork")
    q = ctx.JoinableQueue(maxsize) if joinable else ctx.Queue(maxsize)
    before = [("before", i) for i in range(maxsize - 1)]
    for x in before:
        q.put(x)
    flag = os.path.join(tmp, "in-window")
    p = ctx.Process(target=_put_and_hang, args=(q, flag, "put"))
    p.start()
    assert _await_file(flag) == p.pid
    p.kill()
    p.join(WAIT)
    assert p.exitcode == -signal.SIGKILL
    # the dead victim's slot is given back: the count is exact, and there is room at once
    assert q.qsize() == maxsize - 1 and not q.full() and q.empty() == (maxsize == 1)
    t0 = time.monotonic()
    q.put_nowait("after")
    assert q.full() and q.qsize() == maxsize
    with pytest.raises(queue.Full):
        q.put_nowait("one too many")
    assert [q.get(timeout=WAIT) for _ in range(maxsize)] == before + ["after"]
    took = time.monotonic() - t0
    assert q.empty() and q.qsize() == 0
    with pytest.raises(queue.Empty):
        q.get_nowait()
    later = [("later", i) for i in range(maxsize)]
    q.put_many(later, timeout=WAIT)
    assert q.full() and q.qsize() == maxsize
    assert q.get_many(timeout=WAIT) == later
    if joinable:
        # every item that arrived is done: join() returns (the victim's item never will be)
        for _ in range(2 * maxsize):
            q.task_done()
        joiner = threading.Thread(target=q.join, daemon=True)
        joiner.start()
        joiner.join(WAIT)
        assert not joiner.is_alive(), "join() waits for the dead producer's item"
        with pytest.raises(ValueError):
            q.task_done()
    print(f"recovered in {took:.3f}s")
    q.close()


def scenario_bounded1(tmp):
    _bounded_in_window(tmp, 1, False)


def scenario_bounded4(tmp):
    _bounded_in_window(tmp, 4, False)


def scenario_joinable(tmp):
    _bounded_in_window(tmp, 1, True)


def scenario_pool(tmp):
    flag = os.path.join(tmp, "in-window")
    with fastmp.pool.Pool(2, context=fastmp.get_context("fork")) as pool:
        assert pool.map(square, range(10)) == [x * x for x in range(10)]
        r = pool.apply_async(_hang_returning, (flag, 7))
        worker = _await_file(flag)
        assert worker in {p.pid for p in pool._pool}
        os.kill(worker, signal.SIGKILL)
        with pytest.raises(fastmp.pool.WorkerLostError):
            r.get(WAIT)
        t0 = time.monotonic()
        assert pool.map(square, range(500)) == [x * x for x in range(500)]
        print(f"recovered in {time.monotonic() - t0:.3f}s")


@pytest.mark.timeout(150)
@pytest.mark.parametrize("scenario", ["scenario_put", "scenario_put_many", "scenario_big",
                                      "scenario_pool", "scenario_bounded1", "scenario_bounded4",
                                      "scenario_joinable"])
def test_killed_in_the_claim_window(hook_lib, scenario):
    with tempfile.TemporaryDirectory(prefix="fastmp-claim-window-") as d:
        out = _run_with_hook(hook_lib, d, scenario)
    assert "recovered in" in out


# ------------------------------------------------------------------ a grower killed


def _grow_and_die(q):
    q._debug_grow_and_die()     # lists a bigger ring, then SIGKILL before sealing the old one


def _put_items(q, tag, n):
    for i in range(n):
        q.put((tag, i))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["attach", "grow"])
def test_grower_killed_before_sealing_never_wedges(how):
    # An unbounded queue grows by listing a bigger ring and then sealing the full one, which
    # sends consumers on to the next.  A grower killed in between leaves the old ring open;
    # the next process that puts into the newer ring must seal it first: one that attaches the
    # queue afterwards (spawn: it starts at the newest ring), or one that grows in turn.
    ctx = fastmp.get_context("fork")
    q = ctx.Queue()
    q.put(("first", 0))
    g = ctx.Process(target=_grow_and_die, args=(q,))
    g.start()
    g.join(WAIT)
    assert g.exitcode == -signal.SIGKILL
    n = 100 if how == "attach" else 20000      # 20,000 fill the first ring: it grows
    pctx = fastmp.get_context("spawn" if how == "attach" else "fork")
    p = pctx.Process(target=_put_items, args=(q, "late", n))
    p.start()
    p.join(WAIT)
    assert p.exitcode == 0
    q.put(("last", 0))
    assert q.get(timeout=WAIT) == ("first", 0)
    got = [q.get(timeout=WAIT) for _ in range(n + 1)]
    assert got == [("late", i) for i in range(n)] + [("last", 0)]
    with pytest.raises(queue.Empty):
        q.get_nowait()
    assert q.qsize() == 0
    q.close()


# ------------------------------------------------------------------ join() after a killed producer


def _put_and_die(q, item):
    q.put(item)
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.timeout(120)
def test_joinable_join_after_producer_killed_right_after_put(ctx):
    # The stdlib's put() hands the item to a feeder thread: a producer killed right after put()
    # returns may not have sent it (a 4 MiB item cannot pass the pipe before a reader takes
    # it), yet it is counted as unfinished, so join() waits for ever.  fastmp's put() returns
    # with the item in shared memory: it arrives, and join() returns once it is done.
    q = ctx.JoinableQueue()
    item = b"j" * (4 << 20)
    # (grown here first: a child killed right after growing the ring may leave its file
    # behind, another matter than this test's)
    q.put(item)
    assert q.get(timeout=WAIT) == item
    q.task_done()
    p = ctx.Process(target=_put_and_die, args=(q, item))
    p.start()
    p.join(WAIT)
    assert p.exitcode == -signal.SIGKILL
    joiner = threading.Thread(target=q.join, daemon=True)
    if ctx.__module__.startswith("multiprocessing"):
        joiner.start()
        joiner.join(1.0)
        assert joiner.is_alive(), "the stdlib's join() waits for the item that was never sent"
        return                  # (the pipe holds a partial message: no get() on it)
    assert q.get(timeout=WAIT) == item
    q.task_done()
    joiner.start()
    joiner.join(WAIT)
    assert not joiner.is_alive()
    q.close()


def _put_and_wait(q, k, go):
    q.put(("p", k))
    go.wait(WAIT)


@pytest.mark.timeout(120)
def test_more_producers_than_tally_slots():
    # Tallies have room for 16 producing processes alive at once (csrc/queue.c); the others put
    # untallied, and everything still counts and arrives.
    ctx = fastmp.get_context("fork")
    q, go = ctx.Queue(8), ctx.Event()
    ps = [ctx.Process(target=_put_and_wait, args=(q, k, go)) for k in range(24)]
    for p in ps:
        p.start()
    got = set()
    for _ in range(24):
        got.add(q.get(timeout=WAIT))
    assert got == {("p", k) for k in range(24)}
    assert q.empty() and q.qsize() == 0
    go.set()
    for p in ps:
        p.join(WAIT)
        assert p.exitcode == 0
    q.put_many([1, 2, 3])
    assert q.qsize() == 3
    assert q.get_many(timeout=WAIT) == [1, 2, 3]
    q.close()
