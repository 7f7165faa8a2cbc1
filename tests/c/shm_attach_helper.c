/* shm_attach_helper.c: run by test_shm through fork + exec, so it starts
 * with a fresh, empty segment table (as a spawned process does) and must
 * attach by name.  The exit status says what went wrong (0: all good).
 *
 *   shm_attach_helper raw   NAME OFFSET EXPECT WRITE
 *       attach NAME; the uint32 at OFFSET must be EXPECT; write WRITE at
 *       OFFSET + 4.
 *   shm_attach_helper block NAME OFFSET TAG EXPECT WRITE
 *       attach the arena NAME; the block at OFFSET with TAG must hold the
 *       uint64 EXPECT; write WRITE after it; take one reference (incref).
 *
 * Both also check that a second attach returns the same table entry, that
 * the segment is not counted as ours (creator 0) and that
 * fm_segment_unlink_own() removes nothing. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "futex.h"
#include "shm.h"
#include "status.h"

static int unlinked;

static void
count_cb(const char *name, void *arg)
{
    (void)name;
    (void)arg;
    unlinked++;
}

static uint64_t
num(const char *s)
{
    return strtoull(s, NULL, 0);
}

int
main(int argc, char **argv)
{
    alarm(30);
    fm_shm_init();
    if (argc < 2)
        return 2;
    int block = strcmp(argv[1], "block") == 0;
    if (argc != (block ? 7 : 6))
        return 2;
    const char *name = argv[2];
    uint64_t offset = num(argv[3]);

    fm_segment *seg = NULL, *again = NULL;
    if (fm_segment_attach(name, &seg) != FM_OK || seg == NULL)
        return 10;
    if (fm_segment_attach(name, &again) != FM_OK || again != seg)
        return 11;
    if (strcmp(seg->name, name) != 0 || seg->creator != 0 || seg->alloc_arena)
        return 12;
    if (offset + 16 > seg->size)
        return 13;

    if (!block) {
        uint32_t expect = (uint32_t)num(argv[4]), write = (uint32_t)num(argv[5]);
        uint32_t v;
        memcpy(&v, seg->base + offset, sizeof v);
        if (v != expect)
            return 20;
        memcpy(seg->base + offset + 4, &write, sizeof write);
    } else {
        uint32_t tag = (uint32_t)num(argv[4]);
        uint64_t expect = num(argv[5]), write = num(argv[6]);
        unsigned char *p = fm_block_payload(seg, offset, tag);
        if (p == NULL)
            return 30;
        if (fm_block_payload(seg, offset, tag + 1) != NULL)
            return 31;
        uint64_t v;
        memcpy(&v, p, sizeof v);
        if (v != expect)
            return 32;
        memcpy(p + 8, &write, sizeof write);
        fm_block_incref(seg, offset);
    }

    fm_segment_unlink_own(count_cb, NULL);
    if (unlinked != 0)
        return 40;
    if (access("/dev/shm", F_OK) == 0) {
        char path[128];
        if (snprintf(path, sizeof path, "/dev/shm%s", name) >= (int)sizeof path)
            return 41;
        if (access(path, F_OK) != 0)
            return 42;
    }
    /* a name that is not ours to attach */
    fm_segment *bad;
    if (fm_segment_attach("/not-fastmp", &bad) != FM_ERRNO)
        return 50;
    return 0;
}
