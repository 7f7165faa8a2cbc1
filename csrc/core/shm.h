/* Shared-memory segments and the small-block allocator inside them.
 * No Python.h here.
 *
 * Segments are POSIX shm objects named FM_SHM_PREFIX + 24 random hex digits,
 * mode 0600.  A segment is made unnamed (O_TMPFILE in /dev/shm), its pages
 * reserved, and only then linked under its name, so a full /dev/shm is an
 * error at creation (never SIGBUS later) and a process killed half-way
 * leaves no empty file; shm_open with O_EXCL where O_TMPFILE is missing.  Every process keeps one table of the
 * segments it has mapped (the mapping is a per-process fact, so the table is
 * per process, not per interpreter); a child started by fork inherits the
 * table, one started by spawn or forkserver attaches by name.
 *
 * Arenas: a process allocates small blocks from an arena segment of
 * FM_ARENA_SIZE bytes, so ten thousand locks cost one file, not ten thousand.
 * A block begins with an fm_block_header; its payload is 16-byte aligned.
 * Blocks carry a reference count shared by all processes: a block goes back
 * on its arena's free list only when no process uses it any more.  Free
 * lists are lock-free stacks of offsets with a 32-bit tag against ABA. */
#ifndef FM_SHM_H
#define FM_SHM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "status.h"

#define FM_SHM_PREFIX "/fastmp-"
#define FM_SHM_NAME_MAX 48
#define FM_ARENA_SIZE (1u << 20)
#define FM_ARENA_MAGIC 0x504d4146u  /* "FAMP" */
#define FM_BLOCK_MAGIC 0xb10cu
#define FM_BLOCK_MIN_SHIFT 6        /* smallest block: 64 bytes */
#define FM_BLOCK_CLASSES 11         /* 64 B .. 64 KiB */
/* Huge blocks: a request too large for the biggest class gets a segment of
 * its own, headed like an arena (magic FM_HUGE_MAGIC) and holding one block
 * of class FM_BLOCK_HUGE at offset FM_HUGE_OFFSET.  Same header, refcount
 * and payload API as a small block. */
#define FM_HUGE_MAGIC 0x47484d46u   /* "FMHG" */
#define FM_BLOCK_HUGE 0xffffu
#define FM_HUGE_OFFSET 256u
#define FM_HUGE_MAX ((size_t)1 << 44)   /* larger requests: FM_NOMEM */

typedef struct fm_segment {
    char name[FM_SHM_NAME_MAX];
    unsigned char *base;
    size_t size;
    pid_t creator;          /* process that created (and will unlink) it */
    int unlinked;
    int alloc_arena;        /* this process allocates blocks from it */
    uint64_t users;         /* local users: create and each attach count one */
    struct fm_segment *next;
} fm_segment;

typedef struct {
    _Atomic uint32_t refs;  /* processes using the block; 0 = free */
    uint16_t cls;           /* size class */
    uint16_t magic;
    _Atomic uint32_t next;  /* free-list link: offset of the next free block */
    uint32_t tag;           /* what the block holds (FM_KIND_*), for checks */
} fm_block_header;

typedef struct {
    uint32_t magic;
    uint32_t version;
    uint64_t size;
    int32_t creator;
    uint32_t _pad;
    _Atomic uint64_t bump;                       /* next never-used offset */
    _Atomic uint64_t free_head[FM_BLOCK_CLASSES];  /* (tag << 32) | offset */
} fm_arena_header;

/* Create a new segment of `size` bytes (rounded up to a page) under a fresh
 * random name and map it.  *out is owned by the process table.  Every page
 * is reserved here: when /dev/shm has no room, FM_ERRNO with errno ENOSPC
 * and nothing is left behind (never a SIGBUS at some later first touch). */
int fm_segment_create(size_t size, fm_segment **out);
/* The same under a name the caller chose with fm_shm_new_name (and has
 * told the resource tracker of: a process killed right after the file is
 * linked then leaves nothing behind).  FM_ERRNO with EEXIST if taken. */
int fm_segment_create_as(const char *name, size_t size, fm_segment **out);
/* A fresh random segment name (FM_SHM_PREFIX and 24 hex digits) in name
 * (FM_SHM_NAME_MAX bytes): FM_OK or FM_ERRNO. */
int fm_shm_new_name(char *name);
/* Find a mapped segment by name, or open and map it.  Each call counts
 * one local user (see fm_segment_release). */
int fm_segment_attach(const char *name, fm_segment **out);
/* Give back one local user (of fm_segment_create or fm_segment_attach);
 * the last one unmaps the segment and drops it from the table, unless this
 * process created it and must still unlink it at exit.  Never unlinks.
 * The caller holds no pointer into it any more. */
void fm_segment_release(fm_segment *seg);
/* Reserve `size` bytes of the shm file behind fd (and set its size), for
 * files made outside the table: FM_OK, or FM_ERRNO (ENOSPC when /dev/shm
 * has no room). */
int fm_shm_reserve_fd(int fd, size_t size);
/* A new shm file of `size` reserved bytes named `name` (from
 * fm_shm_new_name), open read-write in *fd_out: FM_OK or FM_ERRNO (EEXIST
 * if the name is taken).  Made unnamed and linked under its name only once
 * whole, so a process killed while making it leaves nothing in /dev/shm. */
int fm_shm_create_fd(const char *name, size_t size, int *fd_out);
/* Test hook: when >= 0, the next file linked into /dev/shm writes its name
 * and a newline to this descriptor, and the process kills itself. */
extern int fm_shm_die_after_link_fd;
/* Where a file has just been named in /dev/shm: the test hook's point. */
void fm_shm_maybe_die_after_link(const char *name);
/* Unlink every segment this process created and has not unlinked yet;
 * calls cb(name, arg) for each name removed.  Mappings stay valid. */
void fm_segment_unlink_own(void (*cb)(const char *name, void *arg), void *arg);

/* Forget one segment: unmap it and drop it from the table; with `unlink`,
 * also unlink it if this process created it and has not yet.  Only for
 * segments nothing in this process uses any more (pool.c's channels, and
 * the segments that carry one large message to another process, which the
 * receiver unlinks). */
void fm_segment_destroy(fm_segment *seg, int unlink);
/* A segment whose lifetime is not its creator's (a queue's ring: another
 * process may still need to attach it after the creator has exited): the
 * creator's exit no longer unlinks it; its last user does. */
void fm_segment_disown(fm_segment *seg);

/* Call cb(name, arg) for every segment this process created and has not
 * unlinked (to register them again with a new tracker). */
void fm_segment_list_own(void (*cb)(const char *name, void *arg), void *arg);

/* Once per process, before anything else here: registers the fork
 * handlers that keep the table's mutex and the cached pid right. */
void fm_shm_init(void);

/* After fork in the child: refresh the cached pid.  The table and the
 * mappings are inherited; the parent's segments stop being "ours to unlink"
 * because their creator's pid is no longer ours. */
void fm_shm_after_fork_child(void);

/* Allocate a zeroed block of at least `size` payload bytes, tagged with
 * `tag`, refs = 1.  *created_seg is set when a new arena had to be created
 * (so the caller can register its name with the tracker), else NULL. */
int fm_block_alloc(size_t size, uint32_t tag, fm_segment **seg,
                   uint64_t *offset, fm_segment **created_seg);
/* The same, but a segment it must make is named `new_name` (chosen and
 * registered by the caller beforehand, as for fm_segment_create_as); with
 * new_name NULL it makes none and returns FM_AGAIN when it would have to. */
int fm_block_alloc_as(size_t size, uint32_t tag, const char *new_name, fm_segment **seg,
                      uint64_t *offset, fm_segment **created_seg);
/* Payload address of the block at `offset` in `seg`; NULL if the offset
 * does not name a live block with this tag. */
void *fm_block_payload(fm_segment *seg, uint64_t offset, uint32_t tag);
void fm_block_incref(fm_segment *seg, uint64_t offset);
/* Drop one reference; the last one returns the block to its free list. */
void fm_block_decref(fm_segment *seg, uint64_t offset);
uint32_t fm_block_refs(fm_segment *seg, uint64_t offset);
/* Drop one reference unless it is the last one: returns 1 (and drops
 * nothing) if it is, so the caller can clean up before fm_block_decref. */
int fm_block_decref_unless_last(fm_segment *seg, uint64_t offset);

/* Huge blocks (see FM_HUGE_MAGIC).  fm_block_alloc() makes one for any size
 * above the largest class (FM_NOMEM above FM_HUGE_MAX; FM_ERRNO with ENOSPC
 * when /dev/shm has no room, checked up front so that no later page fault
 * can die of SIGBUS).  Its last reference does not free it: the segment
 * stays mapped until fm_block_reclaim_huge() or, like an arena, until the
 * creator unlinks its segments at exit. */
int fm_segment_is_huge(const fm_segment *seg);
/* Payload bytes of the live block at `offset` with this tag; 0 if none. */
size_t fm_block_capacity(fm_segment *seg, uint64_t offset, uint32_t tag);
/* After dropping a reference to a huge block: if this process created its
 * segment and no process holds a reference any more, unlink and unmap the
 * segment now and forget it (`seg` is freed).  Returns 1 when the name was
 * unlinked here (copied to name_out, FM_SHM_NAME_MAX bytes, so the caller
 * can tell the resource tracker), else 0 (nothing done, or the segment had
 * already been unlinked: then it is only unmapped).  The caller must hold
 * no other pointer into the segment. */
int fm_block_reclaim_huge(fm_segment *seg, uint64_t offset, char *name_out);

#endif
