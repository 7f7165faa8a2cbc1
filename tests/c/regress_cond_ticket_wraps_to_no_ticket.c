/* REGRESSION (csrc/core/prims.c, fm_cond_enter_wait, fixed): used to FAIL.
 *
 * Tickets are a 32-bit counter, and fm_cond_enter_wait() hands out
 * c->next_ticket++ without skipping FM_COND_NO_TICKET (UINT32_MAX), the value
 * that means "ring full, no ticket".  After 2^32 - 1 waits on one Condition
 * (about an hour at a million waits a second), the next waiter draws ticket
 * UINT32_MAX although the ring is empty.  Everything else then treats it as
 * ticketless:
 *   - fm_cond_wait() ends it at any change of `signaled` (spurious wake-up);
 *   - fm_cond_leave_wait() returns 0 at once, without cancelling the ticket,
 *     so a waiter that timed out stays counted (fm_cond_waiters() == 1 with
 *     nobody waiting) ...
 *   - ... and the next notify(1) is spent on that dead ticket: a real
 *     waiter is not woken (a lost wake-up; with no timeout it hangs).
 * The test starts the counters at 2^32 - 1, as if that many waits had been
 * notified already, and plays the waiters by hand in one thread. */
#include "check.h"

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

static int
pw_notified(fm_cond *c, struct pw w)
{
    return fm_cond_wait(c, w.ticket, w.seen, fm_deadline_after(0), 0) == FM_OK;
}

static void
test_ticket_uint32_max(void)
{
    fm_cond c;
    fm_cond_init(&c);
    atomic_store(&c.signaled, UINT32_MAX);  /* 2^32 - 1 waits so far, all notified */
    c.next_ticket = UINT32_MAX;
    CHECK_EQ(fm_cond_waiters(&c), 0);

    /* A waits: the ring is empty, so A should hold a real ticket */
    struct pw a = pw_enter(&c);
    CHECK_MSG(a.ticket != FM_COND_NO_TICKET,
              "an empty ring handed out ticket %#x == FM_COND_NO_TICKET", a.ticket);
    CHECK_EQ(fm_cond_waiters(&c), 1);
    /* A times out and leaves */
    CHECK(!pw_notified(&c, a));
    CHECK_EQ(fm_cond_leave_wait(&c, a.ticket, a.seen), 0);
    CHECK_EQ(fm_cond_waiters(&c), 0);       /* nobody waits any more */

    /* B waits; one notify must wake B */
    struct pw b = pw_enter(&c);
    CHECK_EQ(fm_cond_notify(&c, 1), 1);
    CHECK_MSG(pw_notified(&c, b), "notify(1) was spent on the departed waiter: B not woken");
    CHECK_EQ(fm_cond_leave_wait(&c, b.ticket, b.seen), 1);
    CHECK_EQ(fm_cond_waiters(&c), 0);
}

int
main(void)
{
    fmt_start();
    printf("regress_cond_ticket_wraps_to_no_ticket (regression test)\n");
    RUN(test_ticket_uint32_max);
    return fmt_finish();
}
