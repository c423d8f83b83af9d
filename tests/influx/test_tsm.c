/* Unit tests of the TSM block codecs and the time-window filter of shard exports: round trips
 * of every value type, encodings influxd writes (simple8b, run-length) decoded, a file cut at
 * many windows with its new index checked, and every byte of a file flipped (XOR) giving a
 * clean error or a valid file, never a crash. The end-to-end check against a real influxd is
 * test_shard_export.py. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <libdeflate.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "influx/tsm.h"
#include "test.h"

static uint64_t rnd_state = 88172645463325252ull;
static uint64_t rnd(void)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return rnd_state;
}

static void be_put(uint8_t *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

/* Encode values [lo, hi) of v as type and decode them again into back. */
static void round_trip(uint8_t type, const struct tsm_values *v, size_t lo, size_t hi,
                       struct tsm_values *back)
{
    struct buf b = {0};
    struct cairn_err err;
    tsm_encode_values(type, v, lo, hi, &b);
    CHECK_OK(tsm_decode_values(type, b.p, b.len, back, &err), &err);
    CHECK_EQ_INT(back->n, hi - lo);
    buf_free(&b);
}

TEST(values_round_trip)
{
    struct tsm_values v = {0}, back = {0};
    v.u = xcalloc(3000, sizeof(uint64_t));
    v.n = v.cap = 3000;
    double specials[] = {0.0, -0.0, 1.5, -1e308, 4.9e-324, INFINITY, -INFINITY, 3.14159, 1e-300};
    for (size_t i = 0; i < v.n; i++) {
        double d = i % 7 == 0 ? specials[(i / 7) % 9] : i % 5 == 0 ? (double)i : (double)rnd() / 3;
        if (i % 11 == 0 && i > 0) /* repeats */
            memcpy(&d, &v.u[i - 1], 8);
        memcpy(&v.u[i], &d, 8);
    }
    size_t cuts[][2] = {{0, 3000}, {0, 1}, {1, 2}, {17, 2999}, {1000, 1001}, {2999, 3000}};
    for (size_t c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
        round_trip(TSM_FLOAT, &v, cuts[c][0], cuts[c][1], &back);
        CHECK(memcmp(back.u, v.u + cuts[c][0], back.n * 8) == 0);
    }
    for (size_t i = 0; i < v.n; i++)
        v.u[i] = i % 13 == 0 ? (uint64_t)INT64_MIN : i % 17 == 0 ? (uint64_t)INT64_MAX : rnd();
    for (size_t c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
        round_trip(TSM_INTEGER, &v, cuts[c][0], cuts[c][1], &back);
        CHECK(memcmp(back.u, v.u + cuts[c][0], back.n * 8) == 0);
        round_trip(TSM_UNSIGNED, &v, cuts[c][0], cuts[c][1], &back);
        CHECK(memcmp(back.u, v.u + cuts[c][0], back.n * 8) == 0);
    }
    for (size_t i = 0; i < v.n; i++)
        v.u[i] = rnd() & 1;
    for (size_t c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
        round_trip(TSM_BOOLEAN, &v, cuts[c][0], cuts[c][1], &back);
        CHECK(memcmp(back.u, v.u + cuts[c][0], back.n * 8) == 0);
    }
    /* Strings: varint-prefixed, one longer than a 64 KiB literal. */
    v.n = 0;
    for (size_t i = 0; i < 300; i++) {
        size_t len = i == 7 ? 70000 : i % 3 == 0 ? 0 : rnd() % 40;
        v.u[v.n++] = v.str.len;
        buf_add_uvarint(&v.str, len);
        for (size_t k = 0; k < len; k++)
            buf_addc(&v.str, (uint8_t)rnd());
    }
    struct buf b = {0};
    struct cairn_err err;
    tsm_encode_values(TSM_STRING, &v, 5, 250, &b);
    CHECK_OK(tsm_decode_values(TSM_STRING, b.p, b.len, &back, &err), &err);
    CHECK_EQ_INT(back.n, 245);
    CHECK_EQ_INT(back.str.len, v.u[250] - v.u[5]);
    CHECK(memcmp(back.str.p, v.str.p + v.u[5], back.str.len) == 0);
    buf_free(&b);
    tsm_values_free(&v);
    tsm_values_free(&back);
}

/* Encodings influxd writes and cairn does not: decoded as influxd's decoders do. */
TEST(decode_go_encodings)
{
    struct tsm_values t = {0};
    struct cairn_err err;
    uint8_t rle[32] = {0x21}; /* run-length, divisor 10: 1000, 1050, 1100, 1150 */
    be_put(rle + 1, 1000, 8);
    rle[9] = 5;
    rle[10] = 4;
    CHECK_OK(tsm_decode_times(rle, 11, &t, &err), &err);
    CHECK_EQ_INT(t.n, 4);
    CHECK_EQ_INT(t.u[3], 1150);
    uint8_t packed[17] = {0x10}; /* simple8b: first 77, then one 60-bit delta of 7 */
    be_put(packed + 1, 77, 8);
    be_put(packed + 9, 15ull << 60 | 7, 8);
    CHECK_OK(tsm_decode_times(packed, 17, &t, &err), &err);
    CHECK_EQ_INT(t.n, 2);
    CHECK_EQ_INT(t.u[1], 84);
    be_put(packed + 9, 1ull << 60, 8); /* selector 1: 120 ones */
    CHECK_OK(tsm_decode_times(packed, 17, &t, &err), &err);
    CHECK_EQ_INT(t.n, 121);
    CHECK_EQ_INT(t.u[120], 197);
    uint8_t irle[32] = {0x20}; /* integers 5, 3, 1, -1: zigzag 10, delta zigzag(-2) = 3 */
    be_put(irle + 1, 10, 8);
    irle[9] = 3;
    irle[10] = 3;
    CHECK_OK(tsm_decode_values(TSM_INTEGER, irle, 11, &t, &err), &err);
    CHECK_EQ_INT(t.n, 4);
    CHECK_EQ_INT((int64_t)t.u[3], -1);
    uint8_t ipack[17] = {0x10}; /* 10, then deltas +3 (zigzag 6) and -1 (zigzag 1) */
    be_put(ipack + 1, 20, 8);
    be_put(ipack + 9, 14ull << 60 | 6 | 1ull << 30, 8);
    CHECK_OK(tsm_decode_values(TSM_INTEGER, ipack, 17, &t, &err), &err);
    CHECK_EQ_INT(t.n, 3);
    CHECK_EQ_INT(t.u[1], 13);
    CHECK_EQ_INT(t.u[2], 12);
    /* Damaged: a cut stream, an overlong count, a bad selector's worth of bytes. */
    CHECK_ERR(tsm_decode_times(rle, 9, &t, &err), CAIRN_E_CORRUPT, &err, "TSM block");
    irle[10] = 0xff; /* count varint never ends */
    CHECK_ERR(tsm_decode_values(TSM_INTEGER, irle, 11, &t, &err), CAIRN_E_CORRUPT, &err, "TSM");
    CHECK_ERR(tsm_decode_values(TSM_INTEGER, ipack, 16, &t, &err), CAIRN_E_CORRUPT, &err, "TSM");
    uint8_t snappy[] = {0x10, 10, 0x01 | (2 << 2), 5}; /* a copy before any literal */
    CHECK_ERR(tsm_decode_values(TSM_STRING, snappy, sizeof(snappy), &t, &err), CAIRN_E_CORRUPT,
              &err, "snappy");
    tsm_values_free(&t);
}

/* A TSM file: keys "a" (floats) and "b" (integers), n points each at times 10*i, blocks of
 * 1000; written as influxd lays it out. */
static int make_tsm(size_t n)
{
    int fd = open(test_tmpdir(), O_TMPFILE | O_RDWR, 0600);
    CHECK(fd >= 0);
    struct buf f = {0}, idx = {0};
    buf_add(&f, "\x16\xd1\x16\xd1\x01", 5);
    struct tsm_values v = {0};
    v.u = xcalloc(n, 8);
    v.n = v.cap = n;
    uint64_t *t = xcalloc(n, 8);
    for (uint8_t key = 0; key < 2; key++) {
        size_t blocks = (n + 999) / 1000;
        uint8_t h[6] = {
            0, 1, (uint8_t)('a' + key), key ? TSM_INTEGER : TSM_FLOAT, 0, (uint8_t)blocks};
        buf_add(&idx, h, 6);
        for (size_t i = 0; i < n; i++) {
            t[i] = 10 * i;
            double d = (double)i / 4;
            memcpy(&v.u[i], &d, 8);
            if (key)
                v.u[i] = i * 3;
        }
        for (size_t lo = 0; lo < n; lo += 1000) {
            size_t hi = lo + 1000 < n ? lo + 1000 : n;
            struct buf blk = {0}, ts = {0};
            tsm_encode_times(t + lo, hi - lo, &ts);
            buf_addc(&blk, key ? TSM_INTEGER : TSM_FLOAT);
            buf_add_uvarint(&blk, ts.len);
            buf_add(&blk, ts.p, ts.len);
            tsm_encode_values(key ? TSM_INTEGER : TSM_FLOAT, &v, lo, hi, &blk);
            uint8_t e[28], crc[4];
            be_put(e, t[lo], 8);
            be_put(e + 8, t[hi - 1], 8);
            be_put(e + 16, f.len, 8);
            be_put(e + 24, blk.len + 4, 4);
            buf_add(&idx, e, 28);
            be_put(crc, libdeflate_crc32(0, blk.p, blk.len), 4);
            buf_add(&f, crc, 4);
            buf_add(&f, blk.p, blk.len);
            buf_free(&blk);
            buf_free(&ts);
        }
    }
    uint8_t foot[8];
    be_put(foot, f.len, 8);
    buf_add(&f, idx.p, idx.len);
    buf_add(&f, foot, 8);
    CHECK(write(fd, f.p, f.len) == (ssize_t)f.len);
    buf_free(&f);
    buf_free(&idx);
    tsm_values_free(&v);
    free(t);
    return fd;
}

static int filter(int in, int64_t s, int64_t e, int *out, enum tsm_verdict *v,
                  struct cairn_err *err)
{
    *out = open(test_tmpdir(), O_TMPFILE | O_RDWR, 0600);
    uint64_t size;
    int rc = tsm_filter(in, *out, s, e, test_tmpdir(), v, &size, err);
    if (rc == CAIRN_OK && *v == TSM_FILTERED)
        CHECK_EQ_INT(lseek(*out, 0, SEEK_END), size);
    return rc;
}

TEST(filter_windows)
{
    int in = make_tsm(2500), out, again;
    enum tsm_verdict v;
    struct cairn_err err;
    CHECK_OK(filter(in, 0, 24990, &out, &v, &err), &err);
    CHECK_EQ_INT(v, TSM_KEEP_WHOLE);
    close(out);
    CHECK_OK(filter(in, 25000, 99999, &out, &v, &err), &err);
    CHECK_EQ_INT(v, TSM_DROP);
    close(out);
    CHECK_OK(filter(in, 1, 9, &out, &v, &err), &err); /* between two points */
    CHECK_EQ_INT(v, TSM_DROP);
    close(out);
    /* Windows across block edges: the new file's index says exactly the window's points. */
    int64_t wins[][2] = {{5000, 14710}, {0, 0}, {9990, 10000}, {3, 24995}, {12345, 12345 + 7}};
    for (size_t i = 0; i < sizeof(wins) / sizeof(wins[0]); i++) {
        CHECK_OK(filter(in, wins[i][0], wins[i][1], &out, &v, &err), &err);
        CHECK_EQ_INT(v, TSM_FILTERED);
        int64_t lo = (wins[i][0] + 9) / 10 * 10, hi = wins[i][1] / 10 * 10;
        CHECK_OK(filter(out, lo, hi, &again, &v, &err), &err);
        CHECK_EQ_INT(v, TSM_KEEP_WHOLE);
        close(again);
        if (lo > 0) { /* the point before the window is gone */
            CHECK_OK(filter(out, 0, lo - 1, &again, &v, &err), &err);
            CHECK_EQ_INT(v, TSM_DROP);
            close(again);
        }
        CHECK_OK(filter(out, hi + 1, INT64_MAX, &again, &v, &err), &err);
        CHECK_EQ_INT(v, TSM_DROP);
        close(again);
        close(out);
    }
    close(in);
}

/* Every byte flipped in turn: a clean error or a file, never a crash or a read past a block
 * (run under ASan in the sanitizer build). */
TEST(filter_flipped_bytes)
{
    int in = make_tsm(300);
    off_t size = lseek(in, 0, SEEK_END);
    uint8_t *orig = xmalloc((size_t)size);
    CHECK(pread(in, orig, (size_t)size, 0) == size);
    size_t errors = 0;
    for (off_t i = 0; i < size; i++) {
        uint8_t b = orig[i] ^ 0x5a;
        CHECK(pwrite(in, &b, 1, i) == 1);
        int out;
        enum tsm_verdict v;
        struct cairn_err err;
        int rc = filter(in, 500, 2000, &out, &v, &err);
        CHECK(rc == CAIRN_OK || rc == CAIRN_E_CORRUPT);
        errors += rc != CAIRN_OK;
        close(out);
        CHECK(pwrite(in, orig + i, 1, i) == 1);
    }
    CHECK(errors > (size_t)size / 2); /* block bytes are under a CRC */
    free(orig);
    close(in);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
