/* ring.c: the many-producer many-consumer ring of variable-length records
 * described in ring.h.  No Python.h: everything here runs without the GIL.
 *
 * The record header word (64 bits, atomic):
 *     bits  0..31  payload length
 *     bits 32..53  pid (WRITING / READING: who is doing it)
 *     bits 54..60  lap tag: (position / capacity + 1) mod 128
 *     bits 61..63  kind: WRITING READY READING DONE PAD REVOKED (FREE: 0)
 * Filler words of released space (free_byte) and REVOKED words (see
 * Claiming) carry the lap tag too; a zero word has tag 0, the tag of no lap
 * before lap 127, by when every word has been rewritten.
 * The lap tag makes a header from an earlier lap of the ring (left in memory
 * at the same offset) distinguishable from the current record's: a reader
 * only acts on a header whose tag matches the lap of the position it
 * expects, and every CAS compares the whole word, tag included.  So a
 * consumer delayed for a full lap cannot take a record of the next lap by
 * mistake (that would take 128 laps within one CAS).
 *
 * Free space holds no stale payload: a consumer that releases a record
 * fills its payload area with filler words carrying the record's lap tag
 * (free_byte), so
 * every 8-byte word behind `reclaim` (and, in a new ring, every zero word:
 * tag 0 is no lap's tag until lap 127) is tagged with an earlier lap than
 * the one a producer claims it in.  That is what the claim protocol below
 * rests on.
 *
 * Claims reserve space with one CAS on `prod`; the sealed flag is bit 63 of
 * the same word, so a claim and a seal are ordered by that one word: no
 * record can be claimed in a ring once a consumer has seen it sealed and
 * empty.
 *
 * Taking: the consumer CASes the header at `cons` from READY to READING(pid),
 * then advances `cons` with a CAS.  Anyone who finds READING at `cons` helps
 * advance it (its length is in the header), so a consumer that dies between
 * its two CASes does not stop the others.  Padding records (PAD) and the
 * records of dead writers are taken the same way and released at once.
 *
 * Reclaiming: `reclaim` trails `cons`; whoever needs space steps it over
 * DONE records (one CAS each), and over the READING records of dead readers
 * after finishing their release for them.
 *
 * Claiming (the window between the claim and the header).  A claim is two
 * steps: the CAS on `prod` that reserves [p, p + t), then a CAS that stamps
 * WRITING(pid) into the header at p, expecting a word of an earlier lap.
 * A producer can die (or stall) between the two; the header then carries
 * no pid and nobody can tell whose the record is.  So a claim is a lease:
 * a consumer that finds the header at `cons` unwritten (a word of an
 * earlier lap) at two of its wait-slice checks a slice apart revokes it:
 *   1. it CASes that word to REVOKED(its pid), current lap;
 *   2. it walks on, word by word, CASing every word of an earlier lap to
 *      REVOKED too, up to the first written header of this lap, `prod`,
 *      or the end of the lap (a record boundary each; or at most
 *      FM_RING_REVOKE_MAX bytes: the rest is revoked again later);
 *   3. it turns its REVOKED word at `cons` into a PAD over the whole range,
 *      which consumers then skip like any pad (and release: filler words).
 * Every claim that starts in the range finds a word of the current lap
 * where it expects one of an earlier lap, so its stamp fails and it claims
 * again elsewhere: nothing was written, nothing is lost or delivered twice.
 * A claim whose stamp won the race stops the walk at its header, and keeps
 * its record.  A revoker that dies leaves REVOKED(pid) at `cons`: a
 * consumer that finds that pid dead (after a slice) takes the revocation
 * over and finishes it.
 *
 * Stale views.  A revoker's CAS at `c` and a producer's stamp expect a word
 * of an earlier lap; after a stop of two slices and a whole lap between
 * their load and their CAS, the word could hold that value again (an ABA,
 * e.g. payload bytes equal to a filler word).  So a revoker counts itself
 * in `revokes` first and, its CAS done, checks that `c` still is the
 * consumer position (no consumer passes a REVOKED head), else it undoes
 * the CAS; a producer reads `revokes` before its CAS on `prod` and, if it
 * changed by the time its stamp succeeded, checks that the consumers have
 * not passed its record (no consumer passes a live reservation), else it
 * undoes the stamp and claims again.  The producer's fast path costs one
 * CAS on its own header line in place of a plain store, and two loads of
 * a read-mostly word: no system call, no contended line.
 *
 * Every death (mid-claim, mid-copy, mid-read) is recovered. */
#include "ring.h"
#include "atomics.h"
#include "glibc_compat.h"

#include <limits.h>
#include <string.h>


#define RING_VERSION 4u
#define SEALED_BIT (1ull << 63)
/* A spinner's mark this long past the end of its spin is stale. */
#define FM_RING_STALE_SPIN_NS (1000 * 1000LL)
#define POS_MASK (SEALED_BIT - 1)
/* The longest range one revocation covers (it stays a valid PAD length). */
#define FM_RING_REVOKE_MAX ((uint64_t)1 << 30)

enum { K_FREE = 0, K_WRITING = 1, K_READY = 2, K_READING = 3, K_DONE = 4, K_PAD = 5,
       K_REVOKED = 6 };

#define H_LEN(h) ((uint32_t)(h))
#define H_PID(h) ((uint32_t)(((h) >> 32) & 0x3fffffu))
#define H_TAG(h) ((uint32_t)(((h) >> 54) & 0x7fu))
#define H_KIND(h) ((unsigned)((h) >> 61))

/* What a consumer noted when it first checked the holder of a record (see
 * holder_gone): the record's position + 1 (0: none), the holder's pid and
 * the time (fm_boot_ticks). */
typedef struct {
    _Atomic uint64_t pos;
    _Atomic uint64_t since;
    _Atomic uint32_t pid;
    uint32_t _pad;
} holder_note;

struct fm_ring {
    /* constant after init */
    uint32_t magic;
    uint32_t version;
    uint64_t capacity;
    uint32_t lap_shift;         /* log2(capacity) */
    uint32_t _pad0;
    /* revocations begun (see Claiming); read-mostly, so it shares the line
     * of the constants every operation reads */
    _Atomic uint64_t revokes;
    /* producer position | SEALED_BIT */
    _Alignas(FM_CACHE_LINE) _Atomic uint64_t prod;
    /* consumer position: the oldest record not yet taken */
    _Alignas(FM_CACHE_LINE) _Atomic uint64_t cons;
    /* everything before it is free space */
    _Alignas(FM_CACHE_LINE) _Atomic uint64_t reclaim;
    _Alignas(FM_CACHE_LINE) _Atomic uint32_t items_seq;
    _Atomic uint32_t items_sleepers;
    _Atomic uint32_t items_spinner;     /* pid of the consumer spinning, or 0 (fm_ring_take) */
    _Atomic int64_t items_spin_until;   /* when its spin ends (fm_now_ns) */
    _Atomic uint32_t items_waking;      /* 1: a consumer was woken and has not run yet */
    _Alignas(FM_CACHE_LINE) _Atomic uint32_t space_seq;
    _Atomic uint32_t space_sleepers;
    /* the unwritten header a consumer last found at `cons` after a wait
     * slice (position + 1; 0: none) and when: a claim is revoked once it
     * stays unwritten that long (see Claiming).  Slow path only. */
    _Alignas(FM_CACHE_LINE) _Atomic uint64_t stuck_pos;
    _Atomic int64_t stuck_since;
    /* the holders of the record at `cons` (a writer, or a revoker) and of
     * the record at `reclaim` (a reader) last checked: slow path only */
    holder_note writer_note;
    holder_note reader_note;
    _Alignas(FM_CACHE_LINE) char next_name[FM_SHM_NAME_MAX];
    _Alignas(FM_CACHE_LINE) unsigned char data[];
};

_Static_assert(sizeof(struct fm_ring) % FM_CACHE_LINE == 0, "ring header not line-sized");
_Static_assert(offsetof(struct fm_ring, next_name) - offsetof(struct fm_ring, stuck_pos) ==
               FM_CACHE_LINE, "the slow-path notes share one cache line");

/* ----------------------------------------------------------------- helpers */

static inline uint64_t
rec_total(uint32_t len)
{
    return FM_RING_RECORD_HEADER + (((uint64_t)len + 7) & ~(uint64_t)7);
}

static inline uint64_t
mask_of(const fm_ring *r)
{
    return r->capacity - 1;
}

static inline uint32_t
lap_tag(const fm_ring *r, uint64_t pos)
{
    return (uint32_t)(((pos >> r->lap_shift) + 1) & 0x7fu);
}

static inline uint64_t
make_header(unsigned kind, uint32_t tag, uint32_t pid, uint32_t len)
{
    return ((uint64_t)kind << 61) | ((uint64_t)tag << 54) | ((uint64_t)(pid & 0x3fffffu) << 32) |
           len;
}

static inline _Atomic uint64_t *
header_at(fm_ring *r, uint64_t pos)
{
    return (_Atomic uint64_t *)(void *)(r->data + (pos & mask_of(r)));
}

/* An optimistic read of the header at `pos`, made before knowing that
 * `pos` still names a live record: the caller's view of cons or reclaim may
 * be stale, and the word may by now be payload that a producer is writing.
 * Every caller validates the value (tag, then the position word re-read
 * unchanged) before acting on it, and acts only through a CAS on the whole
 * word.  Kept out of line under one name so that ThreadSanitizer can be told
 * about this one deliberate race (tests/c/tsan.supp) and nothing else. */
__attribute__((noinline)) static uint64_t
peek_header(fm_ring *r, uint64_t pos)
{
    return atomic_load_explicit(header_at(r, pos), SEQ);
}

/* CAS on a header found by peek_header.  The comparison covers the whole
 * word (lap tag included), so on a stale view it fails; but it still counts
 * as a write for ThreadSanitizer, against the payload bytes a producer may
 * be copying there by then.  Out of line for the same suppression. */
__attribute__((noinline)) static int
cas_header(fm_ring *r, uint64_t pos, uint64_t *expected, uint64_t desired)
{
    return atomic_compare_exchange_strong_explicit(header_at(r, pos), expected, desired, SEQ,
                                                   RLX);
}

static inline unsigned char *
payload_at(fm_ring *r, uint64_t pos)
{
    return r->data + (pos & mask_of(r)) + FM_RING_RECORD_HEADER;
}

/* Wake sleepers on a sequence word, if there are any.  The caller changed
 * what they wait for with a seq_cst store; the seq_cst load of the sleeper
 * count pairs with the sleeper's seq_cst increment (see wait_seq). */
static inline void
bump_if_sleepers(_Atomic uint32_t *seq, _Atomic uint32_t *sleepers, int n)
{
    if (atomic_load_explicit(sleepers, SEQ) > 0) {
        atomic_fetch_add_explicit(seq, 1, SEQ);
        fm_futex_wake(seq, n);
    }
}

/* The byte that, repeated, makes a filler word of lap tag `tag`: a word of
 * eight equal bytes b has the tag (b >> 6) | ((b & 0x1f) << 2) (bits 54..60),
 * so free space is filled at memset's speed.  Its kind (bits 61..63, b >> 5)
 * is FREE, READY, DONE or 7, never REVOKED; it does not matter anyway: a
 * filler word is only ever read for its tag (as a word of an earlier lap,
 * or of this lap where a revoked claim would stamp). */
static inline int
free_byte(uint32_t tag)
{
    return (int)(((tag & 3u) << 6) | (tag >> 2) | ((tag & 3u) == 3u ? 0x20u : 0u));
}

/* Whether a record of `len` payload bytes at `pos`, as a header says, is
 * one: it stays inside the data area and ends at or before `end` (the
 * producer position, or the consumer position for a record already taken).
 * A header that fails this was overwritten by something other than the
 * ring (a stray write into the segment): the caller returns FM_CORRUPT
 * rather than act on the length (memset, or a jump of a position). */
static inline int
rec_fits(const fm_ring *r, uint64_t pos, uint32_t len, uint64_t end)
{
    uint64_t t = rec_total(len);
    return (pos & mask_of(r)) + t <= r->capacity && pos + t <= end;
}

/* Release a record this process holds in READING state: fill its payload
 * area with filler words of its lap (free space holds no stale payload, and a
 * claim revoked in this lap cannot stamp a header there), then mark it
 * DONE. */
static void
release_at(fm_ring *r, uint64_t pos, uint64_t h)
{
    uint32_t len = H_LEN(h);
    memset(payload_at(r, pos), free_byte(H_TAG(h)),
           (size_t)(rec_total(len) - FM_RING_RECORD_HEADER));
    atomic_store_explicit(header_at(r, pos), make_header(K_DONE, H_TAG(h), 0, len), SEQ);
    bump_if_sleepers(&r->space_seq, &r->space_sleepers, INT_MAX);
}

/* ------------------------------------------------------------------- setup */

size_t
fm_ring_bytes(size_t capacity)
{
    return sizeof(struct fm_ring) + capacity;
}

int
fm_ring_init(void *mem, size_t capacity)
{
    if (capacity < FM_RING_MIN_CAPACITY || (capacity & (capacity - 1)) != 0 ||
        capacity > ((size_t)1 << 40) || (uintptr_t)mem % FM_CACHE_LINE != 0)
        return FM_CORRUPT;
    fm_ring *r = mem;
    r->version = RING_VERSION;
    r->capacity = capacity;
    uint32_t shift = 0;
    while (((size_t)1 << shift) < capacity)
        shift++;
    r->lap_shift = shift;
    atomic_store_explicit(&r->prod, 0, RLX);
    atomic_store_explicit(&r->cons, 0, RLX);
    atomic_store_explicit(&r->reclaim, 0, RLX);
    atomic_store_explicit(&r->items_seq, 0, RLX);
    atomic_store_explicit(&r->items_sleepers, 0, RLX);
    atomic_store_explicit(&r->items_spinner, 0, RLX);
    atomic_store_explicit(&r->items_spin_until, 0, RLX);
    atomic_store_explicit(&r->items_waking, 0, RLX);
    atomic_store_explicit(&r->space_seq, 0, RLX);
    atomic_store_explicit(&r->space_sleepers, 0, RLX);
    atomic_store_explicit(&r->stuck_pos, 0, RLX);
    atomic_store_explicit(&r->stuck_since, 0, RLX);
    atomic_store_explicit(&r->writer_note.pos, 0, RLX);
    atomic_store_explicit(&r->reader_note.pos, 0, RLX);
    atomic_store_explicit(&r->revokes, 0, RLX);
    memset(r->next_name, 0, sizeof r->next_name);
    /* the magic goes last: a process that checks the ring sees it whole */
    atomic_store_explicit((_Atomic uint32_t *)&r->magic, FM_RING_MAGIC, REL);
    return FM_OK;
}

int
fm_ring_check(const void *mem, size_t size)
{
    const fm_ring *r = mem;
    if (size < sizeof(struct fm_ring) || (uintptr_t)mem % FM_CACHE_LINE != 0)
        return FM_CORRUPT;
    if (atomic_load_explicit((_Atomic uint32_t *)&((fm_ring *)r)->magic, ACQ) != FM_RING_MAGIC ||
        r->version != RING_VERSION)
        return FM_CORRUPT;
    uint64_t cap = r->capacity;
    if (cap < FM_RING_MIN_CAPACITY || (cap & (cap - 1)) != 0 || cap > ((uint64_t)1 << 40) ||
        ((uint64_t)1 << r->lap_shift) != cap || size - sizeof(struct fm_ring) < cap)
        return FM_CORRUPT;
    return FM_OK;
}

size_t
fm_ring_capacity(const fm_ring *r)
{
    return (size_t)r->capacity;
}

size_t
fm_ring_max_record(const fm_ring *r)
{
    /* Half the ring: a record of that size always fits once the ring is
     * empty, wherever the wrap falls (it goes in the tail, or the tail is
     * padded and it goes at the start).  The length field is 32 bits. */
    uint64_t m = r->capacity / 2 - FM_RING_RECORD_HEADER;
    return (size_t)(m < 0x7ffffff8u ? m : 0x7ffffff8u);
}

/* ------------------------------------------------------------- holders */

/* Whether the process `pid`, which holds the record at `pos` (a WRITING,
 * READING or REVOKED header), is gone.  A header has room for the pid only,
 * and pids come round (pid_max is 32768 on many systems): a live process
 * with that pid may be a newer one.  So the first check of a record notes
 * the time, and later checks do not count a process that started after it
 * as the holder (fm_pid_alive_since).  A holder that died and whose pid
 * was given to a new process before anyone first checked its record is
 * still taken for alive: the note narrows that window to the time before
 * the first check, it does not close it.  Checkers racing on one note can
 * only make it later (one check more before a reuse is seen through). */
static int
holder_gone(holder_note *note, uint64_t pos, uint32_t pid)
{
    if (atomic_load_explicit(&note->pos, SEQ) == pos + 1 &&
        atomic_load_explicit(&note->pid, SEQ) == pid)
        return !fm_pid_alive_since((pid_t)pid, atomic_load_explicit(&note->since, SEQ));
    atomic_store_explicit(&note->pos, 0, SEQ);
    atomic_store_explicit(&note->pid, pid, SEQ);
    atomic_store_explicit(&note->since, fm_boot_ticks(), SEQ);
    atomic_store_explicit(&note->pos, pos + 1, SEQ);
    return !fm_pid_alive((pid_t)pid);
}

/* ------------------------------------------------------------ reclaiming */

/* Step `reclaim` over DONE records (and, if check_dead, over the records of
 * readers that died, releasing them first).  Returns how many it passed, or
 * -1 when the header at `reclaim` is corrupt (a length past `cons`). */
static int
reclaim_some(fm_ring *r, uint32_t pid, int check_dead)
{
    int passed = 0;
    for (;;) {
        uint64_t rp = atomic_load_explicit(&r->reclaim, SEQ);
        uint64_t c = atomic_load_explicit(&r->cons, SEQ);
        if (rp >= c)
            return passed;
        uint64_t h = peek_header(r, rp);
        if (atomic_load_explicit(&r->reclaim, SEQ) != rp)
            continue;           /* stale view: h may be anything */
        if (H_TAG(h) != lap_tag(r, rp))
            return passed;
        unsigned kind = H_KIND(h);
        if ((kind == K_DONE || kind == K_READING) && !rec_fits(r, rp, H_LEN(h), c))
            return -1;          /* every record behind cons ends before it */
        if (kind == K_DONE) {
            if (atomic_compare_exchange_strong_explicit(&r->reclaim, &rp, rp + rec_total(H_LEN(h)),
                                                        SEQ, RLX))
                passed++;
            continue;
        }
        if (kind == K_READING && check_dead && holder_gone(&r->reader_note, rp, H_PID(h))) {
            uint64_t mine = make_header(K_READING, H_TAG(h), pid, H_LEN(h));
            if (cas_header(r, rp, &h, mine))
                release_at(r, rp, mine);
            continue;
        }
        return passed;
    }
}

/* --------------------------------------------------------------- waiting */

/* Sleep on `seq` (seen before the caller's last check) until it changes,
 * the deadline, or a wait slice.  `recheck` runs after this thread counts
 * itself as a sleeper: a state change made before that is seen by it, one
 * made after sees the sleeper and bumps `seq`.  Returns FM_OK (look again),
 * FM_TIMEOUT, FM_EINTR; *sliced is set when a whole wait slice passed. */
typedef int (*recheck_fn)(fm_ring *r, void *arg);

static int
wait_seq(fm_ring *r, _Atomic uint32_t *seq, _Atomic uint32_t *sleepers,
         _Atomic uint32_t *waking, int64_t deadline_ns, recheck_fn recheck, void *arg,
         int *sliced)
{
    uint32_t before = atomic_fetch_add_explicit(sleepers, 1, SEQ);
    /* A consumer woken and not yet running is still counted in sleepers:
     * with nobody counted before us, a raised items_waking is stale (its
     * sleeper left on its own as the wake-up was sent), and would keep
     * producers from waking us. */
    if (waking != NULL && before == 0)
        atomic_store_explicit(waking, 0, SEQ);
    uint32_t seen = atomic_load_explicit(seq, SEQ);
    int st = FM_OK;
    if (!recheck(r, arg)) {
        int64_t t0 = fm_now_ns();
        st = fm_futex_wait(seq, seen, deadline_ns);
        if (st == FM_EINTR && fm_now_ns() - t0 >= FM_WAIT_SLICE_NS)
            *sliced = 1;
    }
    /* running again, whatever woke us (or we did not sleep): the next
     * record may wake another consumer */
    if (waking != NULL)
        atomic_store_explicit(waking, 0, SEQ);
    atomic_fetch_sub_explicit(sleepers, 1, RLX);
    return st;
}

/* ------------------------------------------------------------- producing */

typedef struct {
    uint32_t len;
    uint32_t pid;
    int check_dead;
    fm_ring_claim *c;
} claim_args;

/* Stamp `h` into the header at `pos`, which this process reserved with its
 * CAS on `prod`: 1, or 0 if a consumer revoked the reservation (the word
 * carries the current lap's tag: REVOKED, or filler once the revoked range
 * was released).  The word held before is of an earlier lap, so the CAS
 * fails only when the claim was revoked meanwhile.  (Inline atomics, not
 * peek_header: the word is this process's own reservation, and what was
 * written there before reached it through the reclaim position.) */
static inline int
stamp(fm_ring *r, uint64_t pos, uint64_t h, uint64_t *was)
{
    uint32_t tag = H_TAG(h);
    _Atomic uint64_t *hp = header_at(r, pos);
    uint64_t old = atomic_load_explicit(hp, RLX);
    while (H_TAG(old) != tag) {
        if (atomic_compare_exchange_weak_explicit(hp, &old, h, SEQ, RLX)) {
            *was = old;
            return 1;
        }
    }
    return 0;
}

/* After a stamp that succeeded while a revocation began somewhere (slow
 * path): 1 if the reservation at `pos` is live, else undo the stamp and
 * return 0.  A stamp can only succeed on a revoked reservation by an ABA:
 * the producer stopped between the load and the CAS of stamp() for two
 * slices and a whole lap, and the word came back to the value it had.
 * Then the consumers have passed `pos` (no consumer passes a live one). */
static int
stamp_holds(fm_ring *r, uint64_t pos, uint64_t h, uint64_t was)
{
    if (atomic_load_explicit(&r->cons, SEQ) <= pos)
        return 1;
    atomic_compare_exchange_strong_explicit(header_at(r, pos), &h, was, SEQ, RLX);
    return 0;
}

/* One attempt: FM_OK (claimed), FM_AGAIN (no room), FM_BROKEN (sealed),
 * FM_CORRUPT (a corrupt header where space is reclaimed). */
static int
try_claim(fm_ring *r, claim_args *a)
{
    uint64_t t = rec_total(a->len);
    uint64_t cap = r->capacity;
    int reclaimed = 0;
    for (;;) {
        uint64_t pw = atomic_load_explicit(&r->prod, SEQ);
        if (pw & SEALED_BIT)
            return FM_BROKEN;
        uint64_t p = pw;
        uint64_t off = p & mask_of(r);
        uint64_t pad = off + t > cap ? cap - off : 0;
        uint64_t rp = atomic_load_explicit(&r->reclaim, SEQ);
        if (p + pad + t > rp + cap) {
            if (!reclaimed) {
                reclaimed = 1;
                int n = reclaim_some(r, a->pid, a->check_dead);
                if (n < 0)
                    return FM_CORRUPT;
                if (n > 0 || a->check_dead)
                    continue;
            }
            return FM_AGAIN;
        }
        /* revocations begun so far: read before the reservation can be seen */
        uint64_t g = atomic_load_explicit(&r->revokes, SEQ);
        if (!atomic_compare_exchange_weak_explicit(&r->prod, &pw, p + pad + t, SEQ, RLX))
            continue;
        /* Reserved.  Stamp the headers at once: until then the claim is a
         * lease a consumer may revoke (see Claiming in the comment at the
         * top).  A revoked pad is skipped all the same; a revoked record
         * is claimed again. */
        if (fm_ring_test_claim_window != NULL)
            fm_ring_test_claim_window(r, p);
        uint64_t hpad = 0, wpad = 0, was;
        if (pad) {
            hpad = make_header(K_PAD, lap_tag(r, p), 0, (uint32_t)(pad - FM_RING_RECORD_HEADER));
            if (!stamp(r, p, hpad, &wpad))
                hpad = 0;
            p += pad;
        }
        uint64_t h = make_header(K_WRITING, lap_tag(r, p), a->pid, a->len);
        if (!stamp(r, p, h, &was))
            continue;
        if (atomic_load_explicit(&r->revokes, SEQ) != g) {
            if (hpad)
                stamp_holds(r, p - pad, hpad, wpad);
            if (!stamp_holds(r, p, h, was))
                continue;
        }
        a->c->pos = p;
        a->c->data = payload_at(r, p);
        a->c->len = a->len;
        return FM_OK;
    }
}

static int
claim_recheck(fm_ring *r, void *arg)
{
    return try_claim(r, arg) != FM_AGAIN;
}

int
fm_ring_claim_space(fm_ring *r, uint32_t len, uint32_t pid, int64_t deadline_ns,
                    int64_t spin_ns, fm_ring_claim *c)
{
    if (len > fm_ring_max_record(r))
        return FM_OVERFLOW;
    claim_args a = {len, pid, 0, c};
    /* A claim made by wait_seq's recheck leaves c->data set. */
    c->data = NULL;
    int st = try_claim(r, &a);
    if (st != FM_AGAIN)
        return st;
    if (fm_now_ns() >= deadline_ns)
        return FM_AGAIN;
    /* Others already asleep waiting for room: spinning too would only take
     * the CPU from the consumer that makes it. */
    if (atomic_load_explicit(&r->space_sleepers, RLX) > 0)
        spin_ns = 0;
    int64_t until = fm_spin_end(spin_ns, deadline_ns);
    while (until > 0 && fm_now_ns() < until) {
        for (int i = 0; i < 32; i++)
            fm_cpu_relax();
        st = try_claim(r, &a);
        if (st != FM_AGAIN) {
            fm_spin_outcome(1);
            return st;
        }
    }
    if (until > 0)
        fm_spin_outcome(0);
    for (;;) {
        int sliced = 0;
        c->data = NULL;
        st = wait_seq(r, &r->space_seq, &r->space_sleepers, NULL, deadline_ns, claim_recheck, &a,
                      &sliced);
        if (c->data != NULL)
            return FM_OK;           /* the recheck claimed it */
        if (st == FM_OK) {
            st = try_claim(r, &a);
            if (st != FM_AGAIN)
                return st;
            continue;
        }
        if (sliced) {
            /* A reader may have died holding the oldest record. */
            a.check_dead = 1;
            int s2 = try_claim(r, &a);
            a.check_dead = 0;
            if (s2 != FM_AGAIN)
                return s2;
        }
        return st;
    }
}

/* Wake one sleeping consumer, unless one was woken and has not run yet:
 * until it runs, a wake-up finds nobody left to wake in the kernel for it
 * (a system call for nothing), and on few cores it may not run for a while.
 * The woken consumer clears items_waking as soon as it runs (wait_seq) and
 * then passes the wake-up on if records remain (wake_next). */
static inline void
wake_one_consumer(fm_ring *r)
{
    if (atomic_load_explicit(&r->items_sleepers, SEQ) == 0)
        return;
    if (atomic_exchange_explicit(&r->items_waking, 1, SEQ) != 0)
        return;
    atomic_fetch_add_explicit(&r->items_seq, 1, SEQ);
    fm_futex_wake(&r->items_seq, 1);
}

/* A new record is ready: wake a sleeping consumer, unless one is spinning.
 * The spinner stands in for the wake-up: it takes this record, or, if it
 * stops spinning first, it looks again after it stopped (as a sleeper's
 * recheck, or in wake_next after its own take), and our seq_cst store of
 * the header precedes our load of items_spinner, which precedes its store
 * of 0.  A producer in a burst then makes no system call at all, while the
 * consumers wake each other (wake_next) as the records pile up. */
static inline void
items_ready(fm_ring *r)
{
    /* A spinner past the end of its spin budget is not spinning: it was
     * preempted (or died); wake a sleeper as if there were none. */
    if (atomic_load_explicit(&r->items_spinner, SEQ) != 0 &&
        fm_now_ns() < atomic_load_explicit(&r->items_spin_until, SEQ))
        return;
    wake_one_consumer(r);
}

/* Turn a claimed record's WRITING header into `kind` (READY, or PAD for an
 * abandoned one): consumers may act on it from here on. */
static inline void
set_claimed_kind(fm_ring *r, const fm_ring_claim *c, unsigned kind)
{
    _Atomic uint64_t *hp = header_at(r, c->pos);
    uint64_t h = atomic_load_explicit(hp, RLX);
    atomic_store_explicit(hp, make_header(kind, H_TAG(h), 0, c->len), SEQ);
}

void
fm_ring_publish(fm_ring *r, const fm_ring_claim *c)
{
    set_claimed_kind(r, c, K_READY);
}

void
fm_ring_wake_consumer(fm_ring *r)
{
    items_ready(r);
}

int
fm_ring_is_oldest(fm_ring *r, const fm_ring_claim *c)
{
    return atomic_load_explicit(&r->cons, SEQ) >= c->pos;
}

void
fm_ring_commit(fm_ring *r, const fm_ring_claim *c)
{
    fm_ring_publish(r, c);
    items_ready(r);
}

void
fm_ring_abandon(fm_ring *r, const fm_ring_claim *c)
{
    /* a PAD is skipped (and its area zeroed) by the consumer that meets it */
    set_claimed_kind(r, c, K_PAD);
    items_ready(r);
}

/* ------------------------------------------------------------- consuming */

typedef struct {
    uint32_t pid;
    int check_dead;
    int got;
    int broken;
    fm_ring_read *rd;
} take_args;

static inline void
advance_cons(fm_ring *r, uint64_t c, uint64_t h)
{
    uint64_t expected = c;
    atomic_compare_exchange_strong_explicit(&r->cons, &expected, c + rec_total(H_LEN(h)), SEQ,
                                            RLX);
}

/* 1 when the header at `c` (the consumer position, unwritten) was seen
 * unwritten at a wait-slice check at least a slice ago; otherwise note it
 * now and return 0.  Several consumers may race here: the worst outcome is
 * one slice more or less before a revocation, which is safe either way. */
static int
stuck_long_enough(fm_ring *r, uint64_t c)
{
    int64_t now = fm_now_ns();
    if (atomic_load_explicit(&r->stuck_pos, SEQ) == c + 1)
        return now - atomic_load_explicit(&r->stuck_since, SEQ) >= FM_WAIT_SLICE_NS;
    atomic_store_explicit(&r->stuck_since, now, SEQ);
    atomic_store_explicit(&r->stuck_pos, c + 1, SEQ);
    return 0;
}

/* Revoke the unwritten claims from `c` on: this process holds `mine`
 * (REVOKED, current lap) in the header at `c`, the consumer position.
 * Poison each word of an earlier lap up to the first header written in
 * this lap, `prod`, the end of the lap, or FM_RING_REVOKE_MAX bytes, then
 * turn the word at `c` into a PAD over that range (see Claiming).  No
 * consumer moves `cons` past `c` meanwhile (they wait at a REVOKED word),
 * so no word of the range can be reused under the walk. */
static void
revoke_range(fm_ring *r, uint64_t c, uint64_t mine)
{
    uint32_t tag = lap_tag(r, c);
    uint64_t lap_end = (c | mask_of(r)) + 1;
    uint64_t x = c + FM_RING_RECORD_HEADER;
    for (;;) {
        uint64_t p = atomic_load_explicit(&r->prod, SEQ) & POS_MASK;
        if (x >= p || x >= lap_end || x - c >= FM_RING_REVOKE_MAX)
            break;
        uint64_t w = peek_header(r, x);
        if (H_TAG(w) == tag) {
            if (H_KIND(w) != K_REVOKED)
                break;          /* a stamped header: its claim keeps its record */
            x += 8;             /* poisoned already (a revoker before us) */
            continue;
        }
        if (cas_header(r, x, &w, mine))
            x += 8;
    }
    uint64_t expected = mine;
    cas_header(r, c, &expected,
               make_header(K_PAD, tag, 0, (uint32_t)(x - c - FM_RING_RECORD_HEADER)));
}

/* Revoke the claims from `c` (the consumer position, as last seen, whose
 * header held `h`) on: count the revocation (producers that stamp meanwhile
 * check themselves, see stamp_holds), take the header word, and, if `c`
 * still is the consumer position (else the CAS hit a stale position, by an
 * ABA: undo it), revoke the range. */
static void
revoke_at(fm_ring *r, uint64_t c, uint64_t h, uint64_t mine)
{
    atomic_fetch_add_explicit(&r->revokes, 1, SEQ);
    uint64_t expected = h;
    if (!cas_header(r, c, &expected, mine))
        return;
    if (atomic_load_explicit(&r->cons, SEQ) != c) {
        cas_header(r, c, &mine, h);
        return;
    }
    if (fm_ring_test_revoke_window != NULL)
        fm_ring_test_revoke_window(r, c);
    revoke_range(r, c, mine);
}

/* Whether the header `h` found at the consumer position `c` (tag checked)
 * holds a length the ring can act on: the record fits the data area and
 * ends by the producer position (`pw` as read before the header, read again
 * if need be: a revoker may have seen a later one), and a producer's
 * record (READY, WRITING) carries no more than fm_ring_max_record.  A
 * compare or two on the fast path. */
static inline int
head_ok(fm_ring *r, uint64_t c, uint64_t h, uint64_t pw)
{
    unsigned kind = H_KIND(h);
    if ((kind == K_READY || kind == K_WRITING) && H_LEN(h) > fm_ring_max_record(r))
        return 0;
    if (rec_fits(r, c, H_LEN(h), pw & POS_MASK))
        return 1;
    return rec_fits(r, c, H_LEN(h), atomic_load_explicit(&r->prod, SEQ) & POS_MASK);
}

/* One pass: take the record at `cons` if one is committed, skipping pads and
 * (with check_dead) dead writers' records and claims that stayed unwritten.  Returns FM_OK (a->rd filled),
 * FM_AGAIN (nothing to take now), FM_BROKEN (sealed and empty), FM_CORRUPT
 * (the header at `cons` is none the ring wrote: it stays there, so every
 * later take says so too). */
static int
try_take(fm_ring *r, take_args *a)
{
    for (;;) {
        uint64_t c = atomic_load_explicit(&r->cons, SEQ);
        uint64_t pw = atomic_load_explicit(&r->prod, SEQ);
        if (c >= (pw & POS_MASK))
            return (pw & SEALED_BIT) ? FM_BROKEN : FM_AGAIN;
        uint64_t h = peek_header(r, c);
        if (atomic_load_explicit(&r->cons, SEQ) != c)
            continue;           /* stale view: h may be anything */
        if (H_TAG(h) != lap_tag(r, c)) {
            /* Claimed, header not written yet: the word still is what the
             * last lap left there (a filler word or a header of that lap;
             * a zero word in the first lap), tagged with the lap before.
             * Any other tag is a stray write. */
            if (H_TAG(h) != ((lap_tag(r, c) - 1) & 0x7fu)) {
                if (atomic_load_explicit(&r->cons, SEQ) != c)
                    continue;
                return FM_CORRUPT;
            }
            /* a lease that may have run out */
            if (a->check_dead && stuck_long_enough(r, c)) {
                uint64_t mine = make_header(K_REVOKED, lap_tag(r, c), a->pid, 0);
                revoke_at(r, c, h, mine);
                continue;
            }
            return FM_AGAIN;
        }
        if (H_KIND(h) != K_REVOKED && !head_ok(r, c, h, pw)) {
            if (atomic_load_explicit(&r->cons, SEQ) != c)
                continue;       /* taken and released meanwhile */
            return FM_CORRUPT;
        }
        switch (H_KIND(h)) {
        case K_READY: {
            uint64_t mine = make_header(K_READING, H_TAG(h), a->pid, H_LEN(h));
            if (!cas_header(r, c, &h, mine))
                continue;
            advance_cons(r, c, h);
            a->rd->pos = c;
            a->rd->data = payload_at(r, c);
            a->rd->len = H_LEN(h);
            return FM_OK;
        }
        case K_PAD: {
            uint64_t mine = make_header(K_READING, H_TAG(h), a->pid, H_LEN(h));
            if (!cas_header(r, c, &h, mine))
                continue;
            advance_cons(r, c, h);
            release_at(r, c, mine);
            continue;
        }
        case K_READING:
        case K_DONE:
            /* taken: its taker (or we) moves cons past it */
            advance_cons(r, c, h);
            continue;
        case K_WRITING:
            if (a->check_dead && holder_gone(&r->writer_note, c, H_PID(h))) {
                uint64_t mine = make_header(K_READING, H_TAG(h), a->pid, H_LEN(h));
                if (!cas_header(r, c, &h, mine))
                    continue;
                advance_cons(r, c, h);
                release_at(r, c, mine);
                continue;
            }
            return FM_AGAIN;
        case K_REVOKED:
            /* a revocation in progress; if its revoker died, finish it */
            if (a->check_dead && holder_gone(&r->writer_note, c, H_PID(h))) {
                uint64_t mine = make_header(K_REVOKED, H_TAG(h), a->pid, 0);
                revoke_at(r, c, h, mine);
                continue;
            }
            return FM_AGAIN;
        default:
            return FM_CORRUPT;      /* no kind the ring writes at a record */
        }
    }
}

static int
take_recheck(fm_ring *r, void *arg)
{
    take_args *a = arg;
    int st = try_take(r, a);
    if (st == FM_OK)
        a->got = 1;
    else if (st == FM_BROKEN)
        a->broken = 1;
    return st != FM_AGAIN;
}

/* After a take: records left behind and a consumer asleep, with nobody
 * spinning.  Producers skip the wake-up while a consumer spins
 * (items_ready), so whoever takes passes it on: every record left has a
 * consumer awake for it, or one woken now. */
static inline void
wake_next(fm_ring *r)
{
    uint64_t c = atomic_load_explicit(&r->cons, SEQ);
    uint64_t p = atomic_load_explicit(&r->prod, SEQ) & POS_MASK;
    if (p > c && atomic_load_explicit(&r->items_spinner, SEQ) == 0)
        wake_one_consumer(r);
}

static inline int
taken(fm_ring *r, int st)
{
    if (st == FM_OK)
        wake_next(r);
    return st;
}

int
fm_ring_take(fm_ring *r, uint32_t pid, int64_t deadline_ns, int64_t spin_ns, fm_ring_read *rd)
{
    take_args a = {pid, 0, 0, 0, rd};
    int st = try_take(r, &a);
    if (st != FM_AGAIN)
        return taken(r, st);
    if (fm_now_ns() >= deadline_ns)
        return FM_AGAIN;
    /* One consumer spins at a time; the others sleep.  More spinners would
     * only take the CPU from the producer that fills the ring (many
     * consumers on few cores), and producers wake nobody while one spins.
     * A mark left well past its spin's end (its owner preempted, or dead)
     * is taken over. */
    uint32_t cur = atomic_load_explicit(&r->items_spinner, SEQ);
    int64_t until = 0;
    if (spin_ns > 0 &&
        (cur == 0 ||
         fm_now_ns() > atomic_load_explicit(&r->items_spin_until, SEQ) + FM_RING_STALE_SPIN_NS) &&
        (until = fm_spin_end(spin_ns, deadline_ns)) > 0 &&
        atomic_compare_exchange_strong_explicit(&r->items_spinner, &cur, pid, SEQ, SEQ)) {
        atomic_store_explicit(&r->items_spin_until, until, SEQ);
        while (fm_now_ns() < until) {
            for (int i = 0; i < 32; i++)
                fm_cpu_relax();
            st = try_take(r, &a);
            if (st != FM_AGAIN)
                break;
        }
        fm_spin_outcome(st != FM_AGAIN);
        /* From here on producers wake sleepers again; what they committed
         * meanwhile is seen by wake_next, or by our recheck in wait_seq.
         * Only our own mark is cleared (another may have taken ours over). */
        uint32_t me = pid;
        atomic_compare_exchange_strong_explicit(&r->items_spinner, &me, 0, SEQ, SEQ);
        if (st != FM_AGAIN)
            return taken(r, st);
    }
    for (;;) {
        int sliced = 0;
        st = wait_seq(r, &r->items_seq, &r->items_sleepers, &r->items_waking, deadline_ns,
                      take_recheck, &a,
                      &sliced);
        if (a.got)
            return taken(r, FM_OK);
        if (a.broken)
            return FM_BROKEN;
        if (st == FM_OK) {
            st = try_take(r, &a);
            if (st != FM_AGAIN)
                return taken(r, st);
            continue;
        }
        if (sliced || st == FM_TIMEOUT) {
            /* The writer of the oldest record may have died, or a claim
             * may have stayed unstamped; a spinner may have died, and
             * producers would count on it for ever.  Checked after a whole
             * slice of waiting, or at a deadline (a caller that waits in
             * shorter steps than a slice, as the pool's collector does,
             * checks as often as it wakes; stuck_long_enough keeps its own
             * clock for revocations). */
            uint32_t sp = atomic_load_explicit(&r->items_spinner, SEQ);
            if (sp != 0 && !fm_pid_alive((pid_t)sp))
                atomic_compare_exchange_strong_explicit(&r->items_spinner, &sp, 0, SEQ, SEQ);
            a.check_dead = 1;
            int s2 = try_take(r, &a);
            a.check_dead = 0;
            if (s2 != FM_AGAIN)
                return taken(r, s2);
        }
        return st;
    }
}

void
fm_ring_release(fm_ring *r, const fm_ring_read *rd)
{
    /* The length checked when the record was taken (or adopted), not the
     * header re-read: a stray write into the segment since then must not
     * steer the fill. */
    release_at(r, rd->pos, make_header(K_READING, lap_tag(r, rd->pos), 0, rd->len));
}

int
fm_ring_adopt(fm_ring *r, uint32_t dead, uint32_t pid, fm_ring_read *rd)
{
    /* Taken records not yet reclaimed lie between reclaim and cons.  The
     * walk re-reads reclaim after each header: once it has moved past a
     * position, that header may be a later lap's (its tag says so), and the
     * walk starts over from the new reclaim. */
    for (;;) {
        uint64_t start = atomic_load_explicit(&r->reclaim, SEQ);
        uint64_t pos = start;
        uint64_t c = atomic_load_explicit(&r->cons, SEQ);
        int restart = 0;
        while (pos < c) {
            uint64_t h = peek_header(r, pos);
            if (atomic_load_explicit(&r->reclaim, SEQ) > pos) {
                restart = 1;
                break;
            }
            if (H_TAG(h) != lap_tag(r, pos))
                return FM_AGAIN;
            if (!rec_fits(r, pos, H_LEN(h), c))
                return FM_CORRUPT;  /* every record behind cons ends before it */
            if (H_KIND(h) == K_READING && H_PID(h) == (dead & 0x3fffffu)) {
                uint64_t mine = make_header(K_READING, H_TAG(h), pid, H_LEN(h));
                if (!cas_header(r, pos, &h, mine)) {
                    restart = 1;    /* someone released it meanwhile */
                    break;
                }
                rd->pos = pos;
                rd->data = payload_at(r, pos);
                rd->len = H_LEN(h);
                return FM_OK;
            }
            pos += rec_total(H_LEN(h));
        }
        if (!restart)
            return FM_AGAIN;
    }
}

/* ----------------------------------------------------------------- state */

uint64_t
fm_ring_pending_bytes(const fm_ring *cr)
{
    fm_ring *r = (fm_ring *)cr;
    uint64_t c = atomic_load_explicit(&r->cons, SEQ);
    uint64_t p = atomic_load_explicit(&r->prod, SEQ) & POS_MASK;
    return p > c ? p - c : 0;
}

uint64_t
fm_ring_ready_count(const fm_ring *cr)
{
    fm_ring *r = (fm_ring *)cr;
    for (int attempt = 0; attempt < 8; attempt++) {
        uint64_t c = atomic_load_explicit(&r->cons, SEQ);
        uint64_t p = atomic_load_explicit(&r->prod, SEQ) & POS_MASK;
        uint64_t n = 0, pos = c;
        int ok = 1;
        while (pos < p) {
            uint64_t h = peek_header(r, pos);
            if (H_TAG(h) != lap_tag(r, pos) || H_KIND(h) == K_REVOKED)
                break;              /* claimed, header not written yet */
            if (H_KIND(h) == K_READY)
                n++;
            uint64_t t = rec_total(H_LEN(h));
            if (t > r->capacity) {
                ok = 0;
                break;
            }
            pos += t;
        }
        if (ok && atomic_load_explicit(&r->cons, SEQ) == c)
            return n;
    }
    return 0;
}

void
fm_ring_seal(fm_ring *r, const char *next_name)
{
    if (!(atomic_load_explicit(&r->prod, ACQ) & SEALED_BIT)) {
        /* the name is written before the seal bit is published (SEQ RMW) */
        size_t n = next_name ? strlen(next_name) : 0;
        if (n >= sizeof r->next_name)
            n = sizeof r->next_name - 1;
        memcpy(r->next_name, next_name ? next_name : "", n);
        r->next_name[n] = '\0';
        atomic_fetch_or_explicit(&r->prod, SEALED_BIT, SEQ);
    }
    fm_ring_wake_all(r);
}

int
fm_ring_sealed(const fm_ring *r)
{
    return (atomic_load_explicit(&((fm_ring *)r)->prod, ACQ) & SEALED_BIT) != 0;
}

const char *
fm_ring_next_name(const fm_ring *r)
{
    if (!fm_ring_sealed(r))
        return "";
    return r->next_name;
}

void
fm_ring_wake_all(fm_ring *r)
{
    atomic_fetch_add_explicit(&r->items_seq, 1, SEQ);
    fm_futex_wake(&r->items_seq, INT_MAX);
    atomic_fetch_add_explicit(&r->space_seq, 1, SEQ);
    fm_futex_wake(&r->space_seq, INT_MAX);
}
