"""fastmp's shared-memory arenas, seen from Python: many objects share one
file, blocks are reused once no process uses them, a forked child keeps its
own reference, and the files are private (mode 0600)."""
import gc
import os
import stat
import subprocess
import sys
import tempfile
import textwrap

import pytest

import fastmp
import fastmp.synchronize  # noqa: F401

SHM_DIR = "/dev/shm"
PREFIX = "fastmp-"


def _mapped_segments(pid=None):
    """Names of fastmp segments the process maps (from /proc/PID/maps)."""
    names = set()
    with open(f"/proc/{pid or 'self'}/maps") as f:
        for line in f:
            path = line.split()[-1]
            if path.startswith(SHM_DIR + "/" + PREFIX):
                names.add(os.path.basename(path).split(" ")[0])
    return names


def _run(code):
    """Run code in a fresh interpreter (its own arenas) and return stdout.  It
    runs outside the checkout: `python -c` puts the working directory first on
    sys.path, and the source tree's fastmp has no compiled _core."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=60, cwd=tempfile.gettempdir())
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_ten_thousand_locks_share_one_file():
    out = _run("""
        import os, fastmp
        before = len([f for f in os.listdir('/dev/shm') if f.startswith('fastmp-')])
        locks = [fastmp.Lock() for _ in range(10000)]
        maps = set()
        for line in open('/proc/self/maps'):
            if '/dev/shm/fastmp-' in line:
                maps.add(line.split()[-1])
        assert all(l.acquire(False) for l in locks)
        print(len(maps))
    """)
    assert int(out) == 1


def test_blocks_are_reused_after_the_last_reference():
    out = _run("""
        import fastmp
        seen = set()
        for _ in range(50000):
            lock = fastmp.Lock()
            seen.add(lock._fm_state())
            del lock
        print(len(seen))
    """)
    # one block, freed and taken again each time
    assert int(out) == 1


def test_block_not_reused_while_a_forked_child_holds_it():
    ctx = fastmp.get_context("fork")
    lock = ctx.Lock()
    state = lock._fm_state()
    started, go, done = ctx.Event(), ctx.Event(), ctx.Event()
    p = ctx.Process(target=_child_keeps_lock, args=(lock, started, go, done))
    p.start()
    try:
        assert started.wait(10)
        del lock
        gc.collect()
        # the child still uses the block: a new lock must get another one
        others = [ctx.Lock() for _ in range(50)]
        assert all(o._fm_state() != state for o in others)
        go.set()
        assert done.wait(10)
    finally:
        go.set()
        p.join(10)
    assert p.exitcode == 0


def _child_keeps_lock(lock, started, go, done):
    lock.acquire()
    started.set()
    go.wait(10)
    lock.release()      # still a working lock of its own
    if lock.acquire(False):
        done.set()


def test_segments_are_private_and_named_randomly():
    fastmp.Lock()
    names = _mapped_segments()
    assert names
    for name in names:
        st = os.stat(os.path.join(SHM_DIR, name))
        assert stat.S_IMODE(st.st_mode) == 0o600
        suffix = name[len(PREFIX):]
        assert len(suffix) == 24 and int(suffix, 16) >= 0


def test_attach_rejects_a_forged_state():
    lock = fastmp.Lock()
    name, offset = lock._fm_state()
    with pytest.raises(ValueError):
        fastmp.synchronize.Event._fm_attach((name, offset))     # wrong kind
    with pytest.raises(ValueError):
        fastmp.synchronize.Lock._fm_attach((name, offset + 64))  # no block there
    with pytest.raises(FileNotFoundError):
        fastmp.synchronize.Lock._fm_attach(("/fastmp-" + "0" * 24, offset))
    with pytest.raises(OSError):
        fastmp.synchronize.Lock._fm_attach(("/etc/passwd", 0))
    assert lock.acquire(False)      # the real one is intact


@pytest.mark.timeout(120)
def test_every_early_unlink_goes_through_the_one_hook(monkeypatch):
    # a huge shared ctypes block, a pool's large result and its channel, a queue's outgrown
    # ring: whoever created the segment, the process that unlinks it tells the one hook
    # (fastmp._lifecycle, which tells the resource tracker)
    from fastmp import _core, _lifecycle
    seen = []

    def hook(name):
        seen.append(name)
        _lifecycle._segment_gone(name)

    _core._set_segment_gone_hook(hook)
    try:
        arr = fastmp.Array('d', 1_000_000)
        del arr
        gc.collect()
        assert len(seen) == 1 and seen[0].startswith("/fastmp-")
        ctx = fastmp.get_context("fork")
        with ctx.Pool(1) as pool:
            channel = pool._dispatcher.name
            out = pool.apply(bytes, (3_000_000,))     # a result too large for the ring
            assert len(out) == 3_000_000
            # it came in one of the pool's big slots, kept for the next large entry
            assert len(seen) == 1
            pool.close()
            pool.join()
        # at close: the big slot the result used, then the channel
        assert len(seen) == 3 and seen[1] != channel and seen[2] == channel
        q = fastmp.Queue()
        q.put(b"x" * (4 << 20))                      # grows the ring: the old one goes
        assert q.get(timeout=30) == b"x" * (4 << 20)
        q.close()
        q.join_thread()
        del q
        gc.collect()
        assert len(seen) > 3
        assert all(n.startswith("/fastmp-") for n in seen)
        assert not [n for n in seen if os.path.exists("/dev/shm/" + n.lstrip("/"))]
    finally:
        _core._set_segment_gone_hook(_lifecycle._segment_gone)
        _lifecycle._unregister_gone()
