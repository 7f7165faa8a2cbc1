/* Synchronization primitives on words in shared memory.  No Python.h here.
 *
 * Each primitive is a plain struct placed in a shared block; it holds no
 * pointer (processes map segments at different addresses).  Blocking calls
 * take an absolute deadline (fm_deadline_after) and a spin budget, and return
 * a status: FM_EINTR means "a signal or a wait slice interrupted the sleep:
 * check signals, then call again with the same deadline and no spin".
 *
 * Dead-holder recovery: the mutex word holds the owner's identity (pid and
 * ident, futex.h), the semaphore records its holders' short identities in
 * a few slots (and gives up recovering once a unit is released by a
 * process that did not acquire it).  A waiter whose wait runs past a slice
 * checks those holders; if the holder is gone, or its pid now names
 * another process, it takes over (mutex: FM_RECOVERED) or returns the dead
 * process's units (semaphore).
 *
 * The `pid` the calls take is the caller's fm_self_pid(): what they record
 * is then the caller's full identity (fm_self_id, fm_self_sid).  Another
 * pid (a test acting for another process) is recorded alone, and its
 * liveness judged by the pid only. */
#ifndef FM_PRIMS_H
#define FM_PRIMS_H

#include <stdatomic.h>
#include <stdint.h>

#include "futex.h"

/* ---- mutex: 0 = free, else (owner ident << 32) | owner pid | FM_MUTEX_WAITERS
 * The futex sleeps on the low half (`word`: pid and waiters bit); the
 * owner's ident shares one 64-bit word with it, so it is published by the
 * same CAS that takes the lock (no extra store on the fast path, and no
 * moment when the word names a holder the ident does not describe). */
#define FM_MUTEX_WAITERS 0x80000000u
#define FM_MUTEX_PIDMASK 0x7fffffffu

typedef union {
    _Atomic uint64_t all;
    struct {
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        uint32_t ident;
        _Atomic uint32_t word;
#else
        _Atomic uint32_t word;
        uint32_t ident;
#endif
    };
} fm_mutex;

void fm_mutex_init(fm_mutex *m);
int fm_mutex_trylock(fm_mutex *m, uint32_t pid);     /* FM_OK or FM_AGAIN */
int fm_mutex_lock(fm_mutex *m, uint32_t pid, int64_t deadline_ns, int64_t spin_ns);
int fm_mutex_unlock(fm_mutex *m);                    /* FM_OK or FM_OVERFLOW */
uint32_t fm_mutex_owner(const fm_mutex *m);          /* pid, 0 if free */
/* (ident << 32) | pid of the owner (no waiters bit), 0 if free: compare
 * with fm_self_id() to know whether this process holds it. */
uint64_t fm_mutex_owner_id(const fm_mutex *m);

/* ---- counting semaphore with holder slots ---- */
#define FM_SEM_SLOTS 6
#define FM_SEM_VALUE_MAX 0x7fffffffu

typedef struct {
    _Atomic uint32_t value;
    _Atomic uint32_t sleepers;
    uint32_t maxvalue;
    uint32_t initial;   /* caps recovery: units out can't exceed it */
    _Atomic uint32_t handed_off;   /* a non-holder released: stop recovering */
    uint32_t _pad;
    /* (holder's short identity (fm_sid_make) << 32) | units held; a slot
     * whose count is 0 is free to claim */
    _Atomic uint64_t holders[FM_SEM_SLOTS];
} fm_sem;

void fm_sem_init(fm_sem *s, uint32_t value, uint32_t maxvalue);
int fm_sem_trywait(fm_sem *s, uint32_t pid);         /* FM_OK or FM_AGAIN */
int fm_sem_wait(fm_sem *s, uint32_t pid, int64_t deadline_ns, int64_t spin_ns);
int fm_sem_post(fm_sem *s, uint32_t pid);            /* FM_OK or FM_OVERFLOW */
uint32_t fm_sem_value(const fm_sem *s);
/* Give back the units held by dead processes; returns how many.  Never
 * after a release by a process that held no unit (see sem_unrecord). */
uint32_t fm_sem_recover(fm_sem *s);

/* ---- event ---- */
typedef struct {
    _Atomic uint32_t flag;
    _Atomic uint32_t sleepers;
} fm_event;

void fm_event_init(fm_event *e);
void fm_event_set(fm_event *e);
void fm_event_clear(fm_event *e);
int fm_event_is_set(const fm_event *e);
/* FM_OK when set, FM_TIMEOUT, FM_EINTR */
int fm_event_wait(fm_event *e, int64_t deadline_ns, int64_t spin_ns);

/* ---- condition variable: tickets, used with a caller-held lock ----
 * A waiter takes a ticket (under the lock); notify(n) moves `signaled` past
 * the n oldest live tickets.  A ticket below `signaled` is notified.  So a
 * notify wakes only threads that were waiting when it was made: a thread
 * that starts waiting later cannot steal it (a plain token count would let
 * it).  A waiter that times out cancels its ticket; notify skips cancelled
 * tickets, so a notify is never spent on a thread that already left.
 * Sleepers wait with futex bitset bit (ticket % 32), so notify(1) wakes one
 * sleeper, not all.  Everything but `signaled`, `sleepers`, `next_ticket`
 * and `owner` is touched only with the lock held; those four are written
 * only with it held too, and read without it by waiters.
 *
 * A waiter killed in its wait never cancels its ticket, and notify cannot
 * tell a dead waiter from a live one without a system call per ticket.  So
 * each ticket's slot records its waiter (`owner`, a short identity) until
 * the waiter leaves (fm_cond_leave_wait, after every wait); a notify that
 * lands on a dead waiter is handed on afterwards: a waiter whose wait runs
 * past a slice looks for notified tickets whose owner is gone, and if it
 * finds one, fm_cond_wait returns FM_RECOVERED: the caller takes the lock,
 * calls fm_cond_repair() and looks at its own ticket again.  The repair
 * passes each such notification to the oldest live waiter that was
 * already waiting at the last notify (as the notify would have, had it
 * skipped the dead ticket), and cancels the tickets of dead waiters that
 * no notify has reached yet.  So notify(n) wakes n live waiters: at once
 * when they are alive, within about a wait slice when dead ones were
 * first in line.  notify itself costs what it did. */
#define FM_COND_RING 1024               /* tickets outstanding at once */
#define FM_COND_NO_TICKET UINT32_MAX    /* ring full: wait for any notify */

typedef struct {
    _Atomic uint32_t signaled;
    _Atomic uint32_t sleepers;
    _Atomic uint32_t next_ticket;
    uint32_t cancelled;                 /* cancelled tickets not yet skipped */
    uint32_t horizon;                   /* next_ticket at the last notify */
    uint32_t _pad;
    uint8_t cancel_bits[FM_COND_RING / 8];
    /* per ticket slot: the waiter's short identity (fm_sid_make), 0 once
     * it left; describes the newest ticket issued for that slot */
    _Atomic uint32_t owner[FM_COND_RING];
} fm_cond;

void fm_cond_init(fm_cond *c);
/* lock held: take a ticket, before releasing the lock.  With the ring full
 * the result is FM_COND_NO_TICKET: such a waiter wakes at the next notify
 * of any kind (a rare, spurious wakeup rather than a lost one).  The ticket
 * is recorded as this process's (fm_self_sid). */
uint32_t fm_cond_enter_wait(fm_cond *c);
/* lock NOT held: wait until the ticket is notified; FM_OK, FM_TIMEOUT,
 * FM_EINTR, or FM_RECOVERED: a dead waiter holds a notification (take the
 * lock, fm_cond_repair(), then see whether this ticket is notified now; if
 * not, release the lock and wait again).  `seen` is fm_cond's signaled
 * value read at enter_wait. */
int fm_cond_wait(fm_cond *c, uint32_t ticket, uint32_t seen, int64_t deadline_ns,
                 int64_t spin_ns);
uint32_t fm_cond_signaled(const fm_cond *c);
/* lock held: 1 if the ticket is notified (fm_cond_wait's FM_OK needs no
 * other check). */
int fm_cond_notified(const fm_cond *c, uint32_t ticket, uint32_t seen);
/* lock held again after EVERY wait, whatever fm_cond_wait returned: 1 if
 * the ticket was notified (the notification is now consumed), else cancel
 * it and return 0. */
int fm_cond_leave_wait(fm_cond *c, uint32_t ticket, uint32_t seen);
/* lock held: wake up to n waiters, oldest first; returns how many. */
uint32_t fm_cond_notify(fm_cond *c, uint32_t n);
/* lock held: hand on the notifications of dead waiters and cancel their
 * tickets; returns the number of dead waiters found. */
uint32_t fm_cond_repair(fm_cond *c);
uint32_t fm_cond_waiters(const fm_cond *c);

/* ---- sequence word: "wait until it changes" for barrier-style waits ---- */
typedef struct {
    _Atomic uint32_t seq;
    _Atomic uint32_t sleepers;
} fm_seq;

void fm_seq_init(fm_seq *q);
uint32_t fm_seq_read(const fm_seq *q);
void fm_seq_bump_all(fm_seq *q);                     /* change it and wake all */
/* FM_OK once seq != seen, FM_TIMEOUT, FM_EINTR */
int fm_seq_wait(fm_seq *q, uint32_t seen, int64_t deadline_ns, int64_t spin_ns);

#endif
