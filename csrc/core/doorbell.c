/* doorbell.c: a waitable descriptor for a shared-memory channel (see
 * doorbell.h for the protocol and why it is built this way). */
#include "doorbell.h"
#include "atomics.h"
#include "futex.h"
#include "status.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>


#define WORD_PID(w) ((uint32_t)((w) & 0xffffffffu))
#define WORD_GEN(w) ((uint32_t)((w) >> 32))

int
fm_doorbell_init(fm_doorbell *db)
{
    if (fm_random_hex(db->tag, (FM_DOORBELL_TAG - 1) / 2) != FM_OK)
        return FM_ERRNO;
    for (int i = 0; i < FM_DOORBELL_SLOTS; i++)
        atomic_store_explicit(&db->slot[i], 0, RLX);
    atomic_store_explicit(&db->watchers, 0, SEQ);
    return FM_OK;
}

/* The abstract-namespace address of slot `index` held with `word`. */
static socklen_t
slot_address(const fm_doorbell *db, uint32_t index, uint64_t word, struct sockaddr_un *a)
{
    char tag[FM_DOORBELL_TAG];
    memcpy(tag, db->tag, sizeof tag);
    tag[sizeof tag - 1] = '\0';         /* shared memory: trust no terminator */
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    int n = snprintf(a->sun_path + 1, sizeof a->sun_path - 1, "fastmp-db-%s-%u-%u-%u", tag,
                     index, WORD_GEN(word), WORD_PID(word));
    if (n < 0 || (size_t)n >= sizeof a->sun_path - 1)
        n = (int)sizeof a->sun_path - 2;
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

static int
send_byte(int fd, const struct sockaddr_un *a, socklen_t len)
{
    static const char byte = 1;
    ssize_t r;
    do
        r = sendto(fd, &byte, 1, MSG_DONTWAIT | MSG_NOSIGNAL, (const struct sockaddr *)a, len);
    while (r < 0 && errno == EINTR);
    return r < 0 ? errno : 0;
}

/* Free slot `index` if it still holds `word` (its watcher is gone). */
static void
free_slot(fm_doorbell *db, uint32_t index, uint64_t word)
{
    uint64_t expect = word;
    if (atomic_compare_exchange_strong_explicit(&db->slot[index], &expect,
                                                (uint64_t)WORD_GEN(word) << 32, SEQ, RLX))
        atomic_fetch_sub_explicit(&db->watchers, 1, SEQ);
}

/* A socket made for this ring and closed after it, not one kept per
 * process: a descriptor kept across calls could be closed behind our back
 * (a program that closes every descriptor) and its number reused for a
 * socket of the program's own, which a stray byte would corrupt.  Three
 * system calls, and only while someone watches. */
void
fm_doorbell_ring_slow(fm_doorbell *db)
{
    int fd = -1;
    for (uint32_t i = 0; i < FM_DOORBELL_SLOTS; i++) {
        uint64_t word = atomic_load_explicit(&db->slot[i], SEQ);
        if (WORD_PID(word) == 0)
            continue;
        if (fd < 0) {
            fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
            if (fd < 0)
                return;         /* out of descriptors: watchers fall back to their timeouts */
        }
        struct sockaddr_un a;
        socklen_t len = slot_address(db, i, word, &a);
        int err = send_byte(fd, &a, len);
        if (err == ECONNREFUSED || err == ENOENT)
            free_slot(db, i, word);
        /* EAGAIN: its buffer is full, so it is readable already */
    }
    if (fd >= 0)
        close(fd);
}

static int
watch_once(fm_doorbell *db, uint32_t pid, fm_doorbell_watcher *w)
{
    w->fd = -1;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return FM_ERRNO;
    for (uint32_t i = 0; i < FM_DOORBELL_SLOTS; i++) {
        uint64_t word = atomic_load_explicit(&db->slot[i], SEQ);
        if (WORD_PID(word) != 0)
            continue;
        uint64_t mine = ((uint64_t)(WORD_GEN(word) + 1) << 32) | pid;
        /* bind first: a producer that sees the slot must find the name */
        struct sockaddr_un a;
        socklen_t len = slot_address(db, i, mine, &a);
        if (bind(fd, (struct sockaddr *)&a, len) < 0) {
            if (errno == EADDRINUSE)
                continue;       /* a stale name (should not happen): try another slot */
            int saved = errno;
            close(fd);
            errno = saved;
            return FM_ERRNO;
        }
        if (!atomic_compare_exchange_strong_explicit(&db->slot[i], &word, mine, SEQ, RLX)) {
            /* taken meanwhile: a bound socket cannot be rebound; start over */
            close(fd);
            return watch_once(db, pid, w);
        }
        atomic_fetch_add_explicit(&db->watchers, 1, SEQ);
        w->fd = fd;
        w->index = i;
        w->word = mine;
        return FM_OK;
    }
    close(fd);
    return FM_AGAIN;
}

int
fm_doorbell_watch(fm_doorbell *db, uint32_t pid, fm_doorbell_watcher *w)
{
    int st = watch_once(db, pid, w);
    if (st != FM_AGAIN)
        return st;
    /* Every slot taken: watchers that died (killed, or exited without
     * closing) keep theirs until a producer finds their name unbound.  Ring
     * once to free those, then look again. */
    fm_doorbell_ring_slow(db);
    return watch_once(db, pid, w);
}

void
fm_doorbell_drain(const fm_doorbell_watcher *w)
{
    char buf[64];
    for (;;) {
        ssize_t r = recv(w->fd, buf, sizeof buf, MSG_DONTWAIT);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return;
    }
}

void
fm_doorbell_self_ring(fm_doorbell *db, const fm_doorbell_watcher *w)
{
    struct sockaddr_un a;
    socklen_t len = slot_address(db, w->index, w->word, &a);
    (void)send_byte(w->fd, &a, len);
}

void
fm_doorbell_unwatch(fm_doorbell *db, fm_doorbell_watcher *w)
{
    if (w->fd < 0)
        return;
    free_slot(db, w->index, w->word);
    close(w->fd);
    w->fd = -1;
}

void
fm_doorbell_forget(fm_doorbell_watcher *w)
{
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
}
