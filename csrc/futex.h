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

/* 1 if pid names a live process, 0 if it is gone or a zombie. */
int fm_pid_alive(pid_t pid);
/* getpid(), cached and refreshed at fork. */
uint32_t fm_self_pid(void);
void fm_refresh_pid(void);

#endif
