"""Run by tests/test_zz_shm_clean.py in a fresh interpreter: `python _sync_shm_script.py MODE`.

It prints one line `SHM <name>` per fastmp-* segment its processes map (read from
/proc/self/maps), so the test knows exactly which /dev/shm entries belong to this run, then:

  clean  creates every primitive, starts a child with them per start method, exits normally;
         prints DONE last.
  kill   creates primitives, prints READY and sleeps until the test SIGKILLs it.
"""
import re
import sys
import time

import fastmp

_MAPS_RE = re.compile(r"/dev/shm/(fastmp-[^\s]+)")


def report():
    with open("/proc/self/maps") as f:
        names = set(_MAPS_RE.findall(f.read()))
    for name in sorted(names):
        print(f"SHM {name}", flush=True)


def make_all(ctx):
    return (ctx.Lock(), ctx.RLock(), ctx.Semaphore(2), ctx.BoundedSemaphore(2),
            ctx.Condition(), ctx.Event(), ctx.Barrier(2))


def child(lock, rlock, sem, bsem, cond, event, barrier):
    with lock:
        pass
    with rlock:
        pass
    with sem:
        pass
    with bsem:
        pass
    with cond:
        cond.notify_all()
    event.set()
    own = [fastmp.Lock() for _ in range(10)]  # the child's own primitives
    for lk in own:
        with lk:
            pass
    report()
    barrier.wait(30)


def main(mode):
    mine = [make_all(fastmp) for _ in range(20)]
    for lock in (objs[0] for objs in mine):
        with lock:
            pass
    if mode == "kill":
        report()
        print("READY", flush=True)
        time.sleep(120)
        return 1
    for method in ("fork", "spawn", "forkserver"):
        ctx = fastmp.get_context(method)
        objs = make_all(ctx)
        p = ctx.Process(target=child, args=objs)
        p.start()
        objs[-1].wait(30)
        p.join(30)
        if p.exitcode != 0:
            print(f"child ({method}) exit code {p.exitcode}", flush=True)
            return 1
        if not objs[5].is_set():
            print(f"child ({method}) did not set the event", flush=True)
            return 1
    report()
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
