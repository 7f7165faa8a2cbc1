/* test_mutex.c: fm_mutex under threads and processes, and dead holders.
 *
 * The mutex word holds the owner's pid: threads of one process share it
 * (getpid()), each forked child uses its own. */
#include <sched.h>

#include "check.h"

static void
test_basic(void)
{
    fm_mutex m;
    fm_mutex_init(&m);
    uint32_t me = fmt_pid();
    CHECK_EQ(fm_mutex_owner(&m), 0);
    CHECK_ST(fm_mutex_trylock(&m, me), FM_OK);
    CHECK_EQ(fm_mutex_owner(&m), me);
    CHECK_ST(fm_mutex_trylock(&m, me), FM_AGAIN);        /* held: not recursive */
    CHECK_ST(fm_mutex_trylock(&m, me + 1), FM_AGAIN);
    CHECK_ST(fm_mutex_unlock(&m), FM_OK);
    CHECK_EQ(fm_mutex_owner(&m), 0);
    CHECK_ST(fm_mutex_unlock(&m), FM_OVERFLOW);          /* unlock of a free mutex */
    CHECK_EQ(atomic_load(&m.word), 0);                   /* ... leaves it free */
    CHECK_ST(fm_mutex_lock(&m, me, fm_deadline_after(1), 0), FM_OK);
    CHECK_EQ(fm_mutex_owner(&m), me);
    CHECK_ST(fm_mutex_unlock(&m), FM_OK);
    CHECK_ST(fm_mutex_lock(&m, me, fm_deadline_after(0), atomic_load(&fm_spin_ns)), FM_OK);
    CHECK_ST(fm_mutex_unlock(&m), FM_OK);
}

static void
test_timeout(void)
{
    fm_mutex m;
    fm_mutex_init(&m);
    uint32_t me = fmt_pid();
    CHECK_ST(fm_mutex_trylock(&m, me), FM_OK);
    /* held by this (live) process: no recovery, a plain timeout */
    int64_t t0 = fm_now_ns();
    int st = fmt_mutex_lock(&m, me, fm_deadline_after(0.1), atomic_load(&fm_spin_ns));
    double el = fmt_secs_since(t0);
    CHECK_ST(st, FM_TIMEOUT);
    CHECK_MSG(el >= 0.1 && el < 1.0, "elapsed %.3fs", el);
    CHECK_EQ(fm_mutex_owner(&m), me);
    /* a deadline already passed: at once */
    t0 = fm_now_ns();
    CHECK_ST(fm_mutex_lock(&m, me, fm_deadline_after(0), atomic_load(&fm_spin_ns)), FM_TIMEOUT);
    CHECK_ST(fm_mutex_lock(&m, me, fm_deadline_after(0), 0), FM_TIMEOUT);
    CHECK(fmt_secs_since(t0) < 0.05);
    /* held by another live process (the parent): no false recovery */
    pid_t pid = fmt_fork();
    if (pid == 0) {
        int s = fmt_mutex_lock(&m, fmt_pid(), fm_deadline_after(0.2), 0);
        _exit(s == FM_TIMEOUT ? 0 : 10 + s);
    }
    CHECK_EQ(fmt_reap(pid), 0);
    CHECK_ST(fm_mutex_unlock(&m), FM_OK);
}

/* ---- 8 threads x 200000 increments of a plain counter ---- */

#define NTHREADS 8
#define PER_THREAD 200000

static struct {
    fm_mutex m;
    char pad[56];
    uint64_t counter;       /* plain: only the mutex protects it */
    uint64_t contended;     /* times the holder saw FM_MUTEX_WAITERS set */
    _Atomic long bad;
    _Atomic uint32_t go;
    int64_t spin;
} tc;

static void *
thread_incr(void *arg)
{
    (void)arg;
    uint32_t me = fmt_pid();
    while (!atomic_load(&tc.go))
        sched_yield();
    for (int i = 0; i < PER_THREAD; i++) {
        int st = fmt_mutex_lock(&tc.m, me, FM_FOREVER, tc.spin);
        if (st != FM_OK)
            atomic_fetch_add(&tc.bad, 1);
        tc.counter++;
        if (atomic_load_explicit(&tc.m.word, memory_order_relaxed) & FM_MUTEX_WAITERS)
            tc.contended++;
        if ((i & 63) == 0)      /* now and then, hold it a little longer */
            for (int k = 0; k < 50; k++)
                fm_cpu_relax();
        if (fm_mutex_unlock(&tc.m) != FM_OK)
            atomic_fetch_add(&tc.bad, 1);
    }
    return NULL;
}

/* spin: the spin budget before sleeping (0: straight to the futex) */
static void
threads_incr(int64_t spin)
{
    fm_mutex_init(&tc.m);
    tc.counter = 0;
    tc.contended = 0;
    atomic_store(&tc.go, 0);
    tc.spin = spin;
    pthread_t th[NTHREADS];
    for (int i = 0; i < NTHREADS; i++)
        pthread_create(&th[i], NULL, thread_incr, NULL);
    atomic_store(&tc.go, 1);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    fmt_note("holder saw sleeping waiters %llu times", (unsigned long long)tc.contended);
    CHECK_EQ(tc.counter, (uint64_t)NTHREADS * PER_THREAD);
    CHECK_EQ(atomic_load(&tc.bad), 0);
    CHECK_EQ(atomic_load(&tc.m.word), 0);
}

static void test_threads_spin(void) { threads_incr(atomic_load(&fm_spin_ns)); }
static void test_threads_nospin(void) { threads_incr(0); }

/* ---- 4 processes x 100000 increments in a MAP_SHARED page ---- */

#define NPROCS 4
#define PER_PROC 100000

struct shared {
    fm_mutex m;
    char pad[56];
    uint64_t counter;
    uint64_t contended;
    _Atomic uint32_t ready;     /* set by a child holding the mutex */
    _Atomic uint32_t go;
    _Atomic uint32_t recovered;
};

static void
processes_incr(int64_t spin)
{
    struct shared *sh = fmt_shared_page(4096);
    fm_mutex_init(&sh->m);
    pid_t pids[NPROCS];
    for (int i = 0; i < NPROCS; i++) {
        pids[i] = fmt_fork();
        if (pids[i] == 0) {
            uint32_t me = fmt_pid();
            int bad = 0;
            while (!atomic_load(&sh->go))
                fm_cpu_relax();
            for (int k = 0; k < PER_PROC; k++) {
                bad += fmt_mutex_lock(&sh->m, me, FM_FOREVER, spin) != FM_OK;
                sh->counter++;
                if (atomic_load_explicit(&sh->m.word, memory_order_relaxed) & FM_MUTEX_WAITERS)
                    sh->contended++;
                if ((k & 63) == 0)
                    for (int j = 0; j < 50; j++)
                        fm_cpu_relax();
                bad += fm_mutex_unlock(&sh->m) != FM_OK;
            }
            _exit(bad ? 1 : 0);
        }
    }
    atomic_store(&sh->go, 1);
    for (int i = 0; i < NPROCS; i++)
        CHECK_EQ(fmt_reap(pids[i]), 0);
    fmt_note("holder saw sleeping waiters %llu times", (unsigned long long)sh->contended);
    CHECK_EQ(sh->counter, (uint64_t)NPROCS * PER_PROC);
    CHECK_EQ(atomic_load(&sh->m.word), 0);
    munmap(sh, 4096);
}

static void test_processes_spin(void) { processes_incr(atomic_load(&fm_spin_ns)); }
static void test_processes_nospin(void) { processes_incr(0); }

/* ---- dead holders ---- */

/* The child locks and _exit()s without unlocking.  reap: whether the parent
 * reaps it before locking (else it is a zombie). */
static void
dead_holder_exit(int reap)
{
    struct shared *sh = fmt_shared_page(4096);
    fm_mutex_init(&sh->m);
    pid_t pid = fmt_fork();
    if (pid == 0) {
        if (fm_mutex_trylock(&sh->m, fmt_pid()) != FM_OK)
            _exit(1);
        _exit(0);
    }
    if (reap)
        CHECK_EQ(fmt_reap(pid), 0);
    else
        CHECK_EQ(fmt_wait_zombie(pid), 0);
    CHECK_EQ(fm_mutex_owner(&sh->m), (uint32_t)pid);

    uint32_t me = fmt_pid();
    int64_t t0 = fm_now_ns();
    int st = fmt_mutex_lock(&sh->m, me, fm_deadline_after(5), atomic_load(&fm_spin_ns));
    double el = fmt_secs_since(t0);
    CHECK_ST(st, FM_RECOVERED);
    CHECK_MSG(el < 1.0, "recovered after %.3fs", el);
    CHECK_EQ(fm_mutex_owner(&sh->m), me);
    /* and it works again */
    CHECK_ST(fm_mutex_unlock(&sh->m), FM_OK);
    CHECK_ST(fm_mutex_lock(&sh->m, me, fm_deadline_after(1), 0), FM_OK);
    CHECK_ST(fm_mutex_trylock(&sh->m, me), FM_AGAIN);
    CHECK_ST(fm_mutex_unlock(&sh->m), FM_OK);
    CHECK_ST(fm_mutex_unlock(&sh->m), FM_OVERFLOW);
    if (!reap)
        CHECK_EQ(fmt_reap(pid), 0);
    munmap(sh, 4096);
}

static void test_dead_holder_exit_reaped(void) { dead_holder_exit(1); }
static void test_dead_holder_exit_zombie(void) { dead_holder_exit(0); }

/* The child locks and sleeps; the parent SIGKILLs it (and does not reap it
 * before locking: a SIGKILLed child stays a zombie until reaped). */
static void
test_dead_holder_sigkill(void)
{
    struct shared *sh = fmt_shared_page(4096);
    fm_mutex_init(&sh->m);
    pid_t pid = fmt_fork();
    if (pid == 0) {
        if (fm_mutex_trylock(&sh->m, fmt_pid()) != FM_OK)
            _exit(1);
        atomic_store(&sh->ready, 1);
        for (;;)
            pause();
    }
    CHECK(fmt_await_u32(&sh->ready, 1, 10));
    uint32_t me = fmt_pid();
    /* alive holder: a timed lock times out, nothing is taken over */
    CHECK_ST(fmt_mutex_lock(&sh->m, me, fm_deadline_after(0.2), 0), FM_TIMEOUT);
    CHECK_EQ(fm_mutex_owner(&sh->m), (uint32_t)pid);
    kill(pid, SIGKILL);
    int64_t t0 = fm_now_ns();
    int st = fmt_mutex_lock(&sh->m, me, fm_deadline_after(5), 0);
    double el = fmt_secs_since(t0);
    CHECK_ST(st, FM_RECOVERED);
    CHECK_MSG(el < 1.0, "recovered after %.3fs", el);
    CHECK_ST(fm_mutex_unlock(&sh->m), FM_OK);
    CHECK_ST(fm_mutex_lock(&sh->m, me, fm_deadline_after(1), 0), FM_OK);
    CHECK_ST(fm_mutex_unlock(&sh->m), FM_OK);
    CHECK_EQ(fmt_reap(pid), 128 + SIGKILL);
    munmap(sh, 4096);
}

/* Several waiters asleep when the holder is killed: two threads of this
 * process and one other process.  Exactly one of them gets FM_RECOVERED,
 * the others FM_OK in turn; every one increments the counter once. */
static struct shared *ws;

static void *
waiter_thread(void *arg)
{
    int *result = arg;
    *result = fmt_mutex_lock(&ws->m, fmt_pid(), fm_deadline_after(10), atomic_load(&fm_spin_ns));
    if (*result == FM_OK || *result == FM_RECOVERED) {
        if (*result == FM_RECOVERED)
            atomic_fetch_add(&ws->recovered, 1);
        ws->counter++;
        fmt_sleep_ms(5);
        fm_mutex_unlock(&ws->m);
    }
    return NULL;
}

static void
test_dead_holder_many_waiters(void)
{
    ws = fmt_shared_page(4096);
    fm_mutex_init(&ws->m);
    pid_t holder = fmt_fork();
    if (holder == 0) {
        if (fm_mutex_trylock(&ws->m, fmt_pid()) != FM_OK)
            _exit(1);
        atomic_store(&ws->ready, 1);
        for (;;)
            pause();
    }
    CHECK(fmt_await_u32(&ws->ready, 1, 10));
    pid_t other = fmt_fork();
    if (other == 0) {
        int st = fmt_mutex_lock(&ws->m, fmt_pid(), fm_deadline_after(10), 0);
        if (st != FM_OK && st != FM_RECOVERED)
            _exit(10 + st);
        if (st == FM_RECOVERED)
            atomic_fetch_add(&ws->recovered, 1);
        ws->counter++;
        fmt_sleep_ms(5);
        _exit(fm_mutex_unlock(&ws->m) == FM_OK ? 0 : 2);
    }
    int r[2] = {-1, -1};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, waiter_thread, &r[i]);
    fmt_sleep_ms(150);              /* let them all sleep on the word */
    CHECK(atomic_load(&ws->m.word) & FM_MUTEX_WAITERS);
    int64_t t0 = fm_now_ns();
    kill(holder, SIGKILL);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ(fmt_reap(other), 0);
    double el = fmt_secs_since(t0);
    CHECK_MSG(el < 2.0, "all waiters done after %.3fs", el);
    for (int i = 0; i < 2; i++)
        CHECK_MSG(r[i] == FM_OK || r[i] == FM_RECOVERED, "thread %d: %s", i, fmt_st(r[i]));
    CHECK_EQ(atomic_load(&ws->recovered), 1);
    CHECK_EQ(ws->counter, 3);
    CHECK_EQ(fm_mutex_owner(&ws->m), 0);
    CHECK_EQ(fmt_reap(holder), 128 + SIGKILL);
    munmap(ws, 4096);
}

/* A sleeper is woken by the unlock itself, not by the end of its slice. */
static struct {
    fm_mutex m;
    _Atomic int64_t unlock_at;
    int st;
    double lat;
} lm;

static void *
latency_waiter(void *arg)
{
    (void)arg;
    lm.st = fmt_mutex_lock(&lm.m, fmt_pid(), fm_deadline_after(5), 0);
    lm.lat = (double)(fm_now_ns() - atomic_load(&lm.unlock_at)) / 1e9;
    if (lm.st == FM_OK)
        fm_mutex_unlock(&lm.m);
    return NULL;
}

static void
test_wake_latency(void)
{
    double lat[FMT_WAKE_ROUNDS];
    int bad = 0;
    uint32_t me = fmt_pid();
    for (int r = 0; r < FMT_WAKE_ROUNDS; r++) {
        fm_mutex_init(&lm.m);
        bad += fm_mutex_trylock(&lm.m, me) != FM_OK;
        pthread_t th;
        pthread_create(&th, NULL, latency_waiter, NULL);
        bad += !fmt_await_u32(&lm.m.word, me | FM_MUTEX_WAITERS, 5);
        fmt_sleep_ms(2);
        atomic_store(&lm.unlock_at, fm_now_ns());
        bad += fm_mutex_unlock(&lm.m) != FM_OK;
        pthread_join(th, NULL);
        bad += lm.st != FM_OK || fm_mutex_owner(&lm.m) != 0;
        lat[r] = lm.lat;
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
    printf("test_mutex\n");
    RUN(test_basic);
    RUN(test_timeout);
    RUN(test_wake_latency);
    RUN(test_threads_spin);
    RUN(test_threads_nospin);
    RUN(test_processes_spin);
    RUN(test_processes_nospin);
    RUN(test_dead_holder_exit_reaped);
    RUN(test_dead_holder_exit_zombie);
    RUN(test_dead_holder_sigkill);
    RUN(test_dead_holder_many_waiters);
    return fmt_finish();
}
