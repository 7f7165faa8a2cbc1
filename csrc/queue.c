/* queue.c: Queue, JoinableQueue and SimpleQueue on the shared ring (ring.c).
 *
 * One type, fastmp._core.Queue, with a kind (plain, joinable, simple) that
 * fastmp/queues.py subclasses.  No feeder thread: put() pickles in the
 * caller's thread and copies the bytes into a ring record with the GIL held;
 * get() takes a record (the GIL released only while it waits), unpickles
 * straight from shared memory, then releases the record.  So an item is in
 * shared memory when put() returns: the process may exit at once, and
 * joining it before getting never deadlocks.
 *
 * The shared block (fm_queue_shared, in an arena like the sync objects)
 * holds the item count (maxsize, qsize, empty/full), JoinableQueue's
 * unfinished count, and the list of the queue's live rings.  Rings are
 * whole segments.  When a put finds the newest ring full, it links a ring
 * twice the size (under the block's lock), records it in the list, and seals
 * the old ring naming the new one: put never waits for space, only (in a
 * bounded queue) for the item count.  Consumers drain a sealed ring, then
 * move on to the next; the consumer that finds a sealed ring empty unlinks
 * it.  The process that drops the last reference to the queue unlinks the
 * rings left (fm_handle.before_last_release).  Rings are registered with
 * the resource tracker by their creator and unregistered by whoever unlinks
 * them, so a crash leaves nothing behind either.
 *
 * An item larger than an eighth of the ring makes the ring grow to where it
 * fits (twice its size, rounded up to a power of two), up to
 * QUEUE_INLINE_RING_MAX; larger ones still are pickled
 * into a segment of their own ("spill"), and only its name and length go
 * through the ring.  The consumer maps it, unpickles, unmaps and unlinks it.
 *
 * Record payload: one kind byte, then the pickle (REC_INLINE), the item in
 * the plain-data encoding (REC_PLAIN, see "plain data" below), or the spill
 * descriptor (REC_SPILL: 8-byte length, then the NUL-terminated name).
 *
 * Limits.  Every ring and spill file has its pages reserved when made
 * (fm_segment_create, fm_shm_reserve_fd): a full /dev/shm is OSError(ENOSPC)
 * in put(), never SIGBUS.  A queue object holds one local user of each ring
 * it maps and gives them back when dropped (no mapping outlives the
 * object).  The shared block records the pid of each reference, so that
 * the last live holder cleans up when the others were killed.  Records are
 * untrusted: every length, count and name is checked before use, and a bad
 * record raises ValueError naming the queue. */
#include "fastmp.h"
#include "core/ring.h"
#include "core/doorbell.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>


#define QUEUE_RING_INITIAL (64u * 1024)           /* bytes of data in a new queue's ring */
#define QUEUE_INLINE_RING_MAX ((size_t)16 << 20)  /* grow for big items up to this */
#define QUEUE_MAX_RINGS 40      /* live rings at once: each at least doubles */
#define QUEUE_GROW_GRACE_NS (1000 * 1000LL)       /* see claim_record */
#define QUEUE_MAXSIZE_MAX 0x7fffffffu
#define QUEUE_MAX_HOLDERS 128   /* references whose pid is recorded */
/* producing processes whose pending puts are tallied, a cache line each:
 * as many as keep the shared block within a 4 KiB block class (see the
 * assertion below), so that a queue costs no more shared memory than
 * before */
#define QUEUE_MAX_PRODUCERS 16

enum { REC_INLINE = 'I', REC_SPILL = 'S', REC_PLAIN = 'P' };

typedef struct {
    uint32_t gen;
    char name[FM_SHM_NAME_MAX];
} fm_ring_entry;

/* Crash-safe counting.  A put adds its item to `count` (and, in a
 * JoinableQueue, to `unfinished`) BEFORE it claims its record, and the
 * producing process keeps a tally of the items it has so counted and not
 * yet committed: +1 just before the count, -1 just after the commit.  A
 * process killed in between leaves its tally above zero; whoever next
 * waits a slice on a full queue, finds it full without waiting, asks
 * qsize/empty/full, or waits a slice in join() takes a dead process's
 * tally off the counts (reconcile_dead), so the slots it reserved for items
 * that never became records are free again.  The item of a record that was
 * committed is taken by a consumer and counted off there, once.
 *
 * One word per process: the owner's short identity (fm_self_sid) in the
 * high half and the tally in the low half, so that a reconciler takes a dead
 * owner's tally and frees its slot in one CAS and cannot take the tally of a
 * process that claimed the slot meanwhile.  Each slot has a cache line of its
 * own: only its owner writes it on the fast path.
 *
 * Each step changes two words, and a kill can land between them: tally
 * up then count up (a bounded put: the CAS that takes the slot); record
 * published then tally down (then the consumer's wake-up, a system call
 * where a pending SIGKILL is likely to land, after both).  A kill that
 * arrives while a locked instruction waits for a contended line is taken
 * right after it, so these windows are hit (about one trial in forty, a
 * producer killed at random).  Both orders err low: the reconciler takes
 * off an item that was never counted, or one that was delivered.  And a
 * low count heals: since every item is counted before its record exists,
 * the count never has to go below zero, so neither a consumer nor a
 * reconciler takes it below zero (count_sub), and the count is exact again
 * when the queue runs dry.  Meanwhile it may read one low: qsize() one
 * short, empty() True with one item left, a bounded queue one over. */
typedef struct {
    _Atomic uint64_t word;          /* (sid << 32) | pending; 0: free */
    char _pad[FM_CACHE_LINE - sizeof(uint64_t)];
} fm_put_tally;

typedef struct {
    fm_mutex lock;                  /* the ring list and growth */
    uint32_t maxsize;               /* 0: unbounded */
    uint32_t kind;
    /* Hot words apart from each other by a cache line's worth of padding
     * (a block's payload is 16-aligned only, so no _Alignas here). */
    char _pad0[FM_CACHE_LINE];
    /* items put and not yet taken, counted before the record is claimed
     * (a bounded put waits on this word); read as int32, since a kill in a
     * one-instruction window can leave it one low (see fm_put_tally) */
    _Atomic uint32_t count;
    _Atomic uint32_t count_sleepers;
    char _pad1[FM_CACHE_LINE];
    _Atomic uint32_t unfinished;    /* JoinableQueue */
    _Atomic uint32_t join_sleepers;
    char _pad2[FM_CACHE_LINE];
    _Atomic uint32_t newest_gen;
    uint32_t nrings;
    fm_ring_entry rings[QUEUE_MAX_RINGS];       /* oldest first */
    /* The pids holding a reference to this block, one slot per reference
     * (0: free), so that the last live holder can tell that the others
     * were killed; holders_overflow: some holder has no slot, so nobody
     * can tell (sticky). */
    _Atomic uint32_t holders[QUEUE_MAX_HOLDERS];
    _Atomic uint32_t holders_overflow;
    char _pad3[FM_CACHE_LINE];
    fm_put_tally tallies[QUEUE_MAX_PRODUCERS];
    /* the readers' file descriptors (doorbell.h): producers read one word
     * of it after committing an item, and do more only when someone waits */
    fm_doorbell bell;
} fm_queue_shared;
_Static_assert(sizeof(fm_queue_shared) + sizeof(fm_block_header) <= 4096,
               "the queue's shared block outgrows its 4 KiB block class");

typedef struct {
    PyObject_HEAD
    fm_handle h;
    fm_queue_shared *sh;
    fm_ring *pring;                 /* where this process puts */
    uint32_t pgen;
    fm_ring *cring;                 /* where this process gets */
    uint32_t cgen;
    /* The ring segments this object has mapped (one local user each, see
     * fm_segment_release): pring's and cring's, and old ones not yet let go
     * because a thread was inside them when the object moved on.  All
     * given back when the object goes, so a dropped queue leaves no
     * mapping behind. */
    fm_segment **held;
    uint32_t nheld, held_cap;
    /* threads of this process that may be inside a ring of this object
     * with the GIL released or Python code running (a wait, an unpickle):
     * while nonzero, no ring of this object is unmapped */
    int busy;
    /* this process's slot in sh->tallies (NULL: not looked up yet, or all
     * taken), valid while fm_self_pid() is tally_pid (a forked child
     * looks up its own) */
    fm_put_tally *tally;
    uint32_t tally_pid;
    int closed;
    int kind;
    PyObject *weakreflist;
    fm_doorbell_watcher watch;      /* this object's reader descriptor (fd -1: none) */
    uint32_t watch_pid;             /* the process that made it */
} FmQueueObject;

static inline uint32_t
self_pid(void)
{
    return fm_self_pid();
}

static fm_state *
queue_state(FmQueueObject *self)
{
    return fm_state_of_type(Py_TYPE(self));
}

/* ------------------------------------------------------------ the lock */

/* The block's lock guards short sections (no waits inside).  A holder
 * that died leaves it recovered (FM_RECOVERED): the list it guards is
 * updated so that a death half-way leaves it consistent. */
static inline int
queue_lock(FmQueueObject *self)
{
    return fm_mutex_lock_py(&self->sh->lock);
}

static void
queue_unlock(FmQueueObject *self)
{
    fm_mutex_unlock(&self->sh->lock);
}

/* -------------------------------------------------------------- rings */

/* Keep `seg` (one local user of it just taken) in self->held; a segment
 * held already gives that user back at once.  -1 with MemoryError. */
static int
hold_segment(FmQueueObject *self, fm_segment *seg)
{
    for (uint32_t i = 0; i < self->nheld; i++)
        if (self->held[i] == seg) {
            fm_segment_release(seg);
            return 0;
        }
    if (self->nheld == self->held_cap) {
        uint32_t cap = self->held_cap ? self->held_cap * 2 : 4;
        fm_segment **h = PyMem_Realloc(self->held, cap * sizeof *h);
        if (h == NULL) {
            fm_segment_release(seg);
            PyErr_NoMemory();
            return -1;
        }
        self->held = h;
        self->held_cap = cap;
    }
    self->held[self->nheld++] = seg;
    return 0;
}

/* Unmap the rings this object holds but no longer uses (neither pring nor
 * cring), unless a thread may still be inside one. */
static void
let_go_old_rings(FmQueueObject *self)
{
    if (self->busy > 0)
        return;
    uint32_t j = 0;
    for (uint32_t i = 0; i < self->nheld; i++) {
        fm_segment *seg = self->held[i];
        fm_ring *r = (fm_ring *)seg->base;
        if (r == self->pring || r == self->cring)
            self->held[j++] = seg;
        else
            fm_segment_release(seg);
    }
    self->nheld = j;
}

static int
ring_attach(FmQueueObject *self, const char *name, fm_ring **out)
{
    fm_segment *seg;
    if (fm_segment_attach(name, &seg) != FM_OK) {
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, name);
        return -1;
    }
    if (fm_ring_check(seg->base, seg->size) != FM_OK) {
        fm_segment_release(seg);
        PyErr_Format(PyExc_OSError, "fastmp queue %R: ring %s is corrupt", (PyObject *)self,
                     name);
        return -1;
    }
    if (hold_segment(self, seg) < 0)
        return -1;
    *out = (fm_ring *)seg->base;
    return 0;
}

/* Create a ring of `cap` data bytes named `name`, which the caller has
 * told the tracker of (fm_segment_name_reserve) before taking the lock.
 * Its pages are reserved by fm_segment_create_as: a full /dev/shm raises
 * OSError(ENOSPC) here and leaves no file. */
static int
ring_create(FmQueueObject *self, size_t cap, fm_ring **out, const char *name)
{
    fm_segment *seg;
    if (fm_segment_create_as(name, fm_ring_bytes(cap), &seg) != FM_OK) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    /* the queue, not this process, decides when the ring goes away */
    fm_segment_disown(seg);
    if (fm_ring_init(seg->base, cap) != FM_OK) {
        shm_unlink(seg->name);
        fm_segment_release(seg);
        fm_set_error(FM_CORRUPT);
        return -1;
    }
    if (hold_segment(self, seg) < 0) {
        shm_unlink(name);
        return -1;
    }
    *out = (fm_ring *)seg->base;
    return 0;
}

/* Called with the lock held, before this process puts into a ring newer
 * than the one it used: a grower killed between listing its new ring and
 * sealing the one before (queue_grow) left that one open, and consumers
 * would wait on it for ever while items go to the newer one.  Seal every
 * listed ring but the newest, naming its successor (a no-op for those
 * sealed already; a ring that cannot be attached is left alone). */
static void
seal_left_open(fm_queue_shared *sh)
{
    for (uint32_t i = 0; i + 1 < sh->nrings && i + 1 < QUEUE_MAX_RINGS; i++) {
        fm_segment *seg;
        if (fm_segment_attach(sh->rings[i].name, &seg) != FM_OK)
            continue;
        if (fm_ring_check(seg->base, seg->size) == FM_OK) {
            fm_ring *ring = (fm_ring *)seg->base;
            if (!fm_ring_sealed(ring))
                fm_ring_seal(ring, sh->rings[i + 1].name);
        }
        /* only sealing: the mapping is not this object's to hold */
        fm_segment_release(seg);
    }
}

/* Producing: the ring we put into is sealed (or too small): attach the
 * newest, or create a bigger one if ours still is the newest.  `min_cap`:
 * the capacity the caller needs (0: twice the current one). */
static int
queue_grow(FmQueueObject *self, size_t min_cap)
{
    fm_state *st = queue_state(self);
    if (st == NULL)
        return -1;
    fm_queue_shared *sh = self->sh;
    /* the name of the ring this call may make, told to the tracker before
     * the lock is taken (the hook runs Python code) and before the file
     * exists: a grower killed at any point leaves nothing behind */
    char created[FM_SHM_NAME_MAX] = "";
    if (fm_segment_name_reserve(st, created) < 0)
        return -1;
    if (queue_lock(self) < 0) {
        fm_segment_name_unused(st, created);
        return -1;
    }
    seal_left_open(sh);
    fm_ring_entry *newest = &sh->rings[sh->nrings - 1];
    fm_ring *ring;
    if (newest->gen != self->pgen) {
        /* someone grew it already: use theirs */
        if (ring_attach(self, newest->name, &ring) < 0)
            goto error;
        if (min_cap == 0 || fm_ring_capacity(ring) >= min_cap) {
            self->pring = ring;
            self->pgen = newest->gen;
            queue_unlock(self);
            let_go_old_rings(self);
            fm_segment_name_unused(st, created);
            return 0;
        }
        self->pring = ring;
        self->pgen = newest->gen;
    }
    if (sh->nrings >= QUEUE_MAX_RINGS) {
        PyErr_SetString(PyExc_MemoryError, "fastmp queue: too many rings in use");
        goto error;
    }
    size_t cap = fm_ring_capacity(self->pring) * 2;
    if (min_cap > cap)
        cap = fm_ring_capacity_for(min_cap);
    if (ring_create(self, cap, &ring, created) < 0)
        goto error;
    fm_ring_entry *e = &sh->rings[sh->nrings];
    e->gen = self->pgen + 1;
    memcpy(e->name, created, FM_SHM_NAME_MAX);
    /* publish the entry, then the seal that sends consumers to it */
    atomic_thread_fence(REL);
    sh->nrings++;
    atomic_store_explicit(&sh->newest_gen, e->gen, REL);
    fm_ring_seal(self->pring, created);
    self->pring = ring;
    self->pgen = e->gen;
    queue_unlock(self);
    let_go_old_rings(self);
    return 0;
error:
    queue_unlock(self);
    fm_segment_name_unused(st, created);
    return -1;
}

/* Consuming: `was` (our ring when we looked) is sealed and empty.  Unlink
 * it (if nobody did), drop it from the list, and move on to the next ring
 * in the list.  Another thread of this process may have moved this object
 * on already (threads share cring): then there is nothing to do. */
static int
queue_next_cring(FmQueueObject *self, fm_ring *was)
{
    fm_state *st = queue_state(self);
    if (st == NULL)
        return -1;
    fm_queue_shared *sh = self->sh;
    char gone[FM_SHM_NAME_MAX] = "";
    if (queue_lock(self) < 0)
        return -1;
    if (self->cring != was) {
        queue_unlock(self);
        return 0;
    }
    uint32_t i, n = sh->nrings;
    for (i = 0; i < n; i++)
        if (sh->rings[i].gen == self->cgen)
            break;
    if (i < n && i + 1 < n) {
        /* still listed, and not the newest: drained for good */
        memcpy(gone, sh->rings[i].name, FM_SHM_NAME_MAX);
        shm_unlink(gone);
        memmove(&sh->rings[i], &sh->rings[i + 1], (n - i - 1) * sizeof sh->rings[0]);
        sh->nrings = n - 1;
        n--;
    }
    /* the oldest ring newer than ours */
    for (i = 0; i < n; i++)
        if (sh->rings[i].gen > self->cgen)
            break;
    int rc = 0;
    if (i < n) {
        fm_ring *ring;
        if (ring_attach(self, sh->rings[i].name, &ring) < 0)
            rc = -1;
        else {
            self->cring = ring;
            self->cgen = sh->rings[i].gen;
        }
    }
    else {
        PyErr_SetString(PyExc_RuntimeError, "fastmp queue: sealed ring with no successor");
        rc = -1;
    }
    queue_unlock(self);
    let_go_old_rings(self);
    if (gone[0])
        fm_segment_gone(st, gone);
    return rc;
}

/* -------------------------------------------------------------- spill */

static int
spill_write(fm_state *st, const char *data, size_t len, char *name)
{
    size_t size = len ? len : 1;
    int fd = -1, rc;
    /* Every page reserved before the copy touches it (a full /dev/shm is
     * OSError(ENOSPC) here, not SIGBUS in memcpy), and the file named only
     * once it exists whole (fm_shm_create_fd), under a name the tracker
     * knows already: a producer killed at any point leaves nothing behind
     * (the tracker removes the file if this process dies before the
     * consumer takes it). */
    if (fm_segment_name_reserve(st, name) < 0)
        return -1;
    Py_BEGIN_ALLOW_THREADS
    rc = fm_shm_create_fd(name, size, &fd);
    Py_END_ALLOW_THREADS
    if (rc != FM_OK) {
        int saved = errno;
        fm_segment_name_unused(st, name);
        errno = saved;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    int ok = 0;
    void *p;
    Py_BEGIN_ALLOW_THREADS
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p != MAP_FAILED) {
        memcpy(p, data, len);
        munmap(p, size);
        ok = 1;
    }
    Py_END_ALLOW_THREADS
    int saved = errno;
    close(fd);
    if (!ok) {
        shm_unlink(name);
        fm_segment_gone(st, name);
        errno = saved;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

/* Unlink a spill segment and tell the tracker. */
static void
spill_discard(fm_state *st, const char *name)
{
    shm_unlink(name);
    fm_segment_gone(st, name);
}

/* ------------------------------------------------------------- putting */

/* ---- plain data: a compact encoding for the common small items ----
 *
 * Items made only of None, bool, int (64-bit), float, str, bytes and
 * tuples of those (and, at the top level only, a list or dict of those)
 * are written straight into the ring record in a tagged binary form and
 * rebuilt by C on the other side: no pickle call on either side, and no
 * intermediate bytes object.  The rebuilt object is equal to the original,
 * with the same exact types.  Mutable containers only at the top level, so
 * no object can appear twice in one item (pickle would keep that sharing;
 * this encoding could not).  Anything else, subclasses included, goes
 * through pickle. */

#define PLAIN_MAX_DEPTH 4
#define PLAIN_MAX_ITEMS 4096

enum {
    P_NONE = 'N', P_TRUE = 'T', P_FALSE = 'F', P_INT = 'i', P_FLOAT = 'f', P_STR = 's',
    P_BYTES = 'b', P_TUPLE = 't', P_LIST = 'l', P_DICT = 'd'
};

/* Encoded size of o, or -1 if o is not plain data (no exception set). */
static Py_ssize_t
plain_size(PyObject *o, int depth)
{
    PyTypeObject *t = Py_TYPE(o);
    if (o == Py_None || t == &PyBool_Type)
        return 1;
    if (t == &PyFloat_Type)
        return 9;
    if (t == &PyLong_Type) {
        int overflow;
        (void)PyLong_AsLongLongAndOverflow(o, &overflow);
        if (overflow)
            return -1;
        return 9;
    }
    if (t == &PyUnicode_Type) {
        Py_ssize_t n;
        if (PyUnicode_AsUTF8AndSize(o, &n) == NULL) {
            PyErr_Clear();      /* lone surrogates: pickle copes */
            return -1;
        }
        return n > UINT32_MAX - 16 ? -1 : 5 + n;
    }
    if (t == &PyBytes_Type) {
        Py_ssize_t n = PyBytes_GET_SIZE(o);
        return n > UINT32_MAX - 16 ? -1 : 5 + n;
    }
    if (depth >= PLAIN_MAX_DEPTH)
        return -1;
    if (t == &PyTuple_Type || (depth == 0 && t == &PyList_Type)) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(o);
        if (n > PLAIN_MAX_ITEMS)
            return -1;
        Py_ssize_t total = 5;
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_ssize_t k = plain_size(PySequence_Fast_GET_ITEM(o, i), depth + 1);
            if (k < 0)
                return -1;
            total += k;
        }
        return total;
    }
    if (depth == 0 && t == &PyDict_Type) {
        if (PyDict_GET_SIZE(o) > PLAIN_MAX_ITEMS)
            return -1;
        Py_ssize_t pos = 0, total = 5;
        PyObject *k, *v;
        while (PyDict_Next(o, &pos, &k, &v)) {
            Py_ssize_t a = plain_size(k, depth + 1), b = plain_size(v, depth + 1);
            if (a < 0 || b < 0)
                return -1;
            total += a + b;
        }
        return total;
    }
    return -1;
}

static inline unsigned char *
put_u32(unsigned char *p, uint32_t v)
{
    memcpy(p, &v, 4);
    return p + 4;
}

/* Write o: plain_size(o) was just taken, with no Python code run since,
 * and the destination has that many bytes. */
static unsigned char *
plain_write(PyObject *o, unsigned char *p)
{
    PyTypeObject *t = Py_TYPE(o);
    if (o == Py_None) {
        *p++ = P_NONE;
        return p;
    }
    if (t == &PyBool_Type) {
        *p++ = o == Py_True ? P_TRUE : P_FALSE;
        return p;
    }
    if (t == &PyFloat_Type) {
        double d = PyFloat_AS_DOUBLE(o);
        *p++ = P_FLOAT;
        memcpy(p, &d, 8);
        return p + 8;
    }
    if (t == &PyLong_Type) {
        long long v = PyLong_AsLongLong(o);
        *p++ = P_INT;
        memcpy(p, &v, 8);
        return p + 8;
    }
    if (t == &PyUnicode_Type) {
        Py_ssize_t n;
        const char *u = PyUnicode_AsUTF8AndSize(o, &n);     /* cached by plain_size */
        *p++ = P_STR;
        p = put_u32(p, (uint32_t)n);
        memcpy(p, u, (size_t)n);
        return p + n;
    }
    if (t == &PyBytes_Type) {
        Py_ssize_t n = PyBytes_GET_SIZE(o);
        *p++ = P_BYTES;
        p = put_u32(p, (uint32_t)n);
        memcpy(p, PyBytes_AS_STRING(o), (size_t)n);
        return p + n;
    }
    if (t == &PyTuple_Type || t == &PyList_Type) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(o);
        *p++ = t == &PyTuple_Type ? P_TUPLE : P_LIST;
        p = put_u32(p, (uint32_t)n);
        for (Py_ssize_t i = 0; i < n; i++)
            p = plain_write(PySequence_Fast_GET_ITEM(o, i), p);
        return p;
    }
    /* dict */
    *p++ = P_DICT;
    p = put_u32(p, (uint32_t)PyDict_GET_SIZE(o));
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(o, &pos, &k, &v)) {
        p = plain_write(k, p);
        p = plain_write(v, p);
    }
    return p;
}

/* Rebuild an object from [*pp, end); NULL with an exception if the bytes
 * are not a valid encoding.  (One switch over the encoding's tags, a few
 * lines per tag: longer than most functions here, but split it would
 * scatter the format that plain_write mirrors.)  The bytes are untrusted (shared memory): every
 * length and count is checked against what is left before use, lists and
 * dicts are accepted only at the top (as written), so every dict key is
 * hashable, and the depth is bounded.  A bad encoding sets
 * ValueError("...: corrupt record: <what>"), `who` naming the queue. */
static PyObject *
plain_read(const unsigned char **pp, const unsigned char *end, int depth, PyObject *who)
{
    const char *what = "truncated";
    const unsigned char *p = *pp;
    PyObject *res = NULL;
    uint32_t n = 0;
    if (depth > PLAIN_MAX_DEPTH) {
        what = "nested too deep";
        goto corrupt;
    }
    if (p >= end)
        goto corrupt;
    unsigned char tag = *p++;
    switch (tag) {
    case P_NONE:
        res = Py_NewRef(Py_None);
        break;
    case P_TRUE:
        res = Py_NewRef(Py_True);
        break;
    case P_FALSE:
        res = Py_NewRef(Py_False);
        break;
    case P_INT: {
        long long v;
        if (end - p < 8)
            goto corrupt;
        memcpy(&v, p, 8);
        p += 8;
        res = PyLong_FromLongLong(v);
        break;
    }
    case P_FLOAT: {
        double d;
        if (end - p < 8)
            goto corrupt;
        memcpy(&d, p, 8);
        p += 8;
        res = PyFloat_FromDouble(d);
        break;
    }
    case P_STR:
    case P_BYTES:
        if (end - p < 4)
            goto corrupt;
        memcpy(&n, p, 4);
        p += 4;
        if ((size_t)(end - p) < n) {
            what = "length past the end";
            goto corrupt;
        }
        res = tag == P_STR ? PyUnicode_DecodeUTF8((const char *)p, n, "strict")
                           : PyBytes_FromStringAndSize((const char *)p, n);
        if (res == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            PyErr_Clear();
            what = "bad UTF-8";
            goto corrupt;
        }
        p += n;
        break;
    case P_TUPLE:
    case P_LIST:
    case P_DICT: {
        if (tag != P_TUPLE && depth > 0) {
            what = "list or dict inside a container";
            goto corrupt;
        }
        if (end - p < 4)
            goto corrupt;
        memcpy(&n, p, 4);
        p += 4;
        /* each item takes at least one byte */
        if (n > PLAIN_MAX_ITEMS || (size_t)(end - p) < n) {
            what = "count past the end";
            goto corrupt;
        }
        res = tag == P_TUPLE ? PyTuple_New(n) : tag == P_LIST ? PyList_New(n) : PyDict_New();
        if (res == NULL)
            break;
        for (uint32_t i = 0; i < n; i++) {
            PyObject *a = plain_read(&p, end, depth + 1, who);
            if (a == NULL)
                goto fail;
            if (tag == P_TUPLE)
                PyTuple_SET_ITEM(res, i, a);
            else if (tag == P_LIST)
                PyList_SET_ITEM(res, i, a);
            else {
                PyObject *b = plain_read(&p, end, depth + 1, who);
                if (b == NULL) {
                    Py_DECREF(a);
                    goto fail;
                }
                int r = PyDict_SetItem(res, a, b);
                Py_DECREF(a);
                Py_DECREF(b);
                if (r < 0)
                    goto fail;
            }
        }
        break;
    }
    default:
        what = "unknown type tag";
        goto corrupt;
    }
    *pp = p;
    return res;
corrupt:
    PyErr_Format(PyExc_ValueError, "fastmp queue %R: corrupt record: %s", who, what);
    return NULL;
fail:
    Py_XDECREF(res);
    return NULL;
}

/* The pickle of obj, as a buffer (the ForkingPickler, as the stdlib's
 * queues: objects with reducers registered there pickle as they would in a
 * stdlib queue). */
static PyObject *
pickle_obj(fm_state *st, PyObject *obj, Py_buffer *view)
{
    PyObject *data = PyObject_CallOneArg(st->q_dumps, obj);
    if (data == NULL)
        return NULL;
    if (PyObject_GetBuffer(data, view, PyBUF_SIMPLE) < 0) {
        Py_DECREF(data);
        return NULL;
    }
    return data;
}

/* ------------------------------------------------- crash-safe counting */

#define TALLY_SID(w) ((uint32_t)((w) >> 32))
#define TALLY_PENDING(w) ((int32_t)(uint32_t)(w))

/* Take up to n off the count, never below zero: every item is counted
 * before its record exists, so a count that would go below zero is one a
 * kill left low (see fm_put_tally), and it heals here once the queue runs
 * dry.  The amount taken off. */
static uint32_t
count_sub(fm_queue_shared *sh, uint32_t n)
{
    /* One subtraction (the get's fast path), then give back what went
     * below zero of this call's share: with concurrent callers each gives
     * back its own excess, so the sum is what a clamped sequence takes. */
    int32_t old = (int32_t)atomic_fetch_sub_explicit(&sh->count, n, SEQ);
    int64_t floor = old > 0 ? old : 0;
    if ((int64_t)n <= floor)
        return n;
    atomic_fetch_add_explicit(&sh->count, (uint32_t)((int64_t)n - floor), SEQ);
    return (uint32_t)floor;
}

/* Take the tallies of dead producers off the counts and free their slots
 * (see fm_put_tally).  `all`: look at every slot (to free one), else only
 * at those with a nonzero tally (the others cost nothing to leave).  No
 * Python object touched: may run with the GIL released.  The number of
 * items given back. */
static uint32_t
reconcile_dead(fm_queue_shared *sh, int all)
{
    uint32_t me = fm_self_sid(), given = 0;
    for (int i = 0; i < QUEUE_MAX_PRODUCERS; i++) {
        _Atomic uint64_t *word = &sh->tallies[i].word;
        uint64_t w = atomic_load_explicit(word, ACQ);
        uint32_t sid = TALLY_SID(w);
        if (sid == 0 || sid == me || (!all && TALLY_PENDING(w) == 0))
            continue;
        if (fm_sid_alive(sid))
            continue;
        /* the owner is gone: nobody else changes the word but reconcilers
         * (one wins), or a new owner after it is freed (then this fails) */
        if (!atomic_compare_exchange_strong_explicit(word, &w, 0, SEQ, RLX))
            continue;
        int32_t pending = TALLY_PENDING(w);
        if (pending <= 0)
            continue;
        /* (never below zero: then the kill came in a window that left the
         * count low already, see fm_put_tally) */
        uint32_t n = (uint32_t)pending;
        given += count_sub(sh, n);
        if (sh->kind == FM_QUEUE_KIND_JOINABLE) {
            /* never below zero (a kill between the count and this word) */
            uint32_t u = atomic_load_explicit(&sh->unfinished, RLX), d;
            do
                d = u < n ? u : n;
            while (d && !atomic_compare_exchange_weak_explicit(&sh->unfinished, &u, u - d,
                                                                SEQ, RLX));
            if (d && u == d && atomic_load_explicit(&sh->join_sleepers, SEQ) > 0)
                fm_futex_wake(&sh->unfinished, INT32_MAX);
        }
    }
    if (given && sh->maxsize && atomic_load_explicit(&sh->count_sleepers, SEQ) > 0)
        fm_futex_wake(&sh->count, (int)(given < INT32_MAX ? given : INT32_MAX));
    return given;
}

/* This process's tally slot: found or claimed once per object and
 * process (a fork looks again).  NULL when all are taken by live
 * processes: that process's puts are then not tallied (as before tallies:
 * its death in a put may leave the count off). */
static fm_put_tally *
find_tally(FmQueueObject *self)
{
    fm_queue_shared *sh = self->sh;
    uint32_t pid = self_pid(), sid = fm_self_sid();
    self->tally = NULL;
    self->tally_pid = pid;
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < QUEUE_MAX_PRODUCERS; i++)
            if (TALLY_SID(atomic_load_explicit(&sh->tallies[i].word, ACQ)) == sid)
                return self->tally = &sh->tallies[i];
        for (int i = 0; i < QUEUE_MAX_PRODUCERS; i++) {
            uint64_t w = 0;
            if (atomic_compare_exchange_strong_explicit(&sh->tallies[i].word, &w,
                                                        (uint64_t)sid << 32, SEQ, RLX))
                return self->tally = &sh->tallies[i];
        }
        reconcile_dead(sh, 1);
    }
    return NULL;
}

static inline fm_put_tally *
my_tally(FmQueueObject *self)
{
    if (self->tally != NULL && self->tally_pid == self_pid())
        return self->tally;
    return find_tally(self);
}

/* +1 or -1 on this process's tally (the owner's half never changes:
 * every +1 comes before its -1, so the low half never borrows). */
static inline void
tally_add(fm_put_tally *t, int delta)
{
    if (t == NULL)
        return;
    if (delta > 0)
        atomic_fetch_add_explicit(&t->word, 1, SEQ);
    else
        atomic_fetch_sub_explicit(&t->word, 1, REL);
}

/* One wait (GIL released) until the count may be below max: FM_OK (look
 * again), FM_TIMEOUT, FM_EINTR.  Only called through FM_BLOCKING (the
 * `_wait_once` suffix tells tests/test_c_lint.py to check that). */
static int
count_wait_once(fm_queue_shared *sh, uint32_t max, int64_t deadline, int64_t spin)
{
    uint32_t v = atomic_load_explicit(&sh->count, ACQ);
    if ((int32_t)v < (int32_t)max)
        return FM_OK;
    if (spin > 0) {
        int64_t left = deadline - fm_now_ns();
        if (fm_spin_while(&sh->count, v, spin < left ? spin : left) != v)
            return FM_OK;
    }
    atomic_fetch_add_explicit(&sh->count_sleepers, 1, SEQ);
    int st = FM_OK;
    v = atomic_load_explicit(&sh->count, SEQ);
    if ((int32_t)v >= (int32_t)max)
        st = fm_futex_wait(&sh->count, v, deadline);
    atomic_fetch_sub_explicit(&sh->count_sleepers, 1, RLX);
    /* a whole slice full (or a signal): a producer killed in its put may
     * hold slots it will never fill */
    if (st == FM_EINTR && reconcile_dead(sh, 0) > 0)
        st = FM_OK;
    return st;
}

/* One try at a slot of a bounded queue, tallied in `t` once taken (see
 * fm_put_tally).  1 if reserved. */
static int
try_reserve(fm_queue_shared *sh, fm_put_tally *t, uint32_t max)
{
    uint32_t c = atomic_load_explicit(&sh->count, RLX);
    if ((int32_t)c >= (int32_t)max)
        return 0;
    tally_add(t, 1);
    while ((int32_t)c < (int32_t)max)
        if (atomic_compare_exchange_weak_explicit(&sh->count, &c, c + 1, SEQ, RLX))
            return 1;
    tally_add(t, -1);
    return 0;
}

/* Bounded queue: reserve one item of the count, and tally it in `t`.  0,
 * or -1 with Full (or KeyboardInterrupt) set. */
static int
reserve_slot(FmQueueObject *self, fm_put_tally *t, int block, int64_t deadline)
{
    fm_queue_shared *sh = self->sh;
    uint32_t max = sh->maxsize;
    int reconciled = 0;
    for (;;) {
        if (try_reserve(sh, t, max))
            return 0;
        if (!block || fm_now_ns() >= deadline) {
            /* about to say Full: not because of slots a dead producer holds */
            if (!reconciled++ && reconcile_dead(sh, 0) > 0)
                continue;
            goto full;
        }
        int st;
        FM_BLOCKING(st, count_wait_once(sh, max, deadline, fm_spin));
        if (st == FM_PYERR)
            return -1;
        if (st == FM_TIMEOUT) {
            /* one last look: a slot freed right at the deadline */
            if (try_reserve(sh, t, max))
                return 0;
            if (!reconciled++ && reconcile_dead(sh, 0) > 0 && try_reserve(sh, t, max))
                return 0;
            goto full;
        }
    }
full:
    PyErr_SetNone(queue_state(self)->Full);
    return -1;
}

static void
count_taken(FmQueueObject *self, uint32_t n)
{
    fm_queue_shared *sh = self->sh;
    if (n == 0)
        return;
    count_sub(sh, n);
    if (sh->maxsize && atomic_load_explicit(&sh->count_sleepers, SEQ) > 0)
        fm_futex_wake(&sh->count, (int)n);
}

/* Claim a record of `len` payload bytes in the newest ring, growing it
 * when it is full or too small.  A full ring gets a grace of
 * QUEUE_GROW_GRACE_NS first (GIL released): a consumer that is draining it
 * frees room sooner than a bigger ring could be made, and fresh shared
 * pages cost a fault each, in every process that touches them (a 1 MiB
 * stream through an ever-growing ring ran at a fifth of its speed).  After
 * the grace the ring grows: put() never waits for a consumer.  0 or -1
 * with an exception. */
static int
claim_record(FmQueueObject *self, size_t len, fm_ring **ringp, fm_ring_claim *c)
{
    if (len > UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "record too large");
        return -1;
    }
    for (;;) {
        fm_ring *ring = self->pring;
        int st = fm_ring_claim_space(ring, (uint32_t)len, self_pid(), 0, 0, c);
        if (st == FM_AGAIN) {
            int64_t grace = fm_now_ns() + QUEUE_GROW_GRACE_NS;
            self->busy++;
            FM_BLOCKING(st, fm_ring_claim_space(ring, (uint32_t)len, self_pid(), grace, fm_spin,
                                                c));
            self->busy--;
            if (st == FM_PYERR)
                return -1;
            if (st == FM_TIMEOUT)
                st = FM_AGAIN;
        }
        if (st == FM_OK) {
            *ringp = ring;
            return 0;
        }
        size_t need = 0;
        if (st == FM_OVERFLOW)
            need = fm_ring_capacity_for(len * 8);
        else if (st != FM_AGAIN && st != FM_BROKEN) {
            fm_set_error(st);
            return -1;
        }
        if (queue_grow(self, need) < 0)
            return -1;
    }
}

/* Before writing a `len`-byte record: 1 if it goes in the ring (grown to
 * eight times its size if need be), 0 if it must be spilled, -1 on error. */
static int
fits_inline(FmQueueObject *self, size_t len)
{
    size_t cap = fm_ring_capacity(self->pring);
    if (len <= cap / 8)
        return 1;
    /* A big item: a ring where it fits (a record may take half a ring),
     * not one that holds eight of them: every byte of a ring is reserved
     * in /dev/shm when it is made, and a ring never shrinks while its
     * queue lives.  If several pile up, the ring grows as for any other
     * item. */
    size_t want = fm_ring_capacity_for(2 * (len + FM_RING_RECORD_HEADER));
    if (want > QUEUE_INLINE_RING_MAX)
        return 0;
    if (cap >= want)
        return 1;
    if (queue_grow(self, want) == 0)
        return 1;
    /* no room in /dev/shm for the bigger ring: a segment of the item's own
     * size may still fit (and if not, that one raises ENOSPC) */
    if (!PyErr_ExceptionMatches(PyExc_OSError))
        return -1;
    PyObject *exc = fm_exc_take();
    PyObject *code = PyObject_GetAttrString(exc, "errno");
    long err = code != NULL && PyLong_Check(code) ? PyLong_AsLong(code) : -1;
    Py_XDECREF(code);
    if (err == ENOSPC) {
        Py_DECREF(exc);
        PyErr_Clear();
        return 0;
    }
    fm_exc_restore(exc);
    return -1;
}

/* Commit a put's record and take it off this process's tally (`t`) in
 * the same breath: the record published, the tally down, and only then
 * the consumer's wake-up (a system call, where a pending SIGKILL lands:
 * with the tally still up there, a kill would take a delivered item off
 * the count a second time). */
static void
commit_put(fm_ring *ring, const fm_ring_claim *c, fm_put_tally *t)
{
    fm_ring_publish(ring, c);
    tally_add(t, -1);
    fm_ring_wake_consumer(ring);
}

/* Put one pickled item (inline, or spilled to a segment of its own);
 * committed with commit_put. */
static int
put_pickled(FmQueueObject *self, fm_state *st, const char *buf, size_t len, fm_put_tally *t)
{
    fm_ring *ring;
    fm_ring_claim c;
    int inl = fits_inline(self, len + 1);
    if (inl < 0)
        return -1;
    if (inl) {
        if (claim_record(self, len + 1, &ring, &c) < 0)
            return -1;
        unsigned char *dst = c.data;
        dst[0] = REC_INLINE;
        memcpy(dst + 1, buf, len);
        commit_put(ring, &c, t);
        return 0;
    }
    char name[FM_SHM_NAME_MAX];
    if (spill_write(st, buf, len, name) < 0)
        return -1;
    size_t nl = strlen(name) + 1;
    if (claim_record(self, 9 + nl, &ring, &c) < 0) {
        spill_discard(st, name);
        return -1;
    }
    unsigned char *dst = c.data;
    uint64_t n64 = len;
    dst[0] = REC_SPILL;
    memcpy(dst + 1, &n64, 8);
    memcpy(dst + 9, name, nl);
    commit_put(ring, &c, t);
    return 0;
}

static int
check_open(FmQueueObject *self)
{
    if (!self->closed)
        return 0;
    if (self->kind == FM_QUEUE_KIND_SIMPLE)
        PyErr_SetString(PyExc_OSError, "handle is closed");
    else
        PyErr_Format(PyExc_ValueError, "Queue %R is closed", (PyObject *)self);
    return -1;
}

/* What every put and get does first: the queue must be open; its (block,
 * timeout) arguments as *block and *deadline.  The module state, or NULL
 * with an exception set. */
static inline fm_state *
queue_begin(FmQueueObject *self, PyObject *block_obj, PyObject *timeout_obj, int *block,
            int64_t *deadline)
{
    if (check_open(self) < 0 ||
        fm_block_timeout(block_obj, timeout_obj, FM_BLOCK_TRUTH, block, deadline) < 0)
        return NULL;
    return queue_state(self);
}

/* Write obj's record: the plain encoding straight into the ring, or a
 * pickle; committed with commit_put (the count is the caller's). */
static int
write_item(FmQueueObject *self, fm_state *st, PyObject *obj, Py_ssize_t plain,
           fm_put_tally *t)
{
    if (plain >= 0) {
        int inl = fits_inline(self, (size_t)plain + 1);
        if (inl < 0)
            return -1;
        if (inl) {
            fm_ring *ring;
            fm_ring_claim c;
            if (claim_record(self, (size_t)plain + 1, &ring, &c) < 0)
                return -1;
            /* Claiming may have let other threads run (a wait, or the
             * tracker hook): one could have changed a top-level list or
             * dict since it was measured.  Measure again, with no Python
             * code between this and the write; if it changed, pickle. */
            if (plain_size(obj, 0) == plain) {
                unsigned char *dst = c.data;
                dst[0] = REC_PLAIN;
                plain_write(obj, dst + 1);
                commit_put(ring, &c, t);
                return 0;
            }
            fm_ring_abandon(ring, &c);
        }
    }
    Py_buffer view;
    PyObject *data = pickle_obj(st, obj, &view);
    if (data == NULL)
        return -1;
    int rc = put_pickled(self, st, view.buf, (size_t)view.len, t);
    PyBuffer_Release(&view);
    Py_DECREF(data);
    return rc;
}

/* put one object: check it encodes, count it (a bounded queue waits for
 * room) with this process's tally up, write, commit, tally down. */
static int
put_one(FmQueueObject *self, fm_state *st, PyObject *obj, int block, int64_t deadline)
{
    fm_queue_shared *sh = self->sh;
    Py_ssize_t plain = plain_size(obj, 0);
    /* Pickle first when it is not plain data: a pickling error must raise
     * before anything is reserved. */
    Py_buffer view;
    PyObject *data = NULL;
    if (plain < 0 && (data = pickle_obj(st, obj, &view)) == NULL)
        return -1;
    int rc = -1;
    fm_put_tally *t = my_tally(self);
    if (sh->maxsize) {
        if (reserve_slot(self, t, block, deadline) < 0)
            goto done;
    }
    else {
        tally_add(t, 1);
        atomic_fetch_add_explicit(&sh->count, 1, SEQ);
    }
    if (self->kind == FM_QUEUE_KIND_JOINABLE)
        atomic_fetch_add_explicit(&sh->unfinished, 1, SEQ);
    int w = data ? put_pickled(self, st, view.buf, (size_t)view.len, t)
                 : write_item(self, st, obj, plain, t);
    if (w < 0) {
        if (self->kind == FM_QUEUE_KIND_JOINABLE)
            atomic_fetch_sub_explicit(&sh->unfinished, 1, SEQ);
        count_taken(self, 1);
        tally_add(t, -1);
        goto done;
    }
    rc = 0;                 /* (the tally went down in commit_put) */
done:
    if (data) {
        PyBuffer_Release(&view);
        Py_DECREF(data);
    }
    return rc;
}

static inline void
count_put(FmQueueObject *self, uint32_t n)
{
    if (n)
        atomic_fetch_add_explicit(&self->sh->count, n, SEQ);
}

PyDoc_STRVAR(Queue_put_doc,
"put($self, obj, block=True, timeout=None)\n--\n\n"
"Put obj on the queue.  It is pickled and copied into shared memory before\n"
"put returns (no feeder thread): a pickling error raises here.  A bounded\n"
"queue waits for room (block, timeout), else raises queue.Full; an\n"
"unbounded one never waits.  OSError(ENOSPC) when /dev/shm has no room.");

static PyObject *
Queue_put(FmQueueObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"obj", "block", "timeout"};
    PyObject *a[3];
    if (fm_parse_args("put", args, nargs, kwnames, names, 3, 1, a) < 0)
        return NULL;
    int block;
    int64_t deadline;
    fm_state *st = queue_begin(self, a[1], a[2], &block, &deadline);
    if (st == NULL)
        return NULL;
    int rc = put_one(self, st, a[0], block, deadline);
    fm_doorbell_ring(&self->sh->bell);     /* one load unless a reader is watched */
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(Queue_put_many_doc,
"put_many($self, items, block=True, timeout=None)\n--\n\n"
"Put every item of the iterable, in order (beyond the stdlib).  A bounded\n"
"queue waits for room for each.  When an item fails (the iterable raises,\n"
"an item does not pickle, queue.Full), the exception propagates and the\n"
"items before that one are in the queue, the rest are not.");

static PyObject *
Queue_put_many(FmQueueObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"items", "block", "timeout", NULL};
    PyObject *items, *block_obj = NULL, *timeout_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OO:put_many", kwlist, &items,
                                     &block_obj, &timeout_obj))
        return NULL;
    int block;
    int64_t deadline;
    fm_state *st = queue_begin(self, block_obj, timeout_obj, &block, &deadline);
    if (st == NULL)
        return NULL;
    /* One contract for every way an item can fail (an iterator that
     * raises, an item that does not pickle, queue.Full): the items before
     * it are in the queue, in order, and the rest are not.  So an iterator
     * is consumed one item at a time, as each is put (a list or tuple is
     * walked in place). */
    int rc = 0;
    if (PyList_CheckExact(items) || PyTuple_CheckExact(items)) {
        PyObject *seq = items;
        Py_INCREF(seq);
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq) && rc == 0; i++) {
            /* the item is held while it is put: pickling it may change the list */
            PyObject *obj = PySequence_Fast_GET_ITEM(seq, i);
            Py_INCREF(obj);
            rc = put_one(self, st, obj, block, deadline);
            Py_DECREF(obj);
        }
        Py_DECREF(seq);
    }
    else {
        PyObject *it = PyObject_GetIter(items);
        if (it == NULL) {
            if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                PyErr_SetString(PyExc_TypeError, "put_many() needs an iterable");
            }
            return NULL;
        }
        PyObject *obj;
        while (rc == 0 && (obj = PyIter_Next(it)) != NULL) {
            rc = put_one(self, st, obj, block, deadline);
            Py_DECREF(obj);
        }
        Py_DECREF(it);
        if (rc == 0 && PyErr_Occurred())
            rc = -1;            /* the iterator raised */
    }
    fm_doorbell_ring(&self->sh->bell);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------- getting */

/* A record read from shared memory is not what a producer writes. */
static PyObject *
record_corrupt(FmQueueObject *self, const char *what)
{
    PyErr_Format(PyExc_ValueError, "fastmp queue %R: corrupt record: %s", (PyObject *)self,
                 what);
    return NULL;
}

/* Whether `name` (NUL-terminated) has the form of fastmp's segment names
 * (FM_SHM_PREFIX and lowercase hex, csrc/core/shm.h): only such a name is
 * opened, or unlinked, on the word of shared memory. */
static int
spill_name_ok(const char *name)
{
    size_t plen = strlen(FM_SHM_PREFIX), n = strlen(name);
    if (n <= plen || n >= FM_SHM_NAME_MAX || strncmp(name, FM_SHM_PREFIX, plen) != 0)
        return 0;
    for (size_t i = plen; i < n; i++)
        if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f')))
            return 0;
    return 1;
}

/* The name in a spill descriptor's bytes after the length, or NULL if they
 * do not hold a valid, NUL-terminated one. */
static const char *
spill_desc_name(const unsigned char *name_bytes, size_t n, char *out)
{
    const unsigned char *nul = memchr(name_bytes, '\0', n < FM_SHM_NAME_MAX ? n : FM_SHM_NAME_MAX);
    if (nul == NULL)
        return NULL;
    memcpy(out, name_bytes, (size_t)(nul - name_bytes) + 1);
    return spill_name_ok(out) ? out : NULL;
}

/* Unpickle a spilled item.  desc: the record's bytes after the kind byte
 * (8-byte length, then the name), copied out of the ring. */
static PyObject *
spill_read(FmQueueObject *self, fm_state *st, const unsigned char *desc, size_t dlen)
{
    uint64_t n64;
    char name[FM_SHM_NAME_MAX];
    if (dlen < 9 || spill_desc_name(desc + 8, dlen - 8, name) == NULL)
        return record_corrupt(self, "bad spill segment name");
    memcpy(&n64, desc, 8);
    int fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0600);
    if (fd < 0) {
        PyErr_Format(PyExc_OSError, "fastmp queue %R: spilled item %s is gone: %s",
                     (PyObject *)self, name, strerror(errno));
        return NULL;
    }
    /* never map past the file's end: reading there is SIGBUS */
    struct stat sb;
    if (fstat(fd, &sb) < 0 || n64 > (uint64_t)PY_SSIZE_T_MAX || (uint64_t)sb.st_size < n64) {
        close(fd);
        spill_discard(st, name);
        return record_corrupt(self, "spill segment shorter than its descriptor says");
    }
    size_t maplen = n64 ? (size_t)n64 : 1;
    void *p = mmap(NULL, maplen, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, name);
        spill_discard(st, name);
        return NULL;
    }
    PyObject *res = NULL;
    PyObject *mv = PyMemoryView_FromMemory(p, (Py_ssize_t)n64, PyBUF_READ);
    if (mv != NULL) {
        res = PyObject_CallOneArg(st->q_loads, mv);
        if (Py_REFCNT(mv) == 1) {
            Py_DECREF(mv);
            munmap(p, maplen);
        }
        else
            Py_DECREF(mv);      /* someone kept a view: keep the mapping */
    }
    spill_discard(st, name);
    return res;
}

/* Unpickle a taken record, then release it.  Steals nothing.  The bytes
 * are untrusted: a record that is not what a producer writes raises
 * ValueError naming the queue; the record is consumed all the same, so
 * the next get() has the next one. */
static PyObject *
decode_record_in(FmQueueObject *self, fm_state *st, fm_ring *ring, fm_ring_read *rd)
{
    const unsigned char *p = rd->data;
    PyObject *res = NULL;
    if (rd->len < 1) {
        fm_ring_release(ring, rd);
        return record_corrupt(self, "empty");
    }
    if (p[0] == REC_PLAIN) {
        const unsigned char *q = p + 1, *end = p + rd->len;
        res = plain_read(&q, end, 0, (PyObject *)self);
        if (res != NULL && q != end) {
            Py_CLEAR(res);
            record_corrupt(self, "bytes after the item");
        }
        fm_ring_release(ring, rd);
        return res;
    }
    if (p[0] == REC_INLINE) {
        PyObject *mv = PyMemoryView_FromMemory((char *)p + 1, (Py_ssize_t)rd->len - 1,
                                               PyBUF_READ);
        if (mv != NULL) {
            res = PyObject_CallOneArg(st->q_loads, mv);
            if (Py_REFCNT(mv) > 1 && res != NULL) {
                /* a view of the record escaped: copy before the space is reused */
                Py_CLEAR(res);
                PyObject *b = PyBytes_FromStringAndSize((const char *)p + 1,
                                                        (Py_ssize_t)rd->len - 1);
                if (b != NULL) {
                    res = PyObject_CallOneArg(st->q_loads, b);
                    Py_DECREF(b);
                }
            }
            Py_DECREF(mv);
        }
        fm_ring_release(ring, rd);
        return res;
    }
    if (p[0] == REC_SPILL) {
        unsigned char desc[8 + FM_SHM_NAME_MAX];
        size_t dlen = rd->len - 1;
        if (dlen > sizeof desc)
            dlen = sizeof desc;
        memcpy(desc, p + 1, dlen);
        fm_ring_release(ring, rd);
        return spill_read(self, st, desc, dlen);
    }
    fm_ring_release(ring, rd);
    return record_corrupt(self, "unknown record kind");
}

/* decode_record_in, with the ring kept mapped meanwhile (an unpickle runs
 * Python code: another thread may move this object to another ring). */
static PyObject *
decode_record(FmQueueObject *self, fm_state *st, fm_ring *ring, fm_ring_read *rd)
{
    self->busy++;
    PyObject *res = decode_record_in(self, st, ring, rd);
    self->busy--;
    return res;
}

/* Take one record: FM_OK (rd, *ringp set), or -1 with Empty/an error set. */
static int
take_one(FmQueueObject *self, int block, int64_t deadline, fm_ring **ringp, fm_ring_read *rd)
{
    for (;;) {
        fm_ring *ring = self->cring;
        int st = fm_ring_take(ring, self_pid(), 0, 0, rd);
        if (st == FM_AGAIN && block && deadline > 0) {
            self->busy++;
            FM_BLOCKING(st, fm_ring_take(ring, self_pid(), deadline, fm_spin, rd));
            self->busy--;
        }
        switch (st) {
        case FM_OK:
            *ringp = ring;
            return 0;
        case FM_BROKEN:
            if (queue_next_cring(self, ring) < 0)
                return -1;
            continue;
        case FM_AGAIN:
        case FM_TIMEOUT:
            PyErr_SetNone(queue_state(self)->Empty);
            return -1;
        case FM_CORRUPT:
            /* the ring left the bad header where it is: every later get
             * raises this too */
            PyErr_Format(PyExc_ValueError,
                         "fastmp queue %R: corrupt ring: a record header holds no valid record",
                         (PyObject *)self);
            return -1;
        default:
            fm_set_error(st);
            return -1;
        }
    }
}

PyDoc_STRVAR(Queue_get_doc,
"get($self, block=True, timeout=None)\n--\n\n"
"Remove and return an item: wait for one (block, timeout, in seconds),\n"
"else raise queue.Empty.");

static PyObject *
Queue_get(FmQueueObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"block", "timeout"};
    PyObject *a[2];
    if (fm_parse_args("get", args, nargs, kwnames, names, 2, 0, a) < 0)
        return NULL;
    PyObject *block_obj = a[0], *timeout_obj = a[1];
    int block;
    int64_t deadline;
    fm_state *st = queue_begin(self, block_obj, timeout_obj, &block, &deadline);
    if (st == NULL)
        return NULL;
    fm_ring *ring;
    fm_ring_read rd;
    if (take_one(self, block, deadline, &ring, &rd) < 0)
        return NULL;
    count_taken(self, 1);
    return decode_record(self, st, ring, &rd);
}

PyDoc_STRVAR(Queue_get_many_doc,
"get_many($self, max_items=None, block=True, timeout=None)\n--\n\n"
"Remove and return a list of up to max_items items (None: all there are),\n"
"in order (beyond the stdlib).  Waits like get() for the first one (raising\n"
"queue.Empty), then takes what is there without waiting.");

static PyObject *
Queue_get_many(FmQueueObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"max_items", "block", "timeout", NULL};
    PyObject *max_obj = Py_None, *block_obj = NULL, *timeout_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|OOO:get_many", kwlist, &max_obj,
                                     &block_obj, &timeout_obj))
        return NULL;
    if (check_open(self) < 0)
        return NULL;
    Py_ssize_t max = PY_SSIZE_T_MAX;
    if (max_obj != Py_None) {
        max = PyNumber_AsSsize_t(max_obj, PyExc_OverflowError);
        if (max == -1 && PyErr_Occurred())
            return NULL;
        if (max < 1) {
            PyErr_SetString(PyExc_ValueError, "max_items must be at least 1");
            return NULL;
        }
    }
    int block;
    int64_t deadline;
    fm_state *st = queue_begin(self, block_obj, timeout_obj, &block, &deadline);
    if (st == NULL)
        return NULL;
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    fm_ring *ring;
    fm_ring_read rd;
    uint32_t taken = 0;
    if (take_one(self, block, deadline, &ring, &rd) < 0)
        goto error;
    for (;;) {
        taken++;
        PyObject *item = decode_record(self, st, ring, &rd);
        if (item == NULL)
            goto error;
        int r = PyList_Append(list, item);
        Py_DECREF(item);
        if (r < 0)
            goto error;
        if (PyList_GET_SIZE(list) >= max)
            break;
        /* what is there now, without waiting */
        int s;
        for (;;) {
            ring = self->cring;
            s = fm_ring_take(ring, self_pid(), 0, 0, &rd);
            if (s != FM_BROKEN)
                break;
            if (queue_next_cring(self, ring) < 0)
                goto error;
        }
        if (s != FM_OK)
            break;
    }
    count_taken(self, taken);
    return list;
error:
    count_taken(self, taken);
    Py_DECREF(list);
    return NULL;
}

/* ---------------------------------------------- the reader's descriptor */

/* Stop watching (a forked child's inherited watcher is the parent's: only
 * our copy of its socket is closed). */
static void
queue_unwatch(FmQueueObject *self)
{
    if (self->watch_pid == 0)   /* never watched (fd may not even be set yet) */
        return;
    if (self->watch_pid == self_pid())
        fm_doorbell_unwatch(&self->sh->bell, &self->watch);
    else
        fm_doorbell_forget(&self->watch);
    self->watch_pid = 0;
}

PyDoc_STRVAR(Queue_watch_fd_doc,
"_watch_fd($self, /)\n--\n\n"
"A file descriptor that reads ready while the queue holds an item (for\n"
"select, poll and multiprocessing.connection.wait; see csrc/core/doorbell.h).\n"
"Arms it on each call: call it before every wait.  Only what this call\n"
"sees and what is put after it make it ready.");

static PyObject *
Queue_watch_fd(FmQueueObject *self, PyObject *Py_UNUSED(ignored))
{
    uint32_t me = self_pid();
    if (self->watch_pid != 0 && self->watch_pid != me)
        queue_unwatch(self);        /* forked: the parent's watcher, not ours */
    if (self->watch_pid == 0) {
        int st = fm_doorbell_watch(&self->sh->bell, me, &self->watch);
        if (st == FM_AGAIN) {
            PyErr_Format(PyExc_OSError, "fastmp queue: more than %d readers wait on it",
                         FM_DOORBELL_SLOTS);
            return NULL;
        }
        if (st != FM_OK)
            return PyErr_SetFromErrno(PyExc_OSError);
        self->watch_pid = me;
    }
    fm_doorbell_drain(&self->watch);
    if ((int32_t)atomic_load_explicit(&self->sh->count, SEQ) > 0)
        fm_doorbell_self_ring(&self->sh->bell, &self->watch);
    return PyLong_FromLong(self->watch.fd);
}

static PyObject *
Queue_unwatch(FmQueueObject *self, PyObject *Py_UNUSED(ignored))
{
    queue_unwatch(self);
    Py_RETURN_NONE;
}

/* --------------------------------------------------------------- state */

/* qsize/empty/full: the count, with what dead producers left in it
 * taken off first (a scan of the tally slots; a liveness check only for
 * a process with a put in flight). */
static int32_t
count_now(FmQueueObject *self)
{
    reconcile_dead(self->sh, 0);
    return (int32_t)atomic_load_explicit(&self->sh->count, ACQ);
}

static PyObject *
Queue_qsize(FmQueueObject *self, PyObject *Py_UNUSED(ignored))
{
    int32_t c = count_now(self);
    return PyLong_FromLong(c < 0 ? 0 : c);
}

static PyObject *
Queue_empty(FmQueueObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->kind == FM_QUEUE_KIND_SIMPLE && check_open(self) < 0)
        return NULL;
    int32_t c = count_now(self);
    return PyBool_FromLong(c <= 0);
}

static PyObject *
Queue_full(FmQueueObject *self, PyObject *Py_UNUSED(ignored))
{
    uint32_t max = self->sh->maxsize;
    int32_t c = count_now(self);
    return PyBool_FromLong(max != 0 && c >= (int32_t)max);
}

PyDoc_STRVAR(Queue_close_doc,
"close($self, /)\n--\n\n"
"This object (in this process) will not be used again: later calls raise.\n"
"Items already put stay in the queue for the other processes.");

static PyObject *
Queue_close(FmQueueObject *self, PyObject *Py_UNUSED(ignored))
{
    self->closed = 1;
    queue_unwatch(self);
    Py_RETURN_NONE;
}

static PyObject *
Queue_get_closed(FmQueueObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->closed);
}

static PyObject *
Queue_get_maxsize(FmQueueObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLong(self->sh->maxsize);
}

PyDoc_STRVAR(Queue_task_done_doc,
"_task_done($self, /)\n--\n\n"
"JoinableQueue: one item taken with get() has been processed.  ValueError\n"
"when called more times than items were put.");

static PyObject *
Queue_task_done(FmQueueObject *self, PyObject *Py_UNUSED(ignored))
{
    fm_queue_shared *sh = self->sh;
    uint32_t u = atomic_load_explicit(&sh->unfinished, RLX);
    for (;;) {
        if (u == 0) {
            PyErr_SetString(PyExc_ValueError, "task_done() called too many times");
            return NULL;
        }
        if (atomic_compare_exchange_weak_explicit(&sh->unfinished, &u, u - 1, SEQ, RLX))
            break;
    }
    if (u == 1 && atomic_load_explicit(&sh->join_sleepers, SEQ) > 0)
        fm_futex_wake(&sh->unfinished, INT32_MAX);
    Py_RETURN_NONE;
}

static int
join_wait_once(fm_queue_shared *sh, int64_t spin)
{
    uint32_t u = atomic_load_explicit(&sh->unfinished, ACQ);
    if (u == 0)
        return FM_OK;
    if (spin > 0 && fm_spin_while(&sh->unfinished, u, spin) == 0)
        return FM_OK;
    atomic_fetch_add_explicit(&sh->join_sleepers, 1, SEQ);
    int st = FM_OK;
    u = atomic_load_explicit(&sh->unfinished, SEQ);
    if (u != 0)
        st = fm_futex_wait(&sh->unfinished, u, FM_FOREVER);
    atomic_fetch_sub_explicit(&sh->join_sleepers, 1, RLX);
    if (st == FM_EINTR)         /* a slice: a producer killed in a put? */
        reconcile_dead(sh, 0);
    if (atomic_load_explicit(&sh->unfinished, ACQ) == 0)
        return FM_OK;
    return st == FM_OK ? FM_EINTR : st;    /* changed, not zero: look again */
}

PyDoc_STRVAR(Queue_join_doc,
"_join($self, /)\n--\n\n"
"JoinableQueue: wait until every item put has been marked task_done().");

static PyObject *
Queue_join(FmQueueObject *self, PyObject *Py_UNUSED(ignored))
{
    int st;
    FM_BLOCKING(st, join_wait_once(self->sh, fm_spin));
    if (st == FM_PYERR)
        return NULL;
    if (st != FM_OK)
        return fm_set_error(st);
    Py_RETURN_NONE;
}

static PyObject *
Queue_unfinished(FmQueueObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromUnsignedLong(atomic_load_explicit(&self->sh->unfinished, ACQ));
}

/* Test hook: claim a record in the ring, write half of it and return
 * without committing (a process killed after this is "killed in the middle
 * of a put").  The item count is not touched. */
static PyObject *
Queue_debug_stall_put(FmQueueObject *self, PyObject *Py_UNUSED(ignored))
{
    fm_ring_claim c;
    int st = fm_ring_claim_space(self->pring, 64, self_pid(), 0, 0, &c);
    if (st != FM_OK)
        return fm_set_error(st);
    memset(c.data, 'x', 32);
    Py_RETURN_NONE;
}

/* Test hook: commit a record holding exactly `payload` (kind byte
 * included) and count it as an item, as shared memory scribbled on would
 * hold; unbounded queues only. */
static PyObject *
Queue_debug_put_raw(FmQueueObject *self, PyObject *arg)
{
    Py_buffer view;
    if (self->sh->maxsize != 0) {
        PyErr_SetString(PyExc_ValueError, "_debug_put_raw: unbounded queues only");
        return NULL;
    }
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    fm_ring *ring;
    fm_ring_claim c;
    count_put(self, 1);         /* counted first, as put does */
    int rc = claim_record(self, (size_t)view.len, &ring, &c);
    if (rc == 0) {
        memcpy(c.data, view.buf, (size_t)view.len);
        fm_ring_commit(ring, &c);
    }
    else
        count_taken(self, 1);
    PyBuffer_Release(&view);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* Test hook: the raw count and the tally slots in use, as
 * (count, [(pid, pending), ...]). */
static PyObject *
Queue_debug_tallies(FmQueueObject *self, PyObject *Py_UNUSED(ignored))
{
    fm_queue_shared *sh = self->sh;
    PyObject *list = PyList_New(0);
    for (int i = 0; list != NULL && i < QUEUE_MAX_PRODUCERS; i++) {
        uint64_t w = atomic_load_explicit(&sh->tallies[i].word, ACQ);
        if (w == 0)
            continue;
        PyObject *t = Py_BuildValue("(Ii)", fm_sid_pid(TALLY_SID(w)), (int)TALLY_PENDING(w));
        if (t == NULL || PyList_Append(list, t) < 0)
            Py_CLEAR(list);
        Py_XDECREF(t);
    }
    if (list == NULL)
        return NULL;
    int32_t c = (int32_t)atomic_load_explicit(&sh->count, ACQ);
    PyObject *r = Py_BuildValue("(iO)", (int)c, list);
    Py_DECREF(list);
    return r;
}

/* Test hook: the names of the queue's live rings, oldest first. */
static PyObject *
Queue_debug_rings(FmQueueObject *self, PyObject *Py_UNUSED(ignored))
{
    if (queue_lock(self) < 0)
        return NULL;
    PyObject *list = PyList_New(0);
    for (uint32_t i = 0; list != NULL && i < self->sh->nrings && i < QUEUE_MAX_RINGS; i++) {
        char name[FM_SHM_NAME_MAX];
        memcpy(name, self->sh->rings[i].name, sizeof name);
        name[sizeof name - 1] = '\0';
        PyObject *o = PyUnicode_FromString(name);
        if (o == NULL || PyList_Append(list, o) < 0)
            Py_CLEAR(list);
        Py_XDECREF(o);
    }
    queue_unlock(self);
    return list;
}

/* Test hook: grow the queue as queue_grow does, then die (SIGKILL) after
 * listing the new ring and before sealing the current one, holding the
 * queue's lock: a grower killed at the worst moment. */
static PyObject *
Queue_debug_grow_and_die(FmQueueObject *self, PyObject *Py_UNUSED(ignored))
{
    fm_queue_shared *sh = self->sh;
    char created[FM_SHM_NAME_MAX] = "";
    fm_ring *ring;
    if (fm_segment_name_reserve(queue_state(self), created) < 0)
        return NULL;
    if (queue_lock(self) < 0)
        return NULL;
    if (sh->nrings >= QUEUE_MAX_RINGS ||
        ring_create(self, fm_ring_capacity(self->pring) * 2, &ring, created) < 0) {
        queue_unlock(self);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_MemoryError, "fastmp queue: too many rings in use");
        return NULL;
    }
    fm_ring_entry *e = &sh->rings[sh->nrings];
    e->gen = sh->rings[sh->nrings - 1].gen + 1;
    memcpy(e->name, created, FM_SHM_NAME_MAX);
    atomic_thread_fence(REL);
    sh->nrings++;
    atomic_store_explicit(&sh->newest_gen, e->gen, REL);
    kill(getpid(), SIGKILL);
    for (;;)
        pause();
}

/* ------------------------------------------------------ life and state */

#define QUEUE_OF(hp) ((FmQueueObject *)((char *)(hp) - offsetof(FmQueueObject, h)))

/* Called before the last reference of all processes goes: take what is
 * left (unlinking the spill segments of items nobody got), then unlink the
 * rings.  Runs in dealloc or at exit: keeps any exception already set. */
static void
queue_before_last_release(fm_handle *h)
{
    FmQueueObject *self = QUEUE_OF(h);
    fm_queue_shared *sh = self->sh;
    fm_state *st = fm_state_of_type(Py_TYPE(self));
    PyObject *exc = fm_exc_take();
    if (st == NULL)
        PyErr_Clear();
    uint32_t me = self_pid();
    for (uint32_t i = 0; i < sh->nrings && i < QUEUE_MAX_RINGS; i++) {
        fm_segment *seg;
        char rname[FM_SHM_NAME_MAX];
        memcpy(rname, sh->rings[i].name, sizeof rname);
        rname[sizeof rname - 1] = '\0';
        if (fm_segment_attach(rname, &seg) != FM_OK)
            continue;
        if (fm_ring_check(seg->base, seg->size) != FM_OK) {
            fm_segment_release(seg);
            continue;
        }
        fm_ring *ring = (fm_ring *)seg->base;
        fm_ring_read rd;
        int s;
        while ((s = fm_ring_take(ring, me, 0, 0, &rd)) == FM_OK) {
            const unsigned char *p = rd.data;
            char name[FM_SHM_NAME_MAX];
            if (rd.len > 9 && p[0] == REC_SPILL && spill_desc_name(p + 9, rd.len - 9, name))
                spill_discard(st, name);
            fm_ring_release(ring, &rd);
        }
        fm_segment_release(seg);
    }
    for (uint32_t i = 0; i < sh->nrings && i < QUEUE_MAX_RINGS; i++) {
        if (shm_unlink(sh->rings[i].name) == 0)
            fm_segment_gone(st, sh->rings[i].name);
    }
    sh->nrings = 0;
    fm_exc_restore(exc);
}

/* fm_handle.holder_changed: record or forget this process's reference. */
static void
queue_holder_changed(fm_handle *h, int joined)
{
    fm_queue_shared *sh = h->ptr;
    uint32_t me = self_pid();
    uint32_t want = joined ? 0 : me, put = joined ? me : 0;
    for (int i = 0; i < QUEUE_MAX_HOLDERS; i++) {
        uint32_t v = atomic_load_explicit(&sh->holders[i], RLX);
        if (v == want &&
            atomic_compare_exchange_strong_explicit(&sh->holders[i], &v, put, SEQ, RLX))
            return;
    }
    if (joined)
        atomic_store_explicit(&sh->holders_overflow, 1, SEQ);
}

/* fm_handle.only_dead_holders_left: this process has just dropped its
 * reference, not the last; 1 if every reference left is recorded and
 * belongs to a process that no longer exists. */
static int
queue_only_dead_holders_left(fm_handle *h)
{
    fm_queue_shared *sh = h->ptr;
    if (atomic_load_explicit(&sh->holders_overflow, SEQ))
        return 0;
    uint32_t refs = fm_block_refs(h->seg, h->offset), recorded = 0;
    for (int i = 0; i < QUEUE_MAX_HOLDERS; i++) {
        uint32_t pid = atomic_load_explicit(&sh->holders[i], SEQ);
        if (pid == 0)
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            return 0;           /* alive (or cannot tell) */
        recorded++;
    }
    return recorded > 0 && recorded == refs;
}

static int
queue_init_object(FmQueueObject *self, int kind)
{
    self->watch.fd = -1;
    self->kind = kind;
    self->sh = self->h.ptr;
    self->h.before_last_release = queue_before_last_release;
    self->h.holder_changed = queue_holder_changed;
    self->h.only_dead_holders_left = queue_only_dead_holders_left;
    queue_holder_changed(&self->h, 1);
    fm_queue_shared *sh = self->sh;
    /* producers start at the newest ring, consumers at the oldest (it may
     * still hold items) */
    if (queue_lock(self) < 0)
        return -1;
    int rc = -1;
    if (sh->nrings == 0 || sh->nrings > QUEUE_MAX_RINGS) {
        fm_set_error(FM_CORRUPT);
        goto done;
    }
    if (ring_attach(self, sh->rings[sh->nrings - 1].name, &self->pring) < 0 ||
        ring_attach(self, sh->rings[0].name, &self->cring) < 0)
        goto done;
    seal_left_open(sh);
    self->pgen = sh->rings[sh->nrings - 1].gen;
    self->cgen = sh->rings[0].gen;
    rc = 0;
done:
    queue_unlock(self);
    return rc;
}

/* fastmp.queues sets the pickler hooks on import; a queue needs them. */
static int
hooks_ready(fm_state *st)
{
    if (st->q_dumps != NULL && st->q_loads != NULL)
        return 0;
    PyErr_SetString(PyExc_RuntimeError, "import fastmp.queues before making a queue");
    return -1;
}

static PyObject *
Queue_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"maxsize", "kind", "ctx", NULL};
    PyObject *maxsize_obj = NULL, *ctx = NULL;
    int kind = FM_QUEUE_KIND_QUEUE;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O$iO:Queue", kwlist, &maxsize_obj, &kind,
                                     &ctx))
        return NULL;
    if (kind < FM_QUEUE_KIND_QUEUE || kind > FM_QUEUE_KIND_SIMPLE) {
        PyErr_SetString(PyExc_ValueError, "unknown queue kind");
        return NULL;
    }
    long long maxsize = 0;
    if (maxsize_obj != NULL) {
        maxsize = PyLong_AsLongLong(maxsize_obj);
        if (maxsize == -1 && PyErr_Occurred())
            return NULL;
    }
    /* The stdlib: maxsize <= 0 means unbounded (its semaphore gets
     * SEM_VALUE_MAX); so does fastmp, and caps the rest alike. */
    if (maxsize <= 0)
        maxsize = 0;
    if (maxsize > QUEUE_MAXSIZE_MAX)
        maxsize = QUEUE_MAXSIZE_MAX;
    fm_state *st = fm_state_of_type(type);
    if (st == NULL || hooks_ready(st) < 0)
        return NULL;
    FmQueueObject *self = (FmQueueObject *)fm_shared_new(
        st, type, offsetof(FmQueueObject, h), sizeof(fm_queue_shared), FM_KIND_QUEUE);
    if (self == NULL)
        return NULL;
    fm_queue_shared *sh = self->h.ptr;
    self->sh = sh;
    fm_mutex_init(&sh->lock);
    if (fm_doorbell_init(&sh->bell) != FM_OK) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(self);
        return NULL;
    }
    sh->maxsize = (uint32_t)maxsize;
    sh->kind = (uint32_t)kind;
    fm_ring *ring;
    char name[FM_SHM_NAME_MAX];
    if (fm_segment_name_reserve(st, name) < 0)
        goto error;
    if (ring_create(self, QUEUE_RING_INITIAL, &ring, name) < 0) {
        fm_segment_name_unused(st, name);
        goto error;
    }
    sh->rings[0].gen = 1;
    memcpy(sh->rings[0].name, name, FM_SHM_NAME_MAX);
    sh->nrings = 1;
    atomic_store_explicit(&sh->newest_gen, 1, REL);
    if (queue_init_object(self, kind) < 0)
        goto error;
    return (PyObject *)self;
error:
    Py_DECREF(self);
    return NULL;
}

static void
Queue_dealloc(PyObject *op)
{
    FmQueueObject *self = (FmQueueObject *)op;
    fm_dealloc_begin(op);
    queue_unwatch(self);
    fm_handle_release(&self->h);
    /* the last local user of a ring unmaps it */
    self->pring = self->cring = NULL;
    for (uint32_t i = 0; i < self->nheld; i++)
        fm_segment_release(self->held[i]);
    PyMem_Free(self->held);
    self->held = NULL;
    self->nheld = self->held_cap = 0;
    fm_dealloc_end(op);
}

PyDoc_STRVAR(Queue_state_doc,
"_fm_state($self, /)\n--\n\n"
"What another process needs to attach this queue: (segment, offset, kind).");

static PyObject *
Queue_state(FmQueueObject *self, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("(NKi)", fm_handle_name(&self->h), (unsigned long long)self->h.offset,
                         self->kind);
}

PyDoc_STRVAR(Queue_attach_doc, FM_ATTACH_DOC);

static PyObject *
Queue_attach(PyObject *type, PyObject *state)
{
    PyTypeObject *tp = (PyTypeObject *)type;
    if (fm_check_state(state, 3, 1) < 0)
        return NULL;
    int kind = PyLong_AsLong(PyTuple_GET_ITEM(state, 2));
    if (kind == -1 && PyErr_Occurred())
        return NULL;
    if (kind < FM_QUEUE_KIND_QUEUE || kind > FM_QUEUE_KIND_SIMPLE) {
        PyErr_SetString(PyExc_ValueError, "unknown queue kind");
        return NULL;
    }
    fm_state *st = fm_state_of_type(tp);
    if (st == NULL || hooks_ready(st) < 0)
        return NULL;
    FmQueueObject *self = (FmQueueObject *)fm_attach_new(
        st, tp, state, offsetof(FmQueueObject, h), FM_KIND_QUEUE);
    if (self == NULL)
        return NULL;
    if (queue_init_object(self, kind) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    if (self->sh->kind != (uint32_t)kind) {
        PyErr_SetString(PyExc_ValueError, "queue kind does not match the shared object");
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyMethodDef Queue_methods[] = {
    {"put", (PyCFunction)(void (*)(void))Queue_put, METH_FASTCALL | METH_KEYWORDS,
     Queue_put_doc},
    {"get", (PyCFunction)(void (*)(void))Queue_get, METH_FASTCALL | METH_KEYWORDS,
     Queue_get_doc},
    {"put_many", (PyCFunction)(void (*)(void))Queue_put_many, METH_VARARGS | METH_KEYWORDS,
     Queue_put_many_doc},
    {"get_many", (PyCFunction)(void (*)(void))Queue_get_many, METH_VARARGS | METH_KEYWORDS,
     Queue_get_many_doc},
    {"qsize", (PyCFunction)Queue_qsize, METH_NOARGS,
     "qsize($self, /)\n--\n\nThe number of items in the queue (exact: counted in shared "
     "memory)."},
    {"empty", (PyCFunction)Queue_empty, METH_NOARGS,
     "empty($self, /)\n--\n\nTrue if the queue holds no item."},
    {"full", (PyCFunction)Queue_full, METH_NOARGS,
     "full($self, /)\n--\n\nTrue if a bounded queue holds maxsize items."},
    {"close", (PyCFunction)Queue_close, METH_NOARGS, Queue_close_doc},
    {"_task_done", (PyCFunction)Queue_task_done, METH_NOARGS, Queue_task_done_doc},
    {"_join", (PyCFunction)Queue_join, METH_NOARGS, Queue_join_doc},
    {"_unfinished", (PyCFunction)Queue_unfinished, METH_NOARGS, NULL},
    {"_debug_stall_put", (PyCFunction)Queue_debug_stall_put, METH_NOARGS, NULL},
    {"_debug_tallies", (PyCFunction)Queue_debug_tallies, METH_NOARGS, NULL},
    {"_debug_put_raw", (PyCFunction)Queue_debug_put_raw, METH_O, NULL},
    {"_debug_rings", (PyCFunction)Queue_debug_rings, METH_NOARGS, NULL},
    {"_debug_grow_and_die", (PyCFunction)Queue_debug_grow_and_die, METH_NOARGS, NULL},
    {"_watch_fd", (PyCFunction)Queue_watch_fd, METH_NOARGS, Queue_watch_fd_doc},
    {"_unwatch", (PyCFunction)Queue_unwatch, METH_NOARGS,
     "_unwatch($self, /)\n--\n\nClose the descriptor _watch_fd() made, if any."},
    {"_fm_state", (PyCFunction)Queue_state, METH_NOARGS, Queue_state_doc},
    {"_fm_attach", Queue_attach, METH_O | METH_CLASS, Queue_attach_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Queue_getset[] = {
    {"_closed", (getter)Queue_get_closed, NULL, "close() was called on this object", NULL},
    {"_maxsize", (getter)Queue_get_maxsize, NULL, "maxsize (0: unbounded)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

FM_WEAKREF_MEMBERS(FmQueueObject);

static PyType_Slot Queue_slots[] = {
    {Py_tp_new, Queue_new},
    {Py_tp_dealloc, Queue_dealloc},
    {Py_tp_traverse, fm_traverse_type},
    {Py_tp_methods, Queue_methods},
    {Py_tp_getset, Queue_getset},
    {Py_tp_members, FmQueueObject_members},
    {Py_tp_doc, "Queue(maxsize=0, *, kind=0, ctx=None)\n--\n\n"
                "A queue in shared memory (fastmp.queues subclasses it)."},
    {0, NULL},
};

static PyType_Spec Queue_spec = {
    .name = "fastmp._core.Queue",
    .basicsize = sizeof(FmQueueObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Queue_slots,
};

/* ---------------------------------------------------- module functions */

PyDoc_STRVAR(set_queue_hooks_doc,
"_set_queue_hooks($module, dumps, loads, /)\n--\n\n"
"Set the pickler queues use for what is not plain data (the\n"
"ForkingPickler's dumps) and the unpickler.");

static PyObject *
set_queue_hooks(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (fm_check_nargs("_set_queue_hooks", nargs, 2, 2) < 0)
        return NULL;
    for (int i = 0; i < 2; i++)
        if (!PyCallable_Check(args[i])) {
            PyErr_SetString(PyExc_TypeError, "_set_queue_hooks() takes callables");
            return NULL;
        }
    fm_state *st = fm_state_of_module(module);
    Py_INCREF(args[0]);
    Py_XSETREF(st->q_dumps, args[0]);
    Py_INCREF(args[1]);
    Py_XSETREF(st->q_loads, args[1]);
    Py_RETURN_NONE;
}

PyMethodDef fm_queue_module_methods[] = {
    {"_set_queue_hooks", (PyCFunction)(void (*)(void))set_queue_hooks, METH_FASTCALL,
     set_queue_hooks_doc},
    {NULL, NULL, 0, NULL},
};

int
fm_queue_add_types(PyObject *module, fm_state *st)
{
    PyObject *queue = PyImport_ImportModule("queue");
    if (queue == NULL)
        return -1;
    st->Empty = PyObject_GetAttrString(queue, "Empty");
    st->Full = PyObject_GetAttrString(queue, "Full");
    Py_DECREF(queue);
    if (st->Empty == NULL || st->Full == NULL)
        return -1;
    return fm_add_type(module, &Queue_spec, NULL, &st->QueueType);
}
