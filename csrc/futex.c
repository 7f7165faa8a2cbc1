/* futex.c: wait/wake on a shared 32-bit word; the monotonic clock; pids. */
#include "futex.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

_Atomic int64_t fm_spin_ns = 50 * 1000;  /* 50 us: covers a fast peer's reply */

static _Atomic uint32_t self_pid;

int64_t
fm_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t
fm_deadline_after(double seconds)
{
    int64_t now = fm_now_ns();
    if (!(seconds > 0.0))       /* also catches NaN */
        return now;
    if (seconds >= (double)(FM_FOREVER - now) / 1e9)
        return FM_FOREVER;
    return now + (int64_t)(seconds * 1e9);
}

void
fm_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#else
    atomic_signal_fence(memory_order_seq_cst);
#endif
}

uint32_t
fm_spin_while(_Atomic uint32_t *word, uint32_t expected, int64_t spin_ns)
{
    uint32_t v = atomic_load_explicit(word, memory_order_acquire);
    if (v != expected || spin_ns <= 0)
        return v;
    int64_t until = fm_now_ns() + spin_ns;
    for (unsigned round = 0;; round++) {
        /* read the clock only every 64 relaxes: it costs more than a pause */
        for (int i = 0; i < 64; i++) {
            fm_cpu_relax();
            v = atomic_load_explicit(word, memory_order_acquire);
            if (v != expected)
                return v;
        }
        if (fm_now_ns() >= until)
            return v;
        fm_spin_yield(round);
    }
}

/* A process bound to one CPU yields from the first spin round: the peer
 * it waits for may be bound to the same CPU.  The affinity mask can change
 * under us (taskset, a benchmark's pinning), so it is read again at most
 * every 100 ms. */
int
fm_usable_cpus(void)
{
    static _Atomic int64_t checked_at;      /* 0: never */
    static _Atomic int cpus = 1;
    int64_t now = fm_now_ns();
    int64_t last = atomic_load_explicit(&checked_at, memory_order_relaxed);
    if (last == 0 || now > last + 100 * 1000 * 1000LL) {
        cpu_set_t set;
        CPU_ZERO(&set);
        int n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
        atomic_store_explicit(&cpus, n, memory_order_relaxed);
        atomic_store_explicit(&checked_at, now, memory_order_relaxed);
    }
    return atomic_load_explicit(&cpus, memory_order_relaxed);
}

void
fm_spin_yield(unsigned round)
{
    /* After a few rounds, let a runnable peer on this CPU go first: when
     * the machine is busy, the process we wait for may share our CPU. */
    if (round >= FM_SPIN_ROUNDS_BEFORE_YIELD || fm_usable_cpus() < 2)
        sched_yield();
}

int
fm_futex_wait_bits(_Atomic uint32_t *word, uint32_t expected, int64_t deadline_ns,
                   uint32_t bits)
{
    int64_t now = fm_now_ns();
    if (now >= deadline_ns)
        return FM_TIMEOUT;
    int64_t until = deadline_ns;
    int sliced = 0;
    if (until - now > FM_WAIT_SLICE_NS) {
        until = now + FM_WAIT_SLICE_NS;
        sliced = 1;
    }
    struct timespec ts = {
        .tv_sec = (time_t)(until / 1000000000LL),
        .tv_nsec = (long)(until % 1000000000LL),
    };
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline. */
    long r = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_BITSET, expected,
                     &ts, NULL, bits);
    if (r == 0)
        return FM_OK;
    switch (errno) {
    case EAGAIN:            /* the word had already changed */
        return FM_OK;
    case EINTR:
        return FM_EINTR;
    case ETIMEDOUT:
        return sliced ? FM_EINTR : FM_TIMEOUT;
    default:
        return FM_ERRNO;
    }
}

int
fm_futex_wait(_Atomic uint32_t *word, uint32_t expected, int64_t deadline_ns)
{
    return fm_futex_wait_bits(word, expected, deadline_ns, FUTEX_BITSET_MATCH_ANY);
}

void
fm_futex_wake_bits(_Atomic uint32_t *word, int n, uint32_t bits)
{
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_BITSET, n, NULL, NULL, bits);
}

void
fm_futex_wake(_Atomic uint32_t *word, int n)
{
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, n, NULL, NULL, 0);
}

int
fm_pid_alive(pid_t pid)
{
    if (pid <= 0)
        return 0;
    if (kill(pid, 0) < 0 && errno == ESRCH)
        return 0;
    /* kill() succeeds on a zombie, and a SIGKILLed child stays one until
     * its parent reaps it: read its state from /proc. */
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : 1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 1;
    buf[n] = '\0';
    /* "pid (comm) S ...": comm may hold ')' so take the last one */
    char *rp = strrchr(buf, ')');
    if (rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X'))
        return 0;
    return 1;
}

uint32_t
fm_self_pid(void)
{
    uint32_t p = atomic_load_explicit(&self_pid, memory_order_relaxed);
    if (p == 0) {
        p = (uint32_t)getpid();
        atomic_store_explicit(&self_pid, p, memory_order_relaxed);
    }
    return p;
}

void
fm_refresh_pid(void)
{
    atomic_store_explicit(&self_pid, (uint32_t)getpid(), memory_order_relaxed);
}
