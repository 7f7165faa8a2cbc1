"""The ``queue`` workloads: Queue and SimpleQueue between processes, one to many producers and
consumers, small items to 1 MiB ones, batched with put_many / get_many; faster-fifo's Queue as a
peer, started with the stdlib's processes of the same start method."""
from time import perf_counter

from .harness import ping_pong, producers
from .placement import processes
from .runner import BenchTimeout, Workload

GROUP = "queue"

SMALL_ITEM = ("task", 12345, 6.5)
BIG_ITEM = bytes(64 * 1024)


def _put_items(n, q, item):
    put = q.put
    for _ in range(n):
        put(item)


def _get_items(n, q, item):
    get = q.get
    for _ in range(n):
        get()


def _close_queue(q):
    close = getattr(q, "close", None)
    if close is not None:
        close()
    join_thread = getattr(q, "join_thread", None)
    if join_thread is not None:
        join_thread()


def _queue_producers(ctx, q, n, k, item):
    """k producer processes put n items in all; the parent gets them: items per second."""
    try:
        return producers(ctx, n, k, _put_items, _get_items, (q, item))
    finally:
        _close_queue(q)


def _queue_pingpong_child(conn, n, q1, q2, item):
    conn.send("ready")
    get, put = q1.get, q2.put
    for _ in range(n):
        put(get())
    conn.send("done")


def _queue_pingpong_parent(n, q1, q2, item):
    get, put = q2.get, q1.put
    for _ in range(n):
        put(item)
        get()


def _queue_pingpong(ctx, q1, q2, n):
    try:
        return ping_pong(ctx, n, _queue_pingpong_child, _queue_pingpong_parent,
                         (q1, q2, SMALL_ITEM))
    finally:
        _close_queue(q1)
        _close_queue(q2)


def bench_queue_throughput(mp, n, start_method="fork"):
    """One producer process puts small tuples on a Queue, the parent gets them."""
    ctx = mp.get_context(start_method)
    return _queue_producers(ctx, ctx.Queue(), n, 1, SMALL_ITEM)


def bench_queue_64k(mp, n, start_method="fork"):
    """One producer process puts 64 KiB bytes objects on a Queue, the parent gets them."""
    ctx = mp.get_context(start_method)
    return _queue_producers(ctx, ctx.Queue(), n, 1, BIG_ITEM)


def bench_queue_fanin(mp, n, start_method="fork"):
    """--processes producer processes put small tuples on one Queue, the parent gets them."""
    ctx = mp.get_context(start_method)
    return _queue_producers(ctx, ctx.Queue(), n, processes(), SMALL_ITEM)


def bench_queue_pingpong(mp, n, start_method="fork"):
    """A small tuple there and back through two Queues: round trips per second."""
    ctx = mp.get_context(start_method)
    return _queue_pingpong(ctx, ctx.Queue(), ctx.Queue(), n)


def bench_simplequeue_throughput(mp, n, start_method="fork"):
    """One producer process puts small tuples on a SimpleQueue, the parent gets them."""
    ctx = mp.get_context(start_method)
    return _queue_producers(ctx, ctx.SimpleQueue(), n, 1, SMALL_ITEM)


def _std_ctx(start_method):
    import multiprocessing
    return multiprocessing.get_context(start_method)


def _ff_queue():
    import faster_fifo
    return faster_fifo.Queue()          # 1 MB ring: room for fifteen 64 KiB messages


def ff_queue_throughput(n, start_method="fork"):
    return _queue_producers(_std_ctx(start_method), _ff_queue(), n, 1, SMALL_ITEM)


def ff_queue_64k(n, start_method="fork"):
    return _queue_producers(_std_ctx(start_method), _ff_queue(), n, 1, BIG_ITEM)


def ff_queue_fanin(n, start_method="fork"):
    return _queue_producers(_std_ctx(start_method), _ff_queue(), n, processes(), SMALL_ITEM)


def ff_queue_pingpong(n, start_method="fork"):
    return _queue_pingpong(_std_ctx(start_method), _ff_queue(), _ff_queue(), n)


# ---------------------------------------------------------------------------
# batched (put_many / get_many), 1 MiB items, fixed fan-in / fan-out, and the producer x
# consumer configurations of faster-fifo's README

MIB_ITEM = bytes(1 << 20)
_FF_BIG_BYTES = 64 << 20        # faster-fifo ring for the 1 MiB workload (its default is 1 MB)


BATCH = 256     # items per put_many / get_many call in the batched workloads


def _batch_kw(q):
    # faster-fifo names the limit max_messages_to_get; fastmp max_items
    return ({"max_messages_to_get": BATCH} if type(q).__module__.startswith("faster_fifo")
            else {"max_items": BATCH})


def _put_items_many(n, q, item):
    """Producer side with put_many where the queue has it (fastmp, faster-fifo)."""
    put_many = getattr(q, "put_many", None)
    if put_many is None:
        return _put_items(n, q, item)
    batch = [item] * BATCH
    for _ in range(n // BATCH):
        put_many(batch)
    put_many([item] * (n % BATCH))


def _get_items_many(n, q, item):
    """Consumer side with get_many where the queue has it (fastmp, faster-fifo)."""
    get_many = getattr(q, "get_many", None)
    if get_many is None:
        return _get_items(n, q, item)
    kw = _batch_kw(q)
    got = 0
    while got < n:
        got += len(get_many(**kw))


def _queue_many(ctx, q, n, k, item):
    try:
        return producers(ctx, n, k, _put_items_many, _get_items_many, (q, item))
    finally:
        _close_queue(q)


def _mpmc_child(conn, work, n, q, item):
    conn.send("ready")
    if conn.recv() != "go":
        return
    work(n, q, item)
    conn.send("done")


def _mpmc_put(n, q, item):
    put = q.put
    for _ in range(n):
        put(item)
    # The stdlib's put hands items to a feeder thread: flush it before reporting "done", or
    # the end markers the parent puts next could overtake them.
    _close_queue(q)


def _mpmc_get(n, q, item):
    """Get until a None; with get_many (where the queue has it) give back the Nones meant
    for the other consumers."""
    get_many = getattr(q, "get_many", None)
    if get_many is None:
        get = q.get
        while get() is not None:
            pass
        return
    kw = _batch_kw(q)
    while True:
        batch = get_many(**kw)
        stops = batch.count(None)
        if stops:
            for _ in range(stops - 1):
                q.put(None)
            return


def _mpmc(ctx, q, n, np_, nc, item, start_timeout=120.0):
    """np_ producer and nc consumer processes; items per second from "go" until every consumer
    has seen its end marker (one None each, put by the parent once the producers are done)."""
    per = max(1, n // np_)
    conns, procs = [], []
    try:
        for role, count in ((_mpmc_put, np_), (_mpmc_get, nc)):
            for _ in range(count):
                mine, theirs = ctx.Pipe()
                proc = ctx.Process(target=_mpmc_child, args=(theirs, role, per, q, item),
                                   daemon=True)
                proc.start()
                theirs.close()
                conns.append(mine)
                procs.append(proc)
        for conn in conns:
            if not conn.poll(start_timeout):
                raise BenchTimeout(f"a child did not start within {start_timeout:.0f} s")
            conn.recv()
        t0 = perf_counter()
        for conn in conns:
            conn.send("go")
        for conn in conns[:np_]:
            conn.recv()
        for _ in range(nc):
            q.put(None)
        for conn in conns[np_:]:
            conn.recv()
        dt = perf_counter() - t0
        for proc in procs:
            proc.join(start_timeout)
        return per * np_ / dt
    except EOFError:
        raise RuntimeError("a child died") from None
    finally:
        for conn in conns:
            conn.close()
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        _close_queue(q)


def bench_queue_get_many(mp, n, start_method="fork"):
    """Batched: one producer process puts small tuples with put_many, the parent takes them
    with get_many, 256 at a time (the stdlib, which has neither, with put and get)."""
    ctx = mp.get_context(start_method)
    return _queue_many(ctx, ctx.Queue(), n, 1, SMALL_ITEM)


def bench_queue_1mib(mp, n, start_method="fork"):
    """One producer process puts 1 MiB bytes objects, the parent gets them."""
    ctx = mp.get_context(start_method)
    return _queue_producers(ctx, ctx.Queue(), n, 1, MIB_ITEM)


def bench_queue_4p1c(mp, n, start_method="fork"):
    """Four producer processes put small tuples on one Queue, the parent gets them."""
    ctx = mp.get_context(start_method)
    return _queue_producers(ctx, ctx.Queue(), n, 4, SMALL_ITEM)


def bench_queue_1p4c(mp, n, start_method="fork"):
    """One producer process, four consumer processes, small tuples."""
    ctx = mp.get_context(start_method)
    return _mpmc(ctx, ctx.Queue(), n, 1, 4, SMALL_ITEM)


def ff_queue_get_many(n, start_method="fork"):
    return _queue_many(_std_ctx(start_method), _ff_queue(), n, 1, SMALL_ITEM)


def ff_queue_1mib(n, start_method="fork"):
    import faster_fifo
    return _queue_producers(_std_ctx(start_method),
                            faster_fifo.Queue(max_size_bytes=_FF_BIG_BYTES), n, 1, MIB_ITEM)


def ff_queue_4p1c(n, start_method="fork"):
    return _queue_producers(_std_ctx(start_method), _ff_queue(), n, 4, SMALL_ITEM)


def ff_queue_1p4c(n, start_method="fork"):
    return _mpmc(_std_ctx(start_method), _ff_queue(), n, 1, 4, SMALL_ITEM)


# faster-fifo's README compares producers x consumers with every consumer on get_many; here
# with the same process counts (on this 2-core machine they take turns) and fewer messages.
FF_README_CONFIGS = ((1, 1), (1, 10), (10, 1), (3, 20), (20, 3), (20, 20))


def _ff_readme_workloads():
    out = []
    for np_, nc in FF_README_CONFIGS:
        def ours(mp, n, start_method="fork", _p=np_, _c=nc):
            ctx = mp.get_context(start_method)
            return _mpmc(ctx, ctx.Queue(), n, _p, _c, SMALL_ITEM)

        def peer(n, start_method="fork", _p=np_, _c=nc):
            return _mpmc(_std_ctx(start_method), _ff_queue(), n, _p, _c, SMALL_ITEM)
        ours.__name__ = f"bench_queue_ff_{np_}p{nc}c"
        ours.__doc__ = (f"faster-fifo README configuration: {np_} producer and {nc} consumer "
                        "processes, small tuples, consumers on get_many where there is one")
        peer.__name__ = f"ff_queue_ff_{np_}p{nc}c"
        out.append(Workload(f"queue-ff-{np_}p{nc}c", ours, 100_000, "item",
                            f"{np_} producer x {nc} consumer processes (faster-fifo's README)",
                            probe=_probe_queue("Queue"), peers={"faster-fifo": peer}))
    return out


def _probe_queue(factory):
    def probe(mp, ctx):
        q = getattr(ctx, factory)()
        _close_queue(q)
        return type(q)
    return probe


WORKLOADS = [
    Workload("queue-throughput", bench_queue_throughput, 50_000, "item",
             "one producer process puts small tuples on a Queue, the parent gets them",
             probe=_probe_queue("Queue"), peers={"faster-fifo": ff_queue_throughput}),
    Workload("queue-64k", bench_queue_64k, 5_000, "64 KiB item",
             "the same with 64 KiB bytes objects",
             probe=_probe_queue("Queue"), peers={"faster-fifo": ff_queue_64k}),
    Workload("queue-fanin", bench_queue_fanin, 50_000, "item",
             "--processes producer processes into one Queue, the parent gets",
             probe=_probe_queue("Queue"), peers={"faster-fifo": ff_queue_fanin}),
    Workload("queue-pingpong", bench_queue_pingpong, 5_000, "round trip",
             "a small tuple there and back through two Queues, two processes",
             probe=_probe_queue("Queue"), peers={"faster-fifo": ff_queue_pingpong}),
    Workload("simplequeue-throughput", bench_simplequeue_throughput, 50_000, "item",
             "one producer process puts small tuples on a SimpleQueue, the parent gets them",
             probe=_probe_queue("SimpleQueue")),
    Workload("queue-get-many", bench_queue_get_many, 200_000, "item",
             "put_many / get_many of 256 small tuples, two processes (stdlib: put / get)",
             probe=_probe_queue("Queue"), peers={"faster-fifo": ff_queue_get_many}),
    Workload("queue-1mib", bench_queue_1mib, 1_000, "1 MiB item",
             "one producer process puts 1 MiB bytes objects, the parent gets them",
             probe=_probe_queue("Queue"), peers={"faster-fifo": ff_queue_1mib}),
    Workload("queue-4p1c", bench_queue_4p1c, 100_000, "item",
             "four producer processes into one Queue, the parent gets",
             probe=_probe_queue("Queue"), peers={"faster-fifo": ff_queue_4p1c}),
    Workload("queue-1p4c", bench_queue_1p4c, 100_000, "item",
             "one producer process, four consumer processes",
             probe=_probe_queue("Queue"), peers={"faster-fifo": ff_queue_1p4c}),
] + _ff_readme_workloads()


for _w in WORKLOADS:
    _w.group = GROUP
del _w
