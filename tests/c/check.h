/* check.h: a tiny test harness for the Python-free core (no Python.h).
 *
 * CHECK(cond), CHECK_EQ(a, b), CHECK_MSG(cond, fmt, ...) count one check each
 * (thread-safe); a failure prints file:line and what was compared.  RUN(fn)
 * runs one test function and prints its name and duration.  fmt_finish()
 * checks that no /dev/shm/fastmp-* file this process created is left, prints
 * the final line "N passed, M failed" and returns the exit status.
 *
 * Children made with fmt_fork() die with their parent and after a safety
 * alarm, so a failing test never leaves a sleeper behind; they report
 * through their exit status, which the parent CHECKs.  Every binary arms a
 * watchdog (FMT_WATCHDOG_S) so a hang fails instead of blocking `make`. */
#ifndef FMT_CHECK_H
#define FMT_CHECK_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "futex.h"
#include "prims.h"
#include "shm.h"
#include "status.h"

#ifndef FMT_WATCHDOG_S
#define FMT_WATCHDOG_S 120
#endif
#define FMT_CHILD_ALARM_S 60

#define NS_PER_S 1000000000LL
#define NS_PER_MS 1000000LL

static _Atomic long fmt_passed, fmt_failed;
static const char *fmt_current = "?";

__attribute__((format(printf, 4, 5), unused)) static void
fmt_check(int ok, const char *file, int line, const char *fmt, ...)
{
    if (ok) {
        atomic_fetch_add(&fmt_passed, 1);
        return;
    }
    atomic_fetch_add(&fmt_failed, 1);
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "FAIL %s:%d [%s]: %s\n", file, line, fmt_current, msg);
    fflush(stderr);
}

#define CHECK(cond) fmt_check(!!(cond), __FILE__, __LINE__, "%s", #cond)
#define CHECK_MSG(cond, ...) fmt_check(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
#define CHECK_EQ(a, b)                                                          \
    do {                                                                        \
        long long a_ = (long long)(a), b_ = (long long)(b);                     \
        fmt_check(a_ == b_, __FILE__, __LINE__, "%s == %s (%lld != %lld)", #a,  \
                  #b, a_, b_);                                                  \
    } while (0)

/* A status, by name, for messages. */
__attribute__((unused)) static const char *
fmt_st(int st)
{
    static const char *names[] = {"FM_OK", "FM_RECOVERED", "FM_TIMEOUT", "FM_EINTR",
                                  "FM_AGAIN", "FM_OVERFLOW", "FM_NOTOWNER", "FM_ERRNO",
                                  "FM_NOMEM", "FM_CORRUPT", "FM_BROKEN", "FM_PYERR"};
    return st >= 0 && st < (int)(sizeof names / sizeof names[0]) ? names[st] : "?";
}

#define CHECK_ST(st, want)                                                      \
    do {                                                                        \
        int s_ = (st), w_ = (want);                                             \
        fmt_check(s_ == w_, __FILE__, __LINE__, "%s: got %s, want %s", #st,     \
                  fmt_st(s_), fmt_st(w_));                                      \
    } while (0)

static inline double
fmt_secs_since(int64_t t0)
{
    return (double)(fm_now_ns() - t0) / 1e9;
}

static inline void
fmt_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static inline uint32_t
fmt_pid(void)
{
    return (uint32_t)getpid();
}

/* ---- blocking calls, looped on FM_EINTR as the header prescribes: the
 * first call may spin, the later ones do not ---- */

static inline int
fmt_mutex_lock(fm_mutex *m, uint32_t pid, int64_t deadline, int64_t spin)
{
    int st;
    while ((st = fm_mutex_lock(m, pid, deadline, spin)) == FM_EINTR)
        spin = 0;
    return st;
}

static inline int
fmt_sem_wait(fm_sem *s, uint32_t pid, int64_t deadline, int64_t spin)
{
    int st;
    while ((st = fm_sem_wait(s, pid, deadline, spin)) == FM_EINTR)
        spin = 0;
    return st;
}

static inline int
fmt_event_wait(fm_event *e, int64_t deadline, int64_t spin)
{
    int st;
    while ((st = fm_event_wait(e, deadline, spin)) == FM_EINTR)
        spin = 0;
    return st;
}

static inline int
fmt_cond_wait(fm_cond *c, uint32_t ticket, uint32_t seen, int64_t deadline, int64_t spin)
{
    int st;
    while ((st = fm_cond_wait(c, ticket, seen, deadline, spin)) == FM_EINTR)
        spin = 0;
    return st;
}

static inline int
fmt_seq_wait(fm_seq *q, uint32_t seen, int64_t deadline, int64_t spin)
{
    int st;
    while ((st = fm_seq_wait(q, seen, deadline, spin)) == FM_EINTR)
        spin = 0;
    return st;
}

/* Poll until *word == want or `seconds` pass; returns 1 if reached. */
static inline int
fmt_await_u32(_Atomic uint32_t *word, uint32_t want, double seconds)
{
    int64_t d = fm_deadline_after(seconds);
    while (atomic_load(word) != want) {
        if (fm_now_ns() >= d)
            return 0;
        fmt_sleep_ms(1);
    }
    return 1;
}

/* Median of n values (sorts them in place). */
static inline double
fmt_median(double *v, int n)
{
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return n ? v[n / 2] : 0.0;
}

/* Wake-up latency.  A waiter that misses its wake-up still returns at the
 * end of its 50 ms wait slice (FM_WAIT_SLICE_NS), so a lost wake-up shows
 * as slowness, not as a hang: tests wake a known sleeper several times and
 * require the median latency to stay far below a slice. */
#define FMT_WAKE_ROUNDS 15
#define FMT_WAKE_MEDIAN_MAX 0.010

/* ---- shared memory for cross-process tests (not a fastmp segment) ---- */

static inline void *
fmt_shared_page(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    memset(p, 0, size);
    return p;
}

/* ---- children ---- */

static void
fmt_child_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "child: safety alarm, exiting\n";
    ssize_t r = write(2, msg, sizeof msg - 1);
    (void)r;
    _exit(99);
}

/* fork(); the child dies with its parent and after FMT_CHILD_ALARM_S. */
static inline pid_t
fmt_fork(void)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(2);
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        signal(SIGALRM, fmt_child_alarm);
        alarm(FMT_CHILD_ALARM_S);
    }
    return pid;
}

/* Reap pid; returns its exit code, 128 + signal if killed, -1 on error. */
static inline int
fmt_reap(pid_t pid)
{
    int status;
    pid_t r;
    while ((r = waitpid(pid, &status, 0)) < 0 && errno == EINTR)
        ;
    if (r != pid)
        return -1;
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return -1;
}

/* Wait until pid has exited, without reaping it (it stays a zombie). */
static inline int
fmt_wait_zombie(pid_t pid)
{
    siginfo_t info;
    memset(&info, 0, sizeof info);
    while (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOWAIT) < 0) {
        if (errno != EINTR)
            return -1;
    }
    return 0;
}

/* ---- /dev/shm bookkeeping: names this process created ---- */

#define FMT_MAX_TRACKED 256
static char fmt_tracked[FMT_MAX_TRACKED][FM_SHM_NAME_MAX];
static int fmt_ntracked;
static pthread_mutex_t fmt_track_lock = PTHREAD_MUTEX_INITIALIZER;

/* Remember a segment name ("/fastmp-...") this process created. */
__attribute__((unused)) static void
fmt_track(const char *name)
{
    pthread_mutex_lock(&fmt_track_lock);
    int i;
    for (i = 0; i < fmt_ntracked; i++)
        if (strcmp(fmt_tracked[i], name) == 0)
            break;
    if (i == fmt_ntracked && fmt_ntracked < FMT_MAX_TRACKED)
        snprintf(fmt_tracked[fmt_ntracked++], FM_SHM_NAME_MAX, "%s", name);
    pthread_mutex_unlock(&fmt_track_lock);
}

static inline int
fmt_shm_exists(const char *name)
{
    char path[128];
    if (snprintf(path, sizeof path, "/dev/shm%s", name) >= (int)sizeof path)
        return 0;
    return access(path, F_OK) == 0;
}

/* Number of /dev/shm/fastmp-* files that are arenas created by `pid` (the
 * arena header records its creator: files of other processes running at the
 * same time are not counted). */
__attribute__((unused)) static int
fmt_count_arenas_of(pid_t pid, char (*names)[FM_SHM_NAME_MAX], int max)
{
    DIR *d = opendir("/dev/shm");
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, "fastmp-", 7) != 0)
            continue;
        char path[300];
        if (snprintf(path, sizeof path, "/dev/shm/%s", de->d_name) >= (int)sizeof path)
            continue;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        fm_arena_header h;
        ssize_t r = pread(fd, &h, sizeof h, 0);
        close(fd);
        if (r == (ssize_t)sizeof h && h.magic == FM_ARENA_MAGIC && h.creator == (int32_t)pid) {
            size_t len = strlen(de->d_name);
            if (names && n < max && len + 2 <= FM_SHM_NAME_MAX) {
                names[n][0] = '/';
                memcpy(names[n] + 1, de->d_name, len + 1);
            }
            n++;
        }
    }
    closedir(d);
    return n;
}

static void
fmt_unlink_cb(const char *name, void *arg)
{
    (void)arg;
    fmt_track(name);
}

/* ---- running ---- */

static void
fmt_watchdog(int sig)
{
    (void)sig;
    static const char msg[] = "FAIL: watchdog: the test binary hung; aborting\n";
    ssize_t r = write(2, msg, sizeof msg - 1);
    (void)r;
    _exit(3);
}

static inline void
fmt_start(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGALRM, fmt_watchdog);
    alarm(FMT_WATCHDOG_S);
    fm_shm_init();
}

/* A note printed under the current test's result line (main thread only). */
static char fmt_notes[2048];

__attribute__((format(printf, 1, 2), unused)) static void
fmt_note(const char *fmt, ...)
{
    size_t len = strlen(fmt_notes);
    if (len + 8 >= sizeof fmt_notes)
        return;
    memcpy(fmt_notes + len, "    ", 4);
    len += 4;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fmt_notes + len, sizeof fmt_notes - len - 1, fmt, ap);
    va_end(ap);
    len = strlen(fmt_notes);
    fmt_notes[len] = '\n';
    fmt_notes[len + 1] = '\0';
}

#define RUN(fn)                                                                 \
    do {                                                                        \
        fmt_current = #fn;                                                      \
        fmt_notes[0] = '\0';                                                    \
        long f0_ = atomic_load(&fmt_failed);                                    \
        int64_t t0_ = fm_now_ns();                                              \
        fn();                                                                   \
        printf("  %-44s %s %6.3fs\n%s", #fn,                                    \
               atomic_load(&fmt_failed) == f0_ ? "ok  " : "FAIL", fmt_secs_since(t0_), \
               fmt_notes);                                                      \
    } while (0)

/* Unlink what this process created, check that no file it created is left
 * in /dev/shm, print "N passed, M failed"; returns the exit status. */
static inline int
fmt_finish(void)
{
    fmt_current = "cleanup";
    fm_segment_unlink_own(fmt_unlink_cb, NULL);
    for (int i = 0; i < fmt_ntracked; i++)
        CHECK_MSG(!fmt_shm_exists(fmt_tracked[i]), "%s left in /dev/shm", fmt_tracked[i]);
    char left[8][FM_SHM_NAME_MAX];
    int n = fmt_count_arenas_of(getpid(), left, 8);
    for (int i = 0; i < n && i < 8; i++)
        shm_unlink(left[i]);
    CHECK_MSG(n == 0, "%d arena file(s) of this process left in /dev/shm", n);
    long p = atomic_load(&fmt_passed), f = atomic_load(&fmt_failed);
    printf("%ld passed, %ld failed\n", p, f);
    fflush(stdout);
    return f == 0 ? 0 : 1;
}

#endif
