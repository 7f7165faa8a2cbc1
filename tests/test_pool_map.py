"""Pool.map and its kin on the fast paths: results exactly the stdlib's (values, types, order,
the failure reported) whatever the chunk size and input; large chunks' results packed as they
come (the worker's memory stays small); large items through the pool's reused segments,
byte-exact, none left in /dev/shm."""
import os

import pytest

import fastmp
import fastmp.pool
import _pool_map_targets as t
from conftest import is_fastmp, shm_entries, shm_gone_within


def make_pool(ctx, *args, **kwargs):
    if is_fastmp(ctx):
        return fastmp.pool.Pool(*args, context=ctx, **kwargs)
    return ctx.Pool(*args, **kwargs)


@pytest.fixture
def pool(ctx):
    p = make_pool(ctx, 2)
    yield p
    p.terminate()
    p.join()


def exact(values):
    """What must match: each value's type and repr (tells 1 from True, -0.0 from 0.0, nan)."""
    return [(type(v), repr(v)) for v in values]


SIZES = [0, 1, 15, 16, 17, 257, 5000]
CHUNKSIZES = [None, 1, 7, 64, 100_000]


def test_map_results_exact_for_every_size_and_chunksize(pool):
    for n in SIZES:
        want = exact(t.mixed(x) for x in range(n))
        for cs in CHUNKSIZES:
            assert exact(pool.map(t.mixed, range(n), cs)) == want, (n, cs)
        assert exact(pool.map(t.square, list(range(n)))) == exact(x * x for x in range(n))


def test_map_inputs_of_every_kind(pool):
    want = exact(t.mixed(x) for x in range(3000))
    assert exact(pool.map(t.mixed, range(3000))) == want
    assert exact(pool.map(t.mixed, list(range(3000)))) == want
    assert exact(pool.map(t.mixed, tuple(range(3000)))) == want
    assert exact(pool.map(t.mixed, (x for x in range(3000)))) == want
    assert exact(pool.map(t.mixed, iter(range(3000)), 500)) == want
    assert pool.map(t.square, []) == []
    assert pool.map(t.square, iter([])) == []


def test_map_floats_and_large_ints(pool):
    assert exact(pool.map(t.floats, range(10_000))) == exact(x / 4 for x in range(10_000))
    big = [2 ** 62 + x for x in range(100)] + [2 ** 64 + x for x in range(100)]
    assert exact(pool.map(t.echo, big, 150)) == exact(big)
    negatives = [-(2 ** 63)] * 20 + [-(2 ** 63) - 1] + [0] * 20
    assert exact(pool.map(t.echo, negatives, 41)) == exact(negatives)


def test_map_failure_in_the_middle_of_a_chunk(pool):
    for cs in (None, 1000, 2000):
        with pytest.raises(ValueError, match="^item 777 failed$"):
            pool.map(t.fail_at, range(2000), cs)
    errors = []
    r = pool.map_async(t.fail_at, range(2000), 1000, error_callback=errors.append)
    with pytest.raises(ValueError, match="^item 777 failed$"):
        r.get(60)
    assert not r.successful()
    assert [str(e) for e in errors] == ["item 777 failed"]
    # the pool carries on
    assert pool.map(t.square, range(2000)) == [x * x for x in range(2000)]


def test_map_async_callback_gets_the_whole_list(pool):
    got = []
    r = pool.map_async(t.square, range(50_000), callback=got.append)
    assert r.get(60) == [x * x for x in range(50_000)]
    assert got == [[x * x for x in range(50_000)]]


def test_starmap_and_chunked_imap(pool):
    items = [(i, i % 1000) for i in range(5000)]
    want = [a * 1000 + b for a, b in items]
    assert pool.starmap(t.pair, items) == want
    assert pool.starmap(t.pair, items, 1000) == want
    want = exact(t.mixed(x) for x in range(3000))
    assert exact(pool.imap(t.mixed, range(3000), 500)) == want
    assert sorted(map(repr, pool.imap_unordered(t.mixed, range(3000), 500))) == \
        sorted(r for _, r in want)


def _mib_items(k):
    base = bytes(range(256)) * 4096
    return [i.to_bytes(8, "little") + base[8:] for i in range(k)]


def test_mib_items_round_trip_byte_exact(pool):
    items = _mib_items(12)
    for cs in (None, 1, 5):
        out = pool.map(t.echo, items, cs)
        assert [type(x) for x in out] == [bytes] * 12
        assert out == items
    arrays = [bytearray(b) for b in items[:4]]
    out = pool.map(t.echo, arrays)
    assert [type(x) for x in out] == [bytearray] * 4 and out == arrays
    assert pool.map(t.length, items + [b"z"]) == [1 << 20] * 12 + [1]
    assert pool.apply(t.echo, (items[3],)) == items[3]
    # larger than a big slot takes (32 MiB): a segment of its own, both ways
    huge = bytes(range(256)) * (160 << 10)
    assert pool.apply(t.echo, (huge,)) == huge
    assert pool.map(t.length, [huge, b"x"]) == [40 << 20, 1]
    # a list of large items as a single item (a chunk starting with a small one)
    assert pool.map(t.echo, [[b"", items[0]], [items[1], 7]], 2) == \
        [[b"", items[0]], [items[1], 7]]


def test_big_slots_are_reused_and_unlinked_at_close(fastmp_ctx):
    pool = make_pool(fastmp_ctx, 2)
    try:
        items = _mib_items(16)
        assert pool.map(t.echo, items, 2) == items
        slots = pool._dispatcher.channel.big_slots()
        used = {name for state, size, name in slots if name is not None}
        assert used, slots
        # every entry was read: the slots are all free again
        assert {state for state, size, name in slots if name is not None} == {1}
        assert len(slots) == 16
        assert sum(size for _, size, _ in slots) <= 256 << 20
        for _ in range(3):
            assert pool.map(t.echo, items, 2) == items
        again = {name for state, size, name in pool._dispatcher.channel.big_slots()
                 if name is not None}
        # 4 maps of 8 chunks of 2 MiB each way (64 entries) went through at most 16
        # segments, kept from map to map (a slot's segment is replaced only by a larger one)
        assert used <= again and len(again) <= 16
        assert {n.lstrip("/") for n in used} <= shm_entries()
    finally:
        pool.close()
        pool.join()
    assert shm_gone_within({n.lstrip("/") for n in used}, 10) == set()
    # (a one-off segment left behind would fail the session: conftest's dev_shm_clean)


@pytest.mark.timeout(120)
def test_big_slots_after_a_worker_dies_in_a_map_of_large_items(fastmp_ctx):
    """A worker dies in the middle of a map of 1 MiB items: its task fails
    (WorkerLostError), the pool and its big slots carry on, and every segment of the table
    is unlinked at close."""
    pool = make_pool(fastmp_ctx, 2)
    try:
        items = _mib_items(8)
        with pytest.raises(fastmp.pool.WorkerLostError):
            pool.map(t.echo_or_die, items, 1)
        for _ in range(3):
            assert pool.map(t.echo, items, 2) == items
        slots = pool._dispatcher.channel.big_slots()
        used = {name.lstrip("/") for _, _, name in slots if name is not None}
        assert len(slots) == 16 and used
    finally:
        pool.close()
        pool.join()
    assert shm_gone_within(used, 10) == set()


@pytest.mark.timeout(120)
@pytest.mark.skipif("asan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer keeps freed memory aside (its quarantine)")
def test_large_chunk_keeps_the_worker_small(fastmp_ctx):
    """One chunk of 4M items: a range chunk is not made a list in the worker, and its int
    results are packed as they come (before: about 300 MB of int objects and lists were
    resident at the last item)."""
    pool = make_pool(fastmp_ctx, 1, initializer=t.note_rss)
    try:
        out = pool.map(t.rss_growth, range(t.RSS_ITEMS), chunksize=t.RSS_ITEMS)
    finally:
        pool.terminate()
        pool.join()
    assert len(out) == t.RSS_ITEMS and out[:3] == [1, 2, 3]
    assert out[-2] == t.RSS_ITEMS - 1
    grown_kib = out[-1]
    # the packed results themselves: 8 bytes each (32 MB), plus some slack
    assert grown_kib < 80 * 1024, grown_kib
