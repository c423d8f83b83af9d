/* Decompression bombs, at the library level (also run under ASan/UBSan): the snapshot readers'
 * ratio limit (zstd bomb refused by verify, extract and restore, the limit is adjustable and
 * can be lifted; gzip's own ~1032:1 stays under the default), and cairnd's shard-upload tar
 * reader refusing a sparse entry that would expand a few bytes into 4 GiB. */
#include "../archive/helpers.h"
#include "service/internal.h"

#include <limits.h>

static struct bytes zero_archive(enum cairn_snapshot_flavour f, size_t len)
{
    uint8_t *z = cairn_xcalloc(1, len);
    struct bytes a = write_archive(f, z, len, NULL, 1700000000);
    free(z);
    return a;
}

static int restore_discard(void *arg, const struct cairn_snapshot_meta *meta,
                           struct cairn_reader *state, struct cairn_err *err)
{
    (void)meta;
    *(int *)arg = 1;
    struct cairn_writer *w = cairn_discard_writer_new();
    int rc = cairn_copy(state, w, NULL, err);
    cairn_writer_free(w);
    return rc;
}

TEST(zstd_bomb_is_refused_by_the_ratio_limit)
{
    struct bytes a = zero_archive(CAIRN_SNAPSHOT_ZSTD, 100u << 20);
    printf("    zstd archive of 100 MiB of zeros: %zu bytes (%zu:1)\n", a.len,
           (size_t)(100u << 20) / a.len);
    struct cairn_err err;
    struct cairn_snapshot_read_opts o = {0};
    o.tmpdir = test_tmpdir();
    CHECK_ERR(verify_bytes(&a, &o, NULL, &err), CAIRN_E_CORRUPT, &err,
              "over the 4096:1 limit (a decompression bomb?)");

    struct bytes out = {0};
    struct cairn_reader *r = cairn_mem_reader_new(a.p, a.len);
    CHECK_ERR(cairn_snapshot_extract(r, &o, capture_new(&out), NULL, &err), CAIRN_E_CORRUPT, &err,
              "4096:1");
    cairn_reader_free(r);
    CHECK(!out.committed);
    CHECK(out.len <= (65u << 20)); /* stopped soon after the 64 MiB floor */
    bytes_free(&out);

    int called = 0;
    r = cairn_mem_reader_new(a.p, a.len);
    CHECK_ERR(cairn_snapshot_restore(r, &o, restore_discard, &called, NULL, &err), CAIRN_E_CORRUPT,
              &err, "4096:1");
    cairn_reader_free(r);
    CHECK(!called);

    o.max_ratio = UINT_MAX; /* lifted: the same archive is good */
    CHECK_OK(verify_bytes(&a, &o, NULL, &err), &err);
    o.max_ratio = 1000000;
    CHECK_OK(verify_bytes(&a, &o, NULL, &err), &err);
    bytes_free(&a);
}

TEST(gzip_stays_under_the_default_ratio)
{
    /* deflate cannot exceed ~1032:1, so gzip archives of zeros still verify by default; a
     * lower limit refuses them. */
    struct bytes a = zero_archive(CAIRN_SNAPSHOT_GZIP, 80u << 20);
    struct cairn_err err;
    CHECK_OK(verify_bytes(&a, NULL, NULL, &err), &err);
    struct cairn_snapshot_read_opts o = {0};
    o.max_ratio = 100;
    CHECK_ERR(verify_bytes(&a, &o, NULL, &err), CAIRN_E_CORRUPT, &err, "over the 100:1 limit");
    bytes_free(&a);
}

static void octal(uint8_t *p, size_t width, unsigned long long v)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%0*llo", (int)width - 1, v);
    memcpy(p, buf, width - 1);
    p[width - 1] = 0;
}

static int count_entry(void *ctx, const char *name, int64_t mtime, uint64_t size,
                       struct cairn_reader *data, struct cairn_err *err)
{
    (void)name, (void)mtime, (void)size;
    struct cairn_writer *w = cairn_discard_writer_new();
    int rc = cairn_copy(data, w, NULL, err);
    cairn_writer_free(w);
    ++*(int *)ctx;
    return rc;
}

TEST(sparse_shard_entry_is_refused)
{
    /* An old-GNU sparse header: 512 stored bytes declared as the end of a 4 GiB file. */
    uint8_t t[512 * 4] = {0};
    uint8_t *h = t;
    strcpy((char *)h, "db/rp/1/000000001-000000001.tsm");
    octal(h + 100, 8, 0644);
    octal(h + 108, 8, 0);
    octal(h + 116, 8, 0);
    octal(h + 124, 12, 512);
    octal(h + 136, 12, 0);
    h[156] = 'S';
    memcpy(h + 257, "ustar  ", 8);
    unsigned long long real = 4ull << 30; /* 11 octal digits, as the field holds */
    octal(h + 386, 12, real - 512);
    octal(h + 398, 12, 512);
    octal(h + 483, 12, real);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++)
        sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
    memset(t + 512, 'x', 512);
    struct cairn_err err;
    int n = 0;
    struct cairn_reader *r = cairn_mem_reader_new(t, sizeof(t));
    CHECK_ERR(snap_tar_each(r, count_entry, &n, &err), CAIRN_E_CORRUPT, &err,
              "sparse entry 'db/rp/1/000000001-000000001.tsm' refused (4294967296 bytes");
    cairn_reader_free(r);
    CHECK_EQ_INT(n, 0);
}

int main(int argc, char **argv)
{
    return test_main(argc, argv);
}
