/* test_ring.c: the many-producer many-consumer ring (csrc/ring.c).
 *
 * Single-thread semantics (FIFO, wrap with padding, full/empty, sizes,
 * sealing, abandon), many threads hammering one ring with a checksum of
 * everything sent and received, processes (fork) sharing a ring in a
 * segment, a writer SIGKILLed in the middle of a record, a reader
 * SIGKILLed holding one, and wake-ups (latency, no lost wake-up). */
#include <limits.h>
#include <sched.h>

#include "check.h"
#include "ring.h"

static void *
new_ring(size_t cap)
{
    size_t n = fm_ring_bytes(cap);
    void *mem = aligned_alloc(4096, (n + 4095) & ~(size_t)4095);
    memset(mem, 0, n);
    CHECK_ST(fm_ring_init(mem, cap), FM_OK);
    CHECK_ST(fm_ring_check(mem, n), FM_OK);
    return mem;
}

static int
put_bytes(fm_ring *r, const void *p, uint32_t len, int64_t deadline)
{
    fm_ring_claim c;
    int st;
    int64_t spin = 0;
    while ((st = fm_ring_claim_space(r, len, fmt_pid(), deadline, spin, &c)) == FM_EINTR)
        spin = 0;
    if (st != FM_OK)
        return st;
    memcpy(c.data, p, len);
    fm_ring_commit(r, &c);
    return FM_OK;
}

/* Take one record into buf; *len set.  Loops on FM_EINTR. */
static int
get_bytes(fm_ring *r, void *buf, uint32_t *len, int64_t deadline)
{
    fm_ring_read rd;
    int st;
    int64_t spin = atomic_load(&fm_spin_ns);
    while ((st = fm_ring_take(r, fmt_pid(), deadline, spin, &rd)) == FM_EINTR)
        spin = 0;
    if (st != FM_OK)
        return st;
    memcpy(buf, rd.data, rd.len);
    *len = rd.len;
    fm_ring_release(r, &rd);
    return FM_OK;
}

/* ----------------------------------------------------------- single thread */

static void
test_init_check(void)
{
    _Alignas(64) char buf[8192] = {0};
    CHECK_ST(fm_ring_init(buf + 8, 4096), FM_CORRUPT);  /* not line-aligned */
    CHECK_ST(fm_ring_init(buf, 1000), FM_CORRUPT);      /* not a power of two */
    CHECK_ST(fm_ring_init(buf, 2048), FM_CORRUPT);      /* below the minimum */
    CHECK_ST(fm_ring_check(buf, sizeof buf), FM_CORRUPT);   /* no magic */
    void *mem = new_ring(4096);
    CHECK_ST(fm_ring_check(mem, fm_ring_bytes(4096) - 1), FM_CORRUPT);  /* too short */
    CHECK_ST(fm_ring_check(mem, 10), FM_CORRUPT);
    fm_ring *r = mem;
    CHECK_EQ(fm_ring_capacity(r), 4096);
    CHECK_EQ(fm_ring_max_record(r), 2048 - 8);
    CHECK(!fm_ring_sealed(r));
    CHECK_EQ(strlen(fm_ring_next_name(r)), 0);
    CHECK_EQ(fm_ring_ready_count(r), 0);
    /* header on separate lines from the data; the positions on their own */
    CHECK_EQ(fm_ring_bytes(4096) % 64, 0);
    free(mem);
}

static void
test_fifo_and_empty(void)
{
    fm_ring *r = new_ring(4096);
    char out[4096];
    uint32_t len;
    CHECK_ST(get_bytes(r, out, &len, 0), FM_AGAIN);
    for (int i = 0; i < 20; i++) {
        char msg[32];
        int n = snprintf(msg, sizeof msg, "item-%d", i);
        CHECK_ST(put_bytes(r, msg, (uint32_t)n, 0), FM_OK);
    }
    CHECK_EQ(fm_ring_ready_count(r), 20);
    for (int i = 0; i < 20; i++) {
        char msg[32];
        int n = snprintf(msg, sizeof msg, "item-%d", i);
        CHECK_ST(get_bytes(r, out, &len, 0), FM_OK);
        CHECK_EQ(len, n);
        CHECK(memcmp(out, msg, (size_t)n) == 0);
    }
    CHECK_EQ(fm_ring_ready_count(r), 0);
    CHECK_ST(get_bytes(r, out, &len, 0), FM_AGAIN);
    /* empty payloads are records too */
    CHECK_ST(put_bytes(r, "", 0, 0), FM_OK);
    CHECK_ST(get_bytes(r, out, &len, 0), FM_OK);
    CHECK_EQ(len, 0);
    /* timeout on an empty ring: waits about that long */
    int64_t t0 = fm_now_ns();
    CHECK_ST(get_bytes(r, out, &len, fm_deadline_after(0.1)), FM_TIMEOUT);
    double el = fmt_secs_since(t0);
    CHECK_MSG(el >= 0.099 && el < 1.0, "elapsed %.3f", el);
    free(r);
}

static void
test_full_sizes_wrap(void)
{
    fm_ring *r = new_ring(4096);
    static char big[4096], out[4096];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)(i * 7 + 1);
    uint32_t len;
    CHECK_ST(put_bytes(r, big, (uint32_t)fm_ring_max_record(r) + 1, 0), FM_OVERFLOW);
    /* fill: 100-byte payloads take 112 bytes each */
    int n = 0;
    while (put_bytes(r, big, 100, 0) == FM_OK)
        n++;
    CHECK_EQ(n, 4096 / 112);
    CHECK_ST(put_bytes(r, big, 100, fm_deadline_after(0.05)), FM_TIMEOUT);
    CHECK_EQ(fm_ring_ready_count(r), n);
    /* free one: room for exactly one again */
    CHECK_ST(get_bytes(r, out, &len, 0), FM_OK);
    CHECK_ST(put_bytes(r, big, 100, 0), FM_OK);
    CHECK_ST(put_bytes(r, big, 100, 0), FM_AGAIN);
    for (int i = 0; i < n; i++) {
        CHECK_ST(get_bytes(r, out, &len, 0), FM_OK);
        CHECK_EQ(len, 100);
        CHECK(memcmp(out, big, 100) == 0);
    }
    /* many laps of varying sizes, wrapping with pads: FIFO and contents */
    uint32_t sizes[] = {1, 7, 8, 9, 100, 513, 1000, 2040, 3, 1500, 64, 0, 777};
    int ns = (int)(sizeof sizes / sizeof sizes[0]);
    uint32_t pending[64];
    int head = 0, tail = 0;
    for (int round = 0; round < 3000; round++) {
        uint32_t s = sizes[round % ns];
        big[0] = (char)round;
        int st = put_bytes(r, big, s, 0);
        if (st == FM_OK) {
            pending[tail++ % 64] = s | ((uint32_t)(round & 0xff) << 24);
        } else {
            CHECK_ST(st, FM_AGAIN);
            CHECK(head < tail);
            while (head < tail) {
                uint32_t want = pending[head++ % 64];
                CHECK_ST(get_bytes(r, out, &len, 0), FM_OK);
                CHECK_EQ(len, want & 0xffffff);
                if (len > 0)
                    CHECK_EQ((unsigned char)out[0], want >> 24);
                if (len > 1)
                    CHECK(memcmp(out + 1, big + 1, len - 1) == 0);
            }
        }
    }
    while (head < tail) {
        uint32_t want = pending[head++ % 64];
        CHECK_ST(get_bytes(r, out, &len, 0), FM_OK);
        CHECK_EQ(len, want & 0xffffff);
    }
    CHECK_ST(get_bytes(r, out, &len, 0), FM_AGAIN);
    /* the largest record fits into an empty ring wherever the wrap is */
    for (int shift = 0; shift < 16; shift++) {
        CHECK_ST(put_bytes(r, big, (uint32_t)(shift * 40), 0), FM_OK);
        CHECK_ST(get_bytes(r, out, &len, 0), FM_OK);
        CHECK_ST(put_bytes(r, big, (uint32_t)fm_ring_max_record(r), 0), FM_OK);
        CHECK_ST(get_bytes(r, out, &len, 0), FM_OK);
        CHECK_EQ(len, fm_ring_max_record(r));
        CHECK(memcmp(out, big, len) == 0);
    }
    free(r);
}

static void
test_abandon_and_seal(void)
{
    fm_ring *r = new_ring(4096);
    char out[256];
    uint32_t len;
    fm_ring_claim c;
    CHECK_ST(fm_ring_claim_space(r, 10, fmt_pid(), 0, 0, &c), FM_OK);
    memcpy(c.data, "abandoned!", 10);
    CHECK_ST(put_bytes(r, "kept", 4, 0), FM_OK);
    /* the uncommitted record blocks the one behind it (FIFO) */
    CHECK_ST(get_bytes(r, out, &len, 0), FM_AGAIN);
    fm_ring_abandon(r, &c);
    CHECK_ST(get_bytes(r, out, &len, 0), FM_OK);
    CHECK_EQ(len, 4);
    CHECK(memcmp(out, "kept", 4) == 0);

    CHECK_ST(put_bytes(r, "a", 1, 0), FM_OK);
    CHECK_ST(put_bytes(r, "b", 1, 0), FM_OK);
    fm_ring_seal(r, "/fastmp-next");
    CHECK(fm_ring_sealed(r));
    CHECK(strcmp(fm_ring_next_name(r), "/fastmp-next") == 0);
    fm_ring_seal(r, "/fastmp-other");     /* idempotent: the name stays */
    CHECK(strcmp(fm_ring_next_name(r), "/fastmp-next") == 0);
    CHECK_ST(put_bytes(r, "c", 1, 0), FM_BROKEN);
    CHECK_ST(put_bytes(r, "c", 1, fm_deadline_after(1)), FM_BROKEN);
    CHECK_ST(get_bytes(r, out, &len, 0), FM_OK);
    CHECK_EQ(out[0], 'a');
    CHECK_ST(get_bytes(r, out, &len, 0), FM_OK);
    CHECK_EQ(out[0], 'b');
    CHECK_ST(get_bytes(r, out, &len, 0), FM_BROKEN);
    CHECK_ST(get_bytes(r, out, &len, fm_deadline_after(1)), FM_BROKEN);
    free(r);
}

/* A record claimed before the seal is still delivered after it. */
static void
test_seal_with_record_in_flight(void)
{
    fm_ring *r = new_ring(4096);
    fm_ring_claim c;
    char out[16];
    uint32_t len;
    CHECK_ST(fm_ring_claim_space(r, 3, fmt_pid(), 0, 0, &c), FM_OK);
    fm_ring_seal(r, "");
    CHECK_ST(get_bytes(r, out, &len, 0), FM_AGAIN);    /* not BROKEN: one in flight */
    memcpy(c.data, "xyz", 3);
    fm_ring_commit(r, &c);
    CHECK_ST(get_bytes(r, out, &len, 0), FM_OK);
    CHECK(memcmp(out, "xyz", 3) == 0);
    CHECK_ST(get_bytes(r, out, &len, 0), FM_BROKEN);
    free(r);
}

/* ------------------------------------------------------------- threads */

#define TP 4
#define TC 4
#define PER_PRODUCER 100000

typedef struct {
    uint32_t producer;
    uint32_t seq;
    uint32_t sum;       /* of the filler bytes */
} item_head;

static struct {
    fm_ring *r;
    int np, nc;
    int per;
    _Atomic uint64_t sent_sum, recv_sum;
    _Atomic long received;
    _Atomic uint8_t *seen;          /* np * per flags */
    _Atomic long dup, bad;
    _Atomic int producers_done;
    uint32_t last_seq[TP][TC];     /* per consumer: order from each producer */
} hm;

static uint32_t
fill_len(uint32_t producer, uint32_t seq)
{
    uint32_t x = producer * 2654435761u ^ seq * 40503u;
    return (uint32_t)sizeof(item_head) + (x % 97u) * ((x >> 8) % 3u == 0 ? 9u : 1u);
}

static void *
hammer_producer(void *arg)
{
    uint32_t id = (uint32_t)(intptr_t)arg;
    unsigned char buf[2048];
    for (uint32_t s = 0; s < (uint32_t)hm.per; s++) {
        uint32_t len = fill_len(id, s);
        item_head h = {id, s, 0};
        for (uint32_t i = sizeof h; i < len; i++) {
            buf[i] = (unsigned char)(s + i);
            h.sum += buf[i];
        }
        memcpy(buf, &h, sizeof h);
        int st = put_bytes(hm.r, buf, len, FM_FOREVER);
        if (st != FM_OK) {
            atomic_fetch_add(&hm.bad, 1);
            break;
        }
        atomic_fetch_add_explicit(&hm.sent_sum, (uint64_t)id * 1000003u + s, memory_order_relaxed);
    }
    atomic_fetch_add(&hm.producers_done, 1);
    return NULL;
}

static void *
hammer_consumer(void *arg)
{
    int me = (int)(intptr_t)arg;
    unsigned char buf[2048];
    for (int p = 0; p < TP; p++)
        hm.last_seq[p][me] = UINT32_MAX;
    long total = (long)hm.np * hm.per;
    for (;;) {
        if (atomic_load(&hm.received) >= total)
            break;
        uint32_t len;
        int st = get_bytes(hm.r, buf, &len, fm_deadline_after(0.05));
        /* FM_AGAIN: the deadline had passed before the call looked (a
         * thread descheduled that long on a loaded machine) */
        if (st == FM_TIMEOUT || st == FM_AGAIN)
            continue;
        if (st != FM_OK) {
            fprintf(stderr, "consumer %d: %s\n", me, fmt_st(st));
            atomic_fetch_add(&hm.bad, 1);
            break;
        }
        item_head h;
        memcpy(&h, buf, sizeof h);
        uint32_t sum = 0;
        for (uint32_t i = sizeof h; i < len; i++)
            sum += buf[i];
        if (h.producer >= (uint32_t)hm.np || h.seq >= (uint32_t)hm.per ||
            len != fill_len(h.producer, h.seq) || sum != h.sum) {
            fprintf(stderr, "consumer %d: corrupt record\n", me);
            atomic_fetch_add(&hm.bad, 1);
            continue;
        }
        /* one consumer sees each producer's items in order */
        uint32_t last = hm.last_seq[h.producer][me];
        if (last != UINT32_MAX && h.seq <= last) {
            fprintf(stderr, "consumer %d: producer %u seq %u after %u\n", me, h.producer, h.seq,
                    last);
            atomic_fetch_add(&hm.bad, 1);
        }
        hm.last_seq[h.producer][me] = h.seq;
        if (atomic_exchange(&hm.seen[h.producer * (uint32_t)hm.per + h.seq], 1))
            atomic_fetch_add(&hm.dup, 1);
        atomic_fetch_add_explicit(&hm.recv_sum, (uint64_t)h.producer * 1000003u + h.seq,
                                  memory_order_relaxed);
        atomic_fetch_add(&hm.received, 1);
    }
    return NULL;
}

static void
hammer(int np, int nc, size_t cap, int per)
{
    hm.r = new_ring(cap);
    hm.np = np;
    hm.nc = nc;
    hm.per = per;
    atomic_store(&hm.sent_sum, 0);
    atomic_store(&hm.recv_sum, 0);
    atomic_store(&hm.received, 0);
    atomic_store(&hm.dup, 0);
    atomic_store(&hm.bad, 0);
    atomic_store(&hm.producers_done, 0);
    hm.seen = calloc((size_t)np * (size_t)per, 1);
    pthread_t pt[TP], ct[TC];
    int64_t t0 = fm_now_ns();
    for (int i = 0; i < nc; i++)
        pthread_create(&ct[i], NULL, hammer_consumer, (void *)(intptr_t)i);
    for (int i = 0; i < np; i++)
        pthread_create(&pt[i], NULL, hammer_producer, (void *)(intptr_t)i);
    for (int i = 0; i < np; i++)
        pthread_join(pt[i], NULL);
    for (int i = 0; i < nc; i++)
        pthread_join(ct[i], NULL);
    double el = fmt_secs_since(t0);
    CHECK_EQ(atomic_load(&hm.bad), 0);
    CHECK_EQ(atomic_load(&hm.dup), 0);
    CHECK_EQ(atomic_load(&hm.received), (long)np * per);
    CHECK_EQ(atomic_load(&hm.sent_sum), atomic_load(&hm.recv_sum));
    long missing = 0;
    for (long i = 0; i < (long)np * per; i++)
        missing += !atomic_load(&hm.seen[i]);
    CHECK_EQ(missing, 0);
    CHECK_EQ(fm_ring_ready_count(hm.r), 0);
    fmt_note("%dP x %dC, ring %zu B: %ld items in %.2fs (%.0f items/s)", np, nc, cap,
             (long)np * per, el, (double)np * per / el);
    free(hm.seen);
    free(hm.r);
}

#ifdef __SANITIZE_THREAD__
#define PER_SCALE 10
#else
#define PER_SCALE 1
#endif

static void test_threads_1p1c(void) { hammer(1, 1, 4096, PER_PRODUCER / PER_SCALE); }
static void test_threads_4p1c(void) { hammer(4, 1, 8192, PER_PRODUCER / 2 / PER_SCALE); }
static void test_threads_1p4c(void) { hammer(1, 4, 8192, PER_PRODUCER / PER_SCALE); }
static void test_threads_4p4c_small_ring(void) { hammer(4, 4, 4096, PER_PRODUCER / 2 / PER_SCALE); }
static void test_threads_4p4c_big_ring(void) { hammer(4, 4, 1 << 20, PER_PRODUCER / 2 / PER_SCALE); }

/* Producers block on a full ring, consumers on an empty one, with spinning
 * off: every hand-off goes through the futex. */
static void
test_threads_no_spin(void)
{
    int64_t saved = atomic_load(&fm_spin_ns);
    atomic_store(&fm_spin_ns, 0);
    hammer(2, 2, 4096, 20000 / PER_SCALE);
    atomic_store(&fm_spin_ns, saved);
}

/* ------------------------------------------------------------- wake-ups */

static struct {
    fm_ring *r;
    _Atomic int64_t sent_at;
    double lat[FMT_WAKE_ROUNDS];
    _Atomic int round_done;
} wk;

static void *
wake_consumer(void *arg)
{
    (void)arg;
    char buf[64];
    for (int i = 0; i < FMT_WAKE_ROUNDS; i++) {
        uint32_t len;
        int st = get_bytes(wk.r, buf, &len, fm_deadline_after(5));
        CHECK_ST(st, FM_OK);
        wk.lat[i] = (double)(fm_now_ns() - atomic_load(&wk.sent_at)) / 1e9;
        atomic_store(&wk.round_done, i + 1);
    }
    return NULL;
}

static void
test_wake_consumer_latency(void)
{
    wk.r = new_ring(4096);
    atomic_store(&wk.round_done, 0);
    pthread_t th;
    pthread_create(&th, NULL, wake_consumer, NULL);
    for (int i = 0; i < FMT_WAKE_ROUNDS; i++) {
        fmt_sleep_ms(5);        /* the consumer is asleep by now */
        atomic_store(&wk.sent_at, fm_now_ns());
        CHECK_ST(put_bytes(wk.r, "x", 1, 0), FM_OK);
        while (atomic_load(&wk.round_done) <= i)
            fmt_sleep_ms(1);
    }
    pthread_join(th, NULL);
    double med = fmt_median(wk.lat, FMT_WAKE_ROUNDS);
    CHECK_MSG(med < FMT_WAKE_MEDIAN_MAX, "median wake-up %.4fs", med);
    fmt_note("median consumer wake-up %.1f us", med * 1e6);
    free(wk.r);
}

static void *
wake_producer(void *arg)
{
    (void)arg;
    char big[1000] = {0};
    for (int i = 0; i < FMT_WAKE_ROUNDS; i++) {
        CHECK_ST(put_bytes(wk.r, big, sizeof big, fm_deadline_after(5)), FM_OK);
        wk.lat[i] = (double)(fm_now_ns() - atomic_load(&wk.sent_at)) / 1e9;
        atomic_store(&wk.round_done, i + 1);
    }
    return NULL;
}

static void
test_wake_producer_latency(void)
{
    wk.r = new_ring(4096);
    char big[1000] = {0}, out[1024];
    uint32_t len;
    while (put_bytes(wk.r, big, sizeof big, 0) == FM_OK)
        ;
    atomic_store(&wk.round_done, 0);
    pthread_t th;
    pthread_create(&th, NULL, wake_producer, NULL);
    for (int i = 0; i < FMT_WAKE_ROUNDS; i++) {
        fmt_sleep_ms(5);
        atomic_store(&wk.sent_at, fm_now_ns());
        CHECK_ST(get_bytes(wk.r, out, &len, 0), FM_OK);
        while (atomic_load(&wk.round_done) <= i)
            fmt_sleep_ms(1);
    }
    pthread_join(th, NULL);
    double med = fmt_median(wk.lat, FMT_WAKE_ROUNDS);
    CHECK_MSG(med < FMT_WAKE_MEDIAN_MAX, "median wake-up %.4fs", med);
    fmt_note("median producer wake-up %.1f us", med * 1e6);
    free(wk.r);
}

/* Sealing wakes a blocked consumer, which then sees FM_BROKEN. */
static void *
seal_waiter(void *arg)
{
    char buf[16];
    uint32_t len;
    *(int *)arg = get_bytes(wk.r, buf, &len, fm_deadline_after(5));
    return NULL;
}

static void
test_seal_wakes(void)
{
    wk.r = new_ring(4096);
    int st = -1;
    pthread_t th;
    pthread_create(&th, NULL, seal_waiter, &st);
    fmt_sleep_ms(30);
    int64_t t0 = fm_now_ns();
    fm_ring_seal(wk.r, "");
    pthread_join(th, NULL);
    CHECK_ST(st, FM_BROKEN);
    CHECK(fmt_secs_since(t0) < 0.04);
    free(wk.r);
}

/* A signal interrupts a wait: FM_EINTR comes back (a Python caller then
 * runs its handlers). */
static void
on_usr1(int sig)
{
    (void)sig;
}

static void *
eintr_waiter(void *arg)
{
    fm_ring_read rd;
    int64_t t0 = fm_now_ns();
    int st = fm_ring_take(wk.r, fmt_pid(), fm_deadline_after(10), 0, &rd);
    double el = fmt_secs_since(t0);
    *(int *)arg = st;
    CHECK_MSG(el < 0.04, "returned after %.3fs", el);
    return NULL;
}

static void
test_signal_interrupts_wait(void)
{
    wk.r = new_ring(4096);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    int st = -1;
    pthread_t th;
    pthread_create(&th, NULL, eintr_waiter, &st);
    CHECK(fmt_await_u32((_Atomic uint32_t *)((char *)wk.r + 4 * 64 + 4), 1, 5));
    pthread_kill(th, SIGUSR1);
    pthread_join(th, NULL);
    CHECK_ST(st, FM_EINTR);
    free(wk.r);
}

/* -------------------------------------------------------------- processes */

#define NPROC 3
#define PROC_ITEMS 30000

static fm_ring *
segment_ring(size_t cap, fm_segment **segp)
{
    fm_segment *seg;
    CHECK_ST(fm_segment_create(fm_ring_bytes(cap), &seg), FM_OK);
    fmt_track(seg->name);
    CHECK_ST(fm_ring_init(seg->base, cap), FM_OK);
    *segp = seg;
    return (fm_ring *)seg->base;
}

static void
test_processes_fork(void)
{
    fm_segment *seg;
    fm_ring *r = segment_ring(8192, &seg);
    pid_t kids[NPROC];
    for (int k = 0; k < NPROC; k++) {
        kids[k] = fmt_fork();
        if (kids[k] == 0) {
            /* attach by name, as another program would */
            fm_segment *s2;
            if (fm_segment_attach(seg->name, &s2) != FM_OK ||
                fm_ring_check(s2->base, s2->size) != FM_OK)
                _exit(10);
            fm_ring *r2 = (fm_ring *)s2->base;
            for (uint32_t i = 0; i < PROC_ITEMS; i++) {
                uint32_t v[3] = {(uint32_t)k, i, (uint32_t)k * 7919u + i * 31u};
                if (put_bytes(r2, v, sizeof v, fm_deadline_after(20)) != FM_OK)
                    _exit(11);
            }
            _exit(0);
        }
    }
    uint32_t next[NPROC] = {0};
    long got = 0, bad = 0;
    uint64_t sum = 0, want = 0;
    while (got < (long)NPROC * PROC_ITEMS) {
        uint32_t v[8], len;
        int st = get_bytes(r, v, &len, fm_deadline_after(20));
        if (st != FM_OK) {
            CHECK_ST(st, FM_OK);
            break;
        }
        if (len != 12 || v[0] >= NPROC || v[1] != next[v[0]] ||
            v[2] != v[0] * 7919u + v[1] * 31u)
            bad++;
        else
            next[v[0]]++;
        sum += v[2];
        got++;
    }
    for (int k = 0; k < NPROC; k++) {
        CHECK_EQ(fmt_reap(kids[k]), 0);
        for (uint32_t i = 0; i < PROC_ITEMS; i++)
            want += (uint64_t)k * 7919u + i * 31u;
    }
    CHECK_EQ(bad, 0);
    CHECK_EQ(got, (long)NPROC * PROC_ITEMS);
    CHECK_EQ(sum, want);
    uint32_t len;
    char buf[16];
    CHECK_ST(get_bytes(r, buf, &len, 0), FM_AGAIN);
}

/* A writer killed in the middle of a record: the consumer skips it (once a
 * wait slice has passed) and gets the records committed behind it. */
static void
test_writer_killed_mid_record(void)
{
    fm_segment *seg;
    fm_ring *r = segment_ring(4096, &seg);
    _Atomic uint32_t *flag = fmt_shared_page(4096);
    CHECK_ST(put_bytes(r, "before", 6, 0), FM_OK);
    pid_t kid = fmt_fork();
    if (kid == 0) {
        fm_refresh_pid();
        fm_ring_claim c;
        if (fm_ring_claim_space(r, 500, fmt_pid(), 0, 0, &c) != FM_OK)
            _exit(10);
        memset(c.data, 0xee, 200);      /* half written */
        atomic_store(flag, 1);
        for (;;)
            pause();
    }
    CHECK(fmt_await_u32(flag, 1, 5));
    CHECK_ST(put_bytes(r, "after", 5, 0), FM_OK);
    char out[600];
    uint32_t len;
    CHECK_ST(get_bytes(r, out, &len, 0), FM_OK);
    CHECK(len == 6 && memcmp(out, "before", 6) == 0);
    /* the writer lives: its record holds up the queue (FIFO) */
    CHECK_ST(get_bytes(r, out, &len, fm_deadline_after(0.12)), FM_TIMEOUT);
    kill(kid, SIGKILL);
    fmt_wait_zombie(kid);       /* a zombie counts as dead */
    int64_t t0 = fm_now_ns();
    CHECK_ST(get_bytes(r, out, &len, fm_deadline_after(5)), FM_OK);
    CHECK(len == 5 && memcmp(out, "after", 5) == 0);
    CHECK_MSG(fmt_secs_since(t0) < 1.0, "recovered after %.3fs", fmt_secs_since(t0));
    CHECK_EQ(fmt_reap(kid), 128 + SIGKILL);
    CHECK_ST(get_bytes(r, out, &len, 0), FM_AGAIN);
    /* the dead record's space is reclaimed: the ring fills completely again */
    int n = 0;
    while (put_bytes(r, out, 100, 0) == FM_OK)
        n++;
    /* 36 from the start of the data; one less where the wrap needs a pad */
    CHECK_MSG(n == 4096 / 112 || n == 4096 / 112 - 1, "%d records fit", n);
    munmap(flag, 4096);
}

/* A reader killed holding a record: a producer waiting for space steps
 * over it after a wait slice. */
static void
test_reader_killed_holding_record(void)
{
    fm_segment *seg;
    fm_ring *r = segment_ring(4096, &seg);
    _Atomic uint32_t *flag = fmt_shared_page(4096);
    char big[1000] = {0};
    int n = 0;
    while (put_bytes(r, big, sizeof big, 0) == FM_OK)
        n++;
    CHECK_EQ(n, 4);
    pid_t kid = fmt_fork();
    if (kid == 0) {
        fm_refresh_pid();
        fm_ring_read rd;
        if (fm_ring_take(r, fmt_pid(), 0, 0, &rd) != FM_OK)
            _exit(10);
        atomic_store(flag, 1);
        for (;;)
            pause();
    }
    CHECK(fmt_await_u32(flag, 1, 5));
    /* the reader lives: no room */
    CHECK_ST(put_bytes(r, big, sizeof big, fm_deadline_after(0.12)), FM_TIMEOUT);
    kill(kid, SIGKILL);
    CHECK_EQ(fmt_reap(kid), 128 + SIGKILL);
    int64_t t0 = fm_now_ns();
    CHECK_ST(put_bytes(r, big, sizeof big, fm_deadline_after(5)), FM_OK);
    CHECK_MSG(fmt_secs_since(t0) < 1.0, "recovered after %.3fs", fmt_secs_since(t0));
    char out[1024];
    uint32_t len;
    for (int i = 0; i < 4; i++)
        CHECK_ST(get_bytes(r, out, &len, 0), FM_OK);
    CHECK_ST(get_bytes(r, out, &len, 0), FM_AGAIN);
    munmap(flag, 4096);
}

/* Consumers in other processes, producers in this one: each item once. */
static void
test_processes_consumers(void)
{
    fm_segment *seg;
    fm_ring *r = segment_ring(4096, &seg);
    uint64_t *res = fmt_shared_page(4096);     /* per child: count, sum */
    int items = 40000;
    pid_t kids[NPROC];
    for (int k = 0; k < NPROC; k++) {
        kids[k] = fmt_fork();
        if (kids[k] == 0) {
            fm_refresh_pid();
            uint64_t cnt = 0, sum = 0;
            for (;;) {
                uint32_t v, len;
                if (get_bytes(r, &v, &len, fm_deadline_after(20)) != FM_OK)
                    _exit(10);
                if (v == UINT32_MAX)
                    break;
                cnt++;
                sum += v;
            }
            res[2 * k] = cnt;
            res[2 * k + 1] = sum;
            _exit(0);
        }
    }
    uint64_t want = 0;
    for (uint32_t i = 0; i < (uint32_t)items; i++) {
        CHECK_ST(put_bytes(r, &i, 4, fm_deadline_after(20)), FM_OK);
        want += i;
    }
    for (int k = 0; k < NPROC; k++) {
        uint32_t stop = UINT32_MAX;
        CHECK_ST(put_bytes(r, &stop, 4, fm_deadline_after(20)), FM_OK);
    }
    uint64_t cnt = 0, sum = 0;
    for (int k = 0; k < NPROC; k++) {
        CHECK_EQ(fmt_reap(kids[k]), 0);
        cnt += res[2 * k];
        sum += res[2 * k + 1];
    }
    CHECK_EQ(cnt, (uint64_t)items);
    CHECK_EQ(sum, want);
    munmap(res, 4096);
}

int
main(void)
{
    fmt_start();
    RUN(test_init_check);
    RUN(test_fifo_and_empty);
    RUN(test_full_sizes_wrap);
    RUN(test_abandon_and_seal);
    RUN(test_seal_with_record_in_flight);
    RUN(test_threads_1p1c);
    RUN(test_threads_4p1c);
    RUN(test_threads_1p4c);
    RUN(test_threads_4p4c_small_ring);
    RUN(test_threads_4p4c_big_ring);
    RUN(test_threads_no_spin);
    RUN(test_wake_consumer_latency);
    RUN(test_wake_producer_latency);
    RUN(test_seal_wakes);
    RUN(test_signal_interrupts_wait);
    RUN(test_processes_fork);
    RUN(test_writer_killed_mid_record);
    RUN(test_reader_killed_holding_record);
    RUN(test_processes_consumers);
    return fmt_finish();
}
