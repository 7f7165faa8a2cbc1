"""Queues at the limits: a full /dev/shm, many created and dropped queues, killed holders,
corrupt shared memory, put_many failing half-way.

* A full /dev/shm runs in a private small tmpfs (``unshare -m`` + ``mount -t tmpfs``, root
  only) in a fresh interpreter (tests/_queue_limits_targets.py): an OSError(ENOSPC), the
  interpreter alive, the queue or pool still usable, no fastmp file left.
* Created-and-dropped queues keep the process's mappings and RSS flat, as the stdlib's do.
* Records with scribbled payloads raise (ValueError naming the queue, or the unpickler's
  error), never crash, and the records after them still come.
"""
import errno
import gc
import os
import pickle
import queue
import random
import signal
import struct
import subprocess
import sys
import time

import pytest

import fastmp

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
TARGETS = os.path.join(TESTS_DIR, "_queue_limits_targets.py")
WAIT = 30


# ------------------------------------------------------------ full /dev/shm (ENOSPC)

def _small_shm_command(case, size="64m"):
    # The scenario runs in a fresh mount namespace with its own /dev/shm of `size`; after it
    # exits (and its resource tracker with it), that /dev/shm must hold no fastmp file.
    script = (
        f"mount -t tmpfs -o size={size} tmpfs /dev/shm || exit 97\n"
        f"{sys.executable} {TARGETS} {case}\n"
        "rc=$?\n"
        "for i in $(seq 100); do ls /dev/shm | grep -q fastmp- || break; sleep 0.1; done\n"
        "left=$(ls /dev/shm | grep fastmp-)\n"
        "[ -n \"$left\" ] && { echo \"LEFT: $left\"; exit 98; }\n"
        "exit $rc\n")
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script]


def _can_unshare():
    try:
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs -o size=1m tmpfs /dev/shm"],
                           capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


SMALL_SHM = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not _can_unshare(),
    reason="needs `unshare -m` and a tmpfs mount (root) to give the test a small /dev/shm")


@SMALL_SHM
@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", ["put_100mb", "many_queues_1mb", "pool_result_100mb",
                                  "pool_arg_100mb", "big_items_fit"])
def test_full_dev_shm_raises_enospc(case):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (TESTS_DIR, os.environ.get("PYTHONPATH")) if p))
    r = subprocess.run(_small_shm_command(case), capture_output=True, text=True, env=env,
                       timeout=240, cwd=TESTS_DIR)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"exit {r.returncode} (-7 is SIGBUS):\n{out[-3000:]}"
    assert f"OK {case}" in r.stdout, out[-3000:]
    assert "Bus error" not in out


# ------------------------------------------------------------ dropped queues give back

def _maps():
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def _rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _under_asan():
    with open("/proc/self/maps") as f:
        return "libasan" in f.read()


def _cycle(make, n):
    for i in range(n):
        q = make()
        q.put(i)
        assert q.get() == i
        del q
    gc.collect()


CYCLES = 10_000


@pytest.mark.timeout(600)
@pytest.mark.parametrize("kind", ["Queue", "SimpleQueue", "JoinableQueue"])
def test_dropped_queues_give_back_mappings(mp, kind):
    make = getattr(mp, kind)
    n = CYCLES if mp is fastmp else CYCLES // 10   # the stdlib's are slow to make (pipes, sems)
    _cycle(make, 200)                   # warm up: arenas, caches, the tracker
    maps0, rss0 = _maps(), _rss_kb()
    _cycle(make, n)
    grew_maps, grew_rss = _maps() - maps0, _rss_kb() - rss0
    # leaking one ring mapping per queue would be +n mappings and +4 KiB * n of RSS
    assert grew_maps <= 20, (kind, grew_maps)
    if not _under_asan():               # ASan's quarantine holds freed memory: RSS grows
        assert grew_rss <= 16 * 1024, (kind, grew_rss)


def _stall_then_sleep(q, ready):
    q._debug_stall_put()
    ready.set()
    time.sleep(60)


@pytest.mark.timeout(120)
def test_killed_producers_leave_no_ring(fastmp_ctx, procs):
    # Producers killed in the middle of a put keep their references to the queue forever;
    # the last live holder must still unlink and unmap its rings when it drops the queue.
    ctx = fastmp_ctx
    q = ctx.Queue()
    q.put("first")
    for _ in range(5):
        ready = ctx.Event()
        p = ctx.Process(target=_stall_then_sleep, args=(q, ready))
        p.start()
        procs.append(p)
        assert ready.wait(WAIT)
    # random deaths: each killed at a random moment of its sleep
    rnd = random.Random(12)
    for p in list(procs):
        time.sleep(rnd.uniform(0, 0.05))
        p.kill()
    for p in procs:
        p.join(WAIT)
        assert p.exitcode == -signal.SIGKILL
    assert q.get(timeout=WAIT) == "first"
    rings = q._debug_rings()
    assert rings
    del q
    gc.collect()
    left = [r for r in rings if os.path.exists("/dev/shm" + r)]
    assert left == []
    with open("/proc/self/maps") as f:
        mapped = f.read()
    assert [r for r in rings if r in mapped] == []


# ------------------------------------------------------------ corrupt records

def _plain(obj):
    """The plain-data encoding of obj, as queue.c writes it (tests the reader, not the
    writer: any bytes will do as a starting point)."""
    if obj is None:
        return b"N"
    if obj is True:
        return b"T"
    if obj is False:
        return b"F"
    if type(obj) is int:
        return b"i" + struct.pack("=q", obj)
    if type(obj) is float:
        return b"f" + struct.pack("=d", obj)
    if type(obj) is str:
        raw = obj.encode()
        return b"s" + struct.pack("=I", len(raw)) + raw
    if type(obj) is bytes:
        return b"b" + struct.pack("=I", len(obj)) + obj
    if type(obj) in (tuple, list):
        tag = b"t" if type(obj) is tuple else b"l"
        return tag + struct.pack("=I", len(obj)) + b"".join(_plain(x) for x in obj)
    if type(obj) is dict:
        return b"d" + struct.pack("=I", len(obj)) + b"".join(
            _plain(k) + _plain(v) for k, v in obj.items())
    raise TypeError(obj)


SAMPLES = [
    [1, 2.5, "three", b"four", None, True, (5, (6, "seven"))],
    {"a": 1, "b": (2, 3), 4: "x" * 40},
    ("nested", ("deeper", ("deepest", (1, 2)))),
    "a string of some length " * 4,
]


def _records():
    recs = []
    for s in SAMPLES:
        recs.append(b"P" + _plain(s))
        recs.append(b"I" + pickle.dumps(s, protocol=5))
    recs.append(b"S" + struct.pack("=Q", 100) + b"/fastmp-0123456789abcdef01234567\0")
    return recs


def _mutate(rnd, rec):
    b = bytearray(rec)
    how = rnd.randrange(4)
    if how == 0:                                        # scribble a few bytes
        for _ in range(rnd.randint(1, 4)):
            b[rnd.randrange(len(b))] = rnd.randrange(256)
    elif how == 1:                                      # a huge length or count somewhere
        if len(b) > 5:
            at = rnd.randrange(1, len(b) - 4)
            b[at:at + 4] = struct.pack("=I", rnd.choice([0xFFFFFFFF, 0x7FFFFFFF, 4097, 1 << 20]))
    elif how == 2:                                      # cut short
        del b[rnd.randrange(1, len(b)):]
    else:                                               # all random
        b = bytearray(rnd.randbytes(rnd.randint(1, 64)))
    if rnd.random() < 0.5:
        b[0] = rnd.choice(b"PIS")                       # keep a known kind: reach the decoders
    return bytes(b)


FUZZ_TRIALS = 3000


@pytest.mark.timeout(300)
def test_corrupt_records_raise_and_later_records_come():
    # In a child, so that a crash fails this test instead of killing pytest.
    code = f"""
import pickle, random, sys
sys.path.insert(0, {TESTS_DIR!r})
import test_queue_limits as t
import fastmp
q = fastmp.Queue()
rnd = random.Random(20261206)
recs = t._records()
raised = returned = 0
for trial in range({FUZZ_TRIALS}):
    rec = t._mutate(rnd, rnd.choice(recs))
    q._debug_put_raw(rec)
    q.put(("good", trial))
    try:
        q.get(timeout=5)
        returned += 1
    except (ValueError, OSError) as exc:
        if rec[:1] in (b"P", b"S") or rec[:1] not in (b"I",):
            assert "fastmp queue" in str(exc) and "Queue" in str(exc), (rec, exc)
        raised += 1
    except Exception as exc:        # the unpickler's own errors, for pickled records
        assert rec[:1] == b"I", (rec, exc)
        raised += 1
    assert q.get(timeout=5) == ("good", trial)
print("OK", raised, returned)
"""
    out = _run_child(code)
    raised = int(out.split()[1])
    assert raised > FUZZ_TRIALS // 4, out


def test_corrupt_plain_record_messages():
    q = fastmp.Queue()
    cases = [
        (b"P" + b"s" + struct.pack("=I", 1 << 30) + b"abc", "length past the end"),
        (b"P" + b"t" + struct.pack("=I", 3000) + b"N", "count past the end"),
        (b"P" + b"t" + struct.pack("=I", 1) + b"l" + struct.pack("=I", 0),
         "list or dict inside a container"),
        (b"P" + b"s" + struct.pack("=I", 2) + b"\xff\xfe", "bad UTF-8"),
        (b"P" + b"N" + b"junk", "bytes after the item"),
        (b"P" + b"t" + struct.pack("=I", 1) * 1 + (b"t" + struct.pack("=I", 1)) * 8 + b"N",
         "nested too deep"),
        (b"Q", "unknown record kind"),
        (b"S" + struct.pack("=Q", 10) + b"/etc/passwd\0", "bad spill segment name"),
    ]
    for raw, what in cases:
        q._debug_put_raw(raw)
        q.put("next")
        with pytest.raises(ValueError) as ei:
            q.get(timeout=WAIT)
        assert str(ei.value).startswith("fastmp queue <") and str(ei.value).endswith(
            "corrupt record: " + what), str(ei.value)
        assert q.get(timeout=WAIT) == "next"


HEADER_TRIALS = 60


@pytest.mark.timeout(300)
def test_corrupt_record_headers_raise_never_crash():
    # Random bytes over the record HEADERS of a ring (lengths, kinds, lap tags): every get
    # returns an item or raises (a length past the data area or the producer position is
    # "corrupt ring"), never a crash; once the ring said "corrupt ring" it keeps saying so.
    code = f"""
import os, pickle, queue, random, struct, sys
import fastmp
ITEMS = [7, -1, 10**30, "s", "x" * 300, b"b" * 50, {{"k": 1, "l": [1, 2]}}, (1, "t"),
         [None, 2.5], bytes(1000)]
rnd = random.Random(20261207)
RING_HEAD = 512                     # data area offset in the ring segment (ring.c)
counts = {{"item": 0, "corrupt_ring": 0, "other_error": 0, "empty": 0}}
for trial in range({HEADER_TRIALS}):
    q = fastmp.Queue()
    for i in range(300):
        q.put(ITEMS[i % len(ITEMS)])
    path = "/dev/shm" + q._debug_rings()[0]
    with open(path, "r+b") as f:
        b = f.read()
        heads = []
        off = RING_HEAD
        while off < len(b):
            w = struct.unpack_from("<Q", b, off)[0]
            if w == 0:
                break
            heads.append(off)
            off += 8 + (((w & 0xffffffff) + 7) & ~7)
        first = struct.unpack_from("<Q", b, RING_HEAD)[0]
        assert (first >> 54) & 0x7f == 1 and first >> 61 == 2, hex(first)  # lap 1, READY
        assert len(heads) >= 100, len(heads)
        for _ in range(rnd.randint(1, 3)):
            at = rnd.choice(heads) + rnd.randrange(8)
            f.seek(at)
            f.write(bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 8))))
    for _ in range(320):
        try:
            q.get(timeout=0.3)
            counts["item"] += 1
        except queue.Empty:
            counts["empty"] += 1
            break
        except ValueError as exc:
            if "corrupt ring" in str(exc):
                assert str(exc).startswith("fastmp queue <"), exc
                counts["corrupt_ring"] += 1
                try:
                    q.get(timeout=0.3)
                except ValueError as again:
                    assert "corrupt ring" in str(again), again
                else:
                    raise AssertionError("a corrupt ring delivered an item")
                break
            counts["other_error"] += 1
        except (OSError, pickle.UnpicklingError, EOFError):
            counts["other_error"] += 1
    q.close()
print("OK", counts)
"""
    out = _run_child(code)
    assert out.startswith("OK"), out
    counts = eval(out[3:])
    assert counts["corrupt_ring"] > HEADER_TRIALS // 4, out


def _run_child(code, timeout=280):
    """Run code in a fresh interpreter (a crash there fails the test, not pytest)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (TESTS_DIR, os.environ.get("PYTHONPATH")) if p))
    # Under ASan: pickle's own loader allocates what a corrupt length says before it reads
    # (MemoryError normally); let that be MemoryError there too, not an ASan abort.
    env["ASAN_OPTIONS"] = ":".join(filter(None, [env.get("ASAN_OPTIONS"),
                                                 "allocator_may_return_null=1"]))
    # cwd: tests/, so that the child's first sys.path entry ('' for -c) holds no source tree
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=timeout, cwd=TESTS_DIR)
    assert r.returncode == 0, f"exit {r.returncode} (-7 SIGBUS, -11 SIGSEGV):\n" + (
        r.stdout + r.stderr)[-3000:]
    return r.stdout


def test_spill_descriptor_longer_than_segment_raises():
    # A descriptor naming a real spill file but saying it is longer than the file: mapping
    # and reading past the file's end would be SIGBUS.  The file holds the first page of a
    # pickle of 1 MiB, so an unpickler given the long mapping reads past the end.
    out = _run_child(f"""
import os, pickle, struct
import fastmp
q = fastmp.Queue()
name = "/fastmp-" + os.urandom(12).hex()
data = pickle.dumps(b"y" * (1 << 20), protocol=5)[:4096]
fd = os.open("/dev/shm" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
os.write(fd, data)
os.close(fd)
big = b"x" * (20 << 20)             # a genuine spilled item first
q.put(big)
q._debug_put_raw(b"S" + struct.pack("=Q", 1 << 20) + name.encode() + b"\\0")
q.put("after")
assert q.get(timeout={WAIT}) == big
try:
    q.get(timeout={WAIT})
except ValueError as exc:
    assert str(exc).startswith("fastmp queue <") and str(exc).endswith(
        "corrupt record: spill segment shorter than its descriptor says"), exc
else:
    raise AssertionError("no ValueError")
assert not os.path.exists("/dev/shm" + name)    # consumed: unlinked like any spill
assert q.get(timeout={WAIT}) == "after"
print("OK")
""")
    assert out.strip() == "OK"


# ------------------------------------------------------------ put_many half-way

class _Unpicklable:
    def __reduce__(self):
        raise TypeError("cannot pickle this")


def _gen_raising():
    yield 1
    yield 2
    raise KeyError("generator failed")


@pytest.mark.parametrize("how", ["generator", "unpicklable-list", "unpicklable-generator"])
def test_put_many_failing_midway_keeps_the_items_before(how):
    q = fastmp.Queue()
    if how == "generator":
        items, exc = _gen_raising(), KeyError
    elif how == "unpicklable-list":
        items, exc = [1, 2, _Unpicklable(), 4], TypeError
    else:
        items, exc = iter([1, 2, _Unpicklable(), 4]), TypeError
    with pytest.raises(exc):
        q.put_many(items)
    assert q.qsize() == 2
    assert q.get_many(timeout=WAIT) == [1, 2]
    with pytest.raises(queue.Empty):
        q.get(timeout=0.2)
    q.put_many(x for x in range(3))            # still usable
    assert q.get_many(timeout=WAIT) == [0, 1, 2]


# ------------------------------------------------------------ threads while rings move on

@pytest.mark.timeout(300)
def test_threads_share_one_queue_while_rings_grow():
    # The object's old rings are unmapped once no thread is inside one: producers and
    # consumers in threads of one process, the ring growing under them (some items large),
    # every item arrives once and nothing crashes.
    import threading
    q = fastmp.Queue()
    n = 20_000
    got, errors = [], []

    def produce(k):
        for i in range(n):
            q.put((k, i, b"z" * (i % 7 * 3000)) if i % 5 == 0 else (k, i))

    def consume():
        while True:
            try:
                item = q.get(timeout=5)
            except queue.Empty:
                return
            except Exception as exc:            # pragma: no cover (the failure shown)
                errors.append(exc)
                return
            got.append(item[:2])

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(2)]
    threads += [threading.Thread(target=consume) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(got) == [(k, i) for k in range(2) for i in range(n)]
    rings = [r for r in q._debug_rings()]
    assert len(rings) == 1
