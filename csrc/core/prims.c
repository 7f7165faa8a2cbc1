/* prims.c: mutex, semaphore, event, condition and sequence words in shared
 * memory.  No Python.h: everything here runs without the GIL.
 *
 * Memory orders: a successful lock/acquire is an acquire operation, an
 * unlock/release a release operation.  The "sleepers" counters pair with the
 * words they guard through seq_cst on both sides: a waker that reads
 * sleepers == 0 after changing the word is ordered before the sleeper's
 * increment, so the sleeper's futex call sees the new word and returns. */
#include "prims.h"
#include "atomics.h"
#include "glibc_compat.h"

#include <limits.h>


static inline int
spin_budget_left(int64_t until)
{
    return fm_now_ns() < until;
}

/* ------------------------------------------------------------------ mutex */

#define MUTEX_WAITERS64 ((uint64_t)FM_MUTEX_WAITERS)

/* What the word records for a holder that says it is `pid`. */
static inline uint64_t
mutex_id_for(uint32_t pid)
{
    uint64_t self = fm_self_id();
    return (uint32_t)self == pid ? self : (uint64_t)pid;
}

void
fm_mutex_init(fm_mutex *m)
{
    atomic_store_explicit(&m->all, 0, RLX);
}

int
fm_mutex_trylock(fm_mutex *m, uint32_t pid)
{
    uint64_t expected = 0;
    if (atomic_compare_exchange_strong_explicit(&m->all, &expected, mutex_id_for(pid), ACQ,
                                                RLX))
        return FM_OK;
    return FM_AGAIN;
}

uint32_t
fm_mutex_owner(const fm_mutex *m)
{
    return (uint32_t)atomic_load_explicit(&((fm_mutex *)m)->all, RLX) & FM_MUTEX_PIDMASK;
}

uint64_t
fm_mutex_owner_id(const fm_mutex *m)
{
    return atomic_load_explicit(&((fm_mutex *)m)->all, RLX) & ~MUTEX_WAITERS64;
}

/* The holder of word c is dead: take the lock over, keeping the waiters bit
 * (others may sleep on it).  Only one waiter's CAS can succeed. */
static int
mutex_take_over(fm_mutex *m, uint64_t c, uint64_t me)
{
    return atomic_compare_exchange_strong_explicit(
        &m->all, &c, me | MUTEX_WAITERS64, ACQ, RLX);
}

/* Is the holder recorded in c gone (dead, or its pid reused)?  A holder
 * with this process's own identity is alive by definition. */
static int
mutex_holder_gone(uint64_t c, uint64_t me)
{
    uint64_t owner = c & ~MUTEX_WAITERS64;
    if (owner == me)
        return 0;
    return !fm_pid_alive_as((pid_t)((uint32_t)owner & FM_MUTEX_PIDMASK),
                            (uint32_t)(owner >> 32));
}

int
fm_mutex_lock(fm_mutex *m, uint32_t pid, int64_t deadline_ns, int64_t spin_ns)
{
    uint64_t me = mutex_id_for(pid);
    uint64_t c = 0;
    if (atomic_compare_exchange_strong_explicit(&m->all, &c, me, ACQ, RLX))
        return FM_OK;

    int64_t until = fm_spin_end(spin_ns, deadline_ns);
    if (until > 0) {
        unsigned round = 0;
        do {
            for (int i = 0; i < 64; i++) {
                fm_cpu_relax();
                c = atomic_load_explicit(&m->all, RLX);
                if (c == 0 && atomic_compare_exchange_weak_explicit(
                                  &m->all, &c, me, ACQ, RLX)) {
                    fm_spin_outcome(1);
                    return FM_OK;
                }
            }
            fm_spin_yield(round++);
        } while (spin_budget_left(until));
        fm_spin_outcome(0);
    }

    /* Sleep phase.  Whoever has slept takes the lock with the waiters bit
     * set, since it cannot know whether others still sleep. */
    for (;;) {
        c = atomic_load_explicit(&m->all, RLX);
        if (c == 0) {
            if (atomic_compare_exchange_weak_explicit(
                    &m->all, &c, me | MUTEX_WAITERS64, ACQ, RLX))
                return FM_OK;
            continue;
        }
        if (!(c & MUTEX_WAITERS64)) {
            uint64_t want = c | MUTEX_WAITERS64;
            if (!atomic_compare_exchange_weak_explicit(&m->all, &c, want, RLX, RLX))
                continue;
            c = want;
        }
        /* the futex compares the low half: pid and waiters bit */
        int st = fm_futex_wait(&m->word, (uint32_t)c, deadline_ns);
        if (st == FM_OK)
            continue;
        if (st == FM_TIMEOUT || st == FM_ERRNO)
            return st;
        /* FM_EINTR: a signal or the end of a slice.  A wait that runs this
         * long checks that the holder still exists. */
        if (mutex_holder_gone(c, me)) {
            if (mutex_take_over(m, c, me))
                return FM_RECOVERED;
            continue;
        }
        return FM_EINTR;
    }
}

int
fm_mutex_unlock(fm_mutex *m)
{
    uint64_t old = atomic_exchange_explicit(&m->all, 0, REL);
    if (old == 0)
        return FM_OVERFLOW;
    if (old & MUTEX_WAITERS64)
        fm_futex_wake(&m->word, 1);
    return FM_OK;
}

/* -------------------------------------------------------------- semaphore */

/* a slot: (holder's short identity << 32) | units it holds */
#define SLOT_SID(s) ((uint32_t)((s) >> 32))
#define SLOT_COUNT(s) ((uint32_t)(s))
#define SLOT_MAKE(sid, n) (((uint64_t)(sid) << 32) | (uint32_t)(n))

void
fm_sem_init(fm_sem *s, uint32_t value, uint32_t maxvalue)
{
    atomic_store_explicit(&s->value, value, RLX);
    atomic_store_explicit(&s->sleepers, 0, RLX);
    s->maxvalue = maxvalue;
    s->initial = value;
    atomic_store_explicit(&s->handed_off, 0, RLX);
    for (int i = 0; i < FM_SEM_SLOTS; i++)
        atomic_store_explicit(&s->holders[i], 0, RLX);
}

/* Note one unit held by sid.  Best effort: with every slot taken by other
 * live holders the unit goes unrecorded (and is not recoverable). */
static void
sem_record(fm_sem *s, uint32_t sid)
{
    for (int i = 0; i < FM_SEM_SLOTS; i++) {
        uint64_t v = atomic_load_explicit(&s->holders[i], RLX);
        while (SLOT_SID(v) == sid && SLOT_COUNT(v) > 0) {
            if (atomic_compare_exchange_weak_explicit(&s->holders[i], &v, v + 1, RLX, RLX))
                return;
        }
    }
    for (int i = 0; i < FM_SEM_SLOTS; i++) {
        uint64_t v = atomic_load_explicit(&s->holders[i], RLX);
        while (SLOT_COUNT(v) == 0) {
            if (atomic_compare_exchange_weak_explicit(&s->holders[i], &v,
                                                      SLOT_MAKE(sid, 1), RLX, RLX))
                return;
        }
    }
}

/* Forget one unit of pid's.  A release by a process that holds no unit (a
 * hand-off: releasing on another's behalf, or a semaphore used as a signal)
 * cannot say whose unit it returns, so from then on the slots cannot be
 * trusted and the semaphore stops recovering units (fm_sem_recover). */
static void
sem_unrecord(fm_sem *s, uint32_t sid)
{
    for (int i = 0; i < FM_SEM_SLOTS; i++) {
        uint64_t v = atomic_load_explicit(&s->holders[i], RLX);
        while (SLOT_COUNT(v) > 0 && SLOT_SID(v) == sid) {
            if (atomic_compare_exchange_weak_explicit(&s->holders[i], &v, v - 1, RLX, RLX))
                return;
        }
    }
    atomic_store_explicit(&s->handed_off, 1, RLX);
}

uint32_t
fm_sem_value(const fm_sem *s)
{
    return atomic_load_explicit(&((fm_sem *)s)->value, RLX);
}

int
fm_sem_trywait(fm_sem *s, uint32_t pid)
{
    uint32_t v = atomic_load_explicit(&s->value, RLX);
    while (v > 0) {
        if (atomic_compare_exchange_weak_explicit(&s->value, &v, v - 1, ACQ, RLX)) {
            sem_record(s, fm_sid_for(pid));
            return FM_OK;
        }
    }
    return FM_AGAIN;
}

int
fm_sem_wait(fm_sem *s, uint32_t pid, int64_t deadline_ns, int64_t spin_ns)
{
    if (fm_sem_trywait(s, pid) == FM_OK)
        return FM_OK;
    int64_t until = fm_spin_end(spin_ns, deadline_ns);
    if (until > 0) {
        do {
            if (fm_spin_while(&s->value, 0, until - fm_now_ns()) != 0 &&
                fm_sem_trywait(s, pid) == FM_OK)
                return FM_OK;
        } while (spin_budget_left(until));
    }
    for (;;) {
        if (fm_sem_trywait(s, pid) == FM_OK)
            return FM_OK;
        atomic_fetch_add_explicit(&s->sleepers, 1, SEQ);
        int st = FM_OK;
        if (atomic_load_explicit(&s->value, SEQ) == 0)
            st = fm_futex_wait(&s->value, 0, deadline_ns);
        atomic_fetch_sub_explicit(&s->sleepers, 1, RLX);
        if (st == FM_OK)
            continue;
        if (fm_sem_trywait(s, pid) == FM_OK)
            return FM_OK;
        if (st == FM_EINTR && fm_sem_recover(s) > 0)
            continue;
        return st;
    }
}

int
fm_sem_post(fm_sem *s, uint32_t pid)
{
    uint32_t v = atomic_load_explicit(&s->value, RLX);
    if (v >= s->maxvalue)
        return FM_OVERFLOW;
    /* Forget the unit before giving it back: a death in between loses a
     * unit for recovery, but never gives one back twice. */
    uint32_t sid = fm_sid_for(pid);
    sem_unrecord(s, sid);
    for (;;) {
        if (v >= s->maxvalue) {
            sem_record(s, sid);
            return FM_OVERFLOW;
        }
        if (atomic_compare_exchange_weak_explicit(&s->value, &v, v + 1, SEQ, RLX))
            break;
    }
    if (atomic_load_explicit(&s->sleepers, SEQ) > 0)
        fm_futex_wake(&s->value, 1);
    return FM_OK;
}

uint32_t
fm_sem_recover(fm_sem *s)
{
    uint32_t recovered = 0;
    if (atomic_load_explicit(&s->handed_off, RLX))
        return 0;
    for (int i = 0; i < FM_SEM_SLOTS; i++) {
        uint64_t v = atomic_load_explicit(&s->holders[i], RLX);
        if (SLOT_COUNT(v) == 0 || fm_sid_alive(SLOT_SID(v)))
            continue;
        if (!atomic_compare_exchange_strong_explicit(&s->holders[i], &v, 0, RLX, RLX))
            continue;
        /* Units out can't exceed the initial value: a semaphore used as a
         * signal (initial 0) never gets a consumed signal back. */
        uint32_t n = SLOT_COUNT(v);
        uint32_t cur = atomic_load_explicit(&s->value, RLX);
        for (;;) {
            uint32_t out = s->initial > cur ? s->initial - cur : 0;
            uint32_t give = n < out ? n : out;
            if (give == 0)
                break;
            if (atomic_compare_exchange_weak_explicit(&s->value, &cur, cur + give, SEQ, RLX)) {
                recovered += give;
                break;
            }
        }
    }
    if (recovered && atomic_load_explicit(&s->sleepers, SEQ) > 0)
        fm_futex_wake(&s->value, (int)recovered);
    return recovered;
}

/* ------------------------------------------------------------------ event */

void
fm_event_init(fm_event *e)
{
    atomic_store_explicit(&e->flag, 0, RLX);
    atomic_store_explicit(&e->sleepers, 0, RLX);
}

void
fm_event_set(fm_event *e)
{
    atomic_store_explicit(&e->flag, 1, SEQ);
    if (atomic_load_explicit(&e->sleepers, SEQ) > 0)
        fm_futex_wake(&e->flag, INT_MAX);
}

void
fm_event_clear(fm_event *e)
{
    atomic_store_explicit(&e->flag, 0, REL);
}

int
fm_event_is_set(const fm_event *e)
{
    return atomic_load_explicit(&((fm_event *)e)->flag, ACQ) != 0;
}

int
fm_event_wait(fm_event *e, int64_t deadline_ns, int64_t spin_ns)
{
    int64_t until = fm_spin_end(spin_ns, deadline_ns);
    if (until > 0 && fm_spin_while(&e->flag, 0, until - fm_now_ns()) != 0)
        return FM_OK;
    for (;;) {
        atomic_fetch_add_explicit(&e->sleepers, 1, SEQ);
        int st = FM_OK;
        if (atomic_load_explicit(&e->flag, SEQ) == 0)
            st = fm_futex_wait(&e->flag, 0, deadline_ns);
        atomic_fetch_sub_explicit(&e->sleepers, 1, RLX);
        if (atomic_load_explicit(&e->flag, ACQ) != 0)
            return FM_OK;
        if (st != FM_OK)
            return st;
    }
}

/* -------------------------------------------------------------- condition */

#define TICKET_BEFORE(a, b) ((int32_t)((a) - (b)) < 0)   /* wrap-safe a < b */
#define TICKET_BIT(t) (1u << ((t) & 31u))
#define SLOT(t) ((t) % FM_COND_RING)

static inline int
cancel_bit(const fm_cond *c, uint32_t t)
{
    uint32_t i = SLOT(t);
    return (c->cancel_bits[i / 8] >> (i % 8)) & 1;
}

static inline void
set_cancel_bit(fm_cond *c, uint32_t t, int on)
{
    uint32_t i = SLOT(t);
    if (on)
        c->cancel_bits[i / 8] |= (uint8_t)(1u << (i % 8));
    else
        c->cancel_bits[i / 8] &= (uint8_t)~(1u << (i % 8));
}

static inline uint32_t
next_ticket(const fm_cond *c)
{
    return atomic_load_explicit(&((fm_cond *)c)->next_ticket, RLX);
}

static inline void
set_next_ticket(fm_cond *c, uint32_t t)
{
    atomic_store_explicit(&c->next_ticket, t, RLX);
}

/* lock held: does ticket t's slot still describe t (no newer ticket has
 * taken the slot, and t was not handed back)? */
static inline int
slot_is_ticket(const fm_cond *c, uint32_t t)
{
    uint32_t ahead = next_ticket(c) - t;
    return ahead >= 1 && ahead <= FM_COND_RING;
}

static inline void
clear_owner(fm_cond *c, uint32_t t)
{
    if (slot_is_ticket(c, t))
        atomic_store_explicit(&c->owner[SLOT(t)], 0, RLX);
}

void
fm_cond_init(fm_cond *c)
{
    atomic_store_explicit(&c->signaled, 0, RLX);
    atomic_store_explicit(&c->sleepers, 0, RLX);
    set_next_ticket(c, 0);
    c->cancelled = 0;
    c->horizon = 0;
    c->_pad = 0;
    for (size_t i = 0; i < sizeof c->cancel_bits; i++)
        c->cancel_bits[i] = 0;
    for (size_t i = 0; i < FM_COND_RING; i++)
        atomic_store_explicit(&c->owner[i], 0, RLX);
}

uint32_t
fm_cond_signaled(const fm_cond *c)
{
    return atomic_load_explicit(&((fm_cond *)c)->signaled, ACQ);
}

/* lock held: move signaled past cancelled tickets at its front. */
static void cond_skip_cancelled(fm_cond *c);

uint32_t
fm_cond_enter_wait(fm_cond *c)
{
    uint32_t t = next_ticket(c);
    if (t - atomic_load_explicit(&c->signaled, RLX) >= FM_COND_RING)
        return FM_COND_NO_TICKET;
    if (t == FM_COND_NO_TICKET) {
        /* Once every 2^32 tickets the counter reaches the value that means
         * "no ticket": spend it as a cancelled ticket, which notify skips. */
        atomic_store_explicit(&c->owner[SLOT(t)], 0, RLX);
        set_cancel_bit(c, t, 1);
        c->cancelled++;
        set_next_ticket(c, ++t);
        cond_skip_cancelled(c);
        if (t - atomic_load_explicit(&c->signaled, RLX) >= FM_COND_RING)
            return FM_COND_NO_TICKET;
    }
    atomic_store_explicit(&c->owner[SLOT(t)], fm_self_sid(), RLX);
    set_next_ticket(c, t + 1);
    return t;
}

/* Is the wait for `ticket` over?  A ticketless waiter's is over once
 * signaled has moved from what it saw. */
static inline int
cond_done(const fm_cond *c, uint32_t ticket, uint32_t seen)
{
    uint32_t s = atomic_load_explicit(&((fm_cond *)c)->signaled, ACQ);
    if (ticket == FM_COND_NO_TICKET)
        return s != seen;
    return TICKET_BEFORE(ticket, s);
}

int
fm_cond_notified(const fm_cond *c, uint32_t ticket, uint32_t seen)
{
    return cond_done(c, ticket, seen);
}

/* Lock NOT held (a waiter at the end of a slice): is there a notified
 * ticket whose waiter is gone without taking its notification?  Reads
 * racily what the lock holder writes; a wrong guess only costs the caller
 * a repair under the lock that finds nothing, or a look one slice later.
 * Only the owners of notified tickets not yet consumed are checked: in
 * steady state there are none (each waiter clears its slot on leaving),
 * so the slice costs no system call. */
static int
cond_dead_notified(const fm_cond *c)
{
    uint32_t s = atomic_load_explicit(&((fm_cond *)c)->signaled, ACQ);
    uint32_t t = next_ticket(c) - FM_COND_RING;
    uint32_t self = fm_self_sid();
    for (; TICKET_BEFORE(t, s); t++) {
        uint32_t o = atomic_load_explicit(&((fm_cond *)c)->owner[SLOT(t)], RLX);
        if (o != 0 && o != self && !fm_sid_alive(o))
            return 1;
    }
    return 0;
}

int
fm_cond_wait(fm_cond *c, uint32_t ticket, uint32_t seen, int64_t deadline_ns, int64_t spin_ns)
{
    if (cond_done(c, ticket, seen))
        return FM_OK;
    int64_t until = fm_spin_end(spin_ns, deadline_ns);
    if (until > 0) {
        unsigned round = 0;
        do {
            for (int i = 0; i < 64; i++) {
                fm_cpu_relax();
                if (cond_done(c, ticket, seen)) {
                    fm_spin_outcome(1);
                    return FM_OK;
                }
            }
            fm_spin_yield(round++);
        } while (spin_budget_left(until));
        fm_spin_outcome(0);
    }
    uint32_t bits = ticket == FM_COND_NO_TICKET ? 0xffffffffu : TICKET_BIT(ticket);
    for (;;) {
        atomic_fetch_add_explicit(&c->sleepers, 1, SEQ);
        uint32_t s = atomic_load_explicit(&c->signaled, SEQ);
        int st = FM_OK;
        if (!cond_done(c, ticket, seen))
            st = fm_futex_wait_bits(&c->signaled, s, deadline_ns, bits);
        atomic_fetch_sub_explicit(&c->sleepers, 1, RLX);
        if (cond_done(c, ticket, seen))
            return FM_OK;
        if (st == FM_EINTR && cond_dead_notified(c))
            return FM_RECOVERED;
        if (st != FM_OK)
            return st;
    }
}

static void
cond_skip_cancelled(fm_cond *c)
{
    uint32_t s = atomic_load_explicit(&c->signaled, RLX);
    uint32_t s0 = s;
    while (s != next_ticket(c) && cancel_bit(c, s)) {
        set_cancel_bit(c, s, 0);
        c->cancelled--;
        s++;
    }
    if (s != s0)
        atomic_store_explicit(&c->signaled, s, SEQ);
}

/* lock held: cancel a ticket that is not notified. */
static void
cond_cancel(fm_cond *c, uint32_t ticket)
{
    clear_owner(c, ticket);
    uint32_t next = next_ticket(c);
    if (ticket == next - 1) {
        /* the newest ticket: hand it back, and any cancelled ones below */
        next--;
        while (next != atomic_load_explicit(&c->signaled, RLX) && cancel_bit(c, next - 1)) {
            next--;
            set_cancel_bit(c, next, 0);
            c->cancelled--;
        }
        set_next_ticket(c, next);
    }
    else {
        set_cancel_bit(c, ticket, 1);
        c->cancelled++;
        cond_skip_cancelled(c);
    }
}

int
fm_cond_leave_wait(fm_cond *c, uint32_t ticket, uint32_t seen)
{
    if (cond_done(c, ticket, seen)) {
        if (ticket != FM_COND_NO_TICKET)
            clear_owner(c, ticket);
        return 1;
    }
    if (ticket == FM_COND_NO_TICKET)
        return 0;
    cond_cancel(c, ticket);
    return 0;
}

/* lock held: notify up to n waiters, oldest first, among the tickets
 * before `limit`; returns how many. */
static uint32_t
cond_notify_before(fm_cond *c, uint32_t n, uint32_t limit)
{
    uint32_t s0 = atomic_load_explicit(&c->signaled, RLX);
    uint32_t s = s0, woken = 0, bits = 0;
    while (woken < n && TICKET_BEFORE(s, limit)) {
        if (cancel_bit(c, s)) {
            set_cancel_bit(c, s, 0);
            c->cancelled--;
        }
        else {
            woken++;
            bits |= TICKET_BIT(s);
        }
        s++;
    }
    if (s == s0)
        return 0;
    atomic_store_explicit(&c->signaled, s, SEQ);
    cond_skip_cancelled(c);
    if (atomic_load_explicit(&c->sleepers, SEQ) > 0) {
        /* ticketless waiters sleep on every bit, so any wake reaches them */
        fm_futex_wake_bits(&c->signaled, INT_MAX, bits ? bits : 0xffffffffu);
    }
    return woken;
}

uint32_t
fm_cond_notify(fm_cond *c, uint32_t n)
{
    uint32_t next = next_ticket(c);
    if (atomic_load_explicit(&c->signaled, RLX) == next)
        return 0;
    c->horizon = next;
    return cond_notify_before(c, n, next);
}

uint32_t
fm_cond_repair(fm_cond *c)
{
    uint32_t next = next_ticket(c);
    uint32_t s = atomic_load_explicit(&c->signaled, RLX);
    uint32_t dead = 0, owed = 0;
    /* every slot, each as the newest ticket issued for it */
    for (uint32_t t = next - FM_COND_RING; t != next; t++) {
        uint32_t o = atomic_load_explicit(&c->owner[SLOT(t)], RLX);
        if (o == 0 || fm_sid_alive(o))
            continue;
        dead++;
        if (TICKET_BEFORE(t, s)) {
            /* notified, never taken */
            atomic_store_explicit(&c->owner[SLOT(t)], 0, RLX);
            owed++;
        }
        else if (!cancel_bit(c, t)) {
            cond_cancel(c, t);
        }
    }
    /* Hand the notifications on to waiters that were waiting at the last
     * notify; a later waiter must not get one (see the top of prims.h). */
    if (owed > 0) {
        uint32_t limit = c->horizon;
        if (TICKET_BEFORE(next_ticket(c), limit))
            limit = next_ticket(c);
        cond_notify_before(c, owed, limit);
    }
    return dead;
}

uint32_t
fm_cond_waiters(const fm_cond *c)
{
    uint32_t s = atomic_load_explicit(&((fm_cond *)c)->signaled, RLX);
    return next_ticket(c) - s - c->cancelled;
}

/* ---------------------------------------------------------- sequence word */

void
fm_seq_init(fm_seq *q)
{
    atomic_store_explicit(&q->seq, 0, RLX);
    atomic_store_explicit(&q->sleepers, 0, RLX);
}

uint32_t
fm_seq_read(const fm_seq *q)
{
    return atomic_load_explicit(&((fm_seq *)q)->seq, ACQ);
}

void
fm_seq_bump_all(fm_seq *q)
{
    atomic_fetch_add_explicit(&q->seq, 1, SEQ);
    if (atomic_load_explicit(&q->sleepers, SEQ) > 0)
        fm_futex_wake(&q->seq, INT_MAX);
}

int
fm_seq_wait(fm_seq *q, uint32_t seen, int64_t deadline_ns, int64_t spin_ns)
{
    int64_t until = fm_spin_end(spin_ns, deadline_ns);
    if (until > 0 && fm_spin_while(&q->seq, seen, until - fm_now_ns()) != seen)
        return FM_OK;
    for (;;) {
        atomic_fetch_add_explicit(&q->sleepers, 1, SEQ);
        int st = FM_OK;
        if (atomic_load_explicit(&q->seq, SEQ) == seen)
            st = fm_futex_wait(&q->seq, seen, deadline_ns);
        atomic_fetch_sub_explicit(&q->sleepers, 1, RLX);
        if (atomic_load_explicit(&q->seq, ACQ) != seen)
            return FM_OK;
        if (st != FM_OK)
            return st;
    }
}
