/* test_stream.c: the one-way byte stream of a pipe (csrc/core/stream.c):
 * bytes come out in order across the wrap, room and availability are
 * exact, waits time out and wake, corrupt positions are reported, and
 * messages larger than the buffer stream between two processes intact. */
#include "check.h"
#include "stream.h"

#define CAP 4096u

static fm_stream *
shared_stream(size_t cap)
{
    fm_stream *s = fmt_shared_page(fm_stream_bytes(cap));
    CHECK_ST(fm_stream_init(s, cap), FM_OK);
    CHECK_ST(fm_stream_check(s, fm_stream_bytes(cap)), FM_OK);
    return s;
}

static void
test_init_and_check(void)
{
    fm_stream *s = fmt_shared_page(fm_stream_bytes(CAP));
    CHECK_ST(fm_stream_init(s, 1000), FM_CORRUPT);      /* not a power of two */
    CHECK_ST(fm_stream_init(s, 2048), FM_CORRUPT);      /* below the minimum */
    CHECK_ST(fm_stream_check(s, fm_stream_bytes(CAP)), FM_CORRUPT);   /* no magic */
    CHECK_ST(fm_stream_init(s, CAP), FM_OK);
    CHECK_ST(fm_stream_check(s, fm_stream_bytes(CAP) - 1), FM_CORRUPT);  /* too small */
    CHECK_EQ(fm_stream_avail(s), 0);
    CHECK_EQ(fm_stream_room(s), CAP);
    munmap(s, fm_stream_bytes(CAP));
}

static void
test_order_across_the_wrap(void)
{
    fm_stream *s = shared_stream(CAP);
    unsigned char in[3000], out[3000];
    uint32_t next_in = 0, next_out = 0;
    for (int round = 0; round < 50; round++) {
        size_t n = 1000 + (size_t)round * 37 % 2000;
        for (size_t i = 0; i < n; i++)
            in[i] = (unsigned char)(next_in++ * 31u);
        CHECK_EQ(fm_stream_put(s, in, n), n);
        CHECK_EQ(fm_stream_avail(s), n);
        CHECK_EQ(fm_stream_room(s), CAP - n);
        CHECK_EQ(fm_stream_peek(s, out, 4), 4);
        CHECK_EQ(fm_stream_avail(s), n);        /* peek consumes nothing */
        CHECK_EQ(fm_stream_get(s, out, n), n);
        int same = 1;
        for (size_t i = 0; i < n; i++)
            same &= out[i] == (unsigned char)(next_out++ * 31u);
        CHECK_MSG(same, "round %d: bytes out of order", round);
    }
    munmap(s, fm_stream_bytes(CAP));
}

static void
test_full_and_partial(void)
{
    fm_stream *s = shared_stream(CAP);
    unsigned char buf[CAP + 100];
    memset(buf, 7, sizeof buf);
    CHECK_EQ(fm_stream_put(s, buf, sizeof buf), CAP);   /* only what fits */
    CHECK_EQ(fm_stream_room(s), 0);
    CHECK_EQ(fm_stream_put(s, buf, 1), 0);
    uint64_t hdr = 5;
    CHECK_EQ(fm_stream_put2(s, &hdr, sizeof hdr, buf, 5), 0);  /* all or nothing */
    CHECK_EQ(fm_stream_skip(s, 100), 100);
    CHECK_EQ(fm_stream_put2(s, &hdr, sizeof hdr, buf, 100), 0);
    CHECK_EQ(fm_stream_put2(s, &hdr, sizeof hdr, buf, 92), 1);
    CHECK_EQ(fm_stream_room(s), 0);
    CHECK_ST(fm_stream_wait_room(s, 0, 0), FM_TIMEOUT);
    CHECK_EQ(fm_stream_get(s, buf, sizeof buf), CAP);
    CHECK_EQ(fm_stream_avail(s), 0);
    CHECK_EQ(fm_stream_get(s, buf, 1), 0);
    int64_t t0 = fm_now_ns();
    CHECK_ST(fm_stream_wait_avail(s, fm_deadline_after(0.05), 0), FM_TIMEOUT);
    CHECK(fmt_secs_since(t0) >= 0.045);
    munmap(s, fm_stream_bytes(CAP));
}

static void
test_corrupt_positions(void)
{
    fm_stream *s = shared_stream(CAP);
    unsigned char buf[16];
    atomic_store(&s->head, 5 * (uint64_t)CAP);      /* a stray write */
    CHECK_EQ(fm_stream_avail(s), (uint64_t)-1);
    CHECK_EQ(fm_stream_room(s), (uint64_t)-1);
    CHECK_EQ(fm_stream_get(s, buf, sizeof buf), 0);
    CHECK_EQ(fm_stream_put(s, buf, sizeof buf), 0);
    CHECK_ST(fm_stream_wait_avail(s, FM_FOREVER, 0), FM_CORRUPT);
    CHECK_ST(fm_stream_wait_room(s, FM_FOREVER, 0), FM_CORRUPT);
    munmap(s, fm_stream_bytes(CAP));
}

/* Write all of buf, waiting for room (what the pipe's writer does). */
static void
write_all(fm_stream *s, const unsigned char *buf, size_t n)
{
    size_t done = 0;
    while (done < n) {
        size_t put = fm_stream_put(s, buf + done, n - done);
        done += put;
        if (put == 0) {
            int st = fm_stream_wait_room(s, FM_FOREVER, 20000);
            if (st != FM_OK && st != FM_EINTR)
                _exit(3);
        }
    }
}

static void
read_all(fm_stream *s, unsigned char *buf, size_t n)
{
    size_t done = 0;
    while (done < n) {
        size_t got = fm_stream_get(s, buf + done, n - done);
        done += got;
        if (got == 0) {
            int st = fm_stream_wait_avail(s, FM_FOREVER, 20000);
            CHECK(st == FM_OK || st == FM_EINTR);
        }
    }
}

#define NMSG 40

static size_t
msg_size(int i)
{
    return i % 4 == 0 ? 100000u + (size_t)i : (size_t)(i * 97 % 3000);
}

static void
test_messages_stream_between_processes(void)
{
    fm_stream *s = shared_stream(CAP);
    static unsigned char buf[200000];
    pid_t kid = fmt_fork();
    if (kid == 0) {
        for (int i = 0; i < NMSG; i++) {
            uint64_t n = msg_size(i);
            for (size_t j = 0; j < n; j++)
                buf[j] = (unsigned char)(i + j);
            write_all(s, (unsigned char *)&n, sizeof n);
            write_all(s, buf, n);
        }
        _exit(0);
    }
    int ok = 1;
    for (int i = 0; i < NMSG && ok; i++) {
        uint64_t n = 0;
        read_all(s, (unsigned char *)&n, sizeof n);
        ok &= n == msg_size(i);
        if (!ok)
            break;
        read_all(s, buf, n);
        for (size_t j = 0; j < n; j++)
            ok &= buf[j] == (unsigned char)(i + j);
    }
    CHECK_MSG(ok, "a message came out wrong");
    CHECK_EQ(fmt_reap(kid), 0);
    CHECK_EQ(fm_stream_avail(s), 0);
    munmap(s, fm_stream_bytes(CAP));
}

static void
test_sleeping_reader_is_woken(void)
{
    fm_stream *s = shared_stream(CAP);
    pid_t kid = fmt_fork();
    if (kid == 0) {
        fmt_sleep_ms(100);
        fm_stream_put(s, "x", 1);
        _exit(0);
    }
    int64_t t0 = fm_now_ns();
    int st;
    do
        st = fm_stream_wait_avail(s, fm_deadline_after(10.0), 0);
    while (st == FM_EINTR);
    CHECK_ST(st, FM_OK);
    CHECK(fmt_secs_since(t0) < 5.0);
    CHECK_EQ(fmt_reap(kid), 0);
    munmap(s, fm_stream_bytes(CAP));
}

int
main(void)
{
    fmt_start();
    printf("test_stream\n");
    RUN(test_init_and_check);
    RUN(test_order_across_the_wrap);
    RUN(test_full_and_partial);
    RUN(test_corrupt_positions);
    RUN(test_messages_stream_between_processes);
    RUN(test_sleeping_reader_is_woken);
    return fmt_finish();
}
