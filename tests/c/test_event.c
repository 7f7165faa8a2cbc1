/* test_event.c: fm_event set/clear/wait, spinning and sleeping, across
 * threads and processes. */
#include "check.h"

static void
test_set_clear(void)
{
    fm_event e;
    fm_event_init(&e);
    CHECK_EQ(fm_event_is_set(&e), 0);
    fm_event_set(&e);
    CHECK_EQ(fm_event_is_set(&e), 1);
    fm_event_set(&e);
    CHECK_EQ(fm_event_is_set(&e), 1);
    fm_event_clear(&e);
    CHECK_EQ(fm_event_is_set(&e), 0);
    fm_event_clear(&e);
    CHECK_EQ(fm_event_is_set(&e), 0);
    CHECK_EQ(atomic_load(&e.sleepers), 0);
}

static void
test_wait_set_and_timeout(void)
{
    fm_event e;
    fm_event_init(&e);
    int64_t spin = atomic_load(&fm_spin_ns);
    /* not set: a passed deadline returns at once, with or without spin */
    int64_t t0 = fm_now_ns();
    CHECK_ST(fm_event_wait(&e, fm_deadline_after(0), 0), FM_TIMEOUT);
    CHECK_ST(fm_event_wait(&e, fm_deadline_after(0), spin), FM_TIMEOUT);
    CHECK(fmt_secs_since(t0) < 0.05);
    /* not set: 0.1 s, both paths */
    for (int pass = 0; pass < 2; pass++) {
        t0 = fm_now_ns();
        int st = fmt_event_wait(&e, fm_deadline_after(0.1), pass ? spin : 0);
        double el = fmt_secs_since(t0);
        CHECK_ST(st, FM_TIMEOUT);
        CHECK_MSG(el >= 0.1 && el < 1.0, "pass %d: elapsed %.3fs", pass, el);
    }
    /* set: at once, even with a passed deadline */
    fm_event_set(&e);
    t0 = fm_now_ns();
    CHECK_ST(fm_event_wait(&e, fm_deadline_after(0), 0), FM_OK);
    CHECK_ST(fm_event_wait(&e, fm_deadline_after(0), spin), FM_OK);
    CHECK_ST(fm_event_wait(&e, fm_deadline_after(5), 0), FM_OK);
    CHECK_ST(fm_event_wait(&e, FM_FOREVER, spin), FM_OK);
    CHECK(fmt_secs_since(t0) < 0.05);
    /* cleared again: waits again */
    fm_event_clear(&e);
    CHECK_ST(fmt_event_wait(&e, fm_deadline_after(0.06), 0), FM_TIMEOUT);
    CHECK_EQ(atomic_load(&e.sleepers), 0);
}

/* ---- wake-up paths ---- */

static struct {
    fm_event e;
    _Atomic uint32_t started;
    _Atomic uint32_t returned;
    int64_t spin;
    int st[8];
    double el[8];
    double lat[8];          /* from the set */
    _Atomic int64_t set_at;
} ev;

static void *
event_waiter(void *arg)
{
    int i = (int)(intptr_t)arg;
    atomic_fetch_add(&ev.started, 1);
    int64_t t0 = fm_now_ns();
    ev.st[i] = fmt_event_wait(&ev.e, fm_deadline_after(5), ev.spin);
    ev.el[i] = fmt_secs_since(t0);
    ev.lat[i] = (double)(fm_now_ns() - atomic_load(&ev.set_at)) / 1e9;
    atomic_fetch_add(&ev.returned, 1);
    return NULL;
}

/* Sleep path (spin 0): the setter waits until n waiters sleep in the
 * kernel (sleepers == n), then sets: all wake. */
static void
sleeping_waiters(int n)
{
    fm_event_init(&ev.e);
    atomic_store(&ev.started, 0);
    atomic_store(&ev.returned, 0);
    ev.spin = 0;
    pthread_t th[8];
    for (int i = 0; i < n; i++)
        pthread_create(&th[i], NULL, event_waiter, (void *)(intptr_t)i);
    CHECK(fmt_await_u32(&ev.e.sleepers, (uint32_t)n, 5));
    fmt_sleep_ms(2);
    CHECK_EQ(atomic_load(&ev.returned), 0);
    atomic_store(&ev.set_at, fm_now_ns());
    fm_event_set(&ev.e);
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < n; i++) {
        CHECK_ST(ev.st[i], FM_OK);
        CHECK_MSG(ev.el[i] < 1.0, "waiter %d woke after %.3fs", i, ev.el[i]);
    }
    /* all woken by the set, not by the end of their slices */
    double med = fmt_median(ev.lat, n);
    CHECK_MSG(med < FMT_WAKE_MEDIAN_MAX, "median wake-up latency %.1f ms", med * 1e3);
    CHECK_EQ(atomic_load(&ev.e.sleepers), 0);
}

static void test_wake_one_sleeper(void) { sleeping_waiters(1); }
static void test_wake_all_sleepers(void) { sleeping_waiters(6); }

/* Spin path: a 2 s spin budget, set after 20 ms: the waiter sees it while
 * spinning, without ever counting itself as a sleeper. */
static void
test_wake_spinner(void)
{
    fm_event_init(&ev.e);
    atomic_store(&ev.started, 0);
    atomic_store(&ev.returned, 0);
    ev.spin = 2 * NS_PER_S;
    pthread_t th;
    pthread_create(&th, NULL, event_waiter, (void *)(intptr_t)0);
    CHECK(fmt_await_u32(&ev.started, 1, 5));
    fmt_sleep_ms(20);
    uint32_t sleepers = atomic_load(&ev.e.sleepers);
    fm_event_set(&ev.e);
    pthread_join(th, NULL);
    CHECK_EQ(sleepers, 0);
    CHECK_ST(ev.st[0], FM_OK);
    CHECK_MSG(ev.el[0] < 1.0, "spinner saw it after %.3fs", ev.el[0]);
}

/* Across processes: a forked child sets the event the parent sleeps on,
 * and the other way round. */
static void
test_cross_process(void)
{
    struct {
        fm_event e, back;
        _Atomic uint32_t ready;
    } *sh = fmt_shared_page(4096);
    fm_event_init(&sh->e);
    fm_event_init(&sh->back);
    pid_t pid = fmt_fork();
    if (pid == 0) {
        fmt_sleep_ms(100);
        fm_event_set(&sh->e);
        /* then wait for the parent's answer */
        int st = fmt_event_wait(&sh->back, fm_deadline_after(5), 0);
        _exit(st == FM_OK ? 0 : 10 + st);
    }
    int64_t t0 = fm_now_ns();
    int st = fmt_event_wait(&sh->e, fm_deadline_after(5), 0);
    double el = fmt_secs_since(t0);
    CHECK_ST(st, FM_OK);
    CHECK_MSG(el >= 0.05 && el < 1.0, "woke after %.3fs", el);
    CHECK(fmt_await_u32(&sh->back.sleepers, 1, 5));    /* the child sleeps */
    fm_event_set(&sh->back);
    CHECK_EQ(fmt_reap(pid), 0);

    /* several children asleep on one event, one set wakes them all */
    fm_event_init(&sh->e);
    pid_t kids[3];
    for (int i = 0; i < 3; i++) {
        kids[i] = fmt_fork();
        if (kids[i] == 0) {
            int st = fmt_event_wait(&sh->e, fm_deadline_after(5), i == 0 ? fm_spin_ns : 0);
            _exit(st == FM_OK ? 0 : 10 + st);
        }
    }
    CHECK(fmt_await_u32(&sh->e.sleepers, 3, 5));
    t0 = fm_now_ns();
    fm_event_set(&sh->e);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(fmt_reap(kids[i]), 0);
    CHECK(fmt_secs_since(t0) < 1.0);
    munmap(sh, 4096);
}

/* set/clear storms: waiters with short deadlines never hang and return
 * only FM_OK or FM_TIMEOUT; after the final set every one returns OK. */
static struct {
    fm_event e;
    _Atomic uint32_t stop;
    _Atomic long bad, ok;
} storm;

static void *
storm_waiter(void *arg)
{
    int64_t spin = arg ? atomic_load(&fm_spin_ns) : 0;
    while (!atomic_load(&storm.stop)) {
        int st = fmt_event_wait(&storm.e, fm_deadline_after(0.01), spin);
        if (st == FM_OK)
            atomic_fetch_add(&storm.ok, 1);
        else if (st != FM_TIMEOUT)
            atomic_fetch_add(&storm.bad, 1);
    }
    /* the event is set for good now */
    if (fmt_event_wait(&storm.e, fm_deadline_after(2), spin) != FM_OK)
        atomic_fetch_add(&storm.bad, 1);
    return NULL;
}

static void
test_set_clear_storm(void)
{
    fm_event_init(&storm.e);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, storm_waiter, (void *)(intptr_t)(i & 1));
    int64_t end = fm_deadline_after(0.3);
    while (fm_now_ns() < end) {
        fm_event_set(&storm.e);
        fm_event_clear(&storm.e);
        if ((fm_now_ns() / 1000) % 7 == 0)
            fmt_sleep_ms(1);
    }
    fm_event_set(&storm.e);
    atomic_store(&storm.stop, 1);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ(atomic_load(&storm.bad), 0);
    CHECK_EQ(atomic_load(&storm.e.sleepers), 0);
    fmt_note("%ld waits saw the event set", atomic_load(&storm.ok));
}

/* A sleeper is woken by the set itself, not by the end of its slice. */
static struct {
    fm_event e;
    _Atomic int64_t set_at;
    int st;
    double lat;
} le;

static void *
latency_waiter(void *arg)
{
    (void)arg;
    le.st = fmt_event_wait(&le.e, fm_deadline_after(5), 0);
    le.lat = (double)(fm_now_ns() - atomic_load(&le.set_at)) / 1e9;
    return NULL;
}

static void
test_wake_latency(void)
{
    double lat[FMT_WAKE_ROUNDS];
    int bad = 0;
    for (int r = 0; r < FMT_WAKE_ROUNDS; r++) {
        fm_event_init(&le.e);
        pthread_t th;
        pthread_create(&th, NULL, latency_waiter, NULL);
        bad += !fmt_await_u32(&le.e.sleepers, 1, 5);
        fmt_sleep_ms(2);
        atomic_store(&le.set_at, fm_now_ns());
        fm_event_set(&le.e);
        pthread_join(th, NULL);
        bad += le.st != FM_OK;
        lat[r] = le.lat;
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
    printf("test_event\n");
    RUN(test_set_clear);
    RUN(test_wait_set_and_timeout);
    RUN(test_wake_one_sleeper);
    RUN(test_wake_all_sleepers);
    RUN(test_wake_spinner);
    RUN(test_wake_latency);
    RUN(test_cross_process);
    RUN(test_set_clear_storm);
    return fmt_finish();
}
