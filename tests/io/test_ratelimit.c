/* The token bucket behind storage's rate limit (io/ratelimit.h): its accounting, with times
 * given, not measured, so the figures are exact on any machine; and the writer stage passing
 * every byte through in order. */
#include <string.h>

#include "cairn/io.h"
#include "common/util.h"
#include "io/ratelimit.h"
#include "test.h"

#define MS 1000000ull

TEST(burst_then_rate)
{
    struct tbucket b;
    tbucket_init(&b, 1000, 100);                         /* 1000 B/s, 100 B burst */
    CHECK_EQ_INT(tbucket_reserve(&b, 100, 0), 0);        /* the burst goes at once */
    CHECK_EQ_INT(tbucket_reserve(&b, 100, 0), 100 * MS); /* then 100 B per 0.1 s */
    CHECK_EQ_INT(tbucket_reserve(&b, 500, 0), 600 * MS); /* queued behind the first */
    /* Two seconds later 2000 B came back: the debt of 600 B is paid and the bucket is full
     * again, but it holds at most 100. */
    CHECK_EQ_INT(tbucket_reserve(&b, 100, 2000 * MS), 0);
    CHECK_EQ_INT(tbucket_reserve(&b, 50, 2000 * MS), 50 * MS);
    CHECK_EQ_INT(b.granted, 850);
    CHECK_EQ_INT(b.waited_ns, 750 * MS);
    tbucket_destroy(&b);
}

/* A sender that waits what it is told sends N bytes in (N - burst) / rate, whatever the sizes
 * of its writes; two senders share the rate. */
TEST(long_run_keeps_the_rate)
{
    struct tbucket b;
    tbucket_init(&b, 50u << 20, 5u << 20); /* rate-limit = 50M */
    uint64_t t = 0, sent = 0;
    size_t sizes[] = {1, 4096, 65536, 1u << 20, 7, 300000};
    for (int i = 0; sent < (500u << 20); i++) {
        size_t n = sizes[i % 6];
        t += tbucket_reserve(&b, n, t);
        sent += n;
    }
    double want = (double)(sent - (5u << 20)) / (50u << 20) * 1e9;
    CHECK(t > want - 1e6 && t < want + 1e6); /* within 1 ms of 9.9 s */
    tbucket_destroy(&b);

    tbucket_init(&b, 1000, 1);
    uint64_t a = tbucket_reserve(&b, 1001, 0), c = tbucket_reserve(&b, 1000, 0);
    CHECK_EQ_INT(a, 1000 * MS);
    CHECK_EQ_INT(c, 2000 * MS); /* the second waits for the first's bytes too */
    tbucket_destroy(&b);
}

TEST(writer_passes_bytes_in_order)
{
    struct tbucket b;
    tbucket_init(&b, 1u << 30, 1u << 20); /* fast: this is about the bytes, not the time */
    struct cairn_writer *mem = cairn_mem_writer_new(SIZE_MAX);
    struct cairn_writer *w = ratelimit_writer_new(mem, &b, NULL);
    uint8_t buf[300000];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 7);
    struct cairn_err err;
    CHECK_OK(cairn_writer_write(w, buf, sizeof(buf), &err), &err);
    CHECK_OK(cairn_writer_write(w, buf, 10, &err), &err);
    CHECK_OK(cairn_writer_close(w, &err), &err);
    size_t n = 0;
    const uint8_t *p = cairn_mem_writer_data(mem, &n);
    CHECK_EQ_INT(n, sizeof(buf) + 10);
    CHECK(memcmp(p, buf, sizeof(buf)) == 0 && memcmp(p + sizeof(buf), buf, 10) == 0);
    CHECK_EQ_INT(b.granted, sizeof(buf) + 10);
    cairn_writer_free(w);
    tbucket_destroy(&b);

    /* Cancelled while it waits: CAIRN_E_CANCELLED, not a hang. */
    tbucket_init(&b, 1024, 1024);
    volatile int cancel = 1;
    mem = cairn_mem_writer_new(SIZE_MAX);
    w = ratelimit_writer_new(mem, &b, &cancel);
    CHECK_ERR(cairn_writer_write(w, buf, 100000, &err), CAIRN_E_CANCELLED, &err, "cancelled");
    cairn_writer_free(w);
    tbucket_destroy(&b);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
