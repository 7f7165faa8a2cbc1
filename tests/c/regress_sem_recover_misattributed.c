/* REGRESSION (csrc/core/prims.c, sem_unrecord / fm_sem_recover, fixed): used to FAIL
 *
 *
 * A post by a process that holds no unit (a hand-off: it releases on
 * another's behalf, which a semaphore allows) forgets "anybody's" unit: the
 * first holder slot with a count, which need not be the process whose unit
 * is released.  The slots then credit a unit to a process that no longer
 * holds one.  When that process exits - normally, holding nothing -
 * fm_sem_recover() "returns" its unit, and the semaphore has more units out
 * than its initial value: a third holder gets into a semaphore of 2.
 *
 * Scenario (initial 2, bounded): B takes a unit (slot 0) and keeps it; A
 * takes a unit (slot 1); the parent releases A's unit for A (forgets slot 0,
 * B's); A exits; the parent takes the free unit.  B and the parent now hold
 * both units, but recovery gives one back for A. */
#include "check.h"

struct shared {
    fm_sem s;
    _Atomic uint32_t b_ready, a_ready, a_go;
};

static void
test_handoff_then_exit(void)
{
    struct shared *sh = fmt_shared_page(4096);
    fm_sem_init(&sh->s, 2, 2);
    pid_t b = fmt_fork();
    if (b == 0) {
        if (fm_sem_trywait(&sh->s, fmt_pid()) != FM_OK)
            _exit(1);
        atomic_store(&sh->b_ready, 1);
        for (;;)
            pause();            /* holds its unit until killed */
    }
    CHECK(fmt_await_u32(&sh->b_ready, 1, 10));
    pid_t a = fmt_fork();
    if (a == 0) {
        if (fm_sem_trywait(&sh->s, fmt_pid()) != FM_OK)
            _exit(1);
        atomic_store(&sh->a_ready, 1);
        fmt_await_u32(&sh->a_go, 1, 10);
        _exit(0);               /* its unit was released for it: holds nothing */
    }
    CHECK(fmt_await_u32(&sh->a_ready, 1, 10));
    uint32_t me = fmt_pid();
    CHECK_EQ(fm_sem_value(&sh->s), 0);
    CHECK_ST(fm_sem_post(&sh->s, me), FM_OK);      /* releases A's unit */
    atomic_store(&sh->a_go, 1);
    CHECK_EQ(fmt_reap(a), 0);
    CHECK_ST(fm_sem_trywait(&sh->s, me), FM_OK);   /* B and we hold the two units */
    CHECK_EQ(fm_sem_value(&sh->s), 0);

    CHECK_MSG(fm_sem_recover(&sh->s) == 0, "recovered a unit for A, which held none");
    CHECK_MSG(fm_sem_trywait(&sh->s, me) == FM_AGAIN,
              "a third unit out of a semaphore of 2");
    kill(b, SIGKILL);
    CHECK_EQ(fmt_reap(b), 128 + SIGKILL);
    munmap(sh, 4096);
}

int
main(void)
{
    fmt_start();
    printf("regress_sem_recover_misattributed (regression test)\n");
    RUN(test_handoff_then_exit);
    return fmt_finish();
}
