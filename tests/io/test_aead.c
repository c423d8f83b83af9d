/* Tests for the chunked AES-256-GCM stages and key files. */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cairn/digest.h"
#include "cairn/io.h"
#include "common/util.h"
#include "test.h"

static const uint8_t key1[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

static uint8_t *seal(const uint8_t *data, size_t len, size_t *out_len)
{
    struct cairn_err err;
    struct cairn_writer *mem = cairn_mem_writer_new(SIZE_MAX);
    struct cairn_writer *w = cairn_aead_writer_new(mem, key1);
    CHECK_OK(cairn_writer_write(w, data, len, &err), &err);
    CHECK_OK(cairn_writer_close(w, &err), &err);
    size_t n;
    const uint8_t *p = cairn_mem_writer_data(mem, &n);
    uint8_t *c = xmalloc(n);
    memcpy(c, p, n);
    *out_len = n;
    cairn_writer_free(w);
    return c;
}

static int open_all(const uint8_t *c, size_t n, const uint8_t *key, uint8_t **out, size_t *len,
                    struct cairn_err *err)
{
    struct cairn_reader *r = cairn_aead_reader_new(cairn_mem_reader_new(c, n), key);
    struct cairn_writer *mem = cairn_mem_writer_new(SIZE_MAX);
    int rc = cairn_copy(r, mem, NULL, err);
    size_t m;
    const uint8_t *p = cairn_mem_writer_data(mem, &m);
    *out = xmalloc(m);
    if (m > 0)
        memcpy(*out, p, m);
    *len = m;
    cairn_writer_free(mem);
    cairn_reader_free(r);
    return rc;
}

TEST(aead_round_trip_at_chunk_edges)
{
    static const size_t sizes[] = {0, 1, 65535, 65536, 65537, 3 * 65536, 200000};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t len = sizes[i], clen, plen;
        uint8_t *data = xmalloc(len + 1);
        for (size_t j = 0; j < len; j++)
            data[j] = (uint8_t)(j * 31 + i);
        uint8_t *c = seal(data, len, &clen);
        size_t chunks = len == 0 ? 1 : (len + 65535) / 65536;
        CHECK_EQ_INT(clen, 16 + len + 16 * chunks);
        uint8_t *p;
        struct cairn_err err;
        CHECK_OK(open_all(c, clen, key1, &p, &plen, &err), &err);
        CHECK(plen == len && (len == 0 || memcmp(p, data, len) == 0));
        free(p);
        free(c);
        free(data);
    }
}

TEST(aead_detects_tampering_truncation_and_wrong_key)
{
    size_t len = 3 * 65536 + 100, clen, plen;
    uint8_t *data = xcalloc(len, 1);
    uint8_t *c = seal(data, len, &clen);
    uint8_t *p;
    struct cairn_err err;
    uint8_t key2[32];
    memcpy(key2, key1, 32);
    key2[0] ^= 1;
    CHECK_ERR(open_all(c, clen, key2, &p, &plen, &err), CAIRN_E_SEAL, &err, "authentication");
    free(p);
    /* dropping whole trailing chunks must fail: the last-chunk flag is missing */
    CHECK_ERR(open_all(c, 16 + 2 * (65536 + 16), key1, &p, &plen, &err), CAIRN_E_SEAL, &err,
              "authentication");
    free(p);
    for (size_t cut = 0; cut < clen; cut += 9973) {
        int rc = open_all(c, cut, key1, &p, &plen, &err);
        CHECK(rc == CAIRN_E_SEAL || rc == CAIRN_E_CORRUPT);
        free(p);
    }
    uint8_t *t = xmalloc(clen + 1);
    for (size_t pos = 8; pos < clen; pos += 7919) {
        memcpy(t, c, clen);
        t[pos] ^= 0x04;
        CHECK_EQ_INT(open_all(t, clen, key1, &p, &plen, &err), CAIRN_E_SEAL);
        free(p);
    }
    /* appended bytes */
    memcpy(t, c, clen);
    t[clen] = 0;
    CHECK_EQ_INT(open_all(t, clen + 1, key1, &p, &plen, &err), CAIRN_E_SEAL);
    free(p);
    free(t);
    free(c);
    free(data);
}

TEST(key_file_formats_and_permissions)
{
    struct cairn_err err;
    uint8_t key[32];
    char *path = path_join(test_tmpdir(), "key");
    FILE *f = fopen(path, "w");
    fprintf(f, "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20\n");
    fclose(f);
    chmod(path, 0600);
    CHECK_OK(cairn_key_load(path, key, &err), &err);
    CHECK(memcmp(key, key1, 32) == 0);
    chmod(path, 0644);
    CHECK_ERR(cairn_key_load(path, key, &err), CAIRN_E_INVALID, &err, "chmod 600");
    char *fix = xasprintf("chmod 600 '%s'", path);
    CHECK(strstr(err.msg, fix) != NULL);
    free(fix);
    chmod(path, 0604); /* others alone are enough */
    CHECK_ERR(cairn_key_load(path, key, &err), CAIRN_E_INVALID, &err, "mode 0604");
    f = fopen(path, "w");
    fprintf(f, "short");
    fclose(f);
    chmod(path, 0600);
    CHECK_ERR(cairn_key_load(path, key, &err), CAIRN_E_INVALID, &err, "64 hex digits");
    f = fopen(path, "wb");
    fwrite(key1, 1, 32, f);
    fclose(f);
    CHECK_OK(cairn_key_load(path, key, &err), &err);
    CHECK(memcmp(key, key1, 32) == 0);
    free(path);
}

/* Only a regular file is a key file: a FIFO would block the open (and the read) forever,
 * a directory or device is a mistake. Refused at once with a usage error naming the file.
 * The alarm only turns a hang into a failure; the calls return immediately. */
TEST(key_file_must_be_a_regular_file)
{
    struct cairn_err err;
    uint8_t key[32];
    char *fifo = path_join(test_tmpdir(), "fifo.key");
    CHECK(mkfifo(fifo, 0600) == 0);
    alarm(300);
    CHECK_ERR(cairn_key_load(fifo, key, &err), CAIRN_E_INVALID, &err, "is not a regular file");
    CHECK(strstr(err.msg, fifo) != NULL);
    CHECK(strstr(err.msg, "a FIFO") != NULL);
    /* with a writer holding it open and the key in the pipe: still refused, never read */
    int w = open(fifo, O_RDWR | O_NONBLOCK);
    CHECK(w >= 0);
    const char *hex = "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20\n";
    CHECK(write(w, hex, strlen(hex)) == (ssize_t)strlen(hex));
    CHECK_ERR(cairn_key_load(fifo, key, &err), CAIRN_E_INVALID, &err, "is not a regular file");
    close(w);
    CHECK_ERR(cairn_key_load(test_tmpdir(), key, &err), CAIRN_E_INVALID, &err,
              "is not a regular file (a directory)");
    CHECK_ERR(cairn_key_load("/dev/null", key, &err), CAIRN_E_INVALID, &err,
              "is not a regular file (a character device)");
    alarm(0);
    CHECK_EQ_INT(cairn_exit_code(CAIRN_E_INVALID), 2);
    free(fifo);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
