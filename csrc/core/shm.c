/* shm.c: shared-memory segments, the per-process table of mappings, and
 * the block allocator inside arena segments.  No Python.h. */
#include "shm.h"
#include "atomics.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "glibc_compat.h"

#include "futex.h"


/* The mappings are per process, so is their table (not per interpreter). */
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static fm_segment *table_head;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void atfork_prepare(void) { pthread_mutex_lock(&table_lock); }
static void atfork_parent(void) { pthread_mutex_unlock(&table_lock); }
static void
atfork_child(void)
{
    pthread_mutex_unlock(&table_lock);
    fm_refresh_pid();
    /* a new process starts with the full spin: the parent's thread may have
     * learnt to skip it from waits that say nothing of the child's */
    fm_spin_reset();
}

static void
init_once_fn(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
    fm_refresh_pid();
}

void
fm_shm_init(void)
{
    pthread_once(&init_once, init_once_fn);
}

void
fm_shm_after_fork_child(void)
{
    fm_refresh_pid();
}

/* ---------------------------------------------------------------- segments */

static int
random_name(char *out, size_t outlen)
{
    enum { RANDOM_BYTES = 12 };
    size_t prefix = strlen(FM_SHM_PREFIX);
    if (outlen < prefix + 2 * RANDOM_BYTES + 1)
        return FM_NOMEM;
    memcpy(out, FM_SHM_PREFIX, prefix);
    return fm_random_hex(out + prefix, RANDOM_BYTES);
}

static fm_segment *
table_find(const char *name)
{
    for (fm_segment *s = table_head; s; s = s->next)
        if (strcmp(s->name, name) == 0)
            return s;
    return NULL;
}

static int
map_fd(int fd, size_t size, unsigned char **base)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return FM_ERRNO;
    *base = p;
    return FM_OK;
}

/* Whether the file system behind shm_open (/dev/shm with glibc) reports
 * room for `size` bytes.  Checked before the segment is even made, so that a
 * silly size fails at once, without eating the machine's memory first; a
 * file system that cannot tell passes. */
static int
shm_has_room(size_t size)
{
    struct statvfs vfs;
    if (statvfs("/dev/shm", &vfs) != 0 || vfs.f_frsize == 0)
        return 1;
    return (uint64_t)vfs.f_bavail >= size / vfs.f_frsize + 1;
}

int
fm_shm_reserve_fd(int fd, size_t size)
{
    if (!shm_has_room(size)) {
        errno = ENOSPC;
        return FM_ERRNO;
    }
    /* posix_fallocate allocates every page now and sets the size: a page
     * that could not be had fails here, not as SIGBUS at its first touch */
    int err;
    do
        err = posix_fallocate(fd, 0, (off_t)size);
    while (err == EINTR);
    if (err == 0)
        return FM_OK;
    if (err != EOPNOTSUPP && err != ENOSYS && err != EINVAL) {
        errno = err;
        return FM_ERRNO;
    }
    /* a file system without fallocate: the room check above must do */
    int rc;
    do
        rc = ftruncate(fd, (off_t)size);
    while (rc < 0 && errno == EINTR);
    return rc == 0 ? FM_OK : FM_ERRNO;
}

/* Link the unnamed file `fd` (made with O_TMPFILE) into /dev/shm as `name`. */
static int
link_as(int fd, const char *name)
{
    char from[64], to[16 + FM_SHM_NAME_MAX];
    snprintf(from, sizeof from, "/proc/self/fd/%d", fd);
    snprintf(to, sizeof to, "/dev/shm%s", name);
    return linkat(AT_FDCWD, from, AT_FDCWD, to, AT_SYMLINK_FOLLOW) == 0 ? FM_OK : FM_ERRNO;
}

int
fm_shm_new_name(char *name)
{
    return random_name(name, FM_SHM_NAME_MAX) == FM_OK ? FM_OK : FM_ERRNO;
}

/* A test hook (fm_shm_die_after_link_fd): the test points a descriptor at
 * it; the next segment linked into /dev/shm writes its name there and the
 * process dies of SIGKILL, at the worst moment for a leak: the file is
 * named and the creator has done nothing more. */
int fm_shm_die_after_link_fd = -1;

void
fm_shm_maybe_die_after_link(const char *name)
{
    int fd = fm_shm_die_after_link_fd;
    if (fd < 0)
        return;
    char line[FM_SHM_NAME_MAX + 1];
    int n = snprintf(line, sizeof line, "%s\n", name);
    if (write(fd, line, (size_t)n) < 0) {
        /* the test reads the name; it fails on its own without it */
    }
    kill(getpid(), SIGKILL);
    for (;;)
        pause();
}

int
fm_shm_create_fd(const char *name, size_t size, int *fd_out)
{
    /* Made unnamed, its pages reserved, and only then linked under `name`:
     * a process killed while it makes the segment (the reservation is the
     * slow part, where a SIGKILL lands) leaves no file in /dev/shm.  And
     * the name is the caller's, chosen (and registered with the resource
     * tracker, csrc/glue.c fm_segment_name_reserve) before the file exists:
     * no instant is left where a named file is known to nobody. */
    int fd = open("/dev/shm", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0) {
        if (fm_shm_reserve_fd(fd, size) != FM_OK)
            goto error;
        if (link_as(fd, name) == FM_OK) {
            fm_shm_maybe_die_after_link(name);
            /* opened again by its name, so that its mappings show the
             * name in /proc/<pid>/maps (the tools that look there) */
            int named = shm_open(name, O_RDWR | O_CLOEXEC, 0600);
            if (named >= 0) {
                close(fd);
                fd = named;
            }
            *fd_out = fd;
            return FM_OK;
        }
        if (errno != EPERM && errno != ENOENT && errno != EXDEV)
            goto error;
        /* /proc not mounted, or links refused: name it the plain way */
        close(fd);
    }
    else if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL && errno != ENOENT) {
        return FM_ERRNO;
    }
    /* No O_TMPFILE here (an old kernel, /dev/shm not a tmpfs): named first */
    fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return FM_ERRNO;
    fm_shm_maybe_die_after_link(name);
    if (fm_shm_reserve_fd(fd, size) != FM_OK) {
        int saved = errno;
        close(fd);
        shm_unlink(name);
        errno = saved;
        return FM_ERRNO;
    }
    *fd_out = fd;
    return FM_OK;
error:
    {
        int saved = errno;
        close(fd);
        errno = saved;
    }
    return FM_ERRNO;
}

/* Make and map a new segment, not yet in the table (no lock needed: the
 * name is fresh).  The pages are reserved by fm_shm_create_fd, so that no
 * caller can forget it. */
static int
segment_make(const char *name, size_t size, fm_segment **out)
{
    long page = sysconf(_SC_PAGESIZE);
    size = (size + (size_t)page - 1) & ~((size_t)page - 1);
    fm_segment *seg = calloc(1, sizeof *seg);
    if (seg == NULL) {
        errno = ENOMEM;
        return FM_ERRNO;
    }
    int fd = -1;
    snprintf(seg->name, sizeof seg->name, "%s", name);
    if (fm_shm_create_fd(seg->name, size, &fd) != FM_OK)
        goto error;
    if (map_fd(fd, size, &seg->base) != FM_OK) {
        int saved = errno;
        close(fd);
        shm_unlink(seg->name);
        errno = saved;
        goto error;
    }
    close(fd);
    seg->size = size;
    seg->users = 1;
    seg->creator = (pid_t)fm_self_pid();
    *out = seg;
    return FM_OK;
error:
    {
        int saved = errno;
        free(seg);
        errno = saved;
    }
    return FM_ERRNO;
}

/* Caller holds table_lock. */
static void
table_link(fm_segment *seg)
{
    seg->next = table_head;
    table_head = seg;
}

/* Caller holds table_lock (an arena made while the table is searched). */
static int
segment_create_locked(const char *name, size_t size, fm_segment **out)
{
    int st = segment_make(name, size, out);
    if (st == FM_OK)
        table_link(*out);
    return st;
}

int
fm_segment_create_as(const char *name, size_t size, fm_segment **out)
{
    /* reserving a big segment's pages takes a while: not under the lock */
    int st = segment_make(name, size, out);
    if (st != FM_OK)
        return st;
    pthread_mutex_lock(&table_lock);
    table_link(*out);
    pthread_mutex_unlock(&table_lock);
    return FM_OK;
}

int
fm_segment_create(size_t size, fm_segment **out)
{
    char name[FM_SHM_NAME_MAX];
    if (fm_shm_new_name(name) != FM_OK)
        return FM_ERRNO;
    return fm_segment_create_as(name, size, out);
}

int
fm_segment_attach(const char *name, fm_segment **out)
{
    if (strncmp(name, FM_SHM_PREFIX, strlen(FM_SHM_PREFIX)) != 0 ||
        strlen(name) >= FM_SHM_NAME_MAX) {
        errno = EINVAL;
        return FM_ERRNO;
    }
    pthread_mutex_lock(&table_lock);
    fm_segment *seg = table_find(name);
    if (seg) {
        seg->users++;
        pthread_mutex_unlock(&table_lock);
        *out = seg;
        return FM_OK;
    }
    int st = FM_ERRNO;
    int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0)
        goto done;
    struct stat sb;
    if (fstat(fd, &sb) < 0) {
        close(fd);
        goto done;
    }
    seg = calloc(1, sizeof *seg);
    if (seg == NULL) {
        close(fd);
        errno = ENOMEM;
        goto done;
    }
    if (map_fd(fd, (size_t)sb.st_size, &seg->base) != FM_OK) {
        int saved = errno;
        close(fd);
        free(seg);
        errno = saved;
        seg = NULL;
        goto done;
    }
    close(fd);
    snprintf(seg->name, sizeof seg->name, "%s", name);
    seg->size = (size_t)sb.st_size;
    seg->creator = 0;           /* someone else's: never ours to unlink */
    seg->users = 1;
    seg->next = table_head;
    table_head = seg;
    *out = seg;
    st = FM_OK;
done:
    pthread_mutex_unlock(&table_lock);
    return st;
}

void
fm_segment_unlink_own(void (*cb)(const char *name, void *arg), void *arg)
{
    pid_t me = (pid_t)fm_self_pid();
    pthread_mutex_lock(&table_lock);
    for (fm_segment *s = table_head; s; s = s->next) {
        if (s->creator != me || s->unlinked)
            continue;
        shm_unlink(s->name);
        s->unlinked = 1;
        s->alloc_arena = 0;     /* a child spawned later could not attach it */
        if (cb)
            cb(s->name, arg);
    }
    pthread_mutex_unlock(&table_lock);
}

void
fm_segment_destroy(fm_segment *seg, int unlink)
{
    pthread_mutex_lock(&table_lock);
    for (fm_segment **pp = &table_head; *pp; pp = &(*pp)->next) {
        if (*pp != seg)
            continue;
        *pp = seg->next;
        if (unlink && seg->creator == (pid_t)fm_self_pid() && !seg->unlinked)
            shm_unlink(seg->name);
        munmap(seg->base, seg->size);
        free(seg);
        break;
    }
    pthread_mutex_unlock(&table_lock);
}

void
fm_segment_disown(fm_segment *seg)
{
    pthread_mutex_lock(&table_lock);
    seg->creator = 0;
    pthread_mutex_unlock(&table_lock);
}

void
fm_segment_release(fm_segment *seg)
{
    pthread_mutex_lock(&table_lock);
    if (seg->users > 0)
        seg->users--;
    /* a segment this process must still unlink at exit stays listed */
    if (seg->users == 0 && !(seg->creator == (pid_t)fm_self_pid() && !seg->unlinked)) {
        for (fm_segment **pp = &table_head; *pp; pp = &(*pp)->next) {
            if (*pp == seg) {
                *pp = seg->next;
                munmap(seg->base, seg->size);
                free(seg);
                break;
            }
        }
    }
    pthread_mutex_unlock(&table_lock);
}

void
fm_segment_list_own(void (*cb)(const char *name, void *arg), void *arg)
{
    pid_t me = (pid_t)fm_self_pid();
    pthread_mutex_lock(&table_lock);
    for (fm_segment *s = table_head; s; s = s->next)
        if (s->creator == me && !s->unlinked)
            cb(s->name, arg);
    pthread_mutex_unlock(&table_lock);
}

/* ------------------------------------------------------------------ arenas */

#define HEADER_SPACE 256   /* room for fm_arena_header, keeps blocks aligned */

static inline fm_arena_header *
arena_of(fm_segment *seg)
{
    return (fm_arena_header *)seg->base;
}

static inline fm_block_header *
block_at(fm_segment *seg, uint64_t offset)
{
    return (fm_block_header *)(seg->base + offset);
}

static inline uint64_t
class_size(int cls)
{
    return (uint64_t)1 << (cls + FM_BLOCK_MIN_SHIFT);
}

static int
arena_init(fm_segment *seg)
{
    _Static_assert(sizeof(fm_arena_header) <= HEADER_SPACE, "arena header too big");
    fm_arena_header *a = arena_of(seg);
    a->version = 1;
    a->size = seg->size;
    a->creator = (int32_t)seg->creator;
    atomic_store_explicit(&a->bump, HEADER_SPACE, RLX);
    for (int i = 0; i < FM_BLOCK_CLASSES; i++)
        atomic_store_explicit(&a->free_head[i], 0, RLX);
    atomic_thread_fence(memory_order_release);
    a->magic = FM_ARENA_MAGIC;
    seg->alloc_arena = 1;
    return FM_OK;
}

static uint64_t
freelist_pop(fm_segment *seg, int cls)
{
    fm_arena_header *a = arena_of(seg);
    uint64_t head = atomic_load_explicit(&a->free_head[cls], ACQ);
    for (;;) {
        uint32_t off = (uint32_t)head;
        if (off == 0)
            return 0;
        /* next may be stale if another process popped this block first;
         * the tag in head makes that CAS fail */
        uint32_t next = atomic_load_explicit(&block_at(seg, off)->next, RLX);
        uint64_t want = (((head >> 32) + 1) << 32) | next;
        if (atomic_compare_exchange_weak_explicit(&a->free_head[cls], &head, want, ACQ, ACQ))
            return off;
    }
}

static void
freelist_push(fm_segment *seg, int cls, uint64_t off)
{
    fm_arena_header *a = arena_of(seg);
    uint64_t head = atomic_load_explicit(&a->free_head[cls], RLX);
    for (;;) {
        atomic_store_explicit(&block_at(seg, off)->next, (uint32_t)head, RLX);
        uint64_t want = (((head >> 32) + 1) << 32) | (uint32_t)off;
        if (atomic_compare_exchange_weak_explicit(&a->free_head[cls], &head, want, REL, RLX))
            return;
    }
}

static uint64_t
bump_alloc(fm_segment *seg, uint64_t bsize)
{
    fm_arena_header *a = arena_of(seg);
    uint64_t b = atomic_load_explicit(&a->bump, RLX);
    for (;;) {
        uint64_t off = (b + bsize - 1) & ~(bsize - 1);
        if (off + bsize > seg->size)
            return 0;
        if (atomic_compare_exchange_weak_explicit(&a->bump, &b, off + bsize, RLX, RLX))
            return off;
    }
}

/* ------------------------------------------------------------ huge blocks */

_Static_assert(FM_HUGE_OFFSET == HEADER_SPACE, "a huge block sits where an arena's first would");

/* Caller holds table_lock: forget `seg` and unmap it (unlinking it first
 * unless that was done already). */
static void
segment_destroy_locked(fm_segment *seg)
{
    for (fm_segment **pp = &table_head; *pp; pp = &(*pp)->next) {
        if (*pp == seg) {
            *pp = seg->next;
            break;
        }
    }
    if (!seg->unlinked)
        shm_unlink(seg->name);
    munmap(seg->base, seg->size);
    free(seg);
}

static int
huge_alloc(size_t size, uint32_t tag, const char *new_name, fm_segment **segp,
           uint64_t *offsetp, fm_segment **created)
{
    if (size > FM_HUGE_MAX) {
        errno = ENOMEM;
        return FM_NOMEM;
    }
    if (new_name == NULL)
        return FM_AGAIN;
    fm_segment *seg;
    int st = fm_segment_create_as(new_name, HEADER_SPACE + sizeof(fm_block_header) + size,
                                  &seg);
    if (st != FM_OK)
        return st;
    /* a new file reads as zeros: no memset of what may be megabytes */
    fm_arena_header *a = arena_of(seg);
    a->version = 1;
    a->size = seg->size;
    a->creator = (int32_t)seg->creator;
    fm_block_header *h = block_at(seg, HEADER_SPACE);
    h->cls = FM_BLOCK_HUGE;
    h->magic = FM_BLOCK_MAGIC;
    h->tag = tag;
    atomic_store_explicit(&h->refs, 1, RLX);
    /* publishes the headers to another process that attaches by name */
    atomic_thread_fence(memory_order_release);
    a->magic = FM_HUGE_MAGIC;
    *segp = seg;
    *offsetp = HEADER_SPACE;
    *created = seg;
    return FM_OK;
}

/* fm_block_payload() of a huge segment; offset is already in bounds. */
static void *
huge_payload(fm_segment *seg, uint64_t offset, uint32_t tag)
{
    if (offset != HEADER_SPACE || seg->size < HEADER_SPACE + sizeof(fm_block_header))
        return NULL;
    fm_block_header *h = block_at(seg, offset);
    if (h->magic != FM_BLOCK_MAGIC || h->tag != tag || h->cls != FM_BLOCK_HUGE ||
        atomic_load_explicit(&h->refs, ACQ) == 0)
        return NULL;
    return (unsigned char *)h + sizeof *h;
}

int
fm_segment_is_huge(const fm_segment *seg)
{
    return seg->size >= HEADER_SPACE && arena_of((fm_segment *)seg)->magic == FM_HUGE_MAGIC;
}

size_t
fm_block_capacity(fm_segment *seg, uint64_t offset, uint32_t tag)
{
    if (fm_block_payload(seg, offset, tag) == NULL)
        return 0;
    fm_block_header *h = block_at(seg, offset);
    if (h->cls == FM_BLOCK_HUGE)
        return seg->size - offset - sizeof *h;
    return class_size(h->cls) - sizeof *h;
}

int
fm_block_reclaim_huge(fm_segment *seg, uint64_t offset, char *name_out)
{
    int reported = 0;
    pthread_mutex_lock(&table_lock);
    if (!fm_segment_is_huge(seg) || offset != HEADER_SPACE ||
        seg->creator != (pid_t)fm_self_pid())
        goto done;
    fm_block_header *h = block_at(seg, offset);
    if (atomic_load_explicit(&h->refs, ACQ) != 0)
        goto done;
    /* a late attacher (one that read the offset before the last holder let
     * go: a bug of its own) finds no block rather than freed memory */
    h->magic = 0;
    if (!seg->unlinked) {
        snprintf(name_out, FM_SHM_NAME_MAX, "%s", seg->name);
        reported = 1;
    }
    segment_destroy_locked(seg);
done:
    pthread_mutex_unlock(&table_lock);
    return reported;
}

int
fm_block_alloc_as(size_t size, uint32_t tag, const char *new_name, fm_segment **segp,
                  uint64_t *offsetp, fm_segment **created)
{
    *created = NULL;
    int cls = 0;
    /* too big for the largest class: a segment of its own (the first test
     * also keeps the sum below from wrapping) */
    if (size > class_size(FM_BLOCK_CLASSES - 1) - sizeof(fm_block_header))
        return huge_alloc(size, tag, new_name, segp, offsetp, created);
    while (cls < FM_BLOCK_CLASSES && class_size(cls) < size + sizeof(fm_block_header))
        cls++;
    uint64_t bsize = class_size(cls);
    fm_segment *seg = NULL;
    uint64_t off = 0;

    pthread_mutex_lock(&table_lock);
    for (fm_segment *s = table_head; s && !off; s = s->next) {
        if (!s->alloc_arena)
            continue;
        off = freelist_pop(s, cls);
        if (!off)
            off = bump_alloc(s, bsize);
        if (off)
            seg = s;
    }
    if (!off && new_name == NULL) {
        pthread_mutex_unlock(&table_lock);
        return FM_AGAIN;
    }
    if (!off) {
        fm_segment *s;
        int st = segment_create_locked(new_name, FM_ARENA_SIZE, &s);
        if (st != FM_OK) {
            pthread_mutex_unlock(&table_lock);
            return st;
        }
        arena_init(s);
        *created = s;
        off = bump_alloc(s, bsize);
        seg = s;
    }
    pthread_mutex_unlock(&table_lock);

    fm_block_header *h = block_at(seg, off);
    memset((unsigned char *)h + sizeof *h, 0, bsize - sizeof *h);
    h->cls = (uint16_t)cls;
    h->magic = FM_BLOCK_MAGIC;
    h->tag = tag;
    atomic_store_explicit(&h->next, 0, RLX);
    atomic_store_explicit(&h->refs, 1, REL);
    *segp = seg;
    *offsetp = off;
    return FM_OK;
}

int
fm_block_alloc(size_t size, uint32_t tag, fm_segment **segp, uint64_t *offsetp,
               fm_segment **created)
{
    char name[FM_SHM_NAME_MAX];
    if (fm_shm_new_name(name) != FM_OK)
        return FM_ERRNO;
    return fm_block_alloc_as(size, tag, name, segp, offsetp, created);
}

void *
fm_block_payload(fm_segment *seg, uint64_t offset, uint32_t tag)
{
    /* written so that no sum can wrap, whatever offset another process sent */
    if (offset < HEADER_SPACE || offset % (1u << FM_BLOCK_MIN_SHIFT) != 0 ||
        offset >= seg->size || seg->size - offset < (1u << FM_BLOCK_MIN_SHIFT))
        return NULL;
    if (arena_of(seg)->magic == FM_HUGE_MAGIC)
        return huge_payload(seg, offset, tag);
    if (arena_of(seg)->magic != FM_ARENA_MAGIC)
        return NULL;
    fm_block_header *h = block_at(seg, offset);
    if (h->magic != FM_BLOCK_MAGIC || h->tag != tag || h->cls >= FM_BLOCK_CLASSES ||
        seg->size - offset < class_size(h->cls) ||
        atomic_load_explicit(&h->refs, ACQ) == 0)
        return NULL;
    return (unsigned char *)h + sizeof *h;
}

void
fm_block_incref(fm_segment *seg, uint64_t offset)
{
    atomic_fetch_add_explicit(&block_at(seg, offset)->refs, 1, RLX);
}

void
fm_block_decref(fm_segment *seg, uint64_t offset)
{
    fm_block_header *h = block_at(seg, offset);
    /* a huge block has no free list: its segment goes as a whole */
    if (atomic_fetch_sub_explicit(&h->refs, 1, memory_order_acq_rel) == 1 &&
        h->cls != FM_BLOCK_HUGE)
        freelist_push(seg, h->cls, offset);
}

uint32_t
fm_block_refs(fm_segment *seg, uint64_t offset)
{
    return atomic_load_explicit(&block_at(seg, offset)->refs, RLX);
}

int
fm_block_decref_unless_last(fm_segment *seg, uint64_t offset)
{
    fm_block_header *h = block_at(seg, offset);
    uint32_t r = atomic_load_explicit(&h->refs, RLX);
    while (r > 1)
        if (atomic_compare_exchange_weak_explicit(&h->refs, &r, r - 1, memory_order_acq_rel, RLX))
            return 0;
    return 1;
}
