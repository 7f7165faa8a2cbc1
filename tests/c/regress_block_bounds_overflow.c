/* REGRESSION (csrc/core/shm.c, fixed): these used to fail.
 *
 * 1. fm_block_alloc(): `class_size(cls) < size + sizeof(fm_block_header)`
 *    wraps for size > SIZE_MAX - 16: the request for (almost) SIZE_MAX bytes
 *    gets FM_OK and a 64-byte block (48 usable) instead of FM_NOMEM.  No
 *    caller passes such a size today (sync.c uses sizeof of fixed structs),
 *    but a future Array/Value size computed from user input would.
 *
 * 2. fm_block_payload(): `offset + 64 > seg->size` wraps for
 *    offset = 2^64 - 64 (a multiple of 64, >= HEADER_SPACE): the bound
 *    passes and the header is read at seg->base - 64, outside the mapping.
 *    If those bytes look like a live block header the function returns a
 *    pointer outside the segment; if the page below is unmapped it faults.
 *    Offsets arrive from other processes (pickled handles), so a corrupt one
 *    should give NULL, never a crash. */
#include "check.h"

static void
test_alloc_size_wraps(void)
{
    size_t sizes[] = {SIZE_MAX, SIZE_MAX - 8, SIZE_MAX - 15};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        fm_segment *seg = NULL, *created = NULL;
        uint64_t off = 0;
        int st = fm_block_alloc(sizes[i], 1, &seg, &off, &created);
        if (created)
            fmt_track(created->name);
        CHECK_MSG(st == FM_NOMEM, "fm_block_alloc(SIZE_MAX - %zu) gave %s%s", SIZE_MAX - sizes[i],
                  fmt_st(st), st == FM_OK ? " (a 64-byte block)" : "");
        if (st == FM_OK)
            fm_block_decref(seg, off);
    }
}

static void
test_payload_offset_wraps(void)
{
    /* A fake arena whose 64 bytes below base hold a valid-looking header:
     * where the wrapped offset points. */
    static _Alignas(4096) unsigned char mem[3 * 4096];
    fm_segment seg;
    memset(&seg, 0, sizeof seg);
    seg.base = mem + 4096;
    seg.size = 2 * 4096;
    ((fm_arena_header *)seg.base)->magic = FM_ARENA_MAGIC;
    fm_block_header *below = (fm_block_header *)(seg.base - 64);
    below->magic = FM_BLOCK_MAGIC;
    below->cls = 0;
    below->tag = 7;
    atomic_store(&below->refs, 1);
    void *p = fm_block_payload(&seg, UINT64_MAX - 63, 7);
    CHECK_MSG(p == NULL, "offset 2^64-64 gave payload %p, outside [%p, %p)", p,
              (void *)seg.base, (void *)(seg.base + seg.size));

    /* The same on a real arena, in a child, with the page below it made
     * inaccessible when it is free: the read faults. */
    fm_segment *aseg = NULL, *created = NULL;
    uint64_t off;
    CHECK_ST(fm_block_alloc(48, 7, &aseg, &off, &created), FM_OK);
    if (created)
        fmt_track(created->name);
    pid_t pid = fmt_fork();
    if (pid == 0) {
        long page = sysconf(_SC_PAGESIZE);
        void *g = mmap(aseg->base - page, (size_t)page, PROT_NONE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        int guarded = g == (void *)(aseg->base - page);
        void *q = fm_block_payload(aseg, UINT64_MAX - 63, 7);
        _exit(q == NULL ? 0 : guarded ? 2 : 3);
    }
    int rc = fmt_reap(pid);
    CHECK_MSG(rc == 0, "fm_block_payload(arena, 2^64-64) in a child: %s",
              rc == 128 + SIGSEGV ? "SIGSEGV" : rc == 0 ? "NULL" : "returned a pointer");
    fm_block_decref(aseg, off);
}

int
main(void)
{
    fmt_start();
    printf("regress_block_bounds_overflow (regression test)\n");
    RUN(test_alloc_size_wraps);
    RUN(test_payload_offset_wraps);
    return fmt_finish();
}
