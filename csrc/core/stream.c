/* stream.c: a one-way byte stream in shared memory (see stream.h). */
#include "stream.h"
#include "atomics.h"
#include "glibc_compat.h"
#include "futex.h"

#include <string.h>

#define BAD_COUNT ((uint64_t)-1)

_Static_assert(sizeof(fm_stream) == 3 * FM_STREAM_LINE, "fm_stream header: three cache lines");

static inline unsigned char *
data_of(fm_stream *s)
{
    return (unsigned char *)(s + 1);
}

size_t
fm_stream_bytes(size_t capacity)
{
    return sizeof(fm_stream) + capacity;
}

int
fm_stream_init(fm_stream *s, size_t capacity)
{
    if (capacity < FM_STREAM_MIN_CAPACITY || (capacity & (capacity - 1)) != 0)
        return FM_CORRUPT;
    s->capacity = capacity;
    fm_mutex_init(&s->wlock);
    fm_mutex_init(&s->rlock);
    atomic_store_explicit(&s->head, 0, RLX);
    atomic_store_explicit(&s->tail, 0, RLX);
    fm_seq_init(&s->written);
    fm_seq_init(&s->read);
    atomic_thread_fence(memory_order_release);
    s->magic = FM_STREAM_MAGIC;
    return FM_OK;
}

int
fm_stream_check(const void *mem, size_t size)
{
    const fm_stream *s = mem;
    if (size < sizeof(fm_stream) || s->magic != FM_STREAM_MAGIC)
        return FM_CORRUPT;
    uint64_t cap = s->capacity;
    if (cap < FM_STREAM_MIN_CAPACITY || (cap & (cap - 1)) != 0 ||
        cap > size - sizeof(fm_stream))
        return FM_CORRUPT;
    return FM_OK;
}

/* The capacity is read once at attach (fm_stream_check) and never written
 * again; positions are re-read and checked on every look. */
uint64_t
fm_stream_avail(fm_stream *s)
{
    uint64_t tail = atomic_load_explicit(&s->tail, ACQ);
    uint64_t head = atomic_load_explicit(&s->head, SEQ);
    uint64_t n = head - tail;
    return n > s->capacity ? BAD_COUNT : n;
}

uint64_t
fm_stream_room(fm_stream *s)
{
    uint64_t head = atomic_load_explicit(&s->head, RLX);
    uint64_t tail = atomic_load_explicit(&s->tail, ACQ);
    uint64_t n = head - tail;
    return n > s->capacity ? BAD_COUNT : s->capacity - n;
}

/* Copy len bytes at position pos in, wrapping at the end of the data. */
static void
copy_in(fm_stream *s, uint64_t pos, const unsigned char *src, size_t len)
{
    size_t cap = (size_t)s->capacity;
    size_t at = (size_t)(pos & (cap - 1));
    size_t first = cap - at < len ? cap - at : len;
    memcpy(data_of(s) + at, src, first);
    if (len > first)
        memcpy(data_of(s), src + first, len - first);
}

static void
copy_out(fm_stream *s, uint64_t pos, unsigned char *dst, size_t len)
{
    size_t cap = (size_t)s->capacity;
    size_t at = (size_t)(pos & (cap - 1));
    size_t first = cap - at < len ? cap - at : len;
    memcpy(dst, data_of(s) + at, first);
    if (len > first)
        memcpy(dst + first, data_of(s), len - first);
}

static void
publish(fm_stream *s, uint64_t head)
{
    /* seq_cst: a doorbell watcher's registration and this store are seen in
     * one order by both sides (doorbell.h) */
    atomic_store_explicit(&s->head, head, SEQ);
    fm_seq_bump_all(&s->written);
}

size_t
fm_stream_put(fm_stream *s, const void *src, size_t len)
{
    uint64_t room = fm_stream_room(s);
    if (room == BAD_COUNT || room == 0 || len == 0)
        return 0;
    size_t n = len < room ? len : (size_t)room;
    uint64_t head = atomic_load_explicit(&s->head, RLX);
    copy_in(s, head, src, n);
    publish(s, head + n);
    return n;
}

int
fm_stream_put2(fm_stream *s, const void *a, size_t alen, const void *b, size_t blen)
{
    uint64_t room = fm_stream_room(s);
    if (room == BAD_COUNT || room < alen || room - alen < blen)
        return 0;
    uint64_t head = atomic_load_explicit(&s->head, RLX);
    copy_in(s, head, a, alen);
    if (blen > 0)
        copy_in(s, head + alen, b, blen);
    publish(s, head + alen + blen);
    return 1;
}

static size_t
take(fm_stream *s, void *dst, size_t len, int consume)
{
    uint64_t avail = fm_stream_avail(s);
    if (avail == BAD_COUNT || avail == 0 || len == 0)
        return 0;
    size_t n = len < avail ? len : (size_t)avail;
    uint64_t tail = atomic_load_explicit(&s->tail, RLX);
    if (dst != NULL)
        copy_out(s, tail, dst, n);
    if (consume) {
        atomic_store_explicit(&s->tail, tail + n, REL);
        fm_seq_bump_all(&s->read);
    }
    return n;
}

size_t
fm_stream_get(fm_stream *s, void *dst, size_t len)
{
    return take(s, dst, len, 1);
}

size_t
fm_stream_peek(fm_stream *s, void *dst, size_t len)
{
    return take(s, dst, len, 0);
}

size_t
fm_stream_skip(fm_stream *s, size_t len)
{
    return take(s, NULL, len, 1);
}

static int
wait_for(fm_stream *s, fm_seq *q, uint64_t (*count)(fm_stream *), int64_t deadline_ns,
         int64_t spin_ns)
{
    for (;;) {
        uint32_t seen = fm_seq_read(q);
        uint64_t n = count(s);
        if (n == BAD_COUNT)
            return FM_CORRUPT;
        if (n > 0)
            return FM_OK;
        int st = fm_seq_wait(q, seen, deadline_ns, spin_ns);
        if (st != FM_OK) {
            n = count(s);
            if (n == BAD_COUNT)
                return FM_CORRUPT;
            return n > 0 ? FM_OK : st;
        }
    }
}

int
fm_stream_wait_avail(fm_stream *s, int64_t deadline_ns, int64_t spin_ns)
{
    return wait_for(s, &s->written, fm_stream_avail, deadline_ns, spin_ns);
}

int
fm_stream_wait_room(fm_stream *s, int64_t deadline_ns, int64_t spin_ns)
{
    return wait_for(s, &s->read, fm_stream_room, deadline_ns, spin_ns);
}

void
fm_stream_wake_all(fm_stream *s)
{
    fm_seq_bump_all(&s->written);
    fm_seq_bump_all(&s->read);
}
