"""Process targets for tests/test_pipe.py (importable, so spawn and forkserver children find
them).  Children report through their exit code or back through the pipe; every wait has a
bound, so a broken pipe makes a child fail instead of hanging."""
import os
import signal
import sys
import time

OK = 0
WRONG = 4
GOT_KEYBOARD_INTERRUPT = 42
GOT_EOF = 43

LONG = 60.0


def echo(conn):
    """Send back every object received, until None (echoed too)."""
    while True:
        if not conn.poll(LONG):
            sys.exit(WRONG)
        obj = conn.recv()
        conn.send(obj)
        if obj is None:
            break
    conn.close()


def echo_bytes(conn):
    """Send back every message received with recv_bytes, until an empty one."""
    while True:
        if not conn.poll(LONG):
            sys.exit(WRONG)
        data = conn.recv_bytes()
        conn.send_bytes(data)
        if not data:
            break


def send_then_sleep(conn, items):
    """Send the items, then sleep (the parent kills this process)."""
    for item in items:
        conn.send(item)
    time.sleep(LONG)


def send_then_exit(conn, items):
    for item in items:
        conn.send(item)


def recv_until_interrupted(conn, ready):
    """Block in recv(); exit GOT_KEYBOARD_INTERRUPT when Ctrl-C (SIGINT) interrupts it."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    ready.send("ready")
    try:
        conn.recv()
    except KeyboardInterrupt:
        sys.exit(GOT_KEYBOARD_INTERRUPT)
    sys.exit(WRONG)


def poll_until_interrupted(conn, ready):
    signal.signal(signal.SIGINT, signal.default_int_handler)
    ready.send("ready")
    try:
        conn.poll(None)
    except KeyboardInterrupt:
        sys.exit(GOT_KEYBOARD_INTERRUPT)
    sys.exit(WRONG)


def send_until_interrupted(conn, ready):
    """Send until the pipe is full and send() blocks; exit GOT_KEYBOARD_INTERRUPT when Ctrl-C
    interrupts it."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    ready.send("ready")
    try:
        for _ in range(100_000):
            conn.send_bytes(b"x" * 65536)
    except KeyboardInterrupt:
        sys.exit(GOT_KEYBOARD_INTERRUPT)
    sys.exit(WRONG)


def recv_conn_and_echo(carrier):
    """Receive a connection through another connection, then echo on it."""
    conn = carrier.recv()
    echo(conn)


def get_conn_and_echo(q):
    """Take a connection from a queue, then echo on it."""
    conn = q.get(timeout=LONG)
    echo(conn)


def big_echo(conn, sizes):
    """Receive messages of the given sizes, check their pattern, send each back."""
    for n in sizes:
        if not conn.poll(LONG):
            sys.exit(WRONG)
        data = conn.recv_bytes()
        if len(data) != n or data != pattern(n):
            sys.exit(WRONG)
        conn.send_bytes(data)


def pattern(n):
    block = bytes(range(251))
    return (block * (n // 251 + 1))[:n]


def send_numbered(conn, who, count):
    """Send `count` messages (who, i, payload) of varied sizes, some larger than the buffer."""
    for i in range(count):
        size = (i * 7919) % 5000 if i % 10 else 300_000 + i
        conn.send_bytes(b"%d:%d:" % (who, i) + pattern(size))
    conn.close()


def exit_holding(conn):
    """Exit at once (holding an inherited end until the exit)."""
    os._exit(OK)


def write_to_received_fd(conn, data):
    """Receive a descriptor with reduction.recv_handle, write data to it."""
    from multiprocessing import reduction
    fd = reduction.recv_handle(conn)
    os.write(fd, data)
    os.close(fd)
