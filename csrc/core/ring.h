/* A bounded many-producer many-consumer ring of variable-length records in
 * one shared segment.  No Python.h here.
 *
 * This header is the contract between ring.c (its implementation), queue.c
 * (Queue, SimpleQueue, JoinableQueue) and pool.c (the pool's task and result
 * channels).  Change it deliberately: both users depend on it.
 *
 * Layout: an fm_ring header at the start of a mapping, then `capacity`
 * bytes of data (a power of two, at least FM_RING_MIN_CAPACITY).  No
 * pointers inside: processes map the ring at different addresses.
 * Positions are 64-bit byte counts that only grow (no ABA, no wrap in
 * practice); a position p lives at data[p & (capacity - 1)].  The producer
 * position, the consumer position and the reclaim position each sit on
 * their own cache line.
 *
 * A record is an 8-aligned header word plus its payload, padded to 8 bytes;
 * it never straddles the end of the data area (a producer that would cross
 * it claims a pad record to the end as well).  The record's state word says
 * who is doing what with it and carries the pid of the process doing it:
 *   WRITING(pid)  claimed by a producer that has not committed yet
 *   READY         committed, waiting for a consumer
 *   READING(pid)  taken by a consumer that is copying it out
 *   DONE          consumed, skipped or padding: its space can be reclaimed
 * Claims: a producer reserves space with one CAS on the producer position,
 * then stamps the record's header WRITING(pid) with a CAS that expects a
 * word of an earlier lap, writes, and commits with a release store of the
 * state.  Consumers take the record at the consumer position with one CAS,
 * copy it out, then mark it DONE, filling its payload area with filler
 * words tagged with its lap.  The space behind the oldest record that is
 * not DONE is reclaimed (by whoever needs space: one CAS on the reclaim
 * position).
 *
 * Crashes: a record stuck in WRITING(pid) or READING(pid) whose pid is
 * dead is abandoned (a live process with that pid that started after the
 * record was first checked does not count: pids come round): a consumer skips a dead writer's
 * record, reclaim steps over a dead reader's.  A reservation whose header
 * is not stamped yet names nobody, so it is a lease: a consumer that finds
 * it unstamped at the consumer position at two wait-slice checks a slice
 * apart revokes it (and any unstamped reservation after it up to the next
 * stamped header): it poisons the header words with a REVOKED word of the
 * current lap and turns the range into padding.  A producer whose stamp
 * then finds a current-lap word knows it was revoked and claims again; it
 * had written nothing.  A revoker that dies is taken over by the next.
 * These checks run when a wait ends without a record: after a whole slice
 * (FM_WAIT_SLICE_NS) or at the caller's deadline, never on the fast path;
 * a revocation needs the same unstamped header seen a slice apart.  So a producer killed at any instruction of
 * fm_ring_claim_space, of its write, or of fm_ring_commit never stops the
 * others, and every committed record is handed to exactly one consumer.
 *
 * Blocking: consumers sleep on `items_seq`, producers on `space_seq`; each
 * has a sleeper count, and a wake-up syscall is made only when the count is
 * non-zero.  Blocking calls take an absolute deadline (fm_deadline_after,
 * FM_FOREVER for none) and a spin budget, and return FM_EINTR after each
 * wait slice or signal, as prims.h's do: check signals and call again with
 * the same deadline and no spin.
 *
 * Sealing: a sealed ring accepts no more records (claims return FM_BROKEN)
 * but still delivers what it holds.  An unbounded queue grows by sealing a
 * full ring and linking a larger one: `next_name` holds the new ring's
 * segment name, set before the seal is published; a consumer that finds a
 * sealed ring empty moves on to it. */
#ifndef FM_RING_H
#define FM_RING_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "futex.h"
#include "shm.h"
#include "status.h"

#define FM_RING_MAGIC 0x474e4952u          /* "RING" */
#define FM_RING_MIN_CAPACITY 4096u
#define FM_RING_RECORD_HEADER 8u            /* bytes before each payload */
#define FM_CACHE_LINE 64

typedef struct fm_ring fm_ring;             /* defined in ring.c */

/* Bytes a mapping needs for a ring of `capacity` data bytes (a power of two
 * >= FM_RING_MIN_CAPACITY), header included. */
size_t fm_ring_bytes(size_t capacity);
/* Initialize a ring over zeroed `mem` of fm_ring_bytes(capacity) bytes. */
int fm_ring_init(void *mem, size_t capacity);
/* Check that `mem` (of `size` mapped bytes) holds a ring: FM_OK/FM_CORRUPT. */
int fm_ring_check(const void *mem, size_t size);

/* The largest payload one record can carry: larger items travel through a
 * segment of their own with only a descriptor in the ring (queue.c). */
size_t fm_ring_max_record(const fm_ring *r);
size_t fm_ring_capacity(const fm_ring *r);
/* The smallest valid capacity (a power of two, >= FM_RING_MIN_CAPACITY)
 * that holds n bytes. */
static inline size_t
fm_ring_capacity_for(size_t n)
{
    size_t c = FM_RING_MIN_CAPACITY;
    while (c < n)
        c <<= 1;
    return c;
}

/* ---- producing ---- */
typedef struct {
    uint64_t pos;        /* the record's position (its header) */
    void *data;          /* where to write the payload, in this mapping */
    uint32_t len;        /* payload bytes claimed */
} fm_ring_claim;

/* Claim room for a `len`-byte payload.  FM_OK; FM_AGAIN (no room and
 * deadline already passed: the non-blocking form is deadline 0); FM_TIMEOUT;
 * FM_EINTR; FM_BROKEN (sealed); FM_OVERFLOW (len > fm_ring_max_record);
 * FM_CORRUPT (a record header that the ring did not write, see below). */
int fm_ring_claim_space(fm_ring *r, uint32_t len, uint32_t pid, int64_t deadline_ns,
                        int64_t spin_ns, fm_ring_claim *c);
/* Publish a claimed record (release order: its bytes are visible first)
 * and wake a sleeping consumer if there is one. */
void fm_ring_commit(fm_ring *r, const fm_ring_claim *c);
/* Give up a claimed record: consumers skip it. */
void fm_ring_abandon(fm_ring *r, const fm_ring_claim *c);
/* fm_ring_commit in two halves, for a producer that knows more than the
 * ring about whether a consumer must be woken: publish the record (no
 * wake-up), then, unless a consumer that is awake is sure to come back for
 * it, fm_ring_wake_consumer.  fm_ring_is_oldest: no record is waiting ahead
 * of this one (every earlier one was taken). */
void fm_ring_publish(fm_ring *r, const fm_ring_claim *c);
void fm_ring_wake_consumer(fm_ring *r);
int fm_ring_is_oldest(fm_ring *r, const fm_ring_claim *c);

/* Test hook: a program that defines this function (tests/c/test_ring.c
 * does; the extension does not) has it called by every producer between
 * reserving a record at `pos` and stamping its header: the window in which
 * a claim is only a lease (see "Claims" above).  One never-taken branch on
 * the claim path otherwise. */
extern void fm_ring_test_claim_window(fm_ring *r, uint64_t pos) __attribute__((weak));
/* The same for a consumer that has just taken the header at `pos` to revoke
 * the claims from there on, before it walks the range (slow path only). */
extern void fm_ring_test_revoke_window(fm_ring *r, uint64_t pos) __attribute__((weak));

/* ---- consuming ---- */
typedef struct {
    uint64_t pos;
    const void *data;    /* the payload, valid until fm_ring_release */
    uint32_t len;
} fm_ring_read;

/* Take the oldest committed record.  FM_OK; FM_AGAIN (empty and deadline
 * passed); FM_TIMEOUT; FM_EINTR; FM_BROKEN (sealed and empty: move on to
 * next_name); FM_CORRUPT.  Records of dead writers are skipped on the way.
 *
 * Corruption: every length, kind and tag read from a record header is
 * checked before it is used (the record must fit the data area and end by
 * the producer position; a producer's record is at most
 * fm_ring_max_record).  A header that fails (a stray write into the
 * segment) makes the call return FM_CORRUPT and is left in place, so the
 * ring reports it again on every later take: it is never acted on. */
int fm_ring_take(fm_ring *r, uint32_t pid, int64_t deadline_ns, int64_t spin_ns,
                 fm_ring_read *rd);
/* Done with a taken record: its space can be reclaimed; wakes a sleeping
 * producer if there is one. */
void fm_ring_release(fm_ring *r, const fm_ring_read *rd);
/* Adopt a record that process `dead` took and never released (it died
 * holding it): it becomes `pid`'s, to read and then fm_ring_release.
 * FM_OK with *rd filled, FM_AGAIN when `dead` holds none (any more), or
 * FM_CORRUPT. */
int fm_ring_adopt(fm_ring *r, uint32_t dead, uint32_t pid, fm_ring_read *rd);

/* ---- state ---- */
/* Records committed and not yet taken (exact when nothing is in flight). */
uint64_t fm_ring_ready_count(const fm_ring *r);
/* Bytes claimed and not yet taken (records and their headers): O(1). */
uint64_t fm_ring_pending_bytes(const fm_ring *r);
/* Seal the ring after setting its successor's name (may be "" for none):
 * claims fail with FM_BROKEN from now on; wakes every sleeper. */
void fm_ring_seal(fm_ring *r, const char *next_name);
int fm_ring_sealed(const fm_ring *r);
/* The successor named at seal time ("" if none); stable once sealed. */
const char *fm_ring_next_name(const fm_ring *r);
/* Wake every sleeper (producers and consumers), e.g. on close. */
void fm_ring_wake_all(fm_ring *r);

#endif
