/* REGRESSION (csrc/core/futex.c fm_pid_alive, csrc/core/prims.c mutex and semaphore
 * holders, fixed): used to FAIL.
 *
 * A lock's holder used to be recorded by its pid alone.  Once the holder
 * had died and the kernel had given its pid to a new, unrelated process,
 * the liveness check (kill(pid, 0), /proc/<pid>/stat) found that process
 * alive, and the lock was never recovered: a waiter timed out, forever.
 * The holder is now recorded with its identity (pid + start time), which
 * the new process does not share.
 *
 * The pid is made to come round on purpose: in a new pid namespace with
 * its own /proc (root only; skipped otherwise, with a note), this test's
 * init writes /proc/sys/kernel/ns_last_pid so that the next fork gets the
 * dead holder's pid.  Checked for the mutex (a Lock's, a Condition's, the
 * queue's), the semaphore's holder slots and fm_pid_alive_since (for
 * records with room for a pid only), for the ring (a record whose writer
 * was checked alive, then died, and whose pid a new process got: the ring
 * used to wait for it for ever), and for the helpers themselves: a
 * process's own pid with another ident is not "alive". */
#include <sched.h>
#include <sys/mount.h>

#include "check.h"
#include "ring.h"

#define SKIP 77

struct shared {
    fm_mutex m;
    fm_sem s;
    _Atomic uint32_t reuser_pid;
};

/* Make the next fork in this pid namespace get `pid`. */
static int
set_next_pid(pid_t pid)
{
    int fd = open("/proc/sys/kernel/ns_last_pid", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%d", (int)pid - 1);
    ssize_t w = write(fd, buf, (size_t)n);
    close(fd);
    return w == n ? 0 : -1;
}

/* Once `dead` is reaped: fork an unrelated live process that gets its pid.
 * Returns the new process's pid (!= dead when the pid did not come round:
 * the caller skips), or -1 when ns_last_pid cannot be set. */
static pid_t
fork_reuser(pid_t dead)
{
    fmt_sleep_ms(30);   /* a few clock ticks: the start times differ */
    if (set_next_pid(dead) < 0)
        return -1;
    pid_t reuser = fork();
    if (reuser == 0) {
        fmt_sleep_ms(20000);
        _exit(0);
    }
    return reuser;
}

/* In the namespace (we are its init): a child takes the mutex (or a unit
 * of the semaphore) and dies holding it; a new process gets its pid and
 * lives; then this process must recover what the dead one held.  Returns 0
 * on success, SKIP when the pid could not be made to come round. */
static int
reuse_then_recover(struct shared *sh, int sem)
{
    pid_t holder = fork();
    if (holder < 0)
        return 2;
    if (holder == 0) {
        uint32_t me = fmt_pid();
        int st = sem ? fm_sem_trywait(&sh->s, me) : fm_mutex_trylock(&sh->m, me);
        _exit(st == FM_OK ? 0 : 1);         /* dies holding it */
    }
    /* what a checker of a record carrying the pid alone notes on first
     * seeing it held (fm_pid_alive_since): the time, after the holder
     * started */
    uint64_t seen = fm_boot_ticks();
    if (fmt_reap(holder) != 0)
        return 3;
    pid_t reuser = fork_reuser(holder);
    if (reuser < 0)
        return SKIP;
    int rc;
    if (reuser != holder) {
        rc = SKIP;
    }
    else if (!fm_pid_alive(holder) || fm_pid_alive_since(holder, seen)) {
        fprintf(stderr, "in the namespace: pid %d: alive %d, alive since %llu: %d\n",
                (int)holder, fm_pid_alive(holder), (unsigned long long)seen,
                fm_pid_alive_since(holder, seen));
        rc = 4;
    }
    else {
        uint32_t me = fmt_pid();
        int st;
        if (sem) {
            st = fmt_sem_wait(&sh->s, me, fm_deadline_after(5), 0);
            rc = st == FM_OK ? 0 : 10 + st;
            if (st == FM_OK)
                fm_sem_post(&sh->s, me);
        }
        else {
            st = fmt_mutex_lock(&sh->m, me, fm_deadline_after(5), 0);
            rc = st == FM_RECOVERED ? 0 : 10 + st;
            if (st == FM_RECOVERED || st == FM_OK)
                fm_mutex_unlock(&sh->m);
        }
        if (rc != 0)
            fprintf(stderr, "in the namespace: %s gave %s with pid %d reused\n",
                    sem ? "sem_wait" : "mutex_lock", fmt_st(st), (int)holder);
    }
    kill(reuser, SIGKILL);
    fmt_reap(reuser);
    return rc;
}

/* The ring: a writer claims a record and lives on while a consumer checks
 * it (the record waits), then dies; a new process gets its pid.  The
 * consumer must then skip the dead writer's record and take the one
 * committed behind it.  Returns 0, SKIP, or 10 + the take's status. */
struct ring_shared {
    _Atomic uint32_t claimed;
    _Alignas(FM_CACHE_LINE) unsigned char ring[];
};

static int
take_until(fm_ring *r, uint32_t me, int64_t deadline, fm_ring_read *rd)
{
    int st;
    do
        st = fm_ring_take(r, me, deadline, 0, rd);
    while (st == FM_EINTR);
    return st;
}

static int
ring_reuse_then_skip(struct ring_shared *rs)
{
    fm_ring *r = (fm_ring *)rs->ring;
    uint32_t me = fmt_pid();
    pid_t holder = fork();
    if (holder < 0)
        return 2;
    if (holder == 0) {
        fm_ring_claim c;
        if (fm_ring_claim_space(r, 8, fmt_pid(), 0, 0, &c) != FM_OK)
            _exit(1);
        atomic_store(&rs->claimed, 1);
        fmt_sleep_ms(20000);                /* killed while writing */
        _exit(0);
    }
    for (int i = 0; i < 500 && !atomic_load(&rs->claimed); i++)
        fmt_sleep_ms(10);
    if (!atomic_load(&rs->claimed))
        return 3;
    fm_ring_claim c;
    if (fm_ring_claim_space(r, 8, me, 0, 0, &c) != FM_OK)
        return 3;
    memcpy(c.data, "behind!", 8);
    fm_ring_commit(r, &c);
    fm_ring_read rd;
    /* checked while the writer lives: the record waits for it */
    int st = take_until(r, me, fm_deadline_after(0.2), &rd);
    if (st != FM_TIMEOUT)
        return 10 + st;
    kill(holder, SIGKILL);
    fmt_reap(holder);
    pid_t reuser = fork_reuser(holder);
    if (reuser < 0)
        return SKIP;
    int rc;
    if (reuser != holder) {
        rc = SKIP;
    }
    else {
        st = take_until(r, me, fm_deadline_after(5), &rd);
        rc = st != FM_OK ? 10 + st : (rd.len == 8 && memcmp(rd.data, "behind!", 8) == 0) ? 0 : 4;
        if (st == FM_OK)
            fm_ring_release(r, &rd);
        if (rc != 0)
            fprintf(stderr, "in the namespace: take gave %s with the writer's pid %d reused\n",
                    fmt_st(st), (int)holder);
    }
    kill(reuser, SIGKILL);
    fmt_reap(reuser);
    return rc;
}

static int
namespace_body(void *arg, int what)
{
    return what == 2 ? ring_reuse_then_skip(arg) : reuse_then_recover(arg, what);
}

/* Run namespace_body() as the init of a new pid namespace with its own
 * /proc; returns its result, or SKIP if namespaces are not available. */
static int
in_new_pid_namespace(void *sh, int what)
{
    pid_t outer = fmt_fork();
    if (outer == 0) {
        if (unshare(CLONE_NEWPID | CLONE_NEWNS) < 0)
            _exit(SKIP);
        /* keep the /proc mount below to this mount namespace */
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
            _exit(SKIP);
        pid_t init = fork();
        if (init < 0)
            _exit(2);
        if (init == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
                _exit(SKIP);
            _exit(namespace_body(sh, what));
        }
        _exit(fmt_reap(init));
    }
    return fmt_reap(outer);
}

static void
pid_reuse(int sem)
{
    struct shared *sh = fmt_shared_page(4096);
    fm_mutex_init(&sh->m);
    fm_sem_init(&sh->s, 1, 1);
    int rc = in_new_pid_namespace(sh, sem);
    if (rc == SKIP) {
        fmt_note("SKIPPED: no new pid namespace with its own /proc here (needs root)");
    }
    else {
        CHECK_MSG(rc == 0, "a dead holder whose pid names a live process: %s (rc %d)",
                  rc >= 10 ? fmt_st(rc - 10) : "setup failed", rc);
        /* and it is usable again, with nothing held */
        CHECK_EQ(fm_mutex_owner(&sh->m), 0);
        CHECK_EQ(fm_sem_value(&sh->s), 1);
    }
    munmap(sh, 4096);
}

static void test_mutex_pid_reused(void) { pid_reuse(0); }
static void test_sem_pid_reused(void) { pid_reuse(1); }

static void
test_ring_writer_pid_reused(void)
{
    enum { CAP = 4096 };
    size_t size = sizeof(struct ring_shared) + fm_ring_bytes(CAP);
    struct ring_shared *rs = fmt_shared_page(size);
    CHECK_ST(fm_ring_init(rs->ring, CAP), FM_OK);
    int rc = in_new_pid_namespace(rs, 2);
    if (rc == SKIP)
        fmt_note("SKIPPED: no new pid namespace with its own /proc here (needs root)");
    else
        CHECK_MSG(rc == 0, "a dead writer whose pid names a live process: %s (rc %d)",
                  rc >= 10 ? fmt_st(rc - 10) : "setup failed", rc);
    munmap(rs, size);
}

/* The helpers, in this process: its own pid with another ident is a dead
 * process whose pid came round (no namespace needed for this part). */
static void
test_identity_helpers(void)
{
    pid_t me = getpid();
    uint32_t ident = fm_self_ident();
    CHECK(ident != FM_IDENT_UNKNOWN);
    CHECK_EQ((uint32_t)fm_self_id(), (uint32_t)me);
    CHECK(fm_pid_alive(me));
    CHECK(fm_pid_alive_as(me, ident));
    CHECK(fm_pid_alive_as(me, FM_IDENT_UNKNOWN));
    CHECK(!fm_pid_alive_as(me, ident + 1));
    CHECK(fm_sid_alive(fm_self_sid()));
    CHECK(fm_sid_alive(fm_sid_make((uint32_t)me, FM_IDENT_UNKNOWN)));
    CHECK(!fm_sid_alive(fm_sid_make((uint32_t)me, ident + 1)));
    CHECK_EQ(fm_sid_pid(fm_self_sid()), (uint32_t)me);
    CHECK_EQ(fm_sid_for((uint32_t)me), fm_self_sid());
    CHECK_EQ(fm_sid_for((uint32_t)me + 1), (uint32_t)me + 1);
    /* started before now, and after boot */
    CHECK(fm_pid_alive_since(me, fm_boot_ticks()));
    CHECK(!fm_pid_alive_since(me, 0));
    /* a child has its own identity, read after the fork */
    pid_t pid = fmt_fork();
    if (pid == 0) {
        int ok = (uint32_t)fm_self_id() == (uint32_t)getpid() &&
                 fm_self_ident() != FM_IDENT_UNKNOWN &&
                 fm_pid_alive_as(getppid(), ident) && fm_pid_alive_as(getpid(), fm_self_ident());
        _exit(ok ? 0 : 1);
    }
    CHECK_EQ(fmt_reap(pid), 0);
    CHECK(!fm_pid_alive(pid));

    /* a mutex word naming this pid with another ident: a dead holder */
    fm_mutex m;
    fm_mutex_init(&m);
    atomic_store(&m.all, ((uint64_t)(ident + 1) << 32) | (uint32_t)me);
    CHECK_EQ(fm_mutex_owner(&m), (uint32_t)me);
    CHECK(fm_mutex_owner_id(&m) != fm_self_id());
    CHECK_ST(fmt_mutex_lock(&m, (uint32_t)me, fm_deadline_after(5), 0), FM_RECOVERED);
    CHECK_EQ(fm_mutex_owner_id(&m), fm_self_id());
    CHECK_ST(fm_mutex_unlock(&m), FM_OK);
    /* ... but this process's own identity is a live holder: a timeout */
    CHECK_ST(fm_mutex_trylock(&m, (uint32_t)me), FM_OK);
    CHECK_ST(fmt_mutex_lock(&m, (uint32_t)me, fm_deadline_after(0.15), 0), FM_TIMEOUT);
    CHECK_ST(fm_mutex_unlock(&m), FM_OK);
}

int
main(void)
{
    fmt_start();
    printf("regress_pid_reuse_fakes_live_holder\n");
    RUN(test_identity_helpers);
    RUN(test_mutex_pid_reused);
    RUN(test_sem_pid_reused);
    RUN(test_ring_writer_pid_reused);
    return fmt_finish();
}
