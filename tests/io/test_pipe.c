/* Tests for the pipe stage and the read-ahead stage: bytes arrive in order through the helper
 * thread, errors of the stages below come back to the caller (after the bytes before them), an
 * unclosed pipe aborts its sink, a read-ahead freed early stops. Runs under TSan. */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "cairn/digest.h"
#include "cairn/io.h"
#include "common/util.h"
#include "test.h"

static uint8_t *pattern(size_t n)
{
    uint8_t *d = xmalloc(n);
    uint32_t x = 99;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        d[i] = (uint8_t)(x >> 24);
    }
    return d;
}

/* Write len bytes through pipe -> hash -> memory in uneven pieces; check bytes and digest. */
static void round_trip(size_t len)
{
    struct cairn_err err;
    uint8_t *data = pattern(len);
    struct cairn_writer *mem = cairn_mem_writer_new(SIZE_MAX);
    struct cairn_writer *h = cairn_hash_writer_new(mem);
    struct cairn_writer *p = cairn_pipe_writer_new(h);
    static const size_t steps[] = {1, 77777, 262144, 3, 1 << 20, 4096};
    for (size_t off = 0, i = 0; off < len; i++) {
        size_t n = steps[i % 6] < len - off ? steps[i % 6] : len - off;
        CHECK_OK(cairn_writer_write(p, data + off, n, &err), &err);
        off += n;
    }
    CHECK_OK(cairn_writer_close(p, &err), &err);
    CHECK_EQ_INT(p->bytes, len);
    CHECK_EQ_INT(h->bytes, len);
    size_t got;
    const uint8_t *out = cairn_mem_writer_data(mem, &got);
    CHECK(got == len && (len == 0 || memcmp(out, data, len) == 0));
    uint8_t d1[32], d2[32];
    cairn_hash_writer_digest(h, d1);
    cairn_sha256_oneshot(data, len, d2);
    CHECK(memcmp(d1, d2, 32) == 0);
    cairn_writer_free(p);
    free(data);
}

TEST(pipe_round_trip_sizes)
{
    round_trip(0);
    round_trip(1);
    round_trip(CAIRN_IO_BUFSIZE);
    round_trip(5 * (1 << 20) + 11);
}

static void *round_trip_thread(void *arg)
{
    (void)arg;
    round_trip(3 * (1 << 20) + 5);
    return NULL;
}

TEST(pipes_in_parallel)
{
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        CHECK(pthread_create(&t[i], NULL, round_trip_thread, NULL) == 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
}

TEST(pipe_reports_errors_from_below)
{
    struct cairn_err err;
    uint8_t *data = pattern(4 << 20);
    struct cairn_writer *p = cairn_pipe_writer_new(cairn_mem_writer_new(1 << 20));
    int rc = CAIRN_OK;
    for (size_t off = 0; off < (4u << 20) && rc == CAIRN_OK; off += 65536)
        rc = cairn_writer_write(p, data + off, 65536, &err);
    if (rc == CAIRN_OK) /* the failure may only be seen when closing */
        rc = cairn_writer_close(p, &err);
    CHECK_ERR(rc, CAIRN_E_INVALID, &err, "exceeds");
    /* sticky */
    CHECK_ERR(cairn_writer_write(p, data, 1, &err), CAIRN_E_INVALID, &err, "exceeds");
    CHECK_ERR(cairn_writer_close(p, &err), CAIRN_E_INVALID, &err, "exceeds");
    cairn_writer_free(p);
    free(data);
}

TEST(unclosed_pipe_aborts_its_sink)
{
    struct cairn_err err;
    char *path = path_join(test_tmpdir(), "piped.bin");
    struct cairn_writer *f;
    CHECK_OK(cairn_atomic_file_writer_open(path, 0600, 0, &f, &err), &err);
    CHECK(f != NULL);
    struct cairn_writer *p = cairn_pipe_writer_new(f);
    uint8_t *data = pattern(2 << 20);
    CHECK_OK(cairn_writer_write(p, data, 2 << 20, &err), &err);
    cairn_writer_free(p);
    CHECK(access(path, F_OK) != 0);
    /* nothing else left behind in the directory but what other tests made */
    free(data);
    free(path);
}

int main(int c, char **v)
{
    return test_main(c, v);
}

/* ---- the read-ahead stage ---- */

/* Read len bytes through read-ahead over memory in uneven pieces: the same bytes, in order. */
static void read_ahead_round_trip(size_t len)
{
    struct cairn_err err;
    uint8_t *data = pattern(len), *out = xmalloc(len + 1);
    struct cairn_reader *r = cairn_pipe_reader_new(cairn_mem_reader_new(data, len));
    static const size_t steps[] = {1, 77777, 262144, 3, 1 << 20, 4096};
    size_t off = 0, got = 1;
    for (size_t i = 0; got > 0; i++) {
        size_t cap = steps[i % 6] < len + 1 - off ? steps[i % 6] : len + 1 - off;
        CHECK_OK(cairn_reader_read(r, out + off, cap, &got, &err), &err);
        off += got;
        CHECK(off <= len);
        if (off > len)
            break;
    }
    CHECK_EQ_INT(off, len);
    CHECK(len == 0 || memcmp(out, data, len) == 0);
    cairn_reader_free(r);
    free(out);
    free(data);
}

TEST(read_ahead_round_trip_sizes)
{
    size_t sizes[] = {0, 1, 262143, 262144, 262145, 3 * 262144 + 7, (5u << 20) + 3};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        read_ahead_round_trip(sizes[i]);
}

/* A decrypting source that fails near its end: the bytes before come through, then its
 * error, and again on every later read. */
TEST(read_ahead_reports_errors_after_the_bytes_before)
{
    struct cairn_err err;
    static const uint8_t key[CAIRN_AEAD_KEY_LEN] = {7};
    size_t len = 1u << 20;
    uint8_t *data = pattern(len);
    struct cairn_writer *mem = cairn_mem_writer_new(SIZE_MAX);
    struct cairn_writer *w = cairn_aead_writer_new(mem, key);
    CHECK_OK(cairn_writer_write(w, data, len, &err), &err);
    CHECK_OK(cairn_writer_close(w, &err), &err);
    size_t n;
    const uint8_t *enc = cairn_mem_writer_data(mem, &n);
    uint8_t *bad = xmalloc(n);
    memcpy(bad, enc, n);
    bad[n - 40] ^= 0x01; /* in the last chunk */
    struct cairn_reader *r =
        cairn_pipe_reader_new(cairn_aead_reader_new(cairn_mem_reader_new(bad, n), key));
    uint8_t *out = xmalloc(len);
    size_t off = 0, got = 1;
    int rc = CAIRN_OK;
    while (rc == CAIRN_OK && got > 0 && off < len) {
        rc = cairn_reader_read(r, out + off, len - off, &got, &err);
        off += rc == CAIRN_OK ? got : 0;
    }
    CHECK_EQ_INT(rc, CAIRN_E_SEAL);
    CHECK(off >= len - 65536 && off < len && memcmp(out, data, off) == 0);
    CHECK_EQ_INT(cairn_reader_read(r, out, 10, &got, &err), CAIRN_E_SEAL);
    cairn_reader_free(r);
    cairn_writer_free(w);
    free(out);
    free(bad);
    free(data);
}

/* Freed after a few bytes of a long source: the helper stops, nothing hangs or leaks. */
TEST(read_ahead_freed_early)
{
    struct cairn_err err;
    size_t len = 8u << 20;
    uint8_t *data = pattern(len), buf[10];
    for (int i = 0; i < 20; i++) {
        struct cairn_reader *r = cairn_pipe_reader_new(cairn_mem_reader_new(data, len));
        size_t got;
        if (i % 2)
            CHECK_OK(cairn_reader_read(r, buf, sizeof(buf), &got, &err), &err);
        cairn_reader_free(r);
    }
    free(data);
}
