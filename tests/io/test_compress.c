/* Tests for the gzip and zstd stages: round trips, interop with zlib/CLI tools, and the
 * exact errors for truncated, corrupt and trailing input. */
#include <stdlib.h>
#include <unistd.h>
#include <zlib.h>

#include "cairn/digest.h"
#include "cairn/io.h"
#include "common/util.h"
#include "test.h"

static uint8_t *make_data(size_t n)
{
    uint8_t *d = xmalloc(n);
    uint32_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        /* half text-like, half noisy so both compress paths are exercised */
        d[i] = (i / 4096) % 2 ? (uint8_t)(x >> 24) : (uint8_t)("cairn snapshot "[i % 15]);
    }
    return d;
}

/* Compress data with the given stage into memory; returns the compressed buffer. */
static uint8_t *compress_with(int zstd, int threads, const uint8_t *data, size_t len,
                              size_t *out_len)
{
    struct cairn_err err;
    struct cairn_writer *mem = cairn_mem_writer_new(SIZE_MAX);
    struct cairn_writer *w =
        zstd ? cairn_zstd_writer_new(mem, 3, threads) : cairn_gzip_writer_new(mem, 6, threads);
    /* odd write sizes cross block boundaries */
    for (size_t off = 0; off < len;) {
        size_t n = len - off < 77777 ? len - off : 77777;
        CHECK_OK(cairn_writer_write(w, data + off, n, &err), &err);
        off += n;
    }
    CHECK_OK(cairn_writer_close(w, &err), &err);
    size_t n;
    const uint8_t *p = cairn_mem_writer_data(mem, &n);
    uint8_t *copy = xmalloc(n);
    if (n > 0)
        memcpy(copy, p, n);
    *out_len = n;
    cairn_writer_free(w);
    return copy;
}

static int decompress_all(struct cairn_reader *r, uint8_t **out, size_t *out_len,
                          struct cairn_err *err)
{
    struct cairn_writer *mem = cairn_mem_writer_new(SIZE_MAX);
    int rc = cairn_copy(r, mem, NULL, err);
    size_t n;
    const uint8_t *p = cairn_mem_writer_data(mem, &n);
    *out = xmalloc(n);
    if (n > 0)
        memcpy(*out, p, n);
    *out_len = n;
    cairn_writer_free(mem);
    return rc;
}

static void round_trip(int zstd, int threads, size_t len)
{
    struct cairn_err err;
    uint8_t *data = make_data(len);
    size_t clen;
    uint8_t *c = compress_with(zstd, threads, data, len, &clen);
    CHECK_EQ_INT(cairn_detect_compression(c, clen),
                 zstd ? CAIRN_COMPRESS_ZSTD : CAIRN_COMPRESS_GZIP);
    if (!zstd) {
        /* Go's header bytes on the first member */
        static const uint8_t hdr[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff};
        CHECK(memcmp(c, hdr, 10) == 0);
    }
    struct cairn_reader *r = cairn_decompress_reader_new(cairn_mem_reader_new(c, clen));
    uint8_t *back;
    size_t blen;
    CHECK_OK(decompress_all(r, &back, &blen, &err), &err);
    CHECK_EQ_INT(blen, len);
    CHECK(blen == len && (len == 0 || memcmp(back, data, len) == 0));
    cairn_reader_free(r);
    free(back);
    free(c);
    free(data);
}

TEST(gzip_round_trip_sizes_and_threads)
{
    round_trip(0, 1, 0);
    round_trip(0, 1, 1);
    round_trip(0, 1, (1 << 20) - 1);
    round_trip(0, 2, (1 << 20));
    round_trip(0, 3, 5 * (1 << 20) + 333);
}

/* Random blocks are stored (the level-1 probe finds no savings), text blocks compressed, and a
 * block that is random except its last quarter is still compressed: every member stays valid
 * and the stream round-trips. */
TEST(gzip_stores_incompressible_blocks)
{
    const size_t mib = 1 << 20, len = 5 * mib;
    uint8_t *data = xmalloc(len);
    uint32_t x = 777;
    for (size_t i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        size_t blk = i / mib, in = i % mib;
        int random = blk == 0 || blk == 2 || (blk == 4 && in < 3 * mib / 4);
        data[i] = random ? (uint8_t)(x >> 24) : (uint8_t)("key=value level=info\n"[i % 21]);
    }
    for (int threads = 1; threads <= 2; threads++) {
        size_t clen;
        uint8_t *c = compress_with(0, threads, data, len, &clen);
        /* two stored MiB plus framing; the text MiBs shrink to almost nothing; the mixed
         * block keeps its random 3/4 and compresses its text quarter */
        CHECK(clen > 2 * mib + 3 * mib / 4 && clen < 2 * mib + 3 * mib / 4 + 16384);
        struct cairn_err err;
        struct cairn_reader *r = cairn_gzip_reader_new(cairn_mem_reader_new(c, clen));
        uint8_t *back;
        size_t blen;
        CHECK_OK(decompress_all(r, &back, &blen, &err), &err);
        CHECK(blen == len && memcmp(back, data, len) == 0);
        cairn_reader_free(r);
        free(back);
        free(c);
    }
    free(data);
}

TEST(zstd_round_trip_sizes_and_threads)
{
    round_trip(1, 1, 0);
    round_trip(1, 1, 1);
    round_trip(1, 2, 3 * (1 << 20) + 17);
}

TEST(gzip_output_is_read_by_gnu_gzip)
{
    size_t len = 3 * (1 << 20) + 5, clen;
    uint8_t *data = make_data(len);
    uint8_t *c = compress_with(0, 2, data, len, &clen);
    char *gz = path_join(test_tmpdir(), "x.gz");
    char *raw = path_join(test_tmpdir(), "x.raw");
    FILE *f = fopen(gz, "wb");
    fwrite(c, 1, clen, f);
    fclose(f);
    f = fopen(raw, "wb");
    fwrite(data, 1, len, f);
    fclose(f);
    char *cmd = xasprintf("gzip -t '%s' && gzip -dc '%s' | cmp -s - '%s'", gz, gz, raw);
    CHECK_EQ_INT(system(cmd), 0);
    free(cmd);
    free(gz);
    free(raw);
    free(c);
    free(data);
}

static void expect_gzip_error(const uint8_t *buf, size_t len, const char *msg)
{
    struct cairn_err err;
    struct cairn_reader *r = cairn_gzip_reader_new(cairn_mem_reader_new(buf, len));
    uint8_t *out;
    size_t n;
    CHECK_ERR(decompress_all(r, &out, &n, &err), CAIRN_E_CORRUPT, &err, msg);
    free(out);
    cairn_reader_free(r);
}

TEST(gzip_errors_match_go)
{
    size_t len = 100000, clen;
    uint8_t *data = make_data(len);
    uint8_t *c = compress_with(0, 1, data, len, &clen);
    expect_gzip_error(c, 0, "EOF");
    expect_gzip_error((const uint8_t *)"nope", 4, "unexpected EOF");
    expect_gzip_error((const uint8_t *)"not a gzip stream", 17, "gzip: invalid header");
    for (size_t cut = 1; cut < clen; cut += clen / 50 + 1)
        expect_gzip_error(c, cut, "unexpected EOF");
    expect_gzip_error(c, clen - 1, "unexpected EOF");
    /* trailing non-gzip bytes, even zeros */
    uint8_t *t = xcalloc(clen + 16, 1);
    memcpy(t, c, clen);
    expect_gzip_error(t, clen + 16, "gzip: invalid header");
    /* bad CRC */
    memcpy(t, c, clen);
    t[clen - 6] ^= 0x55;
    expect_gzip_error(t, clen, "gzip: invalid checksum");
    /* bad ISIZE */
    memcpy(t, c, clen);
    t[clen - 1] ^= 0x01;
    expect_gzip_error(t, clen, "gzip: invalid checksum");
    free(t);
    free(c);
    free(data);
}

TEST(gzip_reads_fname_and_multiple_members)
{
    /* zlib-written member with FNAME, followed by one of ours */
    struct cairn_err err;
    uint8_t zbuf[256];
    z_stream zs = {0};
    CHECK_EQ_INT(deflateInit2(&zs, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY), Z_OK);
    gz_header h = {0};
    h.name = (Bytef *)"state.tar";
    deflateSetHeader(&zs, &h);
    zs.next_in = (Bytef *)"hello ";
    zs.avail_in = 6;
    zs.next_out = zbuf;
    zs.avail_out = sizeof(zbuf);
    CHECK_EQ_INT(deflate(&zs, Z_FINISH), Z_STREAM_END);
    size_t n1 = sizeof(zbuf) - zs.avail_out;
    deflateEnd(&zs);
    size_t n2;
    uint8_t *c2 = compress_with(0, 1, (const uint8_t *)"world", 5, &n2);
    uint8_t *all = xmalloc(n1 + n2);
    memcpy(all, zbuf, n1);
    memcpy(all + n1, c2, n2);
    struct cairn_reader *r = cairn_gzip_reader_new(cairn_mem_reader_new(all, n1 + n2));
    uint8_t *out;
    size_t n;
    CHECK_OK(decompress_all(r, &out, &n, &err), &err);
    CHECK(n == 11 && memcmp(out, "hello world", 11) == 0);
    free(out);
    cairn_reader_free(r);
    free(all);
    free(c2);
}

TEST(zstd_errors)
{
    size_t len = 200000, clen;
    uint8_t *data = make_data(len);
    uint8_t *c = compress_with(1, 1, data, len, &clen);
    struct cairn_err err;
    for (size_t cut = 0; cut < clen; cut += clen / 40 + 1) {
        struct cairn_reader *r = cairn_zstd_reader_new(cairn_mem_reader_new(c, cut));
        uint8_t *out;
        size_t n;
        CHECK_EQ_INT(decompress_all(r, &out, &n, &err), CAIRN_E_CORRUPT);
        free(out);
        cairn_reader_free(r);
    }
    uint8_t *t = xcalloc(clen + 8, 1);
    memcpy(t, c, clen);
    struct cairn_reader *r = cairn_zstd_reader_new(cairn_mem_reader_new(t, clen + 8));
    uint8_t *out;
    size_t n;
    CHECK_EQ_INT(decompress_all(r, &out, &n, &err), CAIRN_E_CORRUPT);
    free(out);
    cairn_reader_free(r);
    /* a flipped byte in the middle fails the content checksum or the frame */
    memcpy(t, c, clen);
    t[clen / 2] ^= 0x20;
    r = cairn_zstd_reader_new(cairn_mem_reader_new(t, clen));
    CHECK_EQ_INT(decompress_all(r, &out, &n, &err), CAIRN_E_CORRUPT);
    free(out);
    cairn_reader_free(r);
    free(t);
    free(c);
    free(data);
}

/* A source that fails on its first read, counting frees (the chain must free it once). */
struct failing_source {
    struct cairn_reader base;
    int *freed;
};

static int failing_read(struct cairn_reader *r, void *buf, size_t cap, size_t *got,
                        struct cairn_err *err)
{
    (void)r, (void)buf, (void)cap, (void)got;
    return cairn_err_set(err, CAIRN_E_NETWORK, "connection reset");
}

static void failing_free(struct cairn_reader *r)
{
    ++*((struct failing_source *)r)->freed;
    free(r);
}

static const struct cairn_reader_ops failing_ops = {"failing", failing_read, failing_free, NULL};

/* The auto-detecting reader reads the magic before it builds its prefix stage: a failing first
 * read returns the source's code (also without an err) and the source is freed once, by the
 * chain. */
TEST(decompress_reader_failing_source_is_freed_once)
{
    int freed = 0;
    struct failing_source *f = xcalloc(1, sizeof(*f));
    cairn_reader_init(&f->base, &failing_ops, NULL);
    f->freed = &freed;
    struct cairn_reader *r = cairn_decompress_reader_new(&f->base);
    uint8_t buf[16];
    size_t got;
    CHECK_EQ_INT(cairn_reader_read(r, buf, sizeof(buf), &got, NULL), CAIRN_E_NETWORK);
    struct cairn_err err;
    CHECK_ERR(cairn_reader_read(r, buf, sizeof(buf), &got, &err), CAIRN_E_NETWORK, &err,
              "connection reset");
    CHECK_EQ_INT(freed, 0);
    cairn_reader_free(r);
    CHECK_EQ_INT(freed, 1);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
