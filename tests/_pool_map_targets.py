"""Task functions for tests/test_pool_map.py (importable by name in spawn and forkserver
workers)."""
import os

# rss_growth's chunk: the items 0 .. RSS_ITEMS - 1, in one task
RSS_ITEMS = 4_000_000
_rss_at_start = [0]


def square(x):
    return x * x


def echo(x):
    return x


def mixed(x):
    """Results of several types in one chunk: small ints, ints past int64, floats (with
    -0.0, inf and nan), bools, None and strings, so a chunk's packed run of numbers is cut
    by results that do not pack at various places."""
    k = x % 50
    if k == 20:
        return 2 ** 70 + x
    if k == 30:
        return -(2 ** 63)
    if k == 31:
        return 2 ** 63
    if k == 35:
        return str(x)
    if k == 36:
        return x % 2 == 0
    if k == 37:
        return None
    if k == 40:
        return float(x) + 0.5
    if k == 41:
        return -0.0
    if k == 42:
        return float("inf")
    if k == 43:
        return float("nan")
    return x * x


def floats(x):
    return x / 4


def fail_at(x):
    """Raises for x == 777 (after many results of its chunk packed)."""
    if x == 777:
        raise ValueError(f"item {x} failed")
    return x


def pair(a, b):
    return a * 1000 + b


def _rss_kib():
    """This process's resident size now (KiB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def note_rss():
    """Pool initializer: the worker's resident size before any task."""
    _rss_at_start[0] = _rss_kib()


def rss_growth(x):
    """x + 1 (a new int), but the last item returns how much the worker's resident size
    grew (KiB) since note_rss() ran."""
    if x == RSS_ITEMS - 1:
        return _rss_kib() - _rss_at_start[0]
    return x + 1


def length(b):
    return len(b)


def echo_or_die(b):
    """Its item, but a worker given the item starting with 5 dies (os._exit)."""
    if b[:1] == b"\x05":
        os._exit(7)
    return b
