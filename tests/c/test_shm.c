/* test_shm.c: segments (names, modes, attach in-process, by a forked child,
 * by an exec'd process) and the block allocator in arenas. */
#include <ctype.h>
#include <libgen.h>
#include <limits.h>
#include <sched.h>
#include <sys/mount.h>

#include "check.h"

#define TAG 0x7a11u

static char helper_path[PATH_MAX];
static long page;

/* fm_block_alloc that remembers the arenas it creates. */
static int
alloc_block(size_t size, uint32_t tag, fm_segment **seg, uint64_t *off, int *ncreated)
{
    fm_segment *created = (fm_segment *)1;
    int st = fm_block_alloc(size, tag, seg, off, &created);
    if (created != NULL && created != (fm_segment *)1) {
        fmt_track(created->name);
        if (ncreated)
            (*ncreated)++;
    }
    return st;
}

static fm_block_header *
header_of(fm_segment *seg, uint64_t off)
{
    return (fm_block_header *)(seg->base + off);
}

static int
all_zero(const unsigned char *p, size_t n)
{
    static const unsigned char zero[4096];
    while (n > 0) {
        size_t k = n < sizeof zero ? n : sizeof zero;
        if (memcmp(p, zero, k) != 0)
            return 0;
        p += k;
        n -= k;
    }
    return 1;
}

static int
run_helper(char *const argv[])
{
    pid_t pid = fmt_fork();
    if (pid == 0) {
        execv(helper_path, argv);
        _exit(127);
    }
    return fmt_reap(pid);
}

/* ---------------------------------------------------------------- segments */

static int
valid_name(const char *name)
{
    size_t plen = strlen(FM_SHM_PREFIX);
    if (strncmp(name, FM_SHM_PREFIX, plen) != 0 || strlen(name) != plen + 24)
        return 0;
    for (const char *c = name + plen; *c; c++)
        if (!isxdigit((unsigned char)*c) || isupper((unsigned char)*c))
            return 0;
    return 1;
}

static void
test_create(void)
{
    fm_segment *seg = NULL;
    CHECK_ST(fm_segment_create(10000, &seg), FM_OK);
    if (seg == NULL)
        return;
    fmt_track(seg->name);
    CHECK_MSG(valid_name(seg->name), "name %s", seg->name);
    CHECK_EQ(seg->size, ((10000 + page - 1) / page) * page);
    CHECK(seg->base != NULL);
    CHECK_EQ(seg->creator, getpid());
    CHECK_EQ(seg->unlinked, 0);
    CHECK_EQ(seg->alloc_arena, 0);
    CHECK(all_zero(seg->base, seg->size));

    char path[128];
    snprintf(path, sizeof path, "/dev/shm%.60s", seg->name);
    struct stat sb;
    CHECK_EQ(stat(path, &sb), 0);
    CHECK(S_ISREG(sb.st_mode));
    CHECK_MSG((sb.st_mode & 07777) == 0600, "mode %o", (unsigned)(sb.st_mode & 07777));
    CHECK_EQ(sb.st_uid, geteuid());
    CHECK_EQ(sb.st_size, (off_t)seg->size);

    /* the mapping is the file: what one writes, another mapping reads */
    memcpy(seg->base + 100, "fastmp", 6);
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0);
    char buf[6] = {0};
    CHECK_EQ(pread(fd, buf, 6, 100), 6);
    CHECK(memcmp(buf, "fastmp", 6) == 0);
    close(fd);

    /* two creates: two names, two mappings */
    fm_segment *seg2 = NULL;
    CHECK_ST(fm_segment_create(1, &seg2), FM_OK);
    if (seg2 == NULL)
        return;
    fmt_track(seg2->name);
    CHECK(strcmp(seg->name, seg2->name) != 0);
    CHECK(seg->base != seg2->base);
    CHECK_EQ(seg2->size, page);
    CHECK_MSG(valid_name(seg2->name), "name %s", seg2->name);

    /* names are random: 50 more, all distinct */
    char names[50][FM_SHM_NAME_MAX];
    int dup = 0;
    for (int i = 0; i < 50; i++) {
        fm_segment *s;
        CHECK_ST(fm_segment_create(page, &s), FM_OK);
        fmt_track(s->name);
        snprintf(names[i], FM_SHM_NAME_MAX, "%s", s->name);
        for (int j = 0; j < i; j++)
            dup += strcmp(names[i], names[j]) == 0;
    }
    CHECK_EQ(dup, 0);
}

static void
test_attach_in_process(void)
{
    fm_segment *seg, *again = NULL;
    CHECK_ST(fm_segment_create(page, &seg), FM_OK);
    fmt_track(seg->name);
    CHECK_ST(fm_segment_attach(seg->name, &again), FM_OK);
    CHECK(again == seg);
    CHECK_ST(fm_segment_attach(seg->name, &again), FM_OK);
    CHECK(again == seg);

    fm_segment *bad = NULL;
    errno = 0;
    CHECK_ST(fm_segment_attach("/other-0123456789abcdef01234567", &bad), FM_ERRNO);
    CHECK_EQ(errno, EINVAL);
    errno = 0;
    CHECK_ST(fm_segment_attach("/fastmp-0123456789abcdef0123456789abcdef0123456789", &bad),
             FM_ERRNO);
    CHECK_EQ(errno, EINVAL);
    errno = 0;
    CHECK_ST(fm_segment_attach("/fastmp-000000000000000000000000", &bad), FM_ERRNO);
    CHECK_EQ(errno, ENOENT);
    errno = 0;
    CHECK_ST(fm_segment_attach("/fastmp-000000000000000000000000", &bad), FM_ERRNO);
    CHECK_EQ(errno, ENOENT);
    CHECK(bad == NULL);
}

/* A forked child inherits the table: attach finds the parent's entry, and
 * the child does not unlink the parent's segments. */
static int child_unlinked;
static void child_count_cb(const char *n, void *a) { (void)n; (void)a; child_unlinked++; }

static void
test_attach_forked_child(void)
{
    fm_segment *seg;
    CHECK_ST(fm_segment_create(page, &seg), FM_OK);
    fmt_track(seg->name);
    seg->base[8] = 42;
    pid_t pid = fmt_fork();
    if (pid == 0) {
        fm_segment *s = NULL;
        if (fm_segment_attach(seg->name, &s) != FM_OK || s != seg)
            _exit(1);
        if (s->base[8] != 42)
            _exit(2);
        s->base[9] = 43;
        fm_segment_unlink_own(child_count_cb, NULL);
        _exit(child_unlinked == 0 ? 0 : 3);
    }
    CHECK_EQ(fmt_reap(pid), 0);
    CHECK_EQ(seg->base[9], 43);
    CHECK(fmt_shm_exists(seg->name));
}

/* A process started by fork + exec has a fresh table: it attaches by name. */
static void
test_attach_exec_helper(void)
{
    fm_segment *seg;
    CHECK_ST(fm_segment_create(2 * page, &seg), FM_OK);
    fmt_track(seg->name);
    uint32_t magic = 0x5eed1e55u;
    memcpy(seg->base + page + 8, &magic, 4);
    char off[32];
    snprintf(off, sizeof off, "%ld", page + 8);
    char *argv[] = {helper_path, "raw", seg->name, off, "0x5eed1e55", "0xc0ffee11", NULL};
    CHECK_EQ(run_helper(argv), 0);
    uint32_t got;
    memcpy(&got, seg->base + page + 12, 4);
    CHECK_EQ(got, 0xc0ffee11u);
    CHECK(fmt_shm_exists(seg->name));       /* the helper did not unlink it */

    /* the wrong magic: the helper notices */
    char *argv2[] = {helper_path, "raw", seg->name, off, "0x1", "0x2", NULL};
    CHECK_EQ(run_helper(argv2), 20);
}

/* ------------------------------------------------------------------ blocks */

/* 10000 blocks of 48 bytes: one arena, one file. */
#define NB 10000
static fm_segment *bseg[NB];
static uint64_t boff[NB];

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void
test_10000_blocks_one_arena(void)
{
    int created = 0, bad_align = 0, bad_zero = 0, bad_payload = 0, bad_refs = 0, bad_st = 0;
    for (int i = 0; i < NB; i++) {
        if (alloc_block(48, TAG, &bseg[i], &boff[i], &created) != FM_OK) {
            bad_st++;
            bseg[i] = NULL;
            continue;
        }
        unsigned char *p = fm_block_payload(bseg[i], boff[i], TAG);
        bad_payload += p == NULL || p < bseg[i]->base || p + 48 > bseg[i]->base + bseg[i]->size;
        if (p == NULL)
            continue;
        bad_align += ((uintptr_t)p & 15) != 0;
        bad_zero += !all_zero(p, 48);
        bad_refs += fm_block_refs(bseg[i], boff[i]) != 1;
        memcpy(p, &i, sizeof i);
        memset(p + sizeof i, (unsigned char)i, 48 - sizeof i);
    }
    CHECK_EQ(bad_st, 0);
    CHECK_EQ(created, 1);
    CHECK_EQ(bad_payload, 0);
    CHECK_EQ(bad_align, 0);
    CHECK_EQ(bad_zero, 0);
    CHECK_EQ(bad_refs, 0);
    int distinct_segs = 0;
    fm_segment *segs[8];
    for (int i = 0; i < NB; i++) {
        int k;
        for (k = 0; k < distinct_segs; k++)
            if (segs[k] == bseg[i])
                break;
        if (k == distinct_segs && distinct_segs < 8)
            segs[distinct_segs++] = bseg[i];
    }
    CHECK_EQ(distinct_segs, 1);
    CHECK_EQ(fmt_count_arenas_of(getpid(), NULL, 0), 1);
    if (distinct_segs >= 1) {
        CHECK_EQ(segs[0]->alloc_arena, 1);
        CHECK_EQ(segs[0]->size, FM_ARENA_SIZE);
        CHECK_EQ(((fm_arena_header *)segs[0]->base)->magic, FM_ARENA_MAGIC);
        CHECK(fmt_shm_exists(segs[0]->name));
    }
    /* distinct offsets, blocks of 64 bytes that do not overlap */
    uint64_t *sorted = malloc(sizeof boff);
    memcpy(sorted, boff, sizeof boff);
    qsort(sorted, NB, sizeof *sorted, cmp_u64);
    int overlap = 0;
    for (int i = 1; i < NB; i++)
        overlap += sorted[i] < sorted[i - 1] + 64;
    free(sorted);
    CHECK_EQ(overlap, 0);
    /* nobody wrote into anybody else's block */
    int clobbered = 0;
    for (int i = 0; i < NB; i++) {
        unsigned char *p = fm_block_payload(bseg[i], boff[i], TAG);
        int v;
        if (p == NULL)
            continue;
        memcpy(&v, p, sizeof v);
        clobbered += v != i || p[47] != (unsigned char)i;
    }
    CHECK_EQ(clobbered, 0);
    /* all back: refs 0, no payload any more */
    int still = 0;
    for (int i = 0; i < NB; i++) {
        if (bseg[i] == NULL)
            continue;
        fm_block_decref(bseg[i], boff[i]);
        still += fm_block_refs(bseg[i], boff[i]) != 0 ||
                 fm_block_payload(bseg[i], boff[i], TAG) != NULL;
    }
    CHECK_EQ(still, 0);
    CHECK_EQ(fmt_count_arenas_of(getpid(), NULL, 0), 1);
}

static int
class_of(size_t size)
{
    int cls = 0;
    while (((size_t)64 << cls) < size + sizeof(fm_block_header))
        cls++;
    return cls;
}

/* Every size 1..60000: a block of the smallest class that fits, payload
 * 16-aligned and zeroed even when the block is a reused, dirtied one. */
static void
test_sizes_and_classes(void)
{
    CHECK_EQ(sizeof(fm_block_header), 16);
    int bad_st = 0, bad_cls = 0, bad_align = 0, bad_zero = 0, bad_bounds = 0, created = 0;
    for (size_t size = 1; size <= 60000; size++) {
        fm_segment *seg;
        uint64_t off;
        if (alloc_block(size, TAG, &seg, &off, &created) != FM_OK) {
            bad_st++;
            continue;
        }
        unsigned char *p = fm_block_payload(seg, off, TAG);
        if (p == NULL) {
            bad_st++;
            continue;
        }
        fm_block_header *h = header_of(seg, off);
        uint64_t bsize = (uint64_t)64 << h->cls;
        bad_cls += h->cls != class_of(size) || bsize < size + 16 ||
                   (h->cls > 0 && bsize / 2 >= size + 16);
        bad_align += ((uintptr_t)p & 15) != 0 || off % 64 != 0;
        bad_bounds += off + bsize > seg->size || p + size > seg->base + off + bsize;
        bad_zero += !all_zero(p, bsize - 16);
        memset(p, 0xa5, bsize - 16);        /* dirty it for the next one */
        fm_block_decref(seg, off);
    }
    CHECK_EQ(bad_st, 0);
    CHECK_EQ(bad_cls, 0);
    CHECK_EQ(bad_align, 0);
    CHECK_EQ(bad_bounds, 0);
    CHECK_EQ(bad_zero, 0);
    CHECK_EQ(created, 0);       /* the arena of the last test had room */
    CHECK_EQ(class_of(1), 0);
    CHECK_EQ(class_of(48), 0);
    CHECK_EQ(class_of(49), 1);
    CHECK_EQ(class_of(65520), 10);
}

static void
test_too_large(void)
{
    fm_segment *seg;
    uint64_t off;
    CHECK_ST(alloc_block(65520, TAG, &seg, &off, NULL), FM_OK);   /* the largest */
    CHECK_EQ(header_of(seg, off)->cls, FM_BLOCK_CLASSES - 1);
    fm_block_decref(seg, off);
    /* above the largest class: a huge block (test_huge_*), up to FM_HUGE_MAX */
    size_t sizes[] = {FM_HUGE_MAX + 1, SIZE_MAX / 2, SIZE_MAX - 300};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        errno = 0;
        int st = alloc_block(sizes[i], TAG, &seg, &off, NULL);
        CHECK_MSG(st == FM_NOMEM, "size %zu: %s", sizes[i], fmt_st(st));
        CHECK_EQ(errno, ENOMEM);
    }
    /* more than /dev/shm can hold: refused up front (ENOSPC), nothing left */
    int before = fmt_ntracked, created = 0;
    errno = 0;
    int st = alloc_block(FM_HUGE_MAX, TAG, &seg, &off, &created);
    CHECK_MSG(st == FM_ERRNO && errno == ENOSPC, "%s, errno %d", fmt_st(st), errno);
    CHECK_EQ(created, 0);
    CHECK_EQ(fmt_ntracked, before);
}

/* ---- huge blocks: one per segment ---- */

static void
test_huge_alloc(void)
{
    size_t sizes[] = {65521, 65536, 100000, (size_t)8 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t size = sizes[i];
        fm_segment *seg, *created = NULL;
        uint64_t off;
        CHECK_ST(fm_block_alloc(size, TAG, &seg, &off, &created), FM_OK);
        CHECK(created == seg);                  /* the hook must hear of it */
        if (created)
            fmt_track(created->name);
        CHECK(fm_segment_is_huge(seg));
        CHECK(!seg->alloc_arena);
        CHECK_EQ(off, FM_HUGE_OFFSET);
        CHECK_EQ(header_of(seg, off)->cls, FM_BLOCK_HUGE);
        unsigned char *p = fm_block_payload(seg, off, TAG);
        CHECK(p != NULL);
        CHECK_EQ((uintptr_t)p & 15, 0);
        CHECK(fm_block_capacity(seg, off, TAG) >= size);
        CHECK(p + fm_block_capacity(seg, off, TAG) == seg->base + seg->size);
        CHECK(all_zero(p, size));
        memset(p, 0x5a, size);                  /* every page is backed */
        CHECK_EQ(fm_block_refs(seg, off), 1);
        /* rejects as for arena blocks */
        CHECK(fm_block_payload(seg, off, TAG + 1) == NULL);
        CHECK_EQ(fm_block_capacity(seg, off, TAG + 1), 0);
        CHECK(fm_block_payload(seg, off + 64, TAG) == NULL);
        CHECK(fm_block_payload(seg, 0, TAG) == NULL);
        CHECK(fm_block_payload(seg, seg->size - 64, TAG) == NULL);
        /* small blocks never come from a huge segment */
        fm_segment *small;
        uint64_t soff;
        CHECK_ST(alloc_block(48, TAG, &small, &soff, NULL), FM_OK);
        CHECK(small != seg && !fm_segment_is_huge(small));
        fm_block_decref(small, soff);
        /* the last reference: the block is dead, the segment still mapped
         * and named until it is reclaimed */
        fm_block_decref(seg, off);
        CHECK_EQ(fm_block_refs(seg, off), 0);
        CHECK(fm_block_payload(seg, off, TAG) == NULL);
        CHECK(fmt_shm_exists(seg->name));
        char name[FM_SHM_NAME_MAX], again[FM_SHM_NAME_MAX] = "";
        snprintf(name, sizeof name, "%s", seg->name);
        CHECK_EQ(fm_block_reclaim_huge(seg, off, again), 1);
        CHECK(strcmp(name, again) == 0);
        CHECK(!fmt_shm_exists(name));
        /* forgotten: attaching by name fails */
        fm_segment *gone;
        CHECK_ST(fm_segment_attach(name, &gone), FM_ERRNO);
    }
    /* an arena block is never reclaimed this way */
    fm_segment *seg;
    uint64_t off;
    char name[FM_SHM_NAME_MAX];
    CHECK_ST(alloc_block(48, TAG, &seg, &off, NULL), FM_OK);
    fm_block_decref(seg, off);
    CHECK_EQ(fm_block_reclaim_huge(seg, off, name), 0);
    CHECK(fmt_shm_exists(seg->name));
}

/* Not reclaimed while a reference is held, in this process or another; a
 * child attached by exec (a fresh table) reads and writes the payload and
 * its reference counts; a non-creator never reclaims. */
static void
test_huge_shared(void)
{
    size_t size = (size_t)1 << 20;
    fm_segment *seg, *created = NULL;
    uint64_t off;
    CHECK_ST(fm_block_alloc(size, TAG, &seg, &off, &created), FM_OK);
    if (created)
        fmt_track(created->name);
    unsigned char *p = fm_block_payload(seg, off, TAG);
    uint64_t magic = 0x1122334455667788ULL;
    memcpy(p, &magic, 8);
    char name[FM_SHM_NAME_MAX];
    CHECK_EQ(fm_block_reclaim_huge(seg, off, name), 0);        /* refs 1 */

    char offs[32], tag[32];
    snprintf(offs, sizeof offs, "%llu", (unsigned long long)off);
    snprintf(tag, sizeof tag, "%u", TAG);
    char *argv[] = {helper_path, "block", seg->name, offs, tag,
                    "0x1122334455667788", "0x99aabbccddeeff00", NULL};
    CHECK_EQ(run_helper(argv), 0);
    uint64_t got;
    memcpy(&got, p + 8, 8);
    CHECK_EQ(got, 0x99aabbccddeeff00ULL);
    CHECK_EQ(fm_block_refs(seg, off), 2);                       /* the helper's */
    fm_block_decref(seg, off);
    CHECK_EQ(fm_block_reclaim_huge(seg, off, name), 0);        /* refs 1 */
    CHECK(fmt_shm_exists(seg->name));

    /* a forked child (inherited table, not the creator) drops the last
     * reference: it does not reclaim, the creator does afterwards */
    pid_t pid = fmt_fork();
    if (pid == 0) {
        fm_shm_after_fork_child();
        char n2[FM_SHM_NAME_MAX];
        fm_block_decref(seg, off);
        int r = fm_block_reclaim_huge(seg, off, n2);
        _exit(r != 0 ? 1 : fm_block_refs(seg, off) != 0 ? 2 : !fmt_shm_exists(seg->name) ? 3 : 0);
    }
    CHECK_EQ(fmt_reap(pid), 0);
    CHECK_EQ(fm_block_refs(seg, off), 0);
    CHECK_EQ(fm_block_reclaim_huge(seg, off, name), 1);
    CHECK(!fmt_shm_exists(name));
}

/* At exit the creator unlinks a huge segment like an arena (and later
 * reclaiming only unmaps it: nothing more to report). */
static void
test_huge_unlink_own(void)
{
    fm_segment *seg, *created = NULL;
    uint64_t off;
    CHECK_ST(fm_block_alloc(200000, TAG, &seg, &off, &created), FM_OK);
    if (created)
        fmt_track(created->name);
    char name[FM_SHM_NAME_MAX];
    snprintf(name, sizeof name, "%s", seg->name);
    fm_segment_unlink_own(NULL, NULL);
    CHECK(!fmt_shm_exists(name));
    CHECK_EQ(seg->unlinked, 1);
    unsigned char *p = fm_block_payload(seg, off, TAG);      /* still mapped */
    CHECK(p != NULL);
    p[199999] = 7;
    fm_block_decref(seg, off);
    char again[FM_SHM_NAME_MAX];
    CHECK_EQ(fm_block_reclaim_huge(seg, off, again), 0);
}

static void
test_payload_rejects(void)
{
    fm_segment *seg, *seg2;
    uint64_t off, off2;
    CHECK_ST(alloc_block(48, TAG, &seg, &off, NULL), FM_OK);
    CHECK_ST(alloc_block(200, TAG, &seg2, &off2, NULL), FM_OK);   /* 256-byte block */
    CHECK(fm_block_payload(seg, off, TAG) != NULL);
    CHECK(fm_block_payload(seg, off, TAG + 1) == NULL);          /* wrong tag */
    CHECK(fm_block_payload(seg, off, 0) == NULL);
    CHECK(fm_block_payload(seg, 0, TAG) == NULL);                 /* arena header */
    CHECK(fm_block_payload(seg, 64, TAG) == NULL);
    CHECK(fm_block_payload(seg, off + 1, TAG) == NULL);           /* misaligned */
    CHECK(fm_block_payload(seg, off + 16, TAG) == NULL);
    CHECK(fm_block_payload(seg2, off2 + 64, TAG) == NULL);        /* inside a block */
    CHECK(fm_block_payload(seg2, off2 + 128, TAG) == NULL);
    CHECK(fm_block_payload(seg, seg->size, TAG) == NULL);         /* past the end */
    CHECK(fm_block_payload(seg, seg->size - 32, TAG) == NULL);
    CHECK(fm_block_payload(seg, seg->size + 64, TAG) == NULL);
    CHECK(fm_block_payload(seg, (uint64_t)1 << 40, TAG) == NULL);
    CHECK(fm_block_payload(seg, UINT64_MAX - 127, TAG) == NULL);
    /* a segment that is not an arena */
    fm_segment *raw;
    CHECK_ST(fm_segment_create(page, &raw), FM_OK);
    fmt_track(raw->name);
    CHECK(fm_block_payload(raw, 256, TAG) == NULL);
    CHECK(fm_block_payload(raw, 0, TAG) == NULL);
    /* a freed block */
    fm_block_decref(seg, off);
    CHECK(fm_block_payload(seg, off, TAG) == NULL);
    fm_block_decref(seg2, off2);
    CHECK(fm_block_payload(seg2, off2, TAG) == NULL);
}

/* The last reference returns the block: the next allocation of its class
 * gets it back, zeroed; a block that still has a reference is not reused. */
static void
test_reuse(void)
{
    size_t sizes[] = {48, 100, 2000, 60000};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t size = sizes[k];
        fm_segment *a, *b;
        uint64_t oa, ob;
        CHECK_ST(alloc_block(size, TAG, &a, &oa, NULL), FM_OK);
        unsigned char *p = fm_block_payload(a, oa, TAG);
        memset(p, 0xee, size);
        fm_block_decref(a, oa);
        CHECK_EQ(fm_block_refs(a, oa), 0);
        CHECK_ST(alloc_block(size, TAG + 1, &b, &ob, NULL), FM_OK);
        CHECK_MSG(a == b && oa == ob, "size %zu: not reused", size);
        p = fm_block_payload(b, ob, TAG + 1);
        CHECK(p != NULL && all_zero(p, size));
        CHECK(fm_block_payload(b, ob, TAG) == NULL);                 /* retagged */
        fm_block_decref(b, ob);
    }

    /* refs 2: one decref leaves it live, not reused */
    fm_segment *a, *b, *c;
    uint64_t oa, ob, oc;
    CHECK_ST(alloc_block(48, TAG, &a, &oa, NULL), FM_OK);
    unsigned char *p = fm_block_payload(a, oa, TAG);
    memcpy(p, "still mine", 10);
    fm_block_incref(a, oa);
    CHECK_EQ(fm_block_refs(a, oa), 2);
    fm_block_decref(a, oa);
    CHECK_EQ(fm_block_refs(a, oa), 1);
    CHECK(fm_block_payload(a, oa, TAG) == p);
    CHECK_ST(alloc_block(48, TAG, &b, &ob, NULL), FM_OK);
    CHECK(!(a == b && oa == ob));
    CHECK(memcmp(p, "still mine", 10) == 0);
    fm_block_decref(a, oa);
    CHECK_EQ(fm_block_refs(a, oa), 0);
    CHECK_ST(alloc_block(48, TAG, &c, &oc, NULL), FM_OK);
    CHECK(a == c && oa == oc);
    fm_block_decref(b, ob);
    fm_block_decref(c, oc);
}

/* ---- threads allocating and freeing at once ---- */

#define NT 4
#define PER_T 20000
#define WINDOW 16
#define MAXSEG 8
#define SLOTS_PER_SEG (FM_ARENA_SIZE / 64)

static struct {
    pthread_mutex_t lock;
    fm_segment *segs[MAXSEG];
    int nsegs;
    _Atomic uint32_t *owner;        /* [MAXSEG * SLOTS_PER_SEG]: live block's thread + 1 */
    _Atomic long twice, corrupt, failed, created;
    _Atomic uint32_t go;
} ta;

static int
seg_index(fm_segment *s)
{
    pthread_mutex_lock(&ta.lock);
    int i;
    for (i = 0; i < ta.nsegs; i++)
        if (ta.segs[i] == s)
            break;
    if (i == ta.nsegs && ta.nsegs < MAXSEG)
        ta.segs[ta.nsegs++] = s;
    pthread_mutex_unlock(&ta.lock);
    return i < MAXSEG ? i : -1;
}

struct live {
    fm_segment *seg;
    uint64_t off;
    size_t size;
    _Atomic uint32_t *own;      /* the owner slots of the 64-byte units it covers */
    int nown;
};

/* Claim (id) or release (0) every 64-byte unit of a block; returns how many
 * units were not in the expected state. */
static int
mark(struct live *l, uint32_t from, uint32_t to)
{
    int bad = 0;
    for (int k = 0; k < l->nown; k++) {
        uint32_t want = from;
        bad += !atomic_compare_exchange_strong(&l->own[k], &want, to);
    }
    return bad;
}

static void
t_free(struct live *l, uint32_t id)
{
    unsigned char *p = fm_block_payload(l->seg, l->off, TAG);
    if (p == NULL) {
        atomic_fetch_add(&ta.corrupt, 1);
        return;
    }
    for (size_t k = 0; k < l->size; k++)
        if (p[k] != (unsigned char)id) {
            atomic_fetch_add(&ta.corrupt, 1);
            break;
        }
    if (mark(l, id, 0))
        atomic_fetch_add(&ta.twice, 1);
    fm_block_decref(l->seg, l->off);
}

static void *
t_alloc_free(void *arg)
{
    uint32_t id = (uint32_t)(intptr_t)arg + 1;
    struct live win[WINDOW] = {0};
    unsigned seed = id * 7919u;
    while (!atomic_load(&ta.go))
        sched_yield();
    for (int i = 0; i < PER_T; i++) {
        struct live *l = &win[rand_r(&seed) % WINDOW];
        if (l->seg)
            t_free(l, id);
        l->seg = NULL;
        l->size = (size_t)(rand_r(&seed) % 4 == 0 ? 200 : 40);   /* classes 0 and 2 */
        fm_segment *created = NULL;
        if (fm_block_alloc(l->size, TAG, &l->seg, &l->off, &created) != FM_OK) {
            atomic_fetch_add(&ta.failed, 1);
            l->seg = NULL;
            continue;
        }
        if (created) {
            fmt_track(created->name);
            atomic_fetch_add(&ta.created, 1);
        }
        int si = seg_index(l->seg);
        unsigned char *p = fm_block_payload(l->seg, l->off, TAG);
        if (si < 0 || p == NULL || !all_zero(p, l->size)) {
            atomic_fetch_add(&ta.corrupt, 1);
            l->seg = NULL;
            continue;
        }
        l->own = &ta.owner[(size_t)si * SLOTS_PER_SEG + l->off / 64];
        l->nown = 1 << header_of(l->seg, l->off)->cls;
        if (mark(l, 0, id))
            atomic_fetch_add(&ta.twice, 1);    /* (part of) a live block handed out again */
        memset(p, (int)id, l->size);
        if (i % 5 == 0)
            sched_yield();
    }
    for (int k = 0; k < WINDOW; k++)
        if (win[k].seg)
            t_free(&win[k], id);
    return NULL;
}

static void
test_threads_alloc_free(void)
{
    pthread_mutex_init(&ta.lock, NULL);
    ta.owner = calloc((size_t)MAXSEG * SLOTS_PER_SEG, sizeof *ta.owner);
    pthread_t th[NT];
    for (int i = 0; i < NT; i++)
        pthread_create(&th[i], NULL, t_alloc_free, (void *)(intptr_t)i);
    atomic_store(&ta.go, 1);
    for (int i = 0; i < NT; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ(atomic_load(&ta.twice), 0);
    CHECK_EQ(atomic_load(&ta.corrupt), 0);
    CHECK_EQ(atomic_load(&ta.failed), 0);
    long live = 0;
    for (size_t i = 0; i < (size_t)MAXSEG * SLOTS_PER_SEG; i++)
        live += atomic_load(&ta.owner[i]) != 0;
    CHECK_EQ(live, 0);
    fmt_note("%d arena(s) used, %ld created", ta.nsegs, atomic_load(&ta.created));
    free(ta.owner);
    pthread_mutex_destroy(&ta.lock);
}

/* ---- a forked child and the parent allocate from the same arena ---- */

#define PER_P 20000

static long
proc_alloc_free(fm_segment *arena, _Atomic uint32_t *owner, uint32_t id)
{
    long bad = 0;
    struct live win[WINDOW] = {0};
    unsigned seed = id * 104729u;
    for (int i = 0; i < PER_P; i++) {
        struct live *l = &win[rand_r(&seed) % WINDOW];
        if (l->seg) {
            unsigned char *p = fm_block_payload(l->seg, l->off, TAG);
            bad += p == NULL || p[0] != (unsigned char)id || p[39] != (unsigned char)id;
            bad += mark(l, id, 0);
            fm_block_decref(l->seg, l->off);
        }
        l->seg = NULL;
        fm_segment *created = NULL;
        if (fm_block_alloc(40, TAG, &l->seg, &l->off, &created) != FM_OK || created ||
            l->seg != arena) {
            if (created)
                fmt_track(created->name);
            bad++;
            l->seg = NULL;
            continue;
        }
        unsigned char *p = fm_block_payload(l->seg, l->off, TAG);
        if (p == NULL || !all_zero(p, 40)) {
            bad++;
            l->seg = NULL;
            continue;
        }
        l->own = &owner[l->off / 64];
        l->nown = 1;
        bad += mark(l, 0, id);
        memset(p, (int)id, 40);
    }
    for (int k = 0; k < WINDOW; k++) {
        if (!win[k].seg)
            continue;
        bad += mark(&win[k], id, 0);
        fm_block_decref(win[k].seg, win[k].off);
    }
    return bad;
}

static void
test_processes_alloc_free(void)
{
    fm_segment *arena;
    uint64_t off;
    CHECK_ST(alloc_block(40, TAG, &arena, &off, NULL), FM_OK);
    size_t mapsize = SLOTS_PER_SEG * sizeof(_Atomic uint32_t);
    _Atomic uint32_t *owner = fmt_shared_page(mapsize);
    pid_t pid = fmt_fork();
    if (pid == 0) {
        long bad = proc_alloc_free(arena, owner, 2);
        fm_segment_unlink_own(NULL, NULL);      /* only what the child made */
        _exit(bad ? 1 : 0);
    }
    long bad = proc_alloc_free(arena, owner, 1);
    CHECK_EQ(bad, 0);
    CHECK_EQ(fmt_reap(pid), 0);
    long live = 0;
    for (size_t i = 0; i < SLOTS_PER_SEG; i++)
        live += atomic_load(&owner[i]) != 0;
    CHECK_EQ(live, 0);
    CHECK(fmt_shm_exists(arena->name));     /* the child left our arena alone */
    fm_block_decref(arena, off);
    munmap(owner, mapsize);
}

/* An exec'd process attaches the arena by name, reads a block, writes into
 * it and takes a reference. */
static void
test_block_in_exec_helper(void)
{
    fm_segment *seg;
    uint64_t off;
    CHECK_ST(alloc_block(64, TAG, &seg, &off, NULL), FM_OK);
    unsigned char *p = fm_block_payload(seg, off, TAG);
    uint64_t magic = 0x0123456789abcdefULL;
    memcpy(p, &magic, 8);
    char offs[32], tag[32];
    snprintf(offs, sizeof offs, "%llu", (unsigned long long)off);
    snprintf(tag, sizeof tag, "%u", TAG);
    char *argv[] = {helper_path, "block", seg->name, offs, tag,
                    "0x0123456789abcdef", "0xfeedfacecafebeef", NULL};
    CHECK_EQ(run_helper(argv), 0);
    uint64_t got;
    memcpy(&got, p + 8, 8);
    CHECK_EQ(got, 0xfeedfacecafebeefULL);
    CHECK_EQ(fm_block_refs(seg, off), 2);
    fm_block_decref(seg, off);
    fm_block_decref(seg, off);
    CHECK_EQ(fm_block_refs(seg, off), 0);
}

/* ---- unlink ---- */

#define MAXN 128
struct names {
    int n;
    char name[MAXN][FM_SHM_NAME_MAX];
};

static void
collect_cb(const char *name, void *arg)
{
    struct names *ns = arg;
    if (ns->n < MAXN)
        snprintf(ns->name[ns->n], FM_SHM_NAME_MAX, "%s", name);
    ns->n++;
    fmt_track(name);
}

static void
test_unlink_own(void)
{
    fm_segment *raw;
    CHECK_ST(fm_segment_create(page, &raw), FM_OK);
    fmt_track(raw->name);
    int arenas = fmt_count_arenas_of(getpid(), NULL, 0);
    CHECK(arenas >= 1);
    /* every segment this process made and has not unlinked: the tracked
     * ones (nothing has been unlinked yet) */
    int expect = 0;
    for (int i = 0; i < fmt_ntracked; i++)
        expect += fmt_shm_exists(fmt_tracked[i]);
    CHECK_EQ(expect, fmt_ntracked);

    static struct names got;
    got.n = 0;
    fm_segment_unlink_own(collect_cb, &got);
    CHECK_EQ(got.n, expect);
    int dup = 0, left = 0, unknown = 0;
    for (int i = 0; i < got.n && i < MAXN; i++) {
        for (int j = 0; j < i; j++)
            dup += strcmp(got.name[i], got.name[j]) == 0;
        left += fmt_shm_exists(got.name[i]);
    }
    for (int i = 0; i < fmt_ntracked; i++) {
        int found = 0;
        for (int j = 0; j < got.n && j < MAXN; j++)
            found |= strcmp(fmt_tracked[i], got.name[j]) == 0;
        unknown += !found;
    }
    CHECK_EQ(dup, 0);
    CHECK_EQ(left, 0);
    CHECK_EQ(unknown, 0);           /* every tracked name was reported */
    CHECK_EQ(fmt_count_arenas_of(getpid(), NULL, 0), 0);
    CHECK_EQ(raw->unlinked, 1);
    /* the mappings stay valid */
    raw->base[0] = 1;
    raw->base[raw->size - 1] = 2;
    CHECK_EQ(raw->base[0] + raw->base[raw->size - 1], 3);
    /* nothing more to unlink */
    got.n = 0;
    fm_segment_unlink_own(collect_cb, &got);
    CHECK_EQ(got.n, 0);
    fm_segment_unlink_own(NULL, NULL);

    /* the unlinked arenas are no longer allocated from: a new one */
    fm_segment *seg;
    uint64_t off;
    int created = 0;
    CHECK_ST(alloc_block(48, TAG, &seg, &off, &created), FM_OK);
    CHECK_EQ(created, 1);
    CHECK(fmt_shm_exists(seg->name));
    CHECK(fm_block_payload(seg, off, TAG) != NULL);
    fm_block_decref(seg, off);
    got.n = 0;
    fm_segment_unlink_own(collect_cb, &got);
    CHECK_EQ(got.n, 1);
    CHECK(got.n >= 1 && strcmp(got.name[0], seg->name) == 0);
    CHECK(!fmt_shm_exists(seg->name));
}

/* ------------------------------------------------- reservation and release */

static int
mapped_here(const char *name)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (f == NULL)
        return -1;
    char line[512];
    int found = 0;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, name) != NULL;
    fclose(f);
    return found;
}

/* fm_segment_create allocates every page at once (so that a later first
 * touch can never die of SIGBUS): the file's blocks cover its size. */
static void
test_create_reserves_pages(void)
{
    fm_segment *seg = NULL;
    CHECK_ST(fm_segment_create(4u << 20, &seg), FM_OK);
    if (seg == NULL)
        return;
    fmt_track(seg->name);
    char path[128];
    snprintf(path, sizeof path, "/dev/shm%.60s", seg->name);
    struct stat sb;
    CHECK_EQ(stat(path, &sb), 0);
    CHECK_MSG((uint64_t)sb.st_blocks * 512 >= seg->size, "%llu bytes allocated of %zu",
              (unsigned long long)sb.st_blocks * 512, seg->size);
    fm_segment_destroy(seg, 1);
    CHECK(!fmt_shm_exists(path + strlen("/dev/shm")));
}

/* In a private 1 MiB /dev/shm (a child in its own mount namespace; root
 * only, else skipped): a segment that does not fit is FM_ERRNO/ENOSPC and
 * leaves no file; one that fits is fine; the arena allocator and a huge
 * block fail the same way. */
static void
test_create_enospc(void)
{
    pid_t pid = fmt_fork();
    if (pid == 0) {
        if (unshare(CLONE_NEWNS) != 0 ||
            mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
            mount("tmpfs", "/dev/shm", "tmpfs", 0, "size=1m") != 0)
            _exit(77);
        fm_segment *seg = NULL;
        errno = 0;
        if (fm_segment_create(2u << 20, &seg) != FM_ERRNO || errno != ENOSPC)
            _exit(1);
        DIR *d = opendir("/dev/shm");
        struct dirent *e;
        int left = 0;
        while (d && (e = readdir(d)) != NULL)
            left += strncmp(e->d_name, "fastmp-", 7) == 0;
        if (d)
            closedir(d);
        if (left != 0)
            _exit(2);
        if (fm_segment_create(256u << 10, &seg) != FM_OK)
            _exit(3);
        memset(seg->base, 1, seg->size);        /* reserved: touching it is fine */
        fm_segment_destroy(seg, 1);
        fm_segment *hseg, *created;
        uint64_t off;
        errno = 0;
        if (fm_block_alloc(3u << 20, 7, &hseg, &off, &created) != FM_ERRNO || errno != ENOSPC)
            _exit(4);
        _exit(0);
    }
    int rc = fmt_reap(pid);
    if (rc == 77) {
        printf("  (skipped: no private tmpfs /dev/shm without root)\n");
        return;
    }
    CHECK_EQ(rc, 0);
}

/* Every create and attach counts one local user; the last release of a
 * segment this process need not unlink unmaps it and drops it from the
 * table (the file stays: release never unlinks). */
static void
test_release_unmaps(void)
{
    fm_segment *seg = NULL, *again = NULL;
    CHECK_ST(fm_segment_create(page, &seg), FM_OK);
    if (seg == NULL)
        return;
    char name[FM_SHM_NAME_MAX];
    snprintf(name, sizeof name, "%s", seg->name);
    fmt_track(name);
    CHECK_ST(fm_segment_attach(name, &again), FM_OK);
    CHECK(again == seg);
    CHECK_EQ(seg->users, 2);
    /* created here and not unlinked: stays listed (the exit must unlink it) */
    fm_segment_release(seg);
    fm_segment_release(seg);
    CHECK_EQ(mapped_here(name), 1);
    fm_segment_disown(seg);
    fm_segment_release(seg);            /* users was 0 already: now it goes */
    CHECK_EQ(mapped_here(name), 0);
    CHECK(fmt_shm_exists(name));
    /* attached again: a fresh mapping, one user, released: unmapped */
    CHECK_ST(fm_segment_attach(name, &again), FM_OK);
    CHECK_EQ(again->users, 1);
    CHECK_EQ(mapped_here(name), 1);
    fm_segment_release(again);
    CHECK_EQ(mapped_here(name), 0);
    /* 1000 attach/release cycles leave no mapping behind */
    for (int i = 0; i < 1000; i++) {
        CHECK_ST(fm_segment_attach(name, &again), FM_OK);
        fm_segment_release(again);
    }
    CHECK_EQ(mapped_here(name), 0);
    shm_unlink(name);
}

int
main(int argc, char **argv)
{
    (void)argc;
    fmt_start();
    page = sysconf(_SC_PAGESIZE);
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        snprintf(self, sizeof self, "%s", argv[0]);
        n = (ssize_t)strlen(self);
    }
    self[n] = '\0';
    snprintf(helper_path, sizeof helper_path, "%.4000s/shm_attach_helper", dirname(self));
    if (access(helper_path, X_OK) != 0) {
        fprintf(stderr, "missing %s (build it with make)\n", helper_path);
        return 2;
    }

    printf("test_shm\n");
    RUN(test_create);
    RUN(test_attach_in_process);
    RUN(test_attach_forked_child);
    RUN(test_attach_exec_helper);
    RUN(test_10000_blocks_one_arena);
    RUN(test_sizes_and_classes);
    RUN(test_too_large);
    RUN(test_payload_rejects);
    RUN(test_reuse);
    RUN(test_threads_alloc_free);
    RUN(test_processes_alloc_free);
    RUN(test_block_in_exec_helper);
    RUN(test_unlink_own);
    RUN(test_huge_alloc);
    RUN(test_huge_shared);
    RUN(test_huge_unlink_own);
    RUN(test_create_reserves_pages);
    RUN(test_create_enospc);
    RUN(test_release_unmaps);
    return fmt_finish();
}
