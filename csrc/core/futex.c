/* futex.c: wait/wake on a shared 32-bit word; the monotonic clock; pids. */
#include "futex.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdlib.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include "glibc_compat.h"
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

int
fm_random_hex(char *out, size_t nbytes)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[64];
    if (nbytes > sizeof raw)
        return FM_NOMEM;
    size_t got = 0;
    while (got < nbytes) {
        ssize_t n = getrandom(raw + got, nbytes - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return FM_ERRNO;
        }
        got += (size_t)n;
    }
    for (size_t i = 0; i < nbytes; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[2 * nbytes] = '\0';
    return FM_OK;
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

/* Per thread: how many times the configured spin is halved (see
 * futex.h), and a count of the waits that did not spin, for the probes. */
static _Thread_local unsigned spin_shift;
static _Thread_local unsigned spin_skipped;

int64_t
fm_spin_allowance(int64_t spin_ns)
{
    if (spin_ns <= 0)
        return 0;
    unsigned shift = spin_shift;
    if (shift >= FM_SPIN_SHIFT_OFF) {
        if (++spin_skipped % FM_SPIN_PROBE_EVERY != 0)
            return 0;
        shift = FM_SPIN_SHIFT_OFF - 1;
    }
    return spin_ns >> shift;
}

void
fm_spin_outcome(int won)
{
    if (won)
        spin_shift = spin_shift >= FM_SPIN_SHIFT_OFF ? FM_SPIN_SHIFT_OFF - 2
                     : spin_shift > 0                ? spin_shift - 1
                                                     : 0;
    else if (spin_shift < FM_SPIN_SHIFT_OFF)
        spin_shift++;
}

void
fm_spin_reset(void)
{
    spin_shift = 0;
    spin_skipped = 0;
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
            if (v != expected) {
                fm_spin_outcome(1);
                return v;
            }
        }
        if (fm_now_ns() >= until) {
            fm_spin_outcome(0);
            return v;
        }
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
        /* a slice's end says "look around and call again", unless the
         * caller's deadline has passed meanwhile (a late wake-up on a busy
         * machine): then it is the timeout, not a call with no time left */
        return sliced && fm_now_ns() < deadline_ns ? FM_EINTR : FM_TIMEOUT;
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

/* ---------------------------------------------------------------- processes */

/* Parse /proc/<pid>/stat ("/proc/self/stat" for pid 0): the pid it names,
 * its state letter and its start time.  1: read; 0: no such process;
 * -1: cannot tell (unreadable /proc). */
static int
read_stat(pid_t pid, long *statpid, char *state, uint64_t *start)
{
    char path[64], buf[1024];
    if (pid == 0)
        snprintf(path, sizeof path, "/proc/self/stat");
    else
        snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd;
    while ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 && errno == EINTR)
        ;
    if (fd < 0)
        return errno == ENOENT ? 0 : -1;
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf - 1)) < 0 && errno == EINTR)
        ;
    int err = errno;
    close(fd);
    if (n <= 0)
        return n < 0 && err == ESRCH ? 0 : -1;     /* ESRCH: it exited meanwhile */
    buf[n] = '\0';
    *statpid = strtol(buf, NULL, 10);
    /* "pid (comm) S ppid ...": comm may hold ')' and spaces, so fields
     * are counted from the last ')'; the state is field 3, the start time
     * field 22. */
    char *p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ')
        return -1;
    p += 2;
    *state = *p;
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (p == NULL)
            return -1;
        p++;
    }
    char *end;
    *start = strtoull(p, &end, 10);
    return end == p ? -1 : 1;
}

static inline uint32_t
ident_of_start(uint64_t start)
{
    uint32_t ident = (uint32_t)start;
    return ident == FM_IDENT_UNKNOWN ? 1u : ident;
}

/* 1 if pid names a live process (not a zombie), with *ident its ident
 * (FM_IDENT_UNKNOWN if /proc cannot say, or does not show this process's
 * pid namespace) and *start its start time (UINT64_MAX: unknown). */
static int
proc_alive(pid_t pid, uint32_t *ident, uint64_t *start)
{
    *ident = FM_IDENT_UNKNOWN;
    *start = UINT64_MAX;
    if (pid <= 0)
        return 0;
    if (kill(pid, 0) < 0 && errno == ESRCH)
        return 0;
    /* kill() succeeds on a zombie, and a SIGKILLed child stays one until
     * its parent reaps it: read its state from /proc. */
    long statpid;
    char state;
    uint64_t st;
    int r = read_stat(pid, &statpid, &state, &st);
    if (r <= 0)
        return r < 0;
    if (state == 'Z' || state == 'X')
        return 0;
    if (statpid == (long)pid && fm_self_ident() != FM_IDENT_UNKNOWN) {
        *ident = ident_of_start(st);
        *start = st;
    }
    return 1;
}

int
fm_pid_alive(pid_t pid)
{
    return fm_pid_alive_as(pid, FM_IDENT_UNKNOWN);
}

int
fm_pid_alive_as(pid_t pid, uint32_t ident)
{
    uint32_t now_ident;
    uint64_t start;
    if (!proc_alive(pid, &now_ident, &start))
        return 0;
    return ident == FM_IDENT_UNKNOWN || now_ident == FM_IDENT_UNKNOWN || now_ident == ident;
}

int
fm_sid_alive(uint32_t sid)
{
    uint32_t pid = fm_sid_pid(sid), ident;
    uint64_t start;
    if (!proc_alive((pid_t)pid, &ident, &start))
        return 0;
    if ((sid >> FM_SID_PIDBITS) == 0 || ident == FM_IDENT_UNKNOWN)
        return 1;
    return fm_sid_make(pid, ident) == sid;
}

int
fm_pid_alive_since(pid_t pid, uint64_t ticks)
{
    uint32_t ident;
    uint64_t start;
    if (!proc_alive(pid, &ident, &start))
        return 0;
    return start == UINT64_MAX || start <= ticks;
}

uint64_t
fm_boot_ticks(void)
{
    static _Atomic long hz;
    long tck = atomic_load_explicit(&hz, memory_order_relaxed);
    if (tck <= 0) {
        tck = sysconf(_SC_CLK_TCK);
        if (tck <= 0)
            tck = 100;
        atomic_store_explicit(&hz, tck, memory_order_relaxed);
    }
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    /* as the kernel converts a start time: whole ticks, rounded down */
    uint64_t ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    return ns / (1000000000ull / (uint64_t)tck);
}

static _Atomic uint64_t self_id;    /* 0: not read yet in this process */
static _Atomic uint32_t self_sid;   /* 0: not computed yet */

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
    /* also in a fork child handler: stores only, the ident is read later */
    atomic_store_explicit(&self_pid, (uint32_t)getpid(), memory_order_relaxed);
    atomic_store_explicit(&self_id, 0, memory_order_relaxed);
    atomic_store_explicit(&self_sid, 0, memory_order_relaxed);
}

uint64_t
fm_self_id(void)
{
    uint64_t id = atomic_load_explicit(&self_id, memory_order_relaxed);
    if (id != 0)
        return id;
    uint32_t pid = fm_self_pid(), ident = FM_IDENT_UNKNOWN;
    long statpid;
    char state;
    uint64_t start;
    /* /proc/self is this process in the namespace /proc was mounted for:
     * if that is not ours, /proc/<pid> would name other processes. */
    if (read_stat(0, &statpid, &state, &start) == 1 && statpid == (long)pid)
        ident = ident_of_start(start);
    id = ((uint64_t)ident << 32) | pid;
    atomic_store_explicit(&self_id, id, memory_order_relaxed);
    return id;
}

uint32_t
fm_self_ident(void)
{
    return (uint32_t)(fm_self_id() >> 32);
}

uint32_t
fm_self_sid(void)
{
    uint32_t sid = atomic_load_explicit(&self_sid, memory_order_relaxed);
    if (sid == 0) {
        uint64_t id = fm_self_id();
        sid = fm_sid_make((uint32_t)id, (uint32_t)(id >> 32));
        atomic_store_explicit(&self_sid, sid, memory_order_relaxed);
    }
    return sid;
}

uint32_t
fm_sid_for(uint32_t pid)
{
    return pid == fm_self_pid() ? fm_self_sid() : fm_sid_make(pid, FM_IDENT_UNKNOWN);
}
