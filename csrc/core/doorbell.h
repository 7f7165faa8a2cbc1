/* A waitable descriptor for a shared-memory channel.  No Python.h here.
 *
 * A channel in shared memory (a queue's ring, later a pipe) has no file
 * descriptor, yet code written for pipes waits on one: select/poll, and
 * multiprocessing.connection.wait, which polls fileno().  A doorbell gives
 * the channel one, for the processes that ask, and costs nothing to the
 * others.
 *
 * The shared part (fm_doorbell, placed in the channel's shared block) holds
 * a random tag and a small table of watchers.  A watcher is a datagram
 * socket bound to a name in Linux's abstract namespace (no file, gone when
 * the socket closes, so a dead watcher leaves nothing behind) made of the
 * tag, the slot's index and generation, and the watcher's pid.  Producers
 * find watchers by that name, not by an inherited descriptor: it works in
 * fork, spawn and forkserver children alike, which an eventfd (to be
 * passed by SCM_RIGHTS to every producer, even ones started before the
 * watcher) would not.
 *
 * The protocol, with `avail` the channel's own count of what can be taken:
 *   producer:  make the item visible and count it in `avail` with a
 *              seq_cst read-modify-write, then fm_doorbell_ring(): one
 *              seq_cst load of `watchers`; if zero (nobody watches, the
 *              common case) nothing else happens.  Else it sends one byte
 *              to every registered watcher (non-blocking; a full socket
 *              buffer means the watcher is readable already; a name nobody
 *              has bound any more (ECONNREFUSED) frees that slot).
 *   watcher:   fm_doorbell_watch() once (registers its slot, seq_cst);
 *              then, before each wait, fm_doorbell_arm(): drain the socket,
 *              then read `avail` (seq_cst); if something is there, send
 *              itself a byte, so the descriptor reads ready at once.
 * Both sides use seq_cst on the two words, so either the producer's load
 * sees the watcher registered (and rings), or the watcher's read of `avail`
 * sees the item (and rings itself): a wake-up is never lost.  It may be
 * early: another consumer can take the item between the ring and the
 * watcher's look, as with a pipe that several processes read. */
#ifndef FM_DOORBELL_H
#define FM_DOORBELL_H

#include <stdatomic.h>
#include <stdint.h>

#define FM_DOORBELL_SLOTS 16
#define FM_DOORBELL_TAG 24     /* 22 hex digits: 88 random bits */

typedef struct {
    _Atomic uint32_t watchers;                  /* registered slots: what producers read */
    char tag[FM_DOORBELL_TAG];                  /* random, NUL-terminated */
    /* (generation << 32) | pid of the watcher; 0: free */
    _Atomic uint64_t slot[FM_DOORBELL_SLOTS];
} fm_doorbell;

/* A watcher in this process: its socket and slot. */
typedef struct {
    int fd;                     /* -1: not watching */
    uint32_t index;
    uint64_t word;              /* the slot's value while we hold it */
} fm_doorbell_watcher;

/* Set up a doorbell in zeroed shared memory: FM_OK or FM_ERRNO. */
int fm_doorbell_init(fm_doorbell *db);
/* Producer side, after the item is counted: wake the watchers, if any. */
void fm_doorbell_ring_slow(fm_doorbell *db);
static inline void
fm_doorbell_ring(fm_doorbell *db)
{
    if (atomic_load_explicit(&db->watchers, memory_order_seq_cst) != 0)
        fm_doorbell_ring_slow(db);
}
/* Become a watcher: FM_OK (w filled, w->fd readable when rung), FM_AGAIN
 * (every slot held by a live watcher: slots of dead ones are freed first),
 * FM_ERRNO. */
int fm_doorbell_watch(fm_doorbell *db, uint32_t pid, fm_doorbell_watcher *w);
/* Before each wait, in this order: fm_doorbell_drain(w); then read `avail`
 * (seq_cst); if something is there, fm_doorbell_self_ring(db, w).  The
 * channel reads its own count in between. */
void fm_doorbell_drain(const fm_doorbell_watcher *w);
void fm_doorbell_self_ring(fm_doorbell *db, const fm_doorbell_watcher *w);
/* Stop watching: free the slot and close the socket. */
void fm_doorbell_unwatch(fm_doorbell *db, fm_doorbell_watcher *w);
/* Forget an inherited watcher (a forked child: the slot and the name are
 * the parent's): close our copy of the socket only. */
void fm_doorbell_forget(fm_doorbell_watcher *w);

#endif
