/* prims.c: mutex, semaphore, event, condition and sequence words in shared
 * memory.  No Python.h: everything here runs without the GIL.
 *
 * Memory orders: a successful lock/acquire is an acquire operation, an
 * unlock/release a release operation.  The "sleepers" counters pair with the
 * words they guard through seq_cst on both sides: a waker that reads
 * sleepers == 0 after changing the word is ordered before the sleeper's
 * increment, so the sleeper's futex call sees the new word and returns. */
#include "prims.h"

#include <limits.h>

#define SEQ memory_order_seq_cst
#define ACQ memory_order_acquire
#define REL memory_order_release
#define RLX memory_order_relaxed

static inline int
spin_budget_left(int64_t until)
{
    return fm_now_ns() < until;
}

/* When a spin of spin_ns starting now must end: never past the deadline,
 * so a timeout of 0 does not spin. */
static inline int64_t
spin_end(int64_t spin_ns, int64_t deadline_ns)
{
    if (spin_ns <= 0)
        return 0;
    int64_t until = fm_now_ns() + spin_ns;
    return until < deadline_ns ? until : deadline_ns;
}

/* ------------------------------------------------------------------ mutex */

void
fm_mutex_init(fm_mutex *m)
{
    atomic_store_explicit(&m->word, 0, RLX);
    m->_pad = 0;
}

int
fm_mutex_trylock(fm_mutex *m, uint32_t pid)
{
    uint32_t expected = 0;
    if (atomic_compare_exchange_strong_explicit(&m->word, &expected, pid, ACQ, RLX))
        return FM_OK;
    return FM_AGAIN;
}

uint32_t
fm_mutex_owner(const fm_mutex *m)
{
    return atomic_load_explicit(&((fm_mutex *)m)->word, RLX) & FM_MUTEX_PIDMASK;
}

/* The holder of word c is dead: take the lock over, keeping the waiters bit
 * (others may sleep on it).  Only one waiter's CAS can succeed. */
static int
mutex_take_over(fm_mutex *m, uint32_t c, uint32_t pid)
{
    return atomic_compare_exchange_strong_explicit(
        &m->word, &c, pid | FM_MUTEX_WAITERS, ACQ, RLX);
}

int
fm_mutex_lock(fm_mutex *m, uint32_t pid, int64_t deadline_ns, int64_t spin_ns)
{
    uint32_t c = 0;
    if (atomic_compare_exchange_strong_explicit(&m->word, &c, pid, ACQ, RLX))
        return FM_OK;

    int64_t until = spin_end(spin_ns, deadline_ns);
    if (until > 0) {
        unsigned round = 0;
        do {
            for (int i = 0; i < 64; i++) {
                fm_cpu_relax();
                c = atomic_load_explicit(&m->word, RLX);
                if (c == 0 && atomic_compare_exchange_weak_explicit(
                                  &m->word, &c, pid, ACQ, RLX))
                    return FM_OK;
            }
            fm_spin_yield(round++);
        } while (spin_budget_left(until));
    }

    /* Sleep phase.  Whoever has slept takes the lock with the waiters bit
     * set, since it cannot know whether others still sleep. */
    for (;;) {
        c = atomic_load_explicit(&m->word, RLX);
        if (c == 0) {
            if (atomic_compare_exchange_weak_explicit(
                    &m->word, &c, pid | FM_MUTEX_WAITERS, ACQ, RLX))
                return FM_OK;
            continue;
        }
        if (!(c & FM_MUTEX_WAITERS)) {
            uint32_t want = c | FM_MUTEX_WAITERS;
            if (!atomic_compare_exchange_weak_explicit(&m->word, &c, want, RLX, RLX))
                continue;
            c = want;
        }
        int st = fm_futex_wait(&m->word, c, deadline_ns);
        if (st == FM_OK)
            continue;
        if (st == FM_TIMEOUT || st == FM_ERRNO)
            return st;
        /* FM_EINTR: a signal or the end of a slice.  A wait that runs this
         * long checks that the holder still exists. */
        uint32_t owner = c & FM_MUTEX_PIDMASK;
        if (owner != pid && !fm_pid_alive((pid_t)owner)) {
            if (mutex_take_over(m, c, pid))
                return FM_RECOVERED;
            continue;
        }
        return FM_EINTR;
    }
}

int
fm_mutex_unlock(fm_mutex *m)
{
    uint32_t old = atomic_exchange_explicit(&m->word, 0, REL);
    if (old == 0)
        return FM_OVERFLOW;
    if (old & FM_MUTEX_WAITERS)
        fm_futex_wake(&m->word, 1);
    return FM_OK;
}

/* -------------------------------------------------------------- semaphore */

#define SLOT_PID(s) ((uint32_t)((s) >> 32))
#define SLOT_COUNT(s) ((uint32_t)(s))
#define SLOT_MAKE(pid, n) (((uint64_t)(pid) << 32) | (uint32_t)(n))

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

/* Note one unit held by pid.  Best effort: with every slot taken by other
 * live holders the unit goes unrecorded (and is not recoverable). */
static void
sem_record(fm_sem *s, uint32_t pid)
{
    for (int i = 0; i < FM_SEM_SLOTS; i++) {
        uint64_t v = atomic_load_explicit(&s->holders[i], RLX);
        while (SLOT_PID(v) == pid && SLOT_COUNT(v) > 0) {
            if (atomic_compare_exchange_weak_explicit(&s->holders[i], &v, v + 1, RLX, RLX))
                return;
        }
    }
    for (int i = 0; i < FM_SEM_SLOTS; i++) {
        uint64_t v = atomic_load_explicit(&s->holders[i], RLX);
        while (SLOT_COUNT(v) == 0) {
            if (atomic_compare_exchange_weak_explicit(&s->holders[i], &v,
                                                      SLOT_MAKE(pid, 1), RLX, RLX))
                return;
        }
    }
}

/* Forget one unit of pid's.  A release by a process that holds no unit (a
 * hand-off: releasing on another's behalf, or a semaphore used as a signal)
 * cannot say whose unit it returns, so from then on the slots cannot be
 * trusted and the semaphore stops recovering units (fm_sem_recover). */
static void
sem_unrecord(fm_sem *s, uint32_t pid)
{
    for (int i = 0; i < FM_SEM_SLOTS; i++) {
        uint64_t v = atomic_load_explicit(&s->holders[i], RLX);
        while (SLOT_COUNT(v) > 0 && SLOT_PID(v) == pid) {
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
            sem_record(s, pid);
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
    int64_t until = spin_end(spin_ns, deadline_ns);
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
    sem_unrecord(s, pid);
    for (;;) {
        if (v >= s->maxvalue) {
            sem_record(s, pid);
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
        if (SLOT_COUNT(v) == 0 || fm_pid_alive((pid_t)SLOT_PID(v)))
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
    int64_t until = spin_end(spin_ns, deadline_ns);
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

static inline int
cancel_bit(const fm_cond *c, uint32_t t)
{
    uint32_t i = t % FM_COND_RING;
    return (c->cancel_bits[i / 8] >> (i % 8)) & 1;
}

static inline void
set_cancel_bit(fm_cond *c, uint32_t t, int on)
{
    uint32_t i = t % FM_COND_RING;
    if (on)
        c->cancel_bits[i / 8] |= (uint8_t)(1u << (i % 8));
    else
        c->cancel_bits[i / 8] &= (uint8_t)~(1u << (i % 8));
}

void
fm_cond_init(fm_cond *c)
{
    atomic_store_explicit(&c->signaled, 0, RLX);
    atomic_store_explicit(&c->sleepers, 0, RLX);
    c->next_ticket = 0;
    c->cancelled = 0;
    for (size_t i = 0; i < sizeof c->cancel_bits; i++)
        c->cancel_bits[i] = 0;
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
    if (c->next_ticket - atomic_load_explicit(&c->signaled, RLX) >= FM_COND_RING)
        return FM_COND_NO_TICKET;
    if (c->next_ticket == FM_COND_NO_TICKET) {
        /* Once every 2^32 tickets the counter reaches the value that means
         * "no ticket": spend it as a cancelled ticket, which notify skips. */
        set_cancel_bit(c, c->next_ticket, 1);
        c->cancelled++;
        c->next_ticket++;
        cond_skip_cancelled(c);
        if (c->next_ticket - atomic_load_explicit(&c->signaled, RLX) >= FM_COND_RING)
            return FM_COND_NO_TICKET;
    }
    return c->next_ticket++;
}

/* Is the wait for `ticket` over?  A ticketless waiter's is over once
 * signaled has moved from what it saw. */
static inline int
cond_done(fm_cond *c, uint32_t ticket, uint32_t seen)
{
    uint32_t s = atomic_load_explicit(&c->signaled, ACQ);
    if (ticket == FM_COND_NO_TICKET)
        return s != seen;
    return TICKET_BEFORE(ticket, s);
}

int
fm_cond_wait(fm_cond *c, uint32_t ticket, uint32_t seen, int64_t deadline_ns, int64_t spin_ns)
{
    if (cond_done(c, ticket, seen))
        return FM_OK;
    int64_t until = spin_end(spin_ns, deadline_ns);
    if (until > 0) {
        unsigned round = 0;
        do {
            for (int i = 0; i < 64; i++) {
                fm_cpu_relax();
                if (cond_done(c, ticket, seen))
                    return FM_OK;
            }
            fm_spin_yield(round++);
        } while (spin_budget_left(until));
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
        if (st != FM_OK)
            return st;
    }
}

static void
cond_skip_cancelled(fm_cond *c)
{
    uint32_t s = atomic_load_explicit(&c->signaled, RLX);
    uint32_t s0 = s;
    while (s != c->next_ticket && cancel_bit(c, s)) {
        set_cancel_bit(c, s, 0);
        c->cancelled--;
        s++;
    }
    if (s != s0)
        atomic_store_explicit(&c->signaled, s, SEQ);
}

int
fm_cond_leave_wait(fm_cond *c, uint32_t ticket, uint32_t seen)
{
    if (cond_done(c, ticket, seen))
        return 1;
    if (ticket == FM_COND_NO_TICKET)
        return 0;
    if (ticket == c->next_ticket - 1) {
        /* the newest ticket: hand it back, and any cancelled ones below */
        c->next_ticket--;
        while (c->next_ticket != atomic_load_explicit(&c->signaled, RLX) &&
               cancel_bit(c, c->next_ticket - 1)) {
            c->next_ticket--;
            set_cancel_bit(c, c->next_ticket, 0);
            c->cancelled--;
        }
    }
    else {
        set_cancel_bit(c, ticket, 1);
        c->cancelled++;
        cond_skip_cancelled(c);
    }
    return 0;
}

uint32_t
fm_cond_notify(fm_cond *c, uint32_t n)
{
    uint32_t s0 = atomic_load_explicit(&c->signaled, RLX);
    uint32_t s = s0, woken = 0, bits = 0;
    while (woken < n && s != c->next_ticket) {
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
fm_cond_waiters(const fm_cond *c)
{
    uint32_t s = atomic_load_explicit(&((fm_cond *)c)->signaled, RLX);
    return c->next_ticket - s - c->cancelled;
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
    int64_t until = spin_end(spin_ns, deadline_ns);
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
