/* test_doorbell.c: the waitable descriptor of a shared-memory channel
 * (csrc/core/doorbell.c): rung only while watched, never a lost wake-up across
 * processes, dead watchers' slots freed. */
#include "check.h"
#include "doorbell.h"

#include <poll.h>

/* Readable within ms milliseconds? */
static int
readable(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r;
    do
        r = poll(&p, 1, ms);
    while (r < 0 && errno == EINTR);
    return r == 1 && (p.revents & POLLIN);
}

static fm_doorbell *
shared_bell(void)
{
    void *m = mmap(NULL, sizeof(fm_doorbell) + sizeof(_Atomic uint32_t),
                   PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    return m;
}

static void
test_unwatched_ring_does_nothing(void)
{
    fm_doorbell *db = shared_bell();
    CHECK_ST(fm_doorbell_init(db), FM_OK);
    CHECK_EQ(strlen(db->tag), FM_DOORBELL_TAG - 2);
    CHECK_EQ(atomic_load(&db->watchers), 0);
    fm_doorbell_ring(db);               /* no watcher: one load, nothing sent */
    fm_doorbell_watcher w;
    CHECK_ST(fm_doorbell_watch(db, fm_self_pid(), &w), FM_OK);
    CHECK_EQ(atomic_load(&db->watchers), 1);
    CHECK(!readable(w.fd, 0));
    fm_doorbell_ring(db);
    CHECK(readable(w.fd, 1000));
    fm_doorbell_drain(&w);
    CHECK(!readable(w.fd, 0));
    fm_doorbell_self_ring(db, &w);
    CHECK(readable(w.fd, 1000));
    fm_doorbell_drain(&w);
    fm_doorbell_unwatch(db, &w);
    CHECK_EQ(w.fd, -1);
    CHECK_EQ(atomic_load(&db->watchers), 0);
    munmap(db, sizeof *db);
}

static void
test_slots_full_and_dead_watchers(void)
{
    fm_doorbell *db = shared_bell();
    CHECK_ST(fm_doorbell_init(db), FM_OK);
    fm_doorbell_watcher w[FM_DOORBELL_SLOTS + 1];
    for (int i = 0; i < FM_DOORBELL_SLOTS; i++)
        CHECK_ST(fm_doorbell_watch(db, fm_self_pid(), &w[i]), FM_OK);
    CHECK_ST(fm_doorbell_watch(db, fm_self_pid(), &w[FM_DOORBELL_SLOTS]), FM_AGAIN);
    /* a watcher that vanished without unwatching (as if killed): its name
     * is unbound, so the next watch frees its slot */
    fm_doorbell_forget(&w[3]);
    CHECK_ST(fm_doorbell_watch(db, fm_self_pid(), &w[FM_DOORBELL_SLOTS]), FM_OK);
    CHECK_EQ(atomic_load(&db->watchers), FM_DOORBELL_SLOTS);
    /* a ring reaches every live watcher */
    fm_doorbell_ring(db);
    for (int i = 0; i <= FM_DOORBELL_SLOTS; i++)
        if (i != 3)
            CHECK_MSG(readable(w[i].fd, 1000), "watcher %d not rung", i);
    /* another one dies; a ring frees its slot */
    fm_doorbell_forget(&w[5]);
    fm_doorbell_ring(db);
    CHECK_EQ(atomic_load(&db->watchers), FM_DOORBELL_SLOTS - 1);
    for (int i = 0; i <= FM_DOORBELL_SLOTS; i++)
        if (i != 3 && i != 5)
            fm_doorbell_unwatch(db, &w[i]);
    CHECK_EQ(atomic_load(&db->watchers), 0);
    munmap(db, sizeof *db);
}

/* The protocol of doorbell.h with a counter for the channel: producer
 * processes count an item (seq_cst) then ring; the watcher drains, reads the
 * count, self-rings if it is non-zero, then polls with a long timeout and
 * takes one item.  A lost wake-up shows as a poll that times out. */
#define NPROD 3
#define PER_PROD 3000

static void
test_no_lost_wakeup_across_processes(void)
{
    fm_doorbell *db = shared_bell();
    _Atomic uint32_t *avail = (_Atomic uint32_t *)(db + 1);
    CHECK_ST(fm_doorbell_init(db), FM_OK);
    atomic_store(avail, 0);
    fm_doorbell_watcher w;
    CHECK_ST(fm_doorbell_watch(db, fm_self_pid(), &w), FM_OK);
    pid_t kids[NPROD];
    for (int k = 0; k < NPROD; k++) {
        kids[k] = fmt_fork();
        if (kids[k] == 0) {
            unsigned seed = (unsigned)k * 7919u + 1;
            for (int i = 0; i < PER_PROD; i++) {
                seed = seed * 1103515245u + 12345u;
                if ((seed >> 16) % 8 == 0)
                    usleep((seed >> 8) % 300);
                atomic_fetch_add_explicit(avail, 1, memory_order_seq_cst);
                fm_doorbell_ring(db);
            }
            _exit(0);
        }
    }
    int lost = 0;
    for (int taken = 0; taken < NPROD * PER_PROD && !lost; taken++) {
        fm_doorbell_drain(&w);
        if (atomic_load_explicit(avail, memory_order_seq_cst) > 0)
            fm_doorbell_self_ring(db, &w);
        if (!readable(w.fd, 10000)) {
            lost = 1;
            break;
        }
        /* take one (it may not be counted yet only if the wake-up was early:
         * then wait for it, as a consumer's get would) */
        uint32_t a;
        do
            a = atomic_load(avail);
        while (a == 0 || !atomic_compare_exchange_weak(avail, &a, a - 1));
    }
    CHECK_MSG(!lost, "a wake-up was lost");
    for (int k = 0; k < NPROD; k++)
        CHECK_EQ(fmt_reap(kids[k]), 0);
    CHECK_EQ(atomic_load(avail), 0);
    fm_doorbell_unwatch(db, &w);
    munmap(db, sizeof *db);
}

int
main(void)
{
    fmt_start();
    printf("test_doorbell\n");
    RUN(test_unwatched_ring_does_nothing);
    RUN(test_slots_full_and_dead_watchers);
    RUN(test_no_lost_wakeup_across_processes);
    return fmt_finish();
}
