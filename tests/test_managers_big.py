"""Big values in a Manager's dict, replaced again and again.

The stdlib is the reference for what a program sees (every value read back exact, a writer
killed mid-write leaves the dict readable and whole).  fastmp keeps the dict's data in one shared
segment: a replaced value's bytes are reused by the next write, so the segment neither grows nor
is rebuilt however many times the same keys are replaced (its size and generation stay put)."""
import os
import random
import signal
import struct
import time

import pytest

from conftest import is_fastmp, join_ok, start

MIB = 1 << 20
KEYS = 4
BODY = bytes(range(256)) * (MIB // 256)


def big_value(key, serial):
    """1 MiB + 16 bytes that say which key and which write they are: a head, then a body
    filled with one byte that depends on both (a torn value has a mixed body)."""
    fill = (key * 31 + serial) & 0xff
    return struct.pack("<QQ", key, serial) + bytes([fill]) * MIB


def value_is_whole(key, value):
    if len(value) != MIB + 16:
        return False
    k, serial = struct.unpack_from("<QQ", value)
    fill = (key * 31 + serial) & 0xff
    return k == key and value[16:] == bytes([fill]) * MIB


def shm_size(kv):
    return os.stat("/dev/shm" + kv.segment).st_size


UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.timeout(300)
def test_big_values_replaced_many_times(mp):
    """4 keys of 1 MiB, each replaced 500 times (2,000 sets): every value read back is the
    last one written; in fastmp the data segment stays the same file, of the same size, and
    the process's resident memory does not grow."""
    manager = mp.Manager()
    try:
        d = manager.dict()
        for k in range(KEYS):
            d[k] = big_value(k, 0)
        kv = d._kv if is_fastmp(mp) else None
        if kv is not None:
            gen0, name0, size0 = kv.generation, kv.segment, shm_size(kv)
            rss0 = rss_bytes()
        for serial in range(1, 501):
            for k in range(KEYS):
                d[k] = big_value(k, serial)
            if serial % 50 == 0:
                for k in range(KEYS):
                    assert d[k] == big_value(k, serial)
        assert sorted(d.keys()) == list(range(KEYS))
        assert all(d[k] == big_value(k, 500) for k in range(KEYS))
        if kv is not None:
            assert (kv.generation, kv.segment, shm_size(kv)) == (gen0, name0, size0)
            # room for 4 live values and one being written, and not much more
            assert size0 < 12 * MIB
            if not UNDER_ASAN:      # (its quarantine holds freed memory: RSS grows there)
                assert rss_bytes() - rss0 < 16 * MIB
            kv.check()
    finally:
        manager.shutdown()


@pytest.mark.timeout(300)
def test_big_list_items_replaced_many_times(mp):
    """The same for a Manager's list: lst[i] = 1 MiB, 4 items, 250 times each."""
    manager = mp.Manager()
    try:
        lst = manager.list([big_value(k, 0) for k in range(KEYS)])
        kv = lst._kv if is_fastmp(mp) else None
        lst[0] = big_value(0, 0)
        if kv is not None:
            gen0, name0, size0 = kv.generation, kv.segment, shm_size(kv)
        for serial in range(1, 251):
            for k in range(KEYS):
                lst[k] = big_value(k, serial)
        assert len(lst) == KEYS
        assert all(lst[k] == big_value(k, 250) for k in range(KEYS))
        if kv is not None:
            assert (kv.generation, kv.segment, shm_size(kv)) == (gen0, name0, size0)
            kv.check()
    finally:
        manager.shutdown()


@pytest.mark.timeout(300)
def test_replaced_by_a_mix_of_sizes(mp):
    """Values of 1 byte to 2 MiB set, replaced, popped and deleted at random against a plain
    dict: the proxy's contents equal the model's after every step."""
    rng = random.Random(1234)
    manager = mp.Manager()
    try:
        d = manager.dict()
        model = {}
        for step in range(300):
            key = rng.randrange(6)
            op = rng.random()
            if op < 0.6:
                size = rng.choice((1, 100, 5000, 70000, 70000, MIB, 2 * MIB - 7))
                value = bytes([step & 0xff]) * size
                d[key] = value
                model[key] = value
            elif op < 0.75:
                assert d.pop(key, None) == model.pop(key, None)
            elif op < 0.9:
                if key in model:
                    del d[key]
                    del model[key]
            elif op < 0.93:
                d.clear()
                model.clear()
            assert dict(d.items()) == model, f"step {step}"
        if is_fastmp(mp):
            d._kv.check()
    finally:
        manager.shutdown()


def replace_forever(d, started):
    # two whole values per key, made once: the loop spends its time inside the dict's writes
    values = [[big_value(k, serial) for k in range(KEYS)] for serial in (1, 2)]
    for k in range(KEYS):
        d[k] = values[0][k]
    started.set()
    while True:
        for row in values:
            for k in range(KEYS):
                d[k] = row[k]


@pytest.mark.timeout(300)
def test_writer_killed_while_replacing_big_values(ctx, procs):
    """A child replacing 1 MiB values is SIGKILLed at random moments (inside a write, often):
    each time, every key still holds one whole value, and the parent carries on writing."""
    manager = ctx.Manager()
    rng = random.Random(99)
    try:
        d = manager.dict()
        for k in range(KEYS):
            d[k] = big_value(k, 0)
        fastmp_kv = d._kv if is_fastmp(ctx) else None
        for trial in range(8):
            started = ctx.Event()
            p = start(procs, ctx, replace_forever, d, started)
            assert started.wait(60)
            time.sleep(rng.uniform(0.001, 0.03))
            os.kill(p.pid, signal.SIGKILL)
            join_ok(p, -signal.SIGKILL)
            assert sorted(d.keys()) == list(range(KEYS))
            for k in range(KEYS):
                assert value_is_whole(k, d[k]), f"trial {trial}: key {k} torn"
            if fastmp_kv is not None:
                fastmp_kv.check()
            for k in range(KEYS):
                d[k] = big_value(k, 10**6 + trial)
            assert all(d[k] == big_value(k, 10**6 + trial) for k in range(KEYS))
        if fastmp_kv is not None:
            # what the dead writers took from the free space came back: still one segment
            gen = fastmp_kv.generation
            for serial in range(50):
                for k in range(KEYS):
                    d[k] = big_value(k, serial)
            assert fastmp_kv.generation == gen
            fastmp_kv.check()
    finally:
        manager.shutdown()


def test_pickle_bytes_matches_pickle():
    """fastmp pickles a big bytes value itself, in one allocation: the same bytes as
    pickle.dumps from 64 KiB on; below, a pickle that loads to the same value."""
    import pickle
    from fastmp._core import SharedKV
    for n in (0, 1, 255, 256, 65535, 65536, MIB + 3):
        data = BODY[:n] if n <= len(BODY) else BODY + b"x" * (n - len(BODY))
        out = SharedKV.pickle_bytes(data)
        assert pickle.loads(out) == data
        if n >= 65536:
            assert out == pickle.dumps(data, 5)
    with pytest.raises(TypeError):
        SharedKV.pickle_bytes(bytearray(b"abc"))
