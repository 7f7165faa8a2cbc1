/* kv.c: the shared dict and list of byte strings (kv.h).  No Python.h.
 * The layout and the crash-consistency protocol are described in kv.h and
 * docs/design.md ("Shared dict and list"). */
#include "kv.h"
#include "atomics.h"
#include "glibc_compat.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "futex.h"

#define KV_SPIN_NS 20000
#define KV_JMAX 12                      /* words one operation changes in place (at most 8) */
#define KV_J32 (1ull << 63)             /* journal offset flag: a 32-bit word */
#define KV_HDR 2048u                    /* bytes before the first array */
#define KV_FREE_MAX 32                  /* free extents a data segment keeps track of */
#define KV_FRAG_MIN 64u                 /* a smaller rest of a taken extent stays garbage */
#define KV_NONE UINT64_MAX
#define SLOT_EMPTY 0u
#define SLOT_TOMB 1u                    /* else: entry index + 2 */
#define NEED_ROOM (-1)
#define KV_HEAP_MIN (64u << 10)          /* smallest heap: few rebuilds for small objects */                  /* internal: rebuild, then try again */

typedef struct {
    uint64_t off;                       /* KV_J32 | offset, or offset of a 64-bit word */
    uint64_t val;
} kv_jent;

/* A heap extent (offset from the segment's start, length): a list item,
 * or a free extent. */
typedef struct {
    uint64_t off;
    uint64_t len;
} kv_elem;

/* Free heap extents: replaced and removed keys and values, reused by the
 * next writes (best fit).  Two copies; `ftab_active` says which one is
 * published.  An operation edits the other one (out of place: nobody reads
 * it), then flips `ftab_active` through the journal with its other words,
 * so however many extents it takes or frees, the table costs one journal
 * word.  Every free extent is also counted in `garbage`; one the table has
 * no room for stays garbage until the next rebuild. */
typedef struct {
    uint64_t n;
    kv_elem e[KV_FREE_MAX];
} kv_ftab;

/* The data segment's header.  Fields after the journal are changed in
 * place only through the journal (or while the segment is being built). */
typedef struct {
    uint32_t magic;
    uint32_t kind;
    uint64_t size;
    _Atomic uint32_t jstate;            /* 1: the journal is complete, replay it */
    uint32_t jn;
    kv_jent j[KV_JMAX];
    uint64_t heap_off, heap_cap, heap_top, garbage;
    uint64_t count;                     /* live items */
    /* dict */
    uint64_t index_off, index_cap;      /* uint32 slots, a power of two */
    uint64_t ent_off, ent_cap, n_ent;   /* entries in insertion order, dead ones included */
    uint64_t tombs;                     /* tombstone slots in the index */
    uint64_t index_dirty;               /* 1: a clear must still zero the index */
    /* vector */
    uint64_t arr_off[2], arr_cap, active;
    /* free extents (both kinds) */
    uint64_t ftab_active;
    kv_ftab ftab[2];
} kv_seg;

typedef struct {
    uint64_t hash;
    uint64_t koff;
    uint64_t voff;
    uint64_t vlen;
    uint32_t klen;
    uint32_t live;
} kv_ent;

_Static_assert(sizeof(kv_seg) <= KV_HDR, "header fits");
_Static_assert(sizeof(kv_ent) == 40, "entry size");

static inline uint64_t pad8(uint64_t n) { return (n + 7) & ~(uint64_t)7; }

static inline kv_seg *hdr(fm_kvh *h) { return (kv_seg *)h->base; }

/* ------------------------------------------------------------------ hash */

static inline uint64_t
mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

/* A hash of the bytes alone: the same in every process (Python's str hash
 * is salted per process, so it cannot be used). */
static uint64_t
kv_hash(const void *data, size_t n)
{
    const unsigned char *p = data;
    uint64_t h = 0x9e3779b97f4a7c15ull ^ ((uint64_t)n * 0x87c37b91114253d5ull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h ^= w * 0x87c37b91114253d5ull;
        h = ((h << 31) | (h >> 33)) * 0x4cf5ad432745937full;
        p += 8;
        n -= 8;
    }
    if (n) {
        uint64_t w = 0;
        memcpy(&w, p, n);
        h ^= w * 0x87c37b91114253d5ull;
        h = ((h << 31) | (h >> 33)) * 0x4cf5ad432745937full;
    }
    return mix64(h);
}

/* --------------------------------------------------------------- journal */

static inline void
j_begin(fm_kvh *h)
{
    hdr(h)->jn = 0;
}

static inline void
j_put64(fm_kvh *h, uint64_t *word, uint64_t val)
{
    kv_seg *s = hdr(h);
    assert(s->jn < KV_JMAX);         /* counted: at most 8 words an operation */
    s->j[s->jn].off = (uint64_t)((unsigned char *)word - h->base);
    s->j[s->jn].val = val;
    s->jn++;
}

static inline void
j_put32(fm_kvh *h, uint32_t *word, uint32_t val)
{
    kv_seg *s = hdr(h);
    assert(s->jn < KV_JMAX);         /* counted: at most 8 words an operation */
    s->j[s->jn].off = KV_J32 | (uint64_t)((unsigned char *)word - h->base);
    s->j[s->jn].val = val;
    s->jn++;
}

static void
j_apply(fm_kvh *h)
{
    kv_seg *s = hdr(h);
    for (uint32_t i = 0; i < s->jn && i < KV_JMAX; i++) {
        uint64_t off = s->j[i].off & ~KV_J32;
        if (off + 8 > s->size)
            continue;
        if (s->j[i].off & KV_J32)
            *(uint32_t *)(h->base + off) = (uint32_t)s->j[i].val;
        else
            *(uint64_t *)(h->base + off) = s->j[i].val;
    }
}

/* Publish the journal, apply it, clear it. */
static void
j_commit(fm_kvh *h)
{
    kv_seg *s = hdr(h);
    if (fm_kv_test_point)
        fm_kv_test_point(1);
    atomic_store_explicit(&s->jstate, 1, REL);
    if (fm_kv_test_point)
        fm_kv_test_point(2);
    j_apply(h);
    if (fm_kv_test_point)
        fm_kv_test_point(3);
    atomic_store_explicit(&s->jstate, 0, REL);
}

/* ------------------------------------------------------ control and locks */

void
fm_kvctl_init(fm_kvctl *ctl, uint32_t kind)
{
    memset(ctl, 0, sizeof *ctl);
    ctl->kind = kind;
    fm_mutex_init(&ctl->lock);
    atomic_store_explicit(&ctl->state, 0, RLX);
    ctl->magic = FM_KVCTL_MAGIC;
    atomic_thread_fence(REL);
}

int
fm_kvh_open(fm_kvh *h, fm_kvctl *ctl)
{
    memset(h, 0, sizeof *h);
    if (ctl->magic != FM_KVCTL_MAGIC || (ctl->kind != FM_KV_DICT && ctl->kind != FM_KV_VEC))
        return FM_CORRUPT;
    h->ctl = ctl;
    return FM_OK;
}

static void
drop_mapping(fm_kvh *h)
{
    if (h->seg)
        fm_segment_release(h->seg);
    h->seg = NULL;
    h->base = NULL;
    h->gen = 0;
}

void
fm_kvh_close(fm_kvh *h)
{
    if (h->ctl)
        fm_kv_end(h);
    drop_mapping(h);
    h->ctl = NULL;
}

uint64_t
fm_kv_generation(const fm_kvctl *ctl)
{
    return atomic_load_explicit(&((fm_kvctl *)ctl)->state, ACQ) >> 2;
}

void
fm_kvctl_destroy(fm_kvctl *ctl)
{
    for (int i = 0; i < 2; i++)
        if (ctl->names[i][0])
            shm_unlink(ctl->names[i]);
    memset(ctl->names, 0, sizeof ctl->names);
    atomic_store_explicit(&ctl->state, 0, REL);
}

/* Lock held: finish what a dead holder left (flags, journal) and map the
 * current data segment. */
static int
sync_locked(fm_kvh *h)
{
    fm_kvctl *c = h->ctl;
    uint64_t st = atomic_load_explicit(&c->state, ACQ);
    if (st & 3) {
        /* a segment being built when its builder died, or a replaced one
         * not yet unlinked: the spare slot names it */
        const char *spare = c->names[((st >> 2) + 1) & 1];
        if (spare[0])
            shm_unlink(spare);
        st &= ~(uint64_t)3;
        atomic_store_explicit(&c->state, st, REL);
    }
    uint64_t gen = st >> 2;
    if (h->gen != gen || (gen == 0 && h->seg)) {
        drop_mapping(h);
        if (gen) {
            fm_segment *seg;
            int rc = fm_segment_attach(c->names[gen & 1], &seg);
            if (rc != FM_OK)
                return rc;
            kv_seg *s = (kv_seg *)seg->base;
            if (seg->size < KV_HDR || s->magic != FM_KVSEG_MAGIC || s->kind != c->kind ||
                s->size > seg->size) {
                fm_segment_release(seg);
                return FM_CORRUPT;
            }
            h->seg = seg;
            h->base = seg->base;
            h->gen = gen;
        }
    }
    if (h->base && atomic_load_explicit(&hdr(h)->jstate, ACQ)) {
        j_apply(h);                     /* a complete journal: replay it */
        atomic_store_explicit(&hdr(h)->jstate, 0, REL);
    }
    if (h->base && hdr(h)->index_dirty) {
        kv_seg *s = hdr(h);             /* a clear's holder died zeroing the index */
        memset(h->base + s->index_off, 0, s->index_cap * 4);
        s->index_dirty = 0;
    }
    return FM_OK;
}

static int
kv_lock(fm_kvh *h, int64_t deadline)
{
    if (h->held)
        return FM_OK;                   /* inside fm_kv_begin/fm_kv_end */
    int st = fm_mutex_lock(&h->ctl->lock, fm_self_pid(), deadline, KV_SPIN_NS);
    if (st != FM_OK && st != FM_RECOVERED)
        return st;
    st = sync_locked(h);
    if (st != FM_OK)
        fm_mutex_unlock(&h->ctl->lock);
    return st;
}

static inline void
kv_unlock(fm_kvh *h)
{
    if (!h->held)
        fm_mutex_unlock(&h->ctl->lock);
}

int
fm_kv_begin(fm_kvh *h, int64_t deadline)
{
    if (h->ctl == NULL || h->held)
        return FM_CORRUPT;
    int rc = kv_lock(h, deadline);
    if (rc == FM_OK)
        h->held = 1;
    return rc;
}

void
fm_kv_end(fm_kvh *h)
{
    if (h->held) {
        h->held = 0;
        kv_unlock(h);
    }
}

/* Lock held: make a data segment of `size` bytes (zeroed, pages reserved),
 * named in the spare slot with FM_KV_PENDING before its file exists. */
static int
make_segment(fm_kvh *h, size_t size, fm_segment **out)
{
    fm_kvctl *c = h->ctl;
    uint64_t st = atomic_load_explicit(&c->state, ACQ);
    char *spare = c->names[((st >> 2) + 1) & 1];
    char name[FM_SHM_NAME_MAX] = "";
    if (h->caller_names) {
        if (h->new_name[0] == '\0')
            return FM_AGAIN;            /* nothing written yet */
        memcpy(name, h->new_name, FM_SHM_NAME_MAX);
        name[FM_SHM_NAME_MAX - 1] = '\0';
        h->new_name[0] = '\0';
    }
    else if (fm_shm_new_name(name) != FM_OK) {
        return FM_ERRNO;
    }
    memcpy(spare, name, FM_SHM_NAME_MAX);
    atomic_store_explicit(&c->state, st | FM_KV_PENDING, REL);
    if (fm_kv_test_point)
        fm_kv_test_point(4);
    long page = sysconf(_SC_PAGESIZE);
    size = (size + (size_t)page - 1) & ~((size_t)page - 1);
    int rc = FM_ERRNO;
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        goto fail;
    fm_shm_maybe_die_after_link(name);
    rc = fm_shm_reserve_fd(fd, size);
    {
        int saved = errno;
        close(fd);
        errno = saved;
    }
    if (rc != FM_OK)
        goto fail_unlink;
    rc = fm_segment_attach(name, out);
    if (rc != FM_OK)
        goto fail_unlink;
    if (fm_kv_test_point)
        fm_kv_test_point(5);
    return FM_OK;
fail_unlink: {
        int saved = errno;
        shm_unlink(name);
        errno = saved;
    }
fail:
    spare[0] = '\0';
    atomic_store_explicit(&c->state, st, REL);
    return rc;
}

/* Lock held: `seg`, fully written, becomes the current data segment; the
 * old one is unlinked, and unmapped here. */
static void
publish_segment(fm_kvh *h, fm_segment *seg)
{
    fm_kvctl *c = h->ctl;
    uint64_t st = atomic_load_explicit(&c->state, ACQ);
    uint64_t gen = (st >> 2) + 1;
    const char *old = c->names[(gen + 1) & 1];
    /* one store: the new generation, and the old name marked retired */
    atomic_store_explicit(&c->state, (gen << 2) | (old[0] ? FM_KV_RETIRED : 0), REL);
    if (fm_kv_test_point)
        fm_kv_test_point(6);
    if (old[0]) {
        shm_unlink(old);
        atomic_store_explicit(&c->state, gen << 2, REL);
    }
    drop_mapping(h);
    h->seg = seg;
    h->base = seg->base;
    h->gen = gen;
}

/* ------------------------------------------------------------- heap */

/* One operation's view of the heap: the top, the garbage count and the
 * free table as they will be once it is committed.  Extents are taken
 * (op_alloc) before any is freed (op_free): the bytes an operation frees
 * are still published until its journal is. */
typedef struct {
    fm_kvh *h;
    kv_ftab *ft;                        /* the published table, or the copy being edited */
    int edited;                         /* ft is the copy */
    uint64_t top, garbage;
    uint64_t *trade, trade_off;         /* op_trade: a published entry's new offset */
} kv_op;

static inline void
op_start(fm_kvh *h, kv_op *o)
{
    kv_seg *s = hdr(h);
    o->h = h;
    o->ft = &s->ftab[s->ftab_active & 1];
    o->edited = 0;
    o->top = s->heap_top;
    o->garbage = s->garbage;
    o->trade = NULL;
}

/* The table's entry count, bounded (shared memory is checked before use:
 * fm_kv_check reports a bad count). */
static inline uint64_t
ft_count(const kv_ftab *t)
{
    return t->n < KV_FREE_MAX ? t->n : KV_FREE_MAX;
}

/* The copy of the table this operation edits (made at its first change). */
static kv_ftab *
op_table(kv_op *o)
{
    if (!o->edited) {
        kv_seg *s = hdr(o->h);
        kv_ftab *w = &s->ftab[(s->ftab_active + 1) & 1];
        w->n = ft_count(o->ft);
        if (w->n <= 4)                  /* the usual few: a fixed size, copied inline */
            memcpy(w->e, o->ft->e, 4 * sizeof w->e[0]);
        else
            memcpy(w->e, o->ft->e, w->n * sizeof w->e[0]);
        o->ft = w;
        o->edited = 1;
    }
    return o->ft;
}

static inline void
ft_drop(kv_ftab *t, uint64_t i)
{
    t->e[i] = t->e[t->n - 1];
    t->n--;
}

/* Where an item of `len` bytes placed at `off` is recorded: an empty one
 * at the heap's start, which no lowering of the top can leave behind. */
static inline uint64_t
empty_at(const kv_seg *s, uint64_t off, uint64_t len)
{
    return len ? off : s->heap_off;
}

/* Room for n bytes (n a multiple of 8): the smallest free extent that
 * holds them, else the top of the heap.  The offset, or KV_NONE when
 * neither has room (the caller rebuilds).  Nothing published changes. */
static uint64_t
op_alloc(kv_op *o, uint64_t n)
{
    kv_seg *s = hdr(o->h);
    uint64_t lo = s->heap_off, hi = s->heap_off + o->top;
    if (n == 0)
        return empty_at(s, hi, 0);
    const kv_ftab *t = o->ft;
    uint64_t best = KV_NONE, cnt = ft_count(t);
    for (uint64_t i = 0; i < cnt; i++) {
        const kv_elem *x = &t->e[i];
        /* an extent outside the heap is ignored (fm_kv_check reports it) */
        if (x->len >= n && x->off >= lo && x->off <= hi && x->len <= hi - x->off &&
            (best == KV_NONE || x->len < t->e[best].len)) {
            best = i;
            if (x->len == n)
                break;
        }
    }
    if (best != KV_NONE) {
        kv_ftab *w = op_table(o);
        uint64_t off = w->e[best].off, rest = w->e[best].len - n;
        if (rest >= KV_FRAG_MIN) {
            w->e[best].off += n;
            w->e[best].len = rest;
        }
        else {
            ft_drop(w, best);           /* the rest, if any, stays garbage */
        }
        o->garbage -= n;
        return off;
    }
    if (s->heap_cap - o->top < n)
        return KV_NONE;
    o->top += n;
    return hi;
}

/* Room for n bytes, filled with data; KV_NONE when there is none. */
static inline uint64_t
op_put(kv_op *o, const void *data, size_t n)
{
    uint64_t off = op_alloc(o, pad8(n));
    if (off != KV_NONE && n)
        memcpy(o->h->base + off, data, n);
    return off;
}

/* The extent [off, off + pad8(len)) is no longer used: it joins a free
 * neighbour, or lowers the top when it ends there, or takes a table entry
 * (the smallest one gives way when the table is full). */
static void
op_free(kv_op *o, uint64_t off, uint64_t len)
{
    uint64_t n = pad8(len);
    if (n == 0)
        return;
    kv_seg *s = hdr(o->h);
    kv_ftab *w = op_table(o);
    o->garbage += n;
    /* merge with free neighbours on either side */
    for (uint64_t i = 0; i < w->n;) {
        kv_elem *x = &w->e[i];
        if (x->off + x->len == off) {
            off = x->off;
            n += x->len;
        }
        else if (x->off == off + n) {
            n += x->len;
        }
        else {
            i++;
            continue;
        }
        ft_drop(w, i);
    }
    if (off + n == s->heap_off + o->top) {
        o->top -= n;                    /* the end of the heap: no longer garbage */
        o->garbage -= n;
        return;
    }
    if (w->n < KV_FREE_MAX) {
        w->e[w->n].off = off;
        w->e[w->n].len = n;
        w->n++;
        return;
    }
    uint64_t small = 0;
    for (uint64_t i = 1; i < w->n; i++)
        if (w->e[i].len < w->e[small].len)
            small = i;
    if (w->e[small].len < n) {          /* it stays garbage, until the next rebuild */
        w->e[small].off = off;
        w->e[small].len = n;
    }
}

/* A value replaced by one of the same padded size n (> 0), the old one at
 * old_off: when a free extent has exactly n bytes, the new value takes it
 * and the old extent takes its place in the table, one word of the
 * published table changed through the journal (no copy of the table; the
 * old extent is not merged with free neighbours: a rebuild compacts it
 * all).  The offset to write the new value at, or KV_NONE: go the general
 * way (op_put, then op_free). */
static uint64_t
op_trade(kv_op *o, uint64_t n, uint64_t old_off)
{
    kv_seg *s = hdr(o->h);
    if (o->edited || o->trade)
        return KV_NONE;
    uint64_t lo = s->heap_off, hi = s->heap_off + o->top, cnt = ft_count(o->ft);
    kv_elem *e = o->ft->e;
    for (uint64_t i = 0; i < cnt; i++) {
        if (e[i].len == n && e[i].off >= lo && e[i].off <= hi && n <= hi - e[i].off) {
            o->trade = &e[i].off;
            o->trade_off = old_off;
            return e[i].off;
        }
    }
    return KV_NONE;
}

/* Journal what the operation changed of the heap (after j_begin). */
static inline void
op_journal(kv_op *o)
{
    kv_seg *s = hdr(o->h);
    if (o->trade)
        j_put64(o->h, o->trade, o->trade_off);
    if (o->top != s->heap_top)
        j_put64(o->h, &s->heap_top, o->top);
    if (o->garbage != s->garbage)
        j_put64(o->h, &s->garbage, o->garbage);
    if (o->edited)
        j_put64(o->h, &s->ftab_active, s->ftab_active ^ 1);
}

/* ------------------------------------------------------------- dict */

static inline uint32_t *
d_index(fm_kvh *h)
{
    return (uint32_t *)(h->base + hdr(h)->index_off);
}

static inline kv_ent *
d_ents(fm_kvh *h)
{
    return (kv_ent *)(h->base + hdr(h)->ent_off);
}

/* Find key: returns the slot index of its entry (and *e), or -1 with
 * *insert_at the slot a new entry would take. */
static int64_t
d_find(fm_kvh *h, const void *key, size_t klen, uint64_t hash, kv_ent **e,
       uint64_t *insert_at)
{
    kv_seg *s = hdr(h);
    uint32_t *idx = d_index(h);
    kv_ent *ents = d_ents(h);
    uint64_t mask = s->index_cap - 1;
    uint64_t i = hash & mask;
    int64_t tomb = -1;
    for (uint64_t n = 0; n <= mask; n++, i = (i + 1) & mask) {
        uint32_t v = idx[i];
        if (v == SLOT_EMPTY) {
            if (insert_at)
                *insert_at = tomb >= 0 ? (uint64_t)tomb : i;
            return -1;
        }
        if (v == SLOT_TOMB) {
            if (tomb < 0)
                tomb = (int64_t)i;
            continue;
        }
        kv_ent *x = &ents[v - 2];
        if (x->hash == hash && x->klen == klen &&
            memcmp(h->base + x->koff, key, klen) == 0) {
            *e = x;
            return (int64_t)i;
        }
    }
    if (insert_at)
        *insert_at = tomb >= 0 ? (uint64_t)tomb : UINT64_MAX;
    return -1;
}

static size_t
d_layout(kv_seg *s, uint64_t ent_cap, uint64_t heap_cap)
{
    uint64_t icap = 16;
    while (icap * 3 < ent_cap * 4 + 4)
        icap <<= 1;
    s->index_cap = icap;
    s->index_off = KV_HDR;
    s->ent_cap = ent_cap;
    s->ent_off = s->index_off + pad8(icap * 4);
    s->heap_cap = pad8(heap_cap);
    s->heap_off = s->ent_off + ent_cap * sizeof(kv_ent);
    return s->heap_off + s->heap_cap;
}

/* Room for `need`, and as much again for the heap (room for values to be
 * written before the ones they replace are freed, and for the garbage the
 * free table cannot reuse: this keeps rebuilds O(1) amortized), half as
 * much again for arrays. */
static inline uint64_t
grow(uint64_t need, uint64_t floor)
{
    uint64_t n = need + need / 2;
    return n < floor ? floor : n;
}

static inline uint64_t
grow_heap(uint64_t need)
{
    uint64_t n = 2 * need;
    return pad8(n < KV_HEAP_MIN ? KV_HEAP_MIN : n);
}

/* Lock held: a new, compacted data segment with room for `add_ents` more
 * entries and `add_bytes` more heap bytes. */
static int
d_rebuild(fm_kvh *h, uint64_t add_ents, uint64_t add_bytes)
{
    kv_seg *o = h->base ? hdr(h) : NULL;
    uint64_t live = o ? o->count : 0;
    uint64_t bytes = o ? o->heap_top - o->garbage : 0;
    kv_seg tmp;
    memset(&tmp, 0, sizeof tmp);
    size_t size = d_layout(&tmp, grow(live + add_ents, 8), grow_heap(bytes + add_bytes));
    if (size > FM_HUGE_MAX)
        return FM_NOMEM;
    fm_segment *seg;
    int rc = make_segment(h, size, &seg);
    if (rc != FM_OK)
        return rc;
    unsigned char *nb = seg->base;
    kv_seg *s = (kv_seg *)nb;
    memcpy(s, &tmp, sizeof tmp);
    s->magic = FM_KVSEG_MAGIC;
    s->kind = FM_KV_DICT;
    s->size = size;
    if (o) {
        uint32_t *nidx = (uint32_t *)(nb + s->index_off);
        kv_ent *nents = (kv_ent *)(nb + s->ent_off);
        kv_ent *oents = d_ents(h);
        uint64_t mask = s->index_cap - 1, top = 0, n = 0;
        for (uint64_t k = 0; k < o->n_ent; k++) {
            kv_ent *x = &oents[k];
            if (!x->live)
                continue;
            kv_ent *y = &nents[n];
            *y = *x;
            y->koff = empty_at(s, s->heap_off + top, x->klen);
            memcpy(nb + y->koff, h->base + x->koff, x->klen);
            top += pad8(x->klen);
            y->voff = empty_at(s, s->heap_off + top, x->vlen);
            memcpy(nb + y->voff, h->base + x->voff, x->vlen);
            top += pad8(x->vlen);
            uint64_t i = x->hash & mask;
            while (nidx[i] != SLOT_EMPTY)
                i = (i + 1) & mask;
            nidx[i] = (uint32_t)(n + 2);
            n++;
        }
        s->n_ent = s->count = n;
        s->heap_top = top;
    }
    if (fm_kv_test_point)
        fm_kv_test_point(7);
    publish_segment(h, seg);
    return FM_OK;
}

static int
d_set_locked(fm_kvh *h, const void *key, size_t klen, const void *val, size_t vlen)
{
    if (!h->base)
        return NEED_ROOM;
    kv_seg *s = hdr(h);
    uint64_t hash = kv_hash(key, klen), at = UINT64_MAX;
    kv_ent *e = NULL;
    kv_op o;
    op_start(h, &o);
    int64_t slot = d_find(h, key, klen, hash, &e, &at);
    if (slot >= 0) {
        /* the key moves with its new value: an entry's key and value stay
         * one extent (read together; a replacement the size of the old one
         * is an exact fit for the extent it frees) */
        uint64_t kn = pad8(klen), n = kn + pad8(vlen), old_n = kn + pad8(e->vlen);
        int together = klen == 0 || e->koff + kn == e->voff;
        uint64_t old_off = klen ? e->koff : e->voff, off = KV_NONE;
        if (together && n && n == old_n)
            off = op_trade(&o, n, old_off);
        if (off == KV_NONE) {
            if ((off = op_alloc(&o, n)) == KV_NONE)
                return NEED_ROOM;
            if (together) {
                op_free(&o, old_off, old_n);
            }
            else {
                op_free(&o, e->koff, e->klen);
                op_free(&o, e->voff, e->vlen);
            }
        }
        if (klen)
            memcpy(h->base + off, key, klen);
        if (vlen)
            memcpy(h->base + off + kn, val, vlen);
        j_begin(h);
        if (klen)
            j_put64(h, &e->koff, off);
        j_put64(h, &e->voff, empty_at(s, off + kn, vlen));
        j_put64(h, &e->vlen, vlen);
        op_journal(&o);
        j_commit(h);
        return FM_OK;
    }
    int reuse = at != UINT64_MAX && d_index(h)[at] == SLOT_TOMB;
    if (at == UINT64_MAX || s->n_ent >= s->ent_cap ||
        (!reuse && (s->count + s->tombs + 1) * 4 > s->index_cap * 3))
        return NEED_ROOM;
    /* the key and its value in one extent: together they come back whole */
    uint64_t koff = op_alloc(&o, pad8(klen) + pad8(vlen));
    if (koff == KV_NONE)
        return NEED_ROOM;
    kv_ent *y = &d_ents(h)[s->n_ent];   /* past n_ent: not published yet */
    y->hash = hash;
    y->klen = (uint32_t)klen;
    y->koff = empty_at(s, koff, klen);
    y->voff = empty_at(s, koff + pad8(klen), vlen);
    y->vlen = vlen;
    y->live = 1;
    if (klen)
        memcpy(h->base + y->koff, key, klen);
    if (vlen)
        memcpy(h->base + y->voff, val, vlen);
    j_begin(h);
    j_put32(h, &d_index(h)[at], (uint32_t)(s->n_ent + 2));
    j_put64(h, &s->n_ent, s->n_ent + 1);
    j_put64(h, &s->count, s->count + 1);
    if (reuse)
        j_put64(h, &s->tombs, s->tombs - 1);
    op_journal(&o);
    j_commit(h);
    return FM_OK;
}

/* Remove the entry at index slot `slot`; trims dead entries at the end of
 * the order so that popitem stays O(1).  Its key and value become free. */
static void
d_remove(fm_kvh *h, int64_t slot, kv_ent *e)
{
    kv_seg *s = hdr(h);
    kv_ent *ents = d_ents(h);
    uint64_t n = s->n_ent;
    if (e == &ents[n - 1]) {
        n--;
        while (n > 0 && !ents[n - 1].live)
            n--;
    }
    kv_op o;
    op_start(h, &o);
    op_free(&o, e->koff, e->klen);
    op_free(&o, e->voff, e->vlen);
    j_begin(h);
    j_put32(h, &d_index(h)[slot], SLOT_TOMB);
    j_put32(h, &e->live, 0);
    j_put64(h, &s->count, s->count - 1);
    j_put64(h, &s->tombs, s->tombs + 1);
    if (n != s->n_ent)
        j_put64(h, &s->n_ent, n);
    op_journal(&o);
    j_commit(h);
}

static inline int
check_kind(fm_kvh *h, uint32_t kind)
{
    return h->ctl && h->ctl->kind == kind ? FM_OK : FM_CORRUPT;
}

int
fm_dict_set(fm_kvh *h, const void *key, size_t klen, const void *val, size_t vlen,
            int64_t deadline)
{
    int rc = check_kind(h, FM_KV_DICT);
    if (rc != FM_OK)
        return rc;
    if (klen > UINT32_MAX || vlen > FM_HUGE_MAX)
        return FM_NOMEM;
    if ((rc = kv_lock(h, deadline)) != FM_OK)
        return rc;
    while ((rc = d_set_locked(h, key, klen, val, vlen)) == NEED_ROOM) {
        rc = d_rebuild(h, 1, pad8(klen) + pad8(vlen));
        if (rc != FM_OK)
            break;
    }
    kv_unlock(h);
    return rc;
}

static int
d_lookup_op(fm_kvh *h, const void *key, size_t klen, int64_t deadline, fm_kv_visit visit,
            void *arg, int *found, int remove)
{
    int rc = check_kind(h, FM_KV_DICT);
    if (rc != FM_OK || (rc = kv_lock(h, deadline)) != FM_OK)
        return rc;
    *found = 0;
    if (h->base) {
        kv_ent *e = NULL;
        int64_t slot = d_find(h, key, klen, kv_hash(key, klen), &e, NULL);
        if (slot >= 0) {
            *found = 1;
            if (visit)
                rc = visit(arg, h->base + e->koff, e->klen, h->base + e->voff, e->vlen);
            if (rc == FM_OK && remove)
                d_remove(h, slot, e);
        }
    }
    kv_unlock(h);
    return rc;
}

int
fm_dict_get(fm_kvh *h, const void *key, size_t klen, int64_t deadline, fm_kv_visit visit,
            void *arg, int *found)
{
    return d_lookup_op(h, key, klen, deadline, visit, arg, found, 0);
}

int
fm_dict_contains(fm_kvh *h, const void *key, size_t klen, int64_t deadline, int *found)
{
    return d_lookup_op(h, key, klen, deadline, NULL, NULL, found, 0);
}

int
fm_dict_delete(fm_kvh *h, const void *key, size_t klen, int64_t deadline, int *found)
{
    return d_lookup_op(h, key, klen, deadline, NULL, NULL, found, 1);
}

int
fm_dict_pop(fm_kvh *h, const void *key, size_t klen, int64_t deadline, fm_kv_visit visit,
            void *arg, int *found)
{
    return d_lookup_op(h, key, klen, deadline, visit, arg, found, 1);
}

int
fm_dict_len(fm_kvh *h, int64_t deadline, uint64_t *n)
{
    int rc = check_kind(h, FM_KV_DICT);
    if (rc != FM_OK || (rc = kv_lock(h, deadline)) != FM_OK)
        return rc;
    *n = h->base ? hdr(h)->count : 0;
    kv_unlock(h);
    return FM_OK;
}

int
fm_dict_popitem(fm_kvh *h, int64_t deadline, fm_kv_visit visit, void *arg, int *found)
{
    int rc = check_kind(h, FM_KV_DICT);
    if (rc != FM_OK || (rc = kv_lock(h, deadline)) != FM_OK)
        return rc;
    *found = 0;
    if (h->base && hdr(h)->count) {
        kv_seg *s = hdr(h);
        kv_ent *ents = d_ents(h);
        uint64_t k = s->n_ent;
        while (k > 0 && !ents[k - 1].live)
            k--;
        kv_ent *e = &ents[k - 1], *x = NULL;
        int64_t slot = d_find(h, h->base + e->koff, e->klen, e->hash, &x, NULL);
        if (slot < 0 || x != e) {
            rc = FM_CORRUPT;
        }
        else {
            *found = 1;
            if (visit)
                rc = visit(arg, h->base + e->koff, e->klen, h->base + e->voff, e->vlen);
            if (rc == FM_OK)
                d_remove(h, slot, e);
        }
    }
    kv_unlock(h);
    return rc;
}

int
fm_dict_foreach(fm_kvh *h, int64_t deadline, fm_kv_visit visit, void *arg)
{
    int rc = check_kind(h, FM_KV_DICT);
    if (rc != FM_OK || (rc = kv_lock(h, deadline)) != FM_OK)
        return rc;
    if (h->base) {
        kv_ent *ents = d_ents(h);
        uint64_t n = hdr(h)->n_ent;
        for (uint64_t k = 0; k < n && rc == FM_OK; k++)
            if (ents[k].live)
                rc = visit(arg, h->base + ents[k].koff, ents[k].klen,
                           h->base + ents[k].voff, ents[k].vlen);
    }
    kv_unlock(h);
    return rc;
}

/* Lock held: empty a dict or a vector in place.  The published words go
 * first, through the journal, with `index_dirty`; then the index is zeroed
 * and the flag cleared.  A holder that dies half-way through the zeroing
 * leaves index_dirty set, and the next holder zeroes it again. */
static void
clear_locked(fm_kvh *h)
{
    if (!h->base)
        return;
    kv_seg *s = hdr(h);
    kv_ftab *t = &s->ftab[(s->ftab_active + 1) & 1];
    t->n = 0;                           /* the whole heap is free: no extent to track */
    j_begin(h);
    j_put64(h, &s->count, 0);
    j_put64(h, &s->n_ent, 0);
    j_put64(h, &s->tombs, 0);
    j_put64(h, &s->heap_top, 0);
    j_put64(h, &s->garbage, 0);
    j_put64(h, &s->ftab_active, s->ftab_active ^ 1);
    if (s->kind == FM_KV_DICT)
        j_put64(h, &s->index_dirty, 1);
    j_commit(h);
    if (s->index_dirty) {
        memset(d_index(h), 0, s->index_cap * 4);
        s->index_dirty = 0;
    }
}

int
fm_dict_clear(fm_kvh *h, int64_t deadline)
{
    int rc = check_kind(h, FM_KV_DICT);
    if (rc != FM_OK || (rc = kv_lock(h, deadline)) != FM_OK)
        return rc;
    clear_locked(h);
    kv_unlock(h);
    return FM_OK;
}

/* ------------------------------------------------------------- vector */

static inline kv_elem *
v_arr(fm_kvh *h)
{
    kv_seg *s = hdr(h);
    return (kv_elem *)(h->base + s->arr_off[s->active & 1]);
}

static inline kv_elem *
v_spare(fm_kvh *h)
{
    kv_seg *s = hdr(h);
    return (kv_elem *)(h->base + s->arr_off[(s->active + 1) & 1]);
}

/* Lock held: a new, compacted data segment with room for `add` more items
 * and `add_bytes` more heap bytes. */
static int
v_rebuild(fm_kvh *h, uint64_t add, uint64_t add_bytes)
{
    kv_seg *o = h->base ? hdr(h) : NULL;
    uint64_t live = o ? o->count : 0;
    uint64_t bytes = o ? o->heap_top - o->garbage : 0;
    uint64_t cap = grow(live + add, 8), heap = pad8(grow_heap(bytes + add_bytes));
    if (cap > FM_HUGE_MAX / 64 || heap > FM_HUGE_MAX)
        return FM_NOMEM;
    size_t size = KV_HDR + 2 * cap * sizeof(kv_elem) + heap;
    fm_segment *seg;
    int rc = make_segment(h, size, &seg);
    if (rc != FM_OK)
        return rc;
    unsigned char *nb = seg->base;
    kv_seg *s = (kv_seg *)nb;
    s->magic = FM_KVSEG_MAGIC;
    s->kind = FM_KV_VEC;
    s->size = size;
    s->arr_cap = cap;
    s->arr_off[0] = KV_HDR;
    s->arr_off[1] = KV_HDR + cap * sizeof(kv_elem);
    s->heap_off = s->arr_off[1] + cap * sizeof(kv_elem);
    s->heap_cap = heap;
    if (o) {
        kv_elem *src = v_arr(h), *dst = (kv_elem *)(nb + s->arr_off[0]);
        uint64_t top = 0;
        for (uint64_t k = 0; k < live; k++) {
            dst[k].off = empty_at(s, s->heap_off + top, src[k].len);
            dst[k].len = src[k].len;
            memcpy(nb + dst[k].off, h->base + src[k].off, src[k].len);
            top += pad8(src[k].len);
        }
        s->count = live;
        s->heap_top = top;
    }
    if (fm_kv_test_point)
        fm_kv_test_point(7);
    publish_segment(h, seg);
    return FM_OK;
}

/* Python's index rule: negative counts from the end.  -1 if out of range. */
static inline int64_t
v_index(fm_kvh *h, int64_t i)
{
    int64_t n = h->base ? (int64_t)hdr(h)->count : 0;
    if (i < 0)
        i += n;
    return i >= 0 && i < n ? i : -1;
}

enum { V_SET, V_INSERT, V_APPEND, V_EXTEND, V_REPLACE, V_DELETE, V_REVERSE };

typedef struct {
    int op;
    int64_t i;
    size_t n;
    const void *const *vals;
    const size_t *lens;
} v_req;

static int
v_apply(fm_kvh *h, const v_req *r)
{
    if (!h->base)
        return r->op == V_DELETE || r->op == V_REVERSE ? FM_OK : NEED_ROOM;
    kv_seg *s = hdr(h);
    kv_elem *a = v_arr(h);
    uint64_t count = s->count;
    kv_op o;
    op_start(h, &o);
    switch (r->op) {
    case V_SET: {
        uint64_t n = pad8(r->lens[0]), off = KV_NONE;
        if (n && n == pad8(a[r->i].len))
            off = op_trade(&o, n, a[r->i].off);
        if (off != KV_NONE) {
            memcpy(h->base + off, r->vals[0], r->lens[0]);
        }
        else {
            if ((off = op_put(&o, r->vals[0], r->lens[0])) == KV_NONE)
                return NEED_ROOM;
            op_free(&o, a[r->i].off, a[r->i].len);
        }
        j_begin(h);
        j_put64(h, &a[r->i].off, off);
        j_put64(h, &a[r->i].len, r->lens[0]);
        op_journal(&o);
        j_commit(h);
        return FM_OK;
    }
    case V_APPEND:
    case V_EXTEND:
        if (s->arr_cap - count < r->n)
            return NEED_ROOM;
        for (size_t k = 0; k < r->n; k++) {   /* past count: not published yet */
            a[count + k].off = op_put(&o, r->vals[k], r->lens[k]);
            if (a[count + k].off == KV_NONE)
                return NEED_ROOM;
            a[count + k].len = r->lens[k];
        }
        j_begin(h);
        j_put64(h, &s->count, count + r->n);
        op_journal(&o);
        j_commit(h);
        return FM_OK;
    case V_INSERT: {
        if (s->arr_cap <= count)
            return NEED_ROOM;
        kv_elem *b = v_spare(h);
        uint64_t i = (uint64_t)r->i;
        b[i].off = op_put(&o, r->vals[0], r->lens[0]);
        if (b[i].off == KV_NONE)
            return NEED_ROOM;
        b[i].len = r->lens[0];
        memcpy(b, a, i * sizeof *a);
        memcpy(b + i + 1, a + i, (count - i) * sizeof *a);
        j_begin(h);
        j_put64(h, &s->active, s->active ^ 1);
        j_put64(h, &s->count, count + 1);
        op_journal(&o);
        j_commit(h);
        return FM_OK;
    }
    case V_REPLACE: {
        if (s->arr_cap < r->n)
            return NEED_ROOM;
        kv_elem *b = v_spare(h);
        for (size_t k = 0; k < r->n; k++) {
            b[k].off = op_put(&o, r->vals[k], r->lens[k]);
            if (b[k].off == KV_NONE)
                return NEED_ROOM;
            b[k].len = r->lens[k];
        }
        /* all the old items: free, or for a long list (whose old bytes
         * the table could not hold anyway) garbage, counted in one pass */
        for (uint64_t k = 0; k < count; k++) {
            if (count <= 4 * KV_FREE_MAX)
                op_free(&o, a[k].off, a[k].len);
            else
                o.garbage += pad8(a[k].len);
        }
        j_begin(h);
        j_put64(h, &s->active, s->active ^ 1);
        j_put64(h, &s->count, r->n);
        op_journal(&o);
        j_commit(h);
        return FM_OK;
    }
    case V_DELETE: {
        uint64_t i = (uint64_t)r->i;
        op_free(&o, a[i].off, a[i].len);
        j_begin(h);
        if (i + 1 < count) {
            kv_elem *b = v_spare(h);
            memcpy(b, a, i * sizeof *a);
            memcpy(b + i, a + i + 1, (count - i - 1) * sizeof *a);
            j_put64(h, &s->active, s->active ^ 1);
        }
        j_put64(h, &s->count, count - 1);
        op_journal(&o);
        j_commit(h);
        return FM_OK;
    }
    case V_REVERSE: {
        if (count < 2)
            return FM_OK;
        kv_elem *b = v_spare(h);
        for (uint64_t k = 0; k < count; k++)
            b[k] = a[count - 1 - k];
        j_begin(h);
        j_put64(h, &s->active, s->active ^ 1);
        j_commit(h);
        return FM_OK;
    }
    }
    return FM_CORRUPT;
}

/* One vector write: index rules, then apply, rebuilding when out of room. */
static int
v_write(fm_kvh *h, v_req *r, int64_t deadline, fm_kv_visit visit, void *arg)
{
    int rc = check_kind(h, FM_KV_VEC);
    if (rc != FM_OK)
        return rc;
    uint64_t nbytes = 0, nitems = 0;
    for (size_t k = 0; k < r->n; k++) {
        if (r->lens[k] > FM_HUGE_MAX || (nbytes += pad8(r->lens[k])) > FM_HUGE_MAX)
            return FM_NOMEM;
    }
    if (r->n > FM_HUGE_MAX / 64)
        return FM_NOMEM;
    if ((rc = kv_lock(h, deadline)) != FM_OK)
        return rc;
    if (r->op == V_SET || r->op == V_DELETE) {
        r->i = v_index(h, r->i);
        if (r->i < 0) {
            kv_unlock(h);
            return FM_OVERFLOW;
        }
        if (visit) {
            kv_elem *e = &v_arr(h)[r->i];
            rc = visit(arg, NULL, (size_t)r->i, h->base + e->off, e->len);
            if (rc != FM_OK) {
                kv_unlock(h);
                return rc;
            }
        }
    }
    else if (r->op == V_INSERT) {
        int64_t n = h->base ? (int64_t)hdr(h)->count : 0;
        if (r->i < 0)
            r->i = r->i + n < 0 ? 0 : r->i + n;
        if (r->i > n)
            r->i = n;
    }
    if (r->op == V_INSERT || r->op == V_APPEND || r->op == V_EXTEND || r->op == V_REPLACE)
        nitems = r->n;
    while ((rc = v_apply(h, r)) == NEED_ROOM) {
        rc = v_rebuild(h, nitems, nbytes);
        if (rc != FM_OK)
            break;
    }
    kv_unlock(h);
    return rc;
}

int
fm_vec_set(fm_kvh *h, int64_t i, const void *val, size_t vlen, int64_t deadline)
{
    v_req r = {V_SET, i, 1, &val, &vlen};
    return v_write(h, &r, deadline, NULL, NULL);
}

int
fm_vec_insert(fm_kvh *h, int64_t i, const void *val, size_t vlen, int64_t deadline)
{
    v_req r = {V_INSERT, i, 1, &val, &vlen};
    return v_write(h, &r, deadline, NULL, NULL);
}

int
fm_vec_append(fm_kvh *h, const void *val, size_t vlen, int64_t deadline)
{
    v_req r = {V_APPEND, 0, 1, &val, &vlen};
    return v_write(h, &r, deadline, NULL, NULL);
}

int
fm_vec_extend(fm_kvh *h, size_t n, const void *const *vals, const size_t *lens,
              int64_t deadline)
{
    v_req r = {V_EXTEND, 0, n, vals, lens};
    return v_write(h, &r, deadline, NULL, NULL);
}

int
fm_vec_replace(fm_kvh *h, size_t n, const void *const *vals, const size_t *lens,
               int64_t deadline)
{
    v_req r = {V_REPLACE, 0, n, vals, lens};
    return v_write(h, &r, deadline, NULL, NULL);
}

int
fm_vec_delete(fm_kvh *h, int64_t i, int64_t deadline)
{
    v_req r = {V_DELETE, i, 0, NULL, NULL};
    return v_write(h, &r, deadline, NULL, NULL);
}

int
fm_vec_pop(fm_kvh *h, int64_t i, int64_t deadline, fm_kv_visit visit, void *arg)
{
    v_req r = {V_DELETE, i, 0, NULL, NULL};
    return v_write(h, &r, deadline, visit, arg);
}

int
fm_vec_reverse(fm_kvh *h, int64_t deadline)
{
    v_req r = {V_REVERSE, 0, 0, NULL, NULL};
    return v_write(h, &r, deadline, NULL, NULL);
}

int
fm_vec_clear(fm_kvh *h, int64_t deadline)
{
    int rc = check_kind(h, FM_KV_VEC);
    if (rc != FM_OK || (rc = kv_lock(h, deadline)) != FM_OK)
        return rc;
    clear_locked(h);
    kv_unlock(h);
    return FM_OK;
}

int
fm_vec_len(fm_kvh *h, int64_t deadline, uint64_t *n)
{
    int rc = check_kind(h, FM_KV_VEC);
    if (rc != FM_OK || (rc = kv_lock(h, deadline)) != FM_OK)
        return rc;
    *n = h->base ? hdr(h)->count : 0;
    kv_unlock(h);
    return FM_OK;
}

int
fm_vec_get(fm_kvh *h, int64_t i, int64_t deadline, fm_kv_visit visit, void *arg)
{
    int rc = check_kind(h, FM_KV_VEC);
    if (rc != FM_OK || (rc = kv_lock(h, deadline)) != FM_OK)
        return rc;
    i = v_index(h, i);
    if (i < 0) {
        rc = FM_OVERFLOW;
    }
    else {
        kv_elem *e = &v_arr(h)[i];
        rc = visit(arg, NULL, (size_t)i, h->base + e->off, e->len);
    }
    kv_unlock(h);
    return rc;
}

/* Python's slice bounds for a sequence of n items. */
static void
slice_bounds(int64_t n, int64_t *start, int64_t *stop, int64_t step)
{
    int64_t lo = step < 0 ? -1 : 0, hi = step < 0 ? n - 1 : n;
    int64_t *b[2] = {start, stop};
    int64_t dflt[2] = {step < 0 ? hi : lo, step < 0 ? lo : hi};
    for (int k = 0; k < 2; k++) {
        if (*b[k] == FM_VEC_NONE) {
            *b[k] = dflt[k];
            continue;
        }
        if (*b[k] < 0) {
            *b[k] += n;
            if (*b[k] < lo)
                *b[k] = lo;
        }
        else if (*b[k] > hi) {
            *b[k] = hi;
        }
    }
}

int
fm_vec_slice(fm_kvh *h, int64_t start, int64_t stop, int64_t step, int64_t deadline,
             fm_kv_visit visit, void *arg)
{
    int rc = check_kind(h, FM_KV_VEC);
    if (rc != FM_OK)
        return rc;
    if (step == 0 || step == INT64_MIN)
        return FM_OVERFLOW;
    if ((rc = kv_lock(h, deadline)) != FM_OK)
        return rc;
    int64_t n = h->base ? (int64_t)hdr(h)->count : 0;
    slice_bounds(n, &start, &stop, step);
    kv_elem *a = h->base ? v_arr(h) : NULL;
    /* counted first, so that no index past the bounds is ever computed */
    uint64_t cnt = 0;
    if (step > 0 && start < stop)
        cnt = (uint64_t)(stop - start - 1) / (uint64_t)step + 1;
    else if (step < 0 && start > stop)
        cnt = (uint64_t)(start - stop - 1) / (uint64_t)(-step) + 1;
    for (uint64_t k = 0; k < cnt && rc == FM_OK; k++) {
        int64_t i = start + (int64_t)k * step;
        rc = visit(arg, NULL, (size_t)i, h->base + a[i].off, a[i].len);
    }
    kv_unlock(h);
    return rc;
}

/* ------------------------------------------------------------- check */

static int
cmp_extent(const void *x, const void *y)
{
    uint64_t a = ((const kv_elem *)x)->off, b = ((const kv_elem *)y)->off;
    return a < b ? -1 : a > b;
}

/* Every used and free extent is inside the heap and none overlaps another
 * (ext: n extents, lengths already padded; sorted here). */
static int
check_extents(kv_elem *ext, uint64_t n)
{
    qsort(ext, n, sizeof *ext, cmp_extent);
    for (uint64_t i = 1; i < n; i++)
        if (ext[i - 1].off + ext[i - 1].len > ext[i].off)
            return FM_CORRUPT;
    return FM_OK;
}

static int
check_locked(fm_kvh *h)
{
    if (!h->base)
        return FM_OK;
    kv_seg *s = hdr(h);
    if (atomic_load(&s->jstate) || s->heap_top > s->heap_cap || s->garbage > s->heap_top ||
        s->heap_off + s->heap_cap > s->size || s->ftab_active > 1 ||
        s->ftab[s->ftab_active].n > KV_FREE_MAX)
        return FM_CORRUPT;
    uint64_t used = 0, lo = s->heap_off, hi = s->heap_off + s->heap_top;
    uint64_t nlive = s->kind == FM_KV_DICT ? 2 * s->n_ent : s->count;
    if (nlive > s->size)
        return FM_CORRUPT;
    kv_elem *ext = malloc((nlive + KV_FREE_MAX + 1) * sizeof *ext);
    if (ext == NULL)
        return FM_NOMEM;
    uint64_t next = 0;
    int rc = FM_CORRUPT;
    if (s->kind == FM_KV_DICT) {
        if (s->n_ent > s->ent_cap || s->count > s->n_ent || s->index_dirty)
            goto done;
        kv_ent *ents = d_ents(h);
        uint32_t *idx = d_index(h);
        uint64_t live = 0, tombs = 0, pointed = 0;
        for (uint64_t i = 0; i < s->index_cap; i++) {
            if (idx[i] == SLOT_TOMB)
                tombs++;
            else if (idx[i] != SLOT_EMPTY) {
                if (idx[i] - 2 >= s->n_ent || !ents[idx[i] - 2].live)
                    goto done;
                pointed++;
            }
        }
        for (uint64_t k = 0; k < s->n_ent; k++) {
            kv_ent *e = &ents[k], *x = NULL;
            if (!e->live)
                continue;
            live++;
            if (e->koff < lo || e->koff + e->klen > hi || e->voff < lo ||
                e->voff + e->vlen > hi || kv_hash(h->base + e->koff, e->klen) != e->hash)
                goto done;
            if (d_find(h, h->base + e->koff, e->klen, e->hash, &x, NULL) < 0 || x != e)
                goto done;
            used += pad8(e->klen) + pad8(e->vlen);
            if (e->klen)
                ext[next++] = (kv_elem){e->koff, pad8(e->klen)};
            if (e->vlen)
                ext[next++] = (kv_elem){e->voff, pad8(e->vlen)};
        }
        if (live != s->count || pointed != live || tombs != s->tombs)
            goto done;
    }
    else {
        if (s->count > s->arr_cap)
            goto done;
        kv_elem *a = v_arr(h);
        for (uint64_t k = 0; k < s->count; k++) {
            if (a[k].off < lo || a[k].off + a[k].len > hi)
                goto done;
            used += pad8(a[k].len);
            if (a[k].len)
                ext[next++] = (kv_elem){a[k].off, pad8(a[k].len)};
        }
    }
    /* every heap byte is live or counted as garbage (a vector's replaced
     * and reversed items can share nothing, so this holds for both) */
    if (used + s->garbage != s->heap_top)
        goto done;
    /* free extents: inside the heap, counted in the garbage, apart from
     * each other and from every used byte */
    const kv_ftab *t = &s->ftab[s->ftab_active];
    uint64_t free_bytes = 0;
    for (uint64_t i = 0; i < t->n; i++) {
        const kv_elem *x = &t->e[i];
        if (x->len == 0 || x->len % 8 || x->off % 8 || x->off < lo || x->off > hi ||
            x->len > hi - x->off)
            goto done;
        free_bytes += x->len;
        ext[next++] = *x;
    }
    if (free_bytes > s->garbage)
        goto done;
    rc = check_extents(ext, next);
done:
    free(ext);
    return rc;
}

int
fm_kv_check(fm_kvh *h, int64_t deadline)
{
    int rc = kv_lock(h, deadline);
    if (rc != FM_OK)
        return rc;
    rc = check_locked(h);
    kv_unlock(h);
    return rc;
}
