/* Large files go through the pipe stage (compression and the stored hash on a helper thread):
 * local-path backup and restore stay byte-exact with several large files in flight, with and
 * without compression, incompressible files are stored as is, and a sink error (disk full)
 * still fails the file with its reason. Streams with CAIRN_COMPRESS_AUTO are judged on their
 * first bytes. With share_sha256 the logical SHA-256 so far can be read between writes (what
 * etcd's trailer check uses instead of a hash of its own), whatever the compression chosen.
 * Labelled concurrent: runs under TSan. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cairn/digest.h"
#include "cairn/storage.h"
#include "common/util.h"
#include "test.h"

/* n bytes: text-like lines (random 0), noise (1), or noise with a text last quarter (2). */
static uint8_t *make_bytes(size_t n, int random)
{
    uint8_t *p = xmalloc(n ? n : 1);
    uint32_t x = (uint32_t)n;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        int noise = random == 1 || (random == 2 && i < n / 4 * 3);
        p[i] = noise ? (uint8_t)(x >> 24) : (uint8_t) "ts=1700000000 level=info msg=ok\n"[i % 32];
    }
    return p;
}

static void make_file(const char *path, size_t n, int random)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f == NULL)
        return;
    uint8_t *p = make_bytes(n, random);
    CHECK(fwrite(p, 1, n, f) == n);
    free(p);
    fclose(f);
}

static void backup_restore(const char *tmp, const char *tag, enum cairn_compression comp)
{
    struct cairn_err err;
    char *src = xasprintf("%s/src-%s", tmp, tag);
    mkdir_p(src, 0755, NULL);
    const size_t mib = 1 << 20;
    const struct {
        const char *name;
        size_t size;
        int random;
    } files[] = {{"big-noise.bin", 9 * mib, 1}, /* in name order, as the walk numbers them */
                 {"big-text.log", 12 * mib + 7, 0},
                 {"exactly-8m.bin", 8 * mib, 1},
                 {"mixed.bin", 2 * mib, 2},
                 {"small.txt", 5000, 0}};
    for (size_t i = 0; i < 5; i++) {
        char *p = path_join(src, files[i].name);
        make_file(p, files[i].size, files[i].random);
        free(p);
    }
    char *url = xasprintf("file://%s/store-%s", tmp, tag);
    struct cairn_storage *st = NULL;
    CHECK_OK(cairn_storage_open(url, &st, &err), &err);
    struct cairn_path_opts po = {.workers = 3, .file = {.compression = comp, .level = 1}};
    CHECK_OK(cairn_storage_backup_path(st, "b", src, &po, &err), &err);
    struct cairn_backup *b = NULL;
    CHECK_OK(cairn_storage_open_backup(st, "b", &b, &err), &err);
    CHECK_OK(cairn_backup_verify(b, 2, NULL, NULL, &err), &err);
    /* Files are f000000... in name order. With AUTO noise is stored as is (the probe finds
     * nothing to gain); text, the mixed file and the small file (not probed) keep zstd. An
     * explicit ZSTD compresses every file, noise too: it is not AUTO (storage.h). */
    const enum cairn_compression z = comp == CAIRN_COMPRESS_NONE ? comp : CAIRN_COMPRESS_ZSTD;
    const enum cairn_compression noise = comp == CAIRN_COMPRESS_AUTO ? CAIRN_COMPRESS_NONE : z;
    const enum cairn_compression want[] = {noise, z, noise, z, z};
    for (size_t i = 0; i < 5 && b; i++) {
        char name[16];
        snprintf(name, sizeof(name), "f%06zu", i);
        const struct cairn_manifest_file *f = cairn_backup_file_find(b, name);
        CHECK(f != NULL && f->compression == want[i]);
        CHECK(f != NULL && f->logical_size == files[i].size);
    }
    cairn_backup_free(b);
    char *out = xasprintf("%s/out-%s", tmp, tag);
    CHECK_OK(cairn_storage_restore_path(st, "b", out, &po, &err), &err);
    char *cmd = xasprintf("diff -r '%s' '%s'", src, out);
    CHECK_EQ_INT(system(cmd), 0);
    free(cmd);
    cairn_storage_free(st);
    free(out);
    free(url);
    free(src);
}

TEST(large_files_pipelined_round_trip)
{
    backup_restore(test_tmpdir(), "zstd", CAIRN_COMPRESS_ZSTD);
    backup_restore(test_tmpdir(), "none", CAIRN_COMPRESS_NONE);
    backup_restore(test_tmpdir(), "auto", CAIRN_COMPRESS_AUTO);
}

TEST(auto_compression_judges_streams_on_their_first_bytes)
{
    struct cairn_err err;
    char *url = xasprintf("file://%s/store-streams", test_tmpdir());
    struct cairn_storage *st = NULL;
    CHECK_OK(cairn_storage_open(url, &st, &err), &err);
    const size_t kib = 1024;
    const struct {
        const char *name;
        size_t size;
        int random;
        size_t piece; /* written in pieces of this size */
        enum cairn_compression want;
    } cases[] = {
        {"noise", 3000 * kib + 5, 1, 4096, CAIRN_COMPRESS_NONE},
        {"text", 3000 * kib, 0, 100000, CAIRN_COMPRESS_ZSTD},
        {"probe-exact", 256 * kib, 0, 256 * kib, CAIRN_COMPRESS_ZSTD},
        {"short-text", 100, 0, 7, CAIRN_COMPRESS_ZSTD},
        {"short-noise", 42, 1, 42, CAIRN_COMPRESS_NONE},
        {"empty", 0, 0, 1, CAIRN_COMPRESS_NONE},
        /* noise for the first 3/4: the first 256 KiB decide, text later does not count */
        {"noise-then-text", 4096 * kib, 2, 65536, CAIRN_COMPRESS_NONE},
    };
    const size_t ncases = sizeof(cases) / sizeof(cases[0]);
    struct cairn_backup *b = NULL;
    CHECK_OK(cairn_storage_start(st, "b", &b, &err), &err);
    const struct cairn_file_opts auto_opts = {
        .compression = CAIRN_COMPRESS_AUTO, .level = 1, .pipeline = 1};
    uint8_t *data[sizeof(cases) / sizeof(cases[0])];
    for (size_t i = 0; i < ncases && b; i++) {
        data[i] = make_bytes(cases[i].size, cases[i].random);
        struct cairn_writer *w = NULL;
        CHECK_OK(cairn_backup_add_file_opts(b, cases[i].name, -1, &auto_opts, &w, &err), &err);
        for (size_t off = 0; w && off < cases[i].size; off += cases[i].piece) {
            size_t n = cases[i].size - off < cases[i].piece ? cases[i].size - off : cases[i].piece;
            CHECK_OK(cairn_writer_write(w, data[i] + off, n, &err), &err);
        }
        CHECK_OK(cairn_writer_close(w, &err), &err);
        cairn_writer_free(w);
    }
    /* A writer freed before it decided: the file is not committed, nothing leaks. */
    struct cairn_writer *w = NULL;
    CHECK_OK(cairn_backup_add_file_opts(b, "dropped", -1, &auto_opts, &w, &err), &err);
    CHECK_OK(cairn_writer_write(w, "abc", 3, &err), &err);
    cairn_writer_free(w);
    CHECK_ERR(cairn_backup_end(b, &err), CAIRN_E_CANCELLED, &err, "dropped");
    cairn_backup_free(b);
    CHECK_OK(cairn_storage_remove(st, "b", &err), &err);

    /* Again without the dropped file, then read every stream back through its MANIFEST. */
    CHECK_OK(cairn_storage_start(st, "b", &b, &err), &err);
    for (size_t i = 0; i < ncases; i++) {
        struct cairn_reader *r = cairn_mem_reader_new(data[i], cases[i].size);
        CHECK_OK(cairn_backup_put_stream(b, cases[i].name, r, -1, &auto_opts, &err), &err);
        cairn_reader_free(r);
    }
    CHECK_OK(cairn_backup_end(b, &err), &err);
    cairn_backup_free(b);
    CHECK_OK(cairn_storage_open_backup(st, "b", &b, &err), &err);
    for (size_t i = 0; i < ncases && b; i++) {
        const struct cairn_manifest_file *f = cairn_backup_file_find(b, cases[i].name);
        CHECK(f != NULL && f->compression == cases[i].want);
        CHECK(f != NULL && f->logical_size == cases[i].size);
        CHECK(f != NULL && (f->compression == CAIRN_COMPRESS_ZSTD) == (f->size < f->logical_size));
        struct cairn_writer *m = cairn_mem_writer_new(cases[i].size + 1);
        CHECK_OK(cairn_backup_get_stream(b, cases[i].name, m, NULL, &err), &err);
        size_t len = 0;
        const uint8_t *got = cairn_mem_writer_data(m, &len);
        CHECK(len == cases[i].size && (len == 0 || memcmp(got, data[i], len) == 0));
        cairn_writer_free(m);
    }
    cairn_backup_free(b);
    for (size_t i = 0; i < ncases; i++)
        free(data[i]);
    cairn_storage_free(st);
    free(url);
}

TEST(shared_sha256_is_the_logical_hash_so_far)
{
    struct cairn_err err;
    char *url = xasprintf("file://%s/store-share", test_tmpdir());
    struct cairn_storage *st = NULL;
    CHECK_OK(cairn_storage_open(url, &st, &err), &err);
    struct cairn_backup *b = NULL;
    CHECK_OK(cairn_storage_start(st, "b", &b, &err), &err);
    const struct cairn_file_opts share = {
        .compression = CAIRN_COMPRESS_AUTO, .level = 1, .pipeline = 1, .share_sha256 = 1};
    /* noise (stored as is: the hash must still be in front of the pipe), text (zstd), and a
     * short one asked before its compression was decided */
    const size_t sizes[] = {3 << 20, 3 << 20, 1000};
    const int random[] = {1, 0, 0};
    const char *names[] = {"noise", "text", "short"};
    for (size_t i = 0; i < 3 && b; i++) {
        uint8_t *data = make_bytes(sizes[i], random[i]);
        struct cairn_writer *w = NULL;
        CHECK_OK(cairn_backup_add_file_opts(b, names[i], -1, &share, &w, &err), &err);
        CHECK_OK(cairn_backup_file_sha256(w, NULL, &err), &err);
        size_t half = sizes[i] / 2 + 3;
        CHECK_OK(cairn_writer_write(w, data, half, &err), &err);
        uint8_t got[32], want[32];
        CHECK_OK(cairn_backup_file_sha256(w, got, &err), &err);
        cairn_sha256_oneshot(data, half, want);
        CHECK(memcmp(got, want, 32) == 0);
        CHECK_OK(cairn_writer_write(w, data + half, sizes[i] - half, &err), &err);
        CHECK_OK(cairn_backup_file_sha256(w, got, &err), &err);
        cairn_sha256_oneshot(data, sizes[i], want);
        CHECK(memcmp(got, want, 32) == 0);
        CHECK_OK(cairn_writer_close(w, &err), &err);
        cairn_writer_free(w);
        free(data);
    }
    /* Without share_sha256, and on a writer that is not a backup file's: unsupported. */
    const struct cairn_file_opts plain = {.compression = CAIRN_COMPRESS_AUTO, .pipeline = 1};
    struct cairn_writer *w = NULL;
    CHECK_OK(cairn_backup_add_file_opts(b, "plain", -1, &plain, &w, &err), &err);
    CHECK_ERR(cairn_backup_file_sha256(w, NULL, &err), CAIRN_E_UNSUPPORTED, &err, "shared");
    CHECK_OK(cairn_writer_close(w, &err), &err);
    cairn_writer_free(w);
    struct cairn_writer *d = cairn_discard_writer_new();
    CHECK_ERR(cairn_backup_file_sha256(d, NULL, &err), CAIRN_E_UNSUPPORTED, &err, "shared");
    cairn_writer_free(d);
    CHECK_OK(cairn_backup_end(b, &err), &err);
    cairn_backup_free(b);
    cairn_storage_free(st);
    free(url);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
