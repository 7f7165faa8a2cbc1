/* A one-way byte stream in shared memory: the channel of a Pipe.  No
 * Python.h here.
 *
 * A pipe carries a sequence of messages from the writers of one end to the
 * readers of the other, in order, and a message may be far larger than any
 * buffer (the stdlib's pipe streams it through the kernel's 64 KiB).  So
 * the channel is a circular buffer of bytes, not of records: a message is
 * a length header and its bytes, written and read in as many pieces as the
 * buffer needs, and both sides copy at once while a large message flows.
 * Whole messages are kept apart by two robust mutexes (prims.h): a writer
 * holds `wlock` for all of its message, a reader holds `rlock` for all of
 * its message; a process killed holding one leaves it to be recovered.
 * Inside the locks there is one producer and one consumer: plain loads and
 * stores of two positions, no compare-and-swap.
 *
 * Layout: an fm_stream header at the start of a mapping, then `capacity`
 * data bytes (a power of two).  Positions are 64-bit byte counts that only
 * grow; position p is data[p & (capacity - 1)].  `head` (written bytes) is
 * the writer's, `tail` (read bytes) the reader's, each on its own cache
 * line with the sequence word its waiters sleep on (prims.h fm_seq, bumped
 * after each move, a wake-up syscall only when someone sleeps).
 *
 * Shared memory is untrusted: head - tail is checked against the capacity
 * on every look, and a stream found out of bounds reports FM_CORRUPT. */
#ifndef FM_STREAM_H
#define FM_STREAM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "prims.h"
#include "status.h"

#define FM_STREAM_MAGIC 0x4d525453u         /* "STRM" */
#define FM_STREAM_MIN_CAPACITY 4096u
#define FM_STREAM_LINE 64

typedef struct {
    uint32_t magic;
    uint32_t _pad0;
    uint64_t capacity;
    fm_mutex wlock;
    fm_mutex rlock;
    char _pad1[FM_STREAM_LINE - 16 - 2 * sizeof(fm_mutex)];
    _Atomic uint64_t head;          /* bytes written, published (release) */
    fm_seq written;                 /* bumped after head moves: readers sleep here */
    char _pad2[FM_STREAM_LINE - sizeof(uint64_t) - sizeof(fm_seq)];
    _Atomic uint64_t tail;          /* bytes read */
    fm_seq read;                    /* bumped after tail moves: writers sleep here */
    char _pad3[FM_STREAM_LINE - sizeof(uint64_t) - sizeof(fm_seq)];
} fm_stream;

/* Bytes a mapping needs for a stream of `capacity` data bytes. */
size_t fm_stream_bytes(size_t capacity);
/* Initialize a stream over zeroed memory of fm_stream_bytes(capacity)
 * bytes; capacity a power of two >= FM_STREAM_MIN_CAPACITY.  FM_OK or
 * FM_CORRUPT (bad capacity). */
int fm_stream_init(fm_stream *s, size_t capacity);
/* Check that `mem` (of `size` mapped bytes) holds a stream: FM_OK/FM_CORRUPT. */
int fm_stream_check(const void *mem, size_t size);

/* Bytes waiting to be read; (uint64_t)-1 when the positions are corrupt. */
uint64_t fm_stream_avail(fm_stream *s);
/* Bytes of room; (uint64_t)-1 when the positions are corrupt. */
uint64_t fm_stream_room(fm_stream *s);

/* Copy up to len bytes in (the writer, wlock held): returns how many went
 * in (0 when full), publishes them (release, seq_cst) and wakes sleeping
 * readers.  Two pieces (a header and its payload) in one move when both
 * fit: fm_stream_put2 returns 1 then, else 0 and writes nothing. */
size_t fm_stream_put(fm_stream *s, const void *src, size_t len);
int fm_stream_put2(fm_stream *s, const void *a, size_t alen, const void *b, size_t blen);
/* Copy up to len bytes out (the reader, rlock held): returns how many came
 * out (0 when empty) and frees their room, waking sleeping writers.
 * fm_stream_peek copies without consuming. */
size_t fm_stream_get(fm_stream *s, void *dst, size_t len);
size_t fm_stream_peek(fm_stream *s, void *dst, size_t len);
/* Consume up to len bytes without copying them. */
size_t fm_stream_skip(fm_stream *s, size_t len);

/* Wait until something can be read (FM_OK), or room (FM_OK), the deadline
 * (FM_TIMEOUT), a wait slice or signal (FM_EINTR: check, call again with
 * no spin) or corrupt positions (FM_CORRUPT).  Spin for spin_ns first. */
int fm_stream_wait_avail(fm_stream *s, int64_t deadline_ns, int64_t spin_ns);
int fm_stream_wait_room(fm_stream *s, int64_t deadline_ns, int64_t spin_ns);
/* Wake every sleeper on both sides (a peer closed: they look again). */
void fm_stream_wake_all(fm_stream *s);

#endif
