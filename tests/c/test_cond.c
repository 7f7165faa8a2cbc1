/* test_cond.c: fm_cond (tickets) with an fm_mutex as its lock, used as
 * prims.h says (and as sync.c does):
 *   lock held: seen = fm_cond_signaled(); ticket = fm_cond_enter_wait();
 *   unlock; fm_cond_wait(ticket, seen) (loop on FM_EINTR); relock;
 *   on FM_RECOVERED: fm_cond_repair(), and unless fm_cond_notified(),
 *   unlock and wait again;
 *   notified = fm_cond_leave_wait(ticket, seen) (after every wait).
 * notify(n) wakes exactly min(n, waiters), oldest first, only threads that
 * were waiting when it was made; the bookkeeping returns to 0. */
#include <sched.h>

#include "check.h"

/* One wait.  The caller holds m; it is held again on return.  Returns 1
 * when notified, 0 on timeout. */
static int
cond_wait(fm_cond *c, fm_mutex *m, int64_t deadline, int64_t spin)
{
    uint32_t me = fmt_pid();
    uint32_t seen = fm_cond_signaled(c);
    uint32_t ticket = fm_cond_enter_wait(c);
    for (;;) {
        fm_mutex_unlock(m);
        int st = fmt_cond_wait(c, ticket, seen, deadline, spin);
        int lst = fmt_mutex_lock(m, me, FM_FOREVER, spin);
        if (lst != FM_OK)
            fprintf(stderr, "cond_wait: relock gave %s\n", fmt_st(lst));
        if (st != FM_RECOVERED)
            break;
        fm_cond_repair(c);
        if (fm_cond_notified(c, ticket, seen))
            break;
        spin = 0;
    }
    return fm_cond_leave_wait(c, ticket, seen);
}

/* A waiter played by hand in one thread (the lock is notional here: one
 * thread does everything in order). */
struct pw {
    uint32_t seen, ticket;
};

static struct pw
pw_enter(fm_cond *c)
{
    struct pw w;
    w.seen = fm_cond_signaled(c);
    w.ticket = fm_cond_enter_wait(c);
    return w;
}

/* Has w been notified?  (a wait with a deadline already passed) */
static int
pw_notified(fm_cond *c, struct pw w)
{
    return fm_cond_wait(c, w.ticket, w.seen, fm_deadline_after(0), 0) == FM_OK;
}

static void
test_protocol(void)
{
    fm_cond c;
    fm_cond_init(&c);
    CHECK_EQ(fm_cond_waiters(&c), 0);
    CHECK_EQ(fm_cond_notify(&c, 1), 0);
    CHECK_EQ(fm_cond_notify(&c, UINT32_MAX), 0);
    CHECK_EQ(fm_cond_signaled(&c), 0);

    /* one waiter, notified between its timeout and its relock: counts */
    struct pw a = pw_enter(&c);
    CHECK(a.ticket != FM_COND_NO_TICKET);
    CHECK_EQ(fm_cond_waiters(&c), 1);
    CHECK(!pw_notified(&c, a));
    CHECK_EQ(fm_cond_notify(&c, 1), 1);
    CHECK_EQ(fm_cond_waiters(&c), 0);
    CHECK(pw_notified(&c, a));
    CHECK_EQ(fm_cond_leave_wait(&c, a.ticket, a.seen), 1);
    CHECK_EQ(fm_cond_waiters(&c), 0);

    /* one waiter that gives up: its ticket is handed back */
    a = pw_enter(&c);
    uint32_t t = a.ticket;
    CHECK_EQ(fm_cond_leave_wait(&c, a.ticket, a.seen), 0);
    CHECK_EQ(fm_cond_waiters(&c), 0);
    CHECK_EQ(fm_cond_notify(&c, 1), 0);     /* nobody to spend it on */
    a = pw_enter(&c);
    CHECK_EQ(a.ticket, t);
    CHECK_EQ(fm_cond_leave_wait(&c, a.ticket, a.seen), 0);

    /* oldest first */
    struct pw w[3];
    for (int i = 0; i < 3; i++)
        w[i] = pw_enter(&c);
    CHECK_EQ(fm_cond_waiters(&c), 3);
    CHECK_EQ(fm_cond_notify(&c, 1), 1);
    CHECK(pw_notified(&c, w[0]) && !pw_notified(&c, w[1]) && !pw_notified(&c, w[2]));
    CHECK_EQ(fm_cond_waiters(&c), 2);
    CHECK_EQ(fm_cond_notify(&c, 2), 2);
    CHECK(pw_notified(&c, w[1]) && pw_notified(&c, w[2]));
    CHECK_EQ(fm_cond_waiters(&c), 0);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(fm_cond_leave_wait(&c, w[i].ticket, w[i].seen), 1);
    CHECK_EQ(fm_cond_waiters(&c), 0);

    /* a waiter in the middle gives up: a notify is not spent on it */
    for (int i = 0; i < 3; i++)
        w[i] = pw_enter(&c);
    CHECK_EQ(fm_cond_leave_wait(&c, w[1].ticket, w[1].seen), 0);
    CHECK_EQ(fm_cond_waiters(&c), 2);
    CHECK_EQ(fm_cond_notify(&c, 1), 1);
    CHECK(pw_notified(&c, w[0]) && !pw_notified(&c, w[2]));
    CHECK_EQ(fm_cond_notify(&c, 1), 1);
    CHECK(pw_notified(&c, w[2]));
    CHECK_EQ(fm_cond_waiters(&c), 0);
    CHECK_EQ(fm_cond_notify(&c, 1), 0);

    /* the oldest gives up: skipped too */
    for (int i = 0; i < 3; i++)
        w[i] = pw_enter(&c);
    CHECK_EQ(fm_cond_leave_wait(&c, w[0].ticket, w[0].seen), 0);
    CHECK_EQ(fm_cond_waiters(&c), 2);
    CHECK(!pw_notified(&c, w[1]));
    CHECK_EQ(fm_cond_notify(&c, 1), 1);
    CHECK(pw_notified(&c, w[1]) && !pw_notified(&c, w[2]));
    /* and the newest: nobody left */
    CHECK_EQ(fm_cond_leave_wait(&c, w[2].ticket, w[2].seen), 0);
    CHECK_EQ(fm_cond_waiters(&c), 0);
    CHECK_EQ(fm_cond_notify(&c, UINT32_MAX), 0);

    /* a later waiter cannot take an earlier waiter's notify */
    a = pw_enter(&c);
    CHECK_EQ(fm_cond_notify(&c, 1), 1);
    struct pw late = pw_enter(&c);
    CHECK(!pw_notified(&c, late));
    CHECK(pw_notified(&c, a));
    CHECK_EQ(fm_cond_leave_wait(&c, late.ticket, late.seen), 0);
    CHECK_EQ(fm_cond_waiters(&c), 0);
    CHECK_EQ(c.cancelled, 0);
}

/* More than FM_COND_RING waiters at once: the extra one has no ticket and
 * wakes at the next notify of any kind (spurious, never lost). */
static void
test_ring_full(void)
{
    static fm_cond c;
    fm_cond_init(&c);
    static struct pw w[FM_COND_RING];
    for (int i = 0; i < FM_COND_RING; i++)
        w[i] = pw_enter(&c);
    CHECK_EQ(fm_cond_waiters(&c), FM_COND_RING);
    struct pw x = pw_enter(&c);
    CHECK_EQ(x.ticket, FM_COND_NO_TICKET);
    CHECK(!pw_notified(&c, x));
    CHECK_EQ(fm_cond_notify(&c, 1), 1);
    CHECK(pw_notified(&c, w[0]) && !pw_notified(&c, w[1]));
    CHECK(pw_notified(&c, x));
    CHECK_EQ(fm_cond_leave_wait(&c, x.ticket, x.seen), 1);
    /* cancel every other one, then notify_all wakes the rest */
    int cancelled = 0, bad = 0;
    for (int i = 2; i < FM_COND_RING; i += 2) {
        bad += fm_cond_leave_wait(&c, w[i].ticket, w[i].seen) != 0;
        cancelled++;
    }
    CHECK_EQ(bad, 0);
    CHECK_EQ(fm_cond_waiters(&c), FM_COND_RING - 1 - cancelled);
    CHECK_EQ(fm_cond_notify(&c, UINT32_MAX), FM_COND_RING - 1 - cancelled);
    int missed = 0;
    for (int i = 1; i < FM_COND_RING; i += 2)
        missed += !pw_notified(&c, w[i]);
    CHECK_EQ(missed, 0);
    CHECK_EQ(fm_cond_waiters(&c), 0);
    CHECK_EQ(c.cancelled, 0);
    /* room again */
    x = pw_enter(&c);
    CHECK(x.ticket != FM_COND_NO_TICKET);
    CHECK_EQ(fm_cond_leave_wait(&c, x.ticket, x.seen), 0);
}

/* Tickets compare wrap-safely: across the 2^31 boundary of the difference
 * (start as if 2^31 - 8 waits had happened). */
static void
test_ticket_order_wraps(void)
{
    fm_cond c;
    fm_cond_init(&c);
    atomic_store(&c.signaled, 0x7ffffff8u);
    c.next_ticket = 0x7ffffff8u;
    int bad = 0;
    for (int round = 0; round < 16; round++) {
        struct pw w[3];
        for (int i = 0; i < 3; i++)
            w[i] = pw_enter(&c);
        bad += fm_cond_notify(&c, 1) != 1;
        bad += !pw_notified(&c, w[0]) || pw_notified(&c, w[1]) || pw_notified(&c, w[2]);
        bad += fm_cond_leave_wait(&c, w[2].ticket, w[2].seen) != 0;
        bad += fm_cond_notify(&c, 5) != 1;
        bad += !pw_notified(&c, w[1]);
        bad += fm_cond_waiters(&c) != 0;
    }
    CHECK_EQ(bad, 0);
    CHECK(fm_cond_signaled(&c) > 0x80000000u);
}

/* ---- a sleeper is woken by the notify itself, not by its slice end ---- */

static struct {
    fm_mutex m;
    fm_cond c;
    _Atomic int64_t notify_at;
    int st;
    double lat;
} lc;

static void *
latency_waiter(void *arg)
{
    (void)arg;
    uint32_t me = fmt_pid();
    fmt_mutex_lock(&lc.m, me, FM_FOREVER, 0);
    uint32_t seen = fm_cond_signaled(&lc.c);
    uint32_t ticket = fm_cond_enter_wait(&lc.c);
    fm_mutex_unlock(&lc.m);
    lc.st = fmt_cond_wait(&lc.c, ticket, seen, fm_deadline_after(5), 0);
    lc.lat = (double)(fm_now_ns() - atomic_load(&lc.notify_at)) / 1e9;
    fmt_mutex_lock(&lc.m, me, FM_FOREVER, 0);
    fm_cond_leave_wait(&lc.c, ticket, seen);
    fm_mutex_unlock(&lc.m);
    return NULL;
}

static void
test_wake_latency(void)
{
    double lat[FMT_WAKE_ROUNDS];
    int bad = 0;
    uint32_t me = fmt_pid();
    for (int r = 0; r < FMT_WAKE_ROUNDS; r++) {
        fm_mutex_init(&lc.m);
        fm_cond_init(&lc.c);
        pthread_t th;
        pthread_create(&th, NULL, latency_waiter, NULL);
        bad += !fmt_await_u32(&lc.c.sleepers, 1, 5);
        fmt_sleep_ms(2);
        bad += fmt_mutex_lock(&lc.m, me, FM_FOREVER, 0) != FM_OK;
        atomic_store(&lc.notify_at, fm_now_ns());
        bad += fm_cond_notify(&lc.c, 1) != 1;
        fm_mutex_unlock(&lc.m);
        pthread_join(th, NULL);
        bad += lc.st != FM_OK || fm_cond_waiters(&lc.c) != 0;
        lat[r] = lc.lat;
    }
    CHECK_EQ(bad, 0);
    double med = fmt_median(lat, FMT_WAKE_ROUNDS);
    CHECK_MSG(med < FMT_WAKE_MEDIAN_MAX, "median wake-up latency %.1f ms", med * 1e3);
    fmt_note("wake-up latency: median %.3f ms, max %.3f ms", med * 1e3,
             lat[FMT_WAKE_ROUNDS - 1] * 1e3);
}

/* ---- n waiter threads, one notify(k) ---- */

#define MAXW 8

static struct {
    fm_mutex m;
    fm_cond c;
    int64_t t0, deadline;
    int64_t spin;
    _Atomic int64_t notify_at;
    _Atomic uint32_t entered;
    int notified[MAXW];
    double el[MAXW];        /* from the start to the end of the wait */
    double lat[MAXW];       /* from the notify to the wake-up */
} cv;

static void *
waiter(void *arg)
{
    int i = (int)(intptr_t)arg;
    uint32_t me = fmt_pid();
    fmt_mutex_lock(&cv.m, me, FM_FOREVER, cv.spin);
    /* cond_wait() spelled out, to time the wake-up */
    uint32_t seen = fm_cond_signaled(&cv.c);
    uint32_t ticket = fm_cond_enter_wait(&cv.c);
    atomic_fetch_add(&cv.entered, 1);
    fm_mutex_unlock(&cv.m);
    int st = fmt_cond_wait(&cv.c, ticket, seen, cv.deadline, cv.spin);
    cv.lat[i] = (double)(fm_now_ns() - atomic_load(&cv.notify_at)) / 1e9;
    fmt_mutex_lock(&cv.m, me, FM_FOREVER, cv.spin);
    cv.notified[i] = fm_cond_leave_wait(&cv.c, ticket, seen);
    if (st == FM_OK && !cv.notified[i])
        cv.notified[i] = -1;        /* FM_OK always means notified */
    fm_mutex_unlock(&cv.m);
    cv.el[i] = fmt_secs_since(cv.t0);
    return NULL;
}

/* n waiters, entering in order 0..n-1, asleep; notify(k): the k oldest
 * wake at once, the others time out after `timeout` seconds. */
static void
notify_k(int n, uint32_t k, double timeout, int64_t spin)
{
    fm_mutex_init(&cv.m);
    fm_cond_init(&cv.c);
    cv.t0 = fm_now_ns();
    cv.deadline = cv.t0 + (int64_t)(timeout * 1e9);
    cv.spin = spin;
    atomic_store(&cv.notify_at, INT64_MAX / 2);
    atomic_store(&cv.entered, 0);
    pthread_t th[MAXW];
    for (int i = 0; i < n; i++) {
        cv.notified[i] = -1;
        pthread_create(&th[i], NULL, waiter, (void *)(intptr_t)i);
        CHECK(fmt_await_u32(&cv.entered, (uint32_t)i + 1, 5));  /* in order */
    }
    /* all n asleep in the kernel */
    CHECK(fmt_await_u32(&cv.c.sleepers, (uint32_t)n, 5));
    uint32_t me = fmt_pid();
    CHECK_ST(fmt_mutex_lock(&cv.m, me, FM_FOREVER, 0), FM_OK);
    CHECK_EQ(fm_cond_waiters(&cv.c), n);
    uint32_t want = k < (uint32_t)n ? k : (uint32_t)n;
    atomic_store(&cv.notify_at, fm_now_ns());
    CHECK_EQ(fm_cond_notify(&cv.c, k), want);
    CHECK_EQ(fm_cond_waiters(&cv.c), n - (int)want);
    CHECK_EQ(fm_cond_notify(&cv.c, 0), 0);
    CHECK_ST(fm_mutex_unlock(&cv.m), FM_OK);
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    int notified = 0, timedout = 0, order = 0;
    double lat[MAXW];
    for (int i = 0; i < n; i++) {
        order += cv.notified[i] != (i < (int)want);      /* the oldest ones */
        if (cv.notified[i] == 1) {
            lat[notified++] = cv.lat[i];
            CHECK_MSG(cv.el[i] < timeout, "notified waiter %d returned after %.3fs", i,
                      cv.el[i]);
        } else if (cv.notified[i] == 0) {
            timedout++;
            CHECK_MSG(cv.el[i] >= timeout, "waiter %d timed out after %.3fs", i, cv.el[i]);
        }
    }
    CHECK_EQ(notified, want);
    CHECK_EQ(timedout, n - (int)want);
    CHECK_EQ(order, 0);
    /* the notified sleepers were woken by the notify, not by a slice end */
    if (notified > 0) {
        double med = fmt_median(lat, notified);
        CHECK_MSG(med < FMT_WAKE_MEDIAN_MAX, "median wake-up latency %.1f ms", med * 1e3);
    }
    CHECK_EQ(fm_cond_waiters(&cv.c), 0);
    CHECK_EQ(cv.c.cancelled, 0);
    CHECK_EQ(cv.c.next_ticket, atomic_load(&cv.c.signaled));
    CHECK_EQ(atomic_load(&cv.c.sleepers), 0);
    CHECK_EQ(fm_mutex_owner(&cv.m), 0);
}

static void test_notify_1_of_3(void) { notify_k(3, 1, 0.3, 0); }
static void test_notify_2_of_3(void) { notify_k(3, 2, 0.3, 0); }
static void test_notify_all_of_3(void) { notify_k(3, UINT32_MAX, 5, 0); }
static void test_notify_5_of_3(void) { notify_k(3, 5, 5, 0); }
static void test_notify_1_of_3_spin(void) { notify_k(3, 1, 0.3, atomic_load(&fm_spin_ns)); }
static void test_notify_all_of_8(void) { notify_k(8, UINT32_MAX, 5, atomic_load(&fm_spin_ns)); }

/* A thread that starts waiting after a notify cannot take it from the
 * thread it was meant for (with anonymous tokens it could). */
static void
test_late_waiter_cannot_steal(void)
{
    fm_mutex_init(&cv.m);
    fm_cond_init(&cv.c);
    cv.t0 = fm_now_ns();
    cv.deadline = cv.t0 + 5 * NS_PER_S;
    cv.spin = 0;
    atomic_store(&cv.entered, 0);
    cv.notified[0] = -1;
    pthread_t th;
    pthread_create(&th, NULL, waiter, (void *)(intptr_t)0);
    CHECK(fmt_await_u32(&cv.c.sleepers, 1, 5));
    uint32_t me = fmt_pid();
    CHECK_ST(fmt_mutex_lock(&cv.m, me, FM_FOREVER, 0), FM_OK);
    CHECK_EQ(fm_cond_notify(&cv.c, 1), 1);
    /* this thread now waits too, right after the notify, spinning: with
     * anonymous tokens it would grab the token before the sleeper wakes */
    int mine = cond_wait(&cv.c, &cv.m, fm_deadline_after(0.2), 10 * NS_PER_MS);
    CHECK_ST(fm_mutex_unlock(&cv.m), FM_OK);
    pthread_join(th, NULL);
    CHECK_EQ(mine, 0);
    CHECK_EQ(cv.notified[0], 1);
    CHECK(cv.el[0] < 1.0);
    CHECK_EQ(fm_cond_waiters(&cv.c), 0);
}

/* ---- a bounded queue on one mutex and two conditions, under load ---- */

#define QCAP 4
#define QPER 50000

static struct {
    fm_mutex m;
    fm_cond not_empty, not_full;
    int items;
    long produced, consumed;
    _Atomic long timeouts, bad;
    _Atomic uint32_t go;
    int64_t spin;
} q;

static void *
q_producer(void *arg)
{
    (void)arg;
    uint32_t me = fmt_pid();
    while (!atomic_load(&q.go))
        sched_yield();
    for (int i = 0; i < QPER; i++) {
        if (fmt_mutex_lock(&q.m, me, FM_FOREVER, q.spin) != FM_OK)
            atomic_fetch_add(&q.bad, 1);
        while (q.items == QCAP)
            if (!cond_wait(&q.not_full, &q.m, fm_deadline_after(10), q.spin))
                atomic_fetch_add(&q.timeouts, 1);
        q.items++;
        q.produced++;
        fm_cond_notify(&q.not_empty, 1);
        fm_mutex_unlock(&q.m);
    }
    return NULL;
}

static void *
q_consumer(void *arg)
{
    (void)arg;
    uint32_t me = fmt_pid();
    while (!atomic_load(&q.go))
        sched_yield();
    for (int i = 0; i < QPER; i++) {
        if (fmt_mutex_lock(&q.m, me, FM_FOREVER, q.spin) != FM_OK)
            atomic_fetch_add(&q.bad, 1);
        while (q.items == 0)
            if (!cond_wait(&q.not_empty, &q.m, fm_deadline_after(10), q.spin))
                atomic_fetch_add(&q.timeouts, 1);
        if (q.items < 1 || q.items > QCAP)
            atomic_fetch_add(&q.bad, 1);
        q.items--;
        q.consumed++;
        fm_cond_notify(&q.not_full, 1);
        fm_mutex_unlock(&q.m);
    }
    return NULL;
}

static void
bounded_queue(int64_t spin)
{
    fm_mutex_init(&q.m);
    fm_cond_init(&q.not_empty);
    fm_cond_init(&q.not_full);
    q.items = 0;
    q.produced = q.consumed = 0;
    atomic_store(&q.timeouts, 0);
    atomic_store(&q.bad, 0);
    atomic_store(&q.go, 0);
    q.spin = spin;
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, i < 2 ? q_producer : q_consumer, NULL);
    atomic_store(&q.go, 1);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ(q.produced, 2L * QPER);
    CHECK_EQ(q.consumed, 2L * QPER);
    CHECK_EQ(q.items, 0);
    CHECK_EQ(atomic_load(&q.timeouts), 0);
    CHECK_EQ(atomic_load(&q.bad), 0);
    CHECK_EQ(fm_cond_waiters(&q.not_empty), 0);
    CHECK_EQ(fm_cond_waiters(&q.not_full), 0);
}

static void test_bounded_queue_spin(void) { bounded_queue(atomic_load(&fm_spin_ns)); }
static void test_bounded_queue_nospin(void) { bounded_queue(0); }

/* ---- waiters in other processes ---- */

#define SHARED_COND_PAGE 16384      /* an fm_cond with its waiter slots: ~4.3 KB */

static void
test_cross_process(void)
{
    struct {
        fm_mutex m;
        fm_cond c;
        _Atomic uint32_t notified;
    } *sh = fmt_shared_page(SHARED_COND_PAGE);
    fm_mutex_init(&sh->m);
    fm_cond_init(&sh->c);
    pid_t kids[3];
    for (int i = 0; i < 3; i++) {
        kids[i] = fmt_fork();
        if (kids[i] == 0) {
            uint32_t me = fmt_pid();
            if (fmt_mutex_lock(&sh->m, me, FM_FOREVER, 0) != FM_OK)
                _exit(1);
            int n = cond_wait(&sh->c, &sh->m, fm_deadline_after(5), 0);
            if (n)
                atomic_fetch_add(&sh->notified, 1);
            fm_mutex_unlock(&sh->m);
            _exit(n ? 0 : 2);
        }
    }
    CHECK(fmt_await_u32(&sh->c.sleepers, 3, 5));
    int64_t t0 = fm_now_ns();
    uint32_t me = fmt_pid();
    CHECK_ST(fmt_mutex_lock(&sh->m, me, FM_FOREVER, 0), FM_OK);
    CHECK_EQ(fm_cond_notify(&sh->c, 1), 1);
    CHECK_ST(fm_mutex_unlock(&sh->m), FM_OK);
    CHECK(fmt_await_u32(&sh->notified, 1, 5));
    CHECK_ST(fmt_mutex_lock(&sh->m, me, FM_FOREVER, 0), FM_OK);
    CHECK_EQ(fm_cond_waiters(&sh->c), 2);
    CHECK_EQ(fm_cond_notify(&sh->c, UINT32_MAX), 2);
    CHECK_ST(fm_mutex_unlock(&sh->m), FM_OK);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(fmt_reap(kids[i]), 0);
    CHECK(fmt_secs_since(t0) < 1.0);
    CHECK_EQ(atomic_load(&sh->notified), 3);
    CHECK_EQ(fm_cond_waiters(&sh->c), 0);
    munmap(sh, SHARED_COND_PAGE);
}

/* ---- a waiter killed in its wait does not swallow a notify ---- */

/* A dead waiter played by hand: its ticket's slot names a process that has
 * exited (the slots are what fm_cond_enter_wait fills in). */
static void
make_dead(fm_cond *c, struct pw w, uint32_t dead_sid)
{
    atomic_store(&c->owner[w.ticket % FM_COND_RING], dead_sid);
}

static void
test_dead_waiter_protocol(void)
{
    fm_cond c;
    fm_cond_init(&c);
    pid_t pid = fmt_fork();
    if (pid == 0)
        _exit(0);
    CHECK_EQ(fmt_reap(pid), 0);
    uint32_t dead = fm_sid_make((uint32_t)pid, FM_IDENT_UNKNOWN);
    CHECK_EQ(fm_cond_repair(&c), 0);

    /* the oldest is dead and notified: the live one gets it on repair */
    struct pw d = pw_enter(&c), a = pw_enter(&c);
    make_dead(&c, d, dead);
    CHECK_EQ(fm_cond_notify(&c, 1), 1);
    CHECK(pw_notified(&c, d) && !pw_notified(&c, a));
    /* the live waiter's slice finds it (no lock held) */
    int64_t t0 = fm_now_ns();
    CHECK_ST(fmt_cond_wait(&c, a.ticket, a.seen, fm_deadline_after(5), 0), FM_RECOVERED);
    CHECK(fmt_secs_since(t0) < 1.0);
    CHECK(!fm_cond_notified(&c, a.ticket, a.seen));
    CHECK_EQ(fm_cond_repair(&c), 1);
    CHECK(fm_cond_notified(&c, a.ticket, a.seen));
    CHECK_EQ(fm_cond_leave_wait(&c, a.ticket, a.seen), 1);
    CHECK_EQ(fm_cond_repair(&c), 0);        /* handed on once */
    CHECK_EQ(fm_cond_waiters(&c), 0);

    /* a waiter that came after the notify does not get it */
    d = pw_enter(&c);
    make_dead(&c, d, dead);
    CHECK_EQ(fm_cond_notify(&c, 1), 1);
    struct pw late = pw_enter(&c);
    CHECK_EQ(fm_cond_repair(&c), 1);
    CHECK(!pw_notified(&c, late));
    CHECK_EQ(fm_cond_waiters(&c), 1);
    CHECK_EQ(fm_cond_leave_wait(&c, late.ticket, late.seen), 0);
    CHECK_EQ(fm_cond_waiters(&c), 0);

    /* notify(2) over a dead, a live and a live: both live ones, in the end */
    struct pw w[3];
    for (int i = 0; i < 3; i++)
        w[i] = pw_enter(&c);
    make_dead(&c, w[0], dead);
    CHECK_EQ(fm_cond_notify(&c, 2), 2);
    CHECK(pw_notified(&c, w[1]) && !pw_notified(&c, w[2]));
    CHECK_EQ(fm_cond_repair(&c), 1);
    CHECK(pw_notified(&c, w[2]));
    CHECK_EQ(fm_cond_leave_wait(&c, w[1].ticket, w[1].seen), 1);
    CHECK_EQ(fm_cond_leave_wait(&c, w[2].ticket, w[2].seen), 1);
    CHECK_EQ(fm_cond_waiters(&c), 0);

    /* dead and not notified yet: cancelled, so a notify is not spent on it */
    d = pw_enter(&c);
    a = pw_enter(&c);
    make_dead(&c, d, dead);
    CHECK_EQ(fm_cond_waiters(&c), 2);
    CHECK_EQ(fm_cond_repair(&c), 1);
    CHECK_EQ(fm_cond_waiters(&c), 1);
    CHECK_EQ(fm_cond_notify(&c, 1), 1);
    CHECK(pw_notified(&c, a));
    CHECK_EQ(fm_cond_leave_wait(&c, a.ticket, a.seen), 1);
    /* ... the newest one too (its ticket is handed back) */
    a = pw_enter(&c);
    d = pw_enter(&c);
    make_dead(&c, d, dead);
    CHECK_EQ(fm_cond_repair(&c), 1);
    CHECK_EQ(fm_cond_waiters(&c), 1);
    CHECK_EQ(fm_cond_notify(&c, UINT32_MAX), 1);
    CHECK_EQ(fm_cond_leave_wait(&c, a.ticket, a.seen), 1);
    CHECK_EQ(fm_cond_waiters(&c), 0);
    CHECK_EQ(fm_cond_repair(&c), 0);

    /* live waiters that were notified but have not taken the lock yet are
     * left alone */
    a = pw_enter(&c);
    CHECK_EQ(fm_cond_notify(&c, 1), 1);
    CHECK_EQ(fm_cond_repair(&c), 0);
    CHECK_EQ(fm_cond_leave_wait(&c, a.ticket, a.seen), 1);
}

/* The case: the oldest waiter, in another process, is SIGKILLed in
 * its wait; notify(1) then lands on it; the other waiter must still wake
 * (well before its 5 s timeout).  Several trials, the kill at a random
 * moment of the first waiter's sleep. */
static void
test_killed_waiter_does_not_swallow_notify(void)
{
    struct {
        fm_mutex m;
        fm_cond c;
    } *sh = fmt_shared_page(SHARED_COND_PAGE);
    for (int trial = 0; trial < 4; trial++) {
        fm_mutex_init(&sh->m);
        fm_cond_init(&sh->c);
        pid_t victim = fmt_fork();
        if (victim == 0) {
            fmt_mutex_lock(&sh->m, fmt_pid(), FM_FOREVER, 0);
            cond_wait(&sh->c, &sh->m, fm_deadline_after(30), 0);
            _exit(1);
        }
        CHECK(fmt_await_u32(&sh->c.sleepers, 1, 5));
        pid_t live = fmt_fork();
        if (live == 0) {
            fmt_mutex_lock(&sh->m, fmt_pid(), FM_FOREVER, 0);
            int n = cond_wait(&sh->c, &sh->m, fm_deadline_after(5), 0);
            fm_mutex_unlock(&sh->m);
            _exit(n ? 0 : 2);
        }
        CHECK(fmt_await_u32(&sh->c.sleepers, 2, 5));
        fmt_sleep_ms(rand() % 60);
        kill(victim, SIGKILL);
        if (trial % 2 == 0)
            fmt_wait_zombie(victim);        /* dead, not reaped yet */
        else
            CHECK_EQ(fmt_reap(victim), 128 + SIGKILL);
        int64_t t0 = fm_now_ns();
        uint32_t me = fmt_pid();
        CHECK_ST(fmt_mutex_lock(&sh->m, me, FM_FOREVER, 0), FM_OK);
        CHECK_EQ(fm_cond_notify(&sh->c, 1), 1);       /* spent on the dead one */
        CHECK_ST(fm_mutex_unlock(&sh->m), FM_OK);
        CHECK_MSG(fmt_reap(live) == 0, "trial %d: the live waiter was not notified", trial);
        double el = fmt_secs_since(t0);
        CHECK_MSG(el < 2.0, "trial %d: woken after %.3f s", trial, el);
        if (trial % 2 == 0)
            CHECK_EQ(fmt_reap(victim), 128 + SIGKILL);
        CHECK_ST(fmt_mutex_lock(&sh->m, me, FM_FOREVER, 0), FM_OK);
        CHECK_EQ(fm_cond_waiters(&sh->c), 0);
        CHECK_EQ(fm_cond_repair(&sh->c), 0);
        CHECK_ST(fm_mutex_unlock(&sh->m), FM_OK);
    }
    munmap(sh, SHARED_COND_PAGE);
}

int
main(void)
{
    fmt_start();
    printf("test_cond\n");
    RUN(test_protocol);
    RUN(test_ring_full);
    RUN(test_ticket_order_wraps);
    RUN(test_wake_latency);
    RUN(test_notify_1_of_3);
    RUN(test_notify_2_of_3);
    RUN(test_notify_all_of_3);
    RUN(test_notify_5_of_3);
    RUN(test_notify_1_of_3_spin);
    RUN(test_notify_all_of_8);
    RUN(test_late_waiter_cannot_steal);
    RUN(test_bounded_queue_spin);
    RUN(test_bounded_queue_nospin);
    RUN(test_cross_process);
    RUN(test_dead_waiter_protocol);
    RUN(test_killed_waiter_does_not_swallow_notify);
    return fmt_finish();
}
