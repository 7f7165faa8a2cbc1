/* test_seq.c: fm_seq, "wait until it changes": bump_all wakes every waiter;
 * a barrier built on it runs many generations without a lost wake-up. */
#include <sched.h>

#include "check.h"

static void
test_read_wait_timeout(void)
{
    fm_seq q;
    fm_seq_init(&q);
    CHECK_EQ(fm_seq_read(&q), 0);
    /* already changed: at once */
    int64_t t0 = fm_now_ns();
    CHECK_ST(fm_seq_wait(&q, 5, fm_deadline_after(5), 0), FM_OK);
    CHECK_ST(fm_seq_wait(&q, 5, fm_deadline_after(0), atomic_load(&fm_spin_ns)), FM_OK);
    CHECK_ST(fm_seq_wait(&q, 0, fm_deadline_after(0), atomic_load(&fm_spin_ns)), FM_TIMEOUT);
    CHECK(fmt_secs_since(t0) < 0.05);
    for (int pass = 0; pass < 2; pass++) {
        t0 = fm_now_ns();
        int st = fmt_seq_wait(&q, 0, fm_deadline_after(0.1), pass ? atomic_load(&fm_spin_ns) : 0);
        double el = fmt_secs_since(t0);
        CHECK_ST(st, FM_TIMEOUT);
        CHECK_MSG(el >= 0.1 && el < 1.0, "elapsed %.3fs", el);
    }
    fm_seq_bump_all(&q);
    CHECK_EQ(fm_seq_read(&q), 1);
    CHECK_ST(fm_seq_wait(&q, 0, fm_deadline_after(0), 0), FM_OK);
    fm_seq_bump_all(&q);
    CHECK_EQ(fm_seq_read(&q), 2);
    CHECK_EQ(atomic_load(&q.sleepers), 0);
    /* wraps around */
    atomic_store(&q.seq, UINT32_MAX);
    fm_seq_bump_all(&q);
    CHECK_EQ(fm_seq_read(&q), 0);
    CHECK_ST(fm_seq_wait(&q, UINT32_MAX, fm_deadline_after(0), 0), FM_OK);
}

#define NW 6

static struct {
    fm_seq q;
    uint32_t seen;
    int64_t spin;
    _Atomic uint32_t started;
    int st[NW];
    double el[NW];
    double lat[NW];         /* from the bump */
    _Atomic int64_t bump_at;
} sq;

static void *
seq_waiter(void *arg)
{
    int i = (int)(intptr_t)arg;
    atomic_fetch_add(&sq.started, 1);
    int64_t t0 = fm_now_ns();
    sq.st[i] = fmt_seq_wait(&sq.q, sq.seen, fm_deadline_after(5), sq.spin);
    sq.el[i] = fmt_secs_since(t0);
    sq.lat[i] = (double)(fm_now_ns() - atomic_load(&sq.bump_at)) / 1e9;
    return NULL;
}

static void
bump_wakes_all(int64_t spin)
{
    fm_seq_init(&sq.q);
    fm_seq_bump_all(&sq.q);
    sq.seen = fm_seq_read(&sq.q);
    sq.spin = spin;
    atomic_store(&sq.started, 0);
    pthread_t th[NW];
    for (int i = 0; i < NW; i++)
        pthread_create(&th[i], NULL, seq_waiter, (void *)(intptr_t)i);
    if (spin == 0)
        CHECK(fmt_await_u32(&sq.q.sleepers, NW, 5));    /* all asleep */
    else
        CHECK(fmt_await_u32(&sq.started, NW, 5));
    fmt_sleep_ms(2);
    atomic_store(&sq.bump_at, fm_now_ns());
    fm_seq_bump_all(&sq.q);
    for (int i = 0; i < NW; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < NW; i++) {
        CHECK_ST(sq.st[i], FM_OK);
        CHECK_MSG(sq.el[i] < 1.0, "waiter %d woke after %.3fs", i, sq.el[i]);
    }
    /* all woken by the bump, not by the end of their slices */
    double med = fmt_median(sq.lat, NW);
    CHECK_MSG(med < FMT_WAKE_MEDIAN_MAX, "median wake-up latency %.1f ms", med * 1e3);
    CHECK_EQ(fm_seq_read(&sq.q), sq.seen + 1);
    CHECK_EQ(atomic_load(&sq.q.sleepers), 0);
}

static void test_bump_wakes_all_sleepers(void) { bump_wakes_all(0); }
static void test_bump_wakes_all_spinners(void) { bump_wakes_all(2 * NS_PER_S); }

static void
test_bump_wakes_all_processes(void)
{
    fm_seq *q = fmt_shared_page(4096);
    fm_seq_init(q);
    uint32_t seen = fm_seq_read(q);
    pid_t kids[4];
    for (int i = 0; i < 4; i++) {
        kids[i] = fmt_fork();
        if (kids[i] == 0) {
            int st = fmt_seq_wait(q, seen, fm_deadline_after(5), i == 0 ? fm_spin_ns : 0);
            _exit(st == FM_OK ? 0 : 10 + st);
        }
    }
    CHECK(fmt_await_u32(&q->sleepers, 4, 5));
    int64_t t0 = fm_now_ns();
    fm_seq_bump_all(q);
    for (int i = 0; i < 4; i++)
        CHECK_EQ(fmt_reap(kids[i]), 0);
    CHECK(fmt_secs_since(t0) < 1.0);
    munmap(q, 4096);
}

/* ---- a barrier: count arrivals under a mutex; the last one bumps ---- */

#define BT 4
#define ROUNDS 3000

static struct {
    fm_mutex m;
    fm_seq gen;
    int arrived;
    long passes[BT];
    _Atomic long timeouts, bad;
    int64_t spin;
} bar;

static void
barrier_wait(void)
{
    uint32_t me = fmt_pid();
    if (fmt_mutex_lock(&bar.m, me, FM_FOREVER, bar.spin) != FM_OK)
        atomic_fetch_add(&bar.bad, 1);
    uint32_t seen = fm_seq_read(&bar.gen);
    if (++bar.arrived == BT) {
        bar.arrived = 0;
        fm_seq_bump_all(&bar.gen);
        fm_mutex_unlock(&bar.m);
        return;
    }
    fm_mutex_unlock(&bar.m);
    int st = fmt_seq_wait(&bar.gen, seen, fm_deadline_after(10), bar.spin);
    if (st == FM_TIMEOUT)
        atomic_fetch_add(&bar.timeouts, 1);
    else if (st != FM_OK)
        atomic_fetch_add(&bar.bad, 1);
}

static void *
barrier_thread(void *arg)
{
    int i = (int)(intptr_t)arg;
    for (int r = 0; r < ROUNDS; r++) {
        barrier_wait();
        bar.passes[i]++;
    }
    return NULL;
}

static void
barrier_rounds(int64_t spin)
{
    fm_mutex_init(&bar.m);
    fm_seq_init(&bar.gen);
    bar.arrived = 0;
    bar.spin = spin;
    atomic_store(&bar.timeouts, 0);
    atomic_store(&bar.bad, 0);
    pthread_t th[BT];
    for (int i = 0; i < BT; i++) {
        bar.passes[i] = 0;
        pthread_create(&th[i], NULL, barrier_thread, (void *)(intptr_t)i);
    }
    for (int i = 0; i < BT; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < BT; i++)
        CHECK_EQ(bar.passes[i], ROUNDS);
    CHECK_EQ(fm_seq_read(&bar.gen), ROUNDS);
    CHECK_EQ(atomic_load(&bar.timeouts), 0);
    CHECK_EQ(atomic_load(&bar.bad), 0);
    CHECK_EQ(atomic_load(&bar.gen.sleepers), 0);
}

static void test_barrier_spin(void) { barrier_rounds(atomic_load(&fm_spin_ns)); }
static void test_barrier_nospin(void) { barrier_rounds(0); }

/* A sleeper is woken by the bump itself, not by the end of its slice. */
static struct {
    fm_seq q;
    _Atomic int64_t bump_at;
    int st;
    double lat;
} lq;

static void *
latency_waiter(void *arg)
{
    (void)arg;
    lq.st = fmt_seq_wait(&lq.q, 0, fm_deadline_after(5), 0);
    lq.lat = (double)(fm_now_ns() - atomic_load(&lq.bump_at)) / 1e9;
    return NULL;
}

static void
test_wake_latency(void)
{
    double lat[FMT_WAKE_ROUNDS];
    int bad = 0;
    for (int r = 0; r < FMT_WAKE_ROUNDS; r++) {
        fm_seq_init(&lq.q);
        pthread_t th;
        pthread_create(&th, NULL, latency_waiter, NULL);
        bad += !fmt_await_u32(&lq.q.sleepers, 1, 5);
        fmt_sleep_ms(2);
        atomic_store(&lq.bump_at, fm_now_ns());
        fm_seq_bump_all(&lq.q);
        pthread_join(th, NULL);
        bad += lq.st != FM_OK;
        lat[r] = lq.lat;
    }
    CHECK_EQ(bad, 0);
    double med = fmt_median(lat, FMT_WAKE_ROUNDS);
    CHECK_MSG(med < FMT_WAKE_MEDIAN_MAX, "median wake-up latency %.1f ms", med * 1e3);
    fmt_note("wake-up latency: median %.3f ms, max %.3f ms", med * 1e3,
             lat[FMT_WAKE_ROUNDS - 1] * 1e3);
}

int
main(void)
{
    fmt_start();
    printf("test_seq\n");
    RUN(test_read_wait_timeout);
    RUN(test_bump_wakes_all_sleepers);
    RUN(test_bump_wakes_all_spinners);
    RUN(test_wake_latency);
    RUN(test_bump_wakes_all_processes);
    RUN(test_barrier_spin);
    RUN(test_barrier_nospin);
    return fmt_finish();
}
