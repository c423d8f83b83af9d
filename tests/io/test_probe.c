/* The compression trial (io/probe.h): one home for storage's zstd decision and the gzip
 * writer's stored-block decision, with the documented difference between the two uses. */
#include <stdlib.h>

#include "common/util.h"
#include "io/probe.h"
#include "test.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint8_t next_byte(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint8_t)(rng >> 24);
}

/* Random bytes drawn from `alphabet` values: about log2(256/alphabet)/8 compressible. */
static uint8_t *gen(size_t n, unsigned alphabet)
{
    uint8_t *b = xmalloc(n);
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(next_byte() % alphabet);
    return b;
}

TEST(random_data_never_pays_text_always_does)
{
    size_t n = 256 << 10;
    uint8_t *rnd = gen(n, 256);
    static const char line[] = "2026-12-02T10:00:00Z info request served in 12 ms\n";
    char *text = xmalloc(n);
    for (size_t i = 0; i < n; i++)
        text[i] = line[i % (sizeof(line) - 1)];
    for (int use = IO_PROBE_ZSTD; use <= IO_PROBE_DEFLATE; use++) {
        CHECK(io_compress_pays((enum io_probe_use)use, rnd, n) == 0);
        CHECK(io_compress_pays((enum io_probe_use)use, text, n) == 1);
        CHECK(io_compress_pays((enum io_probe_use)use, text, 0) == 0);
    }
    free(rnd);
    free(text);
}

TEST(one_compressible_sample_is_enough)
{
    /* three random samples and one of zeros: the file pays (a mixed file is compressed) */
    size_t n = 4 * IO_PROBE_ZSTD_SAMPLE;
    uint8_t *b = gen(n, 256);
    memset(b + 3 * IO_PROBE_ZSTD_SAMPLE, 0, IO_PROBE_ZSTD_SAMPLE);
    CHECK(io_compress_pays(IO_PROBE_ZSTD, b, n) == 1);
    struct io_probe *p = io_probe_new(IO_PROBE_ZSTD);
    CHECK(io_probe_pays(p, b, 3 * IO_PROBE_ZSTD_SAMPLE) == 0);
    CHECK(io_probe_pays(p, b + 3 * IO_PROBE_ZSTD_SAMPLE, 100) == 1); /* a short last piece */
    io_probe_free(p);
    free(b);
}

TEST(the_two_uses_differ_only_in_the_middle)
{
    /* 200 byte values: entropy coding saves about 4.5 %, above deflate's 1/32 and below
     * zstd's 1/8: the gzip writer still deflates such a block, storage stores such a file */
    uint8_t *b = gen(IO_PROBE_ZSTD_SAMPLE, 200);
    CHECK(io_compress_pays(IO_PROBE_DEFLATE, b, IO_PROBE_DEFLATE_SAMPLE) == 1);
    CHECK(io_compress_pays(IO_PROBE_ZSTD, b, IO_PROBE_ZSTD_SAMPLE) == 0);
    free(b);
    /* 16 values: both pay */
    b = gen(IO_PROBE_ZSTD_SAMPLE, 16);
    CHECK(io_compress_pays(IO_PROBE_DEFLATE, b, IO_PROBE_DEFLATE_SAMPLE) == 1);
    CHECK(io_compress_pays(IO_PROBE_ZSTD, b, IO_PROBE_ZSTD_SAMPLE) == 1);
    free(b);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
