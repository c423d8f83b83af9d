/* The Redis source's checks that need no server: CRC-64/Jones (its published check value and
 * a bit-at-a-time reference built from the definition) and the streaming RDB framing check
 * (magic, EOF opcode, trailer), fed in pieces of every size. test_redis.py runs the real
 * server. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "source/redis/redis.h"
#include "test.h"

/* CRC-64/Jones from its definition: reflect each input byte, run the plain MSB-first CRC
 * with polynomial 0xad93d23594c935a9 from 0, reflect the result. Nothing shared with crc64.c. */
static uint64_t reflect(uint64_t v, int bits)
{
    uint64_t r = 0;
    for (int i = 0; i < bits; i++)
        if (v & (1ULL << i))
            r |= 1ULL << (bits - 1 - i);
    return r;
}

static uint64_t crc_reference(const uint8_t *p, size_t n)
{
    uint64_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= reflect(p[i], 8) << 56;
        for (int k = 0; k < 8; k++)
            crc = (crc & (1ULL << 63)) ? (crc << 1) ^ 0xad93d23594c935a9ULL : crc << 1;
    }
    return reflect(crc, 64);
}

TEST(crc64_check_value)
{
    CHECK(redis_crc64(0, "123456789", 9) == 0xe9c6d914c4b8d9caULL);
    CHECK(crc_reference((const uint8_t *)"123456789", 9) == 0xe9c6d914c4b8d9caULL);
    CHECK(redis_crc64(0, "", 0) == 0);
    /* chained calls equal one call */
    uint64_t c = redis_crc64(0, "1234", 4);
    CHECK(redis_crc64(c, "56789", 5) == 0xe9c6d914c4b8d9caULL);
}

TEST(crc64_matches_reference_at_every_length_and_offset)
{
    uint8_t buf[300];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 167 + 13);
    for (size_t off = 0; off < 8; off++)
        for (size_t n = 0; n + off <= sizeof(buf); n += (n < 40 ? 1 : 37)) {
            uint64_t want = crc_reference(buf + off, n);
            if (redis_crc64(0, buf + off, n) != want)
                test_fail(__FILE__, __LINE__, "crc64 of %zu bytes at offset %zu", n, off);
            /* split anywhere */
            size_t k = n / 3;
            CHECK(redis_crc64(redis_crc64(0, buf + off, k), buf + off + k, n - k) == want);
        }
}

/* A small RDB: magic, a body, the EOF opcode and the trailer (crc; 0 for "no checksum"). */
static size_t make_rdb(uint8_t *out, const char *magic, int with_crc)
{
    size_t n = 0;
    memcpy(out, magic, 9);
    n = 9;
    for (int i = 0; i < 1000; i++)
        out[n++] = (uint8_t)(i * 31 + 7);
    out[n++] = 0xff;
    uint64_t crc = with_crc ? redis_crc64(0, out, n) : 0;
    for (int i = 0; i < 8; i++)
        out[n++] = (uint8_t)(crc >> (8 * i));
    return n;
}

/* Feed in pieces of size piece (0: all at once); returns the code, *has_crc set. */
static int check_rdb(const uint8_t *p, size_t n, size_t piece, int *has_crc, struct cairn_err *err)
{
    struct redis_rdb_check k;
    redis_rdb_check_init(&k);
    for (size_t off = 0; off < n;) {
        size_t m = piece == 0 || n - off < piece ? n - off : piece;
        int rc = redis_rdb_check_feed(&k, p + off, m, err);
        if (rc != CAIRN_OK)
            return rc;
        off += m;
    }
    return redis_rdb_check_finish(&k, has_crc, err);
}

TEST(rdb_check_accepts_whole_rdb_in_any_pieces)
{
    uint8_t rdb[1100];
    size_t n = make_rdb(rdb, "REDIS0010", 1);
    size_t pieces[] = {0, 1, 2, 3, 7, 8, 9, 10, 15, 16, 17, 100, 1009};
    for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
        struct cairn_err err = {0};
        int has_crc = -1;
        CHECK_OK(check_rdb(rdb, n, pieces[i], &has_crc, &err), &err);
        CHECK_EQ_INT(has_crc, 1);
    }
    struct redis_rdb_check k;
    redis_rdb_check_init(&k);
    CHECK_OK(redis_rdb_check_feed(&k, rdb, n, NULL), (struct cairn_err *)NULL);
    CHECK_EQ_INT(k.version, 10);
}

TEST(rdb_check_refuses_a_flipped_byte_anywhere)
{
    uint8_t rdb[1100];
    size_t n = make_rdb(rdb, "REDIS0010", 1);
    /* after the magic: the body, the EOF opcode and the trailer itself */
    for (size_t at = 9; at < n; at++) {
        rdb[at] ^= 0x10;
        struct cairn_err err = {0};
        int has_crc = -1;
        int rc = check_rdb(rdb, n, 64, &has_crc, &err);
        if (rc != CAIRN_E_CORRUPT)
            test_fail(__FILE__, __LINE__, "byte %zu flipped: %s", at, cairn_status_name(rc));
        rdb[at] ^= 0x10;
    }
    rdb[500] ^= 1;
    struct cairn_err err = {0};
    int has_crc;
    CHECK_ERR(check_rdb(rdb, n, 0, &has_crc, &err), CAIRN_E_CORRUPT, &err, "RDB checksum mismatch");
}

TEST(rdb_check_zero_trailer_means_no_checksum)
{
    uint8_t rdb[1100];
    size_t n = make_rdb(rdb, "REDIS0010", 0);
    struct cairn_err err = {0};
    int has_crc = -1;
    CHECK_OK(check_rdb(rdb, n, 5, &has_crc, &err), &err);
    CHECK_EQ_INT(has_crc, 0);
}

TEST(rdb_check_framing_errors)
{
    uint8_t rdb[1100];
    struct cairn_err err = {0};
    int has_crc;
    size_t n = make_rdb(rdb, "REDIX0010", 1);
    CHECK_ERR(check_rdb(rdb, n, 4, &has_crc, &err), CAIRN_E_CORRUPT, &err, "not an RDB file");
    CHECK_ERR(check_rdb((const uint8_t *)"+OK\r\n$1\r\nxyzw", 13, 0, &has_crc, &err),
              CAIRN_E_CORRUPT, &err, "starts with \"+OK\\r\\n$1\\r\\n\"");
    n = make_rdb(rdb, "REDIS0004", 1);
    CHECK_ERR(check_rdb(rdb, n, 0, &has_crc, &err), CAIRN_E_UNSUPPORTED, &err, "version 4");
    n = make_rdb(rdb, "REDIS0010", 1);
    CHECK_ERR(check_rdb(rdb, 17, 0, &has_crc, &err), CAIRN_E_CORRUPT, &err, "too short");
    CHECK_ERR(check_rdb(rdb, 3, 0, &has_crc, &err), CAIRN_E_CORRUPT, &err, "too short");
    /* cut before the end: the EOF opcode is not where the trailer starts */
    CHECK_ERR(check_rdb(rdb, n - 20, 3, &has_crc, &err), CAIRN_E_CORRUPT, &err, "EOF opcode");
}

TEST(snapshot_refuses_bad_options_before_connecting)
{
    struct cairn_writer *out = cairn_discard_writer_new();
    struct cairn_err err = {0};
    uint64_t bytes = 1;
    struct redis_conn_opts o = {.host = "127.0.0.1", .port = 70000};
    CHECK_ERR(redis_snapshot(&o, out, &bytes, &err), CAIRN_E_INVALID, &err, "port 70000");
    CHECK_EQ_INT(bytes, 0);
    struct redis_conn_opts u = {.host = "127.0.0.1", .port = 6379, .user = "backup"};
    CHECK_ERR(redis_snapshot(&u, out, NULL, &err), CAIRN_E_INVALID, &err,
              "ACL user 'backup' given without a password");
    cairn_writer_free(out);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
