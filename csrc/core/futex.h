/* Waiting on a 32-bit word in shared memory: spin briefly, then sleep on a
 * futex; deadlines on the monotonic clock.  No Python.h here.
 *
 * The futexes are the shared kind (no FUTEX_PRIVATE_FLAG): the words live in
 * MAP_SHARED segments that several processes map at different addresses. */
#ifndef FM_FUTEX_H
#define FM_FUTEX_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "status.h"

/* A deadline is an absolute CLOCK_MONOTONIC time in nanoseconds;
 * FM_FOREVER means no deadline. */
#define FM_FOREVER INT64_MAX

/* Long waits are cut into slices of this length, so that a waiter regains
 * the GIL to run signal handlers it could have missed (a signal that lands
 * between the spin and the futex call does not interrupt the sleep) and
 * checks whether the holder it waits for is still alive. */
#define FM_WAIT_SLICE_NS (50 * 1000 * 1000LL)

int64_t fm_now_ns(void);

/* Adaptive spinning.  A spin pays when the process we wait for answers
 * while we spin, which it does only when it runs on another CPU.  On a busy
 * machine it waits for a CPU, often ours, and a spin only delays it: a Pipe
 * round trip with both ends spinning 50 us was measured 40x slower under
 * load than with no spin at all.  So each thread scales its spins down: a
 * spin that ends without what it waited for halves the next allowance, one
 * that gets it doubles it back (up to spin_ns); past FM_SPIN_SHIFT_OFF
 * halvings the thread does not spin, except for a short probe every
 * FM_SPIN_PROBE_EVERY waits, so that it notices the machine got quiet. */
#define FM_SPIN_SHIFT_OFF 6
#define FM_SPIN_PROBE_EVERY 16
/* How long this thread may spin now, of a configured spin_ns (0: not). */
int64_t fm_spin_allowance(int64_t spin_ns);
/* The spin that fm_spin_allowance granted ended: won (what it waited for
 * came) or not. */
void fm_spin_outcome(int won);
/* Forget this thread's history: spin fully again (a forked child). */
void fm_spin_reset(void);

/* When a spin of (this thread's allowance of) spin_ns starting now must
 * end: never past the deadline, so a timeout of 0 does not spin; 0 when
 * there is no spin at all.  A caller that spins to it reports the outcome
 * (fm_spin_outcome; fm_spin_while does so itself). */
static inline int64_t
fm_spin_end(int64_t spin_ns, int64_t deadline_ns)
{
    spin_ns = fm_spin_allowance(spin_ns);
    if (spin_ns <= 0)
        return 0;
    int64_t until = fm_now_ns() + spin_ns;
    return until < deadline_ns ? until : deadline_ns;
}

/* 2 * nbytes random lowercase hex digits and a NUL into out (which holds
 * 2 * nbytes + 1 chars): names that other processes must not guess or
 * collide with.  FM_OK, or FM_ERRNO if the kernel gave no randomness. */
int fm_random_hex(char *out, size_t nbytes);
/* seconds <= 0 gives "now"; a huge value saturates to FM_FOREVER */
int64_t fm_deadline_after(double seconds);

/* Sleep while *word == expected, until woken, the deadline, or a signal.
 * Returns FM_OK (woken, or the word had changed), FM_TIMEOUT or FM_EINTR.
 * The sleep never lasts past one FM_WAIT_SLICE_NS; a slice that ends
 * before the deadline returns FM_EINTR. */
int fm_futex_wait(_Atomic uint32_t *word, uint32_t expected, int64_t deadline_ns);
/* Wake up to n sleepers (INT32_MAX: all). */
void fm_futex_wake(_Atomic uint32_t *word, int n);
/* The same, restricted to sleepers whose bitset shares a bit with `bits`. */
int fm_futex_wait_bits(_Atomic uint32_t *word, uint32_t expected, int64_t deadline_ns,
                       uint32_t bits);
void fm_futex_wake_bits(_Atomic uint32_t *word, int n, uint32_t bits);

/* Spin while *word == expected, for at most spin_ns.  Returns the value
 * last read (different from expected when the spin succeeded). */
uint32_t fm_spin_while(_Atomic uint32_t *word, uint32_t expected, int64_t spin_ns);
void fm_cpu_relax(void);
/* Called between spin rounds of 64 relaxes: yields the CPU after a few. */
#define FM_SPIN_ROUNDS_BEFORE_YIELD 4
void fm_spin_yield(unsigned round);
/* CPUs this process may run on (cached; refreshed every 100 ms). */
int fm_usable_cpus(void);

/* Default spin before sleeping, in nanoseconds; tunable per process. */
extern _Atomic int64_t fm_spin_ns;

/* ---- processes: liveness and identity ----
 * A pid names a process only until it dies: then the kernel may give it to
 * a new, unrelated process.  What records who holds something in shared
 * memory records the holder's identity as well: its pid plus an "ident"
 * word, the low 32 bits of its start time (field 22 of /proc/<pid>/stat,
 * clock ticks since boot).  A later process with the same pid has another
 * start time (pids are handed out in turn, so one comes round again only
 * after the whole pid space has been used, far longer than a tick), so a
 * liveness check that compares the ident is not fooled by pid reuse.
 *
 * FM_IDENT_UNKNOWN (0) means "not known": the check then goes by the pid
 * alone.  A process's own ident is unknown when /proc does not show its
 * own pid namespace (/proc/self/stat names another pid); such a process
 * compares no idents at all, since /proc/<pid> would not be the pid it
 * means.  Idents are never 0 otherwise (a start time whose low 32 bits are
 * 0 counts as 1, on both sides). */
#define FM_IDENT_UNKNOWN 0u

/* 1 if pid names a live process, 0 if it is gone or a zombie. */
int fm_pid_alive(pid_t pid);
/* The same, and 0 as well when the live process named pid is not the one
 * whose ident is `ident` (pid reuse).  FM_IDENT_UNKNOWN: like fm_pid_alive. */
int fm_pid_alive_as(pid_t pid, uint32_t ident);
/* 1 if pid names a live process that started no later than `ticks` (in
 * fm_boot_ticks() units): for records that carry a pid only (the ring's
 * WRITING/READING headers).  A checker reads fm_boot_ticks() when it first
 * sees the record held by pid; a process that started after that cannot be
 * the one that took the record, so it is not the holder come back. */
int fm_pid_alive_since(pid_t pid, uint64_t ticks);
/* Now, in the units of /proc/<pid>/stat's start time (CLOCK_BOOTTIME in
 * clock ticks). */
uint64_t fm_boot_ticks(void);
/* getpid(), cached and refreshed at fork. */
uint32_t fm_self_pid(void);
void fm_refresh_pid(void);
/* This process's ident (cached; read from /proc once per process, and
 * again after a fork). */
uint32_t fm_self_ident(void);
/* (ident << 32) | pid: what the mutex word records of its holder. */
uint64_t fm_self_id(void);

/* A short identity in 32 bits, for records with no room for two words (the
 * semaphore's holder slots, the condition's waiter slots): the pid in the
 * low 22 bits (Linux pids stay below 2^22) and 10 bits of the ident above
 * (0: unknown).  Reuse then goes unnoticed when the two start times fall
 * on the same value modulo 1023 ticks (about 1 in 1000); such a holder is
 * taken for alive, as with no ident at all, never the other way round. */
#define FM_SID_PIDBITS 22
#define FM_SID_PIDMASK ((1u << FM_SID_PIDBITS) - 1)
static inline uint32_t
fm_sid_make(uint32_t pid, uint32_t ident)
{
    uint32_t short_ident = ident == FM_IDENT_UNKNOWN ? 0 : ident % 1023u + 1u;
    return (pid & FM_SID_PIDMASK) | (short_ident << FM_SID_PIDBITS);
}
static inline uint32_t
fm_sid_pid(uint32_t sid)
{
    return sid & FM_SID_PIDMASK;
}
/* This process's short identity. */
uint32_t fm_self_sid(void);
/* The short identity to record for `pid`: this process's own when pid is
 * fm_self_pid(), else the pid alone (callers that act for another
 * process, as tests do). */
uint32_t fm_sid_for(uint32_t pid);
/* fm_pid_alive_as for a short identity. */
int fm_sid_alive(uint32_t sid);

#endif
