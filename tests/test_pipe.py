"""Pipe and its Connection ends: the stdlib's semantics, the same scenario against the stdlib
and fastmp (the ``mp`` and ``ctx`` fixtures): the API and its errors, EOF when the other end is
closed, collected or killed (after the pending messages), BrokenPipeError, wait() on a mix of
descriptors, pickling to children and through a connection or a queue, Ctrl-C in a blocked
recv/poll, large messages, nothing left in /dev/shm.  What only fastmp promises
(``fastmp_ctx``): messages of several writers never interleave."""
import gc
import multiprocessing.connection as std_connection
import os
import re
import signal
import socket
import time

import pytest

import _pipe_targets as targets

WAIT = 30.0


def is_fastmp(obj):
    return type(obj).__module__.startswith("fastmp")


def start(procs, ctx, target, *args):
    p = ctx.Process(target=target, args=args)
    p.start()
    procs.append(p)
    return p


# ---------------------------------------------------------------- in one process

def test_pipe_ends_are_stdlib_connections(mp):
    a, b = mp.Pipe()
    assert isinstance(a, std_connection.Connection)
    assert isinstance(b, std_connection.Connection)
    assert type(a).__module__ == ("fastmp.connection" if mp.__name__ == "fastmp"
                                  else "multiprocessing.connection")
    assert (a.readable, a.writable, a.closed) == (True, True, False)
    assert isinstance(a.fileno(), int) and a._handle is not None
    a.close()
    assert a.closed and a._handle is None
    b.close()


def test_send_recv_objects_and_bytes(mp):
    a, b = mp.Pipe()
    objs = [None, 1, -2 ** 70, 2.5, "text", b"\x00bytes", (1, ("x", b"y")), [1, [2]],
            {"k": (None, True)}, {1, 2}, ValueError("boom")]
    for obj in objs:
        a.send(obj)
    got = [b.recv() for _ in objs]
    assert got[:-1] == objs[:-1]
    assert type(got[-1]) is ValueError and got[-1].args == ("boom",)
    # the other way, and bytes
    b.send_bytes(b"")
    b.send_bytes(b"abcdef", 2)
    b.send_bytes(b"abcdef", 1, 3)
    b.send_bytes(bytearray(b"ba"))
    b.send_bytes(memoryview(b"0123456789")[2:5])
    import array
    b.send_bytes(array.array("i", [1, 2, 3]), 4, 8)     # offset and size in bytes
    assert a.recv_bytes() == b""
    assert a.recv_bytes() == b"cdef"
    assert a.recv_bytes() == b"bcd"
    assert a.recv_bytes() == b"ba"
    assert a.recv_bytes() == b"234"
    assert a.recv_bytes() == array.array("i", [2, 3]).tobytes()
    # send() and recv_bytes() speak the same pickle
    import pickle
    a.send((1, "two"))
    assert pickle.loads(b.recv_bytes()) == (1, "two")
    a.send_bytes(pickle.dumps({"x": 1}))
    assert b.recv() == {"x": 1}
    a.close()
    b.close()


def test_send_bytes_argument_errors(mp):
    a, b = mp.Pipe()
    for args, msg in [((b"abc", -1), "offset is negative"),
                      ((b"abc", 4), "buffer length < offset"),
                      ((b"abc", 1, -1), "size is negative"),
                      ((b"abc", 1, 3), "buffer length < offset + size")]:
        with pytest.raises(ValueError, match=re.escape(msg)):
            a.send_bytes(*args)
    a.send_bytes(buf=b"kw", offset=1, size=1)
    assert b.recv_bytes(maxlength=10) == b"w"
    with pytest.raises(ValueError, match="negative maxlength"):
        b.recv_bytes(-1)
    a.close()
    b.close()


def test_keyword_arguments(mp):
    a, b = mp.Pipe()
    a.send(obj=("kw", 1))
    assert b.poll(timeout=WAIT) is True
    assert b.recv() == ("kw", 1)
    a.send_bytes(buf=b"abcdef", offset=1, size=2)
    assert b.recv_bytes(maxlength=2) == b"bc"
    a.send_bytes(b"xyz")
    buf = bytearray(5)
    assert b.recv_bytes_into(buf=buf, offset=2) == 3 and buf == b"\x00\x00xyz"
    assert b.poll(timeout=0) is False
    for call in (lambda: b.poll(0, 1), lambda: b.poll(wait=1), lambda: a.send(1, 2),
                 lambda: a.send(), lambda: b.recv_bytes(1, 2), lambda: a.send_bytes()):
        with pytest.raises(TypeError):
            call()
    a.close()
    b.close()


def test_recv_bytes_maxlength_too_small(mp):
    a, b = mp.Pipe()
    a.send_bytes(b"0123456789")
    with pytest.raises(OSError, match="bad message length"):
        b.recv_bytes(5)
    # a duplex end stops reading but can still write
    assert (b.readable, b.writable, b.closed) == (False, True, False)
    with pytest.raises(OSError, match="write-only"):
        b.recv_bytes()
    b.send(1)
    assert a.recv() == 1
    # a read-only end is closed
    r, w = mp.Pipe(duplex=False)
    w.send_bytes(b"0123456789")
    with pytest.raises(OSError, match="bad message length"):
        r.recv_bytes(9)
    assert r.closed
    for c in (a, b, w):
        c.close()


def test_recv_bytes_into(mp):
    a, b = mp.Pipe()
    buf = bytearray(10)
    a.send_bytes(b"hello")
    assert b.recv_bytes_into(buf) == 5
    assert buf == b"hello\x00\x00\x00\x00\x00"
    a.send_bytes(b"abc")
    assert b.recv_bytes_into(buf, 7) == 3
    assert buf == b"hello\x00\x00abc"
    a.send_bytes(b"0123456789ab")
    with pytest.raises(mp.BufferTooShort) as info:
        b.recv_bytes_into(buf)
    assert info.value.args == (b"0123456789ab",)
    assert buf == b"hello\x00\x00abc"
    with pytest.raises(ValueError, match="negative offset"):
        b.recv_bytes_into(buf, -1)
    with pytest.raises(ValueError, match="offset too large"):
        b.recv_bytes_into(buf, 11)
    a.send_bytes(b"xyz")        # still in sync after the errors
    assert b.recv_bytes_into(buf, 10 - 3) == 3 and buf[7:] == b"xyz"
    a.close()
    b.close()


def test_one_way_pipe_wrong_end_errors(mp):
    r, w = mp.Pipe(duplex=False)
    assert (r.readable, r.writable) == (True, False)
    assert (w.readable, w.writable) == (False, True)
    for call in (lambda: r.send(1), lambda: r.send_bytes(b"x")):
        with pytest.raises(OSError, match="connection is read-only"):
            call()
    for call in (w.recv, w.recv_bytes, lambda: w.recv_bytes_into(bytearray(4)), w.poll):
        with pytest.raises(OSError, match="connection is write-only"):
            call()
    w.send("one way")
    assert r.poll(WAIT)
    assert r.recv() == "one way"
    r.close()
    w.close()


def test_closed_handle_errors(mp):
    a, b = mp.Pipe()
    a.close()
    a.close()       # twice is fine
    for call in (lambda: a.send(1), lambda: a.send_bytes(b"x"), a.recv, a.recv_bytes,
                 lambda: a.recv_bytes_into(bytearray(4)), a.poll, a.fileno):
        with pytest.raises(OSError, match="handle is closed"):
            call()
    b.close()


def test_connection_of_a_descriptor(mp):
    # Connection(fd) wraps a descriptor, as the stdlib's does (Listener and Client use it)
    conn_mod = __import__(mp.__name__ + ".connection", fromlist=["Connection"])
    s1, s2 = socket.socketpair()
    c1 = conn_mod.Connection(s1.detach())
    c2 = conn_mod.Connection(s2.detach(), readable=True, writable=True)
    assert isinstance(c1, std_connection.Connection)
    c1.send("over a socket")
    assert c2.recv() == "over a socket"
    c1.close()
    c2.close()
    with pytest.raises((ValueError, OSError)):
        conn_mod.Connection(-1)
    with pytest.raises(ValueError):
        conn_mod.Connection(0, readable=False, writable=False)


def test_context_manager_closes(mp):
    with mp.Pipe()[0] as a:
        assert not a.closed
    assert a.closed


def test_poll_timeouts(mp):
    a, b = mp.Pipe()
    assert b.poll() is False
    assert b.poll(0) is False
    assert b.poll(-1) is False
    t0 = time.monotonic()
    assert b.poll(0.2) is False
    assert 0.15 <= time.monotonic() - t0 < 5
    a.send(1)
    assert b.poll() is True and b.poll(None) is True
    assert b.recv() == 1
    a.close()
    b.close()


def test_eof_after_pending_messages_on_close(mp):
    a, b = mp.Pipe()
    for i in range(3):
        a.send(i)
    a.close()
    assert [b.recv() for _ in range(3)] == [0, 1, 2]
    assert b.poll(WAIT) is True         # EOF reads ready
    with pytest.raises(EOFError):
        b.recv()
    with pytest.raises(EOFError):
        b.recv_bytes()
    b.close()


def test_eof_when_other_end_is_collected(mp):
    a, b = mp.Pipe(duplex=False)
    b.send("last")
    del b
    gc.collect()
    assert a.recv() == "last"
    with pytest.raises(EOFError):
        a.recv()
    a.close()


def test_eof_wakes_a_blocked_reader(mp):
    import threading
    a, b = mp.Pipe()
    got = []

    def reader():
        try:
            b.recv()
        except EOFError:
            got.append("eof")
    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    a.close()
    t.join(WAIT)
    assert got == ["eof"]
    assert time.monotonic() - t0 < 5
    b.close()


def test_send_to_closed_peer_raises_broken_pipe(mp):
    a, b = mp.Pipe()
    b.close()
    with pytest.raises(BrokenPipeError):
        a.send(1)
    with pytest.raises(BrokenPipeError):
        a.send_bytes(b"x" * 100)
    a.close()
    r, w = mp.Pipe(duplex=False)
    r.close()
    with pytest.raises(BrokenPipeError):
        w.send_bytes(b"x")
    w.close()


def test_wait_sees_messages_sent_before_the_first_fileno(mp):
    for duplex in (True, False):
        r, w = mp.Pipe(duplex)
        w.send(1)
        assert std_connection.wait([r], timeout=WAIT) == [r]
        assert r.recv() == 1
        assert std_connection.wait([r], timeout=0.05) == []
        r.close()
        w.close()


def test_selector_kept_registered_sees_no_stale_readiness(mp):
    import selectors
    a, b = mp.Pipe()
    with selectors.DefaultSelector() as sel:
        sel.register(b, selectors.EVENT_READ)
        assert sel.select(0) == []
        for i in range(3):
            a.send(i)
            assert [key.fileobj for key, _ in sel.select(WAIT)] == [b]
            assert b.recv() == i
            assert sel.select(0) == []
        a.send_bytes(b"x")
        a.send_bytes(b"y")
        assert b.recv_bytes() == b"x"
        assert [key.fileobj for key, _ in sel.select(0)] == [b]    # one still there
        assert b.recv_bytes() == b"y"
        assert sel.select(0) == []
        a.close()
        assert [key.fileobj for key, _ in sel.select(WAIT)] == [b]  # EOF
    b.close()


def test_wait_on_a_mix(mp):
    a, b = mp.Pipe()
    r, w = mp.Pipe(duplex=False)
    sa, sb = socket.socketpair()
    sr, sw = std_connection.Pipe()          # a stdlib connection whatever mp is
    ready = std_connection.wait([b, r, sb, sr], timeout=0.1)
    assert ready == []
    a.send("to b")
    sw.send("to sr")
    assert set(std_connection.wait([b, r, sb, sr], timeout=WAIT)) == {b, sr}
    assert b.recv() == "to b" and sr.recv() == "to sr"
    assert std_connection.wait([b, r, sb, sr], timeout=0.1) == []
    w.send_bytes(b"x")
    sa.send(b"y")
    assert set(std_connection.wait([b, r, sb, sr], timeout=WAIT)) == {r, sb}
    assert r.recv_bytes() == b"x" and sb.recv(1) == b"y"
    # a message that is there before wait() is called
    a.send(1)
    a.send(2)
    assert std_connection.wait([b], timeout=WAIT) == [b]
    assert b.recv() == 1
    assert std_connection.wait([b], timeout=WAIT) == [b]
    assert b.recv() == 2
    assert std_connection.wait([b], timeout=0.1) == []
    # EOF counts as ready
    w.close()
    assert std_connection.wait([b, r], timeout=WAIT) == [r]
    for c in (a, b, r, sa, sb, sr, sw):
        c.close()


def test_wait_with_process_sentinel(ctx, procs):
    a, b = ctx.Pipe()
    p = start(procs, ctx, targets.send_then_sleep, None, [])
    assert std_connection.wait([b, p.sentinel], timeout=0.1) == []
    a.send(1)
    assert std_connection.wait([b, p.sentinel], timeout=WAIT) == [b]
    p.kill()
    deadline = time.monotonic() + WAIT
    ready = []
    while len(ready) < 2 and time.monotonic() < deadline:
        ready = std_connection.wait([b, p.sentinel], timeout=WAIT)
    assert set(ready) == {b, p.sentinel}
    assert b.recv() == 1
    p.join(WAIT)
    a.close()
    b.close()


def test_fastmp_connection_module_wait(mp):
    conn_mod = __import__(mp.__name__ + ".connection", fromlist=["wait"])
    a, b = conn_mod.Pipe()
    assert conn_mod.wait([b], 0.05) == []
    a.send(None)
    assert conn_mod.wait([b], WAIT) == [b]
    a.close()
    b.close()


def shared_mappings():
    """This process's mappings of shared files (/dev/shm, and memfds as fastmp's pipes use):
    /dev/shm itself is shared with whatever else runs on the machine."""
    with open("/proc/self/maps") as f:
        return sorted(line.split(None, 5)[-1].strip() for line in f
                      if "/dev/shm/" in line or "memfd:" in line)


def test_no_descriptor_or_shm_left(mp):
    gc.collect()
    before_maps = shared_mappings()
    before_fds = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        a, b = mp.Pipe()
        a.send(1)
        b.fileno()
        assert b.recv() == 1
        a.close()
        b.close()
        r, w = mp.Pipe(duplex=False)
        during = shared_mappings()
        del r, w
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) == before_fds
    assert shared_mappings() == before_maps
    if mp.__name__ == "fastmp":
        assert len(during) == len(before_maps) + 2      # the two ends of the last pipe
        assert not any(m.startswith("/dev/shm/") for m in set(during) - set(before_maps))


# ---------------------------------------------------------------- across processes

@pytest.mark.timeout(120)
def test_echo_child_gets_end_as_argument(ctx, procs):
    a, b = ctx.Pipe()
    p = start(procs, ctx, targets.echo, b)
    b.close()
    items = [1, "two", (3, b"4" * 1000), list(range(100)), None]
    for it in items:
        a.send(it)
    assert [a.recv() for _ in items] == items
    p.join(WAIT)
    assert p.exitcode == 0
    with pytest.raises(EOFError):
        a.recv()
    a.close()


@pytest.mark.timeout(120)
def test_eof_after_child_killed(ctx, procs):
    r, w = ctx.Pipe(duplex=False)
    p = start(procs, ctx, targets.send_then_sleep, w, ["a", "b"])
    w.close()
    assert r.recv() == "a"
    assert r.recv() == "b"
    p.kill()
    t0 = time.monotonic()
    with pytest.raises(EOFError):
        r.recv()
    assert time.monotonic() - t0 < 10
    p.join(WAIT)
    r.close()


@pytest.mark.timeout(120)
def test_eof_after_child_exits_with_pending(ctx, procs):
    r, w = ctx.Pipe(duplex=False)
    p = start(procs, ctx, targets.send_then_exit, w, list(range(20)))
    w.close()
    p.join(WAIT)
    assert p.exitcode == 0
    assert [r.recv() for _ in range(20)] == list(range(20))
    with pytest.raises(EOFError):
        r.recv()
    r.close()


@pytest.mark.timeout(120)
def test_broken_pipe_after_child_exits(ctx, procs):
    a, b = ctx.Pipe()
    p = start(procs, ctx, targets.exit_holding, b)
    b.close()
    p.join(WAIT)
    with pytest.raises(BrokenPipeError):
        # a killed reader is noticed once its buffer is full at the latest
        for _ in range(10_000):
            a.send_bytes(b"x" * 1000)
    a.close()


@pytest.mark.timeout(120)
def test_end_sent_through_a_connection(ctx, procs):
    carrier_parent, carrier_child = ctx.Pipe()
    p = start(procs, ctx, targets.recv_conn_and_echo, carrier_child)
    a, b = ctx.Pipe()
    carrier_parent.send(b)
    b.close()
    a.send("through")
    assert a.recv() == "through"
    a.send(None)
    assert a.recv() is None
    p.join(WAIT)
    assert p.exitcode == 0
    for c in (a, carrier_parent, carrier_child):
        c.close()


@pytest.mark.timeout(120)
def test_end_sent_through_a_queue(ctx, procs):
    q = ctx.Queue()
    p = start(procs, ctx, targets.get_conn_and_echo, q)
    a, b = ctx.Pipe()
    q.put(b)
    a.send("queued")
    assert a.poll(WAIT) and a.recv() == "queued"
    a.send(None)
    assert a.recv() is None
    p.join(WAIT)
    assert p.exitcode == 0
    a.close()
    b.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", ["recv", "poll", "send"])
def test_sigint_interrupts_blocked_call(ctx, procs, target):
    a, b = ctx.Pipe()
    ready_r, ready_w = ctx.Pipe(duplex=False)
    fn = {"recv": targets.recv_until_interrupted, "poll": targets.poll_until_interrupted,
          "send": targets.send_until_interrupted}[target]
    p = start(procs, ctx, fn, b, ready_w)
    assert ready_r.poll(WAIT) and ready_r.recv() == "ready"
    time.sleep(0.3)
    t0 = time.monotonic()
    os.kill(p.pid, signal.SIGINT)
    p.join(10)
    assert p.exitcode == targets.GOT_KEYBOARD_INTERRUPT
    assert time.monotonic() - t0 < 5
    for c in (a, b, ready_r, ready_w):
        c.close()


@pytest.mark.timeout(120)
def test_descriptor_passed_with_send_handle(ctx, procs, tmp_path):
    from multiprocessing import reduction
    a, b = ctx.Pipe()
    p = start(procs, ctx, targets.write_to_received_fd, b, b"through the pipe")
    path = tmp_path / "out"
    with open(path, "wb") as f:
        reduction.send_handle(a, f.fileno(), p.pid)
    p.join(WAIT)
    assert p.exitcode == 0
    assert path.read_bytes() == b"through the pipe"
    a.send("still a pipe")          # messages after the descriptor
    assert b.recv() == "still a pipe"
    a.close()
    b.close()


@pytest.mark.timeout(180)
def test_large_messages(ctx, procs):
    sizes = [1 << 20, 20 << 20, 3, (1 << 20) + 7]
    a, b = ctx.Pipe()
    p = start(procs, ctx, targets.big_echo, b, sizes)
    b.close()
    for n in sizes:
        data = targets.pattern(n)
        a.send_bytes(data)
        assert a.recv_bytes() == data
    p.join(WAIT)
    assert p.exitcode == 0
    a.close()


# ---------------------------------------------------------------- fastmp only

@pytest.mark.timeout(180)
def test_writers_never_interleave(fastmp_ctx, procs):
    r, w = fastmp_ctx.Pipe(duplex=False)
    n = 60
    ps = [start(procs, fastmp_ctx, targets.send_numbered, w, who, n) for who in (1, 2)]
    w.close()
    seen = {1: 0, 2: 0}
    for _ in range(2 * n):
        msg = r.recv_bytes()
        who, i, rest = msg.split(b":", 2)
        who, i = int(who), int(i)
        assert i == seen[who]
        seen[who] += 1
        size = (i * 7919) % 5000 if i % 10 else 300_000 + i
        assert rest == targets.pattern(size)
    with pytest.raises(EOFError):
        r.recv_bytes()
    for p in ps:
        p.join(WAIT)
        assert p.exitcode == 0
    r.close()


def test_fastmp_pipe_is_the_c_type():
    import fastmp
    from fastmp import _core
    a, b = fastmp.Pipe()
    assert isinstance(a, _core.Connection)
    for method in ("spawn", "fork", "forkserver"):
        c, d = fastmp.get_context(method).Pipe(duplex=False)
        assert isinstance(c, _core.Connection) and isinstance(d, _core.Connection)
        c.close()
        d.close()
    a.close()
    b.close()


def _stream_words(conn):
    """The pipe's shared file mapped here, and the offset of the write position of the stream
    that `conn` reads (csrc/connection.c: a 4 KiB header, then the streams; stream.h: the write
    position on the stream's second cache line)."""
    import mmap
    memfd, _, end = conn._fm_fds()
    m = mmap.mmap(memfd, os.fstat(memfd).st_size)
    return m, 4096 + 64 if end == 0 else None


def test_corrupt_stream_raises_not_crashes():
    import struct
    import fastmp
    r, w = fastmp.Pipe(duplex=False)
    w.send_bytes(b"hello")
    m, head_at = _stream_words(r)
    (head,) = struct.unpack_from("<Q", m, head_at)
    assert head == 8 + 5
    struct.pack_into("<Q", m, head_at, 1 << 50)        # a stray write
    with pytest.raises(OSError, match="corrupt"):
        r.recv_bytes()
    with pytest.raises(OSError, match="corrupt"):
        r.poll()
    struct.pack_into("<Q", m, head_at, head)            # repaired: in step again
    assert r.recv_bytes() == b"hello"
    # a length no writer would write
    w.send_bytes(b"abc")
    struct.pack_into("<Q", m, 4096 + 3 * 64 + head, 1 << 62)
    with pytest.raises(OSError, match="corrupt"):
        r.recv_bytes()
    m.close()
    r.close()
    w.close()


def test_close_from_another_thread_wakes_a_blocked_recv():
    import threading
    import fastmp
    a, b = fastmp.Pipe()
    errors = []

    def reader():
        try:
            b.recv()
        except OSError as exc:
            errors.append(str(exc))
    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.2)
    b.close()
    t.join(WAIT)
    assert not t.is_alive()
    assert errors == ["handle is closed"]
    a.close()
