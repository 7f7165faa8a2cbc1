"""Task functions for tests/test_pool_timeout.py (importable by name, for spawn and
forkserver workers)."""
import os
import time

# An item this function treats as the slow one sleeps this long: far past every limit the
# tests set, so that only a timeout ends it.
STUCK = 120.0


def square_or_stuck(x, stuck=3):
    """x * x, except for x == stuck, which never ends in time."""
    if x == stuck:
        time.sleep(STUCK)
    return x * x


def pair_or_stuck(a, b, stuck=(1, 2)):
    if (a, b) == tuple(stuck):
        time.sleep(STUCK)
    return a + b


def sleep_for(secs):
    time.sleep(secs)
    return secs


def noted(path, i, stuck=None):
    """Append i to the file at path when the call starts (one line per start, O_APPEND: whole
    lines from any number of processes), then return i * 10; item `stuck` never ends."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{i}\n".encode())
    finally:
        os.close(fd)
    if i == stuck:
        time.sleep(STUCK)
    return i * 10


def starts(path):
    """The items noted() started, as a sorted list (one entry per start)."""
    try:
        with open(path) as f:
            return sorted(int(line) for line in f if line.strip())
    except FileNotFoundError:
        return []


def getpid(_=None):
    return os.getpid()


def noted_sleep(path, i, secs):
    """noted(path, i), then sleep secs and return i."""
    noted(path, i)
    time.sleep(secs)
    return i
