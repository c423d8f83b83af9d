/* Tests for the IO chain core: sinks, observers, atomic commit/abort. */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cairn/digest.h"
#include "cairn/io.h"
#include "common/util.h"
#include "test.h"

TEST(hash_and_memory_chain)
{
    struct cairn_err err;
    struct cairn_writer *mem = cairn_mem_writer_new(1 << 20);
    struct cairn_writer *h = cairn_hash_writer_new(mem);
    CHECK_OK(cairn_writer_write(h, "ab", 2, &err), &err);
    CHECK_OK(cairn_writer_write(h, "c", 1, &err), &err);
    CHECK_OK(cairn_writer_close(h, &err), &err);
    uint8_t d[32];
    char hex[65];
    cairn_hash_writer_digest(h, d);
    cairn_hex_encode(d, 32, hex);
    CHECK_EQ_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    size_t len;
    const uint8_t *data = cairn_mem_writer_data(mem, &len);
    CHECK(len == 3 && memcmp(data, "abc", 3) == 0);
    CHECK_EQ_INT(h->bytes, 3);
    cairn_writer_free(h);
}

TEST(memory_sink_cap_is_sticky)
{
    struct cairn_err err;
    struct cairn_writer *mem = cairn_mem_writer_new(4);
    CHECK_OK(cairn_writer_write(mem, "abcd", 4, &err), &err);
    CHECK_ERR(cairn_writer_write(mem, "e", 1, &err), CAIRN_E_INVALID, &err, "exceeds 4 bytes");
    CHECK_ERR(cairn_writer_close(mem, &err), CAIRN_E_INVALID, &err, "exceeds");
    cairn_writer_free(mem);
}

TEST(atomic_file_commit_and_abort)
{
    struct cairn_err err;
    char *path = path_join(test_tmpdir(), "out.bin");
    /* Abort: freed before close leaves nothing behind. */
    struct cairn_writer *w;
    CHECK_OK(cairn_atomic_file_writer_open(path, 0600, 0, &w, &err), &err);
    CHECK(w != NULL);
    CHECK_OK(cairn_writer_write(w, "partial", 7, &err), &err);
    cairn_writer_free(w);
    CHECK(access(path, F_OK) != 0);
    char *cmd = xasprintf("test -z \"$(ls -A '%s')\"", test_tmpdir());
    CHECK_EQ_INT(system(cmd), 0);
    free(cmd);
    /* Commit. */
    CHECK_OK(cairn_atomic_file_writer_open(path, 0640, 0, &w, &err), &err);
    CHECK_OK(cairn_writer_write(w, "hello", 5, &err), &err);
    CHECK_OK(cairn_writer_close(w, &err), &err);
    cairn_writer_free(w);
    struct stat st;
    CHECK_EQ_INT(stat(path, &st), 0);
    CHECK_EQ_INT(st.st_size, 5);
    CHECK_EQ_INT(st.st_mode & 0777, 0640);
    /* No replace by default. */
    CHECK_EQ_INT(cairn_atomic_file_writer_open(path, 0600, 0, &w, &err), CAIRN_E_EXISTS);
    CHECK(w == NULL);
    CHECK_EQ_INT(err.code, CAIRN_E_EXISTS);
    /* Reading it back through the hash and limit readers. */
    struct cairn_reader *r;
    CHECK_OK(cairn_file_reader_open(path, &r, &err), &err);
    CHECK(r != NULL);
    struct cairn_reader *h = cairn_hash_reader_new(cairn_limit_reader_new(r, 4));
    char buf[16];
    CHECK_OK(cairn_reader_read_full(h, buf, 4, "file", &err), &err);
    CHECK(memcmp(buf, "hell", 4) == 0);
    CHECK_ERR(cairn_reader_read_full(h, buf, 1, "file", &err), CAIRN_E_CORRUPT, &err,
              "unexpected end of file");
    cairn_reader_free(h);
    free(path);
}

/* Fallible constructors return the real code whether or not the caller passed an err, and
 * leave *out NULL on failure (also when it held something before). */
TEST(fallible_constructors_return_their_code_without_err)
{
    char *path = path_join(test_tmpdir(), "ctor.bin");
    char *missing = path_join(test_tmpdir(), "no-such-dir/x.bin");
    struct cairn_reader *r = (struct cairn_reader *)&r;
    CHECK_EQ_INT(cairn_file_reader_open(missing, &r, NULL), CAIRN_E_NOTFOUND);
    CHECK(r == NULL);
    struct cairn_writer *w = (struct cairn_writer *)&w;
    CHECK_EQ_INT(cairn_atomic_file_writer_open(missing, 0600, 0, &w, NULL), CAIRN_E_NOTFOUND);
    CHECK(w == NULL);

    /* An existing file without replace: CAIRN_E_EXISTS, nothing created beside it. */
    CHECK_OK(cairn_atomic_file_writer_open(path, 0600, 0, &w, NULL), NULL);
    CHECK_OK(cairn_writer_close(w, NULL), NULL);
    cairn_writer_free(w);
    w = (struct cairn_writer *)&w;
    CHECK_EQ_INT(cairn_atomic_file_writer_open(path, 0600, 0, &w, NULL), CAIRN_E_EXISTS);
    CHECK(w == NULL);
    /* With replace it opens; the same with an err gives the message too. */
    struct cairn_err err;
    CHECK_OK(cairn_atomic_file_writer_open(path, 0600, 1, &w, &err), &err);
    cairn_writer_free(w);
    CHECK_ERR(cairn_file_reader_open(missing, &r, &err), CAIRN_E_NOTFOUND, &err,
              "No such file or directory");
    CHECK(r == NULL);
    CHECK_OK(cairn_file_reader_open(path, &r, NULL), NULL);
    CHECK(r != NULL);
    cairn_reader_free(r);
    unlink(path);
    free(missing);
    free(path);
}

TEST(copy_counts_bytes)
{
    struct cairn_err err;
    static uint8_t big[1 << 20];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 7);
    struct cairn_reader *r = cairn_mem_reader_new(big, sizeof(big));
    struct cairn_writer *w = cairn_hash_writer_new(cairn_discard_writer_new());
    uint64_t n = 0;
    CHECK_OK(cairn_copy(r, w, &n, &err), &err);
    CHECK_EQ_INT(n, sizeof(big));
    CHECK_OK(cairn_writer_close(w, &err), &err);
    uint8_t a[32], b[32];
    cairn_hash_writer_digest(w, a);
    cairn_sha256_oneshot(big, sizeof(big), b);
    CHECK(memcmp(a, b, 32) == 0);
    cairn_writer_free(w);
    cairn_reader_free(r);
}

/* A chain built on cairn_writer_borrow flushes into the borrowed writer but neither closes
 * nor frees it: the caller can keep writing, then closes and frees it itself. */
TEST(borrowed_writer_stays_with_its_owner)
{
    struct cairn_err err;
    struct cairn_writer *mem = cairn_mem_writer_new(1 << 20);
    struct cairn_writer *h = cairn_hash_writer_new(cairn_writer_borrow(mem));
    CHECK_OK(cairn_writer_write(h, "ab", 2, &err), &err);
    CHECK_OK(cairn_writer_close(h, &err), &err);
    cairn_writer_free(h);
    CHECK_EQ_INT(mem->state, CAIRN_IO_OPEN);
    CHECK_OK(cairn_writer_write(mem, "c", 1, &err), &err);
    CHECK_OK(cairn_writer_close(mem, &err), &err);
    size_t len;
    const uint8_t *data = cairn_mem_writer_data(mem, &len);
    CHECK(len == 3 && memcmp(data, "abc", 3) == 0);
    cairn_writer_free(mem);
}

/* cairn_limit_reader_new takes its source; over cairn_reader_borrow it leaves the source
 * with the caller, positioned after the limited bytes. */
TEST(borrowed_reader_stays_with_its_owner)
{
    struct cairn_err err;
    struct cairn_reader *src = cairn_mem_reader_new("abcdef", 6);
    struct cairn_reader *lim = cairn_limit_reader_new(cairn_reader_borrow(src), 4);
    char buf[8];
    size_t got;
    CHECK_OK(cairn_reader_read_full(lim, buf, 4, "limited", &err), &err);
    CHECK_OK(cairn_reader_read(lim, buf, sizeof(buf), &got, &err), &err);
    CHECK_EQ_INT(got, 0);
    cairn_reader_free(lim);
    CHECK_OK(cairn_reader_read(src, buf, sizeof(buf), &got, &err), &err);
    CHECK(got == 2 && memcmp(buf, "ef", 2) == 0);
    cairn_reader_free(src);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
