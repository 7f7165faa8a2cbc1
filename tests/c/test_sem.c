/* test_sem.c: fm_sem counts, bounds, contention and dead holders. */
#include <sched.h>

#include "check.h"

static void
test_init_trywait_post(void)
{
    fm_sem s;
    uint32_t me = fmt_pid();
    fm_sem_init(&s, 3, 5);
    CHECK_EQ(fm_sem_value(&s), 3);
    CHECK_EQ(s.maxvalue, 5);
    CHECK_EQ(s.initial, 3);
    CHECK_ST(fm_sem_trywait(&s, me), FM_OK);
    CHECK_EQ(fm_sem_value(&s), 2);
    CHECK_ST(fm_sem_trywait(&s, me), FM_OK);
    CHECK_ST(fm_sem_trywait(&s, me), FM_OK);
    CHECK_EQ(fm_sem_value(&s), 0);
    CHECK_ST(fm_sem_trywait(&s, me), FM_AGAIN);
    CHECK_EQ(fm_sem_value(&s), 0);
    for (int i = 0; i < 5; i++)
        CHECK_ST(fm_sem_post(&s, me), FM_OK);
    CHECK_EQ(fm_sem_value(&s), 5);
    /* over maxvalue: FM_OVERFLOW, value unchanged */
    CHECK_ST(fm_sem_post(&s, me), FM_OVERFLOW);
    CHECK_EQ(fm_sem_value(&s), 5);
    CHECK_ST(fm_sem_post(&s, me), FM_OVERFLOW);
    CHECK_EQ(fm_sem_value(&s), 5);
    /* a live holder: nothing to recover */
    CHECK_EQ(fm_sem_recover(&s), 0);

    fm_sem_init(&s, 2, 2);      /* bounded, full */
    CHECK_ST(fm_sem_post(&s, me), FM_OVERFLOW);
    CHECK_EQ(fm_sem_value(&s), 2);
    CHECK_ST(fm_sem_trywait(&s, me), FM_OK);
    CHECK_ST(fm_sem_post(&s, me), FM_OK);
    CHECK_ST(fm_sem_post(&s, me), FM_OVERFLOW);
    CHECK_EQ(fm_sem_value(&s), 2);

    fm_sem_init(&s, 0, 1);
    CHECK_EQ(fm_sem_value(&s), 0);
    CHECK_ST(fm_sem_trywait(&s, me), FM_AGAIN);
    CHECK_ST(fm_sem_post(&s, me), FM_OK);
    CHECK_ST(fm_sem_post(&s, me), FM_OVERFLOW);
    CHECK_EQ(fm_sem_value(&s), 1);
}

static void
test_wait_timeout(void)
{
    fm_sem s;
    uint32_t me = fmt_pid();
    fm_sem_init(&s, 1, FM_SEM_VALUE_MAX);
    CHECK_ST(fmt_sem_wait(&s, me, fm_deadline_after(1), atomic_load(&fm_spin_ns)), FM_OK);
    int64_t t0 = fm_now_ns();
    int st = fmt_sem_wait(&s, me, fm_deadline_after(0.1), atomic_load(&fm_spin_ns));
    double el = fmt_secs_since(t0);
    CHECK_ST(st, FM_TIMEOUT);
    CHECK_MSG(el >= 0.1 && el < 1.0, "elapsed %.3fs", el);
    CHECK_EQ(fm_sem_value(&s), 0);
    t0 = fm_now_ns();
    CHECK_ST(fm_sem_wait(&s, me, fm_deadline_after(0), atomic_load(&fm_spin_ns)), FM_TIMEOUT);
    CHECK(fmt_secs_since(t0) < 0.05);
    CHECK_ST(fm_sem_post(&s, me), FM_OK);
    CHECK_ST(fm_sem_wait(&s, me, fm_deadline_after(0), 0), FM_OK);
}

/* ---- producers / consumers ---- */

#define NPROD 4
#define NCONS 4
#define PER 100000

static struct {
    fm_sem s;
    char pad[64];
    fm_sem empty, full;         /* the bounded buffer */
    _Atomic long bad;
    _Atomic uint32_t go;
    int64_t spin;
} pc;

static void
gate(void)
{
    while (!atomic_load(&pc.go))
        sched_yield();
}

static void *
producer(void *arg)
{
    (void)arg;
    uint32_t me = fmt_pid();
    gate();
    for (int i = 0; i < PER; i++)
        if (fm_sem_post(&pc.s, me) != FM_OK)
            atomic_fetch_add(&pc.bad, 1);
    return NULL;
}

static void *
consumer(void *arg)
{
    (void)arg;
    uint32_t me = fmt_pid();
    gate();
    for (int i = 0; i < PER; i++)
        if (fmt_sem_wait(&pc.s, me, fm_deadline_after(20), pc.spin) != FM_OK)
            atomic_fetch_add(&pc.bad, 1);
    return NULL;
}

static void
producers_consumers(int64_t spin)
{
    fm_sem_init(&pc.s, 0, FM_SEM_VALUE_MAX);
    atomic_store(&pc.bad, 0);
    atomic_store(&pc.go, 0);
    pc.spin = spin;
    pthread_t th[NPROD + NCONS];
    for (int i = 0; i < NPROD + NCONS; i++)
        pthread_create(&th[i], NULL, i < NPROD ? producer : consumer, NULL);
    atomic_store(&pc.go, 1);
    for (int i = 0; i < NPROD + NCONS; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ(atomic_load(&pc.bad), 0);
    CHECK_EQ(fm_sem_value(&pc.s), 0);
    CHECK_EQ(atomic_load(&pc.s.sleepers), 0);
}

static void test_producers_consumers_spin(void) { producers_consumers(atomic_load(&fm_spin_ns)); }
static void test_producers_consumers_nospin(void) { producers_consumers(0); }

/* Bounded buffer of 16 slots: "empty" counts free slots, "full" items.  A
 * lost or duplicated unit shows as a post over maxvalue or a stuck wait. */
#define SLOTS 16
#define BB_PER 50000

static void *
bb_producer(void *arg)
{
    (void)arg;
    uint32_t me = fmt_pid();
    gate();
    for (int i = 0; i < BB_PER; i++) {
        if (fmt_sem_wait(&pc.empty, me, fm_deadline_after(20), pc.spin) != FM_OK)
            atomic_fetch_add(&pc.bad, 1);
        if (fm_sem_post(&pc.full, me) != FM_OK)
            atomic_fetch_add(&pc.bad, 1);
    }
    return NULL;
}

static void *
bb_consumer(void *arg)
{
    (void)arg;
    uint32_t me = fmt_pid();
    gate();
    for (int i = 0; i < BB_PER; i++) {
        if (fmt_sem_wait(&pc.full, me, fm_deadline_after(20), pc.spin) != FM_OK)
            atomic_fetch_add(&pc.bad, 1);
        if (fm_sem_post(&pc.empty, me) != FM_OK)
            atomic_fetch_add(&pc.bad, 1);
    }
    return NULL;
}

static void
bounded_buffer(int64_t spin)
{
    fm_sem_init(&pc.empty, SLOTS, SLOTS);
    fm_sem_init(&pc.full, 0, SLOTS);
    atomic_store(&pc.bad, 0);
    atomic_store(&pc.go, 0);
    pc.spin = spin;
    pthread_t th[NPROD + NCONS];
    for (int i = 0; i < NPROD + NCONS; i++)
        pthread_create(&th[i], NULL, i < NPROD ? bb_producer : bb_consumer, NULL);
    atomic_store(&pc.go, 1);
    for (int i = 0; i < NPROD + NCONS; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ(atomic_load(&pc.bad), 0);
    CHECK_EQ(fm_sem_value(&pc.empty), SLOTS);
    CHECK_EQ(fm_sem_value(&pc.full), 0);
}

static void test_bounded_buffer_spin(void) { bounded_buffer(atomic_load(&fm_spin_ns)); }
static void test_bounded_buffer_nospin(void) { bounded_buffer(0); }

/* The same across processes: 2 producer and 2 consumer processes. */
static void
test_bounded_buffer_processes(void)
{
    struct {
        fm_sem empty, full;
    } *sh = fmt_shared_page(4096);
    fm_sem_init(&sh->empty, SLOTS, SLOTS);
    fm_sem_init(&sh->full, 0, SLOTS);
    pid_t pids[4];
    for (int i = 0; i < 4; i++) {
        pids[i] = fmt_fork();
        if (pids[i] == 0) {
            uint32_t me = fmt_pid();
            fm_sem *a = i < 2 ? &sh->empty : &sh->full;
            fm_sem *b = i < 2 ? &sh->full : &sh->empty;
            int bad = 0;
            for (int k = 0; k < BB_PER; k++) {
                bad += fmt_sem_wait(a, me, fm_deadline_after(20), k & 1 ? 0 : fm_spin_ns) != FM_OK;
                bad += fm_sem_post(b, me) != FM_OK;
            }
            _exit(bad ? 1 : 0);
        }
    }
    for (int i = 0; i < 4; i++)
        CHECK_EQ(fmt_reap(pids[i]), 0);
    CHECK_EQ(fm_sem_value(&sh->empty), SLOTS);
    CHECK_EQ(fm_sem_value(&sh->full), 0);
    munmap(sh, 4096);
}

/* ---- dead holders ---- */

struct shared {
    fm_sem s;
    _Atomic uint32_t ready;
};

/* A child takes `take` units and posts `give_back` of them, then is killed
 * (kill) or exits; the parent recovers what it still held. */
static void
test_holder_sigkill(void)
{
    struct shared *sh = fmt_shared_page(4096);
    fm_sem_init(&sh->s, 2, 2);
    pid_t pid = fmt_fork();
    if (pid == 0) {
        uint32_t me = fmt_pid();
        if (fm_sem_trywait(&sh->s, me) != FM_OK || fm_sem_trywait(&sh->s, me) != FM_OK)
            _exit(1);
        atomic_store(&sh->ready, 1);
        for (;;)
            pause();
    }
    CHECK(fmt_await_u32(&sh->ready, 1, 10));
    uint32_t me = fmt_pid();
    CHECK_EQ(fm_sem_value(&sh->s), 0);
    /* a live holder: a timed wait times out, nothing is recovered */
    CHECK_ST(fmt_sem_wait(&sh->s, me, fm_deadline_after(0.2), 0), FM_TIMEOUT);
    CHECK_EQ(fm_sem_recover(&sh->s), 0);
    CHECK_EQ(fm_sem_value(&sh->s), 0);

    kill(pid, SIGKILL);     /* not reaped: a zombie while we wait */
    int64_t t0 = fm_now_ns();
    int st = fmt_sem_wait(&sh->s, me, fm_deadline_after(5), atomic_load(&fm_spin_ns));
    double el = fmt_secs_since(t0);
    CHECK_ST(st, FM_OK);
    CHECK_MSG(el < 1.0, "recovered after %.3fs", el);
    CHECK_EQ(fm_sem_value(&sh->s), 1);      /* 2 recovered, 1 taken */
    CHECK_EQ(fm_sem_recover(&sh->s), 0);    /* given back once only */
    CHECK_ST(fm_sem_post(&sh->s, me), FM_OK);
    CHECK_EQ(fm_sem_value(&sh->s), 2);
    CHECK_ST(fm_sem_post(&sh->s, me), FM_OVERFLOW);
    CHECK_EQ(fmt_reap(pid), 128 + SIGKILL);
    munmap(sh, 4096);
}

/* The holder already dead (and reaped) before anyone waits; it held 2 of 3
 * units and had given one back: exactly 1 comes back. */
static void
test_holder_exit_partial(void)
{
    struct shared *sh = fmt_shared_page(4096);
    fm_sem_init(&sh->s, 3, 3);
    pid_t pid = fmt_fork();
    if (pid == 0) {
        uint32_t me = fmt_pid();
        if (fm_sem_trywait(&sh->s, me) != FM_OK || fm_sem_trywait(&sh->s, me) != FM_OK)
            _exit(1);
        if (fm_sem_post(&sh->s, me) != FM_OK)
            _exit(2);
        _exit(0);
    }
    CHECK_EQ(fmt_reap(pid), 0);
    CHECK_EQ(fm_sem_value(&sh->s), 2);
    CHECK_EQ(fm_sem_recover(&sh->s), 1);
    CHECK_EQ(fm_sem_value(&sh->s), 3);
    CHECK_EQ(fm_sem_recover(&sh->s), 0);
    munmap(sh, 4096);
}

/* A holder that gave back everything it took: nothing to recover. */
static void
test_holder_exit_balanced(void)
{
    struct shared *sh = fmt_shared_page(4096);
    fm_sem_init(&sh->s, 2, 2);
    pid_t pid = fmt_fork();
    if (pid == 0) {
        uint32_t me = fmt_pid();
        for (int i = 0; i < 1000; i++) {
            if (fm_sem_trywait(&sh->s, me) != FM_OK || fm_sem_post(&sh->s, me) != FM_OK)
                _exit(1);
        }
        _exit(0);
    }
    CHECK_EQ(fmt_reap(pid), 0);
    CHECK_EQ(fm_sem_recover(&sh->s), 0);
    CHECK_EQ(fm_sem_value(&sh->s), 2);
    munmap(sh, 4096);
}

/* A semaphore with initial 0 used as a signal: the parent posts, a child
 * consumes the unit and dies.  The consumed signal must not come back. */
static void
test_signal_not_returned(void)
{
    struct shared *sh = fmt_shared_page(4096);
    fm_sem_init(&sh->s, 0, FM_SEM_VALUE_MAX);
    uint32_t me = fmt_pid();
    CHECK_ST(fm_sem_post(&sh->s, me), FM_OK);
    pid_t pid = fmt_fork();
    if (pid == 0) {
        int st = fmt_sem_wait(&sh->s, fmt_pid(), fm_deadline_after(5), 0);
        _exit(st == FM_OK ? 0 : 10 + st);
    }
    CHECK_EQ(fmt_wait_zombie(pid), 0);
    CHECK_EQ(fm_sem_value(&sh->s), 0);
    CHECK_EQ(fm_sem_recover(&sh->s), 0);
    CHECK_EQ(fm_sem_value(&sh->s), 0);
    /* the wait path runs recovery at every slice: still nothing */
    CHECK_ST(fmt_sem_wait(&sh->s, me, fm_deadline_after(0.2), 0), FM_TIMEOUT);
    CHECK_EQ(fm_sem_value(&sh->s), 0);
    CHECK_EQ(fmt_reap(pid), 0);
    CHECK_EQ(fm_sem_recover(&sh->s), 0);
    CHECK_EQ(fm_sem_value(&sh->s), 0);

    /* a signal child that is SIGKILLed after consuming: same */
    CHECK_ST(fm_sem_post(&sh->s, me), FM_OK);
    atomic_store(&sh->ready, 0);
    pid = fmt_fork();
    if (pid == 0) {
        if (fm_sem_trywait(&sh->s, fmt_pid()) != FM_OK)
            _exit(1);
        atomic_store(&sh->ready, 1);
        for (;;)
            pause();
    }
    CHECK(fmt_await_u32(&sh->ready, 1, 10));
    kill(pid, SIGKILL);
    CHECK_EQ(fmt_wait_zombie(pid), 0);
    CHECK_EQ(fm_sem_recover(&sh->s), 0);
    CHECK_EQ(fm_sem_value(&sh->s), 0);
    CHECK_EQ(fmt_reap(pid), 128 + SIGKILL);
    munmap(sh, 4096);
}

/* A sleeper is woken by the post itself, not by the end of its slice. */
static struct {
    fm_sem s;
    _Atomic int64_t post_at;
    int st;
    double lat;
} ls;

static void *
latency_waiter(void *arg)
{
    (void)arg;
    ls.st = fmt_sem_wait(&ls.s, fmt_pid(), fm_deadline_after(5), 0);
    ls.lat = (double)(fm_now_ns() - atomic_load(&ls.post_at)) / 1e9;
    return NULL;
}

static void
test_wake_latency(void)
{
    double lat[FMT_WAKE_ROUNDS];
    int bad = 0;
    for (int r = 0; r < FMT_WAKE_ROUNDS; r++) {
        fm_sem_init(&ls.s, 0, 1);
        pthread_t th;
        pthread_create(&th, NULL, latency_waiter, NULL);
        bad += !fmt_await_u32(&ls.s.sleepers, 1, 5);
        fmt_sleep_ms(2);
        atomic_store(&ls.post_at, fm_now_ns());
        bad += fm_sem_post(&ls.s, fmt_pid()) != FM_OK;
        pthread_join(th, NULL);
        bad += ls.st != FM_OK || fm_sem_value(&ls.s) != 0;
        lat[r] = ls.lat;
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
    printf("test_sem\n");
    RUN(test_init_trywait_post);
    RUN(test_wait_timeout);
    RUN(test_wake_latency);
    RUN(test_producers_consumers_spin);
    RUN(test_producers_consumers_nospin);
    RUN(test_bounded_buffer_spin);
    RUN(test_bounded_buffer_nospin);
    RUN(test_bounded_buffer_processes);
    RUN(test_holder_sigkill);
    RUN(test_holder_exit_partial);
    RUN(test_holder_exit_balanced);
    RUN(test_signal_not_returned);
    return fmt_finish();
}
