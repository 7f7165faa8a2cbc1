/* test_futex.c: the monotonic deadlines, futex wait/wake, spins, pids. */
#include <math.h>

#include "check.h"

static void
test_deadline(void)
{
    int64_t before = fm_now_ns();
    int64_t d0 = fm_deadline_after(0);
    CHECK(d0 <= fm_now_ns());
    CHECK(d0 >= before);
    CHECK(fm_deadline_after(-1.0) <= fm_now_ns());
    CHECK(fm_deadline_after(NAN) <= fm_now_ns());
    CHECK_EQ(fm_deadline_after(1e300), FM_FOREVER);
    CHECK_EQ(fm_deadline_after(INFINITY), FM_FOREVER);
    CHECK(fm_deadline_after(1e9) < FM_FOREVER);     /* 31 years: still a date */

    int64_t t0 = fm_now_ns();
    int64_t d = fm_deadline_after(0.5);
    int64_t t1 = fm_now_ns();
    CHECK(d >= t0 + 500 * NS_PER_MS && d <= t1 + 500 * NS_PER_MS);

    /* monotonic */
    int64_t prev = fm_now_ns();
    int backwards = 0;
    for (int i = 0; i < 100000; i++) {
        int64_t n = fm_now_ns();
        backwards += n < prev;
        prev = n;
    }
    CHECK_EQ(backwards, 0);
}

static void
test_futex_timeout(void)
{
    _Atomic uint32_t word = 7;
    int64_t t0 = fm_now_ns();
    int64_t d = fm_deadline_after(0.1);
    int st, slices = 0;
    while ((st = fm_futex_wait(&word, 7, d)) == FM_EINTR)
        slices++;
    double el = fmt_secs_since(t0);
    CHECK_ST(st, FM_TIMEOUT);
    CHECK_MSG(el >= 0.1 && el < 1.0, "elapsed %.3fs", el);
    /* 0.1 s is longer than one 50 ms slice: at least one FM_EINTR */
    CHECK_MSG(slices >= 1 && slices <= 4, "slices %d", slices);
    CHECK_EQ(atomic_load(&word), 7);
}

static void
test_futex_immediate(void)
{
    _Atomic uint32_t word = 1;
    int64_t t0 = fm_now_ns();
    /* the word differs from `expected`: no sleep */
    CHECK_ST(fm_futex_wait(&word, 0, fm_deadline_after(5)), FM_OK);
    /* a deadline already passed: no sleep */
    CHECK_ST(fm_futex_wait(&word, 1, fm_deadline_after(0)), FM_TIMEOUT);
    CHECK_ST(fm_futex_wait(&word, 1, fm_now_ns() - NS_PER_S), FM_TIMEOUT);
    CHECK(fmt_secs_since(t0) < 0.05);
    /* a wake with nobody waiting is harmless */
    fm_futex_wake(&word, 1);
    fm_futex_wake(&word, INT32_MAX);
    CHECK_EQ(atomic_load(&word), 1);
}

struct waker_arg {
    _Atomic uint32_t word;
    long delay_ms;
};

static void *
waker(void *p)
{
    struct waker_arg *a = p;
    fmt_sleep_ms(a->delay_ms);
    atomic_store(&a->word, 1);
    fm_futex_wake(&a->word, 1);
    return NULL;
}

static void
test_futex_wake(void)
{
    struct waker_arg a = {0, 150};
    pthread_t th;
    pthread_create(&th, NULL, waker, &a);
    int64_t t0 = fm_now_ns();
    int64_t d = fm_deadline_after(5);
    int st;
    /* a FM_OK with the word unchanged would be a spurious wake: wait again */
    do {
        st = fm_futex_wait(&a.word, 0, d);
    } while ((st == FM_EINTR || st == FM_OK) && atomic_load(&a.word) == 0);
    double el = fmt_secs_since(t0);
    pthread_join(th, NULL);
    CHECK_ST(st, FM_OK);
    CHECK_EQ(atomic_load(&a.word), 1);
    CHECK_MSG(el >= 0.1 && el < 1.0, "woken after %.3fs", el);
}

static void
test_spin_while(void)
{
    _Atomic uint32_t word = 5;
    int64_t t0 = fm_now_ns();
    CHECK_EQ(fm_spin_while(&word, 5, 0), 5);              /* no budget: no spin */
    CHECK_EQ(fm_spin_while(&word, 4, 10 * NS_PER_MS), 5); /* already different */
    CHECK(fmt_secs_since(t0) < 0.005);
    t0 = fm_now_ns();
    CHECK_EQ(fm_spin_while(&word, 5, 2 * NS_PER_MS), 5);  /* budget runs out */
    double el = fmt_secs_since(t0);
    CHECK_MSG(el >= 0.002 && el < 0.5, "spun %.4fs", el);
    CHECK(atomic_load(&fm_spin_ns) > 0);
}

static void
test_pid_alive(void)
{
    CHECK_EQ(fm_pid_alive(getpid()), 1);
    CHECK_EQ(fm_pid_alive(getppid()), 1);
    CHECK_EQ(fm_pid_alive(0), 0);
    CHECK_EQ(fm_pid_alive(-1), 0);

    /* a child that exited and is not reaped yet is a zombie: not alive */
    pid_t pid = fmt_fork();
    if (pid == 0)
        _exit(0);
    CHECK_EQ(fmt_wait_zombie(pid), 0);
    CHECK_EQ(kill(pid, 0), 0);        /* still there for kill() ... */
    CHECK_EQ(fm_pid_alive(pid), 0);   /* ... but not alive */
    CHECK_EQ(fmt_reap(pid), 0);
    CHECK_EQ(fm_pid_alive(pid), 0);   /* reaped: gone */

    /* a live child, then SIGKILLed (zombie), then reaped */
    int pfd[2];
    CHECK_EQ(pipe(pfd), 0);
    pid = fmt_fork();
    if (pid == 0) {
        close(pfd[1]);
        char c;
        ssize_t r = read(pfd[0], &c, 1);   /* blocks until the parent closes */
        (void)r;
        _exit(0);
    }
    close(pfd[0]);
    CHECK_EQ(fm_pid_alive(pid), 1);
    kill(pid, SIGKILL);
    CHECK_EQ(fmt_wait_zombie(pid), 0);
    CHECK_EQ(fm_pid_alive(pid), 0);
    CHECK_EQ(fmt_reap(pid), 128 + SIGKILL);
    CHECK_EQ(fm_pid_alive(pid), 0);
    close(pfd[1]);
}

static void
test_self_pid_after_fork(void)
{
    CHECK_EQ(fm_self_pid(), (uint32_t)getpid());
    /* fm_shm_init() registered the fork handler that refreshes the cache */
    pid_t pid = fmt_fork();
    if (pid == 0)
        _exit(fm_self_pid() == (uint32_t)getpid() ? 0 : 1);
    CHECK_EQ(fmt_reap(pid), 0);
    CHECK_EQ(fm_self_pid(), (uint32_t)getpid());
}

int
main(void)
{
    fmt_start();
    printf("test_futex\n");
    RUN(test_deadline);
    RUN(test_futex_timeout);
    RUN(test_futex_immediate);
    RUN(test_futex_wake);
    RUN(test_spin_while);
    RUN(test_pid_alive);
    RUN(test_self_pid_after_fork);
    return fmt_finish();
}
