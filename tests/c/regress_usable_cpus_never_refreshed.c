/* REGRESSION (csrc/core/futex.c, fm_usable_cpus, commit e5f2c82, fixed): used to FAIL
 *
 *
 *     static _Atomic int64_t checked_at = INT64_MIN;
 *     ...
 *     if (now - atomic_load_explicit(&checked_at, ...) > 100 * 1000 * 1000LL)
 *
 * now - INT64_MIN overflows int64_t: undefined behaviour (UBSan reports it at
 * the first spin of any primitive: `make test-asan` stops in test_futex).
 * Compiled as usual it wraps to a negative number, so the test is false on
 * the first call and on every later one: the affinity is never read,
 * fm_usable_cpus() returns its initial 1 on every machine, and
 * fm_spin_yield() calls sched_yield() after every round of 64 relaxes
 * instead of after FM_SPIN_ROUNDS_BEFORE_YIELD rounds.
 * (Fix: start checked_at at 0 and treat 0 as "never", or test
 * `now > checked_at + 100 ms`, which cannot overflow from INT64_MIN.)
 *
 * Once fixed, move this test into test_futex.c. */
#include <sched.h>

#include "check.h"

/* fm_usable_cpus(): the affinity mask's CPU count, re-read at most every
 * 100 ms.  A child pins itself to one CPU: the count follows, and spinning
 * still works (it yields from the first round). */
static void
test_usable_cpus(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CHECK_EQ(sched_getaffinity(0, sizeof set, &set), 0);
    int n = CPU_COUNT(&set);
    CHECK(n >= 1);
    CHECK_EQ(fm_usable_cpus(), n);
    CHECK_EQ(fm_usable_cpus(), n);
    pid_t pid = fmt_fork();
    if (pid == 0) {
        int first = -1;
        for (int c = 0; c < CPU_SETSIZE; c++)
            if (CPU_ISSET(c, &set)) {
                first = c;
                break;
            }
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(first, &one);
        if (sched_setaffinity(0, sizeof one, &one) != 0)
            _exit(1);
        fmt_sleep_ms(150);          /* past the 100 ms cache */
        if (fm_usable_cpus() != 1)
            _exit(2);
        _Atomic uint32_t word = 3;
        int64_t t0 = fm_now_ns();
        if (fm_spin_while(&word, 3, 2 * NS_PER_MS) != 3 || fmt_secs_since(t0) < 0.002)
            _exit(3);
        _exit(0);
    }
    CHECK_EQ(fmt_reap(pid), 0);
}

int
main(void)
{
    fmt_start();
    printf("regress_usable_cpus_never_refreshed (regression test)\n");
    RUN(test_usable_cpus);
    return fmt_finish();
}
